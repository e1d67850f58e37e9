//! The main job on an embedded default: fit a tiny MAETok autoencoder to the built-in procedural
//! dataset on the CPU, then write a reconstruction grid, PSNR/SSIM before and after training
//! against the mean-colour baseline, a loss curve, and an exported checkpoint that the
//! `reconstruct` example loads.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use maetok_eval::{psnr, ssim, SsimOptions};
use maetok_tokenizer::{save_pretrained, MaeTok, ModelArgs, VitSize};
use maetok_train::data::image::to_unit_hwc;
use maetok_train::data::{images_to_tensor, tensor_to_images, ProceduralShapes};
use maetok_train::viz::{grid, line_plot_svg};
use maetok_train::{train_autoencoder, AeTrainConfig};
use rand::SeedableRng;
use serde::Serialize;

/// Settings of the quickstart run.
#[derive(Debug, Clone)]
pub struct QuickstartArgs {
    pub out: PathBuf,
    pub steps: usize,
    pub batch_size: usize,
    pub image_size: usize,
    pub seed: u64,
    /// Peak learning rate.
    pub lr: f64,
    pub progress: bool,
}

impl Default for QuickstartArgs {
    fn default() -> Self {
        Self { out: PathBuf::from("out/quickstart"), steps: 600, batch_size: 16, image_size: 32, seed: 0, lr: 1e-2, progress: true }
    }
}

/// The tiny MAETok used by the quickstart: patch 4, 64 image tokens, 16 latent tokens of 8
/// channels, width 64, depth 2, 4 heads (encoder and decoder), mixed RoPE as the published models.
pub fn tiny_model_args(image_size: usize) -> ModelArgs {
    ModelArgs {
        image_size,
        base_image_size: image_size,
        enc_patch_size: 4,
        dec_patch_size: 4,
        num_latent_tokens: 16,
        codebook_embed_dim: 8,
        ..ModelArgs::default()
    }
    .with_encoder_size(VitSize { width: 64, depth: 2, heads: 4 })
    .with_decoder_size(VitSize { width: 64, depth: 2, heads: 4 })
}

/// Mean PSNR/SSIM of a set of reconstructions.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub psnr: f64,
    pub ssim: f64,
}

/// Everything the quickstart measured (written as `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct QuickstartReport {
    pub backend: String,
    pub steps: usize,
    pub batch_size: usize,
    pub image_size: usize,
    pub eval_images: usize,
    pub at_init: Quality,
    pub after_training: Quality,
    /// Each image replaced by its own mean colour.
    pub mean_colour_baseline: Quality,
    pub first_loss: f32,
    pub final_loss: f32,
    pub train_seconds: f64,
    pub model_dir: String,
}

fn quality(recons: &[RgbImage], refs: &[RgbImage]) -> Result<Quality> {
    let (mut p, mut s) = (0.0, 0.0);
    for (r, g) in recons.iter().zip(refs) {
        let (a, b) = (to_unit_hwc(r), to_unit_hwc(g));
        p += psnr(&a, &b, 1.0)?;
        s += ssim(&a, &b, g.width() as usize, g.height() as usize, 3, SsimOptions::standard())?;
    }
    let n = refs.len() as f64;
    Ok(Quality { psnr: p / n, ssim: s / n })
}

fn mean_colour(img: &RgbImage) -> RgbImage {
    let n = (img.width() * img.height()) as f64;
    let mut acc = [0f64; 3];
    for p in img.pixels() {
        for c in 0..3 {
            acc[c] += p[c] as f64;
        }
    }
    RgbImage::from_pixel(img.width(), img.height(), image::Rgb(acc.map(|v| (v / n).round() as u8)))
}

fn reconstruct_all<B: Backend>(model: &MaeTok<B>, imgs: &[RgbImage], device: &B::Device) -> Result<Vec<RgbImage>> {
    let mut out = Vec::new();
    for chunk in imgs.chunks(16) {
        out.extend(tensor_to_images(model.reconstruct(images_to_tensor::<B>(chunk, device))?));
    }
    Ok(out)
}

struct QuickstartTask(QuickstartArgs);

