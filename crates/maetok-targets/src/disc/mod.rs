//! The reference's `dino` discriminator (spec §5.3–5.5): [`DinoDisc`] (frozen DINO trunk, five
//! spectrally normalised heads), the DiffAugment augmentations it is trained with, and the
//! hinge / LeCam / consistency losses.

pub mod batch_norm;
pub mod diff_aug;
pub mod dino_disc;
pub mod gan_loss;
pub mod head;
pub mod spectral_conv;

pub use diff_aug::{AugDraws, AugStep, Augment, DiffAugPolicy};
pub use dino_disc::{load_dino_disc, load_dino_disc_from, DinoDisc, DiscConfig, DiscResize};
pub use gan_loss::{consistency_loss, discriminator_loss, hinge_d_loss, hinge_g_loss, DiscLoss, GanWeights, LeCam};
pub use head::DiscHead;
