//! GMM fits: the reference's gradient-trained mixture against `fixtures/gmm`, and EM.
#![allow(clippy::needless_range_loop)]

mod common;
use common::tensors as read;
use maetok_eval::gmm::{fit_em, fit_gradient, standardise, Covariance, EmOptions, GradientFitOptions, RawDiagGmm};
use rand::{Rng, SeedableRng};

fn close(name: &str, a: &[f64], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "{name}: length");
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() - rtol * y.abs()).fold(f64::MIN, f64::max);
    assert!(worst <= atol, "{name}: exceeds atol {atol} + rtol {rtol}·|b| by {worst:.3e}");
}

fn rows(data: &[f64], d: usize, idx: &[f64]) -> Vec<f64> {
    idx.iter().flat_map(|&i| data[i as usize * d..(i as usize + 1) * d].to_vec()).collect()
}

#[test]
fn standardisation_matches_reference() {
    let t = read("gmm/fixture.safetensors");
    let (n, d) = (t["data/standardized"].0[0], t["data/standardized"].0[1]);
    let (z, _, _) = standardise(&t["data/latents"].1, n, d);
    close("standardized", &z, &t["data/standardized"].1, 1e-6, 1e-5);
}

/// A number that meta.json's `algorithm` text gives after `key` (e.g. `batch_size 64`, `lr=1e-3`).
fn algorithm_number(key: &str) -> f64 {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixtures().join("gmm/meta.json")).unwrap()).unwrap();
    let text = meta["algorithm"].to_string();
    let at = text.find(key).unwrap_or_else(|| panic!("meta.json algorithm names no {key}")) + key.len();
    let num: String =
        text[at..].trim_start_matches([' ', '=']).chars().take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '-')).collect();
    num.parse().unwrap_or_else(|_| panic!("{key}: '{num}'"))
}

#[test]
fn gradient_fit_matches_reference_for_every_recorded_k() {
    let t = read("gmm/fixture.safetensors");
    let d = t["data/standardized"].0[1];
    let data = &t["data/standardized"].1;
    let train = rows(data, d, &t["data/train_idx"].1);
    let val = rows(data, d, &t["data/val_idx"].1);
    let n_train = t["data/train_idx"].1.len();
    let (batch_size, lr) = (algorithm_number("batch_size") as usize, algorithm_number("lr="));
    let mut ks: Vec<usize> = t.keys().filter_map(|k| k.strip_prefix('K')?.split('/').next()?.parse().ok()).collect();
    ks.sort();
    ks.dedup();
    assert!(!ks.is_empty());
    for k in ks {
        let init = RawDiagGmm::new(k, d, t[&format!("K{k}/init/means")].1.clone());
        let init_ll = init.mean_log_likelihood(&train);
        let want = common::scalar("gmm", &format!("K{k}/init_train_mean_ll"));
        assert!((init_ll - want).abs() <= 1e-4 + 1e-6 * want.abs(), "K{k} init ll {init_ll} vs {want}");
        let perms = &t[&format!("K{k}/epoch_perms")].1;
        let first_batch: Vec<f64> = perms[..batch_size.min(n_train)].to_vec();
        let fb = -init.mean_log_likelihood(&rows(&train, d, &first_batch));
        let want = common::scalar("gmm", &format!("K{k}/first_batch_loss"));
        assert!((fb - want).abs() <= 1e-4 + 1e-6 * want.abs(), "K{k} first batch loss {fb} vs {want}");

        let epochs = t[&format!("K{k}/train_loss_per_epoch")].1.len();
        let opts = GradientFitOptions { epochs, batch_size, lr };
        let fit = fit_gradient(init, &train, &val, &opts, |e| perms[e * n_train..(e + 1) * n_train].iter().map(|&v| v as usize).collect());
        let p = |n: &str| t[&format!("K{k}/{n}")].1.clone();
        close(&format!("K{k} first-step weights"), &fit.after_first_step.weights, &p("after_first_step/weights"), 1e-6, 1e-5);
        close(&format!("K{k} first-step means"), &fit.after_first_step.means, &p("after_first_step/means"), 1e-6, 1e-5);
        close(&format!("K{k} first-step log_cov"), &fit.after_first_step.log_cov, &p("after_first_step/log_covariances"), 1e-6, 1e-5);
        close(&format!("K{k} train loss"), &fit.train_loss, &p("train_loss_per_epoch"), 1e-3, 1e-4);
        close(&format!("K{k} val loss"), &fit.val_loss, &p("val_loss_per_epoch"), 1e-3, 1e-4);
        close(&format!("K{k} final weights"), &fit.model.weights, &p("final/weights"), 1e-3, 1e-3);
        close(&format!("K{k} final means"), &fit.model.means, &p("final/means"), 1e-3, 1e-3);
        close(&format!("K{k} final log_cov"), &fit.model.log_cov, &p("final/log_covariances"), 1e-3, 1e-3);
        let bic = fit.model.bic(&train);
        let want = common::scalar("gmm", &format!("K{k}/bic"));
        assert!((bic - want).abs() <= 1.0 + 1e-4 * want.abs(), "K{k} bic {bic} vs {want}");

        // A correct EM fit is never worse than the gradient variant (judged as a normalised density).
        let em = fit_em(&train, d, k, &EmOptions { max_iter: epochs, ..EmOptions::default() });
        let em_nll = -em.mean_log_likelihood(&train);
        let grad_nll = fit.model.normalised_nll(&train);
        println!(
            "K{k}: EM train NLL {em_nll:.3}, gradient variant (normalised) {grad_nll:.3}, its reported {:.3}, ln Σw {:.3}",
            fit.train_loss.last().unwrap(),
            fit.model.log_weight_sum()
        );
        assert!(em_nll <= grad_nll + 1e-9, "K{k}: EM {em_nll} worse than gradient fit {grad_nll}");
    }
}

