//! Gaussian-mixture fits of latent spaces (the paper's "number of modes" analysis,
//! `inference/gmm_fit.py`), in f64.
//!
//! * [`fit_gradient`]: the reference's estimator, kept for reproducing the paper's curves:
//!   diagonal Gaussians with **unconstrained** mixture weights (used as `ln(w + 1e-10)`, never
//!   normalised, so the "likelihood" is not a density and its NLL is biased down by `ln Σw`),
//!   means from `N(0, 1)`, log-variances 0, trained by Adam on mini-batches. Every draw (initial
//!   means, per-epoch shuffles) is passed in, so a run is reproducible.
//! * [`fit_em`]: a correct EM fit (diagonal or full covariances, k-means++ initialisation,
//!   covariance regularisation, tolerance on the mean log-likelihood).
//!
//! Data are row-major `[n, d]` slices.

// Index loops over several parallel arrays read more clearly than zipped iterators here.
#![allow(clippy::needless_range_loop)]

use nalgebra::{Cholesky, DMatrix, DVector};
use rand::{Rng, SeedableRng};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Per-dimension standardisation as the reference does it: `(x − mean) / (std + 1e-8)` with the
/// unbiased (N−1) standard deviation. Returns `(standardised, mean, std)`.
pub fn standardise(data: &[f64], n: usize, d: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; d];
    for row in data.chunks_exact(d) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x / n as f64;
        }
    }
    let mut var = vec![0.0; d];
    for row in data.chunks_exact(d) {
        for j in 0..d {
            var[j] += (row[j] - mean[j]).powi(2) / (n as f64 - 1.0);
        }
    }
    let std: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
    let out = data.chunks_exact(d).flat_map(|row| (0..d).map(|j| (row[j] - mean[j]) / (std[j] + 1e-8)).collect::<Vec<_>>()).collect();
    (out, mean, std)
}

/// The reference's diagonal mixture with raw weights.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDiagGmm {
    pub k: usize,
    pub d: usize,
    /// `[K]`, unconstrained.
    pub weights: Vec<f64>,
    /// `[K, D]`
    pub means: Vec<f64>,
    /// `[K, D]` log-variances.
    pub log_cov: Vec<f64>,
}

impl RawDiagGmm {
    /// Reference initialisation: weights `1/K`, the given means (the reference draws `N(0, 1)`),
    /// log-variances 0.
    pub fn new(k: usize, d: usize, means: Vec<f64>) -> Self {
        assert_eq!(means.len(), k * d);
        Self { k, d, weights: vec![1.0 / k as f64; k], means, log_cov: vec![0.0; k * d] }
    }

    /// Per-component terms `a_k = ln N_k(x) + ln(w_k + 1e-10)` for one row.
    fn terms(&self, x: &[f64], out: &mut [f64]) {
        for c in 0..self.k {
            let (mu, s) = (&self.means[c * self.d..(c + 1) * self.d], &self.log_cov[c * self.d..(c + 1) * self.d]);
            let mut q = 0.0;
            for j in 0..self.d {
                q += LN_2PI + s[j] + (x[j] - mu[j]).powi(2) * (-s[j]).exp();
            }
            out[c] = -0.5 * q + (self.weights[c] + 1e-10).ln();
        }
    }

    /// `ℓ(x) = logsumexp_k a_k`, averaged over the rows of `data` (the reference `forward`).
    pub fn mean_log_likelihood(&self, data: &[f64]) -> f64 {
        let mut a = vec![0.0; self.k];
        let rows = data.chunks_exact(self.d);
        let n = rows.len() as f64;
        rows.map(|x| {
            self.terms(x, &mut a);
            logsumexp(&a)
        })
        .sum::<f64>()
            / n
    }

    /// Reference BIC: `K(1 + 2D)·ln N − 2·N·mean ℓ` (counts K weights, not K−1).
    pub fn bic(&self, data: &[f64]) -> f64 {
        let n = (data.len() / self.d) as f64;
        (self.k * (1 + 2 * self.d)) as f64 * n.ln() - 2.0 * n * self.mean_log_likelihood(data)
    }

    /// `ln Σ w`: how far the reported NLL sits below a normalised mixture's.
    pub fn log_weight_sum(&self) -> f64 {
        self.weights.iter().sum::<f64>().ln()
    }

    /// Mean NLL of the same mixture with weights normalised to sum to 1 (a proper density).
    pub fn normalised_nll(&self, data: &[f64]) -> f64 {
        let mut g = self.clone();
        let s: f64 = g.weights.iter().sum();
        g.weights.iter_mut().for_each(|w| *w /= s);
        -g.mean_log_likelihood(data)
    }

