//! Minimal MAETok autoencoder trainer: pixel (MSE) loss, AdamW, warmup + cosine learning rate,
//! no masking yet. Later work grows this into the full MAETok trainer (masking, auxiliary
//! targets, LPIPS, GAN, EMA).

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use maetok_tokenizer::MaeTok;

use crate::data::{images_to_tensor, ProceduralShapes};

/// Settings of [`train_autoencoder`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AeTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub weight_decay: f32,
    /// Linear warmup steps (from `lr/100`).
    pub warmup: usize,
    /// First dataset index used for training (evaluation uses indices below it).
    pub data_offset: u64,
}

impl Default for AeTrainConfig {
    fn default() -> Self {
        Self { steps: 400, batch_size: 16, lr: 1e-3, weight_decay: 1e-4, warmup: 20, data_offset: 1_000_000 }
    }
}

/// Learning rate at `step`: linear warmup from `lr/100`, then cosine decay to `lr/10`.
pub fn lr_at(cfg: &AeTrainConfig, step: usize) -> f64 {
    if step < cfg.warmup {
        let f = (step + 1) as f64 / cfg.warmup as f64;
        return cfg.lr * (0.01 + 0.99 * f);
    }
    let span = (cfg.steps - cfg.warmup).max(1) as f64;
    let t = ((step - cfg.warmup) as f64 / span).min(1.0);
    let min = cfg.lr * 0.1;
    min + 0.5 * (cfg.lr - min) * (1.0 + (std::f64::consts::PI * t).cos())
}

/// The trained model and the per-step losses.
pub struct AeTrainResult<B: AutodiffBackend> {
    pub model: MaeTok<B>,
    pub losses: Vec<f32>,
}

/// Trains `model` on the procedural dataset (batches of consecutive indices from
/// `data_offset`, so a run is reproducible). `on_step(step, loss)` is called after every step.
pub fn train_autoencoder<B: AutodiffBackend>(
    mut model: MaeTok<B>,
    data: &ProceduralShapes,
    cfg: &AeTrainConfig,
    device: &B::Device,
    mut on_step: impl FnMut(usize, f32),
) -> AeTrainResult<B>
where
    MaeTok<B>: AutodiffModule<B>,
{
    let mut optim =
        AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.95).with_epsilon(1e-8).with_weight_decay(cfg.weight_decay).init::<B, MaeTok<B>>();
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        let (imgs, _) = data.batch(cfg.data_offset + (step * cfg.batch_size) as u64, cfg.batch_size);
        let x = images_to_tensor::<B>(&imgs, device);
        let recon = model.reconstruct(x.clone()).expect("dataset images have the model size");
        let loss = (recon - x).powi_scalar(2).mean();
        let value = loss.clone().into_scalar().elem::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr_at(cfg, step), model, grads);
        losses.push(value);
        on_step(step, value);
    }
    AeTrainResult { model, losses }
}
