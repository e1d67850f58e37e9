//! Slice kernels of the fused CPU operations: f32, rows of `n` contiguous values, loops written
//! so that LLVM vectorises them (8 independent lanes, no libm calls), parallel over rows with
//! rayon. Every reduction runs in a fixed order (per row, or per chunk of rows summed in chunk
//! order), so results do not depend on the number of threads or on scheduling.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Below this many elements a kernel runs on the calling thread (rayon's hand-off costs more).
const PAR_MIN: usize = 1 << 15;
/// Lanes of the manual vector accumulators (AVX-512 width: one register there, two with AVX2,
/// four with SSE/NEON; the same summation order on every CPU).
const LANES: usize = 16;

/// Rows per parallel task for rows of length `n`.
fn rows_per_task(n: usize) -> usize {
    (PAR_MIN / n.max(1)).max(1)
}

/// Runs `f(first_row, out_chunk)` over `out` split into tasks of whole rows of length `n`.
fn par_rows(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() <= PAR_MIN || n == 0 {
        f(0, out);
        return;
    }
    let per = rows_per_task(n);
    out.par_chunks_mut(per * n).enumerate().for_each(|(i, c)| f(i * per, c));
}

/// Runs `f(offset, out_chunk)` over `out` in parallel chunks (element-wise kernels).
fn par_elems(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() <= PAR_MIN {
        f(0, out);
        return;
    }
    out.par_chunks_mut(PAR_MIN).enumerate().for_each(|(i, c)| f(i * PAR_MIN, c));
}

/// Defines a chunk kernel three times: as built (baseline x86-64 has 4-lane SSE2), compiled for
/// AVX2 + FMA (8 lanes) and for AVX-512 (16 lanes), and picks the widest the CPU has at run time.
/// The arithmetic and its rounding are the same in all three (nothing is contracted into FMAs,
/// reductions run in [`LANES`] fixed lanes whatever the vector width). The body and the helpers
/// it calls are `#[inline(always)]`, so they are compiled inside each version.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                imp($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) {
                imp($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                // SAFETY: the CPU has the features `avx512` is compiled for (checked above).
                return unsafe { avx512($($arg),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has the features `avx2` is compiled for (checked above).
                return unsafe { avx2($($arg),*) };
            }
            imp($($arg),*)
        }
    };
}

/// `e^x` for `x ≤ 88` (larger arguments saturate at `e^88`), within 2 ulp: Cody–Waite range
/// reduction by ln 2 and Cephes' degree-6 polynomial, branch-free so that it vectorises.
/// Arguments below −87.3 give 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.336_55, 88.0);
    // Round to nearest (even) by adding and removing 1.5·2²³: vectorises without SSE4.1.
    const ROUND: f32 = 12_582_912.0;
    let k = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^k from the bits of k + 127 + 2²³, whose low mantissa bits hold k + 127 ∈ [1, 254]:
    // `k as i32` (a saturating conversion) kept LLVM from vectorising this function.
    let scale = f32::from_bits((k + (127.0 + 8_388_608.0)).to_bits() << 23);
    if x < -87.336_55 {
        0.0
    } else {
        e * scale
    }
}

/// `erf(x)` within 4e-7 (a few ulp): `x·P(x²)/Q(x²)` on `[−4, 4]` (the rational approximation of Eigen
/// and XLA; beyond ±3.8, ±1), branch-free so that it vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024_e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_600_2e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329_2e-3;
    let q = q * x2 - 1.426_474e-2;
    // Near the clamp the rational form drifts by a few ulp from 1, where erf is 1 − 8e-8 at most.
    if x.abs() > 3.8 {
        1.0f32.copysign(x)
    } else {
        x * p / q
    }
}

/// Sum of a slice in 8 lanes (a fixed order).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `Σ a·b` in 8 lanes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Largest value of a non-empty slice (NaN-ignoring, as `f32::max`).
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// One row's softmax in place in three passes: the maximum; `e^(x − max)` and its sum in
/// [`LANES`] lanes; the product with the sum's reciprocal.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let m = max(row);
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = exp(c[l] - m);
            c[l] = e;
            acc[l] += e;
        }
    }
    let mut tail = 0.0f32;
    for o in chunks.into_remainder() {
        *o = exp(*o - m);
        tail += *o;
    }
    let r = 1.0 / (acc.iter().sum::<f32>() + tail);
    for o in row.iter_mut() {
        *o *= r;
    }
}

