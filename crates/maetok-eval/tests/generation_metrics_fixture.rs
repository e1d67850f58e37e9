//! FID, Inception Score and precision/recall against the ADM-evaluator values in
//! `fixtures/metrics` (tolerances from its meta.json), and the ADM `.npz` round trip.

mod common;
use common::tensors as read;
use maetok_eval::npz::{read_samples, write_samples};
use maetok_eval::precision_recall::manifold_membership;
use maetok_eval::{frechet_distance, inception_score, precision_recall, FeatureStats};

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn frechet_distance_matches_adm_evaluator() {
    let t = read("metrics/fixture.safetensors");
    let t64 = read("metrics/metrics_f64.safetensors");
    for (case, atol) in [("fid", 1e-4), ("fid_near_singular", 5e-3)] {
        let (shape1, f1) = &t[&format!("{case}/features1")];
        let (shape2, f2) = &t[&format!("{case}/features2")];
        let s1 = FeatureStats::from_features(&f32s(f1), shape1[0], shape1[1]);
        let s2 = FeatureStats::from_features(&f32s(f2), shape2[0], shape2[1]);
        // Our statistics equal numpy's (float64 covariance of the float32 features).
        let want_sigma = &t64[&format!("{case}/sigma1")].1;
        let max_err = s1.sigma.iter().zip(want_sigma).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(max_err < 1e-9, "{case} sigma1 differs by {max_err}");
        let mu_err = s2.mu.iter().zip(&t[&format!("{case}/mu2")].1).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(mu_err < 1e-6, "{case} mu2 differs by {mu_err}");
        let fid = frechet_distance(&s1, &s2);
        let want = common::scalar("metrics", &format!("{case}/fid_adm"));
        println!("{case}: ours {fid}, ADM {want}, diff {:.2e}", (fid - want).abs());
        assert!((fid - want).abs() <= atol + 1e-6 * want.abs());
        let sym = common::scalar("metrics", &format!("{case}/fid_symmetric_eigh"));
        assert!((fid - sym).abs() <= 1e-6 * sym.abs() + 1e-7, "{case}: eigh variant {sym}");
        // Identical statistics give 0.
        let self_fid = frechet_distance(&s1, &s1);
        assert!(self_fid.abs() <= atol, "{case}: FID of a set with itself is {self_fid}");
    }
}

#[test]
fn inception_score_matches_adm_evaluator() {
    let t = read("metrics/fixture.safetensors");
    let logits = f32s(&t["inception_score/logits"].1);
    let (one_split, _) = inception_score(&logits, 100, 1008, 5000);
    let want = common::scalar("metrics", "inception_score/is_adm_split5000");
    assert!((one_split - want).abs() <= 1e-5 * want, "{one_split} vs {want}");
    let (mean, std) = inception_score(&logits, 100, 1008, 10);
    let (wm, ws) =
        (common::scalar("metrics", "inception_score/is_split10_mean"), common::scalar("metrics", "inception_score/is_split10_std"));
    assert!((mean - wm).abs() <= 1e-5 * wm, "{mean} vs {wm}");
    assert!((std - ws).abs() <= 1e-4 * ws, "{std} vs {ws}");
}

#[test]
fn precision_recall_matches_adm_manifold_estimator() {
    let t = read("metrics/fixture.safetensors");
    for case in ["prec_recall", "prec_recall_int"] {
        let (shape, refs) = &t[&format!("{case}/ref_features")];
        let (d, refs) = (shape[1], f32s(refs));
        let samples = f32s(&t[&format!("{case}/sample_features")].1);
        let radii = maetok_eval::ManifoldRadii::new(&refs, d, 3);
        let want_r = &t[&format!("{case}/ref_radii")].1;
        for (a, b) in radii.0.iter().zip(want_r) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{case} radius {a} vs {b}");
        }
        let (p, r) = precision_recall(&refs, &samples, d, 3);
        assert_eq!(p, common::scalar("metrics", &format!("{case}/precision")), "{case} precision");
        assert_eq!(r, common::scalar("metrics", &format!("{case}/recall")), "{case} recall");
        let (s_in, r_in) = manifold_membership(&refs, &samples, d, 3);
        let want_s: Vec<bool> = t[&format!("{case}/sample_in_ref_manifold")].1.iter().map(|&v| v != 0.0).collect();
        let want_r: Vec<bool> = t[&format!("{case}/ref_in_sample_manifold")].1.iter().map(|&v| v != 0.0).collect();
        assert_eq!(s_in, want_s, "{case} sample membership");
        assert_eq!(r_in, want_r, "{case} ref membership");
    }
}

#[test]
fn adm_npz_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.npz");
    let arr = ndarray::Array4::from_shape_fn((3, 4, 5, 3), |(n, h, w, c)| (n * 60 + h * 15 + w * 3 + c) as u8);
    write_samples(&path, &arr).unwrap();
    assert_eq!(read_samples(&path).unwrap(), arr);
    let bad = dir.path().join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let err = read_samples(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.npz"), "{err}");
    let err = read_samples(dir.path().join("missing.npz")).unwrap_err().to_string();
    assert!(err.contains("missing.npz") && err.contains("cannot open"), "{err}");
}
