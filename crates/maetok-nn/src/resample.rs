//! PyTorch's `F.interpolate` kernels as exact 1-D interpolation matrices, and the two weight
//! resamplings timm applies when a checkpoint is loaded at another patch or image size.
//!
//! Every 2-D resize used here is separable: `Y = R_h · X · R_wᵀ` with `R` an `[out, in]` matrix,
//! so one matrix per axis reproduces `F.interpolate` exactly (up to summation order).
//!
//! * [`bicubic_matrix`]: `mode='bicubic', align_corners=False, antialias=False` (cubic
//!   convolution with `A = −0.75`, source indices clamped at the borders).
//! * [`bicubic_aa_matrix`]: `mode='bicubic', antialias=True` (PIL-style: Keys kernel with
//!   `a = −0.5`, support widened by the scale when shrinking, weights renormalised at the borders).
//! * [`area_matrix`]: `mode='area'` (adaptive average pooling).
//! * [`resample_patch_embed`]: timm `resample_patch_embed` (FlexiViT): the kernel that, applied to
//!   a bicubic-antialiased *upsampled* patch, gives the old kernel's response: `pinv(Rᵀ)`.
//! * [`resample_pos_embed`]: timm `resample_abs_pos_embed`: prefix rows kept, the grid resized
//!   bicubic with antialias.

use burn::tensor::{backend::Backend, Tensor};

/// `[out, in]` row-major matrix of `F.interpolate(bicubic, align_corners=False)` along one axis.
pub fn bicubic_matrix(input: usize, out: usize) -> Vec<f64> {
    const A: f32 = -0.75;
    // PyTorch's `cubic_convolution1` (|x| ≤ 1) and `cubic_convolution2` (1 < |x| < 2).
    let c1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let mut r = vec![0f64; out * input];
    // The scale and source index are computed in f32, as PyTorch's float opmath does.
    let scale = input as f32 / out as f32;
    for o in 0..out {
        let src = scale * (o as f32 + 0.5) - 0.5;
        let base = src.floor();
        let t = src - base;
        let w = [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let idx = (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            r[o * input + idx] += *wk as f64;
        }
    }
    r
}

/// The antialiasing bicubic filter (`a = −0.5`, as PIL) of PyTorch's `_upsample_bicubic2d_aa`.
fn aa_cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// `[out, in]` row-major matrix of `F.interpolate(bicubic, antialias=True)` along one axis.
pub fn bicubic_aa_matrix(input: usize, out: usize) -> Vec<f64> {
    let mut r = vec![0f64; out * input];
    let scale = input as f64 / out as f64;
    // Bicubic interpolation size 4: support 2, widened by the scale when downsampling.
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    for o in 0..out {
        let center = scale * (o as f64 + 0.5);
        // C++ `static_cast<int64_t>` truncates towards zero.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let w: Vec<f64> = (lo..hi).map(|j| aa_cubic((j as f64 - center + 0.5) * inv)).collect();
        let total: f64 = w.iter().sum();
        for (j, wj) in (lo..hi).zip(w) {
            r[o * input + j] = if total != 0.0 { wj / total } else { wj };
        }
    }
    r
}

/// `[out, in]` row-major matrix of `F.interpolate(mode='area')` = adaptive average pooling.
pub fn area_matrix(input: usize, out: usize) -> Vec<f64> {
    let mut r = vec![0f64; out * input];
    for o in 0..out {
        let start = o * input / out;
        let end = ((o + 1) * input).div_ceil(out);
        let w = 1.0 / (end - start) as f64;
        for j in start..end {
            r[o * input + j] = w;
        }
    }
    r
}

/// Moore–Penrose pseudo-inverse of a row-major `[rows, cols]` matrix (SVD, f64).
fn pinv(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let a = nalgebra::DMatrix::from_row_slice(rows, cols, m);
    let p = a.pseudo_inverse(1e-12).expect("SVD of a finite resize matrix");
    // `p` is [cols, rows]; return it row-major.
    let mut out = vec![0f64; cols * rows];
    for i in 0..cols {
        for j in 0..rows {
            out[i * rows + j] = p[(i, j)];
        }
    }
    out
}

/// Applies the `[oh, ih]` matrix `rh` and the `[ow, iw]` matrix `rw` to every `[ih, iw]` plane
/// of `values` (contiguous planes): `Y = Rh · X · Rwᵀ`, in f64.
fn apply_separable(values: &[f64], (ih, iw): (usize, usize), (rh, oh): (&[f64], usize), (rw, ow): (&[f64], usize)) -> Vec<f64> {
    let planes = values.len() / (ih * iw);
    let mut out = vec![0f64; planes * oh * ow];
    let mut tmp = vec![0f64; ih * ow];
    for p in 0..planes {
        let x = &values[p * ih * iw..(p + 1) * ih * iw];
        // Width pass, then height pass (PyTorch's CPU order for the separable AA kernel).
        for i in 0..ih {
            for o in 0..ow {
                tmp[i * ow + o] = (0..iw).map(|j| rw[o * iw + j] * x[i * iw + j]).sum();
            }
        }
        let y = &mut out[p * oh * ow..(p + 1) * oh * ow];
        for o in 0..oh {
            for c in 0..ow {
                y[o * ow + c] = (0..ih).map(|i| rh[o * ih + i] * tmp[i * ow + c]).sum();
            }
        }
    }
    out
}

/// timm `resample_patch_embed(w, new, interpolation='bicubic', antialias=True)`: `weight`
/// `[O, I, h, w]` (row-major values) → `[O, I, nh, nw]`. Each kernel `K` becomes
/// `pinv(R_hᵀ) · K · pinv(R_wᵀ)ᵀ`, the separable form of timm's `pinv(kron(R_h, R_w)ᵀ) · vec K`.
pub fn resample_patch_embed(weight: &[f32], shape: [usize; 4], new: [usize; 2]) -> Vec<f32> {
    let [_, _, h, w] = shape;
    let [nh, nw] = new;
    if (h, w) == (nh, nw) {
        return weight.to_vec();
    }
    let transpose = |m: Vec<f64>, rows: usize, cols: usize| {
        let mut t = vec![0f64; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = m[r * cols + c];
            }
        }
        t
    };
    // R: [new, old]; pinv(Rᵀ): [new, old], the per-axis map from old to new kernel.
    let ph = pinv(&transpose(bicubic_aa_matrix(h, nh), nh, h), h, nh);
    let pw = pinv(&transpose(bicubic_aa_matrix(w, nw), nw, w), w, nw);
    let x: Vec<f64> = weight.iter().map(|&v| v as f64).collect();
    apply_separable(&x, (h, w), (&ph, nh), (&pw, nw)).into_iter().map(|v| v as f32).collect()
}

