//! adaLN-Zero transformer block and final layer of DiT/SiT: the conditioning vector `c` `[B, D]`
//! produces per-sample shift, scale and gate vectors that modulate non-affine LayerNorms.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::silu, backend::Backend, Tensor};

use crate::attention::Attention;
use crate::io::{join, ParamVisitor, VisitParams};
use crate::layer_norm::normalize;
use crate::mlp::Mlp;
use crate::ops::linear3;

/// `u·(1 + scale) + shift` with `[B, D]` vectors broadcast over the tokens of `u` `[B, N, D]`.
pub fn modulate<B: Backend>(u: Tensor<B, 3>, shift: Tensor<B, 2>, scale: Tensor<B, 2>) -> Tensor<B, 3> {
    u * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

/// Splits `[B, k·D]` into `k` chunks `[B, D]`.
fn chunks<B: Backend>(m: Tensor<B, 2>, k: usize) -> Vec<Tensor<B, 2>> {
    m.chunk(k, 1)
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

impl<B: Backend> AdaLnBlock<B> {
    pub fn new(dim: usize, heads: usize, mlp_ratio: f64, qk_norm: bool, device: &B::Device) -> Self {
        let mut attn = Attention::new(dim, heads, device);
        if qk_norm {
            attn = attn.with_qk_norm(1e-5, device);
        }
        Self {
            attn,
            mlp: Mlp::new(dim, (dim as f64 * mlp_ratio) as usize, device).with_tanh_gelu(),
            modulation: LinearConfig::new(dim, 6 * dim).init(device),
        }
    }

    /// `h`: `[B, N, D]`, `c`: `[B, D]` → `[B, N, D]`.
    pub fn forward(&self, h: Tensor<B, 3>, c: Tensor<B, 2>) -> Tensor<B, 3> {
        let m = chunks(self.modulation.forward(silu(c)), 6);
        let [sh1, sc1, g1, sh2, sc2, g2]: [Tensor<B, 2>; 6] = m.try_into().expect("six chunks");
        let a = self.attn.forward(modulate(normalize(h.clone(), 1e-6), sh1, sc1), None);
        let h = h + g1.unsqueeze_dim::<3>(1) * a;
        let f = self.mlp.forward(modulate(normalize(h.clone(), 1e-6), sh2, sc2));
        h + g2.unsqueeze_dim::<3>(1) * f
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

impl<B: Backend> FinalLayer<B> {
    pub fn new(dim: usize, out: usize, device: &B::Device) -> Self {
        Self { modulation: LinearConfig::new(dim, 2 * dim).init(device), linear: LinearConfig::new(dim, out).init(device) }
    }

    /// `h`: `[B, N, D]`, `c`: `[B, D]` → `[B, N, C_out]`.
    pub fn forward(&self, h: Tensor<B, 3>, c: Tensor<B, 2>) -> Tensor<B, 3> {
        let [shift, scale]: [Tensor<B, 2>; 2] = chunks(self.modulation.forward(silu(c)), 2).try_into().expect("two chunks");
        linear3(&self.linear, modulate(normalize(h, 1e-6), shift, scale))
    }
}

impl<B: Backend> VisitParams<B> for FinalLayer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "adaLN_modulation.1"), &mut self.modulation);
        v.linear(&join(prefix, "linear"), &mut self.linear);
    }
}
