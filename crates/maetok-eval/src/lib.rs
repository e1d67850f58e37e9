//! Evaluation metrics. Images are `f32` HWC slices in [0, 1] unless stated otherwise; feature
//! sets are row-major `[N, d]` slices.

pub mod fid;
pub mod gmm;
pub mod inception;
pub mod inception_score;
pub mod npz;
pub mod pca;
pub mod precision_recall;
pub mod psnr;
pub mod ssim;

pub use fid::{frechet_distance, FeatureStats};
pub use inception_score::inception_score;
pub use precision_recall::{precision_recall, ManifoldRadii};
pub use psnr::psnr;
pub use ssim::{ssim, SsimOptions};

/// The reference's quantisation of a reconstruction in [-1, 1] to 8 bits
/// (`inference/reconstruct_vq.py`): `uint8(clamp(127.5·x + 128, 0, 255))` (truncation, i.e.
/// rounding of `127.5·x + 127.5`).
pub fn quantize_reference(x: f32) -> u8 {
    (127.5 * x + 128.0).clamp(0.0, 255.0) as u8
}

/// Shape mismatch between two images.
#[derive(Debug, thiserror::Error)]
#[error("images differ in size: {a} vs {b} values")]
pub struct SizeMismatch {
    pub a: usize,
    pub b: usize,
}

/// The array crates of this crate's public API (so callers need not pin their versions).
pub use nalgebra;
pub use ndarray;
