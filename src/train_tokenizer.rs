//! Train a MAETok tokenizer the paper's way (masking, auxiliary HOG / DINOv2 / SigLIP decoders,
//! pixel + LPIPS + GAN losses, EMA) or fine-tune its decoder; the `train_tokenizer` example is a
//! CLI over [`train_tokenizer`], and the quickstart runs [`run_on`] on the procedural shapes.
//!
//! Training batches are decoded ahead on a background thread while the model trains. On
//! several devices (`--devices`, several machines: [`maetok_train::parallel`]) the trainer is
//! built once and forked per device; each peer decodes and trains on its rows of every global
//! batch, and peer 0 writes the log, previews and checkpoints.
//! Re-running the same command resumes from `out/checkpoints/latest` and continues exactly. The
//! run writes `log.jsonl` (one JSON object per step, every loss term), `previews/step-N.png`
//! (input row over EMA-reconstruction row, enlarged), `loss.svg` (the curves of every term),
//! checkpoints, `model/` (the final EMA autoencoder, a Hugging Face folder for `reconstruct`,
//! `cache_latents` and the samplers) and `summary.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use image::RgbImage;
use maetok_targets::{load_dino_disc, load_lpips, load_vit, DiscConfig, HogGenerator, VitConfig};
use maetok_tokenizer::{load_with_args, ModelArgs};
use maetok_train::dashboard::{self, Dashboard, DashboardConfig, DashboardMode};
use maetok_train::data::{images_to_tensor, tensor_to_images, ImageFolder, ImageSource, Layout, Prefetcher, ProceduralShapes, TrainImages};
use maetok_train::parallel::{self, run_peers, World};
use maetok_train::tokenizer::{AuxTeachers, LossNets, Stage, StepLog, TokenizerTrainConfig, TokenizerTrainer};
use maetok_train::viz::{enlarge, grid, line_plot_svg};
use rand::SeedableRng;
use serde::Serialize;

/// Where the training images come from.
#[derive(Debug, Clone)]
pub enum TrainData {
    /// The built-in procedural shapes (`len` images; dataset indices below 1,000,000 are left
    /// for evaluation).
    Procedural { len: usize, seed: u64 },
    /// An image folder (`<class>/<image>`, ImageNet's `train/<wnid>/`, tiny-imagenet's
    /// `train/<wnid>/images/`).
    Folder { path: PathBuf, layout: Layout },
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct TrainTokenizerArgs {
    pub out: PathBuf,
    /// The model config of a new run (a resumed run must have the same).
    pub model: ModelArgs,
    /// Names the model config in messages (its file).
    pub origin: String,
    pub train: TokenizerTrainConfig,
    pub data: TrainData,
    /// Total optimiser steps (a resumed run continues up to this count).
    pub steps: u64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    /// Reconstruction previews every this many steps (0: only at the end).
    pub preview_every: u64,
    /// LPIPS weights: torchvision's VGG16 and LPIPS's `vgg.pth` (`None`: no perceptual term).
    pub lpips: Option<(PathBuf, PathBuf)>,
    /// DINOv2 ViT-L/14 (timm) for the `aux_dino_dec` decoder.
    pub dino_teacher: Option<PathBuf>,
    /// SigLIP so400m/14 (timm or OpenCLIP) for the `aux_clip_dec` decoder.
    pub clip_teacher: Option<PathBuf>,
    /// DINO ViT-S/16 (`dino_deitsmall16_pretrain.pth`) for the discriminator (`None`: no GAN).
    pub disc_trunk: Option<PathBuf>,
    /// Initial autoencoder weights (`model.safetensors` or a model folder), e.g. stage 1's EMA
    /// for the decoder fine-tuning stage.
    pub init_from: Option<PathBuf>,
    pub progress: bool,
    /// Device indices of this machine (one peer each) on the chosen backend.
    pub devices: Vec<u16>,
    /// The run's peers (one device, one process: `World::local(1)`).
    pub world: World,
}

/// What a run did (`summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainTokenizerSummary {
    pub resumed_from_step: u64,
    pub steps: u64,
    /// Mean pixel loss (MSE in [-1, 1]) of the first and of the last 10 steps of this process.
    pub first_rec: f64,
    pub last_rec_mean_of_10: f64,
    pub checkpoint: String,
    /// The exported EMA autoencoder.
    pub model_dir: String,
    /// Training images skipped as unreadable.
    pub skipped_images: Vec<String>,
    pub seconds: f64,
    pub steps_per_second: f64,
}

