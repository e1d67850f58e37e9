//! Generator folders in the Hugging Face layout: `config.json` + `model.safetensors` (PyTorch
//! names), loaded strictly.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use maetok_nn::io::{write_atomic, CheckpointError, Exporter, LoadReport, Loader, VisitParams};

use crate::config::{ConfigError, LatentTransformerConfig};
use crate::model::LatentTransformer;

/// Errors loading or saving a generator folder.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("model folder {0} does not exist or is not a folder")]
    NotAFolder(PathBuf),
    #[error(transparent)]
    Hub(#[from] maetok_nn::hub::HubError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The folder `spec` names: itself, or for a Hugging Face id (`owner/name`) that is not a local
/// path, its snapshot in the Hugging Face cache (fetched if missing; [`maetok_nn::hub`]).
pub fn resolve_folder(spec: &Path) -> Result<PathBuf, FolderError> {
    if !spec.exists() && maetok_nn::hub::is_model_id(&spec.to_string_lossy()) {
        return Ok(maetok_nn::hub::resolve_model_dir(spec)?);
    }
    Ok(spec.to_path_buf())
}

/// Reads `dir/config.json`; `adjust` may fill in a family's defaults before validation.
pub fn read_config(dir: &Path, adjust: impl FnOnce(&mut LatentTransformerConfig)) -> Result<LatentTransformerConfig, FolderError> {
    if !dir.is_dir() {
        return Err(FolderError::NotAFolder(dir.to_path_buf()));
    }
    let path = dir.join("config.json");
    let mut cfg = LatentTransformerConfig::from_file(&path)?;
    adjust(&mut cfg);
    cfg.check(&path.display().to_string())?;
    Ok(cfg)
}

/// Loads a generator folder whose config is `cfg`: `dir/model.safetensors` strictly, with the
/// training-checkpoint prefixes (`module.`, `_orig_mod.`) stripped.
pub fn load_folder<B: Backend>(
    dir: &Path,
    cfg: &LatentTransformerConfig,
    device: &B::Device,
) -> Result<(LatentTransformer<B>, LoadReport), FolderError> {
    let mut model = cfg.init::<B>(device);
    let mut loader = Loader::<B>::from_file(dir.join("model.safetensors"), device)?;
    loader.rename_keys(|k| Some(k.trim_start_matches("module.").trim_start_matches("_orig_mod.").to_string()))?;
    model.visit_params("", &mut loader);
    Ok((model, loader.finish(&[])?))
}

/// Writes `dir/config.json` and `dir/model.safetensors` (atomically).
pub fn save_folder<B: Backend>(model: &mut LatentTransformer<B>, cfg: &LatentTransformerConfig, dir: &Path) -> Result<(), FolderError> {
    std::fs::create_dir_all(dir).map_err(|source| FolderError::Write { path: dir.to_path_buf(), source })?;
    let mut ex = Exporter::new();
    model.visit_params("", &mut ex);
    ex.write(dir.join("model.safetensors"))?;
    let path = dir.join("config.json");
    write_atomic(&path, cfg.to_json().as_bytes()).map_err(|source| FolderError::Write { path, source })
}
