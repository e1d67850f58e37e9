//! The command-line flags that `train_sit` and `train_dit` share (clap), and how they become a
//! [`TrainGeneratorArgs`]: each example adds only its preset default and its objective.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use maetok_generator::LatentTransformerConfig;
use maetok_train::data::LatentCache;
use maetok_train::{GeneratorTrainConfig, Objective};

use crate::parallel_cli::{Layout, ParallelFlags};
use crate::train_generator::{Normalisation, TrainGeneratorArgs};

/// Where the latent normalisation comes from.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LatentStats {
    /// The tokenizer config's vq_mean / vq_std recorded in the cache (the reference).
    Config,
    /// The cached latents' own mean and standard deviation (for tokenizers whose config leaves
    /// them at 0 / 1).
    Data,
}

/// Flags of every latent-generator trainer.
#[derive(Debug, Args)]
pub struct TrainFlags {
    /// The latent cache written by `cache_latents`.
    #[arg(long)]
    pub cache: PathBuf,
    /// Run folder; re-running with the same folder resumes exactly.
    #[arg(long)]
    pub out: PathBuf,
    /// A generator config.json instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the preset's depth / width / heads (for small runs).
    #[arg(long)]
    pub depth: Option<usize>,
    #[arg(long)]
    pub hidden_size: Option<usize>,
    #[arg(long)]
    pub num_heads: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    pub num_classes: usize,
    #[arg(long, default_value_t = 10000)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9999)]
    pub ema_decay: f64,
    /// Label dropout probability (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    pub cfg_prob: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 5000)]
    pub checkpoint_every: usize,
    #[arg(long, default_value_t = 5000)]
    pub sample_every: usize,
    /// Tokenizer folder, for sample grids.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LatentStats::Config)]
    pub latent_stats: LatentStats,
    /// ndarray | flex | wgpu | cuda (flex, wgpu and cuda need the cargo feature of that name);
    /// default ndarray, or the backend of --devices.
    #[arg(long)]
    pub backend: Option<String>,
    #[command(flatten)]
    pub parallel: ParallelFlags,
    /// CPU threads for every pool: rayon, matrixmultiply, OpenBLAS if built in (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl TrainFlags {
    /// The architecture: `--config`, else `preset(name, tokens, channels)` on the cache's latent
    /// shape, with the size overrides applied and checked.
    pub fn model(
        &self,
        preset_name: &str,
        preset: impl Fn(&str, usize, usize) -> Result<LatentTransformerConfig>,
    ) -> Result<LatentTransformerConfig> {
        let [l, c] = LatentCache::open(&self.cache)?.latent_shape();
        let mut model = match &self.config {
            Some(p) => LatentTransformerConfig::from_file(p)?,
            None => preset(preset_name, l, c)?,
        };
        if let Some(d) = self.depth {
            model.depth = d;
        }
        if let Some(h) = self.hidden_size {
            model.hidden_size = h;
            if model.decoder_hidden_size.is_some() {
                model.decoder_hidden_size = Some(h);
            }
        }
        if let Some(h) = self.num_heads {
            model.num_heads = h;
        }
        model.num_classes = self.num_classes;
        model.validate()?;
        Ok(model)
    }

    /// The backend and devices (`--backend`, `--devices` and the multi-machine flags).
    pub fn layout(&self) -> Result<Layout> {
        self.parallel.layout(self.backend.as_deref())
    }

    /// The run: `model` trained with `objective` on `layout`, clipping the global gradient norm
    /// at `grad_clip` (none when ≤ 0).
    pub fn into_args(self, model: LatentTransformerConfig, objective: Objective, grad_clip: f64, layout: Layout) -> TrainGeneratorArgs {
        let train = GeneratorTrainConfig {
            batch_size: self.batch_size,
            lr: self.lr,
            ema_decay: self.ema_decay,
            grad_clip: (grad_clip > 0.0).then_some(grad_clip),
            objective,
            class_dropout_prob: self.cfg_prob,
            seed: self.seed,
            ..Default::default()
        };
        TrainGeneratorArgs {
            cache: self.cache,
            out: self.out,
            model,
            train,
            steps: self.steps,
            checkpoint_every: self.checkpoint_every,
            sample_every: self.sample_every,
            tokenizer: self.tokenizer,
            normalisation: match self.latent_stats {
                LatentStats::Config => Normalisation::TokenizerConfig,
                LatentStats::Data => Normalisation::Data,
            },
            progress: true,
            devices: layout.indices,
            world: layout.world,
        }
    }
}
