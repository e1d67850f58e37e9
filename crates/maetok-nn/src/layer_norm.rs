//! LayerNorm with optional affine parameters (timm ViTs use eps 1e-6; MoVQ blocks use no affine).

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::io::{ParamVisitor, VisitParams};

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`, biased
/// variance and eps inside the square root, as in PyTorch.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// `[D]`, absent for a non-affine norm.
    pub weight: Option<Param<Tensor<B, 1>>>,
    /// `[D]`, absent for a non-affine norm.
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Affine LayerNorm of width `d` (weight 1, bias 0).
    pub fn affine(d: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Some(Param::from_tensor(Tensor::ones([d], device))),
            bias: Some(Param::from_tensor(Tensor::zeros([d], device))),
            eps,
        }
    }

    /// Non-affine LayerNorm (no parameters).
    pub fn plain(eps: f64) -> Self {
        Self { weight: None, bias: None, eps }
    }

    /// `x`: `[..., D]` → same shape.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = normalize(x, self.eps);
        let y = match &self.weight {
            Some(w) => y * w.val().unsqueeze::<D>(),
            None => y,
        };
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<D>(),
            None => y,
        }
    }
}

/// Normalises the last dimension to zero mean and unit (biased) variance.
pub fn normalize<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean).div((var + eps).sqrt())
}

impl<B: Backend> VisitParams<B> for LayerNorm<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        if let Some(w) = self.weight.as_mut() {
            v.param(&format!("{prefix}.weight"), w);
        }
        if let Some(b) = self.bias.as_mut() {
            v.param(&format!("{prefix}.bias"), b);
        }
    }
}
