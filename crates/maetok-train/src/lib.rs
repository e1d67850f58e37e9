//! Datasets, image I/O, visualisation and trainers for MAETok and its latent generators.

pub mod adamw;
pub mod checkpoint;
pub mod dashboard;
pub mod data;
pub mod generator_trainer;
pub mod grad_clip;
pub mod in_place;
pub mod parallel;
pub mod seeded;
pub mod tokenizer;
pub mod viz;

pub use generator_trainer::{objective_loss, GeneratorTrainConfig, GeneratorTrainError, GeneratorTrainer, Objective, SampleDraws};
