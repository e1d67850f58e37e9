//! Reconstruct images with a tokenizer checkpoint (a Hugging Face folder of MAETok or SoftVQ-VAE):
//! `cargo run --release --example reconstruct -- --model DIR --out OUTDIR [--latents-out F.safetensors] [--indices-out F.safetensors] [--devices cuda:0,cuda:1] INPUT...`

use std::path::PathBuf;

use clap::Parser;
use maetok::reconstruct::{describe, run, ReconstructArgs};

/// Encode and decode images; write reconstructions, a grid and PSNR/SSIM.
#[derive(Parser)]
struct Cli {
    /// Tokenizer (MAETok or SoftVQ-VAE): a Hugging Face model folder (config.json + model.safetensors) or id (MAETok/maetok-b-128).
    #[arg(long)]
    model: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Also write the latents [N, tokens, channels] (f32, tensor `latents`).
    #[arg(long)]
    latents_out: Option<PathBuf>,
    /// SoftVQ-VAE only: also write each token's code index [N, codebooks, tokens/codebooks] (tensor `indices`).
    #[arg(long)]
    indices_out: Option<PathBuf>,
    /// ndarray | flex | wgpu | cuda (flex, wgpu and cuda need the cargo feature of that name);
    /// default ndarray, or the backend of --devices.
    #[arg(long)]
    backend: Option<String>,
    /// Devices to split the batches over, one model copy each (e.g. cuda:0,cuda:1); the outputs
    /// are the same as on one device.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// CPU threads for every pool: rayon, matrixmultiply, OpenBLAS if built in (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Image files or folders (PNG/JPEG, searched recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    maetok::backend::configure_cpu(cli.threads)?;
    let (backend, devices) = maetok::parallel_cli::local_devices(&cli.devices, cli.backend.as_deref())?;
    let args = ReconstructArgs {
        model: cli.model,
        out: cli.out.clone(),
        latents_out: cli.latents_out,
        indices_out: cli.indices_out,
        batch_size: cli.batch_size,
        inputs: cli.inputs,
        progress: true,
        devices,
    };
    let s = run(args, &backend)?;
    println!("{}", describe(&s, &cli.out));
    Ok(())
}
