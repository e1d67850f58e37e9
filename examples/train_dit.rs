//! Train a DiT (DDPM, learned variance, hybrid MSE + VB loss) on cached MAETok latents.
//!
//! ```text
//! train_dit --cache latents/maetok-b-128 --preset DiT-XL --out runs/dit-xl --schedule cosine \
//!     --batch-size 256 --tokenizer maetok-b-128/ --backend cuda
//! ```
//! Re-running with the same `--out` resumes exactly; `checkpoints/step-N/ema/` is a model folder
//! for `sample_dit`.

use clap::{Parser, ValueEnum};
use maetok::sampler::Schedule;
use maetok::train::Objective;
use maetok::train_cli::TrainFlags;
use maetok::train_generator::train_generator;

#[derive(Clone, Copy, ValueEnum)]
enum CliSchedule {
    Linear,
    Cosine,
}

/// Train a DiT (DDPM with learned variance, hybrid MSE + VB loss) on cached MAETok latents;
/// re-running with the same --out resumes exactly.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    flags: TrainFlags,
    /// DiT-S, DiT-B, DiT-L, DiT-SL or DiT-XL (or give --config).
    #[arg(long, default_value = "DiT-B")]
    preset: String,
    /// Global gradient-norm clip (0: none, as the reference).
    #[arg(long, default_value_t = 0.0)]
    grad_clip: f64,
    /// β schedule of the 1000-step training diffusion.
    #[arg(long, value_enum, default_value_t = CliSchedule::Linear)]
    schedule: CliSchedule,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let c = Cli::parse();
    maetok::backend::configure_cpu(c.flags.threads)?;
    let mut model = c.flags.model(&c.preset, |name, l, ch| Ok(maetok::dit::preset(name, l, ch)?))?;
    // A config.json without learn_sigma is a DiT's default (true), as load_dit reads it.
    model.learn_sigma.get_or_insert(true);
    anyhow::ensure!(model.learns_sigma(), "the config has learn_sigma = false: train a velocity model with train_sit");
    let schedule = match c.schedule {
        CliSchedule::Linear => Schedule::Linear,
        CliSchedule::Cosine => Schedule::Cosine,
    };
    let layout = c.flags.layout()?;
    let backend = layout.backend.clone();
    let s = train_generator(c.flags.into_args(model, Objective::Diffusion { schedule }, c.grad_clip, layout), &backend)?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
