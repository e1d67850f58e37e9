//! The attention kernel of the CPU fast path: `softmax(q·kᵀ)·v` per (batch, head), parallel
//! over batch × heads, each head's GEMMs single-threaded (the `gemm` crate, which reads and
//! writes any strides). q, k and v are read where they lie (views of the qkv projection, RoPE
//! outputs, any layout); the output is written straight into the merged-heads layout
//! `[B, Nq, H·hd]` that the output projection reads, so no head split or merge copy is made.
//!
//! Per head the result does not depend on the number of threads (each head is one serial task).

use ndarray::{ArrayView3, ArrayView4};
use rayon::prelude::*;

use super::gemm::{written, Mat, MatMut, Threads};
use super::kernels;

/// Below this many multiply-adds for the whole call, heads run on the calling thread.
const PAR_MIN_FLOP: usize = 1 << 18;

/// Head `(b, h)` of a `[B, H, N, hd]` view as an `N × hd` matrix.
fn head(x: &ArrayView4<f32>, b: usize, h: usize) -> Mat {
    let s = x.strides();
    // `wrapping_offset`: an in-bounds offset of the view's own allocation.
    Mat { ptr: x.as_ptr().wrapping_offset(b as isize * s[0] + h as isize * s[1]), rs: s[2], cs: s[3] }
}

/// `dst (m × n) = lhs (m × k) · rhs (k × n)` on this task's thread (one task per head).
///
/// # Safety
/// As [`super::gemm::matmul`].
unsafe fn matmul(m: usize, n: usize, k: usize, dst: MatMut, lhs: Mat, rhs: Mat) {
    // SAFETY: forwarded to the caller.
    unsafe { super::gemm::matmul([m, n, k], dst, lhs, rhs, false, Threads::One) }
}

/// Runs `f(task)` for `task` in `0..tasks`, in parallel when the call is large enough.
fn for_each_head(tasks: usize, flop: usize, f: impl Fn(usize) + Sync + Send) {
    if flop < PAR_MIN_FLOP {
        (0..tasks).for_each(f);
    } else {
        (0..tasks).into_par_iter().for_each(f);
    }
}

/// Sizes of one attention call: q `[B, H, Nq, hd]`, k `[B, H, Nk, hd]`, v `[B, H, Nk, hv]`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub h: usize,
    pub nq: usize,
    pub nk: usize,
    pub hd: usize,
    pub hv: usize,
}

impl Dims {
    /// The sizes when q, k and v fit together and none is empty, else `None`.
    pub fn of(q: &ArrayView4<f32>, k: &ArrayView4<f32>, v: &ArrayView4<f32>) -> Option<Dims> {
        let (&[b, h, nq, hd], &[kb, kh, nk, kd], &[vb, vh, vn, hv]) = (q.shape(), k.shape(), v.shape()) else { return None };
        let fits = kb == b && vb == b && kh == h && vh == h && kd == hd && vn == nk;
        // Empty tensors take the default path.
        (fits && b * h * nq * nk * hd * hv > 0).then_some(Dims { b, h, nq, nk, hd, hv })
    }
    fn flop(&self) -> usize {
        self.b * self.h * self.nq * self.nk * (self.hd + self.hv)
    }
}

/// `softmax(q·kᵀ)·v` with heads merged: returns `out` `[B, Nq, H·hv]` (row-major) and, when
/// `keep_probs`, the attention weights `P` `[B, H, Nq, Nk]` (what the backward needs). q must
/// already carry the scale.
pub fn attention(q: ArrayView4<f32>, k: ArrayView4<f32>, v: ArrayView4<f32>, d: Dims, keep_probs: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let Dims { b: _, h, nq, nk, hd, hv } = d;
    let (qv, kv, vv) = (&q, &k, &v);
    let mut probs = None;
    let run = |out: *mut f32, kept: Option<*mut f32>| {
        let out_ptr = MatMut { ptr: out, rs: (h * hv) as isize, cs: 1 };
        let probs_ptr = kept.map(|p| MatMut::rows(p, nk));
        for_each_head(d.b * h, d.flop(), |task| {
            let (bi, hi) = (task / h, task % h);
            let mut scratch = Vec::new();
            let s = match probs_ptr {
                // Block `task` of the `[B·H, Nq, Nk]` buffer, written by this task only.
                Some(p) => p.at(task * nq * nk),
                None => {
                    scratch.reserve_exact(nq * nk);
                    MatMut::rows(scratch.as_mut_ptr(), nk)
                }
            };
            let (qh, kh, vh) = (head(qv, bi, hi), head(kv, bi, hi), head(vv, bi, hi));
            // SAFETY: q, k, v heads are in-bounds views; `s` is this task's own Nq × Nk block,
            // which the GEMM (not accumulating) writes whole before anything reads it.
            unsafe { matmul(nq, nk, hd, s, qh, kh.t()) };
            // SAFETY: `s` points at nq·nk floats that the GEMM initialised and only this task touches.
            let block = unsafe { std::slice::from_raw_parts_mut(s.ptr, nq * nk) };
            kernels::softmax_rows_in_place(block, nk);
            let o = out_ptr.at(bi * nq * h * hv + hi * hv);
            // SAFETY: the output block of (bi, hi) is columns hi·hv..(hi+1)·hv of batch bi's rows,
            // disjoint from every other task's block; the GEMM writes it whole.
            unsafe { matmul(nq, hv, nk, o, s.view(), vh) };
        });
    };
    // SAFETY: the heads' output blocks tile `out` (every row of every batch, every head's
    // columns) and their probability blocks tile `probs`; each is written by a non-accumulating
    // GEMM before it is read.
    let out = unsafe {
        written(d.b * nq * h * hv, |out| {
            if keep_probs {
                probs = Some(written(d.b * h * nq * nk, |p| run(out, Some(p))));
            } else {
                run(out, None);
            }
        })
    };
    (out, probs)
}

