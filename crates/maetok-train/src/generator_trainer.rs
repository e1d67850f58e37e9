//! Latent-generator training on cached latents (`train/train_sit.py`, `train/train_dit.py`):
//! normalised latents `(z − mean)/std`, a random mirrored/unmirrored latent per image, the
//! model's objective with label dropout (SiT: stochastic interpolant; DiT: hybrid MSE + VB at
//! uniform integer steps), AdamW (constant LR), optional global gradient clipping (the SiT
//! reference clips at 1, the DiT reference does not), EMA, and atomic, exactly resumable
//! checkpoints. Every random choice of step `s` derives from `(seed, s)`, so a resumed run
//! continues bit-for-bit where it stopped.
//!
//! Checkpoint folder `checkpoints/step-NNNNNNN/`: `ema/` (an inference model folder:
//! `config.json` + `model.safetensors`), `model.mpk` and `optim.mpk` (Burn records of the online
//! model and AdamW), `state.json`. `checkpoints/latest` names the newest complete one.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::{adaptor::OptimizerAdaptor, AdamW, AdamWConfig, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Distribution, ElementConversion, Int, Tensor, TensorData};
use maetok_dit::{Dit, DitConfig, GaussianDiffusion, Schedule};
use maetok_nn::ema::ema_update;
use maetok_nn::io::{write_atomic, VisitParams};
use maetok_sit::{init_for_training, save_sit, si_loss, LossDraws, PathType, Sit, SitConfig, TimeSampling};
use serde::de::DeserializeOwned;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::LatentCache;
use crate::grad_clip::clipped_gradients;

/// Training settings (defaults: the reference's, except the batch size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitTrainConfig {
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub ema_decay: f64,
    /// Global gradient-norm clip (reference: 1.0).
    pub grad_clip: Option<f64>,
    /// SiT: interpolant path and time sampling.
    pub path: PathType,
    pub sampling: TimeSampling,
    /// DiT: β schedule of the 1000-step training diffusion.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    pub class_dropout_prob: f64,
    pub seed: u64,
    /// Latent normalisation `(z − mean)/std` (the tokenizer's `vq_mean`, `vq_std`).
    pub latent_mean: f64,
    pub latent_std: f64,
}

fn default_schedule() -> Schedule {
    Schedule::Linear
}

/// Training settings of a DiT (the same fields; set `grad_clip: None` and the `schedule`).
pub type DitTrainConfig = SitTrainConfig;

impl Default for SitTrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            lr: 1e-4,
            weight_decay: 0.0,
            ema_decay: 0.9999,
            grad_clip: Some(1.0),
            path: PathType::Linear,
            sampling: TimeSampling::Uniform,
            schedule: Schedule::Linear,
            class_dropout_prob: 0.1,
            seed: 0,
            latent_mean: 0.0,
            latent_std: 1.0,
        }
    }
}

/// Errors of the trainer; messages name files and values.
#[derive(Debug, thiserror::Error)]
pub enum SitTrainError {
    #[error("{0}")]
    Data(String),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
}

/// A latent generator the trainer can train: how to build it, its loss, and its inference
/// folder format (for the EMA copy).
pub trait TrainableGenerator<B: AutodiffBackend>: AutodiffModule<B> + VisitParams<B> + Sized
where
    Self::InnerModule: VisitParams<B::InnerBackend>,
{
    type Config: Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned;
    /// The architecture with placeholder weights.
    fn build(cfg: &Self::Config, device: &B::Device) -> Self;
    /// The reference's training initialisation.
    fn init_for_training(&mut self, device: &B::Device);
    /// `[L, C]`.
    fn latent_shape(&self) -> [usize; 2];
    fn num_classes(&self) -> usize;
    /// Per-sample loss `[B]` on normalised latents; draws from the backend generator.
    fn loss(&self, x0: Tensor<B, 3>, y: Tensor<B, 1, Int>, cfg: &SitTrainConfig, device: &B::Device) -> Tensor<B, 1>;
    /// Writes an inference folder (`config.json` + `model.safetensors`).
    fn save_inference(model: &mut Self::InnerModule, cfg: &Self::Config, dir: &Path) -> Result<(), String>;
    /// Reads one back.
    fn load_inference(dir: &Path, device: &B::Device) -> Result<Self::InnerModule, String>;
}

