//! Datasets, image I/O, visualisation and trainers for MAETok and its latent generators.

pub mod ae_trainer;
pub mod data;
pub mod grad_clip;
pub mod latent_trainer;
pub mod viz;

pub use ae_trainer::{train_autoencoder, AeTrainConfig, AeTrainResult};
pub use latent_trainer::{DitTrainConfig, DitTrainer, LatentTrainer, SitTrainConfig, SitTrainError, SitTrainer, TrainableGenerator};
