//! Train a latent generator (SiT: flow objective; DiT: diffusion objective) on a latent cache;
//! the `train_sit` and `train_dit` examples are CLIs over [`train_generator`]. Resumes from
//! `out/checkpoints/latest` when present. Writes checkpoints (the EMA model in
//! `checkpoints/step-N/ema/` is directly usable by `sample_sit`/`sample_dit`), periodic EMA
//! sample grids (with a tokenizer), `losses.json` and `loss.svg`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use maetok_generator::LatentTransformerConfig;
use maetok_sampler::{Guidance, Sampler};
use maetok_tokenizer::load_pretrained;
use maetok_train::dashboard::{self, Dashboard, DashboardConfig, DashboardMode};
use maetok_train::data::LatentCache;
use maetok_train::parallel::{self, run_peers, World};
use maetok_train::viz::{grid, line_plot_svg};
use maetok_train::{GeneratorTrainConfig, GeneratorTrainer, Objective};
use serde::Serialize;

/// Options of a training run.
#[derive(Debug, Clone)]
pub struct TrainGeneratorArgs {
    pub cache: PathBuf,
    pub out: PathBuf,
    /// Architecture for a new run (ignored when resuming): a SiT or DiT preset, possibly resized.
    pub model: LatentTransformerConfig,
    pub train: GeneratorTrainConfig,
    /// Total steps (a resumed run continues up to this count).
    pub steps: usize,
    pub checkpoint_every: usize,
    /// Sample grids every this many steps (needs `tokenizer`).
    pub sample_every: usize,
    pub tokenizer: Option<PathBuf>,
    /// Where the latent normalisation comes from.
    pub normalisation: Normalisation,
    pub progress: bool,
    /// Device indices of this machine (one peer each) on the chosen backend.
    pub devices: Vec<u16>,
    /// The run's peers (one device, one process: `World::local(1)`).
    pub world: World,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainGeneratorSummary {
    pub resumed_from_step: usize,
    pub steps: usize,
    pub first_loss: f32,
    pub last_loss_mean_of_10: f32,
    pub checkpoint: String,
    pub seconds: f64,
}

/// How latents are normalised before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalisation {
    /// `train.latent_mean` / `train.latent_std` as given.
    Given,
    /// The tokenizer config's `vq_mean` / `vq_std` recorded in the cache (the reference).
    TokenizerConfig,
    /// The cached latents' own mean and standard deviation.
    Data,
}

/// The sampler and guidance of the training previews: the reference's defaults for each
/// objective (flow: 50 Euler ODE steps with CFG 4; diffusion: 100 ancestral steps of the
/// trained schedule, unguided).
pub fn preview_sampler(objective: Objective) -> (Sampler, Guidance) {
    match objective {
        Objective::Flow { .. } => (Sampler::Ode { steps: 50, heun: false }, Guidance::always(4.0)),
        Objective::Diffusion { schedule } => (Sampler::Ddpm { schedule, steps: 100 }, Guidance::none()),
    }
}

struct TrainTask(TrainGeneratorArgs);

impl crate::backend::TrainTask for TrainTask {
    type Output = TrainGeneratorSummary;
    fn run<B: AutodiffBackend>(self, _device: B::Device, name: &str) -> Result<TrainGeneratorSummary> {
        let devices = crate::parallel_cli::devices::<B>(name, &self.0.devices)?;
        run_training::<B>(self.0, &devices)
    }
}

