//! Expansion of a compact RoPE table for the rotation kernels: `t` `[Hr, n, hd/2]` (cos θ or
//! sin θ of each pair) → `[Hr, seq, hd]` with every value on both lanes of its pair (sin with
//! the sign of the rotation: `(−sin θ, +sin θ)`), times `scale`, on the rows `start..start + n`,
//! and the identity on the other rows (cos `1·scale`, sin 0).
//!
//! The default ([`super::rope_expand_default`]) builds this from a repeat, a concatenation
//! with the negated table, a padding concatenation and a scaling; on NdArray their backward
//! slices the gradient along inner axes element by element (a quarter of the main thread's time
//! in a MAETok-B-128 training step). Here one pass each way, parallel over rows.

use rayon::prelude::*;

/// Below this many output elements the kernels run on the calling thread.
const PAR_MIN: usize = 1 << 15;

pub use super::RopeHalf as Half;

/// Sizes of one expansion: compact `[hr, n, half]`, expanded `[hr, seq, 2·half]` with the
/// table on rows `start..start + n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expand {
    pub hr: usize,
    pub n: usize,
    pub half: usize,
    pub seq: usize,
    pub start: usize,
    pub scale: f32,
    pub kind: Half,
}

impl Expand {
    /// The expanded shape `[hr, seq, hd]`.
    pub fn out_shape(&self) -> [usize; 3] {
        [self.hr, self.seq, 2 * self.half]
    }

    /// Runs `f(h, r, row)` for every expanded row of `out` (`hd` values each), rows in parallel.
    fn rows(&self, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
        let hd = 2 * self.half;
        let each = |(i, row): (usize, &mut [f32])| f(i / self.seq, i % self.seq, row);
        if out.len() < PAR_MIN {
            out.chunks_exact_mut(hd).enumerate().for_each(each);
        } else {
            out.par_chunks_exact_mut(hd).enumerate().for_each(each);
        }
    }
}

/// The expanded table `[hr, seq, hd]` from the compact `t` `[hr, n, half]` (row-major).
pub fn expand(t: &[f32], e: &Expand) -> Vec<f32> {
    let [hr, seq, hd] = e.out_shape();
    let mut out = vec![0.0f32; hr * seq * hd];
    let pad = match e.kind {
        Half::Cos => e.scale,
        Half::Sin => 0.0,
    };
    e.rows(&mut out, |h, r, row| {
        if r < e.start || r >= e.start + e.n {
            row.fill(pad);
            return;
        }
        let src = &t[(h * e.n + r - e.start) * e.half..][..e.half];
        for (pair, &v) in row.chunks_exact_mut(2).zip(src) {
            match e.kind {
                Half::Cos => pair.fill(v * e.scale),
                Half::Sin => pair.copy_from_slice(&[-v * e.scale, v * e.scale]),
            }
        }
    });
    out
}

/// The gradient of the compact table `[hr, n, half]` from that of the expanded one `dy`
/// `[hr, seq, hd]`: `dy₀·scale + dy₁·scale` per pair (cos), `dy₁·scale − dy₀·scale` (sin); the
/// identity rows have none.
pub fn expand_backward(dy: &[f32], e: &Expand) -> Vec<f32> {
    let hd = 2 * e.half;
    let mut dt = vec![0.0f32; e.hr * e.n * e.half];
    let row = |i: usize, d: &mut [f32]| {
        let (h, r) = (i / e.n, i % e.n + e.start);
        let g = &dy[(h * e.seq + r) * hd..][..hd];
        for (d, p) in d.iter_mut().zip(g.chunks_exact(2)) {
            let (a, b) = (p[0] * e.scale, p[1] * e.scale);
            *d = match e.kind {
                Half::Cos => a + b,
                Half::Sin => b - a,
            };
        }
    };
    if dt.len() < PAR_MIN {
        dt.chunks_exact_mut(e.half.max(1)).enumerate().for_each(|(i, d)| row(i, d));
    } else {
        dt.par_chunks_exact_mut(e.half.max(1)).enumerate().for_each(|(i, d)| row(i, d));
    }
    dt
}
