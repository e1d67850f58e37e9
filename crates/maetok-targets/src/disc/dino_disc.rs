//! `DinoDisc` (spec §5.3, from VAR): a frozen DINO ViT-S/16 trunk read out after the embedding and
//! after blocks 2, 5, 8 and 11, one [`DiscHead`] per readout, logits concatenated: `[B, 5·196]`.
//!
//! Input handling (fp32): `x' = x·(0.5/s) + (0.5 − m)/s` (ImageNet statistics from `[-1, 1]`), then
//! to 224²: for inputs larger than 224 on both sides, one random 224 crop shared by the batch with
//! probability ½ (Python `random.random() <= 0.5`), otherwise `F.interpolate` — `area` when
//! `H > 224`, else `bicubic` (`align_corners=False`). Each readout is `(patch tokens + cls token)`
//! as `[B, C, 196]`; the final norm is not applied.
//!
//! The reference's float32 attention path calls `proj` on the un-transposed `[B, H, L, hd]`
//! output (a shape error unless flash-attn takes the bf16 path); the standard multi-head
//! attention, which the fixture records, is used here.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use maetok_nn::io::{join, CheckpointError, LoadReport, Loader, ParamVisitor, VisitParams};
use rand::Rng;

use maetok_nn::resample::{area_matrix, bicubic_matrix, resize_with};

use super::head::DiscHead;
use crate::teacher::{Vit, VitConfig, VitInputError, IMAGENET_MEAN, IMAGENET_STD};

/// Shape of the discriminator.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DiscConfig {
    /// The trunk (224 px, patch 16).
    pub backbone: VitConfig,
    /// Blocks read out (0-based); those ≥ depth are dropped, as the reference does.
    pub key_depths: Vec<usize>,
    /// Kernel of the heads' residual convolution.
    pub kernel: usize,
    /// BatchNorm eps.
    pub norm_eps: f64,
}

impl DiscConfig {
    /// The reference setting: DINO ViT-S/16, readouts after blocks 2, 5, 8, 11, kernel 9.
    pub fn dino_small() -> Self {
        Self { backbone: VitConfig::dino_small(), key_depths: vec![2, 5, 8, 11], kernel: 9, norm_eps: 1e-6 }
    }

    /// Checks the numbers fit together; the error names the field.
    pub fn validate(&self) -> Result<(), DiscConfigError> {
        self.backbone.validate()?;
        if self.kernel.is_multiple_of(2) {
            return Err(DiscConfigError::EvenKernel(self.kernel));
        }
        Ok(())
    }

    /// Readout blocks that exist.
    pub fn used_key_depths(&self) -> Vec<usize> {
        self.key_depths.iter().copied().filter(|&d| d < self.backbone.depth).collect()
    }

    /// Logits per image: one per patch token and head.
    pub fn logits_per_image(&self) -> usize {
        (self.used_key_depths().len() + 1) * self.backbone.grid() * self.backbone.grid()
    }
}

/// A discriminator configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiscConfigError {
    #[error("backbone: {0}")]
    Backbone(#[from] crate::teacher::VitConfigError),
    #[error("kernel {0} must be odd (circular padding kernel/2 on both sides)")]
    EvenKernel(usize),
}

