//! adaLN-Zero transformer block and final layer of DiT/SiT: the conditioning vector `c` `[B, D]`
//! produces per-sample shift, scale and gate vectors that modulate non-affine LayerNorms.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::silu, backend::Backend, Tensor};

use crate::attention::{Attention, AttentionConfig};
use crate::fused::{modulate_adaln, residual_gate};
use crate::io::{join, ParamVisitor, VisitParams};
use crate::mlp::{Mlp, MlpConfig};
use crate::ops::linear3;

/// `u·(1 + scale) + shift` with `[B, D]` vectors broadcast over the tokens of `u` `[B, N, D]`.
pub fn modulate<B: Backend>(u: Tensor<B, 3>, shift: Tensor<B, 2>, scale: Tensor<B, 2>) -> Tensor<B, 3> {
    u * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

/// SiT/DiT block: `h += g1·Attn(mod(LN(h), sh1, sc1))`, `h += g2·MLP(mod(LN(h), sh2, sc2))`,
/// with `(sh1, sc1, g1, sh2, sc2, g2) = Linear(SiLU(c))` in that order; LN non-affine, eps 1e-6.
#[derive(Module, Debug)]
pub struct AdaLnBlock<B: Backend> {
    pub attn: Attention<B>,
    pub mlp: Mlp<B>,
    /// `adaLN_modulation.1`: `D → 6D`.
    pub modulation: Linear<B>,
}

/// The SiT/DiT block. Its LayerNorms are non-affine with eps 1e-6 (`elementwise_affine=False,
/// eps=1e-6` in the reference); the optional q/k norms are timm's (`nn.LayerNorm`, eps 1e-5).
#[derive(Config, Debug)]
pub struct AdaLnBlockConfig {
    pub dim: usize,
    pub heads: usize,
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    #[config(default = false)]
    pub qk_norm: bool,
}

impl AdaLnBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> AdaLnBlock<B> {
        AdaLnBlock {
            attn: AttentionConfig::new(self.dim, self.heads).with_qk_norm_eps(self.qk_norm.then_some(1e-5)).init(device),
            mlp: MlpConfig::new(self.dim, (self.dim as f64 * self.mlp_ratio) as usize).with_tanh_gelu(true).init(device),
            modulation: LinearConfig::new(self.dim, 6 * self.dim).init(device),
        }
    }
}

impl<B: Backend> AdaLnBlock<B> {
    /// `h`: `[B, N, D]`, `c`: `[B, D]` → `[B, N, D]`.
    pub fn forward(&self, h: Tensor<B, 3>, c: Tensor<B, 2>) -> Tensor<B, 3> {
        // `[shift_msa | scale_msa | gate_msa | shift_mlp | scale_mlp | gate_mlp]`; the
        // modulations and the gated residuals read their chunks in place.
        let m = self.modulation.forward(silu(c));
        let a = self.attn.forward(modulate_adaln(h.clone(), m.clone(), 0, 1, 1e-6), None);
        let h = residual_gate(h, a, m.clone(), 2);
        let f = self.mlp.forward(modulate_adaln(h.clone(), m.clone(), 3, 4, 1e-6));
        residual_gate(h, f, m, 5)
    }
}

impl<B: Backend> VisitParams<B> for AdaLnBlock<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.attn.visit_params(&join(prefix, "attn"), v);
        self.mlp.visit_params(&join(prefix, "mlp"), v);
        v.linear(&join(prefix, "adaLN_modulation.1"), &mut self.modulation);
    }
}

/// `out = Linear(mod(LN(h), shift, scale))` with `(shift, scale) = Linear(SiLU(c))`.
#[derive(Module, Debug)]
pub struct FinalLayer<B: Backend> {
    /// `adaLN_modulation.1`: `D → 2D`.
    pub modulation: Linear<B>,
    /// `linear`: `D → C_out`.
    pub linear: Linear<B>,
}

/// The SiT/DiT output layer: `dim → out` channels per token after a modulated LayerNorm.
#[derive(Config, Debug)]
pub struct FinalLayerConfig {
    pub dim: usize,
    pub out: usize,
}

impl FinalLayerConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> FinalLayer<B> {
        FinalLayer {
            modulation: LinearConfig::new(self.dim, 2 * self.dim).init(device),
            linear: LinearConfig::new(self.dim, self.out).init(device),
        }
    }
}

impl<B: Backend> FinalLayer<B> {
    /// `h`: `[B, N, D]`, `c`: `[B, D]` → `[B, N, C_out]`.
    pub fn forward(&self, h: Tensor<B, 3>, c: Tensor<B, 2>) -> Tensor<B, 3> {
        // `[shift | scale]`, read in place by the modulation.
        linear3(&self.linear, modulate_adaln(h, self.modulation.forward(silu(c)), 0, 1, 1e-6))
    }
}

impl<B: Backend> VisitParams<B> for FinalLayer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "adaLN_modulation.1"), &mut self.modulation);
        v.linear(&join(prefix, "linear"), &mut self.linear);
    }
}
