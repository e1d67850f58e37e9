//! HOG targets (`utils/hog.py`, from MaskFeat): Sobel gradients of the raw `[-1, 1]` input with
//! reflect padding, unsigned 9-bin orientation histograms weighted by magnitude and a 16×16
//! Gaussian window, summed over 8×8 cells, L2-normalised over the bins, and grouped per token.
//!
//! At 256×256 this gives `[B, 256, 108]`: token `row·16 + col`, feature `((c·9 + bin)·2 + cy)·2 + cx`
//! (`cy`, `cx`: the cell inside the 16×16 patch). On the CPU fast path (NdArray, see
//! `maetok_nn::fused::cpu_fast_path`) the histograms are one parallel pass per image plane
//! ([`cells_host`]); elsewhere every step is a Burn tensor op ([`HogGenerator::cells_default`]), so
//! it runs on any backend. The targets carry no gradient either way.

use burn::tensor::{backend::Backend, module::conv2d, ops::ConvOptions, ops::PadMode, Tensor, TensorData};
use rayon::prelude::*;

/// Orientation bins.
pub const NBINS: usize = 9;
/// Cell side in pixels.
pub const CELL: usize = 8;
/// Gaussian window side (σ = 8, centred at 7.5).
pub const WINDOW: usize = 16;

/// Input sizes the reference cannot handle; messages give the size and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HogError {
    #[error("HOG input must be [B, 3, H, W], got {0:?}")]
    Channels(Vec<usize>),
    #[error("HOG input {h}x{w}: height and width must be multiples of 16 (the 16x16 Gaussian window is tiled over the image)")]
    NotMultipleOf16 { h: usize, w: usize },
    #[error("HOG input width {w} is below 128: the reference groups (W/8)/16 cells per token, which is 0 here")]
    TooNarrow { w: usize },
}

/// The HOG target generator.
#[derive(Debug, Clone, Default)]
pub struct HogGenerator {
    /// Cells per token side `u`; `None`: the reference's `(W/8)/16` (a 16×16 token grid).
    cells_per_token: Option<usize>,
}

/// The normalised 16×16 window: `g[n] = exp(−½((n − 7.5)/8)²)`, `G = g ⊗ g / ΣG`, row-major.
pub fn gaussian_window() -> Vec<f32> {
    let g: Vec<f64> = (0..WINDOW).map(|n| (-0.5 * ((n as f64 - 7.5) / 8.0).powi(2)).exp()).collect();
    let total: f64 = g.iter().sum::<f64>().powi(2);
    let mut out = Vec::with_capacity(WINDOW * WINDOW);
    for a in &g {
        for b in &g {
            out.push((a * b / total) as f32);
        }
    }
    out
}

impl HogGenerator {
    /// The reference's HOG target: a 16×16 token grid whatever the image size.
    pub fn new() -> Self {
        Self { cells_per_token: None }
    }

    /// Tokens of `patch × patch` pixels (`u = patch/8` cells per side), for decoders whose grid is
    /// not 16×16; equal to [`HogGenerator::new`] on the reference's 256-pixel, patch-16 setting.
    pub fn for_patch(patch: usize) -> Self {
        Self { cells_per_token: Some(patch / CELL) }
    }

    fn check(dims: [usize; 4]) -> Result<(), HogError> {
        let [_, c, h, w] = dims;
        if c != 3 {
            return Err(HogError::Channels(dims.to_vec()));
        }
        if h % WINDOW != 0 || w % WINDOW != 0 {
            return Err(HogError::NotMultipleOf16 { h, w });
        }
        Ok(())
    }