/// timm `resample_abs_pos_embed(pos, new_grid, num_prefix_tokens)` with bicubic antialiased
/// interpolation: `pos` `[1, prefix + gh·gw, D]` (row-major values, square old grid) →
/// `[1, prefix + nh·nw, D]`. Returns the input unchanged when the token count already matches
/// a square grid, as timm does.
pub fn resample_pos_embed(pos: &[f32], tokens: usize, dim: usize, prefix: usize, new: [usize; 2]) -> Result<Vec<f32>, String> {
    let [nh, nw] = new;
    if tokens == nh * nw + prefix && nh == nw {
        return Ok(pos.to_vec());
    }
    let grid = tokens.checked_sub(prefix).ok_or_else(|| format!("{tokens} position rows < {prefix} prefix tokens"))?;
    let g = (grid as f64).sqrt().round() as usize;
    if g * g != grid {
        return Err(format!("{grid} grid positions do not form a square grid"));
    }
    // Planes are channels: [D, g, g].
    let mut planes = vec![0f64; dim * grid];
    for t in 0..grid {
        for d in 0..dim {
            planes[d * grid + t] = pos[(prefix + t) * dim + d] as f64;
        }
    }
    let out = apply_separable(&planes, (g, g), (&bicubic_aa_matrix(g, nh), nh), (&bicubic_aa_matrix(g, nw), nw));
    let mut res = pos[..prefix * dim].to_vec();
    res.resize((prefix + nh * nw) * dim, 0.0);
    for t in 0..nh * nw {
        for d in 0..dim {
            res[(prefix + t) * dim + d] = out[d * nh * nw + t] as f32;
        }
    }
    Ok(res)
}

/// Resizes `x` `[B, C, H, W]` with the f64 `[oh, H]` and `[ow, W]` matrices of this module
/// ([`crate::ops::resize_separable`]).
pub fn resize_with<B: Backend>(x: Tensor<B, 4>, rh: &[f64], oh: usize, rw: &[f64], ow: usize) -> Tensor<B, 4> {
    let f = |m: &[f64]| m.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    crate::ops::resize_separable(x, &f(rh), oh, &f(rw), ow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one() {
        for (i, o) in [(14, 16), (37, 16), (16, 4), (64, 224), (256, 224)] {
            for m in [bicubic_matrix(i, o), bicubic_aa_matrix(i, o), area_matrix(i, o)] {
                for r in 0..o {
                    let s: f64 = m[r * i..(r + 1) * i].iter().sum();
                    assert!((s - 1.0).abs() < 1e-6, "{i}->{o} row {r} sums to {s}");
                }
            }
        }
    }

    #[test]
    fn same_size_is_identity() {
        for m in [bicubic_matrix(7, 7), bicubic_aa_matrix(7, 7), area_matrix(7, 7)] {
            for r in 0..7 {
                for c in 0..7 {
                    let want = if r == c { 1.0 } else { 0.0 };
                    assert!((m[r * 7 + c] - want).abs() < 1e-7);
                }
            }
        }
    }

    #[test]
    fn patch_resampling_preserves_the_response_to_upsampled_patches() {
        // FlexiViT's defining property: <resize(x), new_kernel> = <x, old_kernel>.
        let (h, n) = (3, 5);
        let kernel: Vec<f32> = (0..h * h).map(|v| (v as f32 * 0.37).sin()).collect();
        let new = resample_patch_embed(&kernel, [1, 1, h, h], [n, n]);
        let r = bicubic_aa_matrix(h, n);
        let patch: Vec<f64> = (0..h * h).map(|v| (v as f64 * 1.3).cos()).collect();
        let up = apply_separable(&patch, (h, h), (&r, n), (&r, n));
        let lhs: f64 = up.iter().zip(&new).map(|(a, b)| a * *b as f64).sum();
        let rhs: f64 = patch.iter().zip(&kernel).map(|(a, b)| a * *b as f64).sum();
        assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
    }
}
