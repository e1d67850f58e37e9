//! Targets and loss networks of MAETok training (`shared/spec/tokenizer.md` §4.4, §5.2): the HOG
//! generator of `utils/hog.py` and LPIPS (VGG16). DINOv2/SigLIP teachers and the DINO
//! discriminator are still to come.

pub mod hog;
pub mod lpips;

pub use hog::{HogError, HogGenerator};
pub use lpips::{load_lpips, load_lpips_from, Lpips, LpipsOutput};