/// Softmax of each row of length `n`: `y = e^(x − max) / Σ e^(x − max)`.
pub fn softmax_rows(x: &[f32], y: &mut [f32], n: usize) {
    par_rows(y, n, |r0, out| softmax_chunk(x, out, n, r0));
}

multiversion! {
    /// [`softmax_rows`] on the rows of `out` starting at row `r0`.
    fn softmax_chunk(x: &[f32], out: &mut [f32], n: usize, r0: usize) {
        for (i, yr) in out.chunks_exact_mut(n).enumerate() {
            let xr = &x[(r0 + i) * n..(r0 + i + 1) * n];
            yr.copy_from_slice(xr);
            softmax_row(yr);
        }
    }
}

/// Softmax backward per row: `dx = y · (dy − Σ y·dy)`.
pub fn softmax_rows_backward(y: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
    par_rows(dx, n, |r0, out| softmax_backward_chunk(y, dy, out, n, r0));
}

multiversion! {
    fn softmax_backward_chunk(y: &[f32], dy: &[f32], out: &mut [f32], n: usize, r0: usize) {
        for (i, dxr) in out.chunks_exact_mut(n).enumerate() {
            let range = (r0 + i) * n..(r0 + i + 1) * n;
            let (yr, gr) = (&y[range.clone()], &dy[range]);
            let s = dot(yr, gr);
            for ((o, &p), &g) in dxr.iter_mut().zip(yr).zip(gr) {
                *o = p * (g - s);
            }
        }
    }
}

multiversion! {
    /// [`softmax_rows`] in place on the calling thread (one attention head's scores).
    pub fn softmax_rows_in_place(s: &mut [f32], n: usize) {
        for row in s.chunks_exact_mut(n) {
            softmax_row(row);
        }
    }
}

multiversion! {
    /// [`softmax_rows_backward`] in place on the calling thread: `g ← y · (g − Σ y·g)` per row.
    pub fn softmax_backward_in_place(y: &[f32], g: &mut [f32], n: usize) {
        for (yr, gr) in y.chunks_exact(n).zip(g.chunks_exact_mut(n)) {
            let s = dot(yr, gr);
            for (o, &p) in gr.iter_mut().zip(yr) {
                *o = p * (*o - s);
            }
        }
    }
}

/// Exact (erf) GELU of one value: `½·x·(1 + erf(x/√2))`.
#[inline(always)]
fn gelu_erf_of(v: f32) -> f32 {
    0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// Exact (erf) GELU: `y = ½·x·(1 + erf(x/√2))`.
pub fn gelu_erf(x: &[f32], y: &mut [f32]) {
    par_elems(y, |o0, out| gelu_chunk(&x[o0..o0 + out.len()], out));
}

multiversion! {
    fn gelu_chunk(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = gelu_erf_of(v);
        }
    }
}

/// [`gelu_erf`] (`tanh == false`) or [`gelu_tanh`] written over its input (the same values).
pub fn gelu_in_place(x: &mut [f32], tanh: bool) {
    par_elems(x, |_, chunk| gelu_in_place_chunk(chunk, tanh));
}

multiversion! {
    fn gelu_in_place_chunk(x: &mut [f32], tanh: bool) {
        if tanh {
            x.iter_mut().for_each(|v| *v = gelu_tanh_of(*v));
        } else {
            x.iter_mut().for_each(|v| *v = gelu_erf_of(*v));
        }
    }
}

/// Exact GELU backward: `dx = dy · (Φ(x) + x·φ(x))`.
pub fn gelu_erf_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    par_elems(dx, |o0, out| {
        let range = o0..o0 + out.len();
        gelu_backward_chunk(&x[range.clone()], &dy[range], out)
    });
}

multiversion! {
    fn gelu_backward_chunk(x: &[f32], dy: &[f32], out: &mut [f32]) {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
            let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
            *o = g * (cdf + v * pdf);
        }
    }
}

