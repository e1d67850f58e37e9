//! Flow matching (stochastic interpolants): the paths and the ODE/SDE samplers.
//!
//! The sampler state and time grid are f64 on the host; each model call sees f32 inputs (as the
//! reference casts them) and its output is widened back to f64, where guidance is combined.

pub mod ode;
pub mod path;
pub mod sde;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

pub use ode::euler_sampler;
pub use path::{sample_times, score_from_velocity, Coefficients, PathType, PathValue, TimeSampling};
pub use sde::euler_maruyama_sampler;

use crate::guidance::denoise_maybe_doubled;
use crate::{Denoiser, SamplerError};

/// `torch.linspace(a, b, n)` in f64: the first half counts up from `a`, the second half down
/// from `b` (so both end points are exact).
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n).map(|i| if i < n / 2 { a + step * i as f64 } else { b - step * (n - 1 - i) as f64 }).collect()
}

/// The model on the f64 state `x` (`[N·L·C]`) at time `t` for labels `y`, on the doubled batch
/// when `guided`; returns the conditional (then unconditional) rows as f64, `[rows·L·C]`.
pub(crate) fn velocity_rows<B: Backend, M: Denoiser<B> + ?Sized>(
    model: &M,
    x: &[f64],
    shape: [usize; 3],
    t: f64,
    y: &[i64],
    guided: bool,
    device: &B::Device,
) -> Result<Vec<f64>, SamplerError> {
    let [n, l, c] = shape;
    let xt = Tensor::<B, 3>::from_data(TensorData::new(x.iter().map(|&v| v as f32).collect::<Vec<_>>(), [n, l, c]), device);
    let tt = Tensor::<B, 1>::from_data(TensorData::new(vec![t as f32; n], [n]), device);
    let yt = Tensor::<B, 1, Int>::from_data(TensorData::new(y.to_vec(), [n]), device);
    let v = denoise_maybe_doubled(model, xt, tt, yt, guided);
    if v.dims()[2] != c {
        return Err(SamplerError::VelocityChannels { got: v.dims()[2], want: c });
    }
    Ok(v.into_data().convert::<f32>().to_vec::<f32>().expect("f32 output").into_iter().map(f64::from).collect())
}

/// Applies `f` to the conditional and unconditional halves of `rows` and guides the results,
/// or applies it to `rows` alone when unguided.
pub(crate) fn guided_rows(rows: &[f64], n: usize, guided: bool, scale: f64, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    if !guided {
        return f(rows);
    }
    let (c, u) = rows.split_at(n);
    guide_halves(&f(c), &f(u), scale)
}

/// `combine` over the elements of the conditional and unconditional halves.
pub(crate) fn guide_halves(cond: &[f64], uncond: &[f64], scale: f64) -> Vec<f64> {
    cond.iter().zip(uncond).map(|(&c, &u)| crate::guidance::combine(c, u, scale)).collect()
}
