//! The reference's `dino` discriminator (spec §5.3–5.5): [`DinoDisc`] (frozen DINO trunk, five
//! spectrally normalised heads), the DiffAugment augmentations it is trained with, and the
//! hinge / LeCam / consistency losses.

pub mod batch_norm;
pub mod dino_disc;
pub mod head;
pub mod spectral_conv;

pub use dino_disc::{load_dino_disc, load_dino_disc_from, DinoDisc, DiscConfig, DiscResize};
pub use head::DiscHead;