/// `√(2/π)` and the cubic coefficient of the tanh-approximated GELU.
const GELU_TANH_C: f32 = 0.797_884_6;
const GELU_TANH_A: f32 = 0.044_715;

/// `tanh(u) = 1 − 2/(e^{2u} + 1)` from [`exp`] (branch-free, so it vectorises; within ~1e-7 of
/// libm's, absolute; `±1` beyond `|u| ≈ 9`).
#[inline(always)]
fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * u) + 1.0)
}

/// Tanh-approximated GELU (PyTorch's `GELU(approximate='tanh')`, SiT/DiT and the DINO trunk):
/// `y = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(x: &[f32], y: &mut [f32]) {
    par_elems(y, |o0, out| gelu_tanh_chunk(&x[o0..o0 + out.len()], out));
}

/// Tanh-approximated GELU of one value.
#[inline(always)]
fn gelu_tanh_of(v: f32) -> f32 {
    let t = tanh(GELU_TANH_C * (v + GELU_TANH_A * v * v * v));
    0.5 * v * (1.0 + t)
}

multiversion! {
    fn gelu_tanh_chunk(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = gelu_tanh_of(v);
        }
    }
}

/// Tanh-GELU backward: `dx = dy · (½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715·x²))`.
pub fn gelu_tanh_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    par_elems(dx, |o0, out| {
        let range = o0..o0 + out.len();
        gelu_tanh_backward_chunk(&x[range.clone()], &dy[range], out)
    });
}

multiversion! {
    fn gelu_tanh_backward_chunk(x: &[f32], dy: &[f32], out: &mut [f32]) {
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
            let v2 = v * v;
            let t = tanh(GELU_TANH_C * (v + GELU_TANH_A * v2 * v));
            let du = GELU_TANH_C * (1.0 + 3.0 * GELU_TANH_A * v2);
            *o = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
        }
    }
}

/// Arguments up to this magnitude take [`sin_cos`]; larger ones (and NaN) libm's `sin`/`cos`.
const TRIG_MAX: f32 = 8192.0;

/// `(sin x, cos x)` for `|x| ≤ 8192`, within 8e-8 absolute (libm's f32 results are within
/// 6e-8): Cody–Waite reduction by π/2 in three parts to `r ∈ [−π/4, π/4]` and Cephes' minimax
/// polynomials for `sin r` and `cos r`, swapped and negated by the quadrant, branch-free so that
/// it vectorises.
#[inline(always)]
pub fn sin_cos(x: f32) -> (f32, f32) {
    // π/2 = P1 + P2 + P3, the first two exact in few bits (so `j·P1`, `j·P2` are exact).
    const P1: f32 = 1.570_312_5;
    const P2: f32 = 4.837_513e-4;
    const P3: f32 = 7.549_79e-8;
    // Round to nearest by adding 1.5·2²³: the low mantissa bits then hold `j + 2²²`, so the
    // quadrant `j mod 4` is in the two lowest bits.
    const ROUND: f32 = 12_582_912.0;
    let jr = x * std::f32::consts::FRAC_2_PI + ROUND;
    let quadrant = jr.to_bits() & 3;
    let j = jr - ROUND;
    let r = ((x - j * P1) - j * P2) - j * P3;
    let z = r * r;
    let s = ((-1.951_529_6e-4 * z + 8.332_161e-3) * z - 1.666_665_5e-1) * z * r + r;
    let c = ((2.443_315_7e-5 * z - 1.388_731_6e-3) * z + 4.166_664_6e-2) * z * z - 0.5 * z + 1.0;
    // x = j·π/2 + r: sin x = (sin r, cos r, −sin r, −cos r)[j mod 4], cos x = (cos r, −sin r, −cos r, sin r)[j mod 4].
    let (sv, cv) = if quadrant & 1 != 0 { (c, s) } else { (s, c) };
    (if quadrant & 2 != 0 { -sv } else { sv }, if (quadrant + 1) & 2 != 0 { -cv } else { cv })
}

/// [`sin_cos`] where it applies, libm beyond (and for NaN and infinities).
#[inline(always)]
fn sin_cos_any(x: f32) -> (f32, f32) {
    if x.abs() <= TRIG_MAX {
        sin_cos(x)
    } else {
        (x.sin(), x.cos())
    }
}

