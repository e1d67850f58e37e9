//! Classifier-free guidance, written once: the conditional and unconditional predictions come
//! from one doubled batch (`[x; x]` with labels `[y; null]`), and are combined as
//! `u + scale·(c − u)` only while the current time lies in `[low, high]`.

use std::ops::{Add, Mul, Sub};

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::Denoiser;

/// Guidance scale and the time interval where it applies (t = 1 is noise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    pub scale: f64,
    pub low: f64,
    pub high: f64,
}

impl Guidance {
    /// No guidance.
    pub fn none() -> Self {
        Self { scale: 1.0, low: 0.0, high: 1.0 }
    }

    /// Guidance with `scale` at every time.
    pub fn always(scale: f64) -> Self {
        Self { scale, low: 0.0, high: 1.0 }
    }

    /// Whether the doubled guided batch runs at time `t` (inclusive bounds; never for
    /// `scale ≤ 1`).
    pub fn active(&self, t: f64) -> bool {
        self.scale > 1.0 && self.low <= t && t <= self.high
    }
}

/// The guidance formula `u + scale·(c − u)`, for host values and tensors alike.
pub fn combine<T>(cond: T, uncond: T, scale: f64) -> T
where
    T: Clone + Add<Output = T> + Sub<Output = T> + Mul<f64, Output = T>,
{
    uncond.clone() + (cond - uncond) * scale
}

/// The model on `x` `[N, L, C]`, or with `guided` on the doubled batch `[x; x]` with labels
/// `[y; null]`: returns `[N or 2N, L, C_out]` (conditional rows first).
pub fn denoise_maybe_doubled<B: Backend, M: Denoiser<B> + ?Sized>(
    model: &M,
    x: Tensor<B, 3>,
    t: Tensor<B, 1>,
    y: Tensor<B, 1, Int>,
    guided: bool,
) -> Tensor<B, 3> {
    if !guided {
        return model.denoise(x, t, y);
    }
    let n = x.dims()[0];
    let null = Tensor::<B, 1, Int>::full([n], model.null_class() as i64, &y.device());
    model.denoise(Tensor::cat(vec![x.clone(), x], 0), Tensor::cat(vec![t.clone(), t], 0), Tensor::cat(vec![y, null], 0))
}

/// The guided prediction of a diffusion model (`forward_with_cfg` of the DiT reference, for the
/// conditional half): `[ε̂ | v]` `[N, L, 2C]` with `ε̂` guided and the conditional `v`. Only the
/// first `guided_channels` output channels are combined.
pub fn guided_prediction<B: Backend, M: Denoiser<B> + ?Sized>(
    model: &M,
    x: Tensor<B, 3>,
    t: Tensor<B, 1>,
    y: Tensor<B, 1, Int>,
    scale: f64,
    guided_channels: usize,
) -> Tensor<B, 3> {
    let guided = scale > 1.0;
    let n = x.dims()[0];
    let out = denoise_maybe_doubled(model, x, t, y, guided);
    if !guided {
        return out;
    }
    let width = out.dims()[2];
    let (cond, uncond) = (out.clone().narrow(0, 0, n), out.narrow(0, n, n));
    let g = combine(cond.clone().narrow(2, 0, guided_channels), uncond.narrow(2, 0, guided_channels), scale);
    if guided_channels == width {
        g
    } else {
        Tensor::cat(vec![g, cond.narrow(2, guided_channels, width - guided_channels)], 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    /// Output `[x·(1 + y) | y]` per token: the label changes the prediction.
    struct Toy;
    impl Denoiser<B> for Toy {
        fn denoise(&self, x: Tensor<B, 3>, _t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
            let [n, l, _] = x.dims();
            let yf = y.float().reshape([n, 1, 1]);
            Tensor::cat(vec![x * (yf.clone() + 1.0), yf.expand([n, l, 1])], 2)
        }
        fn null_class(&self) -> usize {
            0
        }
    }

    #[test]
    fn combine_and_interval() {
        assert_eq!(combine(3.0, 1.0, 2.0), 5.0);
        let g = Guidance { scale: 1.5, low: 0.2, high: 0.7 };
        assert!(!g.active(0.1) && g.active(0.2) && g.active(0.7) && !g.active(0.71));
        assert!(!Guidance::none().active(0.5));
    }

    #[test]
    fn guided_prediction_guides_only_the_first_channels() {
        let d = Default::default();
        let x = Tensor::<B, 3>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2, 1]), &d);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![3i64], [1]), &d);
        let t = Tensor::<B, 1>::zeros([1], &d);
        // cond ε = 4x, uncond ε = x: guided = x + 2·3x = 7x; v stays the conditional 3.
        let out = guided_prediction(&Toy, x, t, y, 2.0, 1).into_data().to_vec::<f32>().unwrap();
        assert_eq!(out, vec![7.0, 3.0, 14.0, 3.0]);
    }
}