impl<B: AutodiffBackend> TrainableGenerator<B> for Sit<B> {
    type Config = SitConfig;
    fn build(cfg: &SitConfig, device: &B::Device) -> Self {
        Sit::new(cfg, device)
    }
    fn init_for_training(&mut self, device: &B::Device) {
        init_for_training(self, device);
    }
    fn latent_shape(&self) -> [usize; 2] {
        Sit::latent_shape(self)
    }
    fn num_classes(&self) -> usize {
        Sit::num_classes(self)
    }
    fn loss(&self, x0: Tensor<B, 3>, y: Tensor<B, 1, Int>, cfg: &SitTrainConfig, device: &B::Device) -> Tensor<B, 1> {
        let [b, l, c] = x0.dims();
        let draws = LossDraws::sample(b, [l, c], cfg.sampling, true, device);
        si_loss(self, x0, y, cfg.path, cfg.sampling, cfg.class_dropout_prob, draws).per_sample
    }
    fn save_inference(model: &mut Sit<B::InnerBackend>, cfg: &SitConfig, dir: &Path) -> Result<(), String> {
        save_sit(model, cfg, dir).map_err(|e| e.to_string())
    }
    fn load_inference(dir: &Path, device: &B::Device) -> Result<Sit<B::InnerBackend>, String> {
        maetok_sit::load_sit::<B::InnerBackend>(dir, device).map(|m| m.0).map_err(|e| e.to_string())
    }
}

impl<B: AutodiffBackend> TrainableGenerator<B> for Dit<B> {
    type Config = DitConfig;
    fn build(cfg: &DitConfig, device: &B::Device) -> Self {
        Dit::new(cfg, device)
    }
    fn init_for_training(&mut self, device: &B::Device) {
        init_for_training(&mut self.net, device);
    }
    fn latent_shape(&self) -> [usize; 2] {
        self.net.latent_shape()
    }
    fn num_classes(&self) -> usize {
        self.net.num_classes()
    }
    fn loss(&self, x0: Tensor<B, 3>, y: Tensor<B, 1, Int>, cfg: &SitTrainConfig, device: &B::Device) -> Tensor<B, 1> {
        let [b, l, c] = x0.dims();
        let diffusion = training_diffusion(cfg.schedule);
        let steps: Vec<usize> = Tensor::<B::InnerBackend, 1>::random([b], Distribution::Uniform(0.0, 1000.0), device)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32")
            .into_iter()
            .map(|u| (u as usize).min(999))
            .collect();
        let noise = Tensor::<B, 3>::random([b, l, c], Distribution::Normal(0.0, 1.0), device);
        let drop: Tensor<B, 1, Bool> = Tensor::<B, 1>::random([b], Distribution::Uniform(0.0, 1.0), device).lower_elem(cfg.class_dropout_prob);
        let y = y.mask_fill(drop, self.net.null_class() as i64);
        diffusion.training_losses(x0, &steps, noise, |x, t| self.forward(x, t, y)).loss
    }
    fn save_inference(model: &mut Dit<B::InnerBackend>, cfg: &DitConfig, dir: &Path) -> Result<(), String> {
        maetok_dit::save_dit(model, cfg, dir).map_err(|e| e.to_string())
    }
    fn load_inference(dir: &Path, device: &B::Device) -> Result<Dit<B::InnerBackend>, String> {
        maetok_dit::load_dit::<B::InnerBackend>(dir, device).map(|m| m.0).map_err(|e| e.to_string())
    }
}

