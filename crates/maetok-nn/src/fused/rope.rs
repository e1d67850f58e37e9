//! The RoPE kernel of the CPU fast path: `y = x·cos + swap_pairs(x)·sin` on `[B, H, N, hd]`
//! with tables `[Hr, N, hd]` (`Hr` = H or 1), reading `x` where it lies (a strided view of the
//! qkv projection) and writing a contiguous result; parallel over (batch, head).
//!
//! `y[2j] = x[2j]·c[2j] + x[2j+1]·s[2j]`, `y[2j+1] = x[2j+1]·c[2j+1] + x[2j]·s[2j+1]`: the same
//! two products and one sum per element as the default (whose swap is an exact permutation GEMM),
//! so both paths give identical values.

use ndarray::{ArrayView3, ArrayView4};
use rayon::prelude::*;

use super::layout::zeroed;

/// Below this many elements the kernels run on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Sizes of one call: x `[B, H, N, hd]`, tables `[Hr, N, hd]`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub hd: usize,
    pub hr: usize,
}

impl Dims {
    /// The sizes when the shapes fit (`hd` even, `Hr` = H or 1), none is empty and every row of
    /// `x` is contiguous, else `None`.
    pub fn of(x: &ArrayView4<f32>, cos: &ArrayView3<f32>, sin: &ArrayView3<f32>) -> Option<Dims> {
        let (&[b, h, n, hd], &[hr, tn, td]) = (x.shape(), cos.shape()) else { return None };
        let fits = sin.shape() == cos.shape() && tn == n && td == hd && hd % 2 == 0 && (hr == h || hr == 1);
        (fits && b * h * n * hd > 0 && x.strides()[3] == 1).then_some(Dims { b, h, n, hd, hr })
    }
}

/// One row: `y = x·c + swap(x)·s`.
#[inline(always)]
fn rotate_row(x: &[f32], c: &[f32], s: &[f32], y: &mut [f32]) {
    for (((yp, xp), cp), sp) in y.chunks_exact_mut(2).zip(x.chunks_exact(2)).zip(c.chunks_exact(2)).zip(s.chunks_exact(2)) {
        yp[0] = xp[0] * cp[0] + xp[1] * sp[0];
        yp[1] = xp[1] * cp[1] + xp[0] * sp[1];
    }
}

/// Row `(b, h, i)` of `x` as a slice (rows are contiguous, checked by [`Dims::of`]).
///
/// # Panics
/// When `(b, h, i)` is out of bounds or the rows are not contiguous (a caller bug).
#[inline]
pub(super) fn x_row<'a>(x: &'a ArrayView4<'a, f32>, b: usize, h: usize, i: usize) -> &'a [f32] {
    let (&[nb, nh, n, hd], s) = (x.shape(), x.strides()) else { unreachable!("a 4-D view") };
    assert!(b < nb && h < nh && i < n && (s[3] == 1 || hd <= 1), "row ({b}, {h}, {i}) of a {:?} view with strides {s:?}", x.shape());
    let offset = b as isize * s[0] + h as isize * s[1] + i as isize * s[2];
    // SAFETY: (b, h, i) is in bounds (asserted) and the row's `hd` elements are contiguous, so
    // they lie in the view's allocation. (Index arithmetic instead of three `index_axis` calls:
    // those were most of a small model's RoPE backward.)
    unsafe { std::slice::from_raw_parts(x.as_ptr().offset(offset), hd) }
}

/// Forward: `y` `[B, H, N, hd]` row-major. `cos`/`sin` must be in standard layout.
pub fn rotate(x: &ArrayView4<f32>, cos: &[f32], sin: &[f32], d: Dims) -> Vec<f32> {
    let Dims { h, n, hd, hr, .. } = d;
    let mut y = zeroed(d.b * h * n * hd);
    let run = |task: usize, out: &mut [f32]| {
        let (bi, hi) = (task / h, task % h);
        let t = if hr == 1 { 0 } else { hi };
        for (i, yr) in out.chunks_exact_mut(hd).enumerate() {
            let r = (t * n + i) * hd..(t * n + i + 1) * hd;
            rotate_row(x_row(x, bi, hi, i), &cos[r.clone()], &sin[r], yr);
        }
    };
    if y.len() < PAR_MIN {
        y.chunks_exact_mut(n * hd).enumerate().for_each(|(t, o)| run(t, o));
    } else {
        y.par_chunks_exact_mut(n * hd).enumerate().for_each(|(t, o)| run(t, o));
    }
    y
}

