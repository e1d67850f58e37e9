//! Loading timm checkpoints into [`Vit`] the way timm's `checkpoint_filter_fn` does
//! (`vision_transformer.py`, timm 1.0.12):
//!
//! * OpenCLIP files (`visual.trunk.pos_embed` present, e.g. `ViT-SO400M-14-SigLIP`'s
//!   `open_clip_pytorch_model.bin`): only `visual.trunk.*` is kept, prefix stripped; the text
//!   tower and `logit_scale` are skipped.
//! * `patch_embed.proj.weight` with another kernel size (14 → 16): FlexiViT pseudo-inverse
//!   resampling ([`resample_patch_embed`]).
//! * `pos_embed` with another token count (37² → 16² for DINOv2 at 256 px): bicubic antialiased
//!   resampling of the grid, prefix rows kept ([`resample_pos_embed`]).
//! * Keys the GAP / feature models never use (`attn_pool.*` of the MAP head, DINOv2's
//!   `mask_token`) are accepted and reported as ignored; anything else unknown, missing or
//!   mis-shaped fails with every key named.

use std::path::Path;

use maetok_nn::io::{CheckpointError, LoadReport, Loader, VisitParams};

use burn::tensor::backend::Backend;

use crate::teacher::{Vit, VitConfig};
use maetok_nn::resample::{resample_patch_embed, resample_pos_embed};

/// Keys a feature-only ViT accepts without using.
const IGNORABLE: [&str; 2] = ["attn_pool.", "mask_token"];

/// Applies timm's checkpoint filter to the tensors of `loader` for a model of shape `config`.
pub fn filter_timm_checkpoint<B: Backend>(loader: &mut Loader<B>, config: &VitConfig) -> Result<(), CheckpointError> {
    if loader.contains("visual.trunk.pos_embed") {
        loader.rename_keys(|k| k.strip_prefix("visual.trunk.").map(str::to_string))?;
    }
    let p = config.patch_size;
    if let Some((shape, values)) = loader.take("patch_embed.proj.weight") {
        let (shape, values) = match shape.as_slice() {
            &[o, 3, h, w] if (h, w) != (p, p) => ([o, 3, p, p].to_vec(), resample_patch_embed(&values, [o, 3, h, w], [p, p])),
            _ => (shape, values),
        };
        loader.insert("patch_embed.proj.weight", shape, values);
    }
    let prefix = config.prefix_tokens();
    let g = config.grid();
    if let Some((shape, values)) = loader.take("pos_embed") {
        let (shape, values) = match shape.as_slice() {
            // A grid that cannot be resampled (not square after the prefix rows, e.g. a
            // checkpoint of another family) stays as it is: the load then reports it as
            // mis-shaped together with every other key that does not fit.
            &[1, n, d] if n != prefix + g * g => match resample_pos_embed(&values, n, d, prefix, [g, g]) {
                Ok(v) => (vec![1, prefix + g * g, d], v),
                Err(_) => (shape, values),
            },
            _ => (shape, values),
        };
        loader.insert("pos_embed", shape, values);
    }
    Ok(())
}

/// Builds a [`Vit`] of shape `config` from an open checkpoint, resampling as timm does.
pub fn load_vit_from<B: Backend>(
    mut loader: Loader<B>,
    config: &VitConfig,
    device: &B::Device,
) -> Result<(Vit<B>, LoadReport), CheckpointError> {
    config
        .validate()
        .map_err(|e| CheckpointError::Mismatch { path: loader.path().to_path_buf(), details: format!("  invalid ViT config: {e}\n") })?;
    filter_timm_checkpoint(&mut loader, config)?;
    let mut model = Vit::new(config, device);
    model.visit_params("", &mut loader);
    let report = loader.finish(&IGNORABLE)?;
    Ok((model, report))
}

/// Loads a timm / OpenCLIP checkpoint (`model.safetensors`, or a PyTorch `.bin`/`.pth`) into a
/// ViT of shape `config` (e.g. [`VitConfig::dinov2_large`], [`VitConfig::siglip_so400m`]).
pub fn load_vit<B: Backend>(
    path: impl AsRef<Path>,
    config: &VitConfig,
    device: &B::Device,
) -> Result<(Vit<B>, LoadReport), CheckpointError> {
    load_vit_from(Loader::from_any(path, device)?, config, device)
}
