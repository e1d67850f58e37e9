//! MAETok tokenizer training (spec §4–§5): the auxiliary targets and losses of the masked
//! autoencoder, one training step of the generator (tokenizer) and the discriminator, the
//! optimiser and schedule, and the trainer with its checkpoints.

pub mod aux;
pub mod config;
pub mod optim;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use aux::{aux_losses, AuxLosses, AuxTargets, AuxTeachers};
pub use config::{Stage, TokenizerTrainConfig};
pub use optim::GroupedAdamW;
pub use schedule::{scaled_lr, CosineWarmup};
pub use step::{last_layer_grad, last_layer_grad_norm, DiscStepOutput, GanTerms, GenStepOutput, Shard, StepError, TokenizerLoss};
pub use trainer::{LossNets, StepLog, TokenizerTrainer, TrainError};
