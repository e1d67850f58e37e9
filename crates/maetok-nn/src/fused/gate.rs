//! The gated residual of the CPU fast path (SiT/DiT blocks): `y = h + g_b ⊙ a` on every row of
//! sample `b` of `h` and `a` `[B, L, D]`, with the gate `g_b` read in place as a `D`-wide column
//! block of the adaLN output `m` `[B, k·D]`. The default's chunk slice, broadcast multiply and add
//! (two passes and two buffers forward; the slice's zero-filled gradient, a multiply, a
//! broadcast reduction and another multiply backward) become one pass each way, written into `h`
//! when nothing else holds it.

use rayon::prelude::*;

use super::kernels;
use super::layout::zeroed;

/// Sizes and the gate's chunk position of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    /// Rows per sample (`L`).
    pub n: usize,
    pub d: usize,
    /// Width of `m`'s rows: `k·D`.
    pub md: usize,
    pub at: usize,
}

impl Dims {
    /// The sizes when `h` and `a` are both `[B, L, D]`, `m` is `[B, k·D]` with `at < k`, and
    /// none is empty.
    pub fn of(h: &[usize], a: &[usize], m: &[usize], at: usize) -> Option<Dims> {
        let (&[b, n, d], &[mb, md]) = (h, m) else { return None };
        let ok = h == a && b * n * d > 0 && mb == b && md % d == 0 && at < md / d;
        ok.then_some(Dims { b, n, d, md, at })
    }

    /// Sample `bi`'s gate.
    fn gate<'a>(&self, m: &'a [f32], bi: usize) -> &'a [f32] {
        let start = bi * self.md + self.at * self.d;
        &m[start..start + self.d]
    }

    /// The range of sample `bi`'s rows (flat indices).
    fn rows(&self, bi: usize) -> std::ops::Range<usize> {
        bi * self.n * self.d..(bi + 1) * self.n * self.d
    }
}

/// Below this many elements the samples run one after another on the calling thread (above it,
/// one rayon task per sample).
const PAR_MIN: usize = 1 << 15;

/// Runs `f(bi, sample's rows of out)` over the samples, in parallel when `out` is large.
fn per_sample(out: &mut [f32], d: Dims, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let rows = d.n * d.d;
    if out.len() < PAR_MIN {
        out.chunks_mut(rows).enumerate().for_each(|(bi, o)| f(bi, o));
    } else {
        out.par_chunks_mut(rows).enumerate().for_each(|(bi, o)| f(bi, o));
    }
}

/// Forward into `h` itself: `h ← h + g ⊙ a`.
pub fn forward_in_place(h: &mut [f32], a: &[f32], m: &[f32], d: Dims) {
    per_sample(h, d, |bi, hs| kernels::gated_add_rows_in_place(hs, &a[d.rows(bi)], d.gate(m, bi)));
}

/// Forward into a new buffer: `y` row-major `[B, L, D]`.
pub fn forward(h: &[f32], a: &[f32], m: &[f32], d: Dims) -> Vec<f32> {
    let mut y = zeroed(h.len());
    per_sample(&mut y, d, |bi, ys| kernels::gated_add_rows(&h[d.rows(bi)], &a[d.rows(bi)], d.gate(m, bi), ys));
    y
}

/// Backward from `dy` `[B, L, D]` (`dh` is `dy` itself): `da = dy ⊙ g_b` `[B, L, D]` (when
/// `want_a`) and `dm` `[B, k·D]`, zero outside the gate's chunk, which holds `Σ_rows dy ⊙ a`
/// (when `want_m`).
pub fn backward(a: &[f32], m: &[f32], dy: &[f32], d: Dims, want_a: bool, want_m: bool) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let mut dm = want_m.then(|| vec![0.0f32; d.b * d.md]);
    let mut dg: Vec<Vec<f32>> = vec![vec![0.0f32; d.d]; d.b];
    let run = |bi: usize, da: Option<&mut [f32]>, dg: &mut [f32]| {
        kernels::gated_add_rows_backward(&a[d.rows(bi)], d.gate(m, bi), &dy[d.rows(bi)], da, dg);
    };
    let da = if want_a {
        let mut da = zeroed(dy.len());
        let rows = d.n * d.d;
        if dy.len() < PAR_MIN {
            da.chunks_mut(rows).zip(dg.iter_mut()).enumerate().for_each(|(bi, (o, g))| run(bi, Some(o), g));
        } else {
            da.par_chunks_mut(rows).zip(dg.par_iter_mut()).enumerate().for_each(|(bi, (o, g))| run(bi, Some(o), g));
        }
        Some(da)
    } else {
        if want_m {
            dg.iter_mut().enumerate().for_each(|(bi, g)| run(bi, None, g));
        }
        None
    };
    if let Some(dm) = dm.as_mut() {
        for (bi, g) in dg.iter().enumerate() {
            let start = bi * d.md + d.at * d.d;
            dm[start..start + d.d].copy_from_slice(g);
        }
    }
    (da, dm)
}
