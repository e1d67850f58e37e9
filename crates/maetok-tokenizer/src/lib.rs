//! MAETok tokenizer: ViT encoder with 1-D learnable latent tokens and mixed 2-D RoPE, MoVQ pixel
//! decoder; Hugging Face checkpoint loading and export (see `shared/spec/tokenizer.md`).

pub mod config;
pub mod decoder;
pub mod encoder;
pub mod mask_ae;
pub mod masking;
pub mod model;
pub mod pretrained;
pub mod testing;

pub use config::{AuxConfig, ConfigError, ModelArgs, TokenizerConfig, VitSize};
pub use decoder::DecoderIntermediates;
pub use encoder::EncoderIntermediates;
pub use mask_ae::{AuxDecoder, AuxOutput, AuxTarget, MaskAe, MaskAeOutput};
pub use masking::{MaskError, TokenMask};
pub use model::{InputError, MaeTok};
pub use pretrained::{load_mask_ae, load_pretrained, load_with_args, save_pretrained, PretrainedError};
