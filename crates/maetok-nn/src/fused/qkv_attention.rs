//! Self-attention straight from the packed qkv projection `[B, N, 3·H·hd]` (timm's layout:
//! q, k, v, each with heads in order): RoPE (or the plain scale) on q and k, then
//! [`super::attention`]'s kernel, on views of the projection (no split, no head copies); the
//! backward writes one packed gradient `[B, N, 3·H·hd]`.
//!
//! Under autodiff this replaces the default's three slices (each copied, and each back-propagated
//! as a zero-filled qkv-sized tensor plus a slice assignment, then summed), its head
//! reshapes (whose backward copies element by element), two RoPE nodes and the attention node
//! with one node.

use ndarray::{ArrayView3, ArrayView4, ArrayView5, Axis};
use rayon::prelude::*;

use super::attention as attn;
use super::layout::zeroed;
use super::rope as rot;

/// Below this many elements the scale and the packed gradient's assembly run on the calling
/// thread.
const PAR_MIN: usize = 1 << 15;

/// Sizes of one call: qkv `[B, N, 3·H·hd]`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub n: usize,
    pub h: usize,
    pub hd: usize,
}

impl Dims {
    /// The sizes of a `[B, N, 3·D]` projection split into `heads` heads, when it is one and not
    /// empty.
    pub fn of(shape: &[usize], heads: usize) -> Option<Dims> {
        let &[b, n, c] = shape else { return None };
        let ok = heads > 0 && c % (3 * heads) == 0 && b * n * c > 0;
        ok.then_some(Dims { b, n, h: heads, hd: c / (3 * heads) })
    }

    fn attention(&self) -> attn::Dims {
        let Dims { b, n, h, hd } = *self;
        attn::Dims { b, h, nq: n, nk: n, hd, hv: hd }
    }

    fn rope(&self, hr: usize) -> rot::Dims {
        let Dims { b, n, h, hd } = *self;
        rot::Dims { b, h, n, hd, hr }
    }

    fn head_len(&self) -> usize {
        self.b * self.h * self.n * self.hd
    }
}

/// q, k and v `[B, H, N, hd]` as views of the row-major projection `qkv`.
pub fn split(qkv: &[f32], d: Dims) -> [ArrayView4<'_, f32>; 3] {
    let all = ArrayView5::from_shape([d.b, d.n, 3, d.h, d.hd], qkv).expect("qkv of these sizes");
    [0, 1, 2].map(|part| all.index_axis_move(Axis(2), part).permuted_axes([0, 2, 1, 3]))
}

/// RoPE tables, row-major `[Hr, N, hd]` each (`Hr` = H or 1), q's with the attention scale.
#[derive(Clone, Copy, Debug)]
pub struct Tables<'a> {
    pub cos_q: &'a [f32],
    pub sin_q: &'a [f32],
    pub cos_k: &'a [f32],
    pub sin_k: &'a [f32],
    pub hr: usize,
}

impl Tables<'_> {
    /// Whether the tables fit a call of sizes `d` (`hd` even, `Hr` = H or 1).
    pub fn fit(&self, d: Dims) -> bool {
        let len = self.hr * d.n * d.hd;
        let all = [self.cos_q, self.sin_q, self.cos_k, self.sin_k].iter().all(|t| t.len() == len);
        all && d.hd.is_multiple_of(2) && (self.hr == d.h || self.hr == 1)
    }
}

/// How q and k are prepared: rotated by tables, or (no RoPE) q multiplied by `scale`.
#[derive(Clone, Copy, Debug)]
pub enum Position<'a> {
    Rope(Tables<'a>),
    Scale(f32),
}

/// What the backward needs besides the inputs: the prepared q (and k, when rotated) row-major
/// `[B, H, N, hd]`, and the attention weights `[B, H, N, N]`.
#[derive(Clone, Debug)]
pub struct Saved {
    pub q: Vec<f32>,
    pub k: Option<Vec<f32>>,
    pub probs: Vec<f32>,
}

