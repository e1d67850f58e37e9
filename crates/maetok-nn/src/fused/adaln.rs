//! The adaLN modulation kernel of the CPU fast path (SiT/DiT blocks and final layer):
//! `y = LN(x)·(1 + scale_b) + shift_b` (LayerNorm without affine) on every row of sample `b` of
//! `x` `[B, L, D]`, with `shift_b` and `scale_b` read in place as two `D`-wide column blocks of
//! the modulation `m` `[B, k·D]` (the adaLN Linear's output, not split). Per sample this is a
//! LayerNorm whose affine weight is `1 + scale_b` and bias `shift_b`, so it runs as one
//! [`kernels::layer_norm_rows`] pass; the default's chunk slices, normalisation, broadcast
//! multiply and add (a pass and a buffer each, each with its own backward) become one pass each
//! way.

use rayon::prelude::*;

use super::kernels;
use super::layout::zeroed;

/// Sizes and chunk positions of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    /// Rows per sample (`L`).
    pub n: usize,
    pub d: usize,
    /// Width of `m`'s rows: `k·D`.
    pub md: usize,
    pub shift_at: usize,
    pub scale_at: usize,
}

impl Dims {
    /// The sizes when `x` `[B, L, D]` and `m` `[B, k·D]` fit (two different chunks `< k`) and
    /// neither is empty.
    pub fn of(x: &[usize], m: &[usize], shift_at: usize, scale_at: usize) -> Option<Dims> {
        let (&[b, n, d], &[mb, md]) = (x, m) else { return None };
        let ok = b * n * d > 0 && mb == b && md % d == 0 && shift_at < md / d && scale_at < md / d && shift_at != scale_at;
        ok.then_some(Dims { b, n, d, md, shift_at, scale_at })
    }

    /// Sample `bi`'s chunk `at` of `m`.
    fn chunk<'a>(&self, m: &'a [f32], bi: usize, at: usize) -> &'a [f32] {
        let start = bi * self.md + at * self.d;
        &m[start..start + self.d]
    }

    /// The range of sample `bi`'s rows in `x` (flat indices).
    fn rows(&self, bi: usize) -> std::ops::Range<usize> {
        bi * self.n * self.d..(bi + 1) * self.n * self.d
    }

    /// The range of sample `bi`'s statistics (two per row).
    fn stats(&self, bi: usize) -> std::ops::Range<usize> {
        2 * bi * self.n..2 * (bi + 1) * self.n
    }
}

/// Below this many elements of `x` the samples run one after another on the calling thread
/// (above it, one rayon task per sample, each LayerNorm pass itself split by rows when large).
const PAR_MIN: usize = 1 << 15;

/// `1 + scale_b`: the per-sample LayerNorm weight.
fn weight(m: &[f32], d: Dims, bi: usize) -> Vec<f32> {
    d.chunk(m, bi, d.scale_at).iter().map(|&s| s + 1.0).collect()
}

/// Forward: `y` row-major `[B, L, D]` and the LayerNorm statistics (mean, `1/√(var + eps)` per
/// row) the backward needs.
pub fn forward(x: &[f32], m: &[f32], d: Dims, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut y = zeroed(x.len());
    let mut stats = vec![0.0f32; 2 * d.b * d.n];
    let run = |(bi, (y, stats)): (usize, (&mut [f32], &mut [f32]))| {
        let (w, shift) = (weight(m, d, bi), d.chunk(m, bi, d.shift_at));
        kernels::layer_norm_rows(&x[d.rows(bi)], Some(&w), Some(shift), eps, d.d, y, stats);
    };
    let (rows, st) = (d.n * d.d, 2 * d.n);
    if x.len() < PAR_MIN {
        y.chunks_mut(rows).zip(stats.chunks_mut(st)).enumerate().for_each(run);
    } else {
        y.par_chunks_mut(rows).zip(stats.par_chunks_mut(st)).enumerate().for_each(run);
    }
    (y, stats)
}

/// Backward from `dy` `[B, L, D]`: `dx` `[B, L, D]` (when `want_x`) and `dm` `[B, k·D]` (when
/// `want_m`; zero outside the two chunks): `dshift_b = Σ_rows dy`, `dscale_b = Σ_rows dy ⊙ x̂`,
/// `dx` the LayerNorm backward of `dy ⊙ (1 + scale_b)` (computed, and dropped, even when only
/// `dm` is wanted: inside a model `x` always needs its gradient).
pub fn backward(
    x: &[f32],
    m: &[f32],
    stats: &[f32],
    dy: &[f32],
    d: Dims,
    want_x: bool,
    want_m: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let mut dx = zeroed(x.len());
    let run = |(bi, dx): (usize, &mut [f32])| {
        let w = weight(m, d, bi);
        kernels::layer_norm_rows_backward(&x[d.rows(bi)], Some(&w), &stats[d.stats(bi)], &dy[d.rows(bi)], d.d, dx, want_m)
    };
    let rows = d.n * d.d;
    let params: Vec<(Vec<f32>, Vec<f32>)> = if x.len() < PAR_MIN {
        dx.chunks_mut(rows).enumerate().map(run).collect()
    } else {
        dx.par_chunks_mut(rows).enumerate().map(run).collect()
    };
    let dm = want_m.then(|| {
        let mut dm = vec![0.0f32; d.b * d.md];
        for (bi, (dw, db)) in params.into_iter().enumerate() {
            let row = bi * d.md;
            dm[row + d.scale_at * d.d..row + (d.scale_at + 1) * d.d].copy_from_slice(&dw);
            dm[row + d.shift_at * d.d..row + (d.shift_at + 1) * d.d].copy_from_slice(&db);
        }
        dm
    });
    (want_x.then_some(dx), dm)
}
