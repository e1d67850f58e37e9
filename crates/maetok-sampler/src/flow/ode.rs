//! `euler_sampler`: Euler or Heun integration of the probability-flow ODE from t = 1 to 0.

use burn::tensor::backend::Backend;

use super::{guide_halves, linspace, velocity_rows};
use crate::{Denoiser, Guidance, SamplerError};

/// Deterministic sampler on the grid `linspace(1, 0, steps + 1)`; with `heun`, a second
/// evaluation at `t_{i+1}` (except on the last step) averages the two velocities, guided or not
/// as decided at `t_i`. `x`: initial noise `[B·L·C]` of `shape`; returns the sample at t = 0.
/// A model whose output is not `C` channels wide (a learned-variance model) is an error.
#[allow(clippy::too_many_arguments)]
pub fn euler_sampler<B: Backend, M: Denoiser<B> + ?Sized>(
    model: &M,
    x: &[f64],
    shape: [usize; 3],
    y: &[i64],
    steps: usize,
    heun: bool,
    guidance: Guidance,
    device: &B::Device,
) -> Result<Vec<f64>, SamplerError> {
    let n = x.len();
    let grid = linspace(1.0, 0.0, steps + 1);
    let velocity = |x: &[f64], t: f64, guided: bool| -> Result<Vec<f64>, SamplerError> {
        let rows = velocity_rows(model, x, shape, t, y, guided, device)?;
        Ok(if guided { guide_halves(&rows[..n], &rows[n..], guidance.scale) } else { rows })
    };
    let mut x = x.to_vec();
    for i in 0..steps {
        let (t, t_next) = (grid[i], grid[i + 1]);
        let guided = guidance.active(t);
        let v = velocity(&x, t, guided)?;
        let dt = t_next - t;
        let mut next: Vec<f64> = x.iter().zip(&v).map(|(x, v)| x + dt * v).collect();
        if heun && i < steps - 1 {
            let v2 = velocity(&next, t_next, guided)?;
            next = x.iter().zip(v.iter().zip(&v2)).map(|(x, (a, b))| x + dt * (0.5 * a + 0.5 * b)).collect();
        }
        x = next;
    }
    Ok(x)
}
