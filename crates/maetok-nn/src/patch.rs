//! Patch embedding (strided convolution as one GEMM) and the MAETok unpatchify.

use burn::config::Config;
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

/// Non-overlapping `patch × patch` patches of `in_chans` channels projected to `dim`.
#[derive(Config, Debug)]
pub struct PatchEmbedConfig {
    #[config(default = 3)]
    pub in_chans: usize,
    pub dim: usize,
    pub patch: usize,
}

impl PatchEmbedConfig {
    /// PyTorch's conv init: `U(−k, k)`, `k = 1/√fan_in`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PatchEmbed<B> {
        let (c, p) = (self.in_chans, self.patch);
        let k = 1.0 / ((c * p * p) as f64).sqrt();
        let dist = burn::tensor::Distribution::Uniform(-k, k);
        PatchEmbed {
            weight: Param::from_tensor(Tensor::random([self.dim, c, p, p], dist, device)),
            bias: Param::from_tensor(Tensor::random([self.dim], dist, device)),
            patch: p,
        }
    }
}

impl<B: Backend> PatchEmbed<B> {
    /// `x`: `[B, C, H, W]` (H, W multiples of p) → `[B, (H/p)·(W/p), D]`, token `row·(W/p) + col`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, c, h, w] = x.dims();
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let [d, ..] = self.weight.lazy_shape().dims::<4>();
        let cols = crate::fused::permute(x.reshape([b, c, gh, p, gw, p]), [0, 2, 4, 1, 3, 5]).reshape([b * gh * gw, c * p * p]);
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
    crate::fused::permute(x.reshape([b, gh, gw, patch, patch, chans]), [0, 5, 1, 3, 2, 4]).reshape([b, chans, gh * patch, gw * patch])
}

/// The inverse of [`unpatchify`]: `img` `[B, C, gh·P, gw·P]` → tokens `[B, gh·gw, P·P·C]` in the
/// `ToPixel` layout (used to carry an image-space gradient back to the last linear layer).
pub fn patchify<B: Backend>(img: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = img.dims();
    let (gh, gw) = (h / patch, w / patch);
    crate::fused::permute(img.reshape([b, c, gh, patch, gw, patch]), [0, 2, 4, 3, 5, 1]).reshape([b, gh * gw, patch * patch * c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    #[test]
    fn patchify_inverts_unpatchify() {
        let (p, gh, gw, c) = (2, 3, 2, 3);
        let n = gh * gw * p * p * c;
        let x = Tensor::<NdArray<f32>, 3>::from_data(
            TensorData::new((0..n).map(|v| v as f32).collect::<Vec<_>>(), [1, gh * gw, p * p * c]),
            &Default::default(),
        );
        let img = unpatchify(x.clone(), p, gh, gw, c);
        // token 1 (hh 0, ww 1), p 1, q 0, c 2 → value (1·2 + 0)·3 + 2 = 8 plus 12 for the token.
        assert_eq!(img.clone().slice([0..1, 2..3, 1..2, 2..3]).into_scalar(), 20.0);
        assert_eq!(patchify(img, p).into_data().to_vec::<f32>().unwrap(), x.into_data().to_vec::<f32>().unwrap());
    }
}
