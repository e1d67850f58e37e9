//! 2-D convolution (no groups, no dilation) as im2col + one GEMM per image, for inference on the
//! CPU (the Inception-v3 of FID, LPIPS's VGG in evaluation). Burn's NdArray convolution is a
//! direct loop nest at ~11–14 GFLOP/s; this runs the products on the `gemm` crate's kernels.

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::gemm::{gemm_views, gemm_views_on, Threads};

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

impl Conv2d {
    /// A 1×1, stride-1, unpadded convolution: the columns are the input itself.
    fn direct(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// The output columns `[lo, hi)` whose input column `ox·sw + dx − pw` lies inside a row of
    /// width `w`, for kernel column `dx`.
    fn valid_columns(&self, dx: usize) -> (usize, usize) {
        let w = self.input[3];
        let (sw, pw) = (self.stride[1], self.padding[1]);
        let wo = self.output_hw()[1];
        let lo = pw.saturating_sub(dx).div_ceil(sw).min(wo);
        let hi = if w + pw > dx { ((w + pw - dx - 1) / sw + 1).min(wo) } else { 0 }.max(lo);
        (lo, hi)
    }
}

/// The column matrix `[C·kh·kw, H'·W']` of one image `xi` `[C, H, W]`: row `(ch, dy, dx)` is the
/// input shifted by `(dy, dx)`, strided, zero where it falls in the padding.
fn im2col(xi: &[f32], g: &Conv2d, cols: &mut [f32]) {
    let [_, _, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let ph = g.padding[0];
    let pw = g.padding[1];
    let [ho, wo] = g.output_hw();
    cols.par_chunks_mut(ho * wo).enumerate().for_each(|(r, row)| {
        let (ch, dy, dx) = (r / (kh * kw), (r / kw) % kh, r % kw);
        let plane = &xi[ch * h * w..(ch + 1) * h * w];
        let (lo, hi) = g.valid_columns(dx);
        for (oy, out) in row.chunks_mut(wo).enumerate() {
            let iy = (oy * sh + dy) as isize - ph as isize;
            if iy < 0 || iy >= h as isize {
                out.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * w..(iy as usize + 1) * w];
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
}

/// The adjoint of [`im2col`]: adds every column value back onto the input position it was read
/// from. `dxi` `[C, H, W]` is overwritten. One task per input channel (its rows of `cols` touch
/// only its plane).
fn col2im(cols: &[f32], g: &Conv2d, dxi: &mut [f32]) {
    let [_, _, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let ph = g.padding[0];
    let pw = g.padding[1];
    let [ho, wo] = g.output_hw();
    let hw = ho * wo;
    dxi.par_chunks_mut(h * w).enumerate().for_each(|(ch, plane)| {
        plane.fill(0.0);
        for dy in 0..kh {
            for dx in 0..kw {
                let row = &cols[((ch * kh + dy) * kw + dx) * hw..][..hw];
                let (lo, hi) = g.valid_columns(dx);
                if hi <= lo {
                    continue;
                }
                for (oy, src) in row.chunks(wo).enumerate() {
                    let iy = (oy * sh + dy) as isize - ph as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                    let first = lo * sw + dx - pw;
                    if sw == 1 {
                        for (d, v) in dst[first..first + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in dst[first..].iter_mut().step_by(sw).zip(&src[lo..hi]) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    });
}

/// What happens to each output value after the product, per output channel `o`:
/// `y = relu?(scale[o]·acc + bias[o])` (an inference BatchNorm folded behind the convolution, a
/// ReLU), applied to one image's output right after its GEMM, while it is in cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// `[O]`, or none (scale 1).
    pub scale: Option<&'a [f32]>,
    /// ReLU after the affine; `v < 0` is the test, so NaN is kept (as PyTorch's ReLU keeps it).
    pub relu: bool,
}

/// `x` `[N, C, H, W]` (row-major) convolved with `weight` `[O, C·kh·kw]` (PyTorch's `[O, C, kh,
/// kw]` flattened), then `epilogue` with `bias` `[O]` → `[N, O, H', W']` row-major.
pub fn conv2d(x: &[f32], weight: ArrayView2<f32>, bias: Option<&[f32]>, g: Conv2d, epilogue: Epilogue) -> Vec<f32> {
    let [n, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [ho, wo] = g.output_hw();
    let (o, k, hw) = (g.out_channels, c * kh * kw, ho * wo);
    let mut y = vec![0.0f32; n * o * hw];
    let cols_len = if g.direct() { 0 } else { k * hw };
    let image = |i: usize, yi: &mut [f32], cols: &mut [f32], threads: Threads| {
        conv2d_image(&x[i * c * h * w..(i + 1) * c * h * w], weight, bias, &g, epilogue, yi, cols, threads)
    };
    let pool = rayon::current_num_threads();
    if pool > 1 && n >= pool && (n % pool == 0 || n >= 4 * pool) {
        // One image per task, each GEMM on its own core: no synchronisation inside the products
        // (which the small ones of late stages, 8×8 outputs, pay for), the image's columns and
        // output stay in that core's cache from im2col through the epilogue.
        y.par_chunks_mut(o * hw).enumerate().for_each_init(|| vec![0.0f32; cols_len], |cols, (i, yi)| image(i, yi, cols, Threads::One));
    } else {
        let mut cols = vec![0.0f32; cols_len];
        for (i, yi) in y.chunks_mut(o * hw).enumerate() {
            image(i, yi, &mut cols, Threads::Pool);
        }
    }
    y
}

/// One image of [`conv2d`]: `xi` `[C, H, W]` → `yi` `[O, H'·W']`, with `cols` as the column buffer
/// (empty for a direct convolution).
#[allow(clippy::too_many_arguments)]
fn conv2d_image(
    xi: &[f32],
    weight: ArrayView2<f32>,
    bias: Option<&[f32]>,
    g: &Conv2d,
    epilogue: Epilogue,
    yi: &mut [f32],
    cols: &mut [f32],
    threads: Threads,
) {
    let c = g.input[1];
    let [kh, kw] = g.kernel;
    let [ho, wo] = g.output_hw();
    let (o, k, hw) = (g.out_channels, c * kh * kw, ho * wo);
    // Without a scale the bias is the GEMM's starting value; with one it comes after the scale.
    let prefill = bias.filter(|_| epilogue.scale.is_none());
    if let Some(b) = prefill {
        yi.par_chunks_mut(hw).zip(b.par_iter()).for_each(|(row, &v)| row.fill(v));
    }
    let rhs = if g.direct() {
        ArrayView2::from_shape((c, hw), xi).expect("C × H·W")
    } else {
        im2col(xi, g, cols);
        ArrayView2::from_shape((k, hw), &cols[..]).expect("C·kh·kw × H'·W'")
    };
    let mut dst = ArrayViewMut2::from_shape((o, hw), &mut *yi).expect("O × H'·W'");
    gemm_views_on(&mut dst, weight, rhs, prefill.is_some(), threads);
    apply_epilogue(yi, hw, epilogue, bias.filter(|_| epilogue.scale.is_some()));
}

/// `y` `[O, hw]` ← `relu?(scale[o]·y + shift[o])`, in place, one task per few channels.
fn apply_epilogue(y: &mut [f32], hw: usize, e: Epilogue, shift: Option<&[f32]>) {
    if e.scale.is_none() && shift.is_none() && !e.relu {
        return;
    }
    let rows = (1usize << 14).div_ceil(hw).max(1);
    y.par_chunks_mut(rows * hw).enumerate().for_each(|(t, block)| {
        for (r, row) in block.chunks_mut(hw).enumerate() {
            let oc = t * rows + r;
            let (s, b) = (e.scale.map_or(1.0, |s| s[oc]), shift.map_or(0.0, |b| b[oc]));
            match (e.scale.is_some() || shift.is_some(), e.relu) {
                (true, true) => row.iter_mut().for_each(|v| {
                    let a = s * *v + b;
                    *v = if a < 0.0 { 0.0 } else { a };
                }),
                (true, false) => row.iter_mut().for_each(|v| *v = s * *v + b),
                (false, _) => row.iter_mut().filter(|v| **v < 0.0).for_each(|v| *v = 0.0),
            }
        }
    });
}

/// Which gradients [`conv2d_backward`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    pub x: bool,
    pub w: bool,
    pub bias: bool,
}

/// Gradients of [`conv2d`], row-major; `None` where not asked for.
#[derive(Debug, Default)]
pub struct Grads {
    /// `[N, C, H, W]`
    pub x: Option<Vec<f32>>,
    /// `[O, C·kh·kw]`
    pub w: Option<Vec<f32>>,
    /// `[O]`
    pub bias: Option<Vec<f32>>,
}

/// The gradients of [`conv2d`] given `dy` `[N, O, H', W']`, per image: `∂x = col2im(Wᵀ·∂y)`,
/// `∂W = Σ ∂y·colsᵀ` (the columns recomputed, not kept from the forward pass), `∂b = Σ ∂y`.
pub fn conv2d_backward(x: &[f32], weight: ArrayView2<f32>, dy: &[f32], g: Conv2d, needs: Needs) -> Grads {
    let [n, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [ho, wo] = g.output_hw();
    let (o, k, hw) = (g.out_channels, c * kh * kw, ho * wo);
    let direct = g.direct();
    let mut dx = needs.x.then(|| vec![0.0f32; n * c * h * w]);
    let mut dw = needs.w.then(|| vec![0.0f32; o * k]);
    let mut cols = if direct || !needs.w { Vec::new() } else { vec![0.0f32; k * hw] };
    let mut dcols = if direct || !needs.x { Vec::new() } else { vec![0.0f32; k * hw] };
    for i in 0..n {
        let dyi = ArrayView2::from_shape((o, hw), &dy[i * o * hw..(i + 1) * o * hw]).expect("O × H'·W'");
        let xi = &x[i * c * h * w..(i + 1) * c * h * w];
        if let Some(dw) = dw.as_mut() {
            let cols_i = if direct {
                ArrayView2::from_shape((c, hw), xi).expect("C × H·W")
            } else {
                im2col(xi, &g, &mut cols);
                ArrayView2::from_shape((k, hw), &cols[..]).expect("C·kh·kw × H'·W'")
            };
            let mut dst = ArrayViewMut2::from_shape((o, k), &mut dw[..]).expect("O × C·kh·kw");
            gemm_views(&mut dst, dyi, cols_i.t(), i > 0);
        }
        if let Some(dx) = dx.as_mut() {
            let dxi = &mut dx[i * c * h * w..(i + 1) * c * h * w];
            if direct {
                let mut dst = ArrayViewMut2::from_shape((c, hw), dxi).expect("C × H·W");
                gemm_views(&mut dst, weight.t(), dyi, false);
            } else {
                let mut dst = ArrayViewMut2::from_shape((k, hw), &mut dcols[..]).expect("C·kh·kw × H'·W'");
                gemm_views(&mut dst, weight.t(), dyi, false);
                col2im(&dcols, &g, dxi);
            }
        }
    }
    let bias = needs.bias.then(|| {
        (0..o)
            .into_par_iter()
            .map(|oc| (0..n).map(|i| dy[(i * o + oc) * hw..][..hw].iter().map(|&v| v as f64).sum::<f64>()).sum::<f64>() as f32)
            .collect()
    });
    Grads { x: dx, w: dw, bias }
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

    /// The backward against the forward through the adjoint identities of a bilinear map:
    /// `⟨conv(x, W), ∂y⟩ = ⟨x, ∂x⟩ = ⟨W, ∂W⟩` and `∂b = Σ ∂y` per channel.
    #[test]
    fn backward_is_the_adjoint_of_the_forward() {
        for (input, kernel, stride, padding) in [
            ([2, 3, 9, 11], [3, 3], [1, 1], [1, 1]),
            ([2, 3, 9, 11], [3, 3], [2, 2], [0, 0]),
            ([1, 4, 7, 8], [1, 7], [1, 1], [0, 3]),
            ([2, 2, 5, 6], [1, 1], [1, 1], [0, 0]),
            ([1, 3, 6, 7], [5, 3], [2, 3], [2, 1]),
            ([1, 3, 2, 3], [3, 3], [2, 2], [2, 2]),
        ] {
            let g = Conv2d { input, out_channels: 5, kernel, stride, padding };
            let [n, c, h, w] = input;
            let k = c * kernel[0] * kernel[1];
            let [ho, wo] = g.output_hw();
            let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let wt: Vec<f32> = (0..5 * k).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
            let dy: Vec<f32> = (0..n * 5 * ho * wo).map(|i| ((i * 29 % 89) as f32 / 44.0) - 1.0).collect();
            let wv = ArrayView2::from_shape((5, k), &wt).unwrap();
            let y = conv2d(&x, wv, None, g, Epilogue::default());
            let all = Needs { x: true, w: true, bias: true };
            let gr = conv2d_backward(&x, wv, &dy, g, all);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>();
            let yd = dot(&y, &dy);
            let (xd, wd) = (dot(&x, gr.x.as_ref().unwrap()), dot(&wt, gr.w.as_ref().unwrap()));
            let tol = 1e-4 * yd.abs().max(1.0);
            assert!((yd - xd).abs() < tol && (yd - wd).abs() < tol, "{g:?}: {yd} {xd} {wd}");
            let hw = ho * wo;
            for (oc, gb) in gr.bias.as_ref().unwrap().iter().enumerate() {
                let want: f32 = (0..n).map(|i| dy[(i * 5 + oc) * hw..][..hw].iter().sum::<f32>()).sum();
                assert!((gb - want).abs() < 1e-4, "{g:?}: bias {oc}");
            }
            // Only what is asked for.
            let some = conv2d_backward(&x, wv, &dy, g, Needs { x: true, w: false, bias: false });
            assert!(some.w.is_none() && some.bias.is_none());
            assert_eq!(some.x, gr.x);
        }
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
        let got = conv2d(&x, ArrayView2::from_shape((5, k), &wt).unwrap(), Some(&b), g, Epilogue::default());
        let want = naive(&x, &wt, &b, g);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-4, "{kernel:?} {stride:?} {padding:?}: {err}");
        let nob = conv2d(&x, ArrayView2::from_shape((5, k), &wt).unwrap(), None, g, Epilogue::default());
        assert!((nob[0] + b[0] - got[0]).abs() < 1e-4);
        // A per-channel scale and shift, then a ReLU (an inference BatchNorm and activation).
        let scale = [2.0, -1.0, 0.5, 0.0, 1.5];
        let epi = Epilogue { scale: Some(&scale), relu: true };
        let bn = conv2d(&x, ArrayView2::from_shape((5, k), &wt).unwrap(), Some(&b), g, epi);
        let hw = got.len() / (n * 5);
        for (j, (v, u)) in bn.iter().zip(&nob).enumerate() {
            let oc = (j / hw) % 5;
            let want = (scale[oc] * u + b[oc]).max(0.0);
            assert!((v - want).abs() < 1e-4, "{kernel:?}: scale/shift/relu at {j}: {v} vs {want}");
        }
        let relu = conv2d(&x, ArrayView2::from_shape((5, k), &wt).unwrap(), Some(&b), g, Epilogue { scale: None, relu: true });
        assert!(relu.iter().zip(&got).all(|(r, v)| *r == v.max(0.0)), "{kernel:?}: relu");
    }
}
