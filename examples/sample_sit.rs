//! Sample images with a SiT and a MAETok tokenizer.
//!
//! ```text
//! sample_sit --sit sit-xl_maetok-b-128/ --tokenizer maetok-b-128/ --classes 207,360,387 --per-class 8 --out samples/
//! sample_sit --sit ... --tokenizer ... --num-samples 50000 --out fid50k/      # class-balanced, then `evaluate generation`
//! ```
//! Defaults follow `generate_sit.py`: SDE, 50 steps, linear path, CFG 1.5 on the whole interval.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use maetok::generate::{generate, Classes, GenerateArgs};
use maetok::sampler::{Guidance, PathType, Sampler};

#[derive(Clone, Copy, ValueEnum)]
enum CliMode {
    Ode,
    Sde,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliPath {
    Linear,
    Cosine,
}

#[derive(Parser)]
struct Cli {
    /// SiT model folder (config.json + model.safetensors) or Hugging Face id.
    #[arg(long)]
    sit: PathBuf,
    /// Tokenizer folder or Hugging Face id (MAETok or SoftVQ-VAE).
    #[arg(long)]
    tokenizer: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Class ids to sample (with --per-class each).
    #[arg(long, value_delimiter = ',', conflicts_with = "num_samples")]
    classes: Vec<usize>,
    #[arg(long, default_value_t = 4)]
    per_class: usize,
    /// Class-balanced protocol: this many samples, classes i mod 1000.
    #[arg(long)]
    num_samples: Option<usize>,
    #[arg(long, value_enum, default_value_t = CliMode::Sde)]
    mode: CliMode,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Heun's second-order correction (ODE mode).
    #[arg(long)]
    heun: bool,
    /// The interpolant the model was trained with (matters for the SDE).
    #[arg(long, value_enum, default_value_t = CliPath::Linear)]
    path_type: CliPath,
    #[arg(long, default_value_t = 1.5)]
    cfg_scale: f64,
    #[arg(long, default_value_t = 0.0)]
    guidance_low: f64,
    #[arg(long, default_value_t = 1.0)]
    guidance_high: f64,
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
    let (backend, devices) = maetok::parallel_cli::local_devices(&c.devices, c.backend.as_deref())?;
    let args = GenerateArgs {
        generator: c.sit,
        tokenizer: c.tokenizer,
        out: c.out,
        classes,
        sampler: match c.mode {
            CliMode::Ode => Sampler::Ode { steps: c.steps, heun: c.heun },
            CliMode::Sde => Sampler::Sde {
                steps: c.steps,
                path: match c.path_type {
                    CliPath::Linear => PathType::Linear,
                    CliPath::Cosine => PathType::Cosine,
                },
            },
        },
        guidance: Guidance { scale: c.cfg_scale, low: c.guidance_low, high: c.guidance_high },
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
