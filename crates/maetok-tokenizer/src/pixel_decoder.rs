//! The pixel decoder of either tokenizer family: MAETok's MoVQ trunk ([`Decoder`]) or SoftVQ-VAE's
//! plain ViT ([`PlainDecoder`]). Both map `post_quant_conv(z)` `[B, T, D]` to image rows
//! `[B, N, D]`, which `to_pixel` turns into patches; the MoVQ trunk also reads the raw latents.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::io::{ParamVisitor, VisitParams};

use crate::config::{DecoderKind, TokenizerConfig};
use crate::decoder::{Decoder, DecoderIntermediates};
use crate::plain_decoder::{PlainDecoder, PlainDecoderIntermediates};

// One decoder per model: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum PixelDecoder<B: Backend> {
    Movq(Decoder<B>),
    Plain(PlainDecoder<B>),
}

/// A decoder's intermediates, by family.
pub enum PixelDecoderIntermediates<B: Backend> {
    Movq(DecoderIntermediates<B>),
    Plain(PlainDecoderIntermediates<B>),
}

impl<B: Backend> PixelDecoder<B> {
    /// A randomly initialised decoder of the family `cfg.decoder_kind` names.
    pub fn new(cfg: &TokenizerConfig, rng: &mut impl rand::Rng, device: &B::Device) -> Self {
        match cfg.decoder_kind {
            DecoderKind::Movq => Self::Movq(Decoder::new(cfg, cfg.decoder, cfg.dec_cls_token, None, rng, device)),
            DecoderKind::Plain => Self::Plain(PlainDecoder::new(cfg, device)),
        }
    }

    /// `zq` = `post_quant_conv(z)` `[B, T, D]`, `z` the latents `[B, T, C]` → image rows `[B, N, D]`.
    pub fn forward(&self, zq: Tensor<B, 3>, z: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Self::Movq(d) => d.forward(zq, z),
            Self::Plain(d) => d.forward(zq),
        }
    }

    /// [`forward`](Self::forward) with the family's intermediates.
    pub fn forward_intermediates(&self, zq: Tensor<B, 3>, z: Tensor<B, 3>) -> (Tensor<B, 3>, PixelDecoderIntermediates<B>) {
        match self {
            Self::Movq(d) => {
                let (rows, i) = d.forward_intermediates(zq, z);
                (rows, PixelDecoderIntermediates::Movq(i))
            }
            Self::Plain(d) => {
                let (rows, i) = d.forward_intermediates(zq);
                (rows, PixelDecoderIntermediates::Plain(i))
            }
        }
    }

    /// Side of the image-token grid.
    pub fn grid(&self) -> usize {
        match self {
            Self::Movq(d) => d.grid,
            Self::Plain(d) => d.grid,
        }
    }

    /// See [`crate::Tokenizer::set_fused_attention`].
    pub fn set_fused_attention(&mut self, fused: bool) {
        match self {
            Self::Movq(d) => d.blocks.iter_mut().for_each(|b| b.attn.fused = fused),
            Self::Plain(d) => d.blocks.iter_mut().for_each(|b| b.attn.fused = fused),
        }
    }
}

impl<B: Backend> VisitParams<B> for PixelDecoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        match self {
            Self::Movq(d) => d.visit_params(prefix, v),
            Self::Plain(d) => d.visit_params(prefix, v),
        }
    }
}
