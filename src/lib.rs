//! # maetok
//!
//! MAETok ("Masked Autoencoders Are Effective Tokenizers for Diffusion Models", ICML 2025) in
//! Rust on Burn. This facade re-exports the workspace crates and holds the library side of the
//! example programs (`examples/`), so that they stay thin command-line wrappers.

pub use maetok_dit as dit;
pub use maetok_eval as eval;
pub use maetok_generator as generator;
pub use maetok_nn as nn;
pub use maetok_sampler as sampler;
pub use maetok_sit as sit;
pub use maetok_targets as targets;
pub use maetok_tokenizer as tokenizer;
pub use maetok_train as train;

pub mod backend;
pub mod cache_latents;
pub mod evaluate;
pub mod generate;
pub mod gmm_fit;
pub mod parallel_cli;
pub mod quickstart;
pub mod reconstruct;
pub mod sharded;
pub mod teacher_features;
pub mod tokenizer_recipe;
pub mod train_cli;
pub mod train_generator;
pub mod train_tokenizer;