/// `y = sin x` (`cos == false`) or `y = cos x`, element-wise.
pub fn sin_or_cos(x: &[f32], y: &mut [f32], cos: bool) {
    par_elems(y, |o0, out| trig_chunk(&x[o0..o0 + out.len()], out, cos));
}

multiversion! {
    fn trig_chunk(x: &[f32], out: &mut [f32], cos: bool) {
        // The branch-free loop on chunks that allow it (all of them in practice: RoPE angles).
        let pairs = out.iter_mut().zip(x);
        match (x.iter().all(|v| v.abs() <= TRIG_MAX), cos) {
            (true, false) => pairs.for_each(|(o, &v)| *o = sin_cos(v).0),
            (true, true) => pairs.for_each(|(o, &v)| *o = sin_cos(v).1),
            (false, false) => pairs.for_each(|(o, &v)| *o = sin_cos_any(v).0),
            (false, true) => pairs.for_each(|(o, &v)| *o = sin_cos_any(v).1),
        }
    }
}

/// [`sin_or_cos`] written over its input (the same values).
pub fn sin_or_cos_in_place(x: &mut [f32], cos: bool) {
    par_elems(x, |_, chunk| trig_in_place_chunk(chunk, cos));
}

multiversion! {
    fn trig_in_place_chunk(x: &mut [f32], cos: bool) {
        let fast = x.iter().all(|v| v.abs() <= TRIG_MAX);
        match (fast, cos) {
            (true, false) => x.iter_mut().for_each(|v| *v = sin_cos(*v).0),
            (true, true) => x.iter_mut().for_each(|v| *v = sin_cos(*v).1),
            (false, false) => x.iter_mut().for_each(|v| *v = sin_cos_any(*v).0),
            (false, true) => x.iter_mut().for_each(|v| *v = sin_cos_any(*v).1),
        }
    }
}

/// Backward of [`sin_or_cos`]: `dx = dy·cos x` for sin, `dx = −dy·sin x` for cos.
pub fn sin_or_cos_backward(x: &[f32], dy: &[f32], dx: &mut [f32], cos: bool) {
    par_elems(dx, |o0, out| {
        let range = o0..o0 + out.len();
        trig_backward_chunk(&x[range.clone()], &dy[range], out, cos)
    });
}

multiversion! {
    fn trig_backward_chunk(x: &[f32], dy: &[f32], out: &mut [f32], cos: bool) {
        let triples = out.iter_mut().zip(x).zip(dy);
        match (x.iter().all(|v| v.abs() <= TRIG_MAX), cos) {
            (true, false) => triples.for_each(|((o, &v), &g)| *o = g * sin_cos(v).1),
            (true, true) => triples.for_each(|((o, &v), &g)| *o = -(g * sin_cos(v).0)),
            (false, false) => triples.for_each(|((o, &v), &g)| *o = g * sin_cos_any(v).1),
            (false, true) => triples.for_each(|((o, &v), &g)| *o = -(g * sin_cos_any(v).0)),
        }
    }
}

/// A new vector of `len` values that `f(offset, chunk)` writes in parallel chunks of
/// [`PAR_MIN`] (each call must write every element of its chunk), without a zero fill first.
fn par_new(len: usize, f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    let spare = &mut v.spare_capacity_mut()[..len];
    if len <= PAR_MIN {
        f(0, spare);
    } else {
        spare.par_chunks_mut(PAR_MIN).enumerate().for_each(|(i, c)| f(i * PAR_MIN, c));
    }
    // SAFETY: every chunk of the `len` elements was written by `f` (its contract, kept by the
    // callers below: their chunk kernels zip the output chunk with inputs at least as long).
    unsafe { v.set_len(len) };
    v
}

/// One EMA step, element by element: `e·keep + o·take` (`keep = decay`, `take = 1 − decay`,
/// the order and rounding of Burn's `e * decay + o * (1 − decay)`). `e` and `o` have one length.
pub fn ema_mix(e: &[f32], o: &[f32], keep: f32, take: f32) -> Vec<f32> {
    assert_eq!(e.len(), o.len(), "ema_mix: lengths");
    par_new(e.len(), |at, out| ema_mix_chunk(&e[at..at + out.len()], &o[at..at + out.len()], keep, take, out))
}

