//! Gaussian diffusion (IDDPM/DiT): schedules and respacing, the process tables with the forward
//! process, posterior and learned-range reverse step, the variational-bound terms, and the
//! ancestral and DDIM sampling loops.

pub mod likelihood;
pub mod loops;
pub mod process;
pub mod schedule;

pub use likelihood::{approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl};
pub use loops::{StepRecord, Update};
pub use process::{GaussianDiffusion, ReverseStep};
pub use schedule::{betas, space_timesteps, Schedule};
