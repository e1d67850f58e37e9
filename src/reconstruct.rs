//! Reconstruct images with a tokenizer checkpoint (MAETok or SoftVQ-VAE): PNGs, a side-by-side
//! grid, PSNR/SSIM JSON and, optionally, the latents and (SoftVQ) the code indices as
//! safetensors. The `reconstruct` example is a CLI over [`run`]. With several devices
//! (`--devices`) each holds a copy of the model and takes whole batches; the outputs are merged
//! in input order, so they are the files one device writes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use maetok_eval::{psnr, ssim, SsimOptions};
use maetok_nn::io::Exporter;
use maetok_tokenizer::load_pretrained;
use maetok_train::data::image::to_unit_hwc;
use maetok_train::data::{collect_inputs, images_to_tensor, load_rgb, preprocess_center_crop, tensor_to_images};
use maetok_train::viz::grid;
use serde::Serialize;

/// What to reconstruct and where to write it.
#[derive(Debug, Clone)]
pub struct ReconstructArgs {
    /// Hugging Face model folder (`config.json` + `model.safetensors`).
    pub model: PathBuf,
    pub out: PathBuf,
    pub latents_out: Option<PathBuf>,
    /// SoftVQ-VAE only: write each token's most likely code, tensor `indices` `[N, nc, L/nc]`
    /// (f32 holding exact integers; `indices[i, n, j]` is the code of image i's token `n·L/nc + j`
    /// in codebook n).
    pub indices_out: Option<PathBuf>,
    pub batch_size: usize,
    /// Image files or folders (searched recursively for PNG/JPEG).
    pub inputs: Vec<PathBuf>,
    pub progress: bool,
    /// Device indices of the backend, one model copy each (empty: the default device).
    pub devices: Vec<u16>,
}

/// Per-image metrics (reconstruction quantised to 8 bits as the reference does).
#[derive(Debug, Clone, Serialize)]
pub struct ImageMetrics {
    pub input: String,
    pub output: String,
    /// PSNR in dB, data range 1.
    pub psnr: f64,
    /// SSIM with the standard data range 1.
    pub ssim: f64,
    /// SSIM as `reconstruct_vq.py` computes it (data_range = 2, inflated; for comparison with the paper's code).
    pub ssim_reference: f64,
}

/// Results of a run, also written as `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructSummary {
    pub backend: String,
    pub model: String,
    pub image_size: usize,
    pub images: Vec<ImageMetrics>,
    pub mean_psnr: f64,
    pub mean_ssim: f64,
    pub mean_ssim_reference: f64,
    pub seconds: f64,
}

struct ReconstructTask(ReconstructArgs);

impl crate::backend::Task for ReconstructTask {
    type Output = ReconstructSummary;
    fn run<B: Backend>(self, device: B::Device, backend_name: &str) -> Result<ReconstructSummary> {
        let devices = match self.0.devices.is_empty() {
            true => vec![device],
            false => crate::parallel_cli::devices::<B>(backend_name, &self.0.devices)?,
        };
        run_on_devices::<B>(&self.0, &devices, backend_name)
    }
}

/// Runs a reconstruction on the backend called `backend`.
pub fn run(args: ReconstructArgs, backend: &str) -> Result<ReconstructSummary> {
    crate::backend::run(backend, ReconstructTask(args))
}

fn unique_names(paths: &[PathBuf]) -> Vec<String> {
    let mut seen = HashSet::new();
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| format!("image{i}"));
            let mut name = format!("{stem}.png");
            if !seen.insert(name.clone()) {
                name = format!("{stem}_{i}.png");
                seen.insert(name.clone());
            }
            name
        })
        .collect()
}

/// [`run`] on a given backend type, on one device.
pub fn run_on<B: Backend>(args: &ReconstructArgs, device: &B::Device, backend_name: &str) -> Result<ReconstructSummary> {
    run_on_devices::<B>(args, std::slice::from_ref(device), backend_name)
}

/// What one batch gives: latents, code indices (SoftVQ, when asked for) and reconstructions.
struct BatchOut {
    latents: Vec<f32>,
    indices: Option<(Vec<f32>, [usize; 2])>,
    recon: Vec<image::RgbImage>,
}

