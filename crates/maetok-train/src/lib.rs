//! Datasets, image I/O, visualisation and trainers for MAETok.

pub mod ae_trainer;
pub mod data;
pub mod viz;

pub use ae_trainer::{train_autoencoder, AeTrainConfig, AeTrainResult};
