//! Evaluate generated images or reconstructions.
//!
//! ```text
//! evaluate generation --inception pt_inception-2015-12-05-6726825d.pth \
//!     --samples samples.npz --reference VIRTUAL_imagenet256_labeled.npz [--out metrics.json]
//! evaluate reconstruction --inputs crops/ --reconstructions recon/ [--inception W.pth] [--lpips-vgg vgg16.pth --lpips-lin vgg.pth]
//! ```
//! Sets are ADM `.npz` batches (uint8 NHWC `arr_0`) or folders of same-size images.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use maetok::eval::inception::Preprocess;
use maetok::evaluate::{evaluate_generation, evaluate_reconstruction, GenerationArgs, InceptionOptions, ReconstructionArgs};

#[derive(Clone, Copy, ValueEnum)]
enum Pipeline {
    /// ADM evaluator / torch-fidelity / torchmetrics resize (TF1 bilinear), the published numbers' pipeline.
    Adm,
    /// pytorch-fid's F.interpolate resize.
    PytorchFid,
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// ndarray | flex | wgpu | cuda (flex, wgpu and cuda need the cargo feature of that name);
    /// default ndarray, or the backend of --devices.
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Devices to split the batches over (e.g. cuda:0,cuda:1), one copy of the networks each;
    /// the metrics are the same as on one device.
    #[arg(long, global = true, value_delimiter = ',')]
    devices: Vec<String>,
    /// CPU threads for every pool: rayon, matrixmultiply, OpenBLAS if built in (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Images per batch (per device): Inception, and LPIPS/SSIM in reconstruction mode.
    #[arg(long, global = true, default_value_t = 32)]
    batch_size: usize,
    /// Resize pipeline in front of the Inception network.
    #[arg(long, global = true, value_enum, default_value_t = Pipeline::Adm)]
    pipeline: Pipeline,
    /// Write the metrics here as JSON (they are printed too).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Mode {
    /// IS, FID, sFID, precision and recall of samples against a reference batch or statistics.
    Generation {
        /// Inception weights (pytorch-fid `.pth`, torch-fidelity `.pth` or safetensors).
        #[arg(long)]
        inception: PathBuf,
        #[arg(long)]
        samples: PathBuf,
        #[arg(long)]
        reference: PathBuf,
        /// Also save the samples' mu/sigma/mu_s/sigma_s (reusable as a reference).
        #[arg(long)]
        save_stats: Option<PathBuf>,
    },
    /// PSNR, SSIM, rFID and sFID of reconstructions against their inputs.
    Reconstruction {
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        reconstructions: PathBuf,
        /// Inception weights; without them only PSNR and SSIM are computed.
        #[arg(long)]
        inception: Option<PathBuf>,
        /// LPIPS: torchvision's vgg16-397923af.pth (or safetensors) ...
        #[arg(long, requires = "lpips_lin")]
        lpips_vgg: Option<PathBuf>,
        /// ... and LPIPS's linear layers (vgg.pth or safetensors).
        #[arg(long, requires = "lpips_vgg")]
        lpips_lin: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    maetok::backend::configure_cpu(cli.threads)?;
    let preprocess = match cli.pipeline {
        Pipeline::Adm => Preprocess::Tf1,
        Pipeline::PytorchFid => Preprocess::PytorchFid,
    };
    let (backend, devices) = maetok::parallel_cli::local_devices(&cli.devices, cli.backend.as_deref())?;
    let opts =
        |weights: PathBuf| InceptionOptions { weights, preprocess, batch_size: cli.batch_size, progress: true, devices: devices.clone() };
    let json = match cli.mode {
        Mode::Generation { inception, samples, reference, save_stats } => {
            let r = evaluate_generation(
                GenerationArgs { samples, reference, inception: opts(inception), save_sample_stats: save_stats },
                &backend,
            )?;
            serde_json::to_string_pretty(&r)?
        }
        Mode::Reconstruction { inputs, reconstructions, inception, lpips_vgg, lpips_lin } => {
            let lpips = lpips_vgg.zip(lpips_lin);
            let r = evaluate_reconstruction(
                ReconstructionArgs {
                    inputs,
                    reconstructions,
                    inception: inception.map(opts),
                    lpips,
                    progress: true,
                    batch_size: cli.batch_size,
                    devices: devices.clone(),
                },
                &backend,
            )?;
            serde_json::to_string_pretty(&r)?
        }
    };
    if let Some(p) = &cli.out {
        maetok::nn::io::write_atomic(p, json.as_bytes())?;
    }
    println!("{json}");
    Ok(())
}
