//! The MAETok tokenizer trainer (spec §5.6 step order): per step
//! generator loss → backward → clip → AdamW(G) → EMA → discriminator loss (same x̂, detached) →
//! backward → clip → AdamW(D), both at the schedule's rate for the step.
//!
//! Every random draw of step `s` (mask ratio and patch order, LPIPS dropout, DiffAugment, the
//! discriminator's crop) comes from generators seeded by `(seed, s)`, and the data order from
//! `(seed, epoch)` ([`crate::data::TrainImages`]), so a run resumed from a checkpoint continues
//! bit for bit. The reference seeds neither its masking nor its crops (spec §8.3 item 24).
//!
//! **Several devices** ([`crate::parallel`]): the trainer is built once and [`TokenizerTrainer::fork`]ed
//! per peer; each peer's [`TokenizerTrainer::step`] gets its rows of the global batch. Every peer
//! draws the whole batch's random numbers and keeps its rows, the discriminator heads see the
//! gathered global batch (BatchNorm statistics, logits, LeCam anchors as on one device), λ comes
//! from all-reduced last-layer gradients ([`super::step`] explains), and both gradients are
//! averaged over the peers before clipping. So `W` peers train the weights one device trains,
//! within float rounding. Every peer keeps its own EMA (the same on all); peer 0 writes.
//!
//! Checkpoint folder `checkpoints/step-NNNNNNN/` (written to a temporary folder, then renamed;
//! `checkpoints/latest` names the newest complete one): `model.mpk`, `ema.mpk`, `disc.mpk`
//! (Burn records: the MaskAE model, its EMA, the discriminator with its BatchNorm and
//! spectral-norm state), `optim_g_*.mpk`, `optim_d_*.mpk`, `state.json` (step, configs, LeCam
//! anchors) and `ema/`, the EMA autoencoder as a Hugging Face folder (`config.json` +
//! `model.safetensors`, PyTorch names) that `reconstruct`, `cache_latents` and the samplers load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use maetok_nn::ema::ema_update;
use maetok_targets::disc::diff_aug::DiffAugError;
use maetok_targets::disc::LeCam;
use maetok_targets::{DinoDisc, DiscConfig, Lpips};
use maetok_tokenizer::{save_pretrained, AuxConfig, ConfigError, MaskAe, MaskError, ModelArgs, PretrainedError, TokenMask, Tokenizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{latest_checkpoint, write_checkpoint, CheckpointIoError};
use crate::grad_clip::module_gradients;
use crate::in_place;
use crate::parallel::{all_reduce_grads, ParallelError, Peer};

use super::aux::{AuxTargetError, AuxTargets, AuxTeachers};
use super::config::{Stage, TokenizerTrainConfig};
use super::optim::GroupedAdamW;
use super::step::{Shard, StepError, TokenizerLoss};

/// The frozen networks of the objective, given again on resume (not part of a checkpoint).
pub struct LossNets<B: AutodiffBackend> {
    /// LPIPS (VGG); `None` trains without the perceptual term.
    pub lpips: Option<Lpips<B>>,
    /// The targets of the auxiliary decoders (run without autodiff).
    pub teachers: AuxTeachers<B::InnerBackend>,
}

impl<B: AutodiffBackend> LossNets<B> {
    /// A copy on `device` (one per peer of a parallel run).
    pub fn fork(&self, device: &B::Device) -> Self {
        LossNets {
            lpips: self.lpips.clone().map(|l| l.fork(device)),
            teachers: AuxTeachers {
                hog: self.teachers.hog.clone(),
                dino: self.teachers.dino.clone().map(|v| v.to_device(device)),
                clip: self.teachers.clip.clone().map(|v| v.to_device(device)),
            },
        }
    }
}

/// Errors of the trainer; messages name the file, key or value.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("DiffAugment policy: {0}")]
    DiffAug(#[from] DiffAugError),
    #[error("token masking: {0}")]
    Mask(#[from] MaskError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Targets(#[from] AuxTargetError),
    #[error("the {0} auxiliary decoder is switched on (aux_{0}_dec) but no {0} teacher was given: give its weights or switch it off")]
    MissingTeacher(&'static str),
    #[error(
        "SoftVQ's REPA alignment is on (repa: true) but no DINOv2 teacher (repa_model) was given: give its weights or set repa: false"
    )]
    MissingRepaTeacher,
    #[error("REPA: {0}")]
    Repa(String),
    #[error("the batch holds {got}×{got} images, the model takes {want}×{want}")]
    ImageSize { got: usize, want: usize },
    #[error("the loss became {value} at step {step}")]
    NonFinite { value: f64, step: u64 },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error(transparent)]
    Export(#[from] PretrainedError),
    #[error(transparent)]
    Parallel(#[from] ParallelError),
}

impl From<CheckpointIoError> for TrainError {
    fn from(e: CheckpointIoError) -> Self {
        Self::Checkpoint { path: e.path, msg: e.msg }
    }
}

/// What one step did (one JSON line of the training log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Steps done after this one (1-based step number).
    pub step: u64,
    pub lr: f64,
    /// The mask ratio drawn (none in the decoder fine-tuning stage).
    pub mask_ratio: Option<f64>,
    pub rec: f64,
    pub perceptual: f64,
    pub perceptual_weight: f64,
    /// Auxiliary losses by target (`hog`, `dino`, `clip`).
    pub aux: BTreeMap<String, f64>,
    /// Generator GAN loss and λ (when the discriminator ran).
    pub g_loss: Option<f64>,
    pub lambda: Option<f64>,
    pub disc_weight: f64,
    /// `L_G`.
    pub total: f64,
    /// Tokenizer gradient norm before clipping.
    pub grad_norm: f64,
    /// Discriminator loss, its hinge part, LeCam penalty and gradient norm (when it ran).
    pub d_loss: Option<f64>,
    pub d_hinge: Option<f64>,
    pub lecam: Option<f64>,
    pub d_grad_norm: Option<f64>,
    pub seconds: f64,
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    args: ModelArgs,
    config: TokenizerTrainConfig,
    disc: Option<DiscConfig>,
    lecam: LeCam,
}

/// A MAETok tokenizer being trained.
pub struct TokenizerTrainer<B: AutodiffBackend> {
    pub model: MaskAe<B>,
    pub ema: MaskAe<B::InnerBackend>,
    pub disc: Option<DinoDisc<B>>,
    pub lecam: LeCam,
    optim_g: GroupedAdamW<B, MaskAe<B>>,
    optim_d: GroupedAdamW<B, DinoDisc<B>>,
    /// The model config (written with every export).
    pub args: ModelArgs,
    disc_config: Option<DiscConfig>,
    pub config: TokenizerTrainConfig,
    loss: TokenizerLoss,
    /// Steps done.
    pub step: u64,
    /// This trainer's place in a data-parallel run ([`Peer::SINGLE`] on one device).
    pub peer: Peer,
    device: B::Device,
}

fn step_seed(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(step).rotate_left(29) ^ 0x7F4A_7C15
}

/// The auxiliary decoders of a stage: none when fine-tuning the decoder.
fn stage_aux(args: &ModelArgs, stage: Stage, origin: &str) -> Result<AuxConfig, ConfigError> {
    let mut aux = args.resolve_aux(origin)?;
    if stage == Stage::DecoderFinetune {
        (aux.hog, aux.dino, aux.clip) = (None, None, None);
    }
    Ok(aux)
}

/// Freezes what the decoder fine-tuning stage keeps fixed: the encoder (with its latent tokens,
/// mask token and RoPE frequencies) and `quant_conv`.
fn freeze_encoder<B: AutodiffBackend>(mut model: MaskAe<B>, stage: Stage) -> MaskAe<B> {
    if stage == Stage::DecoderFinetune {
        model.ae.encoder = model.ae.encoder.no_grad();
        model.ae.quant_conv = model.ae.quant_conv.no_grad();
    }
    model
}

impl<B: AutodiffBackend> TokenizerTrainer<B> {
    /// A freshly initialised model (seeded by `config.seed`) for `args`; `origin` names the
    /// config in messages. `disc`: the discriminator and its shape (`None`: no GAN term).
    pub fn new(
        args: ModelArgs,
        origin: &str,
        config: TokenizerTrainConfig,
        disc: Option<(DinoDisc<B>, DiscConfig)>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let model = Self::fresh_model(&args, origin, &config, device)?;
        Self::with_model(model, args, origin, config, disc, device)
    }

    /// Starts from given weights, e.g. the stage-1 autoencoder for [`Stage::DecoderFinetune`]
    /// (the auxiliary decoders `args` switches on are freshly initialised in stage 1).
    pub fn from_autoencoder(
        ae: Tokenizer<B>,
        args: ModelArgs,
        origin: &str,
        config: TokenizerTrainConfig,
        disc: Option<(DinoDisc<B>, DiscConfig)>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let mut model = Self::fresh_model(&args, origin, &config, device)?;
        model.ae = ae;
        Self::with_model(model, args, origin, config, disc, device)
    }

    /// The stage's MaskAE model, initialised from `config.seed`.
    fn fresh_model(args: &ModelArgs, origin: &str, config: &TokenizerTrainConfig, device: &B::Device) -> Result<MaskAe<B>, TrainError> {
        let cfg = args.resolve(origin)?;
        let aux = stage_aux(args, config.stage, origin)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        Ok(crate::seeded::seeded(|| {
            <B as Backend>::seed(device, config.seed);
            MaskAe::new(&cfg, &aux, &mut rng, device)
        }))
    }

    fn with_model(
        model: MaskAe<B>,
        args: ModelArgs,
        origin: &str,
        config: TokenizerTrainConfig,
        disc: Option<(DinoDisc<B>, DiscConfig)>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let aux = stage_aux(&args, config.stage, origin)?;
        let c = &model.ae.config;
        if !aux.is_empty() && aux.loss_mask && c.enc_grid() != c.dec_grid() {
            return Err(TrainError::Config(ConfigError::Invalid {
                path: origin.to_string(),
                msg: format!(
                    "aux_loss_mask averages the auxiliary losses over the masked encoder patches, which needs the decoder's token grid to be the encoder's (enc_patch_size {} vs dec_patch_size {}); use one patch size or set aux_loss_mask: false",
                    c.enc_patch, c.dec_patch
                ),
            }));
        }
        let loss = config.loss(aux.loss_mask)?;
        let model = freeze_encoder(model, config.stage);
        // Burn initialises parameters lazily, and a clone of a lazy parameter draws its own
        // values: materialise everything now, from the seeded generator, before the EMA copy.
        let (disc, disc_config) = disc.map_or((None, None), |(d, c)| (Some(d), Some(c)));
        let ema = crate::seeded::seeded(|| {
            <B as Backend>::seed(device, config.seed ^ 0xA5A5_5A5A);
            materialize(&model);
            let ema = model.valid();
            if let Some(d) = &disc {
                materialize(d);
            }
            ema
        });
        Ok(Self {
            model,
            ema,
            disc,
            lecam: LeCam::default(),
            optim_g: GroupedAdamW::new(config.weight_decay, config.betas, config.grad_clip),
            optim_d: GroupedAdamW::new(config.weight_decay, config.betas, config.grad_clip),
            args,
            disc_config,
            loss,
            config,
            step: 0,
            peer: Peer::SINGLE,
            device: device.clone(),
        })
    }

    /// A copy of this trainer for `peer` on `device`: the same parameters (and parameter ids),
    /// EMA, discriminator (with its BatchNorm and spectral-norm state), optimiser states, LeCam
    /// anchors and step.
    pub fn fork(&self, peer: Peer, device: &B::Device) -> Self {
        Self {
            model: self.model.clone().fork(device),
            ema: self.ema.clone().to_device(device),
            disc: self.disc.clone().map(|d| d.fork(device)),
            lecam: self.lecam,
            optim_g: self.optim_g.fork(),
            optim_d: self.optim_d.fork(),
            args: self.args.clone(),
            disc_config: self.disc_config.clone(),
            config: self.config.clone(),
            loss: self.loss.clone(),
            step: self.step,
            peer,
            device: device.clone(),
        }
    }

    /// The device the model lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The mask-ratio range of this run (`None`: no masking).
    pub fn mask_range(&self) -> Option<(f64, f64)> {
        let (lo, hi) = (self.args.enc_token_drop, self.args.enc_token_drop_max);
        (self.config.stage == Stage::Full && lo > 0.0).then_some((lo, hi.max(lo)))
    }

    /// One training step on `images` `[B, 3, S, S]` in [-1, 1]: on a peer of a parallel run,
    /// its rows `peer.shard(B·world)` of the global batch (every peer calls it, with batches of
    /// the same size); the log holds the global batch's values on every peer.
    pub fn step(&mut self, images: Tensor<B, 4>, nets: &LossNets<B>) -> Result<StepLog, TrainError> {
        let start = std::time::Instant::now();
        let [b, _, h, w] = images.dims();
        let want = self.model.ae.config.image_size;
        if (h, w) != (want, want) {
            return Err(TrainError::ImageSize { got: h.max(w), want });
        }
        for (name, on, given) in [
            ("dino", self.model.dino.is_some(), nets.teachers.dino.is_some()),
            ("clip", self.model.clip.is_some(), nets.teachers.clip.is_some()),
            ("hog", self.model.hog.is_some(), nets.teachers.hog.is_some()),
        ] {
            if on && !given {
                return Err(TrainError::MissingTeacher(name));
            }
        }
        if let Some(r) = self.model.softvq.and_then(|s| s.repa) {
            let teacher = nets.teachers.dino.as_ref().ok_or(TrainError::MissingRepaTeacher)?;
            let p = teacher.patch_embed.patch;
            let (n, l) = ((h / p) * (w / p), self.model.ae.config.latent_tokens);
            if r.align == maetok_tokenizer::RepaAlign::Repeat && !n.is_multiple_of(l) {
                return Err(TrainError::Repa(format!(
                    "repa_align 'repeat' needs the teacher's {n} tokens to be a multiple of the {l} latent tokens"
                )));
            }
        }
        let t = self.step + 1;
        let seed = step_seed(self.config.seed, self.step);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let parallel = self.peer.world > 1;
        // On one device the batch is whatever was given; peers must hold equal shares of the
        // configured global batch (checked before any collective call, so no peer waits).
        let global = if parallel { self.config.batch_size } else { b };
        if !global.is_multiple_of(self.peer.world) {
            return Err(ParallelError::UnevenBatch { batch: global, world: self.peer.world }.into());
        }
        let shard = Shard::of(self.peer, global, seed);
        if b != shard.rows.len() {
            return Err(StepError::ShardSize { got: b, rows: shard.rows, global }.into());
        }
        // Every peer draws the whole batch's mask and keeps its rows.
        let grid = self.model.ae.config.enc_grid();
        let mask = self
            .mask_range()
            .map(|(lo, hi)| TokenMask::draw(shard.global, grid * grid, lo, hi, &mut rng).map(|m| m.rows(shard.rows.clone())))
            .transpose()?;
        let repa = self.model.projection.is_some();
        let wanted = [self.model.hog.is_some(), self.model.dino.is_some() || repa, self.model.clip.is_some()];
        let targets = lift(nets.teachers.targets_for(images.clone().inner(), wanted)?);

        let use_disc = self.disc.is_some() && (self.config.disc_before_start || t >= self.config.gan.disc_start);
        let disc = if use_disc { self.disc.as_mut() } else { None };
        let mut g = self.loss.generator_step(
            &self.model,
            nets.lpips.as_ref(),
            disc,
            t,
            images.clone(),
            mask.as_ref(),
            &targets,
            &shard,
            &mut rng,
        )?;
        // The global loss: every peer stops here together.
        if !g.total.is_finite() {
            return Err(TrainError::NonFinite { value: g.total, step: t });
        }
        let lr = self.config.schedule.lr(self.step);
        let mut grads = module_gradients(&mut self.model, &mut g.grads);
        if parallel {
            grads = all_reduce_grads::<B, _>(self.peer, &mut self.model, grads)?;
        }
        let grad_norm = in_place::update(&mut self.model, |m| self.optim_g.step_gradients(lr, m, grads));
        let decay = if self.step == 0 { 0.0 } else { self.config.ema_decay };
        ema_update(&mut self.ema, &mut self.model.valid(), decay, &[]);

        let mut log = StepLog {
            step: t,
            lr,
            mask_ratio: mask.as_ref().map(|m| m.ratio),
            rec: g.rec,
            perceptual: g.perceptual,
            perceptual_weight: g.perceptual_weight,
            aux: g.aux.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            g_loss: g.gan.as_ref().map(|x| x.g_loss),
            lambda: g.gan.as_ref().map(|x| x.lambda),
            disc_weight: g.disc_weight,
            total: g.total,
            grad_norm,
            d_loss: None,
            d_hinge: None,
            lecam: None,
            d_grad_norm: None,
            seconds: 0.0,
        };
        if let (true, Some(disc)) = (use_disc, self.disc.as_mut()) {
            let mut d = self.loss.discriminator_step(disc, &mut self.lecam, t, images, g.recon, &shard, &mut rng)?;
            if !d.total.is_finite() {
                return Err(TrainError::NonFinite { value: d.total, step: t });
            }
            // The heads ran on the gathered global batch, so every peer already holds the whole
            // gradient; averaging keeps the peers' heads identical bit for bit whatever the
            // backend's kernels do.
            let mut grads = module_gradients(disc, &mut d.grads);
            if parallel {
                grads = all_reduce_grads::<B, _>(self.peer, disc, grads)?;
            }
            let d_norm = in_place::update(disc, |d| self.optim_d.step_gradients(lr, d, grads));
            (log.d_loss, log.d_hinge, log.lecam, log.d_grad_norm) = (Some(d.total), Some(d.hinge), Some(d.lecam), Some(d_norm));
        }
        self.step += 1;
        log.seconds = start.elapsed().as_secs_f64();
        Ok(log)
    }

    /// Writes `dir/checkpoints/step-NNNNNNN/` (through a temporary folder and a rename, see
    /// [`crate::checkpoint`]), points `dir/checkpoints/latest` at it, and removes older
    /// checkpoints beyond the newest `keep`.
    pub fn save_checkpoint(&mut self, dir: &Path, keep: usize) -> Result<PathBuf, TrainError> {
        let state = TrainState {
            step: self.step,
            args: self.args.clone(),
            config: self.config.clone(),
            disc: self.disc_config.clone(),
            lecam: self.lecam,
        };
        write_checkpoint(dir, self.step, &state, Some(keep), |tmp| {
            let err = |msg: String| TrainError::Checkpoint { path: tmp.to_path_buf(), msg };
            self.export_ema(&tmp.join("ema"))?;
            let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
            self.model.clone().save_file(tmp.join("model"), &rec).map_err(|e| err(format!("model: {e}")))?;
            self.ema.clone().save_file(tmp.join("ema"), &rec).map_err(|e| err(format!("ema: {e}")))?;
            self.optim_g.save(tmp, "optim_g").map_err(|e| err(format!("optim_g: {e}")))?;
            if let Some(d) = &self.disc {
                d.clone().save_file(tmp.join("disc"), &rec).map_err(|e| err(format!("disc: {e}")))?;
                self.optim_d.save(tmp, "optim_d").map_err(|e| err(format!("optim_d: {e}")))?;
            }
            Ok(())
        })
    }

    /// Writes the EMA autoencoder as a Hugging Face model folder (`config.json` +
    /// `model.safetensors` in the PyTorch layout of `AEModel`).
    pub fn export_ema(&self, dir: &Path) -> Result<(), TrainError> {
        let mut ae = self.ema.ae.clone();
        save_pretrained(&mut ae, &self.args, dir)?;
        Ok(())
    }

    /// Resumes from `dir/checkpoints/latest`, or returns `None` when there is none. The
    /// discriminator's trunk and heads come from the checkpoint.
    pub fn resume(dir: &Path, device: &B::Device) -> Result<Option<Self>, TrainError> {
        let Some((ck, state)) = latest_checkpoint::<TrainState>(dir)? else { return Ok(None) };
        let err = |msg: String| TrainError::Checkpoint { path: ck.clone(), msg };
        let origin = ck.join("state.json").display().to_string();
        let cfg = state.args.resolve(&origin)?;
        let aux = stage_aux(&state.args, state.config.stage, &origin)?;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let model = MaskAe::<B>::new(&cfg, &aux, &mut rng, device)
            .load_file(ck.join("model"), &rec, device)
            .map_err(|e| err(format!("model.mpk: {e}")))?;
        let ema = MaskAe::<B::InnerBackend>::new(&cfg, &aux, &mut rng, device)
            .load_file(ck.join("ema"), &rec, device)
            .map_err(|e| err(format!("ema.mpk: {e}")))?;
        let disc = match &state.disc {
            Some(c) => {
                let mut d =
                    DinoDisc::<B>::new(c, device).load_file(ck.join("disc"), &rec, device).map_err(|e| err(format!("disc.mpk: {e}")))?;
                d.backbone = d.backbone.no_grad();
                Some((d, c.clone()))
            }
            None => None,
        };
        let mut t = Self::with_model(model, state.args, &origin, state.config, disc, device)?;
        t.ema = ema;
        t.lecam = state.lecam;
        t.step = state.step;
        t.optim_g = t.optim_g.load(&ck, "optim_g", device).map_err(|e| err(format!("optim_g: {e}")))?;
        if t.disc.is_some() {
            t.optim_d = t.optim_d.load(&ck, "optim_d", device).map_err(|e| err(format!("optim_d: {e}")))?;
        }
        Ok(Some(t))
    }
}

struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Initialises every lazy parameter of `module` in place.
fn materialize<B: Backend, M: Module<B>>(module: &M) {
    module.visit(&mut Materialize);
}

/// Targets computed without autodiff, as constants of the autodiff graph.
fn lift<B: AutodiffBackend>(t: AuxTargets<B::InnerBackend>) -> AuxTargets<B> {
    AuxTargets { hog: t.hog.map(Tensor::from_inner), dino: t.dino.map(Tensor::from_inner), clip: t.clip.map(Tensor::from_inner) }
}
