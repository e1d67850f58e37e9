//! Gradients of a module as `GradientsParams`, clipped to a global L2 norm (PyTorch
//! `clip_grad_norm_` over all parameters, as the reference trainers do; Burn's own clipping works
//! per parameter tensor).

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use maetok_nn::fused;
use maetok_nn::io::{ParamVisitor, VisitParams};

/// Sum of squares of the gradients held in `grads` for `module`'s parameters (on the device:
/// one read-back for the whole module).
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ParamVisitor<B> for SquaredNorm<'_, B> {
    fn param<const D: usize>(&mut self, _key: &str, param: &mut Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = fused::squared_norm(g);
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _: &str, _: &[usize], _: &[f32]) {}
}

/// Moves (`grads: Some`) or rescales (`None`) the gradients of `module`'s parameters in `out`.
struct Register<'a, B: AutodiffBackend> {
    grads: Option<&'a mut B::Gradients>,
    scale: f64,
    out: GradientsParams,
}

impl<B: AutodiffBackend> ParamVisitor<B> for Register<'_, B> {
    fn param<const D: usize>(&mut self, _key: &str, param: &mut Param<Tensor<B, D>>) {
        match self.grads.as_deref_mut() {
            Some(grads) => {
                if let Some(g) = param.grad_remove(grads) {
                    self.out.register(param.id, g);
                }
            }
            None => {
                if let Some(g) = self.out.remove::<B::InnerBackend, D>(param.id) {
                    self.out.register(param.id, fused::scale(g, self.scale));
                }
            }
        }
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _: &str, _: &[usize], _: &[f32]) {}
}

/// The gradients of `module`'s parameters, keyed by parameter id (what a data-parallel run
/// all-reduces before [`clip_gradients`]), moved out of `grads`: they are then the only
/// reference to their buffers, so clipping scales them in place and the optimiser frees each
/// as soon as it has used it.
pub fn module_gradients<B: AutodiffBackend, M: VisitParams<B>>(module: &mut M, grads: &mut B::Gradients) -> GradientsParams {
    let mut r = Register::<B> { grads: Some(grads), scale: 1.0, out: GradientsParams::new() };
    module.visit_params("", &mut r);
    r.out
}

/// `grads` scaled by `min(1, max_norm / ‖g‖)` when `max_norm` is given (the norm over all of
/// `module`'s parameters, PyTorch's `clip_grad_norm_`); also returns the norm before clipping.
pub fn clip_gradients<B: AutodiffBackend, M: VisitParams<B>>(
    module: &mut M,
    grads: GradientsParams,
    max_norm: Option<f64>,
) -> (GradientsParams, f64) {
    let mut n = SquaredNorm::<B> { grads: &grads, total: None };
    module.visit_params("", &mut n);
    let norm = n.total.map(|t| t.into_scalar().elem::<f64>().sqrt()).unwrap_or(0.0);
    let scale = match max_norm {
        Some(m) if norm > m => m / (norm + 1e-6),
        _ => return (grads, norm),
    };
    let mut r = Register::<B> { grads: None, scale, out: grads };
    module.visit_params("", &mut r);
    (r.out, norm)
}

/// The gradients of `module`'s parameters, clipped to a global norm ([`module_gradients`]
/// then [`clip_gradients`]); also returns the norm before clipping.
pub fn clipped_gradients<B: AutodiffBackend, M: VisitParams<B>>(
    module: &mut M,
    grads: &mut B::Gradients,
    max_norm: Option<f64>,
) -> (GradientsParams, f64) {
    let all = module_gradients(module, grads);
    clip_gradients(module, all, max_norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;
    use maetok_nn::{LayerNorm, LayerNormConfig};

    type A = Autodiff<NdArray<f32>>;

    /// `loss = Σ weight·a + Σ bias·b`: the gradients are exactly `a` and `b`.
    fn grads(a: [f32; 2], b: [f32; 2], max_norm: Option<f64>) -> (Vec<f32>, Vec<f32>, f64) {
        let d = Default::default();
        let mut m: LayerNorm<A> = LayerNormConfig::new(2).init(&d);
        let t = |v: [f32; 2]| Tensor::<A, 1>::from_data(TensorData::new(v.to_vec(), [2]), &d);
        let loss = (m.weight.as_ref().unwrap().val() * t(a)).sum() + (m.bias.as_ref().unwrap().val() * t(b)).sum();
        let mut g = loss.backward();
        let (gp, norm) = clipped_gradients(&mut m, &mut g, max_norm);
        let get = |p: &Param<Tensor<A, 1>>| gp.get::<NdArray<f32>, 1>(p.id).unwrap().into_data().to_vec::<f32>().unwrap();
        (get(m.weight.as_ref().unwrap()), get(m.bias.as_ref().unwrap()), norm)
    }

    #[test]
    fn clips_the_global_norm_as_pytorch_does() {
        // ‖(3, 4, 0, 12)‖ = 13.
        let (w, b, norm) = grads([3.0, 4.0], [0.0, 12.0], Some(6.5));
        assert!((norm - 13.0).abs() < 1e-6);
        let s = (6.5 / (13.0 + 1e-6)) as f32;
        for (got, want) in w.iter().chain(&b).zip([3.0 * s, 4.0 * s, 0.0, 12.0 * s]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // Below the threshold, or without one, the gradients are untouched.
        assert_eq!(grads([3.0, 4.0], [0.0, 12.0], Some(20.0)).0, vec![3.0, 4.0]);
        let (w, b, norm) = grads([3.0, 4.0], [0.0, 12.0], None);
        assert_eq!((w, b), (vec![3.0, 4.0], vec![0.0, 12.0]));
        assert!((norm - 13.0).abs() < 1e-6);
    }
}
