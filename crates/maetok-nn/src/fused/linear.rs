//! The Linear kernel of the CPU fast path: `y = x·W + b` on a token tensor seen as one
//! `[rows, in]` matrix (no reshape copies), with the bias written into the output before the GEMM
//! (`β = 1`) instead of a separate broadcast pass; its backward (`dx = dy·Wᵀ`, `dW = xᵀ·dy`,
//! `db = Σ_rows dy`) computes only the gradients that are needed.
//!
//! The GEMMs are [`super::gemm`]'s: the `gemm` crate on rayon's pool (whose size `--threads`
//! sets), or the system OpenBLAS in a build with the feature `openblas`.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use super::gemm::gemm_views;

/// `x` `[rows, in]` · `w` `[in, out]` (+ `bias` `[out]`) → row-major `[rows, out]`.
pub fn linear(x: ArrayView2<f32>, w: ArrayView2<f32>, bias: Option<&[f32]>) -> Vec<f32> {
    let (rows, out) = (x.nrows(), w.ncols());
    let mut y = match bias {
        Some(b) => {
            let mut y = Vec::with_capacity(rows * out);
            (0..rows).for_each(|_| y.extend_from_slice(b));
            y
        }
        None => vec![0.0f32; rows * out],
    };
    let mut yv = ArrayViewMut2::from_shape((rows, out), &mut y).expect("rows × out buffer");
    gemm_views(&mut yv, x, w, bias.is_some());
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
    let (rows, inp, out) = (x.nrows(), x.ncols(), w.ncols());
    let gemm = |m: usize, n: usize, a: ArrayView2<f32>, b: ArrayView2<f32>| {
        let mut c = vec![0.0f32; m * n];
        gemm_views(&mut ArrayViewMut2::from_shape((m, n), &mut c).expect("m × n buffer"), a, b, false);
        c
    };
    Grads {
        x: needs.x.then(|| gemm(rows, inp, dy, w.t())),
        w: needs.w.then(|| gemm(inp, out, x.t(), dy)),
        bias: needs.bias.then(|| dy.sum_axis(Axis(0)).to_vec()),
    }
}