    /// Per-cell normalised histograms `[B, 3, 9, H/8, W/8]` of `x` `[B, 3, H, W]` in [-1, 1].
    pub fn cells<B: Backend>(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 5>, HogError> {
        let dims = x.dims();
        Self::check(dims)?;
        if !maetok_nn::fused::cpu_fast_path::<B>() {
            return self.cells_default(x);
        }
        let [b, c, h, w] = dims;
        let device = x.device();
        let values = maetok_nn::fused::host_values(x);
        let hist = cells_host(&values, dims);
        Ok(Tensor::from_data(TensorData::new(hist, [b, c, NBINS, h / CELL, w / CELL]), &device))
    }

    /// [`HogGenerator::cells`] as Burn tensor ops (any backend; the reference's steps one by one).
    pub fn cells_default<B: Backend>(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 5>, HogError> {
        let dims = x.dims();
        Self::check(dims)?;
        let [b, c, h, w] = dims;
        let device = x.device();
        let kx: [f32; 9] = [1.0, 0.0, -1.0, 2.0, 0.0, -2.0, 1.0, 0.0, -1.0];
        let ky: [f32; 9] = [1.0, 2.0, 1.0, 0.0, 0.0, 0.0, -1.0, -2.0, -1.0];
        let kernel = |k: [f32; 9]| Tensor::<B, 4>::from_data(TensorData::new(k.repeat(3), [3, 1, 3, 3]), &device);
        let padded = x.pad([(0, 0), (0, 0), (1, 1), (1, 1)], PadMode::Reflect);
        let opts = ConvOptions::new([1, 1], [0, 0], [1, 1], 3);
        let gx = conv2d(padded.clone(), kernel(kx), None, opts.clone());
        let gy = conv2d(padded, kernel(ky), None, opts);
        let mag = (gx.clone().powi_scalar(2) + gy.clone().powi_scalar(2)).sqrt();
        let phase = gx.atan2(gy) / std::f64::consts::PI * NBINS as f64;
        let bins = phase.floor();
        let bins = bins.clone() - (bins / NBINS as f64).floor() * NBINS as f64;
        // The window tiled over the image.
        let win = gaussian_window();
        let mut tiled = vec![0f32; h * w];
        for y in 0..h {
            for xx in 0..w {
                tiled[y * w + xx] = win[(y % WINDOW) * WINDOW + xx % WINDOW];
            }
        }
        let g = Tensor::<B, 2>::from_data(TensorData::new(tiled, [h, w]), &device).reshape([1, 1, h, w]);
        let mag = mag * g;
        let (hc, wc) = (h / CELL, w / CELL);
        let per_bin: Vec<Tensor<B, 4>> = (0..NBINS)
            .map(|k| {
                let m = mag.clone().mask_fill(bins.clone().not_equal_elem(k as f32), 0.0);
                m.reshape([b, c, hc, CELL, wc, CELL]).sum_dim(5).sum_dim(3).reshape([b, c, hc, wc])
            })
            .collect();
        let hist = Tensor::stack::<5>(per_bin, 2);
        let norm = hist.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-12);
        Ok(hist / norm)
    }

    /// Token features `[B, N, 27·u²]` with `u = (W/8)/16` cells per token side (`[B, 256, 108]`
    /// at 256×256), or `patch/8` ([`HogGenerator::for_patch`]): `N = ((H/8)/u)·((W/8)/u)`,
    /// row-major over tokens.
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 3>, HogError> {
        let [_, _, _, w] = x.dims();
        let u = self.cells_per_token.unwrap_or((w / CELL) / 16);
        if u == 0 {
            return Err(HogError::TooNarrow { w });
        }
        let cells = self.cells(x)?;
        let [b, c, nb, hc, wc] = cells.dims();
        let (th, tw) = (hc / u, wc / u);
        let f = cells.reshape([b, c * nb, hc, wc]).narrow(2, 0, th * u).narrow(3, 0, tw * u);
        Ok(maetok_nn::fused::permute(f.reshape([b, c * nb, th, u, tw, u]), [0, 2, 4, 1, 3, 5]).reshape([b, th * tw, c * nb * u * u]))
    }
}

/// The histograms of [`HogGenerator::cells`] on the host: `x` `[B, C, H, W]` row-major →
/// `[B, C, 9, H/8, W/8]` row-major, one task per `(image, channel)` plane. Per pixel: Sobel
/// gradients (cross-correlation, reflect padding), magnitude, bin `⌊atan2(gx, gy)/π·9⌋ mod 9`
/// (the reference's f32 steps, so a phase lands in the same bin except within rounding of an
/// edge; see [`Bins`]), weight by the tiled Gaussian window, sum over the 8×8 cell (rows of 8,
/// then the 8 rows, as the reference's two `sum`s), and L2-normalise over the bins (norm floored
/// at 1e-12). Each image row is one pass of straight loops over reflect-padded rows, with no
/// `atan2` per pixel ([`Bins`]); built for baseline x86-64, part of it stays scalar (the `sqrt`).
pub fn cells_host(x: &[f32], [b, c, h, w]: [usize; 4]) -> Vec<f32> {
    let (hc, wc) = (h / CELL, w / CELL);
    let win = gaussian_window();
    let plane_out = NBINS * hc * wc;
    let mut out = vec![0.0f32; b * c * plane_out];
    if plane_out == 0 {
        return out;
    }
    let bins = Bins::new();
    out.par_chunks_mut(plane_out).enumerate().for_each(|(p, hist)| {
        let img = &x[p * h * w..(p + 1) * h * w];
        let mut rows = [vec![0.0f32; w + 2], vec![0.0f32; w + 2], vec![0.0f32; w + 2]];
        let (mut gxs, mut gys, mut mag) = (vec![0.0f32; w], vec![0.0f32; w], vec![0.0f32; w]);
        let (mut bin, mut near) = (vec![0u8; w], vec![false; w]);
        // Partial sums of one image row's 8-pixel runs per bin and cell column, added to the
        // cells when the row ends.
        let mut row = vec![0.0f32; NBINS * wc];
        for y in 0..h {
            for (padded, yy) in rows.iter_mut().zip([y as isize - 1, y as isize, y as isize + 1]) {
                let src = &img[reflect(yy, h) * w..][..w];
                padded[1..=w].copy_from_slice(src);
                padded[0] = src[reflect(-1, w)];
                padded[w + 1] = src[reflect(w as isize, w)];
            }
            let [up, mid, down] = &rows;
            // kx = [1 0 -1; 2 0 -2; 1 0 -1], ky = [1 2 1; 0 0 0; -1 -2 -1], summed in the
            // order of the per-pixel formula `a - c + 2d - 2f + g - i`, `a + 2b + c - g - 2h - i`.
            for xx in 0..w {
                let (a, bb, cc) = (up[xx], up[xx + 1], up[xx + 2]);
                let (d, f) = (mid[xx], mid[xx + 2]);
                let (g, hh, i) = (down[xx], down[xx + 1], down[xx + 2]);
                let gx = a - cc + 2.0 * d - 2.0 * f + g - i;
                let gy = a + 2.0 * bb + cc - g - 2.0 * hh - i;
                mag[xx] = (gx * gx + gy * gy).sqrt();
                (bin[xx], near[xx]) = bins.by_edges(gx, gy);
                (gxs[xx], gys[xx]) = (gx, gy);
            }
            for xx in 0..w {
                if near[xx] {
                    bin[xx] = bin_reference(gxs[xx], gys[xx]);
                }
            }
            let wrow = &win[(y % WINDOW) * WINDOW..][..WINDOW];
            for xx in 0..w {
                row[bin[xx] as usize * wc + xx / CELL] += mag[xx] * wrow[xx % WINDOW];
            }
            let cy = y / CELL;
            for k in 0..NBINS {
                for cx in 0..wc {
                    hist[(k * hc + cy) * wc + cx] += row[k * wc + cx];
                }
            }
            row.iter_mut().for_each(|v| *v = 0.0);
        }
        for cy in 0..hc {
            for cx in 0..wc {
                let norm = (0..NBINS).map(|k| hist[(k * hc + cy) * wc + cx].powi(2)).sum::<f32>().sqrt().max(1e-12);
                for k in 0..NBINS {
                    hist[(k * hc + cy) * wc + cx] /= norm;
                }
            }
        }
    });
    out
}

/// Reflect padding by one: index `i` of a length-`n` axis (`-1 → 1`, `n → n − 2`).
fn reflect(i: isize, n: usize) -> usize {
    if i < 0 {
        (-i) as usize
    } else if i as usize >= n {
        2 * n - 2 - i as usize
    } else {
        i as usize
    }
}

/// The orientation bin `⌊atan2(gx, gy)/π·9⌋ mod 9` without an `atan2` per pixel.
///
/// The bin of the unsigned angle θ of `(gy, gx)` (flipped to `gx ≥ 0`) is the number of edges
/// `α_k = kπ/9`, `k = 1..8`, with `θ ≥ α_k`, i.e. with `gx·cos α_k − gy·sin α_k ≥ 0`
/// (branch-free). Where `(gx, gy)` lies within 10⁻⁴ (relative) of an edge, θ = 0 included, the
/// reference's own f32 steps ([`bin_reference`]) decide, so the bins are exactly those of the
/// per-pixel formula: its rounding moves a phase by a few 10⁻⁶ at most.
struct Bins {
    /// `(cos α_k, sin α_k)` for `k = 1..8`.
    edges: [(f32, f32); NBINS - 1],
}

impl Bins {
    /// Relative distance to an edge below which the reference formula decides.
    const NEAR: f32 = 1e-4;

