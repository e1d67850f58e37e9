//! Batched feature extraction from uint8 images to host memory (f32 rows), for the metrics.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use ndarray::ArrayView4;

use super::model::{InceptionV3, NUM_LOGITS, POOL_DIM, SPATIAL_DIM};

/// Features of a whole image set, row-major.
#[derive(Debug, Clone, Default)]
pub struct FeatureSet {
    pub n: usize,
    /// `[n, 2048]`.
    pub pool: Vec<f32>,
    /// `[n, 2023]`.
    pub spatial: Vec<f32>,
    /// `[n, 1008]` when the model has its classification head.
    pub logits: Option<Vec<f32>>,
}

fn host<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    maetok_nn::fused::host_values(t)
}

impl FeatureSet {
    /// Appends another set's rows.
    pub fn extend(&mut self, other: FeatureSet) {
        let was_empty = self.n == 0;
        self.n += other.n;
        self.pool.extend(other.pool);
        self.spatial.extend(other.spatial);
        self.logits = match (self.logits.take(), other.logits) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            (None, Some(b)) if was_empty => Some(b),
            _ => None,
        };
    }
}

impl<B: Backend> InceptionV3<B> {
    /// Features of uint8 images `[N, H, W, 3]` (NHWC, as in ADM `.npz` batches).
    pub fn features_u8(&self, images: ArrayView4<u8>, device: &B::Device) -> FeatureSet {
        let (n, h, w, c) = images.dim();
        let values: Vec<f32> = images.iter().map(|&v| v as f32).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, [n, h, w, c]), device).permute([0, 3, 1, 2]);
        let f = self.features(x);
        let set = FeatureSet { n, pool: host(f.pool), spatial: host(f.spatial), logits: f.logits.map(host) };
        debug_assert_eq!(set.pool.len(), n * POOL_DIM);
        debug_assert_eq!(set.spatial.len(), n * SPATIAL_DIM);
        debug_assert!(set.logits.as_ref().is_none_or(|l| l.len() == n * NUM_LOGITS));
        set
    }
}
