//! 2-D convolution (no groups, no dilation) as im2col + one GEMM per image, for inference on the
//! CPU (the Inception-v3 of FID, LPIPS's VGG in evaluation). Burn's NdArray convolution is a
//! direct loop nest at ~11–14 GFLOP/s; this runs the products on the `gemm` crate's kernels.

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::gemm::gemm_views;

/// Geometry of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// `[N, C, H, W]` of the input.
    pub input: [usize; 4],
    /// Output channels `O` and kernel `[kh, kw]`.
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Conv2d {
    /// `[H', W']` of the output.
    pub fn output_hw(&self) -> [usize; 2] {
        let [_, _, h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [ph, pw] = self.padding;
        [(h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1]
    }
}

/// `x` `[N, C, H, W]` (row-major) convolved with `weight` `[O, C·kh·kw]` (PyTorch's `[O, C, kh,
/// kw]` flattened), plus `bias` `[O]` → `[N, O, H', W']` row-major.
pub fn conv2d(x: &[f32], weight: ArrayView2<f32>, bias: Option<&[f32]>, g: Conv2d) -> Vec<f32> {
    let [n, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let [ho, wo] = g.output_hw();
    let (o, k, hw) = (g.out_channels, c * kh * kw, ho * wo);
    let mut y = vec![0.0f32; n * o * hw];
    let direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
    let mut cols = if direct { Vec::new() } else { vec![0.0f32; k * hw] };
    for i in 0..n {
        let xi = &x[i * c * h * w..(i + 1) * c * h * w];
        let yi = &mut y[i * o * hw..(i + 1) * o * hw];
        if let Some(b) = bias {
            yi.par_chunks_mut(hw).zip(b.par_iter()).for_each(|(row, &v)| row.fill(v));
        }
        let rhs = if direct {
            ArrayView2::from_shape((c, hw), xi).expect("C × H·W")
        } else {
            // Row (ch, dy, dx) of the column matrix: the input shifted by (dy, dx), strided.
            cols.par_chunks_mut(hw).enumerate().for_each(|(r, row)| {
                let (ch, dy, dx) = (r / (kh * kw), (r / kw) % kh, r % kw);
                let plane = &xi[ch * h * w..(ch + 1) * h * w];
                for (oy, out) in row.chunks_mut(wo).enumerate() {
                    let iy = (oy * sh + dy) as isize - ph as isize;
                    if iy < 0 || iy >= h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    // Output columns whose input column `ox·sw + dx − pw` lies inside the row.
                    let lo = pw.saturating_sub(dx).div_ceil(sw).min(wo);
                    let hi = if w + pw > dx { ((w + pw - dx - 1) / sw + 1).min(wo) } else { 0 }.max(lo);
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if hi > lo {
                        let first = lo * sw + dx - pw;
                        if sw == 1 {
                            out[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                        } else {
                            for (v, x) in out[lo..hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                                *v = *x;
                            }
                        }
                    }
                }
            });
            ArrayView2::from_shape((k, hw), &cols[..]).expect("C·kh·kw × H'·W'")
        };
        let mut dst = ArrayViewMut2::from_shape((o, hw), yi).expect("O × H'·W'");
        gemm_views(&mut dst, weight, rhs, bias.is_some());
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn naive(x: &[f32], wt: &[f32], b: &[f32], g: Conv2d) -> Vec<f32> {
        let [n, c, h, w] = g.input;
        let [kh, kw] = g.kernel;
        let [ho, wo] = g.output_hw();
        let o = g.out_channels;
        let mut y = vec![0.0; n * o * ho * wo];
        for i in 0..n {
            for oc in 0..o {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut s = b[oc] as f64;
                        for ch in 0..c {
                            for dy in 0..kh {
                                for dx in 0..kw {
                                    let iy = (oy * g.stride[0] + dy) as isize - g.padding[0] as isize;
                                    let ix = (ox * g.stride[1] + dx) as isize - g.padding[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        s += (x[((i * c + ch) * h + iy as usize) * w + ix as usize]
                                            * wt[((oc * c + ch) * kh + dy) * kw + dx]) as f64;
                                    }
                                }
                            }
                        }
                        y[((i * o + oc) * ho + oy) * wo + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_for_inceptions_shapes() {
        // 3x3 stride 2, 3x3 padded, 1x7 / 7x1 padded, 5x5 padded, 1x1 (direct), odd sizes.
        for (kernel, stride, padding) in [
            ([3, 3], [2, 2], [0, 0]),
            ([3, 3], [1, 1], [1, 1]),
            ([1, 7], [1, 1], [0, 3]),
            ([7, 1], [1, 1], [3, 0]),
            ([5, 5], [1, 1], [2, 2]),
            ([1, 1], [1, 1], [0, 0]),
        ] {
            check(Conv2d { input: [2, 3, 9, 11], out_channels: 5, kernel, stride, padding });
        }
        // Padding wider than the input: whole rows and columns of zeros.
        check(Conv2d { input: [1, 3, 2, 3], out_channels: 5, kernel: [3, 3], stride: [2, 2], padding: [2, 2] });
        check(Conv2d { input: [1, 3, 1, 1], out_channels: 5, kernel: [1, 3], stride: [1, 3], padding: [0, 4] });
    }

    /// The fast path against the definition for `g` (5 output channels), with and without bias.
    fn check(g: Conv2d) {
        let (kernel, stride, padding) = (g.kernel, g.stride, g.padding);
        let [n, c, h, w] = g.input;
        let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let k = c * kernel[0] * kernel[1];
        let wt: Vec<f32> = (0..5 * k).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
        let b = [0.5, -0.25, 0.0, 1.0, 2.0];
        let got = conv2d(&x, ArrayView2::from_shape((5, k), &wt).unwrap(), Some(&b), g);
        let want = naive(&x, &wt, &b, g);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-4, "{kernel:?} {stride:?} {padding:?}: {err}");
        let nob = conv2d(&x, ArrayView2::from_shape((5, k), &wt).unwrap(), None, g);
        assert!((nob[0] + b[0] - got[0]).abs() < 1e-4);
    }
}