multiversion! {
    fn ema_mix_chunk(e: &[f32], o: &[f32], keep: f32, take: f32, out: &mut [MaybeUninit<f32>]) {
        for ((y, &a), &b) in out.iter_mut().zip(e).zip(o) {
            y.write(a * keep + b * take);
        }
    }
}

/// `x·s` element by element.
pub fn scaled(x: &[f32], s: f32) -> Vec<f32> {
    par_new(x.len(), |at, out| scaled_chunk(&x[at..at + out.len()], s, out))
}

multiversion! {
    fn scaled_chunk(x: &[f32], s: f32, out: &mut [MaybeUninit<f32>]) {
        for (y, &v) in out.iter_mut().zip(x) {
            y.write(v * s);
        }
    }
}

/// `x ← x·s` element by element.
pub fn scale_in_place(x: &mut [f32], s: f32) {
    par_elems(x, |_, c| scale_in_place_chunk(c, s));
}

multiversion! {
    fn scale_in_place_chunk(x: &mut [f32], s: f32) {
        for v in x.iter_mut() {
            *v *= s;
        }
    }
}

multiversion! {
    /// `h ← h + g ⊙ a` with `g` repeated over the rows of `h` (rows of `g.len()` values; one
    /// sample's gated residual), on the calling thread. `h · g` and the sum are rounded as
    /// Burn's `h + g * a` rounds them.
    pub fn gated_add_rows_in_place(h: &mut [f32], a: &[f32], g: &[f32]) {
        for (hr, ar) in h.chunks_exact_mut(g.len()).zip(a.chunks_exact(g.len())) {
            for ((o, &v), &s) in hr.iter_mut().zip(ar).zip(g) {
                *o += s * v;
            }
        }
    }
}

multiversion! {
    /// `y = h + g ⊙ a` with `g` repeated over the rows (see [`gated_add_rows_in_place`]).
    pub fn gated_add_rows(h: &[f32], a: &[f32], g: &[f32], y: &mut [f32]) {
        let n = g.len();
        for ((yr, hr), ar) in y.chunks_exact_mut(n).zip(h.chunks_exact(n)).zip(a.chunks_exact(n)) {
            for (((o, &x), &v), &s) in yr.iter_mut().zip(hr).zip(ar).zip(g) {
                *o = x + s * v;
            }
        }
    }
}

multiversion! {
    /// The gated residual's backward over one sample's rows: `da = dy ⊙ g` (when `da` is
    /// given) and `dg += Σ_rows dy ⊙ a` (rows summed in order).
    pub fn gated_add_rows_backward(a: &[f32], g: &[f32], dy: &[f32], da: Option<&mut [f32]>, dg: &mut [f32]) {
        let n = g.len();
        for (ar, gr) in a.chunks_exact(n).zip(dy.chunks_exact(n)) {
            for ((o, &v), &e) in dg.iter_mut().zip(ar).zip(gr) {
                *o += e * v;
            }
        }
        if let Some(da) = da {
            for (dr, gr) in da.chunks_exact_mut(n).zip(dy.chunks_exact(n)) {
                for ((o, &e), &s) in dr.iter_mut().zip(gr).zip(g) {
                    *o = e * s;
                }
            }
        }
    }
}

/// `Σ x²`: [`LANES`] f32 accumulators per chunk of [`PAR_MIN`] values, the chunks' sums added in
/// f64 in chunk order (the same result on any number of threads).
pub fn sum_squares(x: &[f32]) -> f64 {
    let chunk = |c: &[f32]| {
        let mut s = 0.0f64;
        sum_squares_chunk(c, &mut s);
        s
    };
    if x.len() <= PAR_MIN {
        return chunk(x);
    }
    let parts: Vec<f64> = x.par_chunks(PAR_MIN).map(chunk).collect();
    parts.iter().sum()
}

multiversion! {
    fn sum_squares_chunk(x: &[f32], total: &mut f64) {
        let mut acc = [0.0f32; LANES];
        let chunks = x.chunks_exact(LANES);
        let tail: f64 = chunks.remainder().iter().map(|&v| (v * v) as f64).sum();
        for c in chunks {
            for l in 0..LANES {
                acc[l] += c[l] * c[l];
            }
        }
        *total = acc.iter().map(|&a| a as f64).sum::<f64>() + tail;
    }
}

