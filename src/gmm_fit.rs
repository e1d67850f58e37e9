//! The paper's latent-space analysis (`inference/gmm_fit.py`): Gaussian mixtures with several
//! component counts fitted to cached latents, reporting train/validation NLL per dimension, BIC
//! and AIC as JSON and an NLL-vs-K plot. The `gmm_fit` example is a CLI over [`gmm_fit`].
//!
//! Engines: `em-diag` / `em-full` (correct EM, k-means++ initialisation) and `gradient` (the
//! reference's Adam-trained mixture with unnormalised weights, for reproducing the paper's
//! curves; its biased NLL is reported together with `ln Σw` and the normalised NLL).
//!
//! Rows are whole-image latents flattened to `L·C` values (the reference), or single tokens
//! (`C` values each, an extension). Optional PCA to a given dimension; UMAP (the reference's
//! default reduction) has no maintained Rust implementation, so a matrix reduced elsewhere can
//! be imported as `.npy` instead.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use maetok_eval::gmm::{fit_em, fit_gradient, standardise, Covariance, EmOptions, GradientFitOptions, RawDiagGmm};
use maetok_eval::npz::parse_npy_header;
use maetok_eval::pca::Pca;
use maetok_train::data::LatentCache;
use maetok_train::viz::line_plot_svg;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;

/// A GMM estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    EmDiag,
    EmFull,
    Gradient,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "em-diag" => Ok(Self::EmDiag),
            "em-full" => Ok(Self::EmFull),
            "gradient" => Ok(Self::Gradient),
            o => Err(format!("unknown engine '{o}'; choose em-diag, em-full or gradient")),
        }
    }
}

/// Where the rows come from.
#[derive(Debug, Clone)]
pub enum GmmInput {
    /// A latent cache (`zq`, not the mirrored latents, as the reference).
    Cache { dir: PathBuf, per_token: bool, samples_per_class: Option<usize>, max_classes: Option<usize>, factor: f64 },
    /// A `[N, D]` float `.npy` matrix (e.g. reduced with UMAP in Python).
    Npy(PathBuf),
}

/// Options of the analysis.
#[derive(Debug, Clone)]
pub struct GmmFitArgs {
    pub input: GmmInput,
    /// PCA dimension (none: fit the rows as they are).
    pub reduce: Option<usize>,
    pub components: Vec<usize>,
    pub engines: Vec<Engine>,
    pub val_fraction: f64,
    pub seed: u64,
    pub em_max_iter: usize,
    pub em_tol: f64,
    pub reg_covar: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub out: PathBuf,
}

/// One fit.
#[derive(Debug, Clone, Serialize)]
pub struct FitResult {
    pub engine: Engine,
    pub k: usize,
    /// Mean NLL per sample (nats) on the training and validation rows; for `gradient` the
    /// reference's (biased by −ln Σw) values, final-epoch as it reports them.
    pub train_nll: f64,
    pub val_nll: f64,
    pub train_nll_per_dim: f64,
    pub val_nll_per_dim: f64,
    pub bic: f64,
    pub aic: Option<f64>,
    /// `gradient` only: `ln Σw` and the validation NLL with normalised weights.
    pub log_weight_sum: Option<f64>,
    pub val_nll_normalised: Option<f64>,
    pub iterations: usize,
    pub converged: Option<bool>,
    pub weights: Vec<f64>,
    pub seconds: f64,
}

/// The report written to `gmm_fit.json`.
#[derive(Debug, Clone, Serialize)]
pub struct GmmReport {
    pub rows: usize,
    pub train_rows: usize,
    pub val_rows: usize,
    pub input_dim: usize,
    pub fit_dim: usize,
    pub pca_explained_ratio: Option<f64>,
    pub labels_used: usize,
    pub results: Vec<FitResult>,
    pub plot: String,
}