struct Task(TrainTokenizerArgs);

impl crate::backend::TrainTask for Task {
    type Output = TrainTokenizerSummary;
    fn run<B: AutodiffBackend>(self, _device: B::Device, name: &str) -> Result<TrainTokenizerSummary> {
        let devices = crate::parallel_cli::devices::<B>(name, &self.0.devices)?;
        run_training::<B>(&self.0, &devices)
    }
}

/// Trains on the backend called `backend` (with autodiff).
pub fn train_tokenizer(args: TrainTokenizerArgs, backend: &str) -> Result<TrainTokenizerSummary> {
    crate::backend::run_train(backend, Task(args))
}

fn open_data(a: &TrainTokenizerArgs, size: usize) -> Result<TrainImages> {
    let source = match &a.data {
        TrainData::Procedural { len, seed } => {
            ImageSource::Procedural { shapes: ProceduralShapes::new(size, *seed), len: *len, offset: 1_000_000 }
        }
        TrainData::Folder { path, layout } => ImageSource::Folder { folder: ImageFolder::open(path, *layout)?, size },
    };
    let data = TrainImages::new(source, a.train.seed);
    if data.steps_per_epoch(a.train.batch_size) == 0 {
        bail!("the training set has {} images, fewer than one batch of {}", data.len(), a.train.batch_size);
    }
    Ok(data)
}

/// The frozen networks of the objective, loaded from the given files; a switched-on auxiliary
/// decoder without its teacher is an error, a loss without weights a warning.
fn loss_nets<B: AutodiffBackend>(a: &TrainTokenizerArgs, args: &ModelArgs, stage: Stage, device: &B::Device) -> Result<LossNets<B>> {
    let lpips = match &a.lpips {
        Some((vgg, lin)) => Some(load_lpips::<B>(vgg, lin, device)?.0),
        None => {
            tracing::warn!("no LPIPS weights given (--lpips-vgg, --lpips-lin): training without the perceptual loss");
            None
        }
    };
    let full = stage == Stage::Full;
    // What the model being trained uses (a SoftVQ-VAE has no auxiliary decoders, whatever its
    // aux_*_dec keys say, and needs the DINOv2 teacher for REPA).
    let aux = args.resolve_aux(&a.origin)?;
    let repa = aux.softvq.is_some_and(|s| s.repa.is_some());
    let (hog_on, dino_on, clip_on) = (aux.hog.is_some(), aux.dino.is_some() || repa, aux.clip.is_some());
    let need = |on: bool, path: &Option<PathBuf>, key: &str, flag: &str| -> Result<()> {
        if full && on && path.is_none() {
            bail!("{}: {key} is on but no teacher weights were given ({flag}); give them or set {key}: false", a.origin);
        }
        Ok(())
    };
    need(dino_on, &a.dino_teacher, if repa { "repa" } else { "aux_dino_dec" }, "--dino-teacher")?;
    need(clip_on, &a.clip_teacher, "aux_clip_dec", "--clip-teacher")?;
    let teacher = |path: &Option<PathBuf>, on: bool, config: VitConfig| -> Result<_> {
        match (path, full && on) {
            (Some(p), true) => {
                Ok(Some(load_vit::<B::InnerBackend>(p, &config, device).with_context(|| format!("teacher {}", p.display()))?.0))
            }
            _ => Ok(None),
        }
    };
    // The DINOv2 teacher as the reference builds `repa_model`: at the model's image size and
    // `repa_patch_size` (256 and 16 in the published recipes).
    let dino = VitConfig { img_size: args.image_size, patch_size: args.repa_patch_size, ..VitConfig::dinov2_large() };
    let teachers = AuxTeachers {
        hog: (full && hog_on).then(|| HogGenerator::for_patch(args.dec_patch_size)),
        dino: teacher(&a.dino_teacher, dino_on, dino)?,
        clip: teacher(&a.clip_teacher, clip_on, VitConfig::siglip_so400m())?,
    };
    Ok(LossNets { lpips, teachers })
}

