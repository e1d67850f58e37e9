//! The MAETok teachers' target features for a set of images: load a timm / OpenCLIP checkpoint
//! (DINOv2, SigLIP, resampled to the model's patch and grid as timm does), compute the features
//! MAETok's auxiliary decoders learn to predict (`[N, tokens, dim]`, ImageNet-normalised input,
//! prefix tokens dropped), and write them with a PCA picture of the patch features. Optionally
//! export the resampled state dict (patch-16 weights) as safetensors. The `teacher_features`
//! example is a CLI over [`run`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use maetok_eval::pca::Pca;
use maetok_nn::io::{Exporter, VisitParams};
use maetok_targets::timm::load_vit;
use maetok_targets::{TargetFeatures, VitConfig};
use maetok_train::data::{collect_inputs, images_to_tensor, load_rgb, preprocess_center_crop};
use maetok_train::viz::grid;
use serde::Serialize;

/// What to compute and where to write it.
#[derive(Debug, Clone)]
pub struct TeacherFeaturesArgs {
    /// timm `model.safetensors` or OpenCLIP `open_clip_pytorch_model.bin` (or any state dict in
    /// their layout).
    pub checkpoint: PathBuf,
    /// The model to build (e.g. [`VitConfig::dinov2_large`]); the checkpoint is resampled to it.
    pub config: VitConfig,
    /// Image files or folders (searched recursively for PNG/JPEG).
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub batch_size: usize,
    /// Also write the resampled state dict here (safetensors, PyTorch layout).
    pub export_weights: Option<PathBuf>,
    pub progress: bool,
}

/// Results of a run, also written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TeacherFeaturesSummary {
    pub backend: String,
    pub checkpoint: String,
    pub config: VitConfig,
    pub images: Vec<String>,
    /// `[N, tokens, dim]` of `features.safetensors`.
    pub shape: [usize; 3],
    /// Checkpoint keys accepted but not used (e.g. SigLIP's MAP head).
    pub ignored_keys: Vec<String>,
    /// Share of the patch-feature variance in the three components shown in `pca.png`.
    pub pca_explained: f64,
    pub seconds: f64,
}

struct FeaturesTask(TeacherFeaturesArgs);

impl crate::backend::Task for FeaturesTask {
    type Output = TeacherFeaturesSummary;
    fn run<B: Backend>(self, device: B::Device, backend_name: &str) -> Result<TeacherFeaturesSummary> {
        run_on::<B>(&self.0, &device, backend_name)
    }
}

/// Runs on the backend called `backend`.
pub fn run(args: TeacherFeaturesArgs, backend: &str) -> Result<TeacherFeaturesSummary> {
    crate::backend::run(backend, FeaturesTask(args))
}

/// The first three principal components of every patch feature, each scaled to 0..255 over the
/// whole set, as one RGB image per input (nearest upsampling to `size`).
fn pca_pictures(features: &[f32], n: usize, tokens: usize, dim: usize, size: usize) -> (Vec<RgbImage>, f64) {
    let pca = Pca::fit(features, n * tokens, dim, 3, 0);
    let proj = pca.transform(features);
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for row in proj.chunks_exact(3) {
        for c in 0..3 {
            lo[c] = lo[c].min(row[c]);
            hi[c] = hi[c].max(row[c]);
        }
    }
    let g = (tokens as f64).sqrt().round() as usize;
    let pictures = (0..n)
        .map(|i| {
            RgbImage::from_fn(size as u32, size as u32, |x, y| {
                let t = (y as usize * g / size) * g + x as usize * g / size;
                let row = &proj[(i * tokens + t) * 3..(i * tokens + t) * 3 + 3];
                image::Rgb([0, 1, 2].map(|c| ((row[c] - lo[c]) / (hi[c] - lo[c]).max(1e-12) * 255.0).round() as u8))
            })
        })
        .collect();
    (pictures, pca.explained_ratio())
}

/// [`run`] on a given backend type.
pub fn run_on<B: Backend>(args: &TeacherFeaturesArgs, device: &B::Device, backend_name: &str) -> Result<TeacherFeaturesSummary> {
    let start = std::time::Instant::now();
    let files = collect_inputs(&args.inputs)?;
    let (mut model, report) = load_vit::<B>(&args.checkpoint, &args.config, device)?;
    if !report.ignored.is_empty() {
        tracing::info!("ignored {} checkpoint keys the feature model never uses ({})", report.ignored.len(), report.ignored.join(", "));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    if let Some(path) = &args.export_weights {
        let mut ex = Exporter::new();
        model.visit_params("", &mut ex);
        ex.write(path)?;
        tracing::info!("wrote the resampled state dict to {}", path.display());
    }
    let size = args.config.img_size;
    let mut inputs = Vec::with_capacity(files.len());
    for f in &files {
        inputs.push(preprocess_center_crop(&load_rgb(f)?, size));
    }
    let bar = if args.progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} images {per_sec} eta {eta}").unwrap());
    bar.set_message("teacher features");
    let mut features = Vec::new();
    let (mut tokens, mut dim) = (0, 0);
    for chunk in inputs.chunks(args.batch_size.max(1)) {
        let f = model.target_features(images_to_tensor::<B>(chunk, device))?;
        [_, tokens, dim] = f.dims();
        features.extend(f.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let n = files.len();
    let mut ex = Exporter::new();
    ex.insert("features", vec![n, tokens, dim], features.clone());
    ex.write(args.out.join("features.safetensors"))?;
    let (pictures, explained) = pca_pictures(&features, n, tokens, dim, size);
    let pairs: Vec<RgbImage> = inputs.into_iter().zip(pictures).flat_map(|(a, b)| [a, b]).collect();
    let grid_path = args.out.join("pca.png");
    maetok_train::viz::save_png(&grid(&pairs, 8), &grid_path).with_context(|| format!("cannot write {}", grid_path.display()))?;
    let summary = TeacherFeaturesSummary {
        backend: backend_name.to_string(),
        checkpoint: args.checkpoint.display().to_string(),
        config: args.config.clone(),
        images: files.iter().map(|f| f.display().to_string()).collect(),
        shape: [n, tokens, dim],
        ignored_keys: report.ignored,
        pca_explained: explained,
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = args.out.join("summary.json");
    maetok_nn::io::write_atomic(&json, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", json.display()))?;
    Ok(summary)
}
