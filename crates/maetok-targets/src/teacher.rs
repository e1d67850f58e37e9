//! The frozen ViT teachers of MAETok's auxiliary decoders (`shared/spec/tokenizer.md` §4.4): the
//! shared timm trunk ([`maetok_nn::Vit`]) fed with ImageNet statistics, its token features the
//! targets of the DINOv2 and SigLIP decoders.
//!
//! * DINOv2-L/14 (`vit_large_patch14_dinov2.lvd142m`, [`VitConfig::dinov2_large`]): cls token,
//!   LayerScale, learned position embedding; MAETok builds it at 256 px with patch 16, so the
//!   checkpoint is resampled when loading ([`crate::timm`]).
//! * SigLIP so400m/14 (`vit_so400m_patch14_siglip_gap_224`, [`VitConfig::siglip_so400m`]): no
//!   prefix token, no LayerScale, average pooling (unused: MAETok takes the token features),
//!   `dynamic_img_size`.
//!
//! The DINO ViT-S/16 trunk of the discriminator ([`VitConfig::dino_small`]) is the same trunk
//! (`crate::disc`).

use burn::tensor::{backend::Backend, Tensor, TensorData};
pub use maetok_nn::vit::{Vit, VitConfig, VitConfigError, VitInputError};

/// ImageNet mean, the statistics both teachers are fed with (SigLIP included, as the reference).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// What a teacher gives the auxiliary decoders.
pub trait TargetFeatures<B: Backend> {
    /// The MAETok target: `x` in `[-1, 1]` `[B, 3, H, W]` → ImageNet-normalised →
    /// `forward_features` without the prefix tokens: `[B, N, D]` (N = 256 at 256 px, patch 16).
    fn target_features(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 3>, VitInputError>;
}

impl<B: Backend> TargetFeatures<B> for Vit<B> {
    fn target_features(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 3>, VitInputError> {
        let feats = self.forward_features(imagenet_from_pm1(x))?;
        let [b, n, d] = feats.dims();
        Ok(feats.slice([0..b, self.prefix_tokens()..n, 0..d]))
    }
}

/// `((x·0.5 + 0.5) − mean) / std` per channel: `[-1, 1]` images to the teachers' ImageNet
/// statistics (`[B, 3, H, W]`).
pub fn imagenet_from_pm1<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let device = x.device();
    let v = |a: [f32; 3]| Tensor::<B, 1>::from_data(TensorData::new(a.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
    maetok_nn::ops::divide((x * 0.5 + 0.5) - v(IMAGENET_MEAN), v(IMAGENET_STD))
}