/// The trunk's input affine map from `[-1, 1]`: `x·(0.5/s) + (0.5 − m)/s` per channel (the
/// reference's `x_scale`, `x_shift` buffers, computed in f32 as it does).
pub fn input_affine() -> ([f32; 3], [f32; 3]) {
    let scale = IMAGENET_STD.map(|sd| 0.5 / sd);
    let shift = [0, 1, 2].map(|c| (0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
    (scale, shift)
}

/// How an input is brought to the trunk's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscResize {
    /// `F.interpolate` (area when larger than the trunk size, bicubic otherwise).
    Interpolate,
    /// One crop of the trunk size at `(top, left)` for the whole batch.
    Crop { top: usize, left: usize },
}

impl DiscResize {
    /// The reference's random choice for a `h × w` input and trunk size `size`: a crop (uniform
    /// offsets) with probability ½ when both sides exceed `size`, else interpolation.
    pub fn draw(h: usize, w: usize, size: usize, rng: &mut impl Rng) -> Self {
        if h > size && w > size && rng.random::<f64>() <= 0.5 {
            DiscResize::Crop { top: rng.random_range(0..=h - size), left: rng.random_range(0..=w - size) }
        } else {
            DiscResize::Interpolate
        }
    }
}

/// The DINO discriminator: frozen trunk + trainable heads.
#[derive(Module, Debug)]
pub struct DinoDisc<B: Backend> {
    /// Frozen (its parameters never require gradients; gradients still reach the input).
    pub backbone: Vit<B>,
    pub heads: Vec<DiscHead<B>>,
    pub key_depths: Vec<usize>,
}

impl<B: Backend> DinoDisc<B> {
    /// Trunk with placeholder weights, heads freshly initialised.
    pub fn new(config: &DiscConfig, device: &B::Device) -> Self {
        Self::with_backbone(Vit::new(&config.backbone, device), config, device)
    }

    /// A given trunk (frozen here) with freshly initialised heads.
    pub fn with_backbone(backbone: Vit<B>, config: &DiscConfig, device: &B::Device) -> Self {
        let keys = config.used_key_depths();
        let c = &config.backbone;
        let heads = (0..keys.len() + 1).map(|_| DiscHead::new(c.dim, config.kernel, config.norm_eps, device)).collect();
        Self { backbone: backbone.no_grad(), heads, key_depths: keys }
    }

    /// `x` in `[-1, 1]` `[B, 3, H, W]` → trunk input `[B, 3, S, S]` (ImageNet-normalised, resized).
    pub fn preprocess(&self, x: Tensor<B, 4>, resize: DiscResize) -> Tensor<B, 4> {
        let device = x.device();
        let [b, c, h, w] = x.dims();
        let s = self.backbone.img_size;
        let (scale, shift) = input_affine();
        let v = |a: [f32; 3]| Tensor::<B, 1>::from_data(TensorData::new(a.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
        let x = x * v(scale) + v(shift);
        match resize {
            DiscResize::Crop { top, left } => x.slice([0..b, 0..c, top..top + s, left..left + s]),
            DiscResize::Interpolate if (h, w) == (s, s) => x,
            DiscResize::Interpolate => {
                let (rh, rw) = if h > s { (area_matrix(h, s), area_matrix(w, s)) } else { (bicubic_matrix(h, s), bicubic_matrix(w, s)) };
                resize_with(x, &rh, s, &rw, s)
            }
        }
    }

    /// The readouts `[B, C, N]` for a trunk input `[B, 3, S, S]`: after the embedding, then
    /// after each key block.
    pub fn readouts(&self, x: Tensor<B, 4>) -> Result<Vec<Tensor<B, 3>>, VitInputError> {
        let readout = |h: &Tensor<B, 3>| {
            let [b, n, d] = h.dims();
            let cls = h.clone().slice([0..b, 0..1, 0..d]);
            (h.clone().slice([0..b, 1..n, 0..d]) + cls).swap_dims(1, 2)
        };
        let mut h = self.backbone.embed(x)?;
        let mut out = vec![readout(&h)];
        let last = self.key_depths.iter().copied().max();
        for (i, blk) in self.backbone.blocks.iter().enumerate() {
            if last.is_none_or(|l| i > l) {
                break;
            }
            h = blk.forward(h, None);
            if self.key_depths.contains(&i) {
                out.push(readout(&h));
            }
        }
        Ok(out)
    }

    /// Logits `[B, heads·N]` for images `x` in `[-1, 1]`. `train`: heads in training mode (batch
    /// statistics, one power iteration; running statistics and `u`, `v` updated).
    pub fn forward(&mut self, x: Tensor<B, 4>, resize: DiscResize, train: bool) -> Result<Tensor<B, 2>, VitInputError> {
        let acts = self.readouts(self.preprocess(x, resize))?;
        Ok(self.heads_forward(acts, train))
    }

    /// The heads on the trunk's readouts (one `[B, C, N]` per head, as [`DinoDisc::readouts`]
    /// gives them) → logits `[B, heads·N]`. In training mode the heads' BatchNorm takes the
    /// statistics of these `B` rows, so a data-parallel step gathers every peer's readouts first.
    pub fn heads_forward(&mut self, acts: Vec<Tensor<B, 3>>, train: bool) -> Tensor<B, 2> {
        assert_eq!(acts.len(), self.heads.len(), "one readout per head");
        let logits = self.heads.iter_mut().zip(acts).map(|(h, a)| h.forward(a, train)).collect();
        Tensor::cat(logits, 1)
    }
}

/// The heads' keys: `heads.{i}.…` (the trunk is not part of the reference's state dict).
struct HeadKeys<'a, B: Backend>(&'a mut Vec<DiscHead<B>>);

impl<B: Backend> VisitParams<B> for HeadKeys<'_, B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        for (i, h) in self.0.iter_mut().enumerate() {
            h.visit_params(&join(prefix, &format!("heads.{i}")), v);
        }
    }
}

