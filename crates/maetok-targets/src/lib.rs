//! Targets of MAETok's auxiliary decoders (`shared/spec/tokenizer.md` §4.4). So far: the HOG
//! generator of `utils/hog.py`.

pub mod hog;

pub use hog::{HogError, HogGenerator};
