//! The GEMM of the CPU fast path: the `gemm` crate (pure Rust, AVX2/AVX-512/NEON kernels chosen
//! at run time), which reads and writes any strides and parallelises on rayon's pool — the same
//! pool as every other kernel here, so no second set of worker threads spins against ours (the
//! cost of the system BLAS measured in BENCHMARKS.md, "two thread pools contending").
//!
//! [`Mat`]/[`MatMut`] are raw strided matrices for kernels that split one buffer between rayon
//! tasks (attention); [`gemm_views`] is the safe entry for whole ndarray views (Linear). With the
//! opt-in feature `openblas`, [`gemm_views`] calls the system OpenBLAS instead (through ndarray's
//! `general_mat_mul`, with OpenBLAS's own threads): at 2 cores its kernels beat the contention
//! they cause (BENCHMARKS.md, "One thread pool").

use ndarray::{ArrayView2, ArrayViewMut2};

/// A strided f32 matrix: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// A writable strided f32 matrix.
#[derive(Clone, Copy)]
pub(crate) struct MatMut {
    pub ptr: *mut f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: the pointers come from views and buffers that outlive the parallel loops that use them,
// and each task writes a region that no other task reads or writes (see each caller).
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}
unsafe impl Send for MatMut {}
unsafe impl Sync for MatMut {}

impl Mat {
    /// The transpose.
    pub fn t(self) -> Mat {
        Mat { rs: self.cs, cs: self.rs, ..self }
    }
    /// The matrix starting `offset` elements further.
    pub fn at(self, offset: isize) -> Mat {
        Mat { ptr: self.ptr.wrapping_offset(offset), ..self }
    }
}

impl MatMut {
    /// A row-major matrix with `cols` columns at `ptr`.
    pub fn rows(ptr: *mut f32, cols: usize) -> MatMut {
        MatMut { ptr, rs: cols as isize, cs: 1 }
    }
    pub fn view(self) -> Mat {
        Mat { ptr: self.ptr, rs: self.rs, cs: self.cs }
    }
    /// The matrix starting `offset` elements further.
    pub fn at(self, offset: usize) -> MatMut {
        MatMut { ptr: self.ptr.wrapping_add(offset), ..self }
    }
    /// The matrix starting `offset` elements further (a signed offset, as strides are).
    fn at_offset(self, offset: isize) -> MatMut {
        MatMut { ptr: self.ptr.wrapping_offset(offset), ..self }
    }
}

/// Whether one GEMM splits its work over rayon's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    /// On the calling thread (the caller already runs one task per core).
    One,
    /// On rayon's pool (all its threads; small products stay serial inside the crate).
    Pool,
}

/// `dst (m × n) = lhs (m × k) · rhs (k × n)`, plus the old `dst` when `accumulate`;
/// `mnk = [m, n, k]`.
///
/// # Safety
/// Every element of the three matrices at the given sizes must be in bounds of a live allocation,
/// `dst` must not overlap the inputs nor be written concurrently, and when `accumulate` its
/// elements must be initialised.
pub(crate) unsafe fn matmul(mnk: [usize; 3], dst: MatMut, lhs: Mat, rhs: Mat, accumulate: bool, threads: Threads) {
    let [m, n, k] = mnk;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: the crate would leave `dst` as it is; the product is zero.
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds of `dst` (caller's contract).
                    unsafe { *dst.ptr.wrapping_offset(i as isize * dst.rs + j as isize * dst.cs) = 0.0 };
                }
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::Pool => {
            let tasks = rayon::current_num_threads();
            if tasks > 1 && tasks <= SPLIT_MAX_TASKS && m * n * k >= SPLIT_MIN_WORK {
                // SAFETY: forwarded to the caller.
                unsafe { split(mnk, dst, lhs, rhs, accumulate, tasks) };
                return;
            }
            gemm::Parallelism::Rayon(0)
        }
    };
    // SAFETY: forwarded to the caller; with `read_dst = false` `dst` needs no initial values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.cs,
            dst.rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Products with at least this many multiply-adds are split into one block per thread by
/// [`split`] (below it the crate's own scheduling, or one thread, is as fast).
const SPLIT_MIN_WORK: usize = 1 << 24;
/// Up to this many threads the output is split in one dimension ([`split`]); with more, blocks
/// would get thin and every one re-packs the whole other operand, so the crate's own 2-D
/// scheduling takes over.
const SPLIT_MAX_TASKS: usize = 4;
/// Column blocks of a split output are a multiple of this (the crate's microkernel height for a
/// row-major output, whose columns it walks as rows: no partial tiles at the seams).
const SPLIT_ALIGN: usize = 64;

