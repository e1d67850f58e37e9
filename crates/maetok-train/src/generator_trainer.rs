//! Latent-generator training on cached latents (`train/train_sit.py`, `train/train_dit.py`):
//! normalised latents `(z − mean)/std`, a random mirrored/unmirrored latent per image, the
//! [`Objective`] with label dropout (flow: the stochastic-interpolant loss; diffusion: hybrid
//! MSE + VB at uniform integer steps), AdamW (constant LR), optional global gradient clipping
//! (the SiT reference clips at 1, the DiT reference does not), EMA, and atomic, exactly
//! resumable checkpoints. Every random choice of step `s` derives from `(seed, s)` (the batch and
//! its mirroring from one stream, each sample's time, noise and label dropout from a stream of
//! its own, [`SampleDraws`]), so a resumed run continues bit-for-bit where it stopped, and a run
//! on several peers ([`crate::parallel`]) trains on the same numbers as one device.
//!
//! Checkpoint folder `checkpoints/step-NNNNNNN/`: `ema/` (an inference model folder:
//! `config.json` + `model.safetensors`, with the latent normalisation recorded), `model.mpk` and
//! `optim.mpk` (Burn records of the online model and AdamW), `state.json`.
//! `checkpoints/latest` names the newest complete one.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::{adaptor::OptimizerAdaptor, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use maetok_dit::hybrid_loss;
use maetok_generator::{load_folder, save_folder, LatentTransformer, LatentTransformerConfig};
use maetok_nn::ema::ema_update;
use maetok_sampler::{GaussianDiffusion, PathType, Schedule, TimeSampling};
use maetok_sit::{si_loss, LossDraws};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::adamw::FusedAdamW;
use crate::checkpoint::{latest_checkpoint, write_checkpoint, CheckpointIoError};
use crate::data::LatentCache;
use crate::grad_clip::{clip_gradients, module_gradients};
use crate::in_place;
use crate::parallel::{all_reduce_grads, all_reduce_scalar, ParallelError, Peer};

/// What the generator learns to reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "objective", rename_all = "lowercase")]
pub enum Objective {
    /// Flow matching (SiT): velocity of the interpolant `path`, times drawn by `sampling`.
    Flow { path: PathType, sampling: TimeSampling },
    /// DDPM (DiT): ε and the learned variance on the 1000-step `schedule`.
    Diffusion { schedule: Schedule },
}

impl Objective {
    /// Whether the model must output `[ε̂ | v]`.
    pub fn needs_learned_variance(&self) -> bool {
        matches!(self, Objective::Diffusion { .. })
    }
}

/// Training settings (defaults: the SiT reference's, except the batch size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorTrainConfig {
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub ema_decay: f64,
    /// Global gradient-norm clip (SiT reference: 1.0; DiT reference: none).
    pub grad_clip: Option<f64>,
    pub objective: Objective,
    pub class_dropout_prob: f64,
    pub seed: u64,
    /// Latent normalisation `(z − mean)/std` (the tokenizer's `vq_mean`, `vq_std`).
    pub latent_mean: f64,
    pub latent_std: f64,
}

impl Default for GeneratorTrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            lr: 1e-4,
            weight_decay: 0.0,
            ema_decay: 0.9999,
            grad_clip: Some(1.0),
            objective: Objective::Flow { path: PathType::Linear, sampling: TimeSampling::Uniform },
            class_dropout_prob: 0.1,
            seed: 0,
            latent_mean: 0.0,
            latent_std: 1.0,
        }
    }
}

impl GeneratorTrainConfig {
    /// The DiT reference's settings: diffusion on `schedule`, no gradient clipping.
    pub fn diffusion(schedule: Schedule) -> Self {
        Self { grad_clip: None, objective: Objective::Diffusion { schedule }, ..Self::default() }
    }
}

