//! timm `Mlp`: `fc1 → GELU → fc2`, GELU exact (erf; ViTs) or tanh-approximated (SiT/DiT).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::gelu, backend::Backend, Tensor};

use crate::io::{join, ParamVisitor, VisitParams};
use crate::ops::linear3;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    /// `GELU(approximate='tanh')` instead of the exact erf form.
    pub tanh_gelu: bool,
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, PyTorch's `GELU(approximate='tanh')`.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * (inner.tanh() + 1.0) * 0.5
}

/// `fc1 (dim → hidden) → GELU → fc2 (hidden → dim)`.
#[derive(Config, Debug)]
pub struct MlpConfig {
    pub dim: usize,
    pub hidden: usize,
    /// `GELU(approximate='tanh')` (SiT/DiT, the DINO discriminator) instead of the exact erf form.
    #[config(default = false)]
    pub tanh_gelu: bool,
}

impl MlpConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            fc1: LinearConfig::new(self.dim, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.dim).init(device),
            tanh_gelu: self.tanh_gelu,
        }
    }
}

impl<B: Backend> Mlp<B> {
    /// `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = linear3(&self.fc1, x);
        let h = if self.tanh_gelu { gelu_tanh(h) } else { gelu(h) };
        linear3(&self.fc2, h)
    }
}

impl<B: Backend> VisitParams<B> for Mlp<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "fc1"), &mut self.fc1);
        v.linear(&join(prefix, "fc2"), &mut self.fc2);
    }
}
