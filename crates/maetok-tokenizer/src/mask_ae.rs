//! The training model: the tokenizer plus its training-only heads. For MAETok (`MaskAEModel`,
//! spec §4) the shallow auxiliary decoders that predict HOG, DINOv2 and SigLIP features of the
//! masked patches from the latents; for SoftVQ-VAE (`SoftVQModel` in training mode) the
//! quantiser's entropy loss and the REPA projection of the latents.
//!
//! All decoders read the same latent `z` `[B, T, C]` of the masked encoder pass. Each auxiliary
//! decoder is the MoVQ trunk ([`Decoder`]) at its own (small) size with a cls token:
//! `post_quant_conv_X(z)` `[B, T, D_aux]` → trunk → image rows `[B, N, D_aux]` → `to_pixel_X`
//! → predictions `[B, N, F_X]` (F = 108 for HOG at patch 16, the teacher's width otherwise).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::ops::linear3;
use rand::Rng;

use crate::config::{AuxConfig, RepaAlign, SoftVqLosses, TokenizerConfig};
use crate::decoder::Decoder;
use crate::masking::TokenMask;
use crate::model::{InputError, Tokenizer};
use crate::repa::RepaProjection;
use crate::soft_vq::{SoftVq, SoftVqOutput};

/// Which target an auxiliary decoder predicts (its key suffix: `decoder_hog`, `to_pixel_dino`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AuxTarget {
    Hog,
    Dino,
    Clip,
}

impl AuxTarget {
    pub const ALL: [AuxTarget; 3] = [AuxTarget::Hog, AuxTarget::Dino, AuxTarget::Clip];

    /// The reference's key suffix.
    pub fn name(self) -> &'static str {
        match self {
            AuxTarget::Hog => "hog",
            AuxTarget::Dino => "dino",
            AuxTarget::Clip => "clip",
        }
    }
}

/// One auxiliary decoder with its input projection and output head.
#[derive(Module, Debug)]
pub struct AuxDecoder<B: Backend> {
    /// `post_quant_conv_X`: Linear(C → D_aux).
    pub post_quant_conv: Linear<B>,
    /// `decoder_X`: the MoVQ trunk.
    pub decoder: Decoder<B>,
    /// `to_pixel_X`: Linear(D_aux → F).
    pub head: Linear<B>,
}

/// An auxiliary decoder's output.
pub struct AuxOutput<B: Backend> {
    /// `[B, N, D_aux]` the trunk's image rows (before the head).
    pub rows: Tensor<B, 3>,
    /// `[B, N, F]` the predicted target features.
    pub pred: Tensor<B, 3>,
}

impl<B: Backend> AuxDecoder<B> {
    fn new(cfg: &TokenizerConfig, aux: &AuxConfig, features: usize, rng: &mut impl Rng, device: &B::Device) -> Self {
        let d = aux.decoder.width;
        Self {
            post_quant_conv: LinearConfig::new(cfg.latent_dim, d).init(device),
            decoder: Decoder::new(cfg, aux.decoder, aux.cls_token, Some(1000), rng, device),
            head: LinearConfig::new(d, features).init(device),
        }
    }

    /// Latents `z` `[B, T, C]` → rows `[B, N, D_aux]` and predictions `[B, N, F]`.
    pub fn forward(&self, z: Tensor<B, 3>) -> AuxOutput<B> {
        let rows = self.decoder.forward(linear3(&self.post_quant_conv, z.clone()), z);
        let pred = linear3(&self.head, rows.clone());
        AuxOutput { rows, pred }
    }
}

/// The training model: [`Tokenizer`], the switched-on auxiliary decoders (MAETok) or the REPA
/// projection (SoftVQ-VAE, `projection.*`).
#[derive(Module, Debug)]
pub struct MaskAe<B: Backend> {
    pub ae: Tokenizer<B>,
    pub hog: Option<AuxDecoder<B>>,
    pub dino: Option<AuxDecoder<B>>,
    pub clip: Option<AuxDecoder<B>>,
    /// SoftVQ's REPA projection MLP (`repa: true`).
    pub projection: Option<RepaProjection<B>>,
    /// SoftVQ's loss settings (`None` for MAETok).
    pub softvq: Option<SoftVqLosses>,
}

/// SoftVQ's training terms of one forward.
pub struct SoftVqTrainOutput<B: Backend> {
    /// The quantiser's output (logits, weights, indices) for the latents.
    pub codes: SoftVqOutput<B>,
    /// `entropy_loss_ratio × entropy loss` `[1]` (absent when the ratio is 0).
    pub entropy: Option<Tensor<B, 1>>,
    /// REPA: the projected latents (see [`RepaProjection::project`]), how to pair them with the
    /// teacher's tokens, and the loss weight.
    pub repa: Option<(Tensor<B, 3>, RepaAlign, f64)>,
}

