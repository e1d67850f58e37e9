//! Hugging Face model folders: `config.json` + `model.safetensors` (PyTorch names and layouts),
//! loaded with strict key coverage and saved back in the same layout.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use maetok_nn::io::{write_atomic, CheckpointError, Exporter, LoadReport, Loader, VisitParams};
use rand::SeedableRng;

use crate::config::{ConfigError, ModelArgs};
use crate::mask_ae::MaskAe;
use crate::model::Tokenizer;

/// Keys that reference checkpoints may carry but that inference never uses: the REPA teacher and
/// projection, SoftVQ's codebook-usage statistics, and the MaskAE training extras (auxiliary
/// decoders and heads, frozen teachers, HOG filters). They are accepted, listed in
/// [`LoadReport::ignored`], and not loaded.
pub const IGNORABLE_PREFIXES: &[&str] = &[
    "repa_model.",
    "projection.",
    "quantize.codebook_used",
    "clip_model.",
    "decoder_hog.",
    "decoder_dino.",
    "decoder_clip.",
    "post_quant_conv_hog.",
    "post_quant_conv_dino.",
    "post_quant_conv_clip.",
    "to_pixel_hog.",
    "to_pixel_dino.",
    "to_pixel_clip.",
    "hog_generator.",
];

/// Keys of a reference `MaskAEModel` checkpoint that are not part of the model being trained:
/// the frozen teachers (loaded separately as targets), the dead REPA projection and the HOG
/// filters (constants).
pub const TEACHER_PREFIXES: &[&str] = &["repa_model.", "projection.", "clip_model.", "hog_generator."];

/// Errors loading or saving a model folder.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
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

/// The key whose presence makes a checkpoint a SoftVQ-VAE (see [`ModelArgs::quantizer`]).
pub const SOFTVQ_KEY: &str = "quantize.embedding";

/// Loads a model folder (`config.json` + `model.safetensors`): a MAETok `AEModel` (or a
/// `MaskAEModel` checkpoint, whose training extras are listed as ignored) or a SoftVQ-VAE. `dir`
/// may also be a Hugging Face id (`MAETok/maetok-b-128`), fetched into and read from the
/// standard Hugging Face cache ([`maetok_nn::hub`]).
pub fn load_pretrained<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<(Tokenizer<B>, LoadReport), PretrainedError> {
    let dir = dir.as_ref();
    if !dir.exists() && maetok_nn::hub::is_model_id(&dir.to_string_lossy()) {
        return load_pretrained(maetok_nn::hub::resolve_model_dir(dir)?, device);
    }
    if !dir.is_dir() {
        return Err(PretrainedError::NotAFolder(dir.to_path_buf()));
    }
    let args = ModelArgs::from_file(dir.join("config.json"))?;
    load_with_args(&args, &dir.join("config.json").display().to_string(), dir.join("model.safetensors"), device)
}

/// Loads `weights` (a PyTorch-layout safetensors state dict) into the architecture `args`
/// describes; `origin` names the config in messages. Without an explicit `quantizer` in `args`,
/// a checkpoint with `quantize.embedding` is a SoftVQ-VAE.
pub fn load_with_args<B: Backend>(
    args: &ModelArgs,
    origin: &str,
    weights: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Tokenizer<B>, LoadReport), PretrainedError> {
    let mut loader = Loader::<B>::from_file(weights, device)?;
    let config = if args.quantizer.is_none() && loader.contains(SOFTVQ_KEY) {
        ModelArgs { quantizer: Some("softvq".into()), ..args.clone() }.resolve(origin)?
    } else {
        args.resolve(origin)?
    };
    // Random initial values are never materialised: every parameter is lazily initialised and
    // replaced by the stored tensor. The RoPE init RNG is only used for that lazy init.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut model = Tokenizer::new(&config, &mut rng, device);
    model.visit_params("", &mut loader);
    let report = loader.finish(IGNORABLE_PREFIXES)?;
    Ok((model, report))
}

/// Loads a MaskAE training state dict (the reference's `checkpoint["model"]` / `["ema"]` as
/// safetensors): the autoencoder and the auxiliary decoders `args` switches on, strictly (a
/// switched-on decoder without its keys, or aux keys for a switched-off one, is an error naming
/// them). The teachers' keys are accepted and left to the target extractors.
pub fn load_mask_ae<B: Backend>(
    args: &ModelArgs,
    origin: &str,
    weights: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(MaskAe<B>, LoadReport), PretrainedError> {
    let config = args.resolve(origin)?;
    let aux = args.resolve_aux(origin)?;
    let mut loader = Loader::<B>::from_file(weights, device)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut model = MaskAe::new(&config, &aux, &mut rng, device);
    model.visit_params("", &mut loader);
    let report = loader.finish(TEACHER_PREFIXES)?;
    Ok((model, report))
}

/// Writes `model.safetensors` (PyTorch names and layouts, f32) and `config.json` into `dir`
/// (created if needed), each atomically.
pub fn save_pretrained<B: Backend>(model: &mut Tokenizer<B>, args: &ModelArgs, dir: impl AsRef<Path>) -> Result<(), PretrainedError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| PretrainedError::Write { path: dir.to_path_buf(), source })?;
    let mut exporter = Exporter::new();
    model.visit_params("", &mut exporter);
    exporter.write(dir.join("model.safetensors"))?;
    let cfg = dir.join("config.json");
    write_atomic(&cfg, args.to_json().as_bytes()).map_err(|source| PretrainedError::Write { path: cfg, source })?;
    Ok(())
}
