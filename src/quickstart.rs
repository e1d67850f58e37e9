//! The main job on an embedded default: train a tiny MAETok the paper's way (token masking
//! 40–60 %, the HOG auxiliary decoder predicting the masked patches' gradients, AdamW with the
//! reference schedule, EMA) on the built-in procedural shapes on the CPU, then write enlarged
//! reconstruction grids, PSNR/SSIM of the EMA model before and after training against the
//! mean-colour baseline, the loss curves of every term, and an exported Hugging Face folder that
//! `reconstruct`, `cache_latents` and the samplers load. LPIPS and the GAN are off (their
//! weights are downloads); `train_tokenizer` runs the full recipe.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use image::RgbImage;
use maetok_eval::{psnr, ssim, SsimOptions};
use maetok_targets::disc::GanWeights;
use maetok_tokenizer::{load_pretrained, ModelArgs, Tokenizer, VitSize};
use maetok_train::data::image::to_unit_hwc;
use maetok_train::data::{images_to_tensor, tensor_to_images, ProceduralShapes};
use maetok_train::tokenizer::{CosineWarmup, TokenizerTrainConfig, TokenizerTrainer};
use maetok_train::viz::{enlarge, grid};
use serde::Serialize;

use crate::train_tokenizer::{TrainData, TrainTokenizerArgs};

/// Settings of the quickstart run.
#[derive(Debug, Clone)]
pub struct QuickstartArgs {
    pub out: PathBuf,
    pub steps: usize,
    pub batch_size: usize,
    pub image_size: usize,
    pub seed: u64,
    /// Peak learning rate (AdamW, warm-up then cosine to a tenth).
    pub lr: f64,
    pub progress: bool,
}

impl Default for QuickstartArgs {
    fn default() -> Self {
        Self { out: PathBuf::from("out/quickstart"), steps: 800, batch_size: 16, image_size: 64, seed: 0, lr: 1e-2, progress: true }
    }
}

/// The tiny MAETok used by the quickstart: patch 8 (64 image tokens at 64×64), 16 latent tokens
/// of 8 channels, width 64, depth 2, 4 heads (encoder and decoder), mixed RoPE as the published
/// models; token masking 40–60 % and the HOG auxiliary decoder (width 64, depth 1).
pub fn tiny_model_args(image_size: usize) -> ModelArgs {
    ModelArgs {
        image_size,
        base_image_size: image_size,
        enc_patch_size: 8,
        dec_patch_size: 8,
        num_latent_tokens: 16,
        codebook_embed_dim: 8,
        enc_token_drop: 0.4,
        enc_token_drop_max: 0.6,
        aux_hog_dec: true,
        aux_dino_dec: false,
        aux_clip_dec: false,
        aux_loss_mask: true,
        ..ModelArgs::default()
    }
    .with_encoder_size(VitSize { width: 64, depth: 2, heads: 4 })
    .with_decoder_size(VitSize { width: 64, depth: 2, heads: 4 })
    .with_aux_decoder_size(VitSize { width: 64, depth: 1, heads: 4 })
}