/// Reads a float `.npy` matrix `[N, D]`.
pub fn read_npy_matrix(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let h = parse_npy_header(&bytes).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    if h.shape.len() != 2 || h.fortran_order {
        bail!(
            "{}: expected a C-order [N, D] matrix, found shape {:?}{}",
            path.display(),
            h.shape,
            if h.fortran_order { " (Fortran order)" } else { "" }
        );
    }
    let (n, d) = (h.shape[0], h.shape[1]);
    let data = &bytes[h.data_offset..];
    let item = if h.descr == "<f8" { 8 } else { 4 };
    if maetok_nn::limits::checked_numel(&[n, d, item]).is_none_or(|b| b > data.len() as u64) {
        bail!("{}: truncated: shape {:?} needs more than the {} data bytes it holds", path.display(), h.shape, data.len());
    }
    let v: Vec<f32> = match h.descr.as_str() {
        "<f4" => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect(),
        "<f8" => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32).collect(),
        o => bail!("{}: dtype {o} (expected <f4 or <f8)", path.display()),
    };
    if v.len() < n * d {
        bail!("{}: truncated ({} of {} values)", path.display(), v.len(), n * d);
    }
    Ok((v[..n * d].to_vec(), n, d))
}

/// Gathers rows from a cache: optionally a seeded subset of classes and of images per class
/// (sorted before sampling, so runs are reproducible), flattened latents cut to the first
/// `factor` share, or single tokens.
fn rows_from_cache(
    dir: &Path,
    per_token: bool,
    spc: Option<usize>,
    max_classes: Option<usize>,
    factor: f64,
    seed: u64,
) -> Result<(Vec<f32>, usize, usize, usize)> {
    let cache = LatentCache::open(dir)?;
    if cache.is_empty() {
        bail!("{}: the cache holds no latents", dir.display());
    }
    let [l, c] = cache.latent_shape();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); cache.classes().len()];
    for i in 0..cache.len() {
        by_class[cache.label(i)].push(i);
    }
    let mut classes: Vec<usize> = (0..by_class.len()).filter(|&k| !by_class[k].is_empty()).collect();
    if let Some(m) = max_classes {
        classes.shuffle(&mut rng);
        classes.truncate(m);
        classes.sort();
    }
    let mut chosen = Vec::new();
    for &k in &classes {
        let mut items = by_class[k].clone();
        if let Some(s) = spc {
            items.shuffle(&mut rng);
            items.truncate(s);
            items.sort();
        }
        chosen.extend(items);
    }
    if !(0.0..=1.0).contains(&factor) || factor == 0.0 {
        bail!("--factor must be in (0, 1], got {factor}");
    }
    let keep = ((l * c) as f64 * factor) as usize;
    let mut data = Vec::new();
    let d = if per_token { c } else { keep.max(1) };
    for &i in &chosen {
        let z = cache.latent(i, false);
        if per_token {
            data.extend_from_slice(&z);
        } else {
            data.extend_from_slice(&z[..d]);
        }
    }
    let n = data.len() / d;
    Ok((data, n, d, classes.len()))
}

fn split(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
    let n_val = ((val_fraction * n as f64).ceil() as usize).min(n.saturating_sub(1));
    let val = idx[..n_val].to_vec();
    (idx[n_val..].to_vec(), val)
}

fn gather(data: &[f64], d: usize, rows: &[usize]) -> Vec<f64> {
    rows.iter().flat_map(|&i| data[i * d..(i + 1) * d].iter().copied()).collect()
}

