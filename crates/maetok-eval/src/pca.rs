//! Principal component analysis for the GMM analysis of latent spaces (`gmm_fit --reduce K`),
//! like scikit-learn's `PCA(n_components=K)`: centred, not whitened. Small dimensions use the
//! exact eigendecomposition of the covariance; large ones a randomised SVD (Halko et al. 2011:
//! Gaussian sketch with 10 extra columns, 4 power iterations with re-orthonormalisation), as
//! scikit-learn's automatic solver does for these shapes. Data are row-major `[n, d]` f32.

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Above this dimension the randomised solver is used.
const EXACT_MAX_DIM: usize = 512;

/// How to compute the components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcaSolver {
    /// Exact up to d = 512, randomised above.
    Auto,
    Exact,
    Randomised,
}

/// A fitted projection.
#[derive(Debug, Clone)]
pub struct Pca {
    pub d: usize,
    pub k: usize,
    /// `[d]` data mean.
    pub mean: Vec<f32>,
    /// `[k, d]` principal axes, row-major, by decreasing variance.
    pub components: Vec<f32>,
    /// `[k]` variance along each axis (unbiased).
    pub explained_variance: Vec<f64>,
    /// Total variance of the data (sum over all `d` dimensions).
    pub total_variance: f64,
}

fn orthonormal_columns(m: DMatrix<f32>) -> DMatrix<f32> {
    m.qr().q()
}

impl Pca {
    /// Fits `k` components to `n` rows of dimension `d` (`k ≤ min(n, d)`), automatic solver.
    pub fn fit(data: &[f32], n: usize, d: usize, k: usize, seed: u64) -> Self {
        Self::fit_with(data, n, d, k, seed, PcaSolver::Auto)
    }

    /// [`Pca::fit`] with a chosen solver.
    pub fn fit_with(data: &[f32], n: usize, d: usize, k: usize, seed: u64, solver: PcaSolver) -> Self {
        assert_eq!(data.len(), n * d, "data must hold n*d values");
        assert!(k >= 1 && k <= n.min(d), "need 1 <= k = {k} <= min(n, d) = {}", n.min(d));
        let mut mean = vec![0f64; d];
        for row in data.chunks_exact(d) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mean: Vec<f32> = mean.into_iter().map(|m| m as f32).collect();
        // Centred data, n x d.
        let x = DMatrix::from_fn(n, d, |i, j| data[i * d + j] - mean[j]);
        let denom = (n.max(2) - 1) as f64;
        let total_variance = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / denom;
        let exact = match solver {
            PcaSolver::Auto => d <= EXACT_MAX_DIM,
            PcaSolver::Exact => true,
            PcaSolver::Randomised => false,
        };
        let (components, explained) = if exact {
            let xd = x.map(|v| v as f64);
            let cov = xd.transpose() * &xd / denom;
            let eig = SymmetricEigen::new(cov);
            let mut order: Vec<usize> = (0..d).collect();
            order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
            let comps = order[..k].iter().flat_map(|&c| eig.eigenvectors.column(c).iter().map(|&v| v as f32).collect::<Vec<_>>()).collect();
            (comps, order[..k].iter().map(|&c| eig.eigenvalues[c].max(0.0)).collect())
        } else {
            let l = (k + 10).min(n.min(d));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let omega = DMatrix::from_fn(d, l, |_, _| rng.sample::<f32, _>(StandardNormal));
            let mut q = orthonormal_columns(&x * omega);
            for _ in 0..4 {
                let z = orthonormal_columns(x.transpose() * &q);
                q = orthonormal_columns(&x * z);
            }
            let b = q.transpose() * &x; // l x d
            let svd = b.map(|v| v as f64).svd(false, true);
            let vt = svd.v_t.expect("requested V^T");
            let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
            order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
            let comps = order[..k].iter().flat_map(|&r| vt.row(r).iter().map(|&v| v as f32).collect::<Vec<_>>()).collect();
            (comps, order[..k].iter().map(|&r| svd.singular_values[r].powi(2) / denom).collect())
        };
        Self { d, k, mean, components, explained_variance: explained, total_variance }
    }

    /// Projects rows `[n, d]` onto the components → `[n, k]`.
    pub fn transform(&self, data: &[f32]) -> Vec<f32> {
        let n = data.len() / self.d;
        let x = DMatrix::from_fn(n, self.d, |i, j| data[i * self.d + j] - self.mean[j]);
        let w = DMatrix::from_row_slice(self.k, self.d, &self.components);
        let y = x * w.transpose();
        (0..n).flat_map(|i| (0..self.k).map(move |c| (i, c))).map(|(i, c)| y[(i, c)]).collect()
    }

    /// Share of the total variance the components keep.
    pub fn explained_ratio(&self) -> f64 {
        self.explained_variance.iter().sum::<f64>() / self.total_variance.max(f64::MIN_POSITIVE)
    }
}
