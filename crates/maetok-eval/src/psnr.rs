//! Peak signal-to-noise ratio (skimage `peak_signal_noise_ratio`).

use crate::SizeMismatch;

/// `10·log10(data_range² / mse)`, mse accumulated in f64 over all values. Identical images give
/// `f64::INFINITY`. The reference uses `data_range = 1` for [0, 1] images.
pub fn psnr(a: &[f32], b: &[f32], data_range: f64) -> Result<f64, SizeMismatch> {
    if a.len() != b.len() || a.is_empty() {
        return Err(SizeMismatch { a: a.len(), b: b.len() });
    }
    let mse = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    Ok(10.0 * (data_range * data_range / mse).log10())
}
