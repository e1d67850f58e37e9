//! SiT on MAETok latents (`modelling/sit.py` in 1-D mode, `losses/sit_loss.py`;
//! `shared/spec/generative.md` §2–3): the shared adaLN-Zero latent transformer
//! ([`maetok_generator::LatentTransformer`]) predicting the velocity of a stochastic
//! interpolant (t = 0 data, t = 1 noise), the published sizes, and the training loss. The
//! paths and the samplers live in `maetok-sampler`.

pub mod loss;
pub mod preset;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use maetok_generator::LoadReport;
use maetok_generator::{load_folder, read_config, save_folder, FolderError, LatentTransformer, LatentTransformerConfig};

pub use loss::{si_loss, LossDraws, SiLossOutput};
pub use preset::preset;

/// A SiT: the latent transformer with a velocity head.
pub type Sit<B> = LatentTransformer<B>;

/// Errors of this crate; messages name the preset or the folder.
#[derive(Debug, thiserror::Error)]
pub enum SitError {
    #[error("unknown SiT preset '{0}'; choose SiT-S, SiT-B, SiT-L or SiT-XL (patch suffixes /1 /2 /4 /8 are accepted and collapse to 1 on latent sequences)")]
    UnknownPreset(String),
    #[error("{0}: learn_sigma = true is a DiT (a learned-variance diffusion model), not a SiT")]
    LearnedVariance(PathBuf),
    #[error(transparent)]
    Folder(#[from] FolderError),
}

/// Loads a SiT folder (`config.json` + `model.safetensors`), strictly; `dir` may also be a
/// Hugging Face id, read through the Hugging Face cache.
pub fn load_sit<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<(Sit<B>, LatentTransformerConfig, LoadReport), SitError> {
    let dir = &maetok_generator::folder::resolve_folder(dir.as_ref())?;
    let cfg = read_config(dir, |_| {})?;
    if cfg.learns_sigma() {
        return Err(SitError::LearnedVariance(dir.to_path_buf()));
    }
    let (model, report) = load_folder(dir, &cfg, device)?;
    Ok((model, cfg, report))
}

/// Writes `config.json` and `model.safetensors` (atomically) to `dir`.
pub fn save_sit<B: Backend>(model: &mut Sit<B>, cfg: &LatentTransformerConfig, dir: impl AsRef<Path>) -> Result<(), SitError> {
    Ok(save_folder(model, cfg, dir.as_ref())?)
}