    fn new() -> Self {
        let edges = std::array::from_fn(|k| {
            let a = (k + 1) as f64 * std::f64::consts::PI / NBINS as f64;
            (a.cos() as f32, a.sin() as f32)
        });
        Self { edges }
    }

    /// The bin by the edge comparisons, and whether `(gx, gy)` is too near an edge for them (then
    /// [`bin_reference`] decides). Branch-free, so a loop over pixels vectorises.
    #[inline(always)]
    fn by_edges(&self, gx: f32, gy: f32) -> (u8, bool) {
        let flip = if gx < 0.0 { -1.0 } else { 1.0 };
        let (x, y) = (gx * flip, gy * flip);
        let near = Self::NEAR * (x + y.abs());
        let mut bin = 0u8;
        let mut ambiguous = x <= near;
        for &(c, s) in &self.edges {
            let side = x * c - y * s;
            bin += (side >= 0.0) as u8;
            ambiguous |= side.abs() <= near;
        }
        (bin, ambiguous)
    }

    /// The bin of one gradient.
    #[cfg(test)]
    fn of(&self, gx: f32, gy: f32) -> u8 {
        match self.by_edges(gx, gy) {
            (_, true) => bin_reference(gx, gy),
            (bin, false) => bin,
        }
    }
}

/// The reference's bin in its own f32 steps: `⌊atan2(gx, gy)/π·9⌋ mod 9`.
fn bin_reference(gx: f32, gy: f32) -> u8 {
    let phase = gx.atan2(gy) / std::f32::consts::PI * NBINS as f32;
    let bin = phase.floor();
    let bin = bin - (bin / NBINS as f32).floor() * NBINS as f32;
    (bin as usize).min(NBINS - 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edge comparisons give the reference formula's bin everywhere: on a dense grid of
    /// integer and fractional gradients, at the axes and zeros (signed), and next to every edge.
    #[test]
    fn bins_equal_the_reference_formula() {
        let bins = Bins::new();
        let mut values: Vec<f32> = (-40..=40).map(|v| v as f32 * 0.25).collect();
        values.extend([-0.0, 1e-30, -1e-30, 3.0e7, -3.0e7, f32::MIN_POSITIVE]);
        for &gx in &values {
            for &gy in &values {
                assert_eq!(bins.of(gx, gy), bin_reference(gx, gy), "gx {gx}, gy {gy}");
            }
        }
        for k in 0..2 * NBINS {
            let a = k as f64 * std::f64::consts::PI / NBINS as f64;
            for d in [-1e-3, -1e-5, -1e-7, 0.0, 1e-7, 1e-5, 1e-3] {
                let (gx, gy) = ((a + d).sin() as f32, (a + d).cos() as f32);
                for r in [1e-3f32, 1.0, 250.0] {
                    assert_eq!(bins.of(gx * r, gy * r), bin_reference(gx * r, gy * r), "angle {a} + {d}, radius {r}");
                }
            }
        }
    }
}
