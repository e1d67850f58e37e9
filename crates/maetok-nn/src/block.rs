//! Pre-norm ViT block with optional LayerScale (timm `Block`, MAETok encoder):
//! `x += ls1 · attn(norm1 x)`, `x += ls2 · mlp(norm2 x)`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::attention::{Attention, AttentionConfig};
use crate::io::{join, ParamVisitor, VisitParams};
use crate::layer_norm::{LayerNorm, LayerNormConfig};
use crate::mlp::{Mlp, MlpConfig};
use crate::rope::RopeFull;

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: Attention<B>,
    /// LayerScale `ls1.gamma` `[D]` (DINOv2-style ViTs), absent otherwise.
    pub ls1: Option<Param<Tensor<B, 1>>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub ls2: Option<Param<Tensor<B, 1>>>,
}

/// A timm ViT block: `x += ls1·attn(norm1(x))`, `x += ls2·mlp(norm2(x))`.
#[derive(Config, Debug)]
pub struct BlockConfig {
    pub dim: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    /// Initial LayerScale value (timm `init_values`); no LayerScale when absent.
    pub layer_scale: Option<f64>,
    #[config(default = 1e-6)]
    pub eps: f64,
    #[config(default = false)]
    pub tanh_gelu: bool,
}

impl BlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        let ls = || self.layer_scale.map(|v| Param::from_tensor(Tensor::full([self.dim], v, device)));
        let norm = || LayerNormConfig::new(self.dim).with_eps(self.eps).init(device);
        Block {
            norm1: norm(),
            attn: AttentionConfig::new(self.dim, self.heads).init(device),
            ls1: ls(),
            norm2: norm(),
            mlp: MlpConfig::new(self.dim, self.mlp_hidden).with_tanh_gelu(self.tanh_gelu).init(device),
            ls2: ls(),
        }
    }
}

impl<B: Backend> Block<B> {
    /// `x`: `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>, rope: Option<&RopeFull<B>>) -> Tensor<B, 3> {
        let scale = |y: Tensor<B, 3>, ls: &Option<Param<Tensor<B, 1>>>| match ls {
            Some(g) => y * g.val().unsqueeze::<3>(),
            None => y,
        };
        let x = x.clone() + scale(self.attn.forward(self.norm1.forward(x), rope), &self.ls1);
        x.clone() + scale(self.mlp.forward(self.norm2.forward(x)), &self.ls2)
    }
}

impl<B: Backend> VisitParams<B> for Block<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.norm1.visit_params(&join(prefix, "norm1"), v);
        self.attn.visit_params(&join(prefix, "attn"), v);
        if let Some(g) = self.ls1.as_mut() {
            v.param(&join(prefix, "ls1.gamma"), g);
        }
        self.norm2.visit_params(&join(prefix, "norm2"), v);
        self.mlp.visit_params(&join(prefix, "mlp"), v);
        if let Some(g) = self.ls2.as_mut() {
            v.param(&join(prefix, "ls2.gamma"), g);
        }
    }
}
