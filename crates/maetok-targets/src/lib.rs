//! Targets and loss networks of MAETok training (`shared/spec/tokenizer.md` §4.4, §5): the HOG
//! generator of `utils/hog.py`, the DINOv2 and SigLIP teachers (timm layout and checkpoint
//! loading with FlexiViT / position-embedding resampling), the auxiliary losses on those targets,
//! LPIPS (VGG16), and the DINO discriminator with DiffAugment and its GAN losses.

pub mod aux_loss;
pub mod disc;
pub mod hog;
pub mod lpips;
pub mod teacher;
pub mod testing;
pub mod timm;

pub use disc::{load_dino_disc, DinoDisc, DiscConfig};
pub use hog::{HogError, HogGenerator};
pub use lpips::{load_lpips, load_lpips_from, Lpips, LpipsOutput};
pub use teacher::{imagenet_from_pm1, TargetFeatures, Vit, VitConfig, VitInputError};
pub use timm::{load_vit, load_vit_from};
