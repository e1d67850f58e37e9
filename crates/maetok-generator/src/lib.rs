//! The latent generator network of SiT and DiT on MAETok latents (`modelling/sit.py`,
//! `modelling/dit.py` in 1-D mode; `shared/spec/generative.md` §2, §6): the latent `[B, L, C]`
//! stays a token sequence (per-token linear embedding, fixed 1-D sin-cos positions loaded from
//! the weights), adaLN-Zero blocks conditioned on time + class, and a final layer that outputs
//! `C` channels (SiT: velocity) or `2C` with `learn_sigma` (DiT: `[ε̂ | v]`), as
//! facebookresearch/DiT `models.py` builds both.
//!
//! The presets and objectives live in `maetok-sit` and `maetok-dit`; the samplers see this
//! network through [`maetok_sampler::Denoiser`].

pub mod config;
pub mod folder;
pub mod init;
pub mod model;

pub use config::{ConfigError, LatentTransformerConfig};
pub use folder::{load_folder, read_config, save_folder, FolderError};
pub use maetok_nn::io::LoadReport;
pub use model::{Intermediates, LatentTransformer};