/// The 1000-step training diffusion of each schedule, built once (the tables are f64 host arrays).
fn training_diffusion(schedule: Schedule) -> &'static GaussianDiffusion {
    static TABLES: std::sync::OnceLock<[GaussianDiffusion; 2]> = std::sync::OnceLock::new();
    let t = TABLES.get_or_init(|| [Schedule::Linear, Schedule::Cosine].map(|s| GaussianDiffusion::new(s, 1000, "").expect("1000 steps")));
    &t[usize::from(schedule == Schedule::Cosine)]
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "C: Serialize + DeserializeOwned")]
struct TrainState<C> {
    step: usize,
    model: C,
    train: SitTrainConfig,
    losses: Vec<f32>,
}

/// A generator being trained: the online model (autodiff), its EMA and the optimiser.
pub struct LatentTrainer<B: AutodiffBackend, G: TrainableGenerator<B>>
where
    G::InnerModule: VisitParams<B::InnerBackend>,
{
    pub model: G,
    pub ema: G::InnerModule,
    optim: OptimizerAdaptor<AdamW, G, B>,
    pub model_config: G::Config,
    pub config: SitTrainConfig,
    /// Steps done.
    pub step: usize,
    /// Loss of every step done.
    pub losses: Vec<f32>,
    device: B::Device,
}

/// Training a SiT.
pub type SitTrainer<B> = LatentTrainer<B, Sit<B>>;
/// Training a DiT.
pub type DitTrainer<B> = LatentTrainer<B, Dit<B>>;

fn optimizer<B: AutodiffBackend, G: AutodiffModule<B>>(cfg: &SitTrainConfig) -> OptimizerAdaptor<AdamW, G, B> {
    AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(cfg.weight_decay as f32).init()
}

