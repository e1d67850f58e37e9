//! PCA: the randomised solver (large d) agrees with the exact one, and both find a planted
//! low-rank structure.

use maetok_eval::pca::{Pca, PcaSolver};
use rand::{Rng, SeedableRng};

/// `n` points near a `rank`-dimensional subspace of R^d with variances 100, 81, 64, …
fn planted(n: usize, d: usize, rank: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let basis: Vec<f32> = (0..rank * d).map(|_| rng.random::<f32>() - 0.5).collect();
    let mut data = vec![0f32; n * d];
    for i in 0..n {
        for r in 0..rank {
            let coef = (rng.random::<f32>() - 0.5) * 2.0 * (10.0 - r as f32) * 1.7;
            for j in 0..d {
                data[i * d + j] += coef * basis[r * d + j];
            }
        }
        for j in 0..d {
            data[i * d + j] += (rng.random::<f32>() - 0.5) * 0.01 + 3.0;
        }
    }
    data
}

#[test]
fn randomised_pca_matches_the_exact_solver_and_recovers_the_subspace() {
    let (n, rank) = (400, 5);
    for d in [64, 600] {
        let data = planted(n, d, rank, 1);
        let pca = Pca::fit(&data, n, d, rank, 7);
        assert!(pca.explained_ratio() > 0.999, "d={d}: explained {}", pca.explained_ratio());
        // Components are orthonormal.
        for a in 0..rank {
            for b in 0..rank {
                let dot: f32 = (0..d).map(|j| pca.components[a * d + j] * pca.components[b * d + j]).sum();
                assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-3, "d={d}: <{a},{b}> = {dot}");
            }
        }
        let y = pca.transform(&data);
        assert_eq!(y.len(), n * rank);
        // Projected variances equal the explained variances, in decreasing order.
        for c in 0..rank {
            let var: f64 = (0..n).map(|i| (y[i * rank + c] as f64).powi(2)).sum::<f64>() / (n - 1) as f64;
            assert!((var / pca.explained_variance[c] - 1.0).abs() < 1e-3, "d={d} component {c}: {var} vs {}", pca.explained_variance[c]);
            if c > 0 {
                assert!(pca.explained_variance[c] <= pca.explained_variance[c - 1]);
            }
        }
    }
    // Same data, both solvers: the spectra and the subspaces agree.
    let d = 64;
    let data = planted(n, d, rank, 2);
    let exact = Pca::fit_with(&data, n, d, rank, 3, PcaSolver::Exact);
    let rand = Pca::fit_with(&data, n, d, rank, 3, PcaSolver::Randomised);
    for c in 0..rank {
        assert!((rand.explained_variance[c] / exact.explained_variance[c] - 1.0).abs() < 1e-3, "variance {c}");
        let dot: f32 = (0..d).map(|j| rand.components[c * d + j] * exact.components[c * d + j]).sum();
        assert!(dot.abs() > 0.999, "component {c}: |cos| = {}", dot.abs());
    }
}