    /// Gradients of `−mean ℓ` over `rows` (indices into `data`): `(dw, dμ, ds)` and the loss.
    fn grad(&self, data: &[f64], rows: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64) {
        let (k, d) = (self.k, self.d);
        let (mut gw, mut gm, mut gs) = (vec![0.0; k], vec![0.0; k * d], vec![0.0; k * d]);
        let mut a = vec![0.0; k];
        let m = rows.len() as f64;
        let mut loss = 0.0;
        for &i in rows {
            let x = &data[i * d..(i + 1) * d];
            self.terms(x, &mut a);
            let l = logsumexp(&a);
            loss -= l / m;
            for c in 0..k {
                let r = (a[c] - l).exp() / m; // responsibility / batch size
                gw[c] -= r / (self.weights[c] + 1e-10);
                for j in 0..d {
                    let idx = c * d + j;
                    let inv = (-self.log_cov[idx]).exp();
                    let diff = x[j] - self.means[idx];
                    gm[idx] -= r * diff * inv;
                    gs[idx] -= r * -0.5 * (1.0 - diff * diff * inv);
                }
            }
        }
        (gw, gm, gs, loss)
    }
}

/// Adam (β = (0.9, 0.999), ε = 1e-8, no weight decay), as `torch.optim.Adam`.
struct Adam {
    lr: f64,
    t: i32,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Adam {
    fn new(lr: f64, n: usize) -> Self {
        Self { lr, t: 0, m: vec![0.0; n], v: vec![0.0; n] }
    }
    fn step(&mut self, params: &mut [&mut [f64]], grads: &[&[f64]]) {
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let bc1 = 1.0 - b1.powi(self.t);
        let bc2 = 1.0 - b2.powi(self.t);
        let mut off = 0;
        for (p, g) in params.iter_mut().zip(grads) {
            for (i, (pi, gi)) in p.iter_mut().zip(g.iter()).enumerate() {
                let (m, v) = (&mut self.m[off + i], &mut self.v[off + i]);
                *m = b1 * *m + (1.0 - b1) * gi;
                *v = b2 * *v + (1.0 - b2) * gi * gi;
                let denom = (*v / bc2).sqrt() + eps;
                *pi -= self.lr * (*m / bc1) / denom;
            }
            off += p.len();
        }
    }
}

/// Settings of [`fit_gradient`] (reference defaults: lr 1e-3, batch 64, 2000 epochs).
#[derive(Debug, Clone)]
pub struct GradientFitOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
}

/// Result of [`fit_gradient`]: the model, the per-epoch train loss (unweighted mean of the batch
/// losses, as the reference reports) and validation loss, and the parameters after the first step.
#[derive(Debug, Clone)]
pub struct GradientFit {
    pub model: RawDiagGmm,
    pub after_first_step: RawDiagGmm,
    pub train_loss: Vec<f64>,
    pub val_loss: Vec<f64>,
}

/// The reference fit. `perm(epoch)` gives the order of the training rows for that epoch (the
/// reference shuffles with a DataLoader); batches are consecutive chunks of `batch_size`.
pub fn fit_gradient(
    mut model: RawDiagGmm,
    train: &[f64],
    val: &[f64],
    opts: &GradientFitOptions,
    mut perm: impl FnMut(usize) -> Vec<usize>,
) -> GradientFit {
    let d = model.d;
    let n_val = val.len() / d;
    let mut adam = Adam::new(opts.lr, model.k * (1 + 2 * d));
    let (mut train_loss, mut val_loss) = (Vec::new(), Vec::new());
    let mut first = None;
    for epoch in 0..opts.epochs {
        let order = perm(epoch);
        let mut losses = Vec::new();
        for batch in order.chunks(opts.batch_size) {
            let (gw, gm, gs, loss) = model.grad(train, batch);
            losses.push(loss);
            adam.step(&mut [&mut model.weights, &mut model.means, &mut model.log_cov], &[&gw, &gm, &gs]);
            if first.is_none() {
                first = Some(model.clone());
            }
        }
        train_loss.push(losses.iter().sum::<f64>() / losses.len() as f64);
        let vb: Vec<f64> = (0..n_val)
            .collect::<Vec<_>>()
            .chunks(opts.batch_size)
            .map(|rows| {
                let batch: Vec<f64> = rows.iter().flat_map(|&i| val[i * d..(i + 1) * d].to_vec()).collect();
                -model.mean_log_likelihood(&batch)
            })
            .collect();
        val_loss.push(vb.iter().sum::<f64>() / vb.len().max(1) as f64);
    }
    GradientFit { after_first_step: first.unwrap_or_else(|| model.clone()), model, train_loss, val_loss }
}