/// Runs the analysis and writes `gmm_fit.json` and `nll_vs_k.svg` to `args.out`.
pub fn gmm_fit(args: &GmmFitArgs) -> Result<GmmReport> {
    let (raw, n, d0, labels) = match &args.input {
        GmmInput::Cache { dir, per_token, samples_per_class, max_classes, factor } => {
            rows_from_cache(dir, *per_token, *samples_per_class, *max_classes, *factor, args.seed)?
        }
        GmmInput::Npy(p) => {
            let (v, n, d) = read_npy_matrix(p)?;
            (v, n, d, 0)
        }
    };
    let max_k = args.components.iter().copied().max().unwrap_or(0);
    if args.components.is_empty() || args.components.contains(&0) {
        bail!("--components must list component counts >= 1");
    }
    let (rows, d, explained) = match args.reduce {
        Some(k) if k < d0 => {
            if k > n {
                bail!("cannot reduce {n} rows to {k} dimensions");
            }
            tracing::info!("PCA {d0} -> {k} dimensions on {n} rows");
            let pca = Pca::fit(&raw, n, d0, k, args.seed);
            (pca.transform(&raw), k, Some(pca.explained_ratio()))
        }
        _ => (raw, d0, None),
    };
    let data64: Vec<f64> = rows.iter().map(|&v| v as f64).collect();
    let (std_data, _, _) = standardise(&data64, n, d);
    let (tr, va) = split(n, args.val_fraction, args.seed);
    if tr.len() < max_k {
        bail!("{} training rows cannot fit {max_k} components; cache more images or lower --components", tr.len());
    }
    let (train, val) = (gather(&std_data, d, &tr), gather(&std_data, d, &va));
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut results = Vec::new();
    for &engine in &args.engines {
        for &k in &args.components {
            let t0 = std::time::Instant::now();
            let r = match engine {
                Engine::EmDiag | Engine::EmFull => {
                    let opts = EmOptions {
                        covariance: if engine == Engine::EmFull { Covariance::Full } else { Covariance::Diagonal },
                        max_iter: args.em_max_iter,
                        tol: args.em_tol,
                        reg_covar: args.reg_covar,
                        seed: args.seed,
                    };
                    let g = fit_em(&train, d, k, &opts);
                    let (tn, vn) = (-g.mean_log_likelihood(&train), if val.is_empty() { f64::NAN } else { -g.mean_log_likelihood(&val) });
                    FitResult {
                        engine,
                        k,
                        train_nll: tn,
                        val_nll: vn,
                        train_nll_per_dim: tn / d as f64,
                        val_nll_per_dim: vn / d as f64,
                        bic: g.bic(&train),
                        aic: Some(g.aic(&train)),
                        log_weight_sum: None,
                        val_nll_normalised: None,
                        iterations: g.iterations,
                        converged: Some(g.converged),
                        weights: g.weights.clone(),
                        seconds: 0.0,
                    }
                }
                Engine::Gradient => {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(k as u64));
                    let means: Vec<f64> = (0..k * d).map(|_| rng.sample(StandardNormal)).collect();
                    let n_tr = tr.len();
                    let opts = GradientFitOptions { epochs: args.epochs, batch_size: args.batch_size, lr: args.lr };
                    let fit = fit_gradient(RawDiagGmm::new(k, d, means), &train, &val, &opts, |_| {
                        let mut p: Vec<usize> = (0..n_tr).collect();
                        p.shuffle(&mut rng);
                        p
                    });
                    let tn = *fit.train_loss.last().unwrap_or(&f64::NAN);
                    let vn = *fit.val_loss.last().unwrap_or(&f64::NAN);
                    FitResult {
                        engine,
                        k,
                        train_nll: tn,
                        val_nll: vn,
                        train_nll_per_dim: tn / d as f64,
                        val_nll_per_dim: vn / d as f64,
                        bic: fit.model.bic(&train),
                        aic: None,
                        log_weight_sum: Some(fit.model.log_weight_sum()),
                        val_nll_normalised: (!val.is_empty()).then(|| fit.model.normalised_nll(&val)),
                        iterations: args.epochs,
                        converged: None,
                        weights: fit.model.weights.clone(),
                        seconds: 0.0,
                    }
                }
            };
            let r = FitResult { seconds: t0.elapsed().as_secs_f64(), ..r };
            tracing::info!(
                "{engine:?} K={k}: train NLL/dim {:.4}, val NLL/dim {:.4}, BIC {:.1} ({:.1} s)",
                r.train_nll_per_dim,
                r.val_nll_per_dim,
                r.bic,
                r.seconds
            );
            results.push(r);
        }
    }
    let plot = args.out.join("nll_vs_k.svg");
    let mut series = Vec::new();
    for &engine in &args.engines {
        let pts = |f: fn(&FitResult) -> f64| results.iter().filter(|r| r.engine == engine).map(|r| (r.k as f64, f(r))).collect::<Vec<_>>();
        series.push((format!("{engine:?} train"), pts(|r| r.train_nll_per_dim)));
        series.push((format!("{engine:?} val"), pts(|r| r.val_nll_per_dim)));
    }
    let named: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    line_plot_svg(&plot, "GMM fit of the latent space", "components K", "NLL per dimension (nats)", &named)
        .map_err(|e| anyhow::anyhow!("{}: {e}", plot.display()))?;
    let report = GmmReport {
        rows: n,
        train_rows: tr.len(),
        val_rows: va.len(),
        input_dim: d0,
        fit_dim: d,
        pca_explained_ratio: explained,
        labels_used: labels,
        results,
        plot: plot.display().to_string(),
    };
    let json = args.out.join("gmm_fit.json");
    maetok_nn::io::write_atomic(&json, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("cannot write {}", json.display()))?;
    Ok(report)
}