/// Errors of the trainer; messages name files and values.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorTrainError {
    #[error("the model outputs {channels} channels per token but the {objective:?} objective needs {}", if objective.needs_learned_variance() { "[eps | v] (learn_sigma = true: a DiT preset)" } else { "the velocity (learn_sigma = false: a SiT preset)" })]
    ObjectiveMismatch { objective: Objective, channels: usize },
    #[error("the cache holds [{}, {}] latents, the model takes [{}, {}]", cache[0], cache[1], model[0], model[1])]
    LatentShape { cache: [usize; 2], model: [usize; 2] },
    #[error("the latent cache is empty")]
    EmptyCache,
    #[error("label {label} of latent {index} is out of range for a {classes}-class model")]
    LabelOutOfRange { label: usize, index: usize, classes: usize },
    #[error("the loss became {value} at step {step}")]
    NonFinite { value: f32, step: usize },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error(transparent)]
    Parallel(#[from] ParallelError),
}

impl From<CheckpointIoError> for GeneratorTrainError {
    fn from(e: CheckpointIoError) -> Self {
        Self::Checkpoint { path: e.path, msg: e.msg }
    }
}

/// The 1000-step training diffusion of each schedule, built once (the tables are f64 host arrays).
fn training_diffusion(schedule: Schedule) -> &'static GaussianDiffusion {
    static TABLES: std::sync::OnceLock<[GaussianDiffusion; 2]> = std::sync::OnceLock::new();
    let t = TABLES.get_or_init(|| [Schedule::Linear, Schedule::Cosine].map(|s| GaussianDiffusion::new(s, 1000, "").expect("1000 steps")));
    &t[usize::from(schedule == Schedule::Cosine)]
}

/// The random numbers of one training sample, drawn on the host from `(step seed, index of the
/// sample in the global batch)`: a sample gets the same draws whichever peer trains it, so a run
/// on several devices follows the same trajectory as one device (up to float rounding).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleDraws {
    /// Flow: the time draw (`U[0,1)`, or `N(0,1)` for log-normal sampling); diffusion: `U[0,1)`
    /// giving the step `⌊1000·u⌋`.
    pub time: f32,
    /// `[L·C]` standard normal.
    pub noise: Vec<f32>,
    /// `U[0,1)`: the label is dropped (classifier-free guidance) when below the dropout rate.
    pub label_drop: f32,
}

impl SampleDraws {
    /// The draws of sample `index` of the batch of step seed `step_seed`.
    pub fn new(step_seed: u64, index: usize, latent_len: usize, log_normal_time: bool) -> Self {
        use rand_distr::{Distribution as _, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(step_seed);
        rng.set_stream(1 + index as u64);
        let time = if log_normal_time { StandardNormal.sample(&mut rng) } else { rng.random::<f32>() };
        let noise = (0..latent_len).map(|_| StandardNormal.sample(&mut rng)).collect();
        Self { time, noise, label_drop: rng.random::<f32>() }
    }
}

/// Per-sample loss `[B]` of `model` on normalised latents `x0` `[B, L, C]` with labels `y` `[B]`
/// under `cfg`'s objective, with sample `b`'s random numbers `draws[b]`.
pub fn objective_loss<B: Backend>(
    model: &LatentTransformer<B>,
    x0: Tensor<B, 3>,
    y: Tensor<B, 1, Int>,
    cfg: &GeneratorTrainConfig,
    draws: &[SampleDraws],
    device: &B::Device,
) -> Tensor<B, 1> {
    let [b, l, c] = x0.dims();
    assert_eq!(draws.len(), b, "one draw per sample");
    let vec1 = |f: &dyn Fn(&SampleDraws) -> f32| {
        Tensor::<B, 1>::from_data(TensorData::new(draws.iter().map(f).collect::<Vec<f32>>(), [b]), device)
    };
    let noise = Tensor::<B, 3>::from_data(
        TensorData::new(draws.iter().flat_map(|d| d.noise.iter().copied()).collect::<Vec<f32>>(), [b, l, c]),
        device,
    );
    match cfg.objective {
        Objective::Flow { path, sampling } => {
            let draws = LossDraws { time: vec1(&|d| d.time), noise, label_drop: Some(vec1(&|d| d.label_drop)) };
            si_loss(model, x0, y, path, sampling, cfg.class_dropout_prob, draws).per_sample
        }
        Objective::Diffusion { schedule } => {
            let steps: Vec<usize> = draws.iter().map(|d| ((d.time * 1000.0) as usize).min(999)).collect();
            let y = model.drop_labels(y, vec1(&|d| d.label_drop), cfg.class_dropout_prob);
            hybrid_loss(model, training_diffusion(schedule), x0, &steps, noise, y).loss
        }
    }
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: usize,
    model: LatentTransformerConfig,
    train: GeneratorTrainConfig,
    losses: Vec<f32>,
}

/// A latent generator being trained: the online model (autodiff), its EMA and the optimiser.
pub struct GeneratorTrainer<B: AutodiffBackend> {
    pub model: LatentTransformer<B>,
    pub ema: LatentTransformer<B::InnerBackend>,
    optim: OptimizerAdaptor<FusedAdamW, LatentTransformer<B>, B>,
    pub model_config: LatentTransformerConfig,
    pub config: GeneratorTrainConfig,
    /// Steps done.
    pub step: usize,
    /// Loss of every step done (the mean over the whole global batch).
    pub losses: Vec<f32>,
    /// Which share of every batch this trainer takes ([`Peer::SINGLE`]: all of it).
    pub peer: Peer,
    device: B::Device,
}

fn optimizer<B: AutodiffBackend>(cfg: &GeneratorTrainConfig) -> OptimizerAdaptor<FusedAdamW, LatentTransformer<B>, B> {
    FusedAdamW { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8, weight_decay: cfg.weight_decay as f32 }.init()
}

impl<B: AutodiffBackend> GeneratorTrainer<B> {
    /// A fresh model with the reference's initialisation (seeded by `config.seed`).
    pub fn new(
        model_config: LatentTransformerConfig,
        config: GeneratorTrainConfig,
        device: &B::Device,
    ) -> Result<Self, GeneratorTrainError> {
        if model_config.learns_sigma() != config.objective.needs_learned_variance() {
            return Err(GeneratorTrainError::ObjectiveMismatch { objective: config.objective, channels: model_config.out_channels() });
        }
        let (model, ema) = crate::seeded::seeded(|| {
            <B as Backend>::seed(device, config.seed);
            let mut model = model_config.init::<B>(device);
            model.init_for_training(device);
            let ema = model.valid();
            (model, ema)
        });
        Ok(Self {
            model,
            ema,
            optim: optimizer(&config),
            model_config,
            config,
            step: 0,
            losses: Vec::new(),
            peer: Peer::SINGLE,
            device: device.clone(),
        })
    }