/// The f32 scalars of one AdamW update, as Burn's `AdamW` applies them (see
/// [`super::AdamWStep`]).
#[derive(Clone, Copy, Debug)]
pub struct AdamWScalars {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `1 − β₁`, `1 − β₂`.
    pub one_minus_beta_1: f32,
    pub one_minus_beta_2: f32,
    /// The bias corrections `1 − β₁ᵗ`, `1 − β₂ᵗ`.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    /// `1 − lr·weight_decay`, `None` without decay.
    pub keep: Option<f32>,
    pub lr: f32,
    /// The first step: the moments start from the gradient alone.
    pub first: bool,
}

/// One AdamW update in place, element by element in Burn's operation order (so the result is
/// bit-identical to its ten-op version): `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p·keep − lr · (m/c₁) / (√(v/c₂) + ε)`. All four slices have the same length.
pub fn adamw(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamWScalars) {
    if p.len() <= PAR_MIN {
        adamw_chunk(p, m, v, g, s);
        return;
    }
    p.par_chunks_mut(PAR_MIN)
        .zip(m.par_chunks_mut(PAR_MIN))
        .zip(v.par_chunks_mut(PAR_MIN))
        .zip(g.par_chunks(PAR_MIN))
        .for_each(|(((p, m), v), g)| adamw_chunk(p, m, v, g, s));
}

multiversion! {
    fn adamw_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamWScalars) {
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            let g2 = g * g;
            (*m, *v) = if s.first {
                (g * s.one_minus_beta_1, g2 * s.one_minus_beta_2)
            } else {
                (*m * s.beta_1 + g * s.one_minus_beta_1, *v * s.beta_2 + g2 * s.one_minus_beta_2)
            };
            let delta = (*m / s.correction_1) / ((*v / s.correction_2).sqrt() + s.epsilon);
            let kept = match s.keep {
                Some(k) => *p * k,
                None => *p,
            };
            *p = kept - delta * s.lr;
        }
    }
}

/// LayerNorm of each row of length `n` (biased variance, eps inside the root), then the optional
/// affine `·w + b`. Writes `y` and, per row, the mean and `1/√(var + eps)` for the backward.
pub fn layer_norm_rows(x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, eps: f32, n: usize, y: &mut [f32], stats: &mut [f32]) {
    let rows = y.len() / n.max(1);
    // Per-row statistics first (cheap), then the normalisation in parallel.
    par_rows(&mut stats[..2 * rows], 2, |r0, st| layer_norm_stats_chunk(x, st, n, eps, r0));
    let stats = &*stats;
    par_rows(y, n, |r0, out| layer_norm_chunk(x, w, b, stats, out, n, r0));
}

multiversion! {
    /// Mean and `1/√(var + eps)` of the rows starting at `r0`, two values per row in `st`.
    fn layer_norm_stats_chunk(x: &[f32], st: &mut [f32], n: usize, eps: f32, r0: usize) {
        for (i, s) in st.chunks_exact_mut(2).enumerate() {
            let xr = &x[(r0 + i) * n..(r0 + i + 1) * n];
            let mean = sum(xr) / n as f32;
            let mut acc = [0.0f32; LANES];
            let chunks = xr.chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
            for c in chunks {
                for l in 0..LANES {
                    acc[l] += (c[l] - mean) * (c[l] - mean);
                }
            }
            let var = (acc.iter().sum::<f32>() + tail) / n as f32;
            s[0] = mean;
            s[1] = 1.0 / (var + eps).sqrt();
        }
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_chunk(x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, stats: &[f32], out: &mut [f32], n: usize, r0: usize) {
        for (i, yr) in out.chunks_exact_mut(n).enumerate() {
            let r = r0 + i;
            let xr = &x[r * n..(r + 1) * n];
            let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
            match (w, b) {
                (Some(w), Some(b)) => {
                    for (((o, &v), &wi), &bi) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *o = (v - mean) * rstd * wi + bi;
                    }
                }
                (Some(w), None) => {
                    for ((o, &v), &wi) in yr.iter_mut().zip(xr).zip(w) {
                        *o = (v - mean) * rstd * wi;
                    }
                }
                (None, Some(b)) => {
                    for ((o, &v), &bi) in yr.iter_mut().zip(xr).zip(b) {
                        *o = (v - mean) * rstd + bi;
                    }
                }
                (None, None) => {
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        *o = (v - mean) * rstd;
                    }
                }
            }
        }
    }
}