/// `q·s` row-major `[B, H, N, hd]` from a view with contiguous rows (a head of the projection),
/// parallel over (batch, head).
fn scaled(x: &ArrayView4<f32>, s: f32) -> Vec<f32> {
    let &[_, h, n, hd] = x.shape() else { unreachable!("a 4-d view") };
    let mut y = zeroed(x.len());
    let run = |task: usize, out: &mut [f32]| {
        for (i, row) in out.chunks_exact_mut(hd).enumerate() {
            for (o, &v) in row.iter_mut().zip(rot::x_row(x, task / h, task % h, i)) {
                *o = v * s;
            }
        }
    };
    if y.len() < PAR_MIN {
        y.chunks_exact_mut(n * hd).enumerate().for_each(|(t, o)| run(t, o));
    } else {
        y.par_chunks_exact_mut(n * hd).enumerate().for_each(|(t, o)| run(t, o));
    }
    y
}

/// `[B, H, N, hd]` row-major values as a view.
fn heads(xs: &[f32], d: Dims) -> ArrayView4<'_, f32> {
    ArrayView4::from_shape([d.b, d.h, d.n, d.hd], xs).expect("[B, H, N, hd] values")
}

/// Forward: `out` row-major `[B, N, H·hd]` (merged heads) and, when `keep`, what the backward
/// needs.
pub fn forward(qkv: &[f32], d: Dims, pos: Position, keep: bool) -> (Vec<f32>, Option<Saved>) {
    let [q, k, v] = split(qkv, d);
    let (qp, kp) = match pos {
        Position::Rope(t) => {
            let rd = d.rope(t.hr);
            (rot::rotate(&q, t.cos_q, t.sin_q, rd), Some(rot::rotate(&k, t.cos_k, t.sin_k, rd)))
        }
        Position::Scale(s) => (scaled(&q, s), None),
    };
    let kv = kp.as_deref().map_or(k, |ks| heads(ks, d));
    let (out, probs) = attn::attention(heads(&qp, d), kv, v, d.attention(), keep);
    let saved = probs.map(|probs| Saved { q: qp, k: kp, probs });
    (out, saved)
}

/// Gradients of the four tables, row-major `[Hr, N, hd]`: `[cos_q, sin_q, cos_k, sin_k]`.
pub type TableGrads = [Vec<f32>; 4];

/// Backward from `dout` `[B, N, H·hd]`: the packed `dqkv` row-major `[B, N, 3·H·hd]` and, when
/// `tables` (and RoPE was applied), the tables' gradients.
pub fn backward(qkv: &[f32], d: Dims, pos: Position, saved: &Saved, dout: ArrayView3<f32>, tables: bool) -> (Vec<f32>, Option<TableGrads>) {
    let [q, k, v] = split(qkv, d);
    let kv = saved.k.as_deref().map_or(k, |ks| heads(ks, d));
    let (dqp, dkp, dv) = attn::attention_backward(heads(&saved.q, d), kv, v, d.attention(), &saved.probs, dout);
    let (dq, dk, table_grads) = match pos {
        Position::Rope(t) => {
            let rd = d.rope(t.hr);
            let (dq, gq) = rot::rotate_backward(&q, t.cos_q, t.sin_q, &dqp, rd, tables);
            let (dk, gk) = rot::rotate_backward(&k, t.cos_k, t.sin_k, &dkp, rd, tables);
            let grads = gq.zip(gk).map(|((cq, sq), (ck, sk))| [cq, sq, ck, sk]);
            (dq, dk, grads)
        }
        Position::Scale(s) => (dqp.into_iter().map(|g| g * s).collect(), dkp, None),
    };
    (pack([&dq, &dk, &dv], d), table_grads)
}

/// `[q, k, v]` gradients, each row-major `[B, H, N, hd]`, as one `[B, N, 3·H·hd]` buffer.
fn pack(parts: [&[f32]; 3], d: Dims) -> Vec<f32> {
    let Dims { b: _, n, h, hd } = d;
    let width = 3 * h * hd;
    let mut out = zeroed(d.b * n * width);
    let row = |r: usize, dst: &mut [f32]| {
        let (bi, i) = (r / n, r % n);
        for (part, src) in parts.iter().enumerate() {
            for hi in 0..h {
                let from = ((bi * h + hi) * n + i) * hd;
                dst[(part * h + hi) * hd..(part * h + hi + 1) * hd].copy_from_slice(&src[from..from + hd]);
            }
        }
    };
    if out.len() < PAR_MIN {
        out.chunks_exact_mut(width).enumerate().for_each(|(r, dst)| row(r, dst));
    } else {
        out.par_chunks_exact_mut(width).enumerate().for_each(|(r, dst)| row(r, dst));
    }
    debug_assert!(parts.iter().all(|p| p.len() == d.head_len()));
    out
}
