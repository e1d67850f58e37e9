//! DiT on MAETok latents (`modelling/dit.py` in 1-D mode and `modelling/diffusion/*`), following
//! `shared/spec/generative.md` §6–7: the SiT trunk with a learned-variance head (`[ε̂ | v]` per
//! token), integer DDPM timesteps, linear and cosine β schedules with the reference's respacing,
//! the hybrid MSE + variational-bound loss, ancestral (`p_sample_loop`) and DDIM sampling.

pub mod config;
pub mod diffusion;
pub mod model;

pub use config::DitConfig;
pub use diffusion::{space_timesteps, GaussianDiffusion, HybridLoss, Schedule, StepRecord};
pub use model::{load_dit, save_dit, Dit};