/// Covariance structure of [`fit_em`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covariance {
    Diagonal,
    Full,
}

/// Settings of [`fit_em`] (scikit-learn's defaults: tol 1e-3, reg 1e-6, 100 iterations).
#[derive(Debug, Clone)]
pub struct EmOptions {
    pub covariance: Covariance,
    pub max_iter: usize,
    /// Stop when the mean log-likelihood improves by less than this.
    pub tol: f64,
    /// Added to every variance (the diagonal of full covariances).
    pub reg_covar: f64,
    pub seed: u64,
}

impl Default for EmOptions {
    fn default() -> Self {
        Self { covariance: Covariance::Diagonal, max_iter: 100, tol: 1e-3, reg_covar: 1e-6, seed: 0 }
    }
}

/// A normalised Gaussian mixture fitted by EM.
#[derive(Debug, Clone)]
pub struct Gmm {
    pub k: usize,
    pub d: usize,
    pub covariance: Covariance,
    /// `[K]`, sums to 1.
    pub weights: Vec<f64>,
    /// `[K, D]`
    pub means: Vec<f64>,
    /// `[K, D]` variances (diagonal) or `[K, D, D]` covariances (full).
    pub covariances: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

/// Precomputed per-component terms for log-densities.
enum Precomp {
    Diag(Vec<f64>), // log det per component
    Full(Vec<Cholesky<f64, nalgebra::Dyn>>),
}

impl Gmm {
    fn precompute(&self) -> Precomp {
        match self.covariance {
            Covariance::Diagonal => {
                Precomp::Diag((0..self.k).map(|c| self.covariances[c * self.d..(c + 1) * self.d].iter().map(|v| v.ln()).sum()).collect())
            }
            Covariance::Full => Precomp::Full(
                (0..self.k)
                    .map(|c| {
                        let m = DMatrix::from_row_slice(self.d, self.d, &self.covariances[c * self.d * self.d..(c + 1) * self.d * self.d]);
                        Cholesky::new(m).expect("covariances are regularised, hence positive definite")
                    })
                    .collect(),
            ),
        }
    }

    fn log_terms(&self, pre: &Precomp, x: &[f64], out: &mut [f64]) {
        let d = self.d;
        for c in 0..self.k {
            let mu = &self.means[c * d..(c + 1) * d];
            let (q, logdet) = match pre {
                Precomp::Diag(ld) => {
                    let v = &self.covariances[c * d..(c + 1) * d];
                    ((0..d).map(|j| (x[j] - mu[j]).powi(2) / v[j]).sum::<f64>(), ld[c])
                }
                Precomp::Full(ch) => {
                    let diff = DVector::from_iterator(d, (0..d).map(|j| x[j] - mu[j]));
                    let y = ch[c].l().solve_lower_triangular(&diff).expect("non-singular");
                    (y.norm_squared(), 2.0 * ch[c].l().diagonal().iter().map(|v| v.ln()).sum::<f64>())
                }
            };
            out[c] = self.weights[c].ln() - 0.5 * (d as f64 * LN_2PI + logdet + q);
        }
    }

    /// Mean log-likelihood per sample.
    pub fn mean_log_likelihood(&self, data: &[f64]) -> f64 {
        let pre = self.precompute();
        let mut a = vec![0.0; self.k];
        let rows = data.chunks_exact(self.d);
        let n = rows.len() as f64;
        rows.map(|x| {
            self.log_terms(&pre, x, &mut a);
            logsumexp(&a)
        })
        .sum::<f64>()
            / n
    }

    /// Number of free parameters: `(K−1) + K·D + K·D` (diagonal) or `+ K·D(D+1)/2` (full).
    pub fn num_params(&self) -> usize {
        let cov = match self.covariance {
            Covariance::Diagonal => self.k * self.d,
            Covariance::Full => self.k * self.d * (self.d + 1) / 2,
        };
        self.k - 1 + self.k * self.d + cov
    }

    /// `p·ln N − 2·N·mean ℓ`.
    pub fn bic(&self, data: &[f64]) -> f64 {
        let n = (data.len() / self.d) as f64;
        self.num_params() as f64 * n.ln() - 2.0 * n * self.mean_log_likelihood(data)
    }