/// [`run`] on a given backend type, batches spread over `devices` ([`crate::sharded`]).
pub fn run_on_devices<B: Backend>(args: &ReconstructArgs, devices: &[B::Device], backend_name: &str) -> Result<ReconstructSummary> {
    let start = std::time::Instant::now();
    let files = collect_inputs(&args.inputs)?;
    let device = devices.first().ok_or_else(|| anyhow::anyhow!("no device to run on"))?;
    let (model, report) = load_pretrained::<B>(&args.model, device)?;
    if !report.ignored.is_empty() {
        tracing::info!("ignored {} checkpoint keys the reference never uses (e.g. {})", report.ignored.len(), report.ignored[0]);
    }
    let size = model.config.image_size;
    if args.indices_out.is_some() && model.quantizer.is_none() {
        anyhow::bail!(
            "--indices-out: {} is a MAETok model (no quantizer), it has no code indices; only SoftVQ-VAE models have them",
            args.model.display()
        );
    }
    // Decode everything first so that a bad file fails the run before any compute.
    let mut inputs = Vec::with_capacity(files.len());
    for f in &files {
        inputs.push(preprocess_center_crop(&load_rgb(f)?, size));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let names = unique_names(&files);
    let bar = if args.progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} images {per_sec} eta {eta}").unwrap());
    bar.set_message("reconstructing");
    let (t, c) = (model.config.latent_tokens, model.config.latent_dim);
    let mut latents: Vec<f32> = Vec::new();
    let (mut indices, mut index_shape): (Vec<f32>, [usize; 2]) = (Vec::new(), [0, 0]);
    let mut metrics = Vec::new();
    let mut pairs = Vec::new();
    let bs = args.batch_size.max(1);
    let chunks: Vec<&[image::RgbImage]> = inputs.chunks(bs).collect();
    // One model copy per further device.
    let mut states = vec![(model, device.clone())];
    for d in &devices[1..] {
        states.push((load_pretrained::<B>(&args.model, d)?.0, d.clone()));
    }
    let (want_latents, want_indices) = (args.latents_out.is_some(), args.indices_out.is_some());
    let values = |t: Tensor<B, 3>| t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"));
    let work = |(model, device): &mut (maetok_tokenizer::Tokenizer<B>, B::Device), b: usize| -> Result<BatchOut> {
        let x = images_to_tensor::<B>(chunks[b], device);
        let (z, codes) = model.encode_with_codes(x)?;
        let indices = match (codes, want_indices) {
            (Some(codes), true) => {
                let [_, nc, s] = codes.indices.dims();
                Some((values(codes.indices.float())?, [nc, s]))
            }
            _ => None,
        };
        let latents = if want_latents { values(z.clone())? } else { Vec::new() };
        Ok(BatchOut { latents, indices, recon: tensor_to_images(model.decode(z)?) })
    };
    crate::sharded::run_in_order(states, chunks.len(), work, |chunk_idx, out: BatchOut| {
        let chunk = chunks[chunk_idx];
        if let Some((v, shape)) = out.indices {
            index_shape = shape;
            indices.extend(v);
        }
        latents.extend(out.latents);
        for (j, (inp, rec)) in chunk.iter().zip(out.recon).enumerate() {
            let i = chunk_idx * bs + j;
            let out_path = args.out.join(&names[i]);
            maetok_train::viz::save_png(&rec, &out_path).with_context(|| format!("cannot write {}", out_path.display()))?;
            let (a, b) = (to_unit_hwc(&rec), to_unit_hwc(inp));
            metrics.push(ImageMetrics {
                input: files[i].display().to_string(),
                output: out_path.display().to_string(),
                psnr: psnr(&a, &b, 1.0)?,
                ssim: ssim(&a, &b, size, size, 3, SsimOptions::standard())?,
                ssim_reference: ssim(&a, &b, size, size, 3, SsimOptions::reference())?,
            });
            pairs.push(inp.clone());
            pairs.push(rec);
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let grid_path = args.out.join("grid.png");
    maetok_train::viz::save_png(&grid(&pairs, 8), &grid_path).with_context(|| format!("cannot write {}", grid_path.display()))?;
    if let Some(path) = &args.latents_out {
        let mut ex = Exporter::new();
        ex.insert("latents", vec![files.len(), t, c], latents);
        ex.write(path)?;
    }
    if let Some(path) = &args.indices_out {
        let mut ex = Exporter::new();
        ex.insert("indices", vec![files.len(), index_shape[0], index_shape[1]], indices);
        ex.write(path)?;
    }
    let n = metrics.len() as f64;
    let mean = |f: fn(&ImageMetrics) -> f64| metrics.iter().map(f).sum::<f64>() / n;
    let summary = ReconstructSummary {
        backend: backend_name.to_string(),
        model: args.model.display().to_string(),
        image_size: size,
        mean_psnr: mean(|m| m.psnr),
        mean_ssim: mean(|m| m.ssim),
        mean_ssim_reference: mean(|m| m.ssim_reference),
        images: metrics,
        seconds: start.elapsed().as_secs_f64(),
    };
    let json_path = args.out.join("metrics.json");
    maetok_nn::io::write_atomic(&json_path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(summary)
}

/// Short, human-readable report of a summary.
pub fn describe(s: &ReconstructSummary, out: &Path) -> String {
    let mut text = String::new();
    for m in &s.images {
        text.push_str(&format!("{}: PSNR {:.2} dB, SSIM {:.4} (reference SSIM {:.4})\n", m.input, m.psnr, m.ssim, m.ssim_reference));
    }
    text.push_str(&format!(
        "{} images on {} in {:.1} s: mean PSNR {:.2} dB, SSIM {:.4}; wrote {}",
        s.images.len(),
        s.backend,
        s.seconds,
        s.mean_psnr,
        s.mean_ssim,
        out.display()
    ));
    text
}