impl crate::backend::TrainTask for QuickstartTask {
    type Output = QuickstartReport;
    fn run<B: AutodiffBackend>(self, device: B::Device, name: &str) -> Result<QuickstartReport> {
        run_on::<B>(&self.0, &device, name)
    }
}

/// Runs the quickstart on the backend called `backend` (with autodiff).
pub fn run(args: QuickstartArgs, backend: &str) -> Result<QuickstartReport> {
    crate::backend::run_train(backend, QuickstartTask(args))
}

/// [`run`] on a given autodiff backend type.
pub fn run_on<B: AutodiffBackend>(args: &QuickstartArgs, device: &B::Device, backend_name: &str) -> Result<QuickstartReport> {
    B::seed(device, args.seed);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let margs = tiny_model_args(args.image_size);
    let cfg = margs.resolve("quickstart")?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let model = MaeTok::<B>::new(&cfg, &mut rng, device);
    let data = ProceduralShapes::new(args.image_size, args.seed);
    let (eval_imgs, _) = data.batch(0, 32);

    let init_recons = reconstruct_all(&model.valid(), &eval_imgs, device)?;
    let at_init = quality(&init_recons, &eval_imgs)?;
    let baseline: Vec<RgbImage> = eval_imgs.iter().map(mean_colour).collect();
    let mean_colour_baseline = quality(&baseline, &eval_imgs)?;
    tracing::info!("at init: PSNR {:.2} dB; mean-colour baseline {:.2} dB", at_init.psnr, mean_colour_baseline.psnr);

    let tc = AeTrainConfig { steps: args.steps, batch_size: args.batch_size, lr: args.lr, ..AeTrainConfig::default() };
    let bar = if args.progress { ProgressBar::new(args.steps as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("training [{bar:40}] {pos}/{len} steps {msg} eta {eta}").unwrap());
    let start = std::time::Instant::now();
    let res = train_autoencoder(model, &data, &tc, device, |step, loss| {
        bar.inc(1);
        bar.set_message(format!("loss {loss:.4}"));
        if step % 50 == 0 {
            tracing::debug!(step, loss, "train");
        }
    });
    bar.finish_and_clear();
    let train_seconds = start.elapsed().as_secs_f64();
    let trained = res.model.valid();
    let final_recons = reconstruct_all(&trained, &eval_imgs, device)?;
    let after_training = quality(&final_recons, &eval_imgs)?;

    // Grid: for 8 images, a column each of [input, at init, trained].
    let mut tiles = Vec::new();
    for row in [&eval_imgs, &init_recons, &final_recons] {
        tiles.extend(row[..8].iter().cloned());
    }
    let grid_path = args.out.join("reconstructions.png");
    grid(&tiles, 8).save(&grid_path).with_context(|| format!("cannot write {}", grid_path.display()))?;
    let samples = args.out.join("samples");
    std::fs::create_dir_all(&samples)?;
    for (i, img) in eval_imgs[..8].iter().enumerate() {
        img.save(samples.join(format!("shape_{i:02}.png")))?;
    }

    let losses: Vec<(f64, f64)> = res.losses.iter().enumerate().map(|(i, l)| (i as f64, *l as f64)).collect();
    line_plot_svg(&args.out.join("loss_curve.svg"), "quickstart pixel loss (MSE)", "step", "loss", &[("train", losses)])
        .map_err(|e| anyhow::anyhow!("cannot draw the loss curve: {e}"))?;
    maetok_nn::io::write_atomic(&args.out.join("losses.json"), serde_json::to_string(&res.losses)?.as_bytes())?;

    let model_dir = args.out.join("model");
    let mut to_save = trained;
    save_pretrained(&mut to_save, &margs, &model_dir)?;

    let report = QuickstartReport {
        backend: backend_name.to_string(),
        steps: args.steps,
        batch_size: args.batch_size,
        image_size: args.image_size,
        eval_images: eval_imgs.len(),
        at_init,
        after_training,
        mean_colour_baseline,
        first_loss: res.losses[0],
        final_loss: *res.losses.last().unwrap_or(&f32::NAN),
        train_seconds,
        model_dir: model_dir.display().to_string(),
    };
    maetok_nn::io::write_atomic(&args.out.join("metrics.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}
