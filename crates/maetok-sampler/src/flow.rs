//! SiT samplers: `euler_sampler` (Euler or Heun ODE from t = 1 to 0) and
//! `euler_maruyama_sampler` (reverse SDE with diffusion `w(t) = 2t` down to t = 0.04, then one
//! deterministic Euler step to 0). Latents are `[B, L, C]` flattened row-major as f64.

use burn::tensor::backend::Backend;
use maetok_sit::PathType;

use crate::{eval_model, linspace, Guidance, VelocityModel};

/// `u + s·(c − u)` on the two halves of a doubled batch.
fn combine(out: &[f64], n: usize, scale: f64) -> Vec<f64> {
    let (c, u) = out.split_at(n);
    c.iter().zip(u).map(|(c, u)| u + scale * (c - u)).collect()
}

/// Deterministic sampler: `linspace(1, 0, steps + 1)`; with `heun`, a second evaluation at
/// `t_{i+1}` (except on the last step) averages the two velocities, guided or not as decided at
/// `t_i`. Returns the sample at t = 0. `x`: initial noise `[B·L·C]`.
#[allow(clippy::too_many_arguments)]
pub fn euler_sampler<B: Backend, M: VelocityModel<B>>(model: &M, x: &[f64], shape: [usize; 3], y: &[i64], steps: usize, heun: bool, guidance: Guidance, device: &B::Device) -> Vec<f64> {
    let n = x.len();
    let grid = linspace(1.0, 0.0, steps + 1);
    let mut x = x.to_vec();
    let velocity = |x: &[f64], t: f64, guided: bool| {
        let out = eval_model(model, x, shape, t, y, guided, device);
        if guided { combine(&out, n, guidance.scale) } else { out }
    };
    for i in 0..steps {
        let (t, t_next) = (grid[i], grid[i + 1]);
        let guided = guidance.active(t);
        let v = velocity(&x, t, guided);
        let dt = t_next - t;
        let mut next: Vec<f64> = x.iter().zip(&v).map(|(x, v)| x + dt * v).collect();
        if heun && i < steps - 1 {
            let v2 = velocity(&next, t_next, guided);
            next = x.iter().zip(v.iter().zip(&v2)).map(|(x, (a, b))| x + dt * (0.5 * a + 0.5 * b)).collect();
        }
        x = next;
    }
    x
}

/// `(α, σ, α', σ')` of a path at time `t`, in f64.
fn coefficients(path: PathType, t: f64) -> (f64, f64, f64, f64) {
    match path {
        PathType::Linear => (1.0 - t, t, -1.0, 1.0),
        PathType::Cosine => {
            let h = std::f64::consts::FRAC_PI_2;
            ((h * t).cos(), (h * t).sin(), -h * (h * t).sin(), h * (h * t).cos())
        }
    }
}

/// Score from velocity, the reference's generic form: `ρ = α/α'`, `var = σ² − ρ·σ'·σ`,
/// `score = (ρ·v − x)/var` (elementwise).
pub fn score_from_velocity(v: &[f64], x: &[f64], t: f64, path: PathType) -> Vec<f64> {
    let (a, s, da, ds) = coefficients(path, t);
    let rho = a / da;
    let var = s * s - rho * ds * s;
    v.iter().zip(x).map(|(v, x)| (rho * v - x) / var).collect()
}

/// Source of the SDE's Gaussian noise: called once per stochastic step (before the model call)
/// with the number of values needed; returns that many standard normal draws.
pub type SdeNoise<'a> = dyn FnMut(usize) -> Vec<f64> + 'a;

/// Euler–Maruyama: `u = linspace(1, 0.04, steps)` then 0; `steps − 1` stochastic steps
/// `x += d·dt + √(2u)·ε·√|dt|` with drift `d = v − u·score` (guided on `d`), and a final
/// noiseless step to 0. `path` must be the one the model was trained with.
#[allow(clippy::too_many_arguments)]
pub fn euler_maruyama_sampler<B: Backend, M: VelocityModel<B>>(model: &M, x: &[f64], shape: [usize; 3], y: &[i64], steps: usize, path: PathType, guidance: Guidance, noise: &mut SdeNoise, device: &B::Device) -> Vec<f64> {
    assert!(steps >= 2, "the SDE sampler needs at least 2 steps");
    let n = x.len();
    let mut grid = linspace(1.0, 0.04, steps);
    grid.push(0.0);
    let mut x = x.to_vec();
    let drift = |x: &[f64], t: f64, guided: bool| -> Vec<f64> {
        let out = eval_model(model, x, shape, t, y, guided, device);
        let w = 2.0 * t;
        let half = |v: &[f64]| -> Vec<f64> {
            let s = score_from_velocity(v, x, t, path);
            v.iter().zip(&s).map(|(v, s)| v - 0.5 * w * s).collect()
        };
        if guided {
            let (c, u) = out.split_at(n);
            let (dc, du) = (half(c), half(u));
            dc.iter().zip(&du).map(|(c, u)| u + guidance.scale * (c - u)).collect()
        } else {
            half(&out)
        }
    };
    for j in 0..steps - 1 {
        let (t, t_next) = (grid[j], grid[j + 1]);
        let dt = t_next - t;
        let eps = noise(n);
        assert_eq!(eps.len(), n, "the noise source returned {} values for {n}", eps.len());
        let d = drift(&x, t, guidance.active(t));
        let diffusion = (2.0 * t).sqrt() * dt.abs().sqrt();
        x = x.iter().zip(d.iter().zip(&eps)).map(|(x, (d, e))| x + d * dt + diffusion * e).collect();
    }
    let t = grid[steps - 1];
    let dt = grid[steps] - t;
    let d = drift(&x, t, guidance.active(t));
    x.iter().zip(&d).map(|(x, d)| x + d * dt).collect()
}
