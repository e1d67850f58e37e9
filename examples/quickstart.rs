//! MAETok training (token masking + the HOG auxiliary decoder) on a tiny configuration and
//! built-in data:
//! `cargo run --release --example quickstart [-- --out out/quickstart --steps 800]`

use std::path::PathBuf;

use clap::Parser;
use maetok::quickstart::{run, QuickstartArgs};

/// Train a tiny MAETok (masking + HOG auxiliary decoder) on procedural shapes and report what it learned.
#[derive(Parser)]
struct Cli {
    /// Output folder.
    #[arg(long, default_value = "out/quickstart")]
    out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = 800)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Image side (a multiple of 16: patch 8, HOG cells of 8).
    #[arg(long, default_value_t = 64)]
    image_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Peak learning rate (AdamW, warm-up then cosine).
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// ndarray | flex | wgpu | cuda (flex, wgpu and cuda need the cargo feature of that name)
    #[arg(long, default_value = "ndarray")]
    backend: String,
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
    let args = QuickstartArgs {
        out: cli.out.clone(),
        steps: cli.steps,
        batch_size: cli.batch_size,
        image_size: cli.image_size,
        seed: cli.seed,
        lr: cli.lr,
        progress: true,
    };
    let r = run(args, &cli.backend)?;
    println!(
        "backend {}: {} steps in {:.1} s (masking {:.0}-{:.0} %), pixel loss {:.4} -> {:.4}, HOG loss {:.4} -> {:.4}",
        r.backend,
        r.steps,
        r.train_seconds,
        100.0 * r.mask_ratio[0],
        100.0 * r.mask_ratio[1],
        r.first_loss,
        r.final_loss,
        r.first_hog_loss,
        r.final_hog_loss
    );
    println!(
        "PSNR at init {:.2} dB, after training {:.2} dB, mean-colour baseline {:.2} dB",
        r.at_init.psnr, r.after_training.psnr, r.mean_colour_baseline.psnr
    );
    println!(
        "SSIM at init {:.4}, after training {:.4}, mean-colour baseline {:.4}",
        r.at_init.ssim, r.after_training.ssim, r.mean_colour_baseline.ssim
    );
    println!(
        "wrote {}/{{reconstructions.png, loss.svg, log.jsonl, previews/, metrics.json, metrics/ (per-step metric files), samples/}} and the model {}",
        cli.out.display(),
        r.model_dir
    );
    println!(
        "try: cargo run --release --example reconstruct -- --model {} --out {}/recon {}/samples",
        r.model_dir,
        cli.out.display(),
        cli.out.display()
    );
    Ok(())
}
