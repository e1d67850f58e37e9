//! Cache MAETok latents (centre crop + mirror) of a dataset for SiT/DiT training and GMM analysis.
//!
//! ```text
//! cache_latents --model maetok-b-128/ --data /data/imagenet --layout imagenet --out latents/
//! cache_latents --model maetok-b-128/ --procedural 600 --out latents/   # built-in shapes
//! ```
//! Re-running with the same `--out` resumes. `--export-npz DIR` also writes the reference's
//! `<class>/<file>.npz` files (`path`, `zq`, `zq_flip`).

use std::path::PathBuf;

use clap::Parser;
use maetok::cache_latents::{cache_latents, CacheArgs, Dataset};
use maetok::train::data::Layout;

#[derive(Parser)]
struct Cli {
    /// Tokenizer (MAETok or SoftVQ-VAE): a Hugging Face folder (config.json + model.safetensors) or id.
    #[arg(long)]
    model: PathBuf,
    /// Dataset root (see --layout).
    #[arg(long, required_unless_present = "procedural")]
    data: Option<PathBuf>,
    /// imagefolder (<data>/<class>/…), imagenet (<data>/train/<wnid>/…) or tiny-imagenet.
    #[arg(long, default_value = "imagefolder")]
    layout: Layout,
    /// Use this many images of the built-in procedural shapes instead of --data.
    #[arg(long, conflicts_with = "data")]
    procedural: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1024)]
    shard_size: usize,
    #[arg(long)]
    export_npz: Option<PathBuf>,
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
    let cli = Cli::parse();
    maetok::backend::configure_cpu(cli.threads)?;
    let data = match (cli.procedural, &cli.data) {
        (Some(n), _) => {
            let size = maetok::tokenizer::ModelArgs::from_file(cli.model.join("config.json"))?.image_size;
            Dataset::procedural(n, size, cli.seed)
        }
        (None, Some(path)) => Dataset::folder(path, cli.layout)?,
        (None, None) => anyhow::bail!("give --data or --procedural"),
    };
    let args =
        CacheArgs { out: cli.out, batch_size: cli.batch_size, shard_size: cli.shard_size, export_npz: cli.export_npz, progress: true };
    let (backend, devices) = maetok::parallel_cli::local_devices(&cli.devices, cli.backend.as_deref())?;
    let summary = cache_latents(cli.model, data, args, &backend, devices)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
