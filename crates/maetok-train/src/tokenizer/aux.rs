//! Targets and losses of MAETok's auxiliary decoders (spec §4.4–4.5): HOG of the input image,
//! DINOv2 and SigLIP features from frozen teachers, each predicted for the masked patches; and
//! SoftVQ-VAE's entropy and REPA losses (the REPA target is the same DINOv2 teacher's features).

use burn::tensor::{backend::Backend, Tensor};
use maetok_targets::aux_loss::{cosine_feature_loss, hog_loss};
use maetok_targets::{HogError, HogGenerator, TargetFeatures, Vit, VitInputError};
use maetok_tokenizer::{repa_loss, AuxTarget, MaskAeOutput, TokenMask};

/// The frozen target extractors of the switched-on auxiliary decoders.
pub struct AuxTeachers<B: Backend> {
    pub hog: Option<HogGenerator>,
    /// DINOv2 (`repa_model`).
    pub dino: Option<Vit<B>>,
    /// SigLIP (`clip_model`).
    pub clip: Option<Vit<B>>,
}

/// The targets of one batch, `[B, N, F]` each, carrying no gradient.
pub struct AuxTargets<B: Backend> {
    pub hog: Option<Tensor<B, 3>>,
    pub dino: Option<Tensor<B, 3>>,
    pub clip: Option<Tensor<B, 3>>,
}

/// A target extractor refused the images.
#[derive(Debug, thiserror::Error)]
pub enum AuxTargetError {
    #[error("HOG target: {0}")]
    Hog(#[from] HogError),
    #[error("{which} teacher: {source}")]
    Teacher { which: &'static str, source: VitInputError },
}

impl<B: Backend> AuxTeachers<B> {
    /// Targets for images `[B, 3, S, S]` in [-1, 1] (detached).
    pub fn targets(&self, images: Tensor<B, 4>) -> Result<AuxTargets<B>, AuxTargetError> {
        self.targets_for(images, [true; 3])
    }

    /// [`AuxTeachers::targets`] of the teachers `wanted` (`[hog, dino, clip]`) only: a model
    /// without a decoder does not pay for its teacher.
    pub fn targets_for(&self, images: Tensor<B, 4>, wanted: [bool; 3]) -> Result<AuxTargets<B>, AuxTargetError> {
        let x = images.detach();
        let hog = self.hog.as_ref().filter(|_| wanted[0]).map(|h| h.forward(x.clone())).transpose()?;
        let teacher = |t: &Option<Vit<B>>, on: bool, which| {
            t.as_ref()
                .filter(|_| on)
                .map(|t| t.target_features(x.clone()).map(|f| f.detach()))
                .transpose()
                .map_err(|source| AuxTargetError::Teacher { which, source })
        };
        Ok(AuxTargets {
            hog: hog.map(|h| h.detach()),
            dino: teacher(&self.dino, wanted[1], "DINOv2")?,
            clip: teacher(&self.clip, wanted[2], "SigLIP")?,
        })
    }
}

/// The auxiliary losses of one forward (`[1]` each; weight 1 each in the total, spec §4.5), and
/// SoftVQ's entropy and REPA terms (already weighted by `entropy_loss_ratio` and
/// `repa_loss_weight`; the reference's `VQLoss` adds its `emb_loss` terms with weight 1).
pub struct AuxLosses<B: Backend> {
    pub hog: Option<Tensor<B, 1>>,
    pub dino: Option<Tensor<B, 1>>,
    pub clip: Option<Tensor<B, 1>>,
    pub entropy: Option<Tensor<B, 1>>,
    pub repa: Option<Tensor<B, 1>>,
}

impl<B: Backend> AuxLosses<B> {
    /// The sum of the present losses (`None` when there is none).
    pub fn total(&self) -> Option<Tensor<B, 1>> {
        self.named().into_iter().map(|(_, l)| l).reduce(|a, b| a + b)
    }

    /// `(name, loss)` of the present losses.
    pub fn named(&self) -> Vec<(&'static str, Tensor<B, 1>)> {
        let all = [
            (AuxTarget::Hog.name(), &self.hog),
            (AuxTarget::Dino.name(), &self.dino),
            (AuxTarget::Clip.name(), &self.clip),
            ("entropy", &self.entropy),
            ("repa", &self.repa),
        ];
        all.into_iter().filter_map(|(n, l)| l.clone().map(|l| (n, l))).collect()
    }
}

/// The loss of each auxiliary decoder against its target, averaged over the tokens `mask`
/// marks (`masked_only`, the reference's `aux_loss_mask`) or over all tokens. A decoder without
/// a target contributes nothing; so does REPA without the DINOv2 target.
///
/// # Panics
/// When REPA is `repeat` and the teacher's token count is not a multiple of the latent count
/// (the trainer checks this before its first step).
pub fn aux_losses<B: Backend>(out: &MaskAeOutput<B>, targets: &AuxTargets<B>, mask: Option<&TokenMask>, masked_only: bool) -> AuxLosses<B> {
    let device = out.latent.device();
    let m = mask.filter(|_| masked_only).map(|m| m.to_tensor::<B>(&device));
    let pair = |t: AuxTarget, target: &Option<Tensor<B, 3>>| Some((out.aux(t)?.pred.clone(), target.clone()?));
    AuxLosses {
        hog: pair(AuxTarget::Hog, &targets.hog).map(|(p, t)| hog_loss(p, t, m.clone())),
        dino: pair(AuxTarget::Dino, &targets.dino).map(|(p, t)| cosine_feature_loss(p, t, m.clone())),
        clip: pair(AuxTarget::Clip, &targets.clip).map(|(p, t)| cosine_feature_loss(p, t, m.clone())),
        entropy: out.softvq.as_ref().and_then(|s| s.entropy.clone()),
        repa: out.softvq.as_ref().and_then(|s| {
            let (projected, align, weight) = s.repa.clone()?;
            let loss = repa_loss(targets.dino.clone()?, projected, align).unwrap_or_else(|e| panic!("{e}"));
            Some(loss * weight)
        }),
    }
}
