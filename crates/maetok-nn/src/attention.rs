//! Multi-head self-attention of MAETok's ViTs, with RoPE on a contiguous range of tokens.

use std::ops::Range;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, module::attention, ops::AttentionModuleOptions, Tensor};

use crate::io::{join, ParamVisitor, VisitParams};
use crate::layer_norm::{LayerNorm, LayerNormConfig};
use crate::ops::linear3;
use crate::rope::RopeFull;

/// `qkv` Linear(D→3D) (rows: q, k, v; within each, head h owns rows h·hd..(h+1)·hd) and `proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub heads: usize,
    /// Use the backend's fused attention op (flash attention on CUDA/wgpu) instead of
    /// [`crate::fused::attention`] (matmul–softmax–matmul, the reference's op order, with a CPU
    /// fast path on NdArray).
    pub fused: bool,
    /// Optional per-head LayerNorms on q and k (timm `qk_norm=True`: `q_norm`, `k_norm` over the
    /// head dimension, applied before RoPE and scaling).
    pub q_norm: Option<LayerNorm<B>>,
    pub k_norm: Option<LayerNorm<B>>,
}

/// Multi-head self-attention of width `dim` with `heads` heads.
#[derive(Config, Debug)]
pub struct AttentionConfig {
    pub dim: usize,
    pub heads: usize,
    /// Affine q/k LayerNorms over the head dimension with this eps (timm `qk_norm=True`, whose
    /// `nn.LayerNorm` default is 1e-5); none when absent.
    pub qk_norm_eps: Option<f64>,
    /// Use the backend's fused attention op (see [`Attention::fused`]).
    #[config(default = false)]
    pub fused: bool,
}

impl AttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let hd = self.dim / self.heads;
        let norm = || self.qk_norm_eps.map(|eps| LayerNormConfig::new(hd).with_eps(eps).init(device));
        Attention {
            qkv: LinearConfig::new(self.dim, 3 * self.dim).init(device),
            proj: LinearConfig::new(self.dim, self.dim).init(device),
            heads: self.heads,
            fused: self.fused,
            q_norm: norm(),
            k_norm: norm(),
        }
    }
}

impl<B: Backend> Attention<B> {
    /// Attention scale `hd^-½`.
    pub fn scale(&self, dim: usize) -> f64 {
        ((dim / self.heads) as f64).powf(-0.5)
    }

    /// `x`: `[B, N, D]` → `[B, N, D]`: `softmax((rope(q)·s)·rope(k)ᵀ)·v` with `s = hd^-½`
    /// multiplied into q after RoPE, as the reference does. `rope` must have been built for this
    /// sequence length with `q_scale = s` ([`RopeFull::new`]); without it q is only scaled.
    pub fn forward(&self, x: Tensor<B, 3>, rope: Option<&RopeFull<B>>) -> Tensor<B, 3> {
        let n = x.dims()[1];
        self.forward_rows(x, rope, 0..n)
    }

    /// [`forward`](Self::forward)'s output rows `rows` only: `x` `[B, N, D]` →
    /// `[B, rows.len(), D]`. Every token still gives keys and values; the output projection runs
    /// on the kept rows (the last block of a trunk whose other rows are discarded). `rows` must
    /// lie within `0..N`.
    pub fn forward_rows(&self, x: Tensor<B, 3>, rope: Option<&RopeFull<B>>, rows: Range<usize>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        assert!(rows.start < rows.end && rows.end <= n, "attention: output rows {rows:?} outside a sequence of {n}");
        let h = self.heads;
        let hd = d / h;
        let qkv = linear3(&self.qkv, x);
        let out = match (&self.q_norm, &self.k_norm) {
            (None, None) if !self.fused => crate::fused::attention_qkv(qkv, h, rope, self.scale(d)),
            (q_norm, k_norm) => {
                let split = |i: usize| qkv.clone().slice([0..b, 0..n, i * d..(i + 1) * d]).reshape([b, n, h, hd]).swap_dims(1, 2);
                let (mut q, mut k, v) = (split(0), split(1), split(2));
                if let (Some(qn), Some(kn)) = (q_norm, k_norm) {
                    q = qn.forward(q);
                    k = kn.forward(k);
                }
                let (q, k) = match rope {
                    Some(r) => (r.apply_q(q), r.apply_k(k)),
                    None => (q * self.scale(d), k),
                };
                if self.fused {
                    let options = AttentionModuleOptions { scale: Some(1.0), softcap: None, is_causal: false };
                    attention(q, k, v, None, None, options).swap_dims(1, 2).reshape([b, n, d])
                } else {
                    crate::fused::attention(q, k, v)
                }
            }
        };
        let out = if rows == (0..n) { out } else { out.slice([0..b, rows, 0..d]) };
        linear3(&self.proj, out)
    }
}

impl<B: Backend> VisitParams<B> for Attention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "qkv"), &mut self.qkv);
        if let Some(n) = self.q_norm.as_mut() {
            n.visit_params(&join(prefix, "q_norm"), v);
        }
        if let Some(n) = self.k_norm.as_mut() {
            n.visit_params(&join(prefix, "k_norm"), v);
        }
        v.linear(&join(prefix, "proj"), &mut self.proj);
    }
}
