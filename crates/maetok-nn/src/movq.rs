//! MoVQ-modulated ViT block (`MoVQBlockv2`) and final norm (`MoVQNorm`) of MAETok's decoders.
//!
//! Only the last `T` tokens (the latent tokens) are modulated, per token, by
//! `LN(x)·scale + shift` (no `1+`), with `(shift, scale)` from `Linear(SiLU(z))` where `z` is
//! the raw latent `[B, T, C]`. LayerNorms have no affine parameters (eps 1e-6); no LayerScale.

use std::ops::Range;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::silu, backend::Backend, Tensor};

use crate::attention::{Attention, AttentionConfig};
use crate::block::keep_rows;
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
        let n = x.dims()[1];
        self.forward_rows(x, z, rope, 0..n)
    }

    /// [`forward`](Self::forward)'s output rows `rows` only: `x` `[B, N, D]` →
    /// `[B, rows.len(), D]`, the same values (attention reads every token; the projection,
    /// residuals and MLP run on the kept rows). `rows` either ends at `N` and holds all `T`
    /// latent rows, or ends before them (then the second modulation is a plain LayerNorm).
    ///
    /// # Panics
    /// When `rows` holds only part of the latent rows, or lies outside `0..N`.
    pub fn forward_rows(&self, x: Tensor<B, 3>, z: Tensor<B, 3>, rope: Option<&RopeFull<B>>, rows: Range<usize>) -> Tensor<B, 3> {
        let (n, t) = (x.dims()[1], z.dims()[1]);
        let latents = rows.end == n && rows.len() >= t;
        assert!(latents || rows.end + t <= n, "MoVQ block: output rows {rows:?} cut the {t} latent rows of a sequence of {n}");
        // `[shift_msa | scale_msa | shift_mlp | scale_mlp]`, read in place by the modulation.
        let m = linear3(&self.ada_ln, silu(z));
        let h = modulate_latents(x.clone(), m.clone(), 0, 1, self.eps);
        let x = keep_rows(x, rows.clone()) + self.attn.forward_rows(h, rope, rows);
        let h = if latents { modulate_latents(x.clone(), m, 2, 3, self.eps) } else { normalize(x.clone(), self.eps) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::close;
    use crate::rope::Rope;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Distribution;

    type A = Autodiff<NdArray<f32>>;

    /// `forward_rows` gives the rows of `forward` and the same gradients (input, latents, the
    /// modulation's and the MLP's weights) for the image rows alone (plain LayerNorm before the
    /// MLP) and for a range ending with the latent rows (modulated).
    #[test]
    fn forward_rows_equals_the_rows_of_forward() {
        let dev = Default::default();
        let (b, grid, d, heads, t, c) = (2, 3, 16, 2, 4, 5);
        let n = 1 + grid * grid + t;
        let block = MovqBlockConfig::new(d, heads, 24, c).init::<A>(&dev);
        let table = Rope::<A>::axial(heads, d / heads, 100.0, grid).table(0, grid, grid, &dev);
        let rope = RopeFull::new(&table, n, 1, block.attn.scale(d));
        let x0 = Tensor::<A, 3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &dev);
        let z0 = Tensor::<A, 3>::random([b, t, c], Distribution::Normal(0.0, 1.0), &dev);
        for rows in [1..1 + grid * grid, 3..n] {
            let g = Tensor::<A, 3>::random([b, rows.len(), d], Distribution::Default, &dev);
            let run = |sliced: bool| {
                let (x, z) = (x0.clone().detach().require_grad(), z0.clone().detach().require_grad());
                let y = if sliced {
                    block.forward_rows(x.clone(), z.clone(), Some(&rope), rows.clone())
                } else {
                    keep_rows(block.forward(x.clone(), z.clone(), Some(&rope)), rows.clone())
                };
                let grads = (y.clone() * g.clone()).sum().backward();
                let w = |t: &Tensor<A, 2>| t.grad(&grads).unwrap().into_data();
                (
                    y.into_data(),
                    x.grad(&grads).unwrap().into_data(),
                    z.grad(&grads).unwrap().into_data(),
                    w(&block.ada_ln.weight.val()),
                    w(&block.mlp.fc2.weight.val()),
                )
            };
            let (got, want) = (run(true), run(false));
            let what = format!("rows {rows:?}");
            close(got.0, want.0, &format!("{what}: output"));
            close(got.1, want.1, &format!("{what}: dx"));
            close(got.2, want.2, &format!("{what}: dz"));
            close(got.3, want.3, &format!("{what}: d adaLN weight"));
            close(got.4, want.4, &format!("{what}: d fc2.weight"));
        }
    }

    #[test]
    #[should_panic(expected = "MoVQ block: output rows 0..6 cut the 3 latent rows of a sequence of 8")]
    fn forward_rows_through_the_latents_panics() {
        let dev = Default::default();
        let block = MovqBlockConfig::new(8, 2, 16, 4).init::<NdArray<f32>>(&dev);
        block.forward_rows(Tensor::zeros([1, 8, 8], &dev), Tensor::zeros([1, 3, 4], &dev), None, 0..6);
    }
}
