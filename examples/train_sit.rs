//! Train a SiT on cached MAETok latents (written by `cache_latents`).
//!
//! ```text
//! train_sit --cache latents/maetok-b-128 --preset SiT-XL --out runs/sit-xl --steps 400000 \
//!     --batch-size 256 --weighting lognormal --tokenizer maetok-b-128/ --backend cuda
//! ```
//! Re-running with the same `--out` resumes exactly. The EMA model of each checkpoint
//! (`runs/.../checkpoints/step-N/ema/`) is a model folder for `sample_sit`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use maetok::generator::LatentTransformerConfig;
use maetok::sampler::{PathType, TimeSampling};
use maetok::train::data::LatentCache;
use maetok::train::{GeneratorTrainConfig, Objective};
use maetok::train_generator::{train_generator, Normalisation, TrainGeneratorArgs};

#[derive(Clone, Copy, ValueEnum)]
enum Weighting {
    Uniform,
    Lognormal,
}

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    cache: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// SiT-S, SiT-B, SiT-L or SiT-XL (or give --config).
    #[arg(long, default_value = "SiT-B")]
    preset: String,
    /// A SiT config.json instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the preset's depth / width / heads (for small runs).
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long)]
    hidden_size: Option<usize>,
    #[arg(long)]
    num_heads: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    #[arg(long, default_value_t = 10000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.9999)]
    ema_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    #[arg(long, default_value = "linear")]
    path_type: String,
    #[arg(long, value_enum, default_value_t = Weighting::Uniform)]
    weighting: Weighting,
    #[arg(long, default_value_t = 0.1)]
    cfg_prob: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 5000)]
    checkpoint_every: usize,
    #[arg(long, default_value_t = 5000)]
    sample_every: usize,
    /// Tokenizer folder, for sample grids.
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
    let mut model = match &c.config {
        Some(p) => LatentTransformerConfig::from_file(p)?,
        None => maetok::sit::preset(&c.preset, l, ch)?,
    };
    if let Some(d) = c.depth {
        model.depth = d;
    }
    if let Some(h) = c.hidden_size {
        model.hidden_size = h;
        model.decoder_hidden_size = Some(h);
    }
    if let Some(h) = c.num_heads {
        model.num_heads = h;
    }
    model.num_classes = c.num_classes;
    model.validate()?;
    anyhow::ensure!(!model.learns_sigma(), "the config has learn_sigma = true (a DiT): train it with train_dit");
    let path = match c.path_type.as_str() {
        "linear" => PathType::Linear,
        "cosine" => PathType::Cosine,
        o => anyhow::bail!("unknown --path-type '{o}'; choose linear or cosine"),
    };
    let train = GeneratorTrainConfig {
        batch_size: c.batch_size,
        lr: c.lr,
        ema_decay: c.ema_decay,
        grad_clip: (c.grad_clip > 0.0).then_some(c.grad_clip),
        objective: Objective::Flow {
            path,
            sampling: match c.weighting {
                Weighting::Uniform => TimeSampling::Uniform,
                Weighting::Lognormal => TimeSampling::LogNormal,
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
