//! Patch embedding (strided convolution as one GEMM) and the MAETok unpatchify.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::io::{join, ParamVisitor, VisitParams};

/// timm `PatchEmbed`: Conv2d(C→D, kernel = stride = p) then flatten to row-major tokens.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// `proj.weight` `[D, C, p, p]` (PyTorch conv layout).
    pub weight: Param<Tensor<B, 4>>,
    /// `proj.bias` `[D]`.
    pub bias: Param<Tensor<B, 1>>,
    pub patch: usize,
}

impl<B: Backend> PatchEmbed<B> {
    pub fn new(in_chans: usize, dim: usize, patch: usize, device: &B::Device) -> Self {
        let fan_in = (in_chans * patch * patch) as f64;
        let k = 1.0 / fan_in.sqrt();
        let dist = burn::tensor::Distribution::Uniform(-k, k);
        Self {
            weight: Param::from_tensor(Tensor::random([dim, in_chans, patch, patch], dist, device)),
            bias: Param::from_tensor(Tensor::random([dim], dist, device)),
            patch,
        }
    }

    /// `x`: `[B, C, H, W]` (H, W multiples of p) → `[B, (H/p)·(W/p), D]`, token `row·(W/p) + col`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, c, h, w] = x.dims();
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let [d, ..] = self.weight.lazy_shape().dims::<4>();
        let cols = x
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b * gh * gw, c * p * p]);
        let w = self.weight.val().reshape([d, c * p * p]).transpose();
        (cols.matmul(w) + self.bias.val().unsqueeze_dim::<2>(0)).reshape([b, gh * gw, d])
    }
}

impl<B: Backend> VisitParams<B> for PatchEmbed<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "proj.weight"), &mut self.weight);
        v.param(&join(prefix, "proj.bias"), &mut self.bias);
    }
}

/// MAETok `ToPixel` unpatchify: token `hh·gw + ww` holds `(p·P + q)·C + c` →
/// `img[b, c, P·hh + p, P·ww + q]`. `x`: `[B, gh·gw, P·P·C]` → `[B, C, gh·P, gw·P]`.
pub fn unpatchify<B: Backend>(x: Tensor<B, 3>, patch: usize, gh: usize, gw: usize, chans: usize) -> Tensor<B, 4> {
    let b = x.dims()[0];
    x.reshape([b, gh, gw, patch, patch, chans])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([b, chans, gh * patch, gw * patch])
}
