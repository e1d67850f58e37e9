//! LayerNorm with optional affine parameters (timm ViTs use eps 1e-6; MoVQ blocks use no affine).

use burn::config::Config;
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

/// LayerNorm over the last dimension of width `dim`. The eps default is timm's ViT one
/// (`partial(nn.LayerNorm, eps=1e-6)`), not PyTorch's 1e-5.
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    pub dim: usize,
    #[config(default = 1e-6)]
    pub eps: f64,
    /// Learned weight (init 1) and bias (init 0); none for the adaLN/MoVQ norms.
    #[config(default = true)]
    pub affine: bool,
}

impl LayerNormConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        let (weight, bias) = if self.affine {
            (Some(Param::from_tensor(Tensor::ones([self.dim], device))), Some(Param::from_tensor(Tensor::zeros([self.dim], device))))
        } else {
            (None, None)
        };
        LayerNorm { weight, bias, eps: self.eps }
    }
}

impl<B: Backend> LayerNorm<B> {
    /// `x`: `[..., D]` → same shape.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::fused::layer_norm(x, self.weight.as_ref().map(|w| w.val()), self.bias.as_ref().map(|b| b.val()), self.eps)
    }
}

/// Normalises the last dimension to zero mean and unit (biased) variance.
pub fn normalize<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    crate::fused::layer_norm(x, None, None, eps)
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