/// A new trainer, or the one `out` holds (which must be of the same configuration).
fn trainer<B: AutodiffBackend>(a: &TrainTokenizerArgs, device: &B::Device) -> Result<TokenizerTrainer<B>> {
    if let Some(t) = TokenizerTrainer::<B>::resume(&a.out, device)? {
        if t.args != a.model || t.config != a.train {
            let what = if t.args != a.model { "model config" } else { "training config" };
            bail!(
                "{} holds a run with another {what} than {} (stopped at step {}): re-run with the same settings to resume, or choose another --out",
                a.out.display(),
                a.origin,
                t.step
            );
        }
        tracing::info!("resuming {} at step {}", a.out.display(), t.step);
        return Ok(t);
    }
    let disc = match &a.disc_trunk {
        Some(p) => {
            let c = DiscConfig::dino_small();
            Some((load_dino_disc::<B>(p, None, &c, device).with_context(|| format!("discriminator trunk {}", p.display()))?.0, c))
        }
        None => {
            if a.train.gan.disc_weight > 0.0 && a.train.gan.disc_start < a.steps {
                tracing::warn!("no discriminator trunk given (--disc-trunk): training without the GAN loss");
            }
            None
        }
    };
    let t = match &a.init_from {
        Some(p) => {
            let weights = if p.is_dir() { p.join("model.safetensors") } else { p.clone() };
            let (ae, _) =
                load_with_args::<B>(&a.model, &a.origin, &weights, device).with_context(|| format!("--init-from {}", weights.display()))?;
            TokenizerTrainer::from_autoencoder(ae, a.model.clone(), &a.origin, a.train.clone(), disc, device)?
        }
        None => TokenizerTrainer::new(a.model.clone(), &a.origin, a.train.clone(), disc, device)?,
    };
    Ok(t)
}

/// The log lines of steps up to `step` (a resumed run drops what the killed one logged after
/// its last checkpoint).
fn read_log(path: &Path, step: u64) -> Result<Vec<StepLog>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let l: StepLog = serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if l.step <= step {
            out.push(l);
        }
    }
    Ok(out)
}

/// The dashboard's metrics of one step (names as in `loss.svg`; `log.jsonl` has every field).
fn step_metrics(l: &StepLog) -> Vec<(String, f64)> {
    let mut m = vec![("rec".to_string(), l.rec)];
    if l.perceptual_weight > 0.0 {
        m.push(("lpips".into(), l.perceptual));
    }
    for (k, v) in &l.aux {
        m.push((format!("aux {k}"), *v));
    }
    if let (Some(g), Some(lam)) = (l.g_loss, l.lambda) {
        m.push(("g loss".into(), g));
        m.push(("lambda".into(), lam));
    }
    m.push(("total".into(), l.total));
    m.push(("grad norm".into(), l.grad_norm));
    if let Some(d) = l.d_loss {
        m.push(("d loss".into(), d));
    }
    if let Some(c) = l.lecam {
        m.push(("lecam".into(), c));
    }
    if let Some(r) = l.mask_ratio {
        m.push(("mask ratio".into(), r));
    }
    m.push(("lr".into(), l.lr));
    m
}

