//! MAETok tokenizer training (spec §4–§5): the auxiliary targets and losses of the masked
//! autoencoder, and one training step of the generator (tokenizer) and the discriminator.

pub mod aux;
pub mod schedule;
pub mod step;

pub use aux::{aux_losses, AuxLosses, AuxTargets, AuxTeachers};
pub use schedule::{scaled_lr, CosineWarmup};
pub use step::{last_layer_grad_norm, DiscStepOutput, GanTerms, GenStepOutput, StepError, TokenizerLoss};
