//! Fit Gaussian mixtures to cached latents for several component counts (the paper's "number
//! of modes" analysis). Writes `gmm_fit.json` and `nll_vs_k.svg` to `--out`.
//!
//! ```text
//! gmm_fit --cache latents/ --components 5,10,50,100 --reduce 100 --samples-per-class 100 --out gmm/
//! gmm_fit --npy umap100.npy --components 5,10,50 --engines em-diag,gradient --out gmm/
//! ```

use std::path::PathBuf;

use clap::Parser;
use maetok::gmm_fit::{gmm_fit, Engine, GmmFitArgs, GmmInput};

#[derive(Parser)]
struct Cli {
    /// A latent cache written by `cache_latents`.
    #[arg(long, required_unless_present = "npy")]
    cache: Option<PathBuf>,
    /// Or a float [N, D] .npy matrix (e.g. reduced with UMAP elsewhere).
    #[arg(long, conflicts_with = "cache")]
    npy: Option<PathBuf>,
    /// Fit single tokens (C values per row) instead of whole flattened latents (L·C).
    #[arg(long)]
    per_token: bool,
    #[arg(long)]
    samples_per_class: Option<usize>,
    #[arg(long)]
    max_classes: Option<usize>,
    /// Keep the first share of each flattened latent.
    #[arg(long, default_value_t = 1.0)]
    factor: f64,
    /// PCA to this many dimensions first.
    #[arg(long)]
    reduce: Option<usize>,
    #[arg(long, value_delimiter = ',', default_value = "5,10,50,100,200,300")]
    components: Vec<usize>,
    /// em-diag, em-full, gradient (the reference's Adam fit).
    #[arg(long, value_delimiter = ',', default_value = "em-diag")]
    engines: Vec<Engine>,
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 300)]
    em_max_iter: usize,
    #[arg(long, default_value_t = 1e-3)]
    em_tol: f64,
    #[arg(long, default_value_t = 1e-6)]
    reg_covar: f64,
    /// Gradient engine: epochs, batch size, Adam learning rate (reference: 500 / 64 / 1e-3).
    #[arg(long, default_value_t = 500)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long)]
    out: PathBuf,
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
    let input = match (c.cache, c.npy) {
        (Some(dir), _) => GmmInput::Cache {
            dir,
            per_token: c.per_token,
            samples_per_class: c.samples_per_class,
            max_classes: c.max_classes,
            factor: c.factor,
        },
        (None, Some(p)) => GmmInput::Npy(p),
        (None, None) => anyhow::bail!("give --cache or --npy"),
    };
    let args = GmmFitArgs {
        input,
        reduce: c.reduce,
        components: c.components,
        engines: c.engines,
        val_fraction: c.val_fraction,
        seed: c.seed,
        em_max_iter: c.em_max_iter,
        em_tol: c.em_tol,
        reg_covar: c.reg_covar,
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        out: c.out,
    };
    let report = gmm_fit(&args)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