/// LayerNorm backward. With `x̂ = (x − mean)·rstd` and `g = dy·w` (`g = dy` without weight):
/// `dx = rstd · (g − mean(g) − x̂·mean(g·x̂))`, `dw = Σ_rows dy·x̂`, `db = Σ_rows dy`.
/// Returns `(dw, db)` (each `[n]`, summed over row chunks in chunk order) when `params` asks for
/// them (an affine norm), else empty vectors.
pub fn layer_norm_rows_backward(
    x: &[f32],
    w: Option<&[f32]>,
    stats: &[f32],
    dy: &[f32],
    n: usize,
    dx: &mut [f32],
    params: bool,
) -> (Vec<f32>, Vec<f32>) {
    par_rows(dx, n, |r0, out| layer_norm_backward_chunk(x, w, stats, dy, out, n, r0));
    if params {
        layer_norm_param_grads(x, stats, dy, n)
    } else {
        (Vec::new(), Vec::new())
    }
}

multiversion! {
    fn layer_norm_backward_chunk(x: &[f32], w: Option<&[f32]>, stats: &[f32], dy: &[f32], out: &mut [f32], n: usize, r0: usize) {
        let mut g = vec![0.0f32; n];
        let mut xhat = vec![0.0f32; n];
        for (i, dxr) in out.chunks_exact_mut(n).enumerate() {
            let r = r0 + i;
            let (xr, gr) = (&x[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
            let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
            for ((h, &v), gi) in xhat.iter_mut().zip(xr).zip(g.iter_mut().zip(gr)) {
                *h = (v - mean) * rstd;
                *gi.0 = *gi.1;
            }
            if let Some(w) = w {
                for (gi, &wi) in g.iter_mut().zip(w) {
                    *gi *= wi;
                }
            }
            let mg = sum(&g) / n as f32;
            let mgx = dot(&g, &xhat) / n as f32;
            for ((o, &gi), &h) in dxr.iter_mut().zip(&g).zip(&xhat) {
                *o = rstd * (gi - mg - h * mgx);
            }
        }
    }
}

/// `(dw, db)` of the LayerNorm backward: `Σ_rows dy·x̂` and `Σ_rows dy`.
fn layer_norm_param_grads(x: &[f32], stats: &[f32], dy: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
    // Parameter gradients: partial sums per chunk of rows, combined in chunk order.
    let rows = dy.len() / n.max(1);
    let per = rows_per_task(n);
    let partial = |c: usize| {
        let (mut dw, mut db) = (vec![0.0f32; n], vec![0.0f32; n]);
        for r in c * per..((c + 1) * per).min(rows) {
            let (xr, gr) = (&x[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
            let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
            for (((a, bb), &v), &gi) in dw.iter_mut().zip(db.iter_mut()).zip(xr).zip(gr) {
                *a += gi * (v - mean) * rstd;
                *bb += gi;
            }
        }
        (dw, db)
    };
    let chunks = rows.div_ceil(per);
    let parts: Vec<(Vec<f32>, Vec<f32>)> =
        if rows * n <= PAR_MIN { (0..chunks).map(partial).collect() } else { (0..chunks).into_par_iter().map(partial).collect() };
    let (mut dw, mut db) = (vec![0.0f32; n], vec![0.0f32; n]);
    for (pw, pb) in parts {
        for (a, p) in dw.iter_mut().zip(pw) {
            *a += p;
        }
        for (a, p) in db.iter_mut().zip(pb) {
            *a += p;
        }
    }
    (dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "exp relative error {worst:e}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    /// `sin_cos` against f64 over the whole reduced range (finely near 0 and over RoPE-sized
    /// angles), and the kernels' libm fallback beyond it, for NaN and for infinities.
    #[test]
    fn sin_cos_is_within_8e_8_of_f64() {
        let mut worst = 0.0f64;
        let mut x = -8192.0f32;
        while x <= 8192.0 {
            let (s, c) = sin_cos(x);
            let (xs, xc) = ((x as f64).sin(), (x as f64).cos());
            worst = worst.max((s as f64 - xs).abs()).max((c as f64 - xc).abs());
            x += if x.abs() < 64.0 { 1.1e-4 } else { 0.0137 };
        }
        assert!(worst < 8e-8, "sin/cos absolute error {worst:e}");
        assert_eq!(sin_cos(0.0), (0.0, 1.0));
        let xs = [0.5f32, -3.0, 1e4, -2e5, f32::NAN, f32::INFINITY, 8192.0];
        let (mut s, mut c) = ([0.0f32; 7], [0.0f32; 7]);
        sin_or_cos(&xs, &mut s, false);
        sin_or_cos(&xs, &mut c, true);
        for (i, &x) in xs.iter().enumerate() {
            if x.is_finite() {
                assert!((s[i] - x.sin()).abs() < 8e-8 && (c[i] - x.cos()).abs() < 8e-8, "{x}: {} {}", s[i], c[i]);
            } else {
                assert!(s[i].is_nan() && c[i].is_nan(), "{x}");
            }
        }
        // Backward: d sin = dy·cos, d cos = −dy·sin, on a parallel-sized input.
        let x: Vec<f32> = (0..100_000).map(|i| i as f32 * 1e-3 - 50.0).collect();
        let dy: Vec<f32> = (0..100_000).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
        let (mut ds, mut dc) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        sin_or_cos_backward(&x, &dy, &mut ds, false);
        sin_or_cos_backward(&x, &dy, &mut dc, true);
        for i in (0..x.len()).step_by(97) {
            assert!((ds[i] - dy[i] * x[i].cos()).abs() < 1e-6 && (dc[i] + dy[i] * x[i].sin()).abs() < 1e-6, "{}", x[i]);
        }
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_the_series() {
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = erf_f64(x as f64);
            let err = (erf(x) as f64 - want).abs();
            assert!(err < 4e-7 && err < 4e-7 * want.abs().max(1e-3), "erf({x}) = {} vs {want}", erf(x));
            x += 0.00173;
        }
    }

    /// erf in f64 (series for small |x|, continued fraction of erfc beyond).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() < 2.5 {
            let (mut term, mut s) = (x, x);
            for k in 1..200 {
                term *= -x * x / k as f64;
                s += term / (2 * k + 1) as f64;
            }
            s * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let a = x.abs();
            let mut f = a;
            for k in (1..200).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
            (1.0 - erfc).copysign(x)
        }
    }

    fn rows(r: usize, n: usize) -> Vec<f32> {
        (0..r * n).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 6.0).collect()
    }

    /// The parallel path (many rows) equals the serial one row by row.
    #[test]
    fn kernels_do_not_depend_on_the_split() {
        let n = 77;
        let x = rows(2000, n);
        let dy = rows(2000, n).iter().map(|v| v * 0.3 + 0.1).collect::<Vec<_>>();
        let mut y = vec![0.0; x.len()];
        softmax_rows(&x, &mut y, n);
        let mut one = vec![0.0; n];
        softmax_rows(&x[1234 * n..1235 * n], &mut one, n);
        assert_eq!(&y[1234 * n..1235 * n], &one[..]);
        let w: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut st = vec![0.0; 4000];
        let mut dx = vec![0.0; x.len()];
        layer_norm_rows(&x, Some(&w), None, 1e-6, n, &mut y, &mut st);
        let (dw, _) = layer_norm_rows_backward(&x, Some(&w), &st, &dy, n, &mut dx, true);
        let mut st2 = vec![0.0; 4000];
        let mut dx2 = vec![0.0; x.len()];
        layer_norm_rows(&x, Some(&w), None, 1e-6, n, &mut y, &mut st2);
        let (dw2, _) = layer_norm_rows_backward(&x, Some(&w), &st2, &dy, n, &mut dx2, true);
        assert_eq!(dx, dx2);
        assert_eq!(dw, dw2);
    }
}
