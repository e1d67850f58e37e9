//! DiT on MAETok latents (`modelling/dit.py` in 1-D mode, `modelling/diffusion/*`;
//! `shared/spec/generative.md` §6–7): the shared adaLN-Zero latent transformer
//! ([`maetok_generator::LatentTransformer`]) with a learned-variance head (`[ε̂ | v]` per token)
//! fed the DDPM step index, the published sizes, and the hybrid MSE + variational-bound loss.
//! The diffusion process and its samplers live in `maetok-sampler`.

pub mod loss;
pub mod preset;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use maetok_generator::{load_folder, read_config, save_folder, FolderError, LatentTransformer, LatentTransformerConfig, LoadReport};

pub use loss::{hybrid_loss, HybridLoss};
pub use preset::preset;

/// A DiT: the latent transformer with a learned-variance head.
pub type Dit<B> = LatentTransformer<B>;

/// Errors of this crate; messages name the preset or the folder.
#[derive(Debug, thiserror::Error)]
pub enum DitError {
    #[error("unknown DiT preset '{0}'; choose DiT-S, DiT-B, DiT-L, DiT-SL or DiT-XL (patch suffixes are accepted; patch 1 on sequences)")]
    UnknownPreset(String),
    #[error("{0}: learn_sigma = false (fixed-variance DiT) is not supported: the samplers and the loss need [eps | v]")]
    FixedVariance(PathBuf),
    #[error(transparent)]
    Folder(#[from] FolderError),
}

/// Loads a DiT folder (`config.json` + `model.safetensors`), strictly. A config without
/// `learn_sigma` gets the DiT default (true).
pub fn load_dit<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<(Dit<B>, LatentTransformerConfig, LoadReport), DitError> {
    let dir = &maetok_generator::folder::resolve_folder(dir.as_ref())?;
    let cfg = read_config(dir, |c| {
        c.learn_sigma.get_or_insert(true);
    })?;
    if !cfg.learns_sigma() {
        return Err(DitError::FixedVariance(dir.to_path_buf()));
    }
    let (model, report) = load_folder(dir, &cfg, device)?;
    Ok((model, cfg, report))
}

/// Writes `config.json` and `model.safetensors` atomically.
pub fn save_dit<B: Backend>(model: &mut Dit<B>, cfg: &LatentTransformerConfig, dir: impl AsRef<Path>) -> Result<(), DitError> {
    Ok(save_folder(model, cfg, dir.as_ref())?)
}
