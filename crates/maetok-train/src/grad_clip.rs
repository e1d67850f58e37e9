//! Gradients of a module as `GradientsParams`, clipped to a global L2 norm (PyTorch
//! `clip_grad_norm_` over all parameters, as the reference trainers do; Burn's own clipping works
//! per parameter tensor).

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use maetok_nn::io::{ParamVisitor, VisitParams};

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ParamVisitor<B> for SquaredNorm<'_, B> {
    fn param<const D: usize>(&mut self, _key: &str, param: &mut Param<Tensor<B, D>>) {
        if let Some(g) = param.grad(self.grads) {
            let s = g.powi_scalar(2).sum();
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

struct Register<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    scale: f64,
    out: GradientsParams,
}

impl<B: AutodiffBackend> ParamVisitor<B> for Register<'_, B> {
    fn param<const D: usize>(&mut self, _key: &str, param: &mut Param<Tensor<B, D>>) {
        if let Some(g) = param.grad(self.grads) {
            let g = if self.scale < 1.0 { g * self.scale } else { g };
            self.out.register(param.id, g);
        }
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _: &str, _: &[usize], _: &[f32]) {}
}

/// The gradients of `module`'s parameters, scaled by `min(1, max_norm / ‖g‖)` when `max_norm`
/// is given; also returns the norm before clipping.
pub fn clipped_gradients<B: AutodiffBackend, M: VisitParams<B>>(module: &mut M, grads: &B::Gradients, max_norm: Option<f64>) -> (GradientsParams, f64) {
    let mut n = SquaredNorm::<B> { grads, total: None };
    module.visit_params("", &mut n);
    let norm = n.total.map(|t| t.into_scalar().elem::<f64>().sqrt()).unwrap_or(0.0);
    let scale = match max_norm {
        Some(m) if norm > m => m / (norm + 1e-6),
        _ => 1.0,
    };
    let mut r = Register::<B> { grads, scale, out: GradientsParams::new() };
    module.visit_params("", &mut r);
    (r.out, norm)
}