    /// The device the model lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// A copy of this trainer for `peer` on `device`: the same parameters (and parameter ids),
    /// EMA, optimiser state and step. Every peer keeps its own EMA, as the reference's ranks do.
    pub fn fork(&self, peer: Peer, device: &B::Device) -> Self {
        Self {
            model: self.model.clone().fork(device),
            ema: self.ema.clone().to_device(device),
            optim: optimizer(&self.config).load_record(self.optim.to_record()),
            model_config: self.model_config.clone(),
            config: self.config.clone(),
            step: self.step,
            losses: self.losses.clone(),
            peer,
            device: device.clone(),
        }
    }

    /// One optimisation step on a batch drawn from `data`; returns the loss (the mean over the
    /// global batch). On a peer of a parallel run, every peer calls it: each takes its
    /// [`Peer::shard`] of the batch, and the gradients are averaged over the peers.
    pub fn step(&mut self, data: &LatentCache) -> Result<f32, GeneratorTrainError> {
        let [l, c] = data.latent_shape();
        if [l, c] != self.model.latent_shape() {
            return Err(GeneratorTrainError::LatentShape { cache: [l, c], model: self.model.latent_shape() });
        }
        let n = data.len();
        let bs = self.config.batch_size.min(n);
        if bs == 0 {
            return Err(GeneratorTrainError::EmptyCache);
        }
        if !bs.is_multiple_of(self.peer.world) {
            return Err(ParallelError::UnevenBatch { batch: bs, world: self.peer.world }.into());
        }
        let step_seed = self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(self.step as u64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(step_seed);
        let idx = rand::seq::index::sample(&mut rng, n, bs);
        let flips: Vec<bool> = (0..bs).map(|_| rng.random::<bool>()).collect();
        let shard = self.peer.shard(bs);
        let log_normal = matches!(self.config.objective, Objective::Flow { sampling: TimeSampling::LogNormal, .. });
        let (mut z, mut y, mut draws) = (Vec::with_capacity(shard.len() * l * c), Vec::with_capacity(shard.len()), Vec::new());
        for j in shard.clone() {
            let i = idx.index(j);
            let label = data.label(i);
            if label >= self.model.num_classes() {
                return Err(GeneratorTrainError::LabelOutOfRange { label, index: i, classes: self.model.num_classes() });
            }
            z.extend(data.latent(i, flips[j]).into_iter().map(|v| ((v as f64 - self.config.latent_mean) / self.config.latent_std) as f32));
            y.push(label as i64);
            draws.push(SampleDraws::new(step_seed, j, l * c, log_normal));
        }
        let b = shard.len();
        let x0 = Tensor::<B, 3>::from_data(TensorData::new(z, [b, l, c]), &self.device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [b]), &self.device);
        let loss = objective_loss(&self.model, x0, y, &self.config, &draws, &self.device).mean();
        let parallel = self.peer.world > 1;
        let mut value = loss.clone().into_scalar().elem::<f32>();
        if parallel {
            value = all_reduce_scalar::<B::InnerBackend>(self.peer, value, true, &self.device)?;
        }
        if !value.is_finite() {
            return Err(GeneratorTrainError::NonFinite { value, step: self.step });
        }
        let mut grads = loss.backward();
        let mut grads = module_gradients(&mut self.model, &mut grads);
        if parallel {
            grads = all_reduce_grads::<B, _>(self.peer, &mut self.model, grads)?;
        }
        let (grads, _norm) = clip_gradients(&mut self.model, grads, self.config.grad_clip);
        let lr = self.config.lr;
        in_place::update(&mut self.model, |m| (self.optim.step(lr, m, grads), ()));
        let decay = if self.step == 0 { 0.0 } else { self.config.ema_decay };
        let mut online = self.model.valid();
        ema_update(&mut self.ema, &mut online, decay, &["pos_embed"]);
        self.step += 1;
        self.losses.push(value);
        Ok(value)
    }