/// Input row over EMA-reconstruction row for `images`, enlarged to ≥ 128-pixel tiles.
fn preview<B: AutodiffBackend>(t: &TokenizerTrainer<B>, images: &[RgbImage], path: &Path, device: &B::Device) -> Result<()> {
    let x = images_to_tensor::<B::InnerBackend>(images, device);
    let recon = tensor_to_images(t.ema.ae.reconstruct(x)?);
    let tiles: Vec<RgbImage> = images.iter().chain(&recon).map(|i| enlarge(i, 128)).collect();
    maetok_train::viz::save_png(&grid(&tiles, images.len()), path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn plot(path: &Path, log: &[StepLog]) -> Result<()> {
    let series =
        |f: &dyn Fn(&StepLog) -> Option<f64>| -> Vec<(f64, f64)> { log.iter().filter_map(|l| f(l).map(|v| (l.step as f64, v))).collect() };
    let mut all: Vec<(String, Vec<(f64, f64)>)> = vec![("pixel (MSE)".into(), series(&|l| Some(l.rec)))];
    if log.iter().any(|l| l.perceptual_weight > 0.0) {
        all.push(("LPIPS".into(), series(&|l| Some(l.perceptual))));
    }
    let keys: std::collections::BTreeSet<String> = log.iter().flat_map(|l| l.aux.keys().cloned()).collect();
    for k in keys {
        all.push((format!("{k} (aux)"), series(&|l| l.aux.get(&k).copied())));
    }
    if log.iter().any(|l| l.d_loss.is_some()) {
        all.push(("discriminator".into(), series(&|l| l.d_loss)));
    }
    let named: Vec<(&str, Vec<(f64, f64)>)> = all.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    line_plot_svg(path, "MAETok tokenizer training", "step", "loss", &named).map_err(|e| anyhow::anyhow!(e))
}

/// The training run on backend `B`, on one device.
pub fn run_on<B: AutodiffBackend>(a: &TrainTokenizerArgs, device: &B::Device) -> Result<TrainTokenizerSummary> {
    if a.world.size() != 1 {
        bail!("run_on trains on one device, but the arguments ask for {} peers", a.world.size());
    }
    run_training::<B>(a, std::slice::from_ref(device))
}

/// What the leader (peer 0) keeps while training: the log and its file, the preview images,
/// the dashboard (closed when the step loop ends).
struct Leader {
    log: Vec<StepLog>,
    log_path: PathBuf,
    log_file: std::fs::File,
    previews: Vec<RgbImage>,
    dash: Option<Dashboard>,
}

/// The run: the trainer is built (or resumed) once, forked onto every local device, and each
/// peer runs [`train_peer`] in its own thread.
fn run_training<B: AutodiffBackend>(a: &TrainTokenizerArgs, devices: &[B::Device]) -> Result<TrainTokenizerSummary> {
    let start = std::time::Instant::now();
    crate::parallel_cli::check_training_layout(&a.world, devices.len(), a.train.batch_size)?;
    let device = devices[0].clone();
    let leader = a.world.peer(0).is_leader();
    std::fs::create_dir_all(a.out.join("previews")).with_context(|| format!("cannot create {}", a.out.display()))?;
    let t = trainer::<B>(a, &device)?;
    let size = t.model.ae.config.image_size;
    let data = std::sync::Arc::new(open_data(a, size)?);
    let nets = loss_nets::<B>(a, &t.args, t.config.stage, &device)?;
    let resumed = t.step;

    let mut log_state = None;
    if leader {
        // The log: keep the lines up to the resumed step, then append.
        let log_path = a.out.join("log.jsonl");
        let log = read_log(&log_path, t.step)?;
        let mut text = String::new();
        for l in &log {
            text += &serde_json::to_string(l)?;
            text.push('\n');
        }
        maetok_nn::io::write_atomic(&log_path, text.as_bytes())?;
        let log_file =
            std::fs::OpenOptions::new().append(true).open(&log_path).with_context(|| format!("cannot open {}", log_path.display()))?;
        // A fixed preview set: 8 images with a fixed crop.
        let mut prng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let previews: Vec<RgbImage> = (0..8.min(data.len())).map(|i| data.readable_example(i, &mut prng)).collect::<Result<_, _>>()?;
        let config = DashboardConfig {
            out: a.out.clone(),
            total_steps: a.steps,
            steps_per_epoch: data.steps_per_epoch(t.config.batch_size),
            items_per_step: t.config.batch_size,
            gpu: crate::backend::is_cuda::<B>(&device),
        };
        let mut dash = Dashboard::new(DashboardMode::detect(a.progress), config, t.step)?;
        dash.replay(t.step, log.iter().map(|l| (l.step, step_metrics(l))))?;
        log_state = Some(Leader { log, log_path, log_file, previews, dash: Some(dash) });
    }
    let first = log_state.as_ref().map_or(0, |l| l.log.len());
    let states: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let lead = if k == 0 { log_state.take() } else { None };
            (t.fork(a.world.peer(k), d), nets.fork(d), lead)
        })
        .collect();
    drop((t, nets));
    let mut done = run_peers::<B::InnerBackend, _, _, anyhow::Error, _>(&a.world, devices, states, |peer, (mut t, nets, mut lead)| {
        t.peer = peer;
        let ckpt = train_peer(&mut t, &nets, a, &data, lead.as_mut())?;
        Ok((t, lead, ckpt))
    })?;
    let (mut t, lead, mut checkpoint) = done.swap_remove(0);
    let model_dir = a.out.join("model");
    let Some(lead) = lead else {
        // Another machine's process: peer 0 wrote everything.
        return Ok(TrainTokenizerSummary {
            resumed_from_step: resumed,
            steps: t.step,
            first_rec: f64::NAN,
            last_rec_mean_of_10: f64::NAN,
            checkpoint,
            model_dir: model_dir.display().to_string(),
            skipped_images: Vec::new(),
            seconds: start.elapsed().as_secs_f64(),
            steps_per_second: 0.0,
        });
    };
    if checkpoint.is_empty() {
        checkpoint = t.save_checkpoint(&a.out, a.keep_checkpoints)?.display().to_string();
    }
    t.export_ema(&model_dir)?;
    let log = lead.log;
    if !log.is_empty() {
        plot(&a.out.join("loss.svg"), &log)?;
    }
    let mine = &log[first.min(log.len())..];
    let n = mine.len();
    let seconds = start.elapsed().as_secs_f64();
    let train_seconds: f64 = mine.iter().map(|l| l.seconds).sum();
    let skipped_images = match &data.source {
        ImageSource::Folder { folder, .. } => data.skipped().into_iter().map(|i| folder.samples[i].0.display().to_string()).collect(),
        ImageSource::Procedural { .. } => Vec::new(),
    };
    let summary = TrainTokenizerSummary {
        resumed_from_step: resumed,
        steps: t.step,
        first_rec: mine.first().map_or(f64::NAN, |l| l.rec),
        last_rec_mean_of_10: mine[n.saturating_sub(10)..].iter().map(|l| l.rec).sum::<f64>() / n.clamp(1, 10) as f64,
        checkpoint,
        model_dir: model_dir.display().to_string(),
        skipped_images,
        seconds,
        steps_per_second: if train_seconds > 0.0 { n as f64 / train_seconds } else { 0.0 },
    };
    maetok_nn::io::write_atomic(&a.out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(summary)
}

/// The step loop of one peer: it decodes its rows of every batch; the leader (`lead`) also
/// writes the log, previews, checkpoints and the dashboard. After every checkpoint the peers
/// agree that it was written ([`parallel::all_ok`]), so a failed write stops every peer instead
/// of leaving the others waiting. A stop asked on the dashboard ends the run after a checkpoint
/// ([`dashboard::stop_requested`]); the same command resumes it.
fn train_peer<B: AutodiffBackend>(
    t: &mut TokenizerTrainer<B>,
    nets: &LossNets<B>,
    a: &TrainTokenizerArgs,
    data: &std::sync::Arc<TrainImages>,
    mut lead: Option<&mut Leader>,
) -> Result<String> {
    let device = t.device().clone();
    let mut checkpoint = String::new();
    let batch = t.config.batch_size;
    let mut batches = Prefetcher::rows(data.clone(), t.step, batch, t.peer.shard(batch), 2);
    while t.step < a.steps {
        let images = batches.next_batch()?;
        let l = t.step(images_to_tensor::<B>(&images, &device), nets)?;
        if let Some(lead) = lead.as_deref_mut() {
            writeln!(lead.log_file, "{}", serde_json::to_string(&l)?)
                .with_context(|| format!("cannot write {}", lead.log_path.display()))?;
            if let Some(dash) = lead.dash.as_mut() {
                dash.step(l.step, &step_metrics(&l));
            }
            lead.log.push(l);
        }
        let dash = lead.as_deref().and_then(|l| l.dash.as_ref());
        let stop = dashboard::stop_requested::<B::InnerBackend>(t.peer, dash, t.step, &device)?;
        let last = t.step == a.steps || stop;
        if let (Some(lead), true) = (lead.as_deref(), (a.preview_every > 0 && t.step.is_multiple_of(a.preview_every)) || last) {
            preview(t, &lead.previews, &a.out.join(format!("previews/step-{:07}.png", t.step)), &device)?;
        }
        if (a.checkpoint_every > 0 && t.step.is_multiple_of(a.checkpoint_every)) || last {
            let written = match lead {
                Some(_) => t.save_checkpoint(&a.out, a.keep_checkpoints).map(|p| p.display().to_string()),
                None => Ok("(written by peer 0)".to_string()),
            };
            if t.peer.world > 1 && !parallel::all_ok::<B::InnerBackend>(t.peer, written.is_ok(), &device)? && written.is_ok() {
                bail!("{}: another peer failed; stopping at step {}", t.peer, t.step);
            }
            checkpoint = written?;
        }
        if stop {
            break;
        }
    }
    if let Some(dash) = lead.and_then(|l| l.dash.take()) {
        dash.finish();
    }
    if t.step < a.steps {
        tracing::info!("stopped at step {} as asked; the same command resumes the run", t.step);
    }
    Ok(checkpoint)
}
