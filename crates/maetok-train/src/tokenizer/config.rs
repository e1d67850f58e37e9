//! Settings of the tokenizer trainer (spec §5), with the reference recipe as defaults.

use maetok_targets::disc::diff_aug::DiffAugError;
use maetok_targets::disc::{DiffAugPolicy, GanWeights};
use serde::{Deserialize, Serialize};

use super::schedule::CosineWarmup;
use super::step::TokenizerLoss;

/// Which stage of MAETok's recipe a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Stage 1: token masking (the model config's `enc_token_drop`…`enc_token_drop_max`), the
    /// auxiliary decoders, pixel + LPIPS + GAN losses; everything trains.
    Full,
    /// Stage 2 (paper §3.3; the reference has no implementation, spec §5.8): encoder, latent
    /// tokens and `quant_conv` frozen, no masking, no auxiliary decoders; the pixel decoder (with
    /// `post_quant_conv` and `to_pixel`) trains with pixel + LPIPS + GAN losses.
    DecoderFinetune,
}

/// Everything a tokenizer run needs besides the model config (stored in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenizerTrainConfig {
    pub stage: Stage,
    pub batch_size: usize,
    /// Learning rate of the generator and of the discriminator (each its own, equal schedule).
    pub schedule: CosineWarmup,
    /// AdamW weight decay on tensors of ≥ 2 dimensions that are not biases (the yaml's intent,
    /// 1e-4); 0 gives the plain Adam that the public script runs.
    pub weight_decay: f64,
    /// Adam's β₁, β₂ (the reference: 0.9, 0.95).
    pub betas: [f64; 2],
    /// Global gradient-norm clip of the tokenizer and of the discriminator (the reference: 1).
    pub grad_clip: Option<f64>,
    /// EMA decay per generator step (the reference: 0.9999; the EMA starts equal to the model).
    pub ema_decay: f64,
    /// Weights and switch-on steps of the perceptual and adversarial terms.
    pub gan: GanWeights,
    /// DiffAugment policy of the discriminator inputs (`None`: off) and its probability.
    pub diff_aug: Option<String>,
    pub diff_aug_prob: f64,
    /// LPIPS with its dropout active (the reference's train mode).
    pub lpips_dropout: bool,
    /// The discriminator's random 224-crop (probability ½) instead of always resizing.
    pub disc_random_crop: bool,
    /// Run the discriminator from step 1 as the reference does (its loss weighted by 0 before
    /// `disc_start`, but its BatchNorm statistics, spectral-norm vectors, LeCam anchors and the
    /// logged λ move). `false` skips it until `disc_start`, which saves its cost for those steps.
    pub disc_before_start: bool,
    /// Seeds the initialisation, every per-step draw and the data order.
    pub seed: u64,
}

impl Default for TokenizerTrainConfig {
    /// The reference recipe at batch 256 (fork yaml: lr 5e-5), one epoch of 5,004 steps being
    /// ImageNet at that batch: 2 warm-up epochs of 200.
    fn default() -> Self {
        Self {
            stage: Stage::Full,
            batch_size: 256,
            schedule: CosineWarmup::reference(5e-5, 5004, 200, 2),
            weight_decay: 1e-4,
            betas: [0.9, 0.95],
            grad_clip: Some(1.0),
            ema_decay: 0.9999,
            gan: GanWeights::default(),
            diff_aug: Some("color,translation,cutout_0.2".into()),
            diff_aug_prob: 0.5,
            lpips_dropout: true,
            disc_random_crop: true,
            disc_before_start: true,
            seed: 42,
        }
    }
}

impl TokenizerTrainConfig {
    /// The loss settings; `aux_loss_mask` comes from the model config.
    pub fn loss(&self, aux_masked_only: bool) -> Result<TokenizerLoss, DiffAugError> {
        Ok(TokenizerLoss {
            gan: self.gan.clone(),
            diff_aug: self.diff_aug.as_deref().map(|p| DiffAugPolicy::parse(p, self.diff_aug_prob)).transpose()?,
            cr_aug: DiffAugPolicy::strong(),
            lpips_dropout: self.lpips_dropout,
            disc_random_crop: self.disc_random_crop,
            aux_masked_only,
        })
    }
}
