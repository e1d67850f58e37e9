//! SiT Hugging Face folders: `config.json` + `model.safetensors` (PyTorch names), strict.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use maetok_nn::io::{write_atomic, CheckpointError, Exporter, LoadReport, Loader, VisitParams};

use crate::config::{SitConfig, SitConfigError};
use crate::model::Sit;

/// Errors loading or saving a SiT folder.
#[derive(Debug, thiserror::Error)]
pub enum SitLoadError {
    #[error("model folder {0} does not exist or is not a folder")]
    NotAFolder(PathBuf),
    #[error(transparent)]
    Config(#[from] SitConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Checks that `dir` is a folder and returns its `config.json` path.
pub fn folder_config(dir: &Path) -> Result<PathBuf, SitLoadError> {
    if !dir.is_dir() {
        return Err(SitLoadError::NotAFolder(dir.to_path_buf()));
    }
    Ok(dir.join("config.json"))
}

/// Loads `dir/model.safetensors` into `model` strictly; training-checkpoint prefixes
/// (`module.`, `_orig_mod.`) are stripped. Shared by the SiT and DiT folders.
pub fn load_folder_weights<B: Backend, M: VisitParams<B>>(model: &mut M, dir: &Path, device: &B::Device) -> Result<LoadReport, SitLoadError> {
    let mut loader = Loader::<B>::from_file(dir.join("model.safetensors"), device)?;
    loader.rename_keys(|k| Some(k.trim_start_matches("module.").trim_start_matches("_orig_mod.").to_string()))?;
    model.visit_params("", &mut loader);
    Ok(loader.finish(&[])?)
}

/// Writes `config_json` and `model`'s weights to `dir/config.json` and `dir/model.safetensors`
/// (atomically).
pub fn save_folder<B: Backend, M: VisitParams<B>>(model: &mut M, config_json: &str, dir: &Path) -> Result<(), SitLoadError> {
    std::fs::create_dir_all(dir).map_err(|source| SitLoadError::Write { path: dir.to_path_buf(), source })?;
    let mut ex = Exporter::new();
    model.visit_params("", &mut ex);
    ex.write(dir.join("model.safetensors"))?;
    let path = dir.join("config.json");
    write_atomic(&path, config_json.as_bytes()).map_err(|source| SitLoadError::Write { path, source })
}

/// Loads a SiT model folder.
pub fn load_sit<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<(Sit<B>, SitConfig, LoadReport), SitLoadError> {
    let dir = dir.as_ref();
    let cfg = SitConfig::from_file(folder_config(dir)?)?;
    let mut model = Sit::new(&cfg, device);
    let report = load_folder_weights(&mut model, dir, device)?;
    Ok((model, cfg, report))
}

/// Writes `config.json` and `model.safetensors` (atomically) to `dir`.
pub fn save_sit<B: Backend>(model: &mut Sit<B>, cfg: &SitConfig, dir: impl AsRef<Path>) -> Result<(), SitLoadError> {
    save_folder(model, &cfg.to_json(), dir.as_ref())
}