/// `dst = lhs · rhs` as `tasks` independent single-threaded products on output blocks: the
/// larger of the output's two dimensions is cut into `tasks` contiguous ranges, one rayon task
/// each. The crate's own `Rayon` scheduling synchronises its threads once per `k` block (every
/// 512 or so), which on these shapes cost 10–35 % of the rate (BENCHMARKS.md, session 19).
///
/// # Safety
/// As [`matmul`].
unsafe fn split(mnk: [usize; 3], dst: MatMut, lhs: Mat, rhs: Mat, accumulate: bool, tasks: usize) {
    let [m, n, k] = mnk;
    let (cols, len) = if n >= m { (true, n) } else { (false, m) };
    let step = if cols { len.div_ceil(tasks).next_multiple_of(SPLIT_ALIGN) } else { len.div_ceil(tasks) };
    rayon::scope(|s| {
        for start in (0..len).step_by(step.max(1)) {
            let size = step.min(len - start);
            let at = start as isize;
            let (shape, d, l, r) = if cols {
                ([m, size, k], dst.at_offset(at * dst.cs), lhs, rhs.at(at * rhs.cs))
            } else {
                ([size, n, k], dst.at_offset(at * dst.rs), lhs.at(at * lhs.rs), rhs)
            };
            // SAFETY: the block of `dst` is in bounds and disjoint from every other task's
            // (contiguous ranges of one dimension); the inputs are only read.
            s.spawn(move |_| unsafe { matmul(shape, d, l, r, accumulate, Threads::One) });
        }
    });
}

/// `dst = lhs · rhs (+ dst when accumulate)` on whole views, on rayon's pool (or OpenBLAS's, with
/// the feature `openblas`).
///
/// # Panics
/// When the shapes do not chain (`lhs` `[m, k]`, `rhs` `[k, n]`, `dst` `[m, n]`): a caller bug.
pub(crate) fn gemm_views(dst: &mut ArrayViewMut2<f32>, lhs: ArrayView2<f32>, rhs: ArrayView2<f32>, accumulate: bool) {
    gemm_views_on(dst, lhs, rhs, accumulate, Threads::Pool)
}

/// [`gemm_views`] with the GEMM on the calling thread only (`Threads::One`: the caller already
/// runs one task per core) or on the pool. With `openblas` the library decides.
pub(crate) fn gemm_views_on(dst: &mut ArrayViewMut2<f32>, lhs: ArrayView2<f32>, rhs: ArrayView2<f32>, accumulate: bool, threads: Threads) {
    let (m, k, n) = (lhs.nrows(), lhs.ncols(), rhs.ncols());
    assert!(rhs.nrows() == k && dst.dim() == (m, n), "gemm: [{m}, {k}]·{:?} into {:?}", rhs.dim(), dst.dim());
    #[cfg(feature = "openblas")]
    {
        let _ = threads;
        ndarray::linalg::general_mat_mul(1.0, &lhs, &rhs, if accumulate { 1.0 } else { 0.0 }, dst);
    }
    #[cfg(not(feature = "openblas"))]
    gemm_crate(dst, lhs, rhs, accumulate, threads)
}

/// A new buffer of `len` floats that `write` fills through the raw pointer, without zeroing it
/// first (a zero fill is a single-threaded pass as long as the GEMM's output that the GEMM then
/// overwrites: ~15 % of a small training step's main thread).
///
/// # Safety
/// `write` must initialise all `len` elements and read none before writing it (GEMMs through
/// [`matmul`] with `accumulate = false` do: the crate reads `dst` only when asked to).
pub(crate) unsafe fn written(len: usize, write: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(len);
    write(v.as_mut_ptr());
    // SAFETY: `write` initialised all `len` elements (caller's contract).
    unsafe { v.set_len(len) };
    v
}

/// `lhs · rhs` (`[m, k]·[k, n]`, any strides) as a new row-major `[m, n]` buffer, on rayon's
/// pool (OpenBLAS's with the feature `openblas`).
pub(crate) fn product(lhs: ArrayView2<f32>, rhs: ArrayView2<f32>) -> Vec<f32> {
    let (m, n) = (lhs.nrows(), rhs.ncols());
    #[cfg(feature = "openblas")]
    {
        let mut c = vec![0.0f32; m * n];
        gemm_views(&mut ArrayViewMut2::from_shape((m, n), &mut c).expect("m × n buffer"), lhs, rhs, false);
        c
    }
    #[cfg(not(feature = "openblas"))]
    {
        let k = lhs.ncols();
        assert_eq!(rhs.nrows(), k, "gemm: [{m}, {k}]·{:?}", rhs.dim());
        let (ls, rs) = (lhs.strides(), rhs.strides());
        let (l, r) = (Mat { ptr: lhs.as_ptr(), rs: ls[0], cs: ls[1] }, Mat { ptr: rhs.as_ptr(), rs: rs[0], cs: rs[1] });
        // SAFETY: the views are in bounds at their shapes; the new buffer overlaps neither and
        // the GEMM (not accumulating) writes each of its m·n elements without reading it.
        unsafe { written(m * n, |dst| matmul([m, n, k], MatMut::rows(dst, n), l, r, false, Threads::Pool)) }
    }
}

