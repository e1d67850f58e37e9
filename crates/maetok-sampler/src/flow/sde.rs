//! `euler_maruyama_sampler`: the reverse SDE with diffusion `w(t) = 2t` down to t = 0.04, then
//! one deterministic Euler step to 0.

use burn::tensor::backend::Backend;

use super::{guided_rows, linspace, score_from_velocity, velocity_rows, PathType};
use crate::sample::NoiseSource;
use crate::{Denoiser, Guidance, SamplerError};

/// Euler–Maruyama: `u = linspace(1, 0.04, steps)` then 0; `steps − 1` stochastic steps
/// `x += d·dt + √(2u)·ε·√|dt|` with drift `d = v − ½·w·score` (guided on `d`, as the
/// reference), and a final noiseless step to 0. The step's noise `ε` is drawn before the model
/// call. `path` must be the one the model was trained with.
#[allow(clippy::too_many_arguments)]
pub fn euler_maruyama_sampler<B: Backend, M: Denoiser<B> + ?Sized>(
    model: &M,
    x: &[f64],
    shape: [usize; 3],
    y: &[i64],
    steps: usize,
    path: PathType,
    guidance: Guidance,
    noise: &mut NoiseSource,
    device: &B::Device,
) -> Result<Vec<f64>, SamplerError> {
    if steps < 2 {
        return Err(SamplerError::TooFewSteps { sampler: "Euler-Maruyama", min: 2, got: steps });
    }
    let n = x.len();
    let mut grid = linspace(1.0, 0.04, steps);
    grid.push(0.0);
    let drift = |x: &[f64], t: f64, guided: bool| -> Result<Vec<f64>, SamplerError> {
        let w = 2.0 * t;
        let rows = velocity_rows(model, x, shape, t, y, guided, device)?;
        Ok(guided_rows(&rows, n, guided, guidance.scale, |v| {
            let s = score_from_velocity(v, x, t, path);
            v.iter().zip(&s).map(|(v, s)| v - 0.5 * w * s).collect()
        }))
    };
    let mut x = x.to_vec();
    for j in 0..steps - 1 {
        let (t, t_next) = (grid[j], grid[j + 1]);
        let dt = t_next - t;
        let eps = noise(n);
        if eps.len() != n {
            return Err(SamplerError::Noise { got: eps.len(), want: n });
        }
        let d = drift(&x, t, guidance.active(t))?;
        let diffusion = (2.0 * t).sqrt() * dt.abs().sqrt();
        x = x.iter().zip(d.iter().zip(&eps)).map(|(x, (d, e))| x + d * dt + diffusion * e).collect();
    }
    let t = grid[steps - 1];
    let dt = grid[steps] - t;
    let d = drift(&x, t, guidance.active(t))?;
    Ok(x.iter().zip(&d).map(|(x, d)| x + d * dt).collect())
}