/// What one training forward gives.
pub struct MaskAeOutput<B: Backend> {
    /// `[B, T, C]` latents of the (masked) encoder pass.
    pub latent: Tensor<B, 3>,
    /// `[B, N, D_dec]` the pixel decoder's image rows (the input of `to_pixel`).
    pub rows: Tensor<B, 3>,
    /// `[B, 3, S, S]` the reconstruction (not clamped).
    pub recon: Tensor<B, 4>,
    pub hog: Option<AuxOutput<B>>,
    pub dino: Option<AuxOutput<B>>,
    pub clip: Option<AuxOutput<B>>,
    /// SoftVQ-VAE's quantiser output and training terms.
    pub softvq: Option<SoftVqTrainOutput<B>>,
}

impl<B: Backend> MaskAeOutput<B> {
    /// The output of auxiliary decoder `t`, if it is switched on.
    pub fn aux(&self, t: AuxTarget) -> Option<&AuxOutput<B>> {
        match t {
            AuxTarget::Hog => self.hog.as_ref(),
            AuxTarget::Dino => self.dino.as_ref(),
            AuxTarget::Clip => self.clip.as_ref(),
        }
    }
}

impl<B: Backend> MaskAe<B> {
    /// A randomly initialised model with the auxiliary decoders `aux` switches on.
    pub fn new(config: &TokenizerConfig, aux: &AuxConfig, rng: &mut impl Rng, device: &B::Device) -> Self {
        let ae = Tokenizer::new(config, rng, device);
        let mut make = |f: Option<usize>| f.map(|f| AuxDecoder::new(config, aux, f, rng, device));
        let (hog, dino, clip) = (make(aux.hog), make(aux.dino), make(aux.clip));
        let projection = aux.softvq.and_then(|s| s.repa).map(|r| RepaProjection::new(config.latent_dim, r.proj_dim, r.teacher_dim, device));
        Self { ae, hog, dino, clip, projection, softvq: aux.softvq }
    }

    /// Auxiliary decoder `t`, if switched on.
    pub fn aux(&self, t: AuxTarget) -> Option<&AuxDecoder<B>> {
        match t {
            AuxTarget::Hog => self.hog.as_ref(),
            AuxTarget::Dino => self.dino.as_ref(),
            AuxTarget::Clip => self.clip.as_ref(),
        }
    }

    /// Selects fused attention in every trunk (see [`Tokenizer::set_fused_attention`]).
    pub fn set_fused_attention(&mut self, fused: bool) {
        self.ae.set_fused_attention(fused);
        for a in [self.hog.as_mut(), self.dino.as_mut(), self.clip.as_mut()].into_iter().flatten() {
            for b in a.decoder.blocks.iter_mut() {
                b.attn.fused = fused;
            }
        }
    }

    /// The training forward (spec §4.1–4.3): images `[B, 3, S, S]`, encoded with `mask` (MAE
    /// token masking; `None` for the unmasked decoder fine-tuning stage), decoded by the pixel
    /// decoder and every auxiliary decoder from the same latents.
    pub fn forward(&self, images: Tensor<B, 4>, mask: Option<&TokenMask>) -> Result<MaskAeOutput<B>, InputError> {
        let (latent, codes) = self.ae.encode_train(images, mask)?;
        let softvq = codes.map(|codes| {
            let losses = self.softvq.unwrap_or(SoftVqLosses { entropy_weight: 0.0, repa: None });
            let w = losses.entropy_weight;
            let entropy = (w != 0.0).then(|| SoftVq::entropy_loss(codes.logits.clone()) * w);
            let repa = match (&self.projection, losses.repa) {
                (Some(p), Some(r)) => Some((p.project(latent.clone(), r.align), r.align, r.weight)),
                _ => None,
            };
            SoftVqTrainOutput { codes, entropy, repa }
        });
        let zq = linear3(&self.ae.post_quant_conv, latent.clone());
        let rows = self.ae.decoder.forward(zq, latent.clone());
        let recon = self.ae.to_image(rows.clone());
        let run = |a: &Option<AuxDecoder<B>>| a.as_ref().map(|a| a.forward(latent.clone()));
        Ok(MaskAeOutput { hog: run(&self.hog), dino: run(&self.dino), clip: run(&self.clip), latent, rows, recon, softvq })
    }
}

impl<B: Backend> VisitParams<B> for MaskAe<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.ae.visit_params(prefix, v);
        for (t, a) in [(AuxTarget::Hog, &mut self.hog), (AuxTarget::Dino, &mut self.dino), (AuxTarget::Clip, &mut self.clip)] {
            if let Some(a) = a.as_mut() {
                let n = t.name();
                v.linear(&join(prefix, &format!("post_quant_conv_{n}")), &mut a.post_quant_conv);
                a.decoder.visit_params(&join(prefix, &format!("decoder_{n}")), v);
                v.linear(&join(prefix, &format!("to_pixel_{n}")), &mut a.head);
            }
        }
        if let Some(p) = self.projection.as_mut() {
            p.visit_params(&join(prefix, "projection"), v);
        }
    }
}