    /// Writes `dir/checkpoints/step-NNNNNNN/` (through a temporary folder and a rename, see
    /// [`crate::checkpoint`]) and points `dir/checkpoints/latest` at it.
    pub fn save_checkpoint(&mut self, dir: &Path) -> Result<PathBuf, GeneratorTrainError> {
        let state =
            TrainState { step: self.step, model: self.model_config.clone(), train: self.config.clone(), losses: self.losses.clone() };
        write_checkpoint(dir, self.step as u64, &state, None, |tmp| {
            let err = |msg: String| GeneratorTrainError::Checkpoint { path: tmp.to_path_buf(), msg };
            // The EMA folder records the latent normalisation beside the architecture, for the samplers.
            let mut ema_cfg = self.model_config.clone();
            ema_cfg.extra.insert("latent_mean".into(), self.config.latent_mean.into());
            ema_cfg.extra.insert("latent_std".into(), self.config.latent_std.into());
            save_folder(&mut self.ema, &ema_cfg, &tmp.join("ema")).map_err(|e| err(e.to_string()))?;
            let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
            self.model.clone().save_file(tmp.join("model"), &rec).map_err(|e| err(format!("model: {e}")))?;
            rec.record(self.optim.to_record(), tmp.join("optim")).map_err(|e| err(format!("optim: {e}")))
        })
    }

    /// Resumes from `dir/checkpoints/latest`, or returns `None` if there is none.
    pub fn resume(dir: &Path, device: &B::Device) -> Result<Option<Self>, GeneratorTrainError> {
        let Some((ck, state)) = latest_checkpoint::<TrainState>(dir)? else { return Ok(None) };
        let err = |msg: String| GeneratorTrainError::Checkpoint { path: ck.clone(), msg };
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let model = state.model.init::<B>(device).load_file(ck.join("model"), &rec, device).map_err(|e| err(format!("model.mpk: {e}")))?;
        let optim_rec = rec.load(ck.join("optim"), device).map_err(|e| err(format!("optim.mpk: {e}")))?;
        let optim = optimizer::<B>(&state.train).load_record(optim_rec);
        let (ema, _) = load_folder::<B::InnerBackend>(&ck.join("ema"), &state.model, device).map_err(|e| err(e.to_string()))?;
        Ok(Some(Self {
            model,
            ema,
            optim,
            model_config: state.model,
            config: state.train,
            step: state.step,
            losses: state.losses,
            peer: Peer::SINGLE,
            device: device.clone(),
        }))
    }
}
