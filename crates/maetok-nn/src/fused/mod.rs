//! Fused operations of our models: softmax over the last dimension, exact GELU and LayerNorm
//! (with or without affine parameters).
//!
//! Each function has two implementations:
//! * **the default**, composed of Burn tensor ops, which every backend runs (CUDA and wgpu fuse
//!   it themselves), with gradients exact to rounding (see [`crate::ops`]);
//! * **the CPU fast path** (feature `cpu-kernels`, on by default) for `NdArray<f32>` and
//!   `Autodiff<NdArray<f32>>`: one pass over the raw array with the vectorised, rayon-parallel
//!   kernels of [`kernels`] instead of 5–10 single-threaded NdArray passes, and under autodiff one
//!   graph node with a hand-written backward (the same formulas as the default's gradient)
//!   instead of 10–20 recorded ops.
//!
//! The choice is made at run time from the backend's type (`TypeId`), so models stay generic
//! over `B: Backend` and need no extra trait bound; any other backend, and `NdArray` tensors held
//! in f64, take the default path. The fixture tests run through whichever path their backend
//! selects; `tests` below hold the two paths to each other in value and gradient.

pub mod kernels;
#[cfg(feature = "cpu-kernels")]
mod ndarray;

use burn::tensor::{backend::Backend, Tensor};

use crate::ops;

/// Softmax along the last dimension. `x`: `[..., n]` → same shape.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::softmax_last(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    softmax_default(x)
}

/// Exact GELU `½·x·(1 + erf(x/√2))` (PyTorch's `nn.GELU()`), elementwise.
pub fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::gelu_erf(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    gelu_erf_default(x)
}

/// LayerNorm over the last dimension: `(x − mean)/√(var + eps)·weight + bias` (biased variance),
/// each affine part optional. `x`: `[..., n]`, `weight`/`bias`: `[n]`.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Option<Tensor<B, 1>>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let (x, weight, bias) = match ndarray::layer_norm(x, weight, bias, eps) {
        Ok(y) => return y,
        Err(args) => args,
    };
    layer_norm_default(x, weight, bias, eps)
}

/// The default softmax (Burn ops, exact gradient).
pub fn softmax_default<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    ops::softmax_composed(x, D - 1)
}

/// The default exact GELU. Burn 0.21's `activation::gelu` computes this forward but
/// back-propagates the derivative of the *tanh approximation* (`burn-backend` `gelu_backward`; off
/// by up to ~1e-3 per unit), so on an autodiff backend the composed form, whose autodiff is exact,
/// is used; other backends keep Burn's op.
pub fn gelu_erf_default<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !B::ad_enabled(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    x.clone() * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
}

/// The default LayerNorm (Burn ops, exact gradient).
pub fn layer_norm_default<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Option<Tensor<B, 1>>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    // Not `.div(…)`: its gradient goes through Burn's approximate reciprocal (crate::ops).
    let y = ops::divide(x - mean, (var + eps).sqrt());
    let y = match weight {
        Some(w) => y * w.unsqueeze::<D>(),
        None => y,
    };
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

#[cfg(all(test, feature = "cpu-kernels"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;

    type N = NdArray<f32>;
    type A = Autodiff<N>;

    fn data(shape: [usize; 3], seed: usize) -> TensorData {
        let n: usize = shape.iter().product();
        TensorData::new((0..n).map(|i| (((i + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * 5.0).collect::<Vec<_>>(), shape)
    }

    fn close(a: TensorData, b: TensorData, rel: f32, what: &str) {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a.iter().zip(&b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= rel * scale, "{what}: max |Δ| {worst:e} (scale {scale:e})");
    }

    /// Every fused op equals the default path in value and gradient, on NdArray and under
    /// autodiff, for a small tensor (serial kernel) and a large one (parallel kernel).
    #[test]
    fn fast_path_equals_default_in_value_and_gradient() {
        let dev = Default::default();
        for shape in [[2, 5, 13], [6, 300, 77]] {
            let x = || Tensor::<A, 3>::from_data(data(shape, 1), &dev).require_grad();
            let w = Tensor::<A, 3>::from_data(data(shape, 5), &dev);
            let n = shape[2];
            let p = |seed| Tensor::<A, 1>::from_data(TensorData::new(data([1, 1, n], seed).to_vec::<f32>().unwrap(), [n]), &dev);
            type Op = fn(Tensor<A, 3>, Option<Tensor<A, 1>>, Option<Tensor<A, 1>>) -> Tensor<A, 3>;
            let cases: [(&str, Op, Op); 3] = [
                ("softmax", |x, _, _| softmax_last(x), |x, _, _| softmax_default(x)),
                ("gelu", |x, _, _| gelu_erf(x), |x, _, _| gelu_erf_default(x)),
                ("layer_norm", |x, g, b| layer_norm(x, g, b, 1e-6), |x, g, b| layer_norm_default(x, g, b, 1e-6)),
            ];
            for (name, fast, slow) in cases {
                let affine: &[bool] = if name == "layer_norm" { &[false, true] } else { &[false] };
                for &aff in affine {
                    let params = || if aff { (Some(p(2).require_grad()), Some(p(3).require_grad())) } else { (None, None) };
                    let (xa, (ga, ba)) = (x(), params());
                    let (xb, (gb, bb)) = (x(), params());
                    let ya = fast(xa.clone(), ga.clone(), ba.clone());
                    let yb = slow(xb.clone(), gb.clone(), bb.clone());
                    close(ya.clone().into_data(), yb.clone().into_data(), 2e-6, &format!("{name} {shape:?} value"));
                    let (gra, grb) = ((ya * w.clone()).sum().backward(), (yb * w.clone()).sum().backward());
                    close(xa.grad(&gra).unwrap().into_data(), xb.grad(&grb).unwrap().into_data(), 5e-6, &format!("{name} {shape:?} dx"));
                    if aff {
                        for (pa, pb, what) in [(ga.unwrap(), gb.unwrap(), "dweight"), (ba.unwrap(), bb.unwrap(), "dbias")] {
                            close(pa.grad(&gra).unwrap().into_data(), pb.grad(&grb).unwrap().into_data(), 5e-6, what);
                        }
                    }
                    // Inference backend (no autodiff).
                    let xi = Tensor::<N, 3>::from_data(data(shape, 1), &dev);
                    let inner = |t: Option<Tensor<A, 1>>| t.map(|t| t.inner());
                    let (gi, bi) = params();
                    close(
                        fast(x(), gi.clone(), bi.clone()).inner().into_data(),
                        match name {
                            "softmax" => softmax_last(xi).into_data(),
                            "gelu" => gelu_erf(xi).into_data(),
                            _ => layer_norm(xi, inner(gi), inner(bi), 1e-6).into_data(),
                        },
                        0.0,
                        &format!("{name} inference = autodiff forward"),
                    );
                }
            }
        }
    }

    /// A parameter that needs no gradient, and an input that needs none, still work.
    #[test]
    fn untracked_inputs() {
        let dev = Default::default();
        let x = Tensor::<A, 3>::from_data(data([2, 3, 8], 0), &dev);
        let g = Tensor::<A, 1>::ones([8], &dev).require_grad();
        let y = layer_norm(x.clone(), Some(g.clone()), None, 1e-5);
        let grads = y.sum().backward();
        assert!(g.grad(&grads).is_some());
        assert!(x.grad(&grads).is_none());
        let y = softmax_last(x);
        assert_eq!(y.dims(), [2, 3, 8]);
    }
}
