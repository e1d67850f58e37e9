//! Train a SiT on cached MAETok latents (written by `cache_latents`).
//!
//! ```text
//! train_sit --cache latents/maetok-b-128 --preset SiT-XL --out runs/sit-xl --steps 400000 \
//!     --batch-size 256 --weighting lognormal --tokenizer maetok-b-128/ --backend cuda
//! ```
//! Re-running with the same `--out` resumes exactly. The EMA model of each checkpoint
//! (`runs/.../checkpoints/step-N/ema/`) is a model folder for `sample_sit`.

use clap::{Parser, ValueEnum};
use maetok::sampler::{PathType, TimeSampling};
use maetok::train::Objective;
use maetok::train_cli::TrainFlags;
use maetok::train_generator::train_generator;

#[derive(Clone, Copy, ValueEnum)]
enum Weighting {
    Uniform,
    Lognormal,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliPath {
    Linear,
    Cosine,
}

/// Train a SiT (flow matching on the stochastic interpolant) on cached MAETok latents; re-running
/// with the same --out resumes exactly.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    flags: TrainFlags,
    /// SiT-S, SiT-B, SiT-L or SiT-XL (or give --config).
    #[arg(long, default_value = "SiT-B")]
    preset: String,
    /// Global gradient-norm clip (0: none); the reference clips at 1.
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// The interpolant: linear (α = 1 − t, σ = t) or cosine (GVP).
    #[arg(long, value_enum, default_value_t = CliPath::Linear)]
    path_type: CliPath,
    /// Training-time sampling: uniform, or log-normal (logit-normal on the linear path).
    #[arg(long, value_enum, default_value_t = Weighting::Uniform)]
    weighting: Weighting,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let c = Cli::parse();
    maetok::backend::configure_cpu(c.flags.threads)?;
    let model = c.flags.model(&c.preset, |name, l, ch| Ok(maetok::sit::preset(name, l, ch)?))?;
    anyhow::ensure!(!model.learns_sigma(), "the config has learn_sigma = true (a DiT): train it with train_dit");
    let objective = Objective::Flow {
        path: match c.path_type {
            CliPath::Linear => PathType::Linear,
            CliPath::Cosine => PathType::Cosine,
        },
        sampling: match c.weighting {
            Weighting::Uniform => TimeSampling::Uniform,
            Weighting::Lognormal => TimeSampling::LogNormal,
        },
    };
    let layout = c.flags.layout()?;
    let backend = layout.backend.clone();
    let s = train_generator(c.flags.into_args(model, objective, c.grad_clip, layout), &backend)?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
