//! FID Inception-v3 feature extractor (pytorch-fid / ADM layout) on any Burn backend.

mod blocks;
mod conv;
mod extract;
mod load;
mod model;
mod resize;

pub use conv::{BasicConv2d, BN_EPS};
pub use extract::FeatureSet;
pub use load::{canonical_key, load_inception, load_inception_from};
pub use model::{BlockOutputs, InceptionFeatures, InceptionV3, NUM_LOGITS, POOL_DIM, SPATIAL_DIM};
pub use resize::{bilinear_matrix, Preprocess, INCEPTION_SIZE};