impl<B: AutodiffBackend, G: TrainableGenerator<B>> LatentTrainer<B, G>
where
    G::InnerModule: VisitParams<B::InnerBackend>,
{
    /// A fresh model with the reference's initialisation (seeded by `config.seed`).
    pub fn new(model_config: G::Config, config: SitTrainConfig, device: &B::Device) -> Self {
        <B as Backend>::seed(device, config.seed);
        let mut model = G::build(&model_config, device);
        model.init_for_training(device);
        let ema = model.valid();
        Self { model, ema, optim: optimizer(&config), model_config, config, step: 0, losses: Vec::new(), device: device.clone() }
    }

    /// One optimisation step on a batch drawn from `data`; returns the loss.
    pub fn step(&mut self, data: &LatentCache) -> Result<f32, SitTrainError> {
        let [l, c] = data.latent_shape();
        if [l, c] != self.model.latent_shape() {
            return Err(SitTrainError::Data(format!("the cache holds [{l}, {c}] latents, the model takes {:?}", self.model.latent_shape())));
        }
        let n = data.len();
        let bs = self.config.batch_size.min(n);
        if bs == 0 {
            return Err(SitTrainError::Data("the latent cache is empty".into()));
        }
        let step_seed = self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(self.step as u64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(step_seed);
        let idx = rand::seq::index::sample(&mut rng, n, bs);
        let (mut z, mut y) = (Vec::with_capacity(bs * l * c), Vec::with_capacity(bs));
        for i in idx.iter() {
            let label = data.label(i);
            if label >= self.model.num_classes() {
                return Err(SitTrainError::Data(format!("label {label} of latent {i} is out of range for a {}-class model", self.model.num_classes())));
            }
            let flip = rng.random::<bool>();
            z.extend(data.latent(i, flip).into_iter().map(|v| ((v as f64 - self.config.latent_mean) / self.config.latent_std) as f32));
            y.push(label as i64);
        }
        let x0 = Tensor::<B, 3>::from_data(TensorData::new(z, [bs, l, c]), &self.device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [bs]), &self.device);
        <B as Backend>::seed(&self.device, step_seed);
        let loss = self.model.loss(x0, y, &self.config, &self.device).mean();
        let value = loss.clone().into_scalar().elem::<f32>();
        if !value.is_finite() {
            return Err(SitTrainError::Data(format!("the loss became {value} at step {}", self.step)));
        }
        let grads = loss.backward();
        let (grads, _norm) = clipped_gradients(&mut self.model, &grads, self.config.grad_clip);
        // A module clone only shares the parameter tensors (no copy); the old value is replaced.
        self.model = self.optim.step(self.config.lr, self.model.clone(), grads);
        let decay = if self.step == 0 { 0.0 } else { self.config.ema_decay };
        let mut online = self.model.valid();
        ema_update(&mut self.ema, &mut online, decay, &["pos_embed"]);
        self.step += 1;
        self.losses.push(value);
        Ok(value)
    }

    /// Writes `dir/checkpoints/step-NNNNNNN/` (through a temporary folder and a rename) and
    /// points `dir/checkpoints/latest` at it.
    pub fn save_checkpoint(&mut self, dir: &Path) -> Result<PathBuf, SitTrainError> {
        let root = dir.join("checkpoints");
        let name = format!("step-{:07}", self.step);
        let fin = root.join(&name);
        let tmp = root.join(format!(".{name}.tmp"));
        let err = |path: &Path, msg: String| SitTrainError::Checkpoint { path: path.to_path_buf(), msg };
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| err(&tmp, e.to_string()))?;
        G::save_inference(&mut self.ema, &self.model_config, &tmp.join("ema")).map_err(|e| err(&tmp, e))?;
        // Record the latent normalisation beside the architecture, for the samplers.
        let cfg_path = tmp.join("ema/config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(|e| err(&cfg_path, e.to_string()))?).map_err(|e| err(&cfg_path, e.to_string()))?;
        cfg["latent_mean"] = self.config.latent_mean.into();
        cfg["latent_std"] = self.config.latent_std.into();
        write_atomic(&cfg_path, serde_json::to_string_pretty(&cfg).expect("json").as_bytes()).map_err(|e| err(&cfg_path, e.to_string()))?;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        self.model.clone().save_file(tmp.join("model"), &rec).map_err(|e| err(&tmp, e.to_string()))?;
        rec.record(self.optim.to_record(), tmp.join("optim")).map_err(|e| err(&tmp, e.to_string()))?;
        let state = TrainState { step: self.step, model: self.model_config.clone(), train: self.config.clone(), losses: self.losses.clone() };
        write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(&state).expect("json").as_bytes()).map_err(|e| err(&tmp, e.to_string()))?;
        let _ = std::fs::remove_dir_all(&fin);
        std::fs::rename(&tmp, &fin).map_err(|e| err(&fin, e.to_string()))?;
        write_atomic(&root.join("latest"), name.as_bytes()).map_err(|e| err(&root, e.to_string()))?;
        Ok(fin)
    }

    /// Resumes from `dir/checkpoints/latest`, or returns `None` if there is none.
    pub fn resume(dir: &Path, device: &B::Device) -> Result<Option<Self>, SitTrainError> {
        let root = dir.join("checkpoints");
        let Ok(name) = std::fs::read_to_string(root.join("latest")) else { return Ok(None) };
        let ck = root.join(name.trim());
        let err = |msg: String| SitTrainError::Checkpoint { path: ck.clone(), msg };
        let state: TrainState<G::Config> = serde_json::from_str(&std::fs::read_to_string(ck.join("state.json")).map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let model = G::build(&state.model, device).load_file(ck.join("model"), &rec, device).map_err(|e| err(format!("model.mpk: {e}")))?;
        let optim_rec = rec.load(ck.join("optim"), device).map_err(|e| err(format!("optim.mpk: {e}")))?;
        let optim = optimizer::<B, G>(&state.train).load_record(optim_rec);
        let ema = G::load_inference(&ck.join("ema"), device).map_err(err)?;
        Ok(Some(Self { model, ema, optim, model_config: state.model, config: state.train, step: state.step, losses: state.losses, device: device.clone() }))
    }
}
