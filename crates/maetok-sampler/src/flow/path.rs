//! The stochastic-interpolant paths `x_t = α_t·x0 + σ_t·ε` (t = 0 data, t = 1 noise, the REPA
//! convention) and the time sampling of training. The coefficients are written once, for host
//! `f64` values (samplers) and tensors (the training loss) alike.

use std::ops::{Add, Mul};

use burn::tensor::{backend::Backend, Tensor};

/// The interpolation path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathType {
    /// `α = 1 − t`, `σ = t`.
    Linear,
    /// `α = cos(πt/2)`, `σ = sin(πt/2)` (GVP).
    Cosine,
}

/// How training times are drawn (no loss weighting either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeSampling {
    /// `t ~ U[0, 1)`.
    Uniform,
    /// `s = exp(n)`, `n ~ N(0, 1)`: `t = s/(1+s)` (linear path: logit-normal) or `(2/π)·atan(s)` (cosine).
    LogNormal,
}

/// What the path formulas need of a time value: `f64` or a tensor of times.
pub trait PathValue: Clone + Add<f64, Output = Self> + Mul<f64, Output = Self> {
    fn cos(self) -> Self;
    fn sin(self) -> Self;
}

impl PathValue for f64 {
    fn cos(self) -> Self {
        f64::cos(self)
    }
    fn sin(self) -> Self {
        f64::sin(self)
    }
}

impl<B: Backend, const D: usize> PathValue for Tensor<B, D> {
    fn cos(self) -> Self {
        Tensor::cos(self)
    }
    fn sin(self) -> Self {
        Tensor::sin(self)
    }
}

/// The path at time `t`.
#[derive(Debug, Clone)]
pub struct Coefficients<T> {
    pub alpha: T,
    pub sigma: T,
    /// `dα/dt`.
    pub d_alpha: T,
    /// `dσ/dt`.
    pub d_sigma: T,
}

impl PathType {
    /// `(α_t, σ_t, α'_t, σ'_t)`.
    pub fn coefficients<T: PathValue>(self, t: T) -> Coefficients<T> {
        match self {
            PathType::Linear => {
                Coefficients { alpha: t.clone() * -1.0 + 1.0, sigma: t.clone(), d_alpha: t.clone() * 0.0 + -1.0, d_sigma: t * 0.0 + 1.0 }
            }
            PathType::Cosine => {
                let h = std::f64::consts::FRAC_PI_2;
                let a = t * h;
                Coefficients { alpha: a.clone().cos(), sigma: a.clone().sin(), d_alpha: a.clone().sin() * -h, d_sigma: a.cos() * h }
            }
        }
    }
}

/// Training times from the draws `[B]` (`U[0,1)` for uniform, `N(0,1)` for log-normal).
pub fn sample_times<B: Backend>(path: PathType, sampling: TimeSampling, draw: Tensor<B, 1>) -> Tensor<B, 1> {
    match sampling {
        TimeSampling::Uniform => draw,
        TimeSampling::LogNormal => {
            let s = draw.exp();
            match path {
                PathType::Linear => s.clone() / (s + 1.0),
                PathType::Cosine => s.atan() * (2.0 / std::f64::consts::PI),
            }
        }
    }
}

/// Score from velocity, the reference's generic form at time `t`: `ρ = α/α'`,
/// `var = σ² − ρ·σ'·σ`, `score = (ρ·v − x)/var` (elementwise, host values).
pub fn score_from_velocity(v: &[f64], x: &[f64], t: f64, path: PathType) -> Vec<f64> {
    let c = path.coefficients(t);
    let rho = c.alpha / c.d_alpha;
    let var = c.sigma * c.sigma - rho * c.d_sigma * c.sigma;
    v.iter().zip(x).map(|(v, x)| (rho * v - x) / var).collect()
}
