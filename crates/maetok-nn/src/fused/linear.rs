//! The Linear kernel of the CPU fast path: `y = x·W + b` on a token tensor seen as one
//! `[rows, in]` matrix (no reshape copies), with the bias written into the output before the GEMM
//! (`β = 1`) instead of a separate broadcast pass; its backward (`dx = dy·Wᵀ`, `dW = xᵀ·dy`,
//! `db = Σ_rows dy`) computes only the gradients that are needed.
//!
//! The GEMMs are [`super::gemm`]'s: the `gemm` crate on rayon's pool (whose size `--threads`
//! sets), or the system OpenBLAS in a build with the feature `openblas`.

use std::mem::MaybeUninit;

use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::gemm::{gemm_views, product};

/// Below this many output elements the bias is written on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// `x` `[rows, in]` · `w` `[in, out]` (+ `bias` `[out]`) → row-major `[rows, out]`.
pub fn linear(x: ArrayView2<f32>, w: ArrayView2<f32>, bias: Option<&[f32]>) -> Vec<f32> {
    let (rows, out) = (x.nrows(), w.ncols());
    let Some(b) = bias.filter(|_| rows * out > 0) else { return product(x, w) };
    // The bias in every row (rows in parallel: one small copy per row on one thread was ~6 % of
    // a small training step), then the product added to it.
    let len = rows * out;
    let mut y = Vec::with_capacity(len);
    let fill = |rows: &mut [MaybeUninit<f32>]| {
        for row in rows.chunks_exact_mut(out) {
            for (d, &v) in row.iter_mut().zip(b) {
                d.write(v);
            }
        }
    };
    let spare = &mut y.spare_capacity_mut()[..len];
    if len < PAR_MIN {
        fill(spare);
    } else {
        spare.par_chunks_mut(out * PAR_MIN.div_ceil(out * 4)).for_each(fill);
    }
    // SAFETY: every row was just written.
    unsafe { y.set_len(len) };
    let mut yv = ArrayViewMut2::from_shape((rows, out), &mut y).expect("rows × out buffer");
    gemm_views(&mut yv, x, w, true);
    y
}

/// Which gradients of [`linear`] to compute.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    pub x: bool,
    pub w: bool,
    pub bias: bool,
}

/// Gradients of [`linear`], row-major; `None` where not asked for.
#[derive(Debug)]
pub struct Grads {
    /// `[rows, in]`
    pub x: Option<Vec<f32>>,
    /// `[in, out]`
    pub w: Option<Vec<f32>>,
    /// `[out]`
    pub bias: Option<Vec<f32>>,
}

/// `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ_rows dy` from `dy` `[rows, out]`, each only when needed.
pub fn linear_backward(x: ArrayView2<f32>, w: ArrayView2<f32>, dy: ArrayView2<f32>, needs: Needs) -> Grads {
    Grads { x: needs.x.then(|| product(dy, w.t())), w: needs.w.then(|| product(x.t(), dy)), bias: needs.bias.then(|| column_sums(dy)) }
}

/// Rows per partial sum of [`column_sums`] (a fixed split: the result does not depend on the
/// number of threads).
const SUM_ROWS: usize = 256;

/// `Σ_rows dy` `[out]`: partial sums of `SUM_ROWS`-row blocks in parallel, added in block order.
fn column_sums(dy: ArrayView2<f32>) -> Vec<f32> {
    let out = dy.ncols();
    let Some(values) = dy.as_slice().filter(|_| out > 0) else { return dy.sum_axis(Axis(0)).to_vec() };
    let partial = |block: &[f32]| {
        let mut acc = vec![0.0f32; out];
        for row in block.chunks_exact(out) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        acc
    };
    let blocks: Vec<Vec<f32>> = if values.len() < PAR_MIN {
        values.chunks(SUM_ROWS * out).map(partial).collect()
    } else {
        values.par_chunks(SUM_ROWS * out).map(partial).collect()
    };
    blocks
        .into_iter()
        .reduce(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![0.0; out])
}
