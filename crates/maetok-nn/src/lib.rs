//! Backend-generic building blocks shared by MAETok, SiT and DiT.
//!
//! Every module here follows the PyTorch reference (timm ViT as modified by MAETok) exactly where
//! it defines the numerics of the published weights; see `shared/spec/tokenizer.md` §2.
//! Modules expose their parameters to checkpoint import/export through [`io::VisitParams`].

pub mod adaln;
pub mod attention;
pub mod block;
pub mod ema;
pub mod embed;
pub mod fused;
pub mod hub;
pub mod io;
pub mod layer_norm;
pub mod limits;
pub mod mlp;
pub mod movq;
pub mod ops;
pub mod patch;
pub mod pickle_guard;
pub mod resample;
pub mod rope;
pub mod testing;
pub mod vit;

pub use adaln::{modulate, AdaLnBlock, AdaLnBlockConfig, FinalLayer, FinalLayerConfig};
pub use attention::{Attention, AttentionConfig};
pub use block::{Block, BlockConfig};
pub use embed::{sincos_1d, timestep_features, LabelEmbedder, LabelEmbedderConfig, TimestepEmbedder, TimestepEmbedderConfig};
pub use io::{CheckpointError, Exporter, LoadReport, Loader, ParamVisitor, VisitParams};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use mlp::{Mlp, MlpConfig};
pub use movq::{MovqBlock, MovqBlockConfig, MovqNorm, MovqNormConfig};
pub use patch::{patchify, unpatchify, PatchEmbed, PatchEmbedConfig};
pub use rope::{Rope, RopeFull, RopeTable};
pub use vit::{Vit, VitConfig, VitConfigError, VitInputError};
