//! 2-D average and max pooling for inference on the CPU (the Inception-v3 of FID: a 3×3 average
//! pool in every mixed block's pool branch, 3×3 max pools between stages). One rayon task per
//! `(image, channel)` plane; Burn's NdArray pooling is a generic loop nest.

use rayon::prelude::*;

/// Geometry of a pooling window (no dilation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// `[N, C, H, W]` of the input.
    pub input: [usize; 4],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool2d {
    /// `[H', W']` of the output (floor mode).
    pub fn output_hw(&self) -> [usize; 2] {
        let [_, _, h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [ph, pw] = self.padding;
        [(h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1]
    }

    /// The input rows (or columns) `[lo, hi)` that window `o` covers along an axis of length `n`.
    fn span(o: usize, k: usize, s: usize, p: usize, n: usize) -> (usize, usize) {
        let start = (o * s) as isize - p as isize;
        (start.max(0) as usize, ((start + k as isize).max(0) as usize).min(n))
    }
}

/// Which reduction a window applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// The mean; over the whole window (padding counted as zeros) when `count_padding`, else
    /// over the values inside the input.
    Mean { count_padding: bool },
    /// The maximum of the values inside the input.
    Max,
}

/// `x` `[N, C, H, W]` (row-major) pooled → `[N, C, H', W']` row-major.
pub fn pool2d(x: &[f32], g: Pool2d, reduce: Reduce) -> Vec<f32> {
    let [n, c, h, w] = g.input;
    let [ho, wo] = g.output_hw();
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let mut y = vec![0.0f32; n * c * ho * wo];
    y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each(|(out, plane)| {
        for oy in 0..ho {
            let (y0, y1) = Pool2d::span(oy, kh, sh, ph, h);
            for ox in 0..wo {
                let (x0, x1) = Pool2d::span(ox, kw, sw, pw, w);
                let v = match reduce {
                    Reduce::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for iy in y0..y1 {
                            for &v in &plane[iy * w + x0..iy * w + x1] {
                                // NaN propagates, as in PyTorch.
                                if v > m || v.is_nan() {
                                    m = v;
                                }
                            }
                        }
                        m
                    }
                    Reduce::Mean { count_padding } => {
                        let mut s = 0.0f32;
                        for iy in y0..y1 {
                            s += plane[iy * w + x0..iy * w + x1].iter().sum::<f32>();
                        }
                        let count = if count_padding { kh * kw } else { (y1 - y0) * (x1 - x0) };
                        s / count.max(1) as f32
                    }
                };
                out[oy * wo + ox] = v;
            }
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time, in f64.
    fn naive(x: &[f32], g: Pool2d, reduce: Reduce) -> Vec<f32> {
        let [n, c, h, w] = g.input;
        let [ho, wo] = g.output_hw();
        let mut y = Vec::new();
        for p in 0..n * c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut vals = Vec::new();
                    for dy in 0..g.kernel[0] {
                        for dx in 0..g.kernel[1] {
                            let iy = (oy * g.stride[0] + dy) as isize - g.padding[0] as isize;
                            let ix = (ox * g.stride[1] + dx) as isize - g.padding[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                vals.push(x[p * h * w + iy as usize * w + ix as usize] as f64);
                            }
                        }
                    }
                    y.push(match reduce {
                        Reduce::Max => vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max) as f32,
                        Reduce::Mean { count_padding: true } => (vals.iter().sum::<f64>() / (g.kernel[0] * g.kernel[1]) as f64) as f32,
                        Reduce::Mean { count_padding: false } => (vals.iter().sum::<f64>() / vals.len() as f64) as f32,
                    });
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition() {
        for (input, kernel, stride, padding) in [
            ([2, 3, 9, 11], [3, 3], [1, 1], [1, 1]),
            ([2, 3, 9, 11], [3, 3], [2, 2], [0, 0]),
            ([1, 2, 8, 8], [8, 8], [1, 1], [0, 0]),
            ([1, 2, 7, 5], [2, 3], [2, 1], [1, 1]),
        ] {
            let g = Pool2d { input, kernel, stride, padding };
            let [n, c, h, w] = input;
            let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            for reduce in [Reduce::Max, Reduce::Mean { count_padding: true }, Reduce::Mean { count_padding: false }] {
                let got = pool2d(&x, g, reduce);
                let want = naive(&x, g, reduce);
                assert_eq!(got.len(), want.len());
                let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(err < 1e-6, "{g:?} {reduce:?}: {err}");
            }
        }
    }
}
