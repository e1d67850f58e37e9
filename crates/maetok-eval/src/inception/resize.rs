//! The resize-to-299 and input scaling of the two FID pipelines, as exact separable bilinear
//! interpolation matrices applied with two GEMMs (any backend, any input size).
//!
//! * [`Preprocess::PytorchFid`] — pytorch-fid: float images in [0, 1],
//!   `F.interpolate(bilinear, align_corners=False)` (half-pixel centres, no antialiasing), `2x − 1`.
//! * [`Preprocess::Tf1`] — the ADM evaluator's TF graph and torch-fidelity: float images in
//!   [0, 255], TF1 `ResizeBilinear` legacy mapping (`src = o·in/out`), `(x − 128)/128`.

use burn::tensor::{backend::Backend, Tensor};

/// Network input side.
pub const INCEPTION_SIZE: usize = 299;

/// Which pipeline's resize and scaling to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocess {
    /// pytorch-fid (the fixture's pipeline).
    #[default]
    PytorchFid,
    /// ADM evaluator / torch-fidelity / torchmetrics (TF1 legacy bilinear on [0, 255]).
    Tf1,
}

/// Row-major `[out, in]` interpolation matrix: `y = R · x` resizes one axis.
pub fn bilinear_matrix(input: usize, out: usize, mode: Preprocess) -> Vec<f32> {
    let mut r = vec![0f32; out * input];
    // Both PyTorch (float opmath) and TF compute the scale and source index in f32.
    let scale = input as f32 / out as f32;
    for o in 0..out {
        let src = match mode {
            Preprocess::PytorchFid => (scale * (o as f32 + 0.5) - 0.5).max(0.0),
            Preprocess::Tf1 => o as f32 * scale,
        };
        let lo = (src.floor() as usize).min(input - 1);
        let hi = (lo + 1).min(input - 1);
        let f = src - lo as f32;
        r[o * input + lo] += 1.0 - f;
        r[o * input + hi] += f;
    }
    r
}

impl Preprocess {
    /// `images`: `[N, 3, H, W]` with values in [0, 255] → network input `[N, 3, 299, 299]`.
    pub fn apply<B: Backend>(self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = images.dims();
        let s = INCEPTION_SIZE;
        let x = match self {
            Preprocess::PytorchFid => images / 255.0,
            Preprocess::Tf1 => images,
        };
        let x = if (h, w) == (s, s) {
            x
        } else {
            maetok_nn::ops::resize_separable(x, &bilinear_matrix(h, s, self), s, &bilinear_matrix(w, s, self), s)
        };
        match self {
            Preprocess::PytorchFid => x * 2.0 - 1.0,
            Preprocess::Tf1 => (x - 128.0) / 128.0,
        }
    }
}