/// Gradients of [`attention`] from the saved inputs, the weights `P` and `dout` `[B, Nq, H·hv]`:
/// `(dq, dk, dv)`, row-major `[B, H, Nq, hd]`, `[B, H, Nk, hd]`, `[B, H, Nk, hv]`.
///
/// `dv = Pᵀ·do`, `dP = do·vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dq = dS·k`, `dk = dSᵀ·q`.
pub fn attention_backward(
    q: ArrayView4<f32>,
    k: ArrayView4<f32>,
    v: ArrayView4<f32>,
    d: Dims,
    probs: &[f32],
    dout: ArrayView3<f32>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { b, h, nq, nk, hd, hv } = d;
    assert_eq!(probs.len(), b * h * nq * nk, "attention weights of another call");
    assert_eq!(dout.shape(), [b, nq, h * hv], "output gradient of another call");
    let mut dq = Vec::with_capacity(b * h * nq * hd);
    let mut dk = Vec::with_capacity(b * h * nk * hd);
    let mut dv = Vec::with_capacity(b * h * nk * hv);
    let (dq_all, dk_all, dv_all) =
        (MatMut::rows(dq.as_mut_ptr(), hd), MatMut::rows(dk.as_mut_ptr(), hd), MatMut::rows(dv.as_mut_ptr(), hv));
    let ds = dout.strides();
    let do_mat = Mat { ptr: dout.as_ptr(), rs: ds[1], cs: ds[2] };
    let (s0, s2) = (ds[0], ds[2]);
    let (qv, kv, vv) = (&q, &k, &v);
    for_each_head(b * h, 2 * d.flop(), |task| {
        let (bi, hi) = (task / h, task % h);
        let (qh, kh, vh) = (head(qv, bi, hi), head(kv, bi, hi), head(vv, bi, hi));
        let doh = do_mat.at(bi as isize * s0 + (hi * hv) as isize * s2);
        let p = Mat { ptr: probs[task * nq * nk..].as_ptr(), rs: nk as isize, cs: 1 };
        let mut dp = Vec::with_capacity(nq * nk);
        let dp_mut = MatMut::rows(dp.as_mut_ptr(), nk);
        // Each task writes block `task` of dq, dk and dv, which no other task touches.
        let (dqh, dkh, dvh) = (dq_all.at(task * nq * hd), dk_all.at(task * nk * hd), dv_all.at(task * nk * hv));
        // SAFETY: all matrices are in-bounds views or this task's own blocks (see above).
        unsafe {
            matmul(nk, hv, nq, dvh, p.t(), doh);
            matmul(nq, nk, hv, dp_mut, doh, vh.t());
            // SAFETY: the (non-accumulating) GEMM just wrote all nq·nk elements.
            dp.set_len(nq * nk);
        }
        kernels::softmax_backward_in_place(&probs[task * nq * nk..(task + 1) * nq * nk], &mut dp, nk);
        let ds_mat = Mat { ptr: dp.as_ptr(), rs: nk as isize, cs: 1 };
        // SAFETY: as above.
        unsafe {
            matmul(nq, hd, nk, dqh, ds_mat, kh);
            matmul(nk, hd, nq, dkh, ds_mat.t(), qh);
        }
    });
    // SAFETY: the tasks' blocks tile dq, dk and dv, each written whole by a non-accumulating GEMM.
    unsafe {
        dq.set_len(b * h * nq * hd);
        dk.set_len(b * h * nk * hd);
        dv.set_len(b * h * nk * hv);
    }
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn array(shape: [usize; 4], seed: usize) -> Array4<f32> {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|i| (((i + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0).collect();
        Array4::from_shape_vec(shape, v).unwrap()
    }

    /// f64 reference of one head: `softmax(q·kᵀ)·v`.
    fn reference(q: &Array4<f32>, k: &Array4<f32>, v: &Array4<f32>, b: usize, h: usize, i: usize) -> Vec<f64> {
        let (nk, hd, hv) = (k.shape()[2], k.shape()[3], v.shape()[3]);
        let s: Vec<f64> = (0..nk).map(|j| (0..hd).map(|c| q[[b, h, i, c]] as f64 * k[[b, h, j, c]] as f64).sum()).collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..hv).map(|c| (0..nk).map(|j| e[j] / z * v[[b, h, j, c]] as f64).sum()).collect()
    }

    /// Strided inputs (a transposed view), serial and parallel sizes, against f64.
    #[test]
    fn forward_matches_f64_on_strided_views() {
        for (b, h, nq, nk, hd, hv) in [(2, 3, 5, 7, 4, 6), (2, 4, 70, 90, 16, 16)] {
            let q = array([b, h, nq, hd], 1);
            let k = array([b, h, nk, hd], 2);
            // v stored as [B, Nk, H, hv] and viewed as [B, H, Nk, hv] (non-contiguous).
            let v_store = array([b, nk, h, hv], 3);
            let v = v_store.view().permuted_axes([0, 2, 1, 3]);
            let d = Dims::of(&q.view(), &k.view(), &v).unwrap();
            let (out, probs) = attention(q.view(), k.view(), v, d, true);
            let vo = v.to_owned();
            for bi in 0..b {
                for hi in 0..h {
                    for i in 0..nq {
                        let want = reference(&q, &k, &vo, bi, hi, i);
                        for (c, w) in want.iter().enumerate() {
                            let got = out[(bi * nq + i) * h * hv + hi * hv + c] as f64;
                            assert!((got - w).abs() < 1e-5, "{bi},{hi},{i},{c}: {got} vs {w}");
                        }
                    }
                }
            }
            let p = probs.unwrap();
            let row_sum: f32 = p[..nk].iter().sum();
            assert!((row_sum - 1.0).abs() < 1e-5);
        }
    }

    /// The backward against central differences of `Σ out ⊙ g` in f64 arithmetic of the forward.
    #[test]
    fn backward_matches_finite_differences() {
        let (b, h, nq, nk, hd, hv) = (1, 2, 4, 5, 3, 3);
        let q = array([b, h, nq, hd], 1);
        let k = array([b, h, nk, hd], 2);
        let v = array([b, h, nk, hv], 3);
        let g: Vec<f32> = (0..b * nq * h * hv).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
        let d = Dims::of(&q.view(), &k.view(), &v.view()).unwrap();
        let (_, p) = attention(q.view(), k.view(), v.view(), d, true);
        let gv = ndarray::ArrayView3::from_shape([b, nq, h * hv], &g).unwrap();
        let (dq, dk, dv) = attention_backward(q.view(), k.view(), v.view(), d, &p.unwrap(), gv);
        let loss = |q: &Array4<f32>, k: &Array4<f32>, v: &Array4<f32>| -> f64 {
            let mut l = 0.0;
            for hi in 0..h {
                for i in 0..nq {
                    for (c, o) in reference(q, k, v, 0, hi, i).into_iter().enumerate() {
                        l += o * g[i * h * hv + hi * hv + c] as f64;
                    }
                }
            }
            l
        };
        let eps = 1e-2f32;
        for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
            let base = [&q, &k, &v][which];
            for (idx, &got) in grad.iter().enumerate().take(base.len()) {
                let mut plus = [q.clone(), k.clone(), v.clone()];
                let mut minus = plus.clone();
                plus[which].as_slice_mut().unwrap()[idx] += eps;
                minus[which].as_slice_mut().unwrap()[idx] -= eps;
                let fd = (loss(&plus[0], &plus[1], &plus[2]) - loss(&minus[0], &minus[1], &minus[2])) / (2.0 * eps as f64);
                assert!((got as f64 - fd).abs() < 2e-3 * fd.abs().max(1.0), "input {which} [{idx}]: {got} vs {fd}");
            }
        }
    }
}