/// The training run: the trainer is built (or resumed) once, forked onto every local device,
/// and each peer runs [`train_peer`] in its own thread.
fn run_training<B: AutodiffBackend>(mut a: TrainGeneratorArgs, devices: &[B::Device]) -> Result<TrainGeneratorSummary> {
    let start = std::time::Instant::now();
    crate::parallel_cli::check_training_layout(&a.world, devices.len(), a.train.batch_size)?;
    let device = devices[0].clone();
    let cache = LatentCache::open(&a.cache)?;
    if cache.is_empty() {
        bail!("{}: the latent cache is empty", a.cache.display());
    }
    let m = cache.manifest();
    let stats = match a.normalisation {
        Normalisation::Given => None,
        Normalisation::TokenizerConfig => Some((m.latent_mean.unwrap_or(0.0), m.latent_std.unwrap_or(1.0))),
        Normalisation::Data => match (m.data_mean, m.data_std) {
            (Some(mu), Some(sd)) if sd > 0.0 => Some((mu, sd)),
            _ => bail!(
                "{} records no latent statistics (cached before they were kept); re-cache or give the normalisation",
                a.cache.display()
            ),
        },
    };
    if let Some((mu, sd)) = stats {
        tracing::info!("normalising latents with mean {mu:.5}, std {sd:.5}");
        a.train.latent_mean = mu;
        a.train.latent_std = sd;
    }
    if cache.len() < a.train.batch_size {
        bail!("{} holds {} latents, fewer than one batch of {}", a.cache.display(), cache.len(), a.train.batch_size);
    }
    let t = match GeneratorTrainer::<B>::resume(&a.out, &device)? {
        Some(t) => {
            tracing::info!("resuming {} at step {}", a.out.display(), t.step);
            t
        }
        None => {
            let t = GeneratorTrainer::<B>::new(a.model.clone(), a.train.clone(), &device)?;
            let [l, c] = cache.latent_shape();
            if t.model.latent_shape() != [l, c] {
                bail!("the model is configured for {:?} latents but {} holds [{l}, {c}]", t.model.latent_shape(), a.cache.display());
            }
            if cache.classes().len() > t.model.num_classes() {
                bail!("{} has {} classes but the model only {}", a.cache.display(), cache.classes().len(), t.model.num_classes());
            }
            t
        }
    };
    if !t.config.batch_size.is_multiple_of(a.world.size()) {
        bail!("the run's batch of {} does not split over {} peers", t.config.batch_size, a.world.size());
    }
    let tok = match &a.tokenizer {
        Some(p) => Some(load_pretrained::<B::InnerBackend>(p, &device)?.0),
        None => None,
    };
    let resumed = t.step;
    std::fs::create_dir_all(a.out.join("samples")).with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut dash = None;
    if a.world.peer(0).is_leader() {
        let batch = t.config.batch_size;
        let config = DashboardConfig {
            out: a.out.clone(),
            total_steps: a.steps as u64,
            // Batches are drawn at random: an epoch is as many steps as one pass would take.
            steps_per_epoch: cache.len().div_ceil(batch) as u64,
            items_per_step: batch,
            gpu: crate::backend::is_cuda::<B>(&device),
        };
        let mut d = Dashboard::new(DashboardMode::detect(a.progress), config, t.step as u64)?;
        d.replay(t.step as u64, t.losses.iter().enumerate().map(|(i, &l)| (i as u64 + 1, step_metrics(l, t.config.lr))))?;
        dash = Some(d);
    }
    let states: Vec<_> =
        devices.iter().enumerate().map(|(k, d)| (t.fork(a.world.peer(k), d), if k == 0 { dash.take() } else { None })).collect();
    drop(t);
    let mut done = run_peers::<B::InnerBackend, _, _, anyhow::Error, _>(&a.world, devices, states, |peer, (mut t, dash)| {
        t.peer = peer;
        let ckpt = train_peer(&mut t, &a, &cache, tok.as_ref(), dash)?;
        Ok((t, ckpt))
    })?;
    let (t, last_ckpt) = done.swap_remove(0);
    if t.peer.is_leader() {
        let pts: Vec<(f64, f64)> = t.losses.iter().enumerate().map(|(i, &l)| (i as f64 + 1.0, l as f64)).collect();
        line_plot_svg(&a.out.join("loss.svg"), "latent generator training loss", "step", "loss", &[("loss", pts)])
            .map_err(|e| anyhow::anyhow!(e))?;
        maetok_nn::io::write_atomic(&a.out.join("losses.json"), serde_json::to_string(&t.losses)?.as_bytes())?;
    }
    let n = t.losses.len();
    Ok(TrainGeneratorSummary {
        resumed_from_step: resumed,
        steps: t.step,
        first_loss: t.losses.first().copied().unwrap_or(f32::NAN),
        last_loss_mean_of_10: t.losses[n.saturating_sub(10)..].iter().sum::<f32>() / n.clamp(1, 10) as f32,
        checkpoint: last_ckpt,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The dashboard's metrics of one step.
fn step_metrics(loss: f32, lr: f64) -> Vec<(&'static str, f64)> {
    vec![("loss", loss as f64), ("lr", lr)]
}

/// The step loop of one peer; the leader (rank 0) also writes checkpoints, previews and the
/// dashboard (`dash`). After every checkpoint the peers agree that it was written
/// ([`parallel::all_ok`]), so a failed write stops every peer instead of leaving them waiting.
/// A stop asked on the dashboard ends the run after a checkpoint
/// ([`dashboard::stop_requested`]); the same command resumes it.
fn train_peer<B: AutodiffBackend>(
    t: &mut GeneratorTrainer<B>,
    a: &TrainGeneratorArgs,
    cache: &LatentCache,
    tok: Option<&maetok_tokenizer::Tokenizer<B::InnerBackend>>,
    mut dash: Option<Dashboard>,
) -> Result<String> {
    let leader = t.peer.is_leader();
    let device = t.device().clone();
    let mut last_ckpt = String::new();
    let checkpoint_due = |step: usize| a.checkpoint_every > 0 && (step.is_multiple_of(a.checkpoint_every) || step == a.steps);
    while t.step < a.steps {
        let loss = t.step(cache)?;
        if let Some(d) = dash.as_mut() {
            d.step(t.step as u64, &step_metrics(loss, t.config.lr));
        }
        let stop = dashboard::stop_requested::<B::InnerBackend>(t.peer, dash.as_ref(), t.step as u64, &device)?;
        if checkpoint_due(t.step) || stop || t.step == a.steps && last_ckpt.is_empty() {
            let written = if leader { t.save_checkpoint(&a.out).map(|p| p.display().to_string()) } else { Ok(String::new()) };
            if t.peer.world > 1 && !parallel::all_ok::<B::InnerBackend>(t.peer, written.is_ok(), &device)? && written.is_ok() {
                bail!("{}: another peer failed; stopping at step {}", t.peer, t.step);
            }
            last_ckpt = written?;
            if last_ckpt.is_empty() {
                last_ckpt = "(written by peer 0)".into();
            }
        }
        if let (Some(tok), true) =
            (tok, leader && a.sample_every > 0 && (t.step.is_multiple_of(a.sample_every) || t.step == a.steps || stop))
        {
            let k = cache.classes().len().min(8);
            let labels: Vec<i64> = (0..8).map(|i| (i % k) as i64).collect();
            let (sampler, guidance) = preview_sampler(t.config.objective);
            let z = crate::generate::sample_latents(&t.ema, t.ema.latent_shape(), &labels, 0, sampler, guidance, 0, &device)?;
            let imgs = crate::generate::decode_latents(tok, &z, 8, (t.config.latent_mean, t.config.latent_std), &device)?;
            let p = a.out.join(format!("samples/step-{:07}.png", t.step));
            maetok_train::viz::save_png(&grid(&imgs, 8), &p).with_context(|| format!("cannot write {}", p.display()))?;
        }
        if stop {
            break;
        }
    }
    if let Some(d) = dash {
        d.finish();
    }
    if t.step < a.steps {
        tracing::info!("stopped at step {} as asked; the same command resumes the run", t.step);
    }
    if last_ckpt.is_empty() && leader {
        last_ckpt = t.save_checkpoint(&a.out)?.display().to_string();
    }
    Ok(last_ckpt)
}

/// Trains on the backend called `backend` (with autodiff).
pub fn train_generator(args: TrainGeneratorArgs, backend: &str) -> Result<TrainGeneratorSummary> {
    crate::backend::run_train(backend, TrainTask(args))
}
