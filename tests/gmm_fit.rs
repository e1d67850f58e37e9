//! The GMM analysis over a latent cache: a planted 3-mode latent space is fitted best with 3+
//! components by EM, the reference's gradient engine reports its weight-sum bias, and the JSON
//! and plot are written.

use maetok::gmm_fit::{gmm_fit, Engine, GmmFitArgs, GmmInput};
use maetok::train::data::latent_cache::CacheManifest;
use maetok::train::data::{LatentCacheWriter, LatentRecord};
use rand::{Rng, SeedableRng};

#[test]
fn em_finds_the_planted_modes_and_reports_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let n = 180;
    let mut w = LatentCacheWriter::create_or_resume(&cache, CacheManifest::new("t".into(), "synthetic".into(), 32, [4, 4], classes, n, 64))
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for i in 0..n {
        let label = i % 3;
        let z: Vec<f32> = (0..16).map(|j| (if j % 3 == label { 6.0 } else { 0.0 }) + rng.random::<f32>() - 0.5).collect();
        w.push(LatentRecord { zq_flip: z.clone(), zq: z, label, index: i, path: format!("{label}/{i}.png") }).unwrap();
    }
    w.finish().unwrap();
    let out = dir.path().join("gmm");
    let args = GmmFitArgs {
        input: GmmInput::Cache { dir: cache.clone(), per_token: false, samples_per_class: Some(50), max_classes: None, factor: 1.0 },
        reduce: Some(8),
        components: vec![1, 3, 6],
        engines: vec![Engine::EmDiag, Engine::Gradient],
        val_fraction: 0.2,
        seed: 0,
        em_max_iter: 200,
        em_tol: 1e-6,
        reg_covar: 1e-6,
        epochs: 20,
        batch_size: 64,
        lr: 1e-2,
        out: out.clone(),
    };
    let r = gmm_fit(&args).unwrap();
    assert_eq!((r.rows, r.train_rows, r.val_rows, r.fit_dim, r.labels_used), (150, 120, 30, 8, 3));
    assert!(r.pca_explained_ratio.unwrap() > 0.9);
    assert_eq!(r.results.len(), 6);
    let em: Vec<_> = r.results.iter().filter(|x| x.engine == Engine::EmDiag).collect();
    assert!(em[1].val_nll < em[0].val_nll - 1.0, "3 modes fit better than 1: {} vs {}", em[1].val_nll, em[0].val_nll);
    assert!(em[1].bic < em[0].bic);
    assert!((em[1].weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let grad = r.results.iter().find(|x| x.engine == Engine::Gradient && x.k == 3).unwrap();
    assert!(grad.log_weight_sum.unwrap() > 0.0, "the reference's raw weights grow");
    assert!(em[1].val_nll <= grad.val_nll_normalised.unwrap(), "EM is not worse than the gradient fit");
    assert!(out.join("gmm_fit.json").is_file() && out.join("nll_vs_k.svg").is_file());

    // Per-token rows: 4 tokens per image.
    let tok = GmmFitArgs {
        input: GmmInput::Cache { dir: cache, per_token: true, samples_per_class: None, max_classes: Some(2), factor: 1.0 },
        reduce: None,
        engines: vec![Engine::EmDiag],
        components: vec![2],
        ..args.clone()
    };
    let r = gmm_fit(&tok).unwrap();
    assert_eq!((r.rows, r.fit_dim, r.labels_used), (120 * 4, 4, 2));
    // Too many components for the data is refused clearly.
    let err = gmm_fit(&GmmFitArgs { components: vec![5000], ..args }).unwrap_err().to_string();
    assert!(err.contains("5000"), "{err}");
}
