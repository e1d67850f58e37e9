//! Improved precision and recall (Kynkäänniemi et al. 2019) as the ADM evaluator's
//! `ManifoldEstimator` computes them: squared Euclidean distances, k-NN radii (k = 3), `<=`.

/// Per-point k-NN radii (squared distances) of a feature set.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifoldRadii(pub Vec<f64>);

/// Squared distances between row `i` of `a` and every row of `b` (`max(|u|² − 2u·v + |v|², 0)`).
fn sq_dists(a: &[f32], i: usize, b: &[f32], d: usize, out: &mut Vec<f64>) {
    out.clear();
    let u = &a[i * d..(i + 1) * d];
    let uu: f64 = u.iter().map(|&x| (x as f64).powi(2)).sum();
    for v in b.chunks_exact(d) {
        let vv: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum();
        let uv: f64 = u.iter().zip(v).map(|(&x, &y)| x as f64 * y as f64).sum();
        out.push((uu - 2.0 * uv + vv).max(0.0));
    }
}

impl ManifoldRadii {
    /// The k-th smallest distance of each point to the set itself (index 0 is the point itself,
    /// so this is the k-th nearest other point, as `np.partition(D, k)[:, k]`).
    pub fn new(features: &[f32], d: usize, k: usize) -> Self {
        let n = features.len() / d;
        assert!(k < n, "need more than k = {k} points, got {n}");
        let mut buf = Vec::with_capacity(n);
        let radii = (0..n)
            .map(|i| {
                sq_dists(features, i, features, d, &mut buf);
                let (_, kth, _) = buf.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
                *kth
            })
            .collect();
        Self(radii)
    }
}

/// Fraction of `points` inside the manifold of `centres` (any centre `c` with `D(c, p) <= r_c`).
fn coverage(centres: &[f32], radii: &ManifoldRadii, points: &[f32], d: usize) -> (f64, Vec<bool>) {
    let n = points.len() / d;
    let mut buf = Vec::new();
    let inside: Vec<bool> = (0..n)
        .map(|j| {
            sq_dists(points, j, centres, d, &mut buf);
            buf.iter().zip(&radii.0).any(|(dist, r)| dist <= r)
        })
        .collect();
    (inside.iter().filter(|&&b| b).count() as f64 / n as f64, inside)
}

/// `(precision, recall)` of `samples` against `refs` (both `[n, d]` row-major), k-NN radius `k`
/// (ADM uses 3): precision = share of samples inside the reference manifold, recall = share of
/// references inside the sample manifold.
pub fn precision_recall(refs: &[f32], samples: &[f32], d: usize, k: usize) -> (f64, f64) {
    let r_ref = ManifoldRadii::new(refs, d, k);
    let r_sam = ManifoldRadii::new(samples, d, k);
    let (precision, _) = coverage(refs, &r_ref, samples, d);
    let (recall, _) = coverage(samples, &r_sam, refs, d);
    (precision, recall)
}

/// Per-point membership flags, for inspection: `(sample_in_ref_manifold, ref_in_sample_manifold)`.
pub fn manifold_membership(refs: &[f32], samples: &[f32], d: usize, k: usize) -> (Vec<bool>, Vec<bool>) {
    let r_ref = ManifoldRadii::new(refs, d, k);
    let r_sam = ManifoldRadii::new(samples, d, k);
    (coverage(refs, &r_ref, samples, d).1, coverage(samples, &r_sam, refs, d).1)
}