/// Samples a known mixture and checks that EM recovers its components.
fn recover(cov: Covariance) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let d = 3;
    let means = [[-6.0, 0.0, 2.0], [5.0, 5.0, -3.0], [0.0, -7.0, 6.0]];
    let stds = [[1.0, 0.5, 1.5], [0.7, 1.2, 0.4], [1.1, 0.9, 0.8]];
    let weights = [0.5, 0.3, 0.2];
    let n = 3000;
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let u: f64 = rng.random();
        let c = if u < weights[0] {
            0
        } else if u < weights[0] + weights[1] {
            1
        } else {
            2
        };
        for j in 0..d {
            // Box-Muller normal draw.
            let (a, b): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let z = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
            data.push(means[c][j] + stds[c][j] * z);
        }
    }
    let g = fit_em(&data, d, 3, &EmOptions { covariance: cov, max_iter: 300, tol: 1e-6, ..EmOptions::default() });
    assert!(g.converged, "EM did not converge");
    for c in 0..3 {
        // Match each true component to the nearest fitted mean.
        let (best, dist) = (0..3)
            .map(|f| (f, (0..d).map(|j| (g.means[f * d + j] - means[c][j]).powi(2)).sum::<f64>().sqrt()))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(dist < 0.15, "component {c}: nearest fitted mean is {dist} away");
        assert!((g.weights[best] - weights[c]).abs() < 0.03, "component {c}: weight {} vs {}", g.weights[best], weights[c]);
        for j in 0..d {
            let var = match cov {
                Covariance::Diagonal => g.covariances[best * d + j],
                Covariance::Full => g.covariances[(best * d + j) * d + j],
            };
            assert!(
                (var.sqrt() - stds[c][j]).abs() < 0.1 * stds[c][j] + 0.02,
                "component {c} dim {j}: std {} vs {}",
                var.sqrt(),
                stds[c][j]
            );
        }
    }
    assert!(g.bic(&data).is_finite() && g.aic(&data) < g.bic(&data));
}

#[test]
fn em_recovers_a_synthetic_diagonal_mixture() {
    recover(Covariance::Diagonal);
}

#[test]
fn em_recovers_a_synthetic_mixture_with_full_covariances() {
    recover(Covariance::Full);
}
