//! The MoVQ modulation kernel of the CPU fast path: `h = LN(x)` (no affine) on every row of
//! `x` `[B, N, D]`, and on the last `T` rows `h·scale + shift`, with `shift` and `scale` read in
//! place as two `D`-wide column blocks of the modulation `m` `[B, T, k·D]` (the adaLN Linear's
//! output, not split). The default's chunk slices, latent-row slice and slice assignment (each
//! back-propagated through a zero-filled tensor) become one pass each way.

use super::kernels;
use super::layout::zeroed;

/// Sizes and chunk positions of one call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub n: usize,
    pub d: usize,
    pub t: usize,
    /// Width of `m`'s rows: `k·D`.
    pub md: usize,
    pub shift_at: usize,
    pub scale_at: usize,
}

impl Dims {
    /// The sizes when `x` `[B, N, D]` and `m` `[B, T, k·D]` fit (`T ≤ N`, two different chunks `< k`) and
    /// neither is empty.
    pub fn of(x: &[usize], m: &[usize], shift_at: usize, scale_at: usize) -> Option<Dims> {
        let (&[b, n, d], &[mb, t, md]) = (x, m) else { return None };
        let ok = b * n * d > 0 && mb == b && t <= n && md % d == 0 && shift_at < md / d && scale_at < md / d && shift_at != scale_at;
        ok.then_some(Dims { b, n, d, t, md, shift_at, scale_at })
    }

    /// Row `(bi, ti)` of `m`'s chunk `at`.
    fn chunk<'a>(&self, m: &'a [f32], bi: usize, ti: usize, at: usize) -> &'a [f32] {
        let start = (bi * self.t + ti) * self.md + at * self.d;
        &m[start..start + self.d]
    }

    /// The latent rows `(bi, ti, row index in x)`.
    fn latent_rows(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.b).flat_map(move |bi| (0..self.t).map(move |ti| (bi, ti, bi * self.n + self.n - self.t + ti)))
    }
}

/// Forward: `y` row-major `[B, N, D]` and the LayerNorm statistics (mean, `1/√(var + eps)` per
/// row) the backward needs.
pub fn forward(x: &[f32], m: &[f32], d: Dims, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut y = zeroed(x.len());
    let mut stats = vec![0.0f32; 2 * d.b * d.n];
    kernels::layer_norm_rows(x, None, None, eps, d.d, &mut y, &mut stats);
    for (bi, ti, r) in d.latent_rows() {
        let (shift, scale) = (d.chunk(m, bi, ti, d.shift_at), d.chunk(m, bi, ti, d.scale_at));
        for ((v, &s), &sh) in y[r * d.d..(r + 1) * d.d].iter_mut().zip(scale).zip(shift) {
            *v = *v * s + sh;
        }
    }
    (y, stats)
}

/// Backward from `dy` `[B, N, D]`: `dx` `[B, N, D]` (when `want_x`) and `dm` `[B, T, k·D]`
/// (when `want_m`; zero outside the two chunks).
///
/// `dshift = dy`, `dscale = dy ⊙ x̂` on the latent rows; `dx` is the LayerNorm backward of
/// `dy` (prefix rows) and `dy ⊙ scale` (latent rows).
pub fn backward(
    x: &[f32],
    m: &[f32],
    stats: &[f32],
    dy: &[f32],
    d: Dims,
    want_x: bool,
    want_m: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let dm = want_m.then(|| {
        let mut dm = zeroed(d.b * d.t * d.md);
        for (bi, ti, r) in d.latent_rows() {
            let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
            let (xr, g) = (&x[r * d.d..(r + 1) * d.d], &dy[r * d.d..(r + 1) * d.d]);
            let row = (bi * d.t + ti) * d.md;
            dm[row + d.shift_at * d.d..row + (d.shift_at + 1) * d.d].copy_from_slice(g);
            for ((o, &gi), &v) in dm[row + d.scale_at * d.d..row + (d.scale_at + 1) * d.d].iter_mut().zip(g).zip(xr) {
                *o = gi * ((v - mean) * rstd);
            }
        }
        dm
    });
    let dx = want_x.then(|| {
        let mut g = dy.to_vec();
        for (bi, ti, r) in d.latent_rows() {
            for (v, &s) in g[r * d.d..(r + 1) * d.d].iter_mut().zip(d.chunk(m, bi, ti, d.scale_at)) {
                *v *= s;
            }
        }
        let mut dx = zeroed(x.len());
        kernels::layer_norm_rows_backward(x, None, stats, &g, d.d, &mut dx, false);
        dx
    });
    (dx, dm)
}
