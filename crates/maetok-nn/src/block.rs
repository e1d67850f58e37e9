//! Pre-norm ViT block with optional LayerScale (timm `Block`, MAETok encoder):
//! `x += ls1 · attn(norm1 x)`, `x += ls2 · mlp(norm2 x)`.

use std::ops::Range;

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
        let n = x.dims()[1];
        self.forward_rows(x, rope, 0..n)
    }

    /// [`forward`](Self::forward)'s output rows `rows` only: `x` `[B, N, D]` →
    /// `[B, rows.len(), D]`, the same values. Attention still reads every token; the output
    /// projection, both residuals and the MLP run on the kept rows only, which is what makes
    /// the last block of a trunk cheaper when its caller keeps a subset of the tokens.
    pub fn forward_rows(&self, x: Tensor<B, 3>, rope: Option<&RopeFull<B>>, rows: Range<usize>) -> Tensor<B, 3> {
        let scale = |y: Tensor<B, 3>, ls: &Option<Param<Tensor<B, 1>>>| match ls {
            Some(g) => y * g.val().unsqueeze::<3>(),
            None => y,
        };
        let attn = self.attn.forward_rows(self.norm1.forward(x.clone()), rope, rows.clone());
        let x = keep_rows(x, rows) + scale(attn, &self.ls1);
        x.clone() + scale(self.mlp.forward(self.norm2.forward(x)), &self.ls2)
    }
}

/// Rows `rows` of `x` `[B, N, D]` (`x` itself when that is all of them).
pub(crate) fn keep_rows<B: Backend>(x: Tensor<B, 3>, rows: Range<usize>) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    if rows == (0..n) {
        x
    } else {
        x.slice([0..b, rows, 0..d])
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rope::Rope;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, TensorData};

    type A = Autodiff<NdArray<f32>>;

    pub(crate) fn close(a: TensorData, b: TensorData, what: &str) {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a.iter().zip(&b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-5 * scale, "{what}: max |Δ| {worst:e} (scale {scale:e})");
    }

    /// `forward_rows` gives the rows of `forward`, and the same gradients for the input and
    /// the weights, with RoPE and LayerScale, on the fast (CPU) and the fused-attention path,
    /// for a leading, a trailing and a middle range.
    #[test]
    fn forward_rows_equals_the_rows_of_forward() {
        let dev = Default::default();
        let (b, grid, d, heads) = (2, 3, 16, 2);
        let n = 1 + grid * grid + 4;
        let mut block = BlockConfig::new(d, heads, 24).with_layer_scale(Some(0.5)).init::<A>(&dev);
        let table = Rope::<A>::axial(heads, d / heads, 100.0, grid).table(0, grid, grid, &dev);
        let rope = RopeFull::new(&table, n, 1, block.attn.scale(d));
        let x0 = Tensor::<A, 3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &dev);
        for fused in [false, true] {
            block.attn.fused = fused;
            for rows in [0..1 + grid * grid, n - 4..n, 2..5] {
                let g = Tensor::<A, 3>::random([b, rows.len(), d], Distribution::Default, &dev);
                let run = |sliced: bool| {
                    let x = x0.clone().detach().require_grad();
                    let y = if sliced {
                        block.forward_rows(x.clone(), Some(&rope), rows.clone())
                    } else {
                        keep_rows(block.forward(x.clone(), Some(&rope)), rows.clone())
                    };
                    let grads = (y.clone() * g.clone()).sum().backward();
                    let w = |t: &Tensor<A, 2>| t.grad(&grads).unwrap().into_data();
                    (y.into_data(), x.grad(&grads).unwrap().into_data(), w(&block.attn.qkv.weight.val()), w(&block.mlp.fc1.weight.val()))
                };
                let (got, want) = (run(true), run(false));
                let what = format!("fused {fused}, rows {rows:?}");
                close(got.0, want.0, &format!("{what}: output"));
                close(got.1, want.1, &format!("{what}: dx"));
                close(got.2, want.2, &format!("{what}: d qkv.weight"));
                close(got.3, want.3, &format!("{what}: d fc1.weight"));
            }
        }
    }

    #[test]
    #[should_panic(expected = "attention: output rows 3..9 outside a sequence of 8")]
    fn forward_rows_outside_the_sequence_panics() {
        let dev = Default::default();
        let block = BlockConfig::new(8, 2, 16).init::<NdArray<f32>>(&dev);
        block.forward_rows(Tensor::zeros([1, 8, 8], &dev), None, 3..9);
    }
}
