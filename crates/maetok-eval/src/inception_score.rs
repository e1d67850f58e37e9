//! Inception Score from classifier logits, as the ADM evaluator computes it.

/// `exp(E_x KL(p(y|x) ‖ p(y)))` per split of `split_size` consecutive rows (the last split may be
/// shorter), softmax in f64. Returns `(mean, std)` over splits (ADM reports the mean; 50k samples
/// with `split_size` 5000 give the usual 10 splits). `logits`: `[n, classes]` row-major.
pub fn inception_score(logits: &[f32], n: usize, classes: usize, split_size: usize) -> (f64, f64) {
    assert_eq!(logits.len(), n * classes, "logits must hold n*classes values");
    assert!(split_size > 0 && n > 0);
    let probs: Vec<Vec<f64>> = logits
        .chunks_exact(classes)
        .map(|row| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect()
        })
        .collect();
    let scores: Vec<f64> = probs
        .chunks(split_size)
        .map(|part| {
            let m = part.len() as f64;
            let marginal: Vec<f64> = (0..classes).map(|c| part.iter().map(|p| p[c]).sum::<f64>() / m).collect();
            let kl: f64 = part
                .iter()
                .map(|p| p.iter().zip(&marginal).map(|(&pi, &qi)| if pi > 0.0 { pi * (pi.ln() - qi.ln()) } else { 0.0 }).sum::<f64>())
                .sum::<f64>()
                / m;
            kl.exp()
        })
        .collect();
    let k = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / k;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / k).sqrt();
    (mean, std)
}