impl<B: Backend> DinoDisc<B> {
    /// Visits the heads' parameters and state under `heads.{i}` (the discriminator state dict).
    pub fn visit_heads<V: ParamVisitor<B>>(&mut self, v: &mut V) {
        HeadKeys(&mut self.heads).visit_params("", v);
    }
}

/// The discriminator's state dict is its heads' (`heads.{i}.…`): the frozen trunk is loaded from
/// its own checkpoint, as in the reference.
impl<B: Backend> VisitParams<B> for DinoDisc<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        HeadKeys(&mut self.heads).visit_params(prefix, v);
    }
}

/// Builds the discriminator from the DINO trunk checkpoint (`dino_deitsmall16_pretrain.pth` or
/// a safetensors copy; `x_scale`/`x_shift` accepted and checked if present) and, optionally, a
/// discriminator state dict (`heads.*`, e.g. from a training checkpoint). The k-part of every
/// `qkv` bias is zeroed, as the reference does when loading. Without `heads` they are freshly
/// initialised.
pub fn load_dino_disc_from<B: Backend>(
    mut trunk: Loader<B>,
    heads: Option<Loader<B>>,
    config: &DiscConfig,
    device: &B::Device,
) -> Result<(DinoDisc<B>, LoadReport), CheckpointError> {
    let path = trunk.path().to_path_buf();
    if let Err(e) = config.validate() {
        return Err(CheckpointError::Mismatch { path, details: format!("  invalid discriminator config: {e}\n") });
    }
    let mut problems = String::new();
    let (scale, shift) = input_affine();
    for (key, want) in [("x_scale", scale), ("x_shift", shift)] {
        if let Some((shape, values)) = trunk.take(key) {
            let close = values.len() == 3 && values.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5);
            if !close {
                problems.push_str(&format!("    {key} {shape:?} = {values:?}, expected {want:?} (ImageNet statistics)\n"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(CheckpointError::Mismatch { path, details: format!("  buffers with unexpected values:\n{problems}") });
    }
    let mut backbone = Vit::new(&config.backbone, device);
    backbone.visit_params("", &mut trunk);
    let report = trunk.finish(&[])?;
    for blk in backbone.blocks.iter_mut() {
        if let Some(bias) = blk.attn.qkv.bias.as_mut() {
            let d = bias.dims()[0] / 3;
            let b = bias.val();
            let zeroed = Tensor::cat(vec![b.clone().narrow(0, 0, d), Tensor::zeros([d], device), b.narrow(0, 2 * d, d)], 0);
            *bias = burn::module::Param::initialized(bias.id, zeroed);
        }
    }
    let mut disc = DinoDisc::with_backbone(backbone, config, device);
    if let Some(mut h) = heads {
        h.rename_keys(|k| (!k.ends_with("num_batches_tracked")).then(|| k.to_string()))?;
        disc.visit_heads(&mut h);
        h.finish(&[])?;
    }
    Ok((disc, report))
}

/// [`load_dino_disc_from`] on files (`.safetensors`, or PyTorch `.pth`/`.bin`).
pub fn load_dino_disc<B: Backend>(
    trunk: impl AsRef<Path>,
    heads: Option<&Path>,
    config: &DiscConfig,
    device: &B::Device,
) -> Result<(DinoDisc<B>, LoadReport), CheckpointError> {
    let heads = heads.map(|p| Loader::from_any(p, device)).transpose()?;
    load_dino_disc_from(Loader::from_any(trunk, device)?, heads, config, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maetok_nn::testing::{assert_walk_covers_module, ParamCensus};

    #[test]
    fn trunk_and_head_walks_cover_every_parameter() {
        type B = burn::backend::NdArray<f32>;
        let backbone = VitConfig { dim: 24, depth: 3, heads: 2, mlp_hidden: 40, ..VitConfig::dino_small() };
        let config = DiscConfig { backbone, key_depths: vec![0, 2, 5], ..DiscConfig::dino_small() };
        let mut disc = DinoDisc::<B>::new(&config, &Default::default());
        assert_walk_covers_module("DINO trunk", &mut disc.backbone);
        let mut census = ParamCensus::default();
        disc.backbone.visit_params("", &mut census);
        disc.visit_heads(&mut census);
        assert_eq!(census.values, disc.num_params());
    }
}
