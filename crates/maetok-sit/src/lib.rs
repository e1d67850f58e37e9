//! SiT on MAETok latents (`modelling/sit.py` in 1-D mode, `losses/sit_loss.py`), following
//! `shared/spec/generative.md` §2–3: the latent `[B, L, C]` stays a token sequence (per-token
//! linear embedding, fixed 1-D sin-cos positions loaded from the weights), adaLN-Zero blocks,
//! velocity prediction with the linear or cosine interpolant (t = 0 data, t = 1 noise).

pub mod config;
pub mod loss;
pub mod model;
pub mod pretrained;

pub use config::{SitConfig, SitConfigError};
pub use loss::{interpolant, si_loss, LossDraws, PathType, SiLossOutput, TimeSampling};
pub use model::{init_for_training, Sit, SitTrace};
pub use pretrained::{load_folder_weights, load_sit, save_folder, save_sit, SitLoadError};
