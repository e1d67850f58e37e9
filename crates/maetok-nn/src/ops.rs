//! Small tensor helpers used by the modules.

use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// Applies a [`Linear`] layer to a token tensor as one GEMM over all tokens
/// (`[B·N, in] @ [in, out]`, much faster on BLAS backends than the broadcast batched matmul),
/// through [`crate::fused::linear`].
///
/// `x`: `[B, N, in]` → `[B, N, out]`.
pub fn linear3<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    crate::fused::linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// Separable image resize with explicit interpolation matrices (two GEMMs, any backend):
/// `Y = R_h · X · R_wᵀ` per plane. `x` `[B, C, H, W]`, `rh` row-major `[oh, H]`, `rw` row-major
/// `[ow, W]` → `[B, C, oh, ow]`.
pub fn resize_separable<B: Backend>(x: Tensor<B, 4>, rh: &[f32], oh: usize, rw: &[f32], ow: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let rw = Tensor::<B, 2>::from_data(TensorData::new(rw.to_vec(), [ow, w]), &device);
    let rh = Tensor::<B, 2>::from_data(TensorData::new(rh.to_vec(), [oh, h]), &device);
    // Width pass: [B·C·H, W] · [W, ow]; height pass: [oh, H] · [B·C, H, ow].
    let xw = x.reshape([b * c * h, w]).matmul(rw.transpose()).reshape([b * c, h, ow]);
    rh.unsqueeze::<3>().matmul(xw).reshape([b, c, oh, ow])
}

// Division, softmax and normalisation with exact gradients on every backend.
//
// Burn 0.21's NdArray backend computes `recip` (and `powf(-1)`, `powi(-1)`) with the approximate
// SIMD reciprocal: relative error up to 2e-4 in f32 (measured: `tests/adversarial_gradient_f64.rs`
// in maetok-train). Its forward `a / b` is exact, but the autodiff backward of `a / b` multiplies
// the incoming gradient by `recip(b)`, and Burn's own `softmax` is `exp / sum`: every gradient
// through a LayerNorm, an attention softmax or a normalisation was off by up to 2e-4 (the
// "adversarial-gradient gap" of the training-step fixture). `ones / x` is a true division whose
// backward (`-1 / x²`) is a division too, so the helpers below build on it.

/// `1 / x` elementwise, exact to rounding in value and gradient (see above).
pub fn reciprocal<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().ones_like().div(x)
}

/// `a / b` (broadcasting `b`), exact to rounding in value and in both gradients.
pub fn divide<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    a * reciprocal(b)
}

/// Softmax along `dim` (max-shifted), with an exact gradient. Along the last dimension this is
/// [`crate::fused::softmax_last`] (the CPU fast path where there is one).
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    if dim == D - 1 {
        return crate::fused::softmax_last(x);
    }
    softmax_composed(x, dim)
}

/// [`softmax`] from Burn ops along any `dim` (the default path of [`crate::fused::softmax_last`]).
pub fn softmax_composed<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let e = (x - max).exp();
    let sum = e.clone().sum_dim(dim);
    e * reciprocal(sum)
}

/// Log-softmax along `dim`, with an exact gradient: `x − lse(x)`, where `lse` carries its value
/// from the max-shifted log-sum-exp and its gradient, `softmax(x)`, through a zero-valued term
/// (`Σ p·(x − x̄)` with `p`, `x̄` detached), so that no `log` backward (a reciprocal) runs.
/// First derivatives only (nothing here differentiates twice).
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let xd = x.clone().detach();
    let max = xd.clone().max_dim(dim);
    let e = (xd.clone() - max.clone()).exp();
    let sum = e.clone().sum_dim(dim);
    let p = e * reciprocal(sum.clone());
    let lse = max + sum.log() + (p * (x.clone() - xd)).sum_dim(dim);
    x - lse
}

/// `x / max(‖x‖₂, 1e-12)` along the last dimension (PyTorch's `F.normalize(dim=-1)`), with an
/// exact gradient.
pub fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().powi_scalar(2).sum_dim(D - 1).sqrt().clamp_min(1e-12);
    divide(x, norm)
}

#[cfg(test)]
mod exact_gradients {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray<f32>>;

    fn values(t: Tensor<NdArray<f32>, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn softmax_and_log_softmax_match_burn_in_value_and_exactly_in_gradient() {
        let device = Default::default();
        let v: Vec<f32> = (0..24).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.31).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(v.clone(), [3, 8]), &device).require_grad();
        let w = Tensor::<B, 2>::from_data(TensorData::new((0..24).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<_>>(), [3, 8]), &device);
        let ours = softmax(x.clone(), 1);
        let theirs = burn::tensor::activation::softmax(x.clone(), 1);
        let (a, b) = (values(ours.clone().inner()), values(theirs.inner()));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-7));
        let g = values(x.grad(&(ours * w.clone()).sum().backward()).unwrap());
        // The analytic gradient p·(w − Σ p·w) in f64.
        for r in 0..3 {
            let row: Vec<f64> = v[r * 8..r * 8 + 8].iter().map(|&t| t as f64).collect();
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = row.iter().map(|t| (t - m).exp()).sum();
            let p: Vec<f64> = row.iter().map(|t| (t - m).exp() / s).collect();
            let wr: Vec<f64> = (r * 8..r * 8 + 8).map(|i| ((i % 5) as f64) - 2.0).collect();
            let pw: f64 = p.iter().zip(&wr).map(|(a, b)| a * b).sum();
            for j in 0..8 {
                let want = p[j] * (wr[j] - pw);
                assert!((g[r * 8 + j] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-2), "softmax grad {r},{j}");
            }
        }
        let lsm = log_softmax(x.clone(), 1);
        let l = values(lsm.clone().inner());
        let lb = values(burn::tensor::activation::log_softmax(x.clone(), 1).inner());
        assert!(l.iter().zip(&lb).all(|(p, q)| (p - q).abs() < 1e-6));
        let g = values(x.grad(&(lsm * w).sum().backward()).unwrap());
        // ∂/∂x_j Σ w_i (x_i − lse) = w_j − p_j Σ w_i.
        for r in 0..3 {
            let row: Vec<f64> = v[r * 8..r * 8 + 8].iter().map(|&t| t as f64).collect();
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = row.iter().map(|t| (t - m).exp()).sum();
            let wsum: f64 = (r * 8..r * 8 + 8).map(|i| ((i % 5) as f64) - 2.0).sum();
            for j in 0..8 {
                let want = ((r * 8 + j) % 5) as f64 - 2.0 - (row[j] - m).exp() / s * wsum;
                assert!((g[r * 8 + j] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-1), "log-softmax grad {r},{j}");
            }
        }
    }
}
