//! MAETok teacher targets (DINOv2 / SigLIP features) for images, from a timm or OpenCLIP
//! checkpoint resampled as timm loads it:
//! `cargo run --release --example teacher_features -- --checkpoint model.safetensors --preset dinov2-l --out OUT IMAGES...`

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use maetok::targets::VitConfig;
use maetok::teacher_features::{run, TeacherFeaturesArgs};

/// Compute teacher features; write features.safetensors, pca.png and summary.json.
#[derive(Parser)]
struct Cli {
    /// timm `model.safetensors` (e.g. timm/vit_large_patch14_dinov2.lvd142m) or OpenCLIP
    /// `open_clip_pytorch_model.bin` (e.g. timm/ViT-SO400M-14-SigLIP).
    #[arg(long)]
    checkpoint: PathBuf,
    /// dinov2-l | siglip-so400m | dino-s (MAETok's 256 px / patch 16 builds; dino-s is 224 px).
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// A JSON model description instead of a preset (fields of `VitConfig`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Also write the resampled (patch-16) state dict as safetensors.
    #[arg(long)]
    export_weights: Option<PathBuf>,
    /// ndarray | flex | wgpu | cuda (flex, wgpu and cuda need the cargo feature of that name)
    #[arg(long, default_value = "ndarray")]
    backend: String,
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
    let config = match (&cli.preset, &cli.config) {
        (Some(p), _) => VitConfig::preset(p).with_context(|| format!("unknown preset '{p}' (dinov2-l, siglip-so400m, dino-s)"))?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let c: VitConfig = serde_json::from_str(&text).with_context(|| format!("{} is not a valid ViT config", path.display()))?;
            c.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            c
        }
        (None, None) => bail!("give --preset or --config"),
    };
    let args = TeacherFeaturesArgs {
        checkpoint: cli.checkpoint,
        config,
        inputs: cli.inputs,
        out: cli.out.clone(),
        batch_size: cli.batch_size,
        export_weights: cli.export_weights,
        progress: true,
    };
    let s = run(args, &cli.backend)?;
    println!(
        "{} images -> features {:?} on {} in {:.1} s (PCA explains {:.0}%); wrote {}",
        s.images.len(),
        s.shape,
        s.backend,
        s.seconds,
        s.pca_explained * 100.0,
        cli.out.display()
    );
    Ok(())
}