/// The quickstart's training settings: the reference recipe scaled down (warm-up 5 % of the
/// steps, cosine over the run, no GAN, EMA decay 0.99 for a short run).
pub fn tiny_train_config(args: &QuickstartArgs) -> TokenizerTrainConfig {
    let steps = args.steps as u64;
    TokenizerTrainConfig {
        batch_size: args.batch_size,
        schedule: CosineWarmup {
            lr: args.lr,
            lr_min: 0.1 * args.lr,
            warmup_init: 1e-5,
            warmup_steps: (steps / 20).max(1),
            total_steps: steps.max(1),
        },
        ema_decay: 0.99,
        gan: GanWeights { disc_start: u64::MAX, ..GanWeights::default() },
        seed: args.seed,
        ..TokenizerTrainConfig::default()
    }
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
    /// Token masking range during training.
    pub mask_ratio: [f64; 2],
    pub eval_images: usize,
    /// The EMA model (PSNR/SSIM of reconstructions, unmasked) before and after training.
    pub at_init: Quality,
    pub after_training: Quality,
    /// Each image replaced by its own mean colour.
    pub mean_colour_baseline: Quality,
    /// Pixel loss (MSE in [-1, 1], masked encoder) of the first step and the mean of the last 10.
    pub first_loss: f64,
    pub final_loss: f64,
    /// HOG auxiliary loss of the first step and the mean of the last 10.
    pub first_hog_loss: f64,
    pub final_hog_loss: f64,
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

fn reconstruct_all<B: Backend>(model: &Tokenizer<B>, imgs: &[RgbImage], device: &B::Device) -> Result<Vec<RgbImage>> {
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

/// [`run`] on a given autodiff backend type. A previous run in `args.out` is replaced.
pub fn run_on<B: AutodiffBackend>(args: &QuickstartArgs, device: &B::Device, backend_name: &str) -> Result<QuickstartReport> {
    let _ = std::fs::remove_dir_all(args.out.join("checkpoints"));
    let _ = std::fs::remove_file(args.out.join("log.jsonl"));
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let margs = tiny_model_args(args.image_size);
    let train = tiny_train_config(args);
    let data = ProceduralShapes::new(args.image_size, args.seed);
    let (eval_imgs, _) = data.batch(0, 32);

    // The model at step 0 (the trainer's initialisation is fixed by the seed).
    let init = TokenizerTrainer::<B>::new(margs.clone(), "quickstart", train.clone(), None, device)?;
    let init_recons = reconstruct_all(&init.ema.ae, &eval_imgs, device)?;
    drop(init);
    let at_init = quality(&init_recons, &eval_imgs)?;
    let baseline: Vec<RgbImage> = eval_imgs.iter().map(mean_colour).collect();
    let mean_colour_baseline = quality(&baseline, &eval_imgs)?;
    tracing::info!("at init: PSNR {:.2} dB; mean-colour baseline {:.2} dB", at_init.psnr, mean_colour_baseline.psnr);

    let targs = TrainTokenizerArgs {
        out: args.out.clone(),
        model: margs.clone(),
        origin: "quickstart".into(),
        train,
        data: TrainData::Procedural { len: 100_000, seed: args.seed },
        steps: args.steps as u64,
        checkpoint_every: 0,
        keep_checkpoints: 1,
        preview_every: (args.steps as u64 / 4).max(1),
        lpips: None,
        dino_teacher: None,
        clip_teacher: None,
        disc_trunk: None,
        init_from: None,
        progress: args.progress,
        devices: vec![0],
        world: maetok_train::parallel::World::local(1),
    };
    let summary = crate::train_tokenizer::run_on::<B>(&targs, device)?;
    let log: Vec<maetok_train::tokenizer::StepLog> = std::fs::read_to_string(args.out.join("log.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("log.jsonl")?;
    let hog = |l: &[maetok_train::tokenizer::StepLog]| {
        l.iter().map(|l| l.aux.get("hog").copied().unwrap_or(f64::NAN)).sum::<f64>() / l.len().max(1) as f64
    };
    let n = log.len();

    let (trained, _) = load_pretrained::<B::InnerBackend>(&summary.model_dir, device)?;
    let final_recons = reconstruct_all(&trained, &eval_imgs, device)?;
    let after_training = quality(&final_recons, &eval_imgs)?;

    // Grid: for 8 images, a column each of [input, at init, trained], enlarged.
    let mut tiles = Vec::new();
    for row in [&eval_imgs, &init_recons, &final_recons] {
        tiles.extend(row[..8].iter().map(|i| enlarge(i, 128)));
    }
    let grid_path = args.out.join("reconstructions.png");
    maetok_train::viz::save_png(&grid(&tiles, 8), &grid_path).with_context(|| format!("cannot write {}", grid_path.display()))?;
    let samples = args.out.join("samples");
    std::fs::create_dir_all(&samples)?;
    for (i, img) in eval_imgs[..8].iter().enumerate() {
        maetok_train::viz::save_png(img, &samples.join(format!("shape_{i:02}.png")))?;
    }

    let report = QuickstartReport {
        backend: backend_name.to_string(),
        steps: args.steps,
        batch_size: args.batch_size,
        image_size: args.image_size,
        mask_ratio: [margs.enc_token_drop, margs.enc_token_drop_max],
        eval_images: eval_imgs.len(),
        at_init,
        after_training,
        mean_colour_baseline,
        first_loss: summary.first_rec,
        final_loss: summary.last_rec_mean_of_10,
        first_hog_loss: hog(&log[..n.min(1)]),
        final_hog_loss: hog(&log[n.saturating_sub(10)..]),
        train_seconds: summary.seconds,
        model_dir: summary.model_dir,
    };
    maetok_nn::io::write_atomic(&args.out.join("metrics.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}