/// [`gemm_views_on`] on the `gemm` crate.
#[cfg_attr(feature = "openblas", allow(dead_code))]
fn gemm_crate(dst: &mut ArrayViewMut2<f32>, lhs: ArrayView2<f32>, rhs: ArrayView2<f32>, accumulate: bool, threads: Threads) {
    let (m, k, n) = (lhs.nrows(), lhs.ncols(), rhs.ncols());
    let (ls, rs, ds) = (lhs.strides(), rhs.strides(), [dst.strides()[0], dst.strides()[1]]);
    let lhs = Mat { ptr: lhs.as_ptr(), rs: ls[0], cs: ls[1] };
    let rhs = Mat { ptr: rhs.as_ptr(), rs: rs[0], cs: rs[1] };
    let dst = MatMut { ptr: dst.as_mut_ptr(), rs: ds[0], cs: ds[1] };
    // SAFETY: views are in bounds at their shapes, checked by the caller to chain; `dst` is borrowed
    // mutably so it overlaps neither input and nothing else writes it; a mutable view's elements
    // are initialised.
    unsafe { matmul([m, n, k], dst, lhs, rhs, accumulate, threads) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn array(r: usize, c: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |(i, j)| (((i * c + j + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0)
    }

    /// Against ndarray's `dot` on transposed (strided) operands, with and without accumulation,
    /// serial and large enough for the crate to split the work.
    #[test]
    fn gemm_views_matches_dot() {
        for (m, k, n) in [(3, 5, 4), (200, 96, 130), (7, 0, 3)] {
            let a = array(k, m, 1); // used as aᵀ: [m, k], column-major
            let b = array(k, n, 2);
            let want = a.t().dot(&b);
            let mut c = Array2::<f32>::from_elem((m, n), 7.0);
            // The crate's kernel directly (also in an `openblas` build), then the entry point.
            fn serial(d: &mut ArrayViewMut2<f32>, l: ArrayView2<f32>, r: ArrayView2<f32>, a: bool) {
                gemm_crate(d, l, r, a, Threads::One)
            }
            fn pool(d: &mut ArrayViewMut2<f32>, l: ArrayView2<f32>, r: ArrayView2<f32>, a: bool) {
                gemm_crate(d, l, r, a, Threads::Pool)
            }
            type Gemm = fn(&mut ArrayViewMut2<f32>, ArrayView2<f32>, ArrayView2<f32>, bool);
            for f in [serial as Gemm, pool, gemm_views] {
                c.fill(7.0);
                f(&mut c.view_mut(), a.t(), b.view(), false);
                let err = (&c - &want).iter().fold(0.0f32, |e, x| e.max(x.abs()));
                assert!(err < 1e-4, "{m}×{k}×{n}: {err}");
                f(&mut c.view_mut(), a.t(), b.view(), true);
                let err = (&c - &(&want * 2.0)).iter().fold(0.0f32, |e, x| e.max(x.abs()));
                assert!(err < 1e-4, "{m}×{k}×{n} accumulate: {err}");
            }
        }
    }

    /// The per-thread split in both orientations (uneven and aligned blocks, more tasks than a
    /// small dimension fills), on transposed operands, with and without accumulation.
    #[test]
    fn split_blocks_match_dot() {
        let mat = |v: ArrayView2<f32>| Mat { ptr: v.as_ptr(), rs: v.strides()[0], cs: v.strides()[1] };
        for (m, k, n, tasks) in [(70, 33, 150, 2), (150, 17, 70, 3), (5, 8, 300, 4), (3, 4, 2, 4)] {
            let a = array(k, m, 3);
            let b = array(n, k, 4);
            let want = a.t().dot(&b.t());
            let mut c = Array2::<f32>::from_elem((m, n), 7.0);
            for accumulate in [false, true] {
                let before = c.clone();
                let dst = MatMut { ptr: c.as_mut_ptr(), rs: n as isize, cs: 1 };
                // SAFETY: the views and `c` are in bounds at these shapes and do not overlap.
                unsafe { split([m, n, k], dst, mat(a.t()), mat(b.t()), accumulate, tasks) };
                let expected = if accumulate { &before + &want } else { want.clone() };
                let err = (&c - &expected).iter().fold(0.0f32, |e, x| e.max(x.abs()));
                assert!(err < 1e-4, "{m}×{k}×{n} in {tasks} (accumulate {accumulate}): {err}");
            }
        }
    }
}