/// `(dcos, dsin)`, each row-major `[Hr, N, hd]`.
pub type TableGrads = (Vec<f32>, Vec<f32>);

/// Backward: `dx` `[B, H, N, hd]` and, when `tables`, `(dcos, dsin)` `[Hr, N, hd]` (summed over
/// the batch, and over heads when `Hr` = 1, in a fixed order). `dy` row-major `[B, H, N, hd]`.
///
/// `dx[2j] = dy[2j]·c[2j] + dy[2j+1]·s[2j+1]`, `dx[2j+1] = dy[2j+1]·c[2j+1] + dy[2j]·s[2j]`,
/// `dcos = Σ dy·x`, `dsin = Σ dy·swap(x)`.
pub fn rotate_backward(x: &ArrayView4<f32>, cos: &[f32], sin: &[f32], dy: &[f32], d: Dims, tables: bool) -> (Vec<f32>, Option<TableGrads>) {
    let Dims { b, h, n, hd, hr } = d;
    let mut dx = zeroed(b * h * n * hd);
    let run = |task: usize, out: &mut [f32]| {
        let t = if hr == 1 { 0 } else { task % h };
        for (i, dxr) in out.chunks_exact_mut(hd).enumerate() {
            let g = &dy[(task * n + i) * hd..(task * n + i + 1) * hd];
            let r = (t * n + i) * hd..(t * n + i + 1) * hd;
            let (c, s) = (&cos[r.clone()], &sin[r]);
            for (((d, g), c), s) in dxr.chunks_exact_mut(2).zip(g.chunks_exact(2)).zip(c.chunks_exact(2)).zip(s.chunks_exact(2)) {
                d[0] = g[0] * c[0] + g[1] * s[1];
                d[1] = g[1] * c[1] + g[0] * s[0];
            }
        }
    };
    if dx.len() < PAR_MIN {
        dx.chunks_exact_mut(n * hd).enumerate().for_each(|(t, o)| run(t, o));
    } else {
        dx.par_chunks_exact_mut(n * hd).enumerate().for_each(|(t, o)| run(t, o));
    }
    if !tables {
        return (dx, None);
    }
    // Table gradients: one task per table row (hr, i), summing over b then h in order.
    let mut dtab = vec![0.0f32; 2 * hr * n * hd];
    let (dcos, dsin) = dtab.split_at_mut(hr * n * hd);
    let heads_of = |t: usize| if hr == 1 { 0..h } else { t..t + 1 };
    let row = |r: usize, (dc, ds): (&mut [f32], &mut [f32])| {
        let (t, i) = (r / n, r % n);
        for bi in 0..b {
            for hi in heads_of(t) {
                let xr = x_row(x, bi, hi, i);
                let g = &dy[((bi * h + hi) * n + i) * hd..((bi * h + hi) * n + i + 1) * hd];
                let pairs = dc.chunks_exact_mut(2).zip(ds.chunks_exact_mut(2)).zip(g.chunks_exact(2)).zip(xr.chunks_exact(2));
                for (((c2, s2), g2), x2) in pairs {
                    c2[0] += g2[0] * x2[0];
                    c2[1] += g2[1] * x2[1];
                    s2[0] += g2[0] * x2[1];
                    s2[1] += g2[1] * x2[0];
                }
            }
        }
    };
    if dcos.len() * b < PAR_MIN {
        dcos.chunks_exact_mut(hd).zip(dsin.chunks_exact_mut(hd)).enumerate().for_each(|(r, p)| row(r, p));
    } else {
        dcos.par_chunks_exact_mut(hd).zip(dsin.par_chunks_exact_mut(hd)).enumerate().for_each(|(r, p)| row(r, p));
    }
    let dsin = dtab.split_off(hr * n * hd);
    (dx, Some((dtab, dsin)))
}
