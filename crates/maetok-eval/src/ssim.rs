//! Structural similarity (skimage `structural_similarity` with its defaults: 7×7 uniform
//! window, sample covariance, K1 = 0.01, K2 = 0.03, per-channel mean over the image cropped by
//! half a window on each side, averaged over channels).

use crate::SizeMismatch;

/// SSIM settings. [`SsimOptions::reference`] reproduces MAETok's `reconstruct_vq.py`
/// (`data_range = 2.0` on [0, 1] images, which inflates SSIM); [`SsimOptions::standard`] uses
/// the correct `data_range = 1.0`.
#[derive(Debug, Clone, Copy)]
pub struct SsimOptions {
    pub data_range: f64,
    pub win: usize,
    pub k1: f64,
    pub k2: f64,
}

impl SsimOptions {
    pub fn standard() -> Self {
        Self { data_range: 1.0, win: 7, k1: 0.01, k2: 0.03 }
    }
    pub fn reference() -> Self {
        Self { data_range: 2.0, ..Self::standard() }
    }
}

/// SSIM of two HWC images of size `h × w × c`.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize, c: usize, opt: SsimOptions) -> Result<f64, SizeMismatch> {
    if a.len() != b.len() || a.len() != h * w * c || h < opt.win || w < opt.win {
        return Err(SizeMismatch { a: a.len(), b: b.len() });
    }
    let win = opt.win;
    let np = (win * win) as f64;
    let cov_norm = np / (np - 1.0);
    let c1 = (opt.k1 * opt.data_range).powi(2);
    let c2 = (opt.k2 * opt.data_range).powi(2);
    let mut total = 0.0;
    for ch in 0..c {
        let at = |img: &[f32], y: usize, x: usize| img[(y * w + x) * c + ch] as f64;
        let mut sum = 0.0;
        let mut count = 0usize;
        // Only windows fully inside the image survive skimage's crop, so padding never matters.
        for y0 in 0..=h - win {
            for x0 in 0..=w - win {
                let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for y in y0..y0 + win {
                    for x in x0..x0 + win {
                        let (p, q) = (at(a, y, x), at(b, y, x));
                        sx += p;
                        sy += q;
                        sxx += p * p;
                        syy += q * q;
                        sxy += p * q;
                    }
                }
                let (ux, uy) = (sx / np, sy / np);
                let vx = cov_norm * (sxx / np - ux * ux);
                let vy = cov_norm * (syy / np - uy * uy);
                let vxy = cov_norm * (sxy / np - ux * uy);
                let s = ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
                sum += s;
                count += 1;
            }
        }
        total += sum / count as f64;
    }
    Ok(total / c as f64)
}
