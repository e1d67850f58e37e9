//! The generative processes of the latent generators and every sampler
//! (`modelling/samplers.py`, `modelling/diffusion/*`; `shared/spec/generative.md` §3–§7).
//!
//! - [`flow`]: the stochastic-interpolant paths (t = 0 data, t = 1 noise), the time sampling of
//!   training, and the Euler/Heun ODE and Euler–Maruyama SDE samplers.
//! - [`diffusion`]: Gaussian diffusion: β schedules, respacing, the forward process, the
//!   posterior, the learned-range reverse step, the variational-bound terms, DDPM and DDIM loops.
//! - [`guidance`]: classifier-free guidance (one doubled batch, one combination formula, an
//!   active time interval).
//! - [`sample`]: one entry point over all four samplers, used by generation and training previews.
//!
//! Models are seen only through [`Denoiser`]; this crate depends on no model crate.

pub mod diffusion;
pub mod flow;
pub mod guidance;
pub mod sample;

use burn::tensor::{backend::Backend, Int, Tensor};

pub use diffusion::{GaussianDiffusion, Schedule, StepRecord};
pub use flow::{euler_maruyama_sampler, euler_sampler, linspace, PathType, TimeSampling};
pub use guidance::Guidance;
pub use sample::{sample, NoiseSource, Sampler};

/// A class-conditional network on latent sequences, as the samplers call it.
pub trait Denoiser<B: Backend> {
    /// `x` `[N, L, C]`, times `t` `[N]` (flow time in [0, 1], or the diffusion step the network
    /// is told, as a float), labels `y` `[N]` (the null class allowed) → `[N, L, C_out]`:
    /// the velocity (`C_out = C`) or `[ε̂ | v]` (`C_out = 2C`, learned variance).
    fn denoise(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3>;
    /// The unconditional label of classifier-free guidance.
    fn null_class(&self) -> usize;
}

/// Errors of the samplers and the process construction; messages name the bad value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    #[error("bad respacing '{spec}': {reason}")]
    Respacing { spec: String, reason: String },
    #[error("the {sampler} sampler needs at least {min} steps, got {got}")]
    TooFewSteps { sampler: &'static str, min: usize, got: usize },
    #[error("the noise source returned {got} values where {want} were needed")]
    Noise { got: usize, want: usize },
    #[error("the model returned {got} channels per token where a diffusion sampler needs [eps | v] = {want}: sample a flow (velocity) model with the ODE/SDE samplers")]
    Channels { got: usize, want: usize },
    #[error("the model returned {got} channels per token where a flow sampler needs the velocity ({want}): sample a learned-variance (diffusion) model with DDPM/DDIM")]
    VelocityChannels { got: usize, want: usize },
}
