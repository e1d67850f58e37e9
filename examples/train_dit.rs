//! Train a DiT (DDPM, learned variance, hybrid MSE + VB loss) on cached MAETok latents.
//!
//! ```text
//! train_dit --cache latents/maetok-b-128 --preset DiT-XL --out runs/dit-xl --schedule cosine \
//!     --batch-size 256 --tokenizer maetok-b-128/ --backend cuda
//! ```
//! Re-running with the same `--out` resumes exactly; `checkpoints/step-N/ema/` is a model folder
//! for `sample_dit`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use maetok::sampler::Schedule;
use maetok::train::data::LatentCache;
use maetok::train::{GeneratorTrainConfig, Objective};
use maetok::train_generator::{train_generator, Normalisation, TrainGeneratorArgs};

#[derive(Clone, Copy, ValueEnum)]
enum CliSchedule {
    Linear,
    Cosine,
}

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    cache: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// DiT-S, DiT-B, DiT-L, DiT-SL or DiT-XL.
    #[arg(long, default_value = "DiT-B")]
    preset: String,
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long)]
    hidden_size: Option<usize>,
    #[arg(long)]
    num_heads: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    #[arg(long, value_enum, default_value_t = CliSchedule::Linear)]
    schedule: CliSchedule,
    #[arg(long, default_value_t = 10000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.9999)]
    ema_decay: f64,
    /// Global gradient-norm clip (0: none, as the reference).
    #[arg(long, default_value_t = 0.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 0.1)]
    cfg_prob: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 5000)]
    checkpoint_every: usize,
    #[arg(long, default_value_t = 5000)]
    sample_every: usize,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Latent normalisation: the tokenizer config's vq_mean/vq_std (the reference) or the cached
    /// latents' own statistics (for tokenizers whose config leaves them at 0/1).
    #[arg(long, value_enum, default_value_t = LatentStats::Config)]
    latent_stats: LatentStats,
    /// ndarray | wgpu | cuda
    #[arg(long, default_value = "ndarray")]
    backend: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LatentStats {
    Config,
    Data,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let c = Cli::parse();
    let [l, ch] = LatentCache::open(&c.cache)?.latent_shape();
    let mut model = maetok::dit::preset(&c.preset, l, ch)?;
    if let Some(d) = c.depth {
        model.depth = d;
    }
    if let Some(h) = c.hidden_size {
        model.hidden_size = h;
    }
    if let Some(h) = c.num_heads {
        model.num_heads = h;
    }
    model.num_classes = c.num_classes;
    model.validate()?;
    let train = GeneratorTrainConfig {
        batch_size: c.batch_size,
        lr: c.lr,
        ema_decay: c.ema_decay,
        grad_clip: (c.grad_clip > 0.0).then_some(c.grad_clip),
        objective: Objective::Diffusion {
            schedule: match c.schedule {
                CliSchedule::Linear => Schedule::Linear,
                CliSchedule::Cosine => Schedule::Cosine,
            },
        },
        class_dropout_prob: c.cfg_prob,
        seed: c.seed,
        ..Default::default()
    };
    let args = TrainGeneratorArgs {
        cache: c.cache,
        out: c.out,
        model,
        train,
        steps: c.steps,
        checkpoint_every: c.checkpoint_every,
        sample_every: c.sample_every,
        tokenizer: c.tokenizer,
        normalisation: match c.latent_stats {
            LatentStats::Config => Normalisation::TokenizerConfig,
            LatentStats::Data => Normalisation::Data,
        },
        progress: true,
    };
    let s = train_generator(args, &c.backend)?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
