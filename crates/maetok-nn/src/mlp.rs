//! timm `Mlp`: `fc1 → GELU (exact erf) → fc2`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::gelu, backend::Backend, Tensor};

use crate::io::{join, ParamVisitor, VisitParams};
use crate::ops::linear3;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(dim: usize, hidden: usize, device: &B::Device) -> Self {
        Self { fc1: LinearConfig::new(dim, hidden).init(device), fc2: LinearConfig::new(hidden, dim).init(device) }
    }

    /// `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear3(&self.fc2, gelu(linear3(&self.fc1, x)))
    }
}

impl<B: Backend> VisitParams<B> for Mlp<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "fc1"), &mut self.fc1);
        v.linear(&join(prefix, "fc2"), &mut self.fc2);
    }
}
