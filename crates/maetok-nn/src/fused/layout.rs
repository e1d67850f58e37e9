//! Row-major copies of strided views for the CPU fast path.
//!
//! ndarray's own copy of a dynamic-rank view (`iter().collect()`, `to_shape`, `as_standard_layout`)
//! walks an `IxDyn` index per element, ~20–50 ns each; Burn's NdArray backend goes through it for
//! every reshape of a non-contiguous tensor (the backward of a head split, patchify) and for
//! `into_data` of an array that another tensor shares. Here the index bookkeeping is per row:
//! each row of the last axis is one `memcpy` (unit stride) or one fixed-stride loop, rows in
//! parallel for large views.

use ndarray::ArrayViewD;
use rayon::prelude::*;

/// Below this many elements a copy or fill runs on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// `len` zeros, filled in parallel for large buffers. Freed memory is kept by the process
/// ([`super::retain_freed_memory`]), so a large `vec![0.0; len]` is a single-threaded `memset`
/// rather than fresh zero pages: for the outputs of the kernels here that was ~10 % of a small
/// training step's main thread while the other cores waited.
pub fn zeroed(len: usize) -> Vec<f32> {
    if len < PAR_MIN {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len].par_chunks_mut(PAR_MIN).for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all `len` elements were just written.
    unsafe { v.set_len(len) };
    v
}

/// The values of `view` in row-major order of its logical shape.
pub fn standard_layout(view: &ArrayViewD<f32>) -> Vec<f32> {
    if let Some(s) = view.as_slice() {
        return s.to_vec();
    }
    let shape = view.shape();
    let strides = view.strides();
    let total: usize = shape.iter().product();
    let Some((&n, outer_shape)) = shape.split_last().filter(|_| total > 0) else {
        // An empty view, or a 0-d one (always contiguous, handled above).
        return view.iter().copied().collect();
    };
    let inner_stride = strides[shape.len() - 1];
    let outer_strides = &strides[..shape.len() - 1];
    let base = Base(view.as_ptr());
    let mut out = zeroed(total);
    let copy_row = |r: usize, dst: &mut [f32]| {
        // Offset of row r: its multi-index over the outer axes, last axis fastest.
        let (mut rem, mut off) = (r, 0isize);
        for (&len, &stride) in outer_shape.iter().zip(outer_strides).rev() {
            off += (rem % len) as isize * stride;
            rem /= len;
        }
        let p = base.get().wrapping_offset(off);
        if inner_stride == 1 {
            // SAFETY: row r of the view: n elements from its first, all inside the view.
            dst.copy_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                // SAFETY: element j of row r, inside the view.
                *d = unsafe { *p.wrapping_offset(j as isize * inner_stride) };
            }
        }
    };
    if total < PAR_MIN {
        out.chunks_exact_mut(n).enumerate().for_each(|(r, d)| copy_row(r, d));
    } else {
        // Tasks of whole rows, at least ~4 K elements each.
        let rows_per_task = (4096 / n).max(1);
        out.par_chunks_mut(rows_per_task * n).enumerate().for_each(|(t, chunk)| {
            for (i, d) in chunk.chunks_exact_mut(n).enumerate() {
                copy_row(t * rows_per_task + i, d);
            }
        });
    }
    out
}

/// The view's first element, shared read-only by the copy's tasks.
#[derive(Clone, Copy)]
struct Base(*const f32);

impl Base {
    fn get(self) -> *const f32 {
        self.0
    }
}

// SAFETY: only read through, while the view it comes from is borrowed by `standard_layout`.
unsafe impl Send for Base {}
// SAFETY: as above.
unsafe impl Sync for Base {}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, IxDyn};

    /// Permuted, sliced, reversed and broadcast views copy to what ndarray's own iterator gives,
    /// at a serial and a parallel size.
    #[test]
    fn copies_equal_ndarrays_iteration() {
        for shape in [vec![2, 3, 4, 5], vec![4, 37, 12, 33]] {
            let n: usize = shape.iter().product();
            let a = Array::from_shape_vec(IxDyn(&shape), (0..n).map(|i| i as f32).collect()).unwrap();
            let views = [
                a.view(),
                a.view().permuted_axes(IxDyn(&[0, 2, 1, 3])),
                a.view().permuted_axes(IxDyn(&[3, 1, 0, 2])),
                a.slice_each_axis(|ax| ndarray::Slice::new(0, None, if ax.axis.index() == 3 { -2 } else { 1 })),
                a.slice_each_axis(|_| ndarray::Slice::new(1, None, 1)),
            ];
            for (i, v) in views.iter().enumerate() {
                let want: Vec<f32> = v.iter().copied().collect();
                assert_eq!(standard_layout(v), want, "view {i} of {shape:?}");
            }
            let row = Array::from_shape_vec(IxDyn(&[1, shape[3]]), vec![1.0; shape[3]]).unwrap();
            let b = row.broadcast(IxDyn(&[7, shape[3]])).unwrap();
            assert_eq!(standard_layout(&b), vec![1.0; 7 * shape[3]]);
        }
    }
}
