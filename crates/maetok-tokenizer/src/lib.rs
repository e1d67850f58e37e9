//! The release's tokenizers: MAETok (ViT encoder with 1-D learnable latent tokens and mixed 2-D
//! RoPE, MoVQ pixel decoder) and SoftVQ-VAE (the same encoder with APE, a soft vector quantiser,
//! a plain ViT decoder); Hugging Face checkpoint loading and export (see
//! `shared/spec/tokenizer.md` and `fixtures/tokenizer-softvq-tiny/meta.json`).

pub mod config;
pub mod decoder;
pub mod encoder;
pub mod mask_ae;
pub mod masking;
pub mod model;
pub mod pixel_decoder;
pub mod plain_decoder;
pub mod pretrained;
pub mod repa;
pub mod soft_vq;
pub mod testing;

pub use config::{
    AuxConfig, ConfigError, DecoderKind, ModelArgs, RepaAlign, RepaConfig, SoftVqConfig, SoftVqLosses, TokenizerConfig, VitSize,
};
pub use decoder::DecoderIntermediates;
pub use encoder::EncoderIntermediates;
pub use mask_ae::{AuxDecoder, AuxOutput, AuxTarget, MaskAe, MaskAeOutput, SoftVqTrainOutput};
pub use masking::{MaskError, TokenMask};
pub use model::{InputError, Tokenizer};
pub use pixel_decoder::{PixelDecoder, PixelDecoderIntermediates};
pub use plain_decoder::PlainDecoderIntermediates;
pub use pretrained::{load_mask_ae, load_pretrained, load_with_args, save_pretrained, PretrainedError};
pub use repa::{repa_loss, RepaProjection};
pub use soft_vq::{SoftVq, SoftVqOutput};
