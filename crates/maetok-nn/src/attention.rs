//! Multi-head self-attention of MAETok's ViTs, with RoPE on a contiguous range of tokens.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, module::attention, ops::AttentionModuleOptions, Tensor};

use crate::io::{join, ParamVisitor, VisitParams};
use crate::ops::linear3;
use crate::rope::{apply_rope, RopeTable};

/// `qkv` Linear(D→3D) (rows: q, k, v; within each, head h owns rows h·hd..(h+1)·hd) and `proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub heads: usize,
}

/// Where RoPE applies: tokens `start..start + table.cos.dims()[1]` of the sequence.
#[derive(Clone, Debug)]
pub struct RopeSpan<'a, B: Backend> {
    pub table: &'a RopeTable<B>,
    pub start: usize,
}

impl<B: Backend> Attention<B> {
    pub fn new(dim: usize, heads: usize, device: &B::Device) -> Self {
        Self { qkv: LinearConfig::new(dim, 3 * dim).init(device), proj: LinearConfig::new(dim, dim).init(device), heads }
    }

    /// `x`: `[B, N, D]` → `[B, N, D]`. `softmax(q·kᵀ · hd^-½)·v` where q and k are rotated on
    /// the RoPE span (the reference multiplies the scale into q after RoPE; same result).
    pub fn forward(&self, x: Tensor<B, 3>, rope: Option<RopeSpan<'_, B>>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let hd = d / h;
        let qkv = linear3(&self.qkv, x);
        let split = |i: usize| {
            qkv.clone().slice([0..b, 0..n, i * d..(i + 1) * d]).reshape([b, n, h, hd]).swap_dims(1, 2)
        };
        let (mut q, mut k, v) = (split(0), split(1), split(2));
        if let Some(span) = rope {
            let len = span.table.cos.dims()[1];
            let r = span.start..span.start + len;
            let rot = |t: Tensor<B, 4>| {
                let part = t.clone().slice([0..b, 0..h, r.clone(), 0..hd]);
                t.slice_assign([0..b, 0..h, r.clone(), 0..hd], apply_rope(part, span.table))
            };
            q = rot(q);
            k = rot(k);
        }
        let options = AttentionModuleOptions { scale: Some((hd as f64).powf(-0.5)), softcap: None, is_causal: false };
        let out = attention(q, k, v, None, None, options);
        linear3(&self.proj, out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

impl<B: Backend> VisitParams<B> for Attention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "qkv"), &mut self.qkv);
        v.linear(&join(prefix, "proj"), &mut self.proj);
    }
}
