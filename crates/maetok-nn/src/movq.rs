//! MoVQ-modulated ViT block (`MoVQBlockv2`) and final norm (`MoVQNorm`) of MAETok's decoders.
//!
//! Only the last `T` tokens (the latent tokens) are modulated, per token, by
//! `LN(x)·scale + shift` (no `1+`), with `(shift, scale)` from `Linear(SiLU(z))` where `z` is
//! the raw latent `[B, T, C]`. LayerNorms have no affine parameters (eps 1e-6); no LayerScale.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::silu, backend::Backend, Tensor};

use crate::attention::{Attention, AttentionConfig};
use crate::fused::modulate_latents;
use crate::io::{join, ParamVisitor, VisitParams};
use crate::layer_norm::normalize;
use crate::mlp::{Mlp, MlpConfig};
use crate::ops::linear3;
use crate::rope::RopeFull;

#[derive(Module, Debug)]
pub struct MovqBlock<B: Backend> {
    pub attn: Attention<B>,
    pub mlp: Mlp<B>,
    /// `adaLN_modulation.1`: Linear(C → 4D) giving `[shift_msa | scale_msa | shift_mlp | scale_mlp]`.
    pub ada_ln: Linear<B>,
    pub eps: f64,
}

/// `MoVQBlockv2` of width `dim`, modulated by latents with `z_dim` channels.
#[derive(Config, Debug)]
pub struct MovqBlockConfig {
    pub dim: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    pub z_dim: usize,
    #[config(default = 1e-6)]
    pub eps: f64,
}

impl MovqBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MovqBlock<B> {
        MovqBlock {
            attn: AttentionConfig::new(self.dim, self.heads).init(device),
            mlp: MlpConfig::new(self.dim, self.mlp_hidden).init(device),
            ada_ln: LinearConfig::new(self.z_dim, 4 * self.dim).init(device),
            eps: self.eps,
        }
    }
}

impl<B: Backend> MovqBlock<B> {
    /// `x`: `[B, N, D]` (latent tokens last), `z`: raw latents `[B, T, C]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>, z: Tensor<B, 3>, rope: Option<&RopeFull<B>>) -> Tensor<B, 3> {
        // `[shift_msa | scale_msa | shift_mlp | scale_mlp]`, read in place by the modulation.
        let m = linear3(&self.ada_ln, silu(z));
        let h = modulate_latents(x.clone(), m.clone(), 0, 1, self.eps);
        let x = x + self.attn.forward(h, rope);
        let h = modulate_latents(x.clone(), m, 2, 3, self.eps);
        x + self.mlp.forward(h)
    }
}

impl<B: Backend> VisitParams<B> for MovqBlock<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.attn.visit_params(&join(prefix, "attn"), v);
        self.mlp.visit_params(&join(prefix, "mlp"), v);
        v.linear(&join(prefix, "adaLN_modulation.1"), &mut self.ada_ln);
    }
}

/// Final norm of MoVQ decoders: non-affine LN, latent rows modulated by `[shift | scale]`.
#[derive(Module, Debug)]
pub struct MovqNorm<B: Backend> {
    /// `adaLN_modulation.1`: Linear(C → 2D).
    pub ada_ln: Linear<B>,
    pub eps: f64,
}

/// `MoVQNorm` of width `dim`, modulated by latents with `z_dim` channels.
#[derive(Config, Debug)]
pub struct MovqNormConfig {
    pub dim: usize,
    pub z_dim: usize,
    #[config(default = 1e-6)]
    pub eps: f64,
}

impl MovqNormConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MovqNorm<B> {
        MovqNorm { ada_ln: LinearConfig::new(self.z_dim, 2 * self.dim).init(device), eps: self.eps }
    }
}

impl<B: Backend> MovqNorm<B> {
    /// `x`: `[B, N, D]`, `z`: `[B, T, C]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>, z: Tensor<B, 3>) -> Tensor<B, 3> {
        modulate_latents(x, linear3(&self.ada_ln, silu(z)), 0, 1, self.eps)
    }

    /// The image-token rows of [`forward`](Self::forward): the latent modulation does not reach
    /// them, so they are a plain non-affine LayerNorm of the first `n` tokens.
    /// `x`: `[B, N, D]` → `[B, n, D]`.
    pub fn forward_prefix(&self, x: Tensor<B, 3>, start: usize, n: usize) -> Tensor<B, 3> {
        let [b, _, d] = x.dims();
        normalize(x.slice([0..b, start..start + n, 0..d]), self.eps)
    }
}

impl<B: Backend> VisitParams<B> for MovqNorm<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "adaLN_modulation.1"), &mut self.ada_ln);
    }
}