    /// `2p − 2·N·mean ℓ`.
    pub fn aic(&self, data: &[f64]) -> f64 {
        let n = (data.len() / self.d) as f64;
        2.0 * self.num_params() as f64 - 2.0 * n * self.mean_log_likelihood(data)
    }
}

/// k-means++ seeding: the first centre uniformly, each next one with probability ∝ squared
/// distance to the nearest chosen centre.
pub fn kmeans_plus_plus(data: &[f64], d: usize, k: usize, rng: &mut impl Rng) -> Vec<f64> {
    let n = data.len() / d;
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let sq = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let mut centres = row(rng.random_range(0..n)).to_vec();
    let mut best: Vec<f64> = (0..n).map(|i| sq(row(i), &centres[..d])).collect();
    for _ in 1..k {
        let total: f64 = best.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.random::<f64>() * total;
            let mut idx = n - 1;
            for (i, b) in best.iter().enumerate() {
                if u < *b {
                    idx = i;
                    break;
                }
                u -= b;
            }
            idx
        } else {
            rng.random_range(0..n)
        };
        let c = row(pick).to_vec();
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(sq(row(i), &c));
        }
        centres.extend(c);
    }
    centres
}

/// EM fit of a `k`-component mixture to `data` (`[n, d]`).
pub fn fit_em(data: &[f64], d: usize, k: usize, opts: &EmOptions) -> Gmm {
    let n = data.len() / d;
    assert!(n >= k, "need at least k = {k} samples, got {n}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let means = kmeans_plus_plus(data, d, k, &mut rng);
    // Initial responsibilities: hard assignment to the nearest seed, then an M-step.
    let mut resp = vec![0.0; n * k];
    for i in 0..n {
        let x = &data[i * d..(i + 1) * d];
        let c = (0..k)
            .min_by(|&a, &b| {
                let da: f64 = x.iter().zip(&means[a * d..(a + 1) * d]).map(|(p, q)| (p - q).powi(2)).sum();
                let db: f64 = x.iter().zip(&means[b * d..(b + 1) * d]).map(|(p, q)| (p - q).powi(2)).sum();
                da.total_cmp(&db)
            })
            .expect("k > 0");
        resp[i * k + c] = 1.0;
    }
    let mut gmm =
        Gmm { k, d, covariance: opts.covariance, weights: vec![], means: vec![], covariances: vec![], iterations: 0, converged: false };
    m_step(&mut gmm, data, &resp, opts.reg_covar);
    let mut prev = f64::NEG_INFINITY;
    let mut a = vec![0.0; k];
    for it in 1..=opts.max_iter {
        // E-step.
        let pre = gmm.precompute();
        let mut ll = 0.0;
        for i in 0..n {
            gmm.log_terms(&pre, &data[i * d..(i + 1) * d], &mut a);
            let l = logsumexp(&a);
            ll += l / n as f64;
            for c in 0..k {
                resp[i * k + c] = (a[c] - l).exp();
            }
        }
        gmm.iterations = it;
        if (ll - prev).abs() < opts.tol {
            gmm.converged = true;
            break;
        }
        prev = ll;
        m_step(&mut gmm, data, &resp, opts.reg_covar);
    }
    gmm
}

fn m_step(g: &mut Gmm, data: &[f64], resp: &[f64], reg: f64) {
    let (k, d) = (g.k, g.d);
    let n = data.len() / d;
    let nk: Vec<f64> = (0..k).map(|c| (0..n).map(|i| resp[i * k + c]).sum::<f64>() + 10.0 * f64::EPSILON).collect();
    g.weights = nk.iter().map(|v| v / n as f64).collect();
    let mut means = vec![0.0; k * d];
    for i in 0..n {
        for c in 0..k {
            let r = resp[i * k + c];
            for j in 0..d {
                means[c * d + j] += r * data[i * d + j] / nk[c];
            }
        }
    }
    g.covariances = match g.covariance {
        Covariance::Diagonal => {
            let mut v = vec![0.0; k * d];
            for i in 0..n {
                for c in 0..k {
                    let r = resp[i * k + c];
                    for j in 0..d {
                        v[c * d + j] += r * (data[i * d + j] - means[c * d + j]).powi(2) / nk[c];
                    }
                }
            }
            v.iter().map(|x| x + reg).collect()
        }
        Covariance::Full => {
            let mut v = vec![0.0; k * d * d];
            for i in 0..n {
                for c in 0..k {
                    let r = resp[i * k + c] / nk[c];
                    for a in 0..d {
                        let da = data[i * d + a] - means[c * d + a];
                        for b in 0..d {
                            v[(c * d + a) * d + b] += r * da * (data[i * d + b] - means[c * d + b]);
                        }
                    }
                }
            }
            for c in 0..k {
                for a in 0..d {
                    v[(c * d + a) * d + a] += reg;
                }
            }
            v
        }
    };
    g.means = means;
}
