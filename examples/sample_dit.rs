//! Sample images with a DiT and a MAETok tokenizer (`generate_dit.py`): ancestral DDPM over
//! `--steps` respaced steps (default 250) or DDIM, classifier-free guidance on ε (no interval).
//!
//! ```text
//! sample_dit --dit dit-xl_maetok-b-128/ --tokenizer maetok-b-128/ --classes 207,360 --per-class 8 --out samples/
//! ```

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use maetok::generate::{generate, Classes, GenerateArgs};
use maetok::sampler::{Guidance, Sampler, Schedule};

#[derive(Clone, Copy, ValueEnum)]
enum CliSampler {
    Ddpm,
    Ddim,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliSchedule {
    Linear,
    Cosine,
}

#[derive(Parser)]
struct Cli {
    /// DiT model folder (config.json + model.safetensors) or Hugging Face id.
    #[arg(long)]
    dit: PathBuf,
    /// Tokenizer folder or Hugging Face id (MAETok or SoftVQ-VAE).
    #[arg(long)]
    tokenizer: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_delimiter = ',', conflicts_with = "num_samples")]
    classes: Vec<usize>,
    #[arg(long, default_value_t = 4)]
    per_class: usize,
    /// Class-balanced protocol: this many samples, classes i mod 1000.
    #[arg(long)]
    num_samples: Option<usize>,
    #[arg(long, value_enum, default_value_t = CliSampler::Ddpm)]
    sampler: CliSampler,
    /// DDIM noise scale (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// The β schedule the model was trained with.
    #[arg(long, value_enum, default_value_t = CliSchedule::Linear)]
    schedule: CliSchedule,
    /// Respaced sampling steps.
    #[arg(long, default_value_t = 250)]
    steps: usize,
    #[arg(long, default_value_t = 1.5)]
    cfg_scale: f64,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Latent normalisation to undo before decoding (default: what the generator folder records,
    /// else the tokenizer's vq_mean / vq_std).
    #[arg(long, requires = "latent_std")]
    latent_mean: Option<f64>,
    #[arg(long, requires = "latent_mean")]
    latent_std: Option<f64>,
    /// ndarray | flex | wgpu | cuda (flex, wgpu and cuda need the cargo feature of that name);
    /// default ndarray, or the backend of --devices.
    #[arg(long)]
    backend: Option<String>,
    /// Devices to split the batches over, one worker each (e.g. cuda:0,cuda:1); the output is
    /// the same as on one device.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// CPU threads for every pool: rayon, matrixmultiply, OpenBLAS if built in (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let c = Cli::parse();
    maetok::backend::configure_cpu(c.threads)?;
    let classes = match c.num_samples {
        Some(n) => Classes::Balanced { n },
        None if !c.classes.is_empty() => Classes::List { classes: c.classes, per_class: c.per_class },
        None => anyhow::bail!("give --classes or --num-samples"),
    };
    let schedule = match c.schedule {
        CliSchedule::Linear => Schedule::Linear,
        CliSchedule::Cosine => Schedule::Cosine,
    };
    let (backend, devices) = maetok::parallel_cli::local_devices(&c.devices, c.backend.as_deref())?;
    let args = GenerateArgs {
        generator: c.dit,
        tokenizer: c.tokenizer,
        out: c.out,
        classes,
        sampler: match c.sampler {
            CliSampler::Ddpm => Sampler::Ddpm { schedule, steps: c.steps },
            CliSampler::Ddim => Sampler::Ddim { schedule, steps: c.steps, eta: c.eta },
        },
        guidance: Guidance::always(c.cfg_scale),
        batch_size: c.batch_size,
        seed: c.seed,
        latent_stats: c.latent_mean.zip(c.latent_std),
        progress: true,
        devices,
    };
    let s = generate(args, &backend)?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
