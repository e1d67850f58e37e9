//! The Hugging Face `config.json` of a MAETok checkpoint (a flat dump of the reference
//! `ModelArgs`) and its resolution into concrete model dimensions.

use std::path::Path;

use maetok_nn::limits;
use serde::{Deserialize, Serialize};

/// Errors in a tokenizer configuration. Messages name the file, key and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a valid MAETok config.json: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("config {path}: {msg}")]
    Invalid { path: String, msg: String },
}

/// The reference `ModelArgs` fields that define the AEModel architecture (other keys of the
/// file, such as the training-loss settings, are accepted and kept verbatim in `extra`).
/// Defaults are those of the reference dataclass / MAETok-B-128.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ModelArgs {
    pub image_size: usize,
    pub base_image_size: usize,
    pub enc_type: String,
    pub dec_type: String,
    pub encoder_model: String,
    pub decoder_model: String,
    pub enc_patch_size: usize,
    pub dec_patch_size: usize,
    pub num_latent_tokens: usize,
    pub codebook_embed_dim: usize,
    pub use_rope: bool,
    pub rope_mixed: bool,
    pub use_ape: bool,
    pub rope_theta: f64,
    pub dec_cls_token: bool,
    pub enc_token_drop: f64,
    pub enc_token_drop_max: f64,
    pub to_pixel: String,
    pub vq_mean: f64,
    pub vq_std: f64,
    /// MaskAE training: the shallow auxiliary decoders predicting HOG, DINOv2 and SigLIP
    /// features of the masked patches (spec §4.3). Inference never builds them.
    pub aux_hog_dec: bool,
    pub aux_dino_dec: bool,
    pub aux_clip_dec: bool,
    /// timm preset of the auxiliary decoders (a `*_movq2` MoVQ decoder).
    pub aux_dec_model: String,
    /// The auxiliary decoders carry a cls token (the reference default, never overridden).
    pub aux_dec_cls_token: bool,
    /// Average the auxiliary losses over the masked tokens only (else over all tokens).
    pub aux_loss_mask: bool,
    /// The DINOv2 teacher whose features the DINO auxiliary decoder predicts (and SoftVQ-VAE's
    /// REPA alignment uses).
    pub repa_model: String,
    /// SoftVQ-VAE's soft vector quantiser (spec: `fixtures/tokenizer-softvq-tiny/meta.json`):
    /// `num_codebooks` codebooks of `codebook_size` entries, softmax temperature `tau`,
    /// l2-normalised codes and inputs when `codebook_l2_norm`.
    pub codebook_size: usize,
    pub num_codebooks: usize,
    pub tau: f64,
    pub codebook_l2_norm: bool,
    /// The quantiser keeps a `codebook_used` buffer of the last 65536 indices (training only).
    pub codebook_show_usage: bool,
    /// Weight of the quantiser's entropy loss (SoftVQ training).
    pub entropy_loss_ratio: f64,
    /// SoftVQ training: align the latents with the DINOv2 teacher's features (REPA) through a
    /// projection MLP `codebook_embed_dim → repa_proj_dim → repa_proj_dim → teacher width`.
    pub repa: bool,
    /// `global`, `avg_1d` or `repeat`: how latents and teacher tokens are paired.
    pub repa_align: String,
    pub repa_loss_weight: f64,
    pub repa_proj_dim: usize,
    pub repa_patch_size: usize,
    /// Our extension: the quantiser between encoder and decoder, `none` (MAETok's `AEModel`) or
    /// `softvq` (`SoftVQModel`). The reference's `config.json` has no such key (the Python class
    /// decides), so when absent it is read from the weights (`quantize.embedding` present →
    /// `softvq`); [`ModelArgs::to_json`] (the exported `config.json`) leaves it out, keeping
    /// exported configs loadable by Python's `ModelArgs(**cfg)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantizer: Option<String>,
    /// Our extension for custom and tiny models: override the preset's width/depth/heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enc_embed_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enc_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enc_num_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dec_embed_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dec_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dec_num_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_dec_embed_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_dec_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_dec_num_heads: Option<usize>,
    /// Feature width of the DINOv2 teacher (default: the width of the `repa_model` preset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_dino_dim: Option<usize>,
    /// Feature width of the SigLIP teacher (default 1152, SigLIP so400m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_clip_dim: Option<usize>,
    /// Every other key of the file, written back unchanged on export.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for ModelArgs {
    fn default() -> Self {
        Self {
            image_size: 256,
            base_image_size: 256,
            enc_type: "vit".into(),
            dec_type: "vit".into(),
            encoder_model: "vit_base_patch14_dinov2.lvd142m".into(),
            decoder_model: "vit_base_patch14_dinov2_movqv2".into(),
            enc_patch_size: 16,
            dec_patch_size: 16,
            num_latent_tokens: 128,
            codebook_embed_dim: 32,
            use_rope: true,
            rope_mixed: true,
            use_ape: false,
            rope_theta: 10.0,
            dec_cls_token: false,
            enc_token_drop: 0.0,
            enc_token_drop_max: 0.6,
            to_pixel: "linear".into(),
            vq_mean: 0.0,
            vq_std: 1.0,
            aux_hog_dec: false,
            aux_dino_dec: false,
            aux_clip_dec: false,
            aux_dec_model: "vit_tinytiny_patch14_dinov2_movq2".into(),
            aux_dec_cls_token: true,
            aux_loss_mask: true,
            repa_model: "vit_large_patch14_dinov2.lvd142m".into(),
            codebook_size: 16384,
            num_codebooks: 1,
            tau: 0.1,
            codebook_l2_norm: true,
            codebook_show_usage: true,
            entropy_loss_ratio: 0.0,
            repa: false,
            repa_align: "global".into(),
            repa_loss_weight: 0.1,
            repa_proj_dim: 2048,
            repa_patch_size: 16,
            quantizer: None,
            enc_embed_dim: None,
            enc_depth: None,
            enc_num_heads: None,
            dec_embed_dim: None,
            dec_depth: None,
            dec_num_heads: None,
            aux_dec_embed_dim: None,
            aux_dec_depth: None,
            aux_dec_num_heads: None,
            aux_dino_dim: None,
            aux_clip_dim: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// Width, depth and heads of a ViT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VitDims {
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
}

/// Named timm presets (the `vit_<size>_patch14_dinov2*` family used by MAETok), keyed by size.
pub const PRESETS: &[(&str, usize, usize, usize)] = &[
    ("vit_tinytiny", 192, 3, 3),
    ("vit_tiny", 192, 12, 3),
    ("vit_small", 384, 12, 6),
    ("vit_base", 768, 12, 12),
    ("vit_large", 1024, 24, 16),
];

/// The SigLIP teacher of the CLIP auxiliary decoder (hard-coded in the reference).
pub const SIGLIP_TEACHER: &str = "vit_so400m_patch14_siglip_gap_224";

/// Feature widths of the teachers the reference names (`repa_model`, the SigLIP teacher).
const TEACHER_WIDTHS: &[(&str, usize)] =
    &[("vit_small", 384), ("vit_base", 768), ("vit_large", 1024), ("vit_giant", 1536), ("vit_so400m", 1152)];

fn teacher_width(name: &str) -> Option<usize> {
    let arch = name.split('.').next().unwrap_or(name);
    TEACHER_WIDTHS.iter().find(|(p, _)| arch.starts_with(&format!("{p}_"))).map(|&(_, w)| w)
}

fn preset(name: &str) -> Option<VitDims> {
    let arch = name.split('.').next().unwrap_or(name);
    PRESETS.iter().find(|(p, ..)| arch.starts_with(&format!("{p}_"))).map(|&(_, width, depth, heads)| VitDims {
        width,
        depth,
        heads,
        mlp_hidden: 4 * width,
    })
}

fn known_names() -> String {
    PRESETS.iter().map(|(p, ..)| format!("{p}_patch14_dinov2*")).collect::<Vec<_>>().join(", ")
}

/// RoPE flavour of the encoder and decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeKind {
    /// Learnable per-layer, per-head frequencies (the published models).
    Mixed,
    /// Fixed axial frequencies.
    Axial,
}

/// The pixel decoder's family, from the `decoder_model` name (the reference's `'movq' in name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecoderKind {
    /// MoVQ blocks modulated by the latents, RoPE (MAETok: `*_movqv2`, `*_movq2`).
    Movq,
    /// Plain timm blocks with the absolute position embedding (SoftVQ-VAE: `vit_*_dinov2*`).
    Plain,
}

/// SoftVQ-VAE's soft vector quantiser (`SoftVectorQuantizer`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SoftVqConfig {
    /// Codebooks `nc`; the latent sequence is split into `nc` contiguous segments, one each.
    pub codebooks: usize,
    /// Entries `K` per codebook.
    pub size: usize,
    /// Softmax temperature of the code weights.
    pub tau: f64,
    /// l2-normalise the codes and the inputs before the dot product.
    pub l2_norm: bool,
    /// The checkpoint carries the `codebook_used` buffer `[nc, 65536]`.
    pub show_usage: bool,
}

/// Concrete architecture of a tokenizer of the release: the MAETok autoencoder (`AEModel`) or
/// SoftVQ-VAE (`SoftVQModel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    pub image_size: usize,
    pub base_image_size: usize,
    pub enc_patch: usize,
    pub dec_patch: usize,
    /// Number of 1-D latent tokens `T` (128 for MAETok-B-128).
    pub latent_tokens: usize,
    /// Channels per latent token `C` (32 for MAETok-B-128).
    pub latent_dim: usize,
    pub encoder: VitDims,
    /// LayerScale in encoder blocks (DINOv2 presets).
    pub encoder_layer_scale: bool,
    pub decoder: VitDims,
    pub decoder_kind: DecoderKind,
    /// LayerScale in the plain decoder's blocks (DINOv2 presets).
    pub decoder_layer_scale: bool,
    /// The plain decoder adds its absolute position embedding (`use_ape` without RoPE).
    pub decoder_ape: bool,
    /// RoPE of the encoder and the MoVQ decoder; `None` (`use_rope: false`) for APE only.
    pub rope: Option<RopeKind>,
    pub rope_theta: f64,
    pub dec_cls_token: bool,
    /// The encoder carries a `mask_token` (trained with token masking, `enc_token_drop > 0`).
    pub enc_mask_token: bool,
    /// SoftVQ-VAE's quantiser between `quant_conv` and the decoder; `None` for MAETok.
    pub quantizer: Option<SoftVqConfig>,
    pub ln_eps: f64,
    pub vq_mean: f64,
    pub vq_std: f64,
}

impl TokenizerConfig {
    /// Encoder token grid side (`image_size / enc_patch`).
    pub fn enc_grid(&self) -> usize {
        self.image_size / self.enc_patch
    }
    /// Decoder token grid side (`image_size / dec_patch`).
    pub fn dec_grid(&self) -> usize {
        self.image_size / self.dec_patch
    }
}

/// Width, depth and heads of a ViT: what a custom or tiny model changes in a timm preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VitSize {
    #[serde(rename = "embed_dim")]
    pub width: usize,
    pub depth: usize,
    #[serde(rename = "num_heads")]
    pub heads: usize,
}

/// How SoftVQ's REPA pairs latents with teacher tokens (`repa_align`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepaAlign {
    /// Mean teacher token against the projected mean latent.
    Global,
    /// Teacher tokens average-pooled to the latent count, against each projected latent.
    Avg1d,
    /// Each projected latent repeated over its `N/L` teacher tokens.
    Repeat,
}

impl RepaAlign {
    /// Parses the config value; the error names the key and the accepted values.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "global" => Ok(Self::Global),
            "avg_1d" => Ok(Self::Avg1d),
            "repeat" => Ok(Self::Repeat),
            other => Err(format!(
                "repa_align '{other}' is not supported (global, avg_1d or repeat; the reference's avg_1d_shuffle draws an unseeded permutation)"
            )),
        }
    }
}

/// SoftVQ's REPA alignment in training: the projection MLP's sizes, the pairing and the weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RepaConfig {
    pub align: RepaAlign,
    /// `repa_loss_weight`.
    pub weight: f64,
    /// `repa_proj_dim`, the MLP's hidden width.
    pub proj_dim: usize,
    /// The DINOv2 teacher's feature width.
    pub teacher_dim: usize,
}

/// SoftVQ-VAE's training losses besides pixels, LPIPS and GAN (the reference's `emb_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SoftVqLosses {
    /// `entropy_loss_ratio` (0 switches the entropy loss off).
    pub entropy_weight: f64,
    /// REPA (`repa: true`).
    pub repa: Option<RepaConfig>,
}

/// The training-only heads of the tokenizer being trained: MAETok's auxiliary decoders (spec
/// §4.3: one shared architecture, one head each) or SoftVQ's REPA projection and losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuxConfig {
    /// Width, depth and heads of each auxiliary MoVQ decoder.
    pub decoder: VitDims,
    pub cls_token: bool,
    /// Average the losses over the masked tokens only.
    pub loss_mask: bool,
    /// Output width of each switched-on head: HOG (`27·(p/8)²`, 108 at patch 16), DINOv2 and
    /// SigLIP (their teachers' widths).
    pub hog: Option<usize>,
    pub dino: Option<usize>,
    pub clip: Option<usize>,
    /// SoftVQ-VAE's losses (the model has a soft quantiser; it has no auxiliary decoders).
    pub softvq: Option<SoftVqLosses>,
}

impl AuxConfig {
    /// No auxiliary decoder is switched on.
    pub fn is_empty(&self) -> bool {
        self.hog.is_none() && self.dino.is_none() && self.clip.is_none()
    }
}

impl ModelArgs {
    /// Overrides the auxiliary decoders' preset size (`aux_dec_embed_dim`, `aux_dec_depth`,
    /// `aux_dec_num_heads`).
    pub fn with_aux_decoder_size(mut self, size: VitSize) -> Self {
        (self.aux_dec_embed_dim, self.aux_dec_depth, self.aux_dec_num_heads) = (Some(size.width), Some(size.depth), Some(size.heads));
        self
    }

    /// Resolves the training-only heads: the MaskAE auxiliary decoders this config switches on,
    /// or for a SoftVQ-VAE (`quantizer: softvq`; `SoftVQModel` builds no auxiliary decoders,
    /// whatever the `aux_*_dec` keys say) its entropy and REPA losses. `origin` names the file.
    pub fn resolve_aux(&self, origin: &str) -> Result<AuxConfig, ConfigError> {
        let bad = |msg: String| ConfigError::Invalid { path: origin.to_string(), msg };
        self.check_limits().map_err(bad)?;
        if self.quantizer.as_deref() == Some("softvq") {
            let repa = if self.repa {
                let teacher_dim = match self.aux_dino_dim {
                    Some(d) => d,
                    None => teacher_width(&self.repa_model)
                        .ok_or_else(|| bad(format!("unknown repa_model '{}': give its feature width as aux_dino_dim", self.repa_model)))?,
                };
                if self.repa_proj_dim == 0 {
                    return Err(bad("repa_proj_dim must be positive".into()));
                }
                let align = RepaAlign::parse(&self.repa_align).map_err(bad)?;
                Some(RepaConfig { align, weight: self.repa_loss_weight, proj_dim: self.repa_proj_dim, teacher_dim })
            } else {
                None
            };
            let none = VitDims { width: 0, depth: 0, heads: 0, mlp_hidden: 0 };
            return Ok(AuxConfig {
                decoder: none,
                cls_token: false,
                loss_mask: false,
                hog: None,
                dino: None,
                clip: None,
                softvq: Some(SoftVqLosses { entropy_weight: self.entropy_loss_ratio, repa }),
            });
        }
        let mut dec = preset(&self.aux_dec_model)
            .ok_or_else(|| bad(format!("unknown aux_dec_model '{}'; known presets: {}", self.aux_dec_model, known_names())))?;
        if let Some(w) = self.aux_dec_embed_dim {
            dec.width = w;
            dec.mlp_hidden = 4 * w;
        }
        dec.depth = self.aux_dec_depth.unwrap_or(dec.depth);
        dec.heads = self.aux_dec_num_heads.unwrap_or(dec.heads);
        check_dims("auxiliary decoder", "aux_dec_num_heads", dec, true).map_err(bad)?;
        limits::check_params("the three auxiliary decoders", 3 * limits::trunk_params(dec.depth, dec.width, dec.mlp_hidden))
            .map_err(bad)?;
        if !self.use_rope && (self.aux_hog_dec || self.aux_dino_dec || self.aux_clip_dec) {
            return Err(bad("the auxiliary MoVQ decoders (aux_hog_dec, aux_dino_dec, aux_clip_dec) need use_rope=true".into()));
        }
        let p = self.dec_patch_size;
        let hog = if self.aux_hog_dec {
            if !p.is_multiple_of(8) {
                return Err(bad(format!("the HOG auxiliary decoder needs dec_patch_size divisible by the 8-pixel HOG cell, got {p}")));
            }
            Some(27 * (p / 8) * (p / 8))
        } else {
            None
        };
        let dino = match (self.aux_dino_dec, self.aux_dino_dim) {
            (false, _) => None,
            (true, Some(d)) => Some(d),
            (true, None) => Some(
                teacher_width(&self.repa_model)
                    .ok_or_else(|| bad(format!("unknown repa_model '{}': give its feature width as aux_dino_dim", self.repa_model)))?,
            ),
        };
        let clip = self.aux_clip_dec.then(|| self.aux_clip_dim.unwrap_or(1152));
        Ok(AuxConfig { decoder: dec, cls_token: self.aux_dec_cls_token, loss_mask: self.aux_loss_mask, hog, dino, clip, softvq: None })
    }

    /// Overrides the encoder preset's size (`enc_embed_dim`, `enc_depth`, `enc_num_heads`).
    pub fn with_encoder_size(mut self, size: VitSize) -> Self {
        (self.enc_embed_dim, self.enc_depth, self.enc_num_heads) = (Some(size.width), Some(size.depth), Some(size.heads));
        self
    }

    /// Overrides the decoder preset's size (`dec_embed_dim`, `dec_depth`, `dec_num_heads`).
    pub fn with_decoder_size(mut self, size: VitSize) -> Self {
        (self.dec_embed_dim, self.dec_depth, self.dec_num_heads) = (Some(size.width), Some(size.depth), Some(size.heads));
        self
    }

    /// Reads a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let p = path.as_ref().display().to_string();
        let text = limits::read_text(path.as_ref()).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
        Self::from_json(&text, &p)
    }

    /// Parses config JSON text; `origin` names the source in messages.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|source| {
            // serde's flatten hides which key failed: find it by parsing each key alone.
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
                for (key, value) in map {
                    let mut one = serde_json::Map::new();
                    one.insert(key.clone(), value.clone());
                    if let Err(e) = serde_json::from_value::<ModelArgs>(serde_json::Value::Object(one)) {
                        return ConfigError::Invalid {
                            path: origin.to_string(),
                            msg: format!("key '{key}' has invalid value {value}: {e}"),
                        };
                    }
                }
            }
            ConfigError::Parse { path: origin.to_string(), source }
        })
    }

    /// The JSON object as `save_pretrained` writes it (sorted keys, 2-space indent; without our
    /// `quantizer` key, which the weights imply).
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("ModelArgs serialises");
        let sorted: std::collections::BTreeMap<String, serde_json::Value> =
            value.as_object().expect("object").clone().into_iter().filter(|(k, _)| k != "quantizer").collect();
        serde_json::to_string_pretty(&sorted).expect("serialises")
    }

    /// Every size of the file against [`maetok_nn::limits`], before any arithmetic or allocation
    /// uses it (a config can claim `enc_depth: 1000000000`); the message names the key.
    fn check_limits(&self) -> Result<(), String> {
        use limits::{MAX_DEPTH, MAX_HEADS, MAX_IMAGE_SIDE, MAX_TOKENS, MAX_WIDTH};
        let sizes = [
            ("image_size", Some(self.image_size), MAX_IMAGE_SIDE),
            ("base_image_size", Some(self.base_image_size), MAX_IMAGE_SIDE),
            ("enc_patch_size", Some(self.enc_patch_size), MAX_IMAGE_SIDE),
            ("dec_patch_size", Some(self.dec_patch_size), MAX_IMAGE_SIDE),
            ("num_latent_tokens", Some(self.num_latent_tokens), MAX_TOKENS),
            ("codebook_embed_dim", Some(self.codebook_embed_dim), MAX_WIDTH),
            ("codebook_size", Some(self.codebook_size), MAX_TOKENS),
            ("num_codebooks", Some(self.num_codebooks), MAX_TOKENS),
            ("repa_proj_dim", Some(self.repa_proj_dim), MAX_WIDTH),
            ("repa_patch_size", Some(self.repa_patch_size), MAX_IMAGE_SIDE),
            ("enc_embed_dim", self.enc_embed_dim, MAX_WIDTH),
            ("enc_depth", self.enc_depth, MAX_DEPTH),
            ("enc_num_heads", self.enc_num_heads, MAX_HEADS),
            ("dec_embed_dim", self.dec_embed_dim, MAX_WIDTH),
            ("dec_depth", self.dec_depth, MAX_DEPTH),
            ("dec_num_heads", self.dec_num_heads, MAX_HEADS),
            ("aux_dec_embed_dim", self.aux_dec_embed_dim, MAX_WIDTH),
            ("aux_dec_depth", self.aux_dec_depth, MAX_DEPTH),
            ("aux_dec_num_heads", self.aux_dec_num_heads, MAX_HEADS),
            ("aux_dino_dim", self.aux_dino_dim, MAX_WIDTH),
            ("aux_clip_dim", self.aux_clip_dim, MAX_WIDTH),
        ];
        for (key, value, max) in sizes {
            if let Some(v) = value {
                limits::check_at_most(key, v, max)?;
            }
        }
        Ok(())
    }

    /// Resolves presets and overrides into a [`TokenizerConfig`], validating every value.
    /// `origin` names the config file in messages.
    pub fn resolve(&self, origin: &str) -> Result<TokenizerConfig, ConfigError> {
        let bad = |msg: String| ConfigError::Invalid { path: origin.to_string(), msg };
        self.check_limits().map_err(bad)?;
        if self.enc_type != "vit" {
            return Err(bad(format!("enc_type '{}' is not supported (only 'vit')", self.enc_type)));
        }
        if self.dec_type != "vit" {
            return Err(bad(format!("dec_type '{}' is not supported (only 'vit')", self.dec_type)));
        }
        if self.to_pixel != "linear" {
            return Err(bad(format!("to_pixel '{}' is not supported (only 'linear')", self.to_pixel)));
        }
        let mut enc = preset(&self.encoder_model)
            .ok_or_else(|| bad(format!("unknown encoder_model '{}'; known presets: {}", self.encoder_model, known_names())))?;
        let mut dec = preset(&self.decoder_model).ok_or_else(|| {
            bad(format!(
                "decoder_model '{}' matches neither decoder family: a MoVQ decoder ('vit_<size>_patch14_dinov2_movqv2' or '_movq2', MAETok) or a plain ViT ('vit_<size>_patch14_dinov2.lvd142m', SoftVQ-VAE); known sizes: {}",
                self.decoder_model,
                known_names()
            ))
        })?;
        let dec_arch = self.decoder_model.split('.').next().unwrap_or_default();
        let decoder_kind = if dec_arch.contains("movq") {
            if !(dec_arch.ends_with("_movqv2") || dec_arch.ends_with("_movq2")) {
                return Err(bad(format!(
                    "decoder_model '{}' is not a MoVQBlockv2 decoder (expected a '*_movqv2' or '*_movq2' name)",
                    self.decoder_model
                )));
            }
            DecoderKind::Movq
        } else {
            DecoderKind::Plain
        };
        let rope = self.use_rope.then_some(if self.rope_mixed { RopeKind::Mixed } else { RopeKind::Axial });
        match (decoder_kind, rope) {
            (DecoderKind::Movq, None) => {
                return Err(bad(format!(
                    "use_rope=false with the MoVQ decoder_model '{}' is not supported (the published MoVQ decoders use RoPE)",
                    self.decoder_model
                )))
            }
            (DecoderKind::Plain, Some(_)) => {
                return Err(bad(format!(
                    "use_rope=true with the plain decoder_model '{}' is not supported (SoftVQ-VAE's plain decoders use the absolute position embedding, use_ape)",
                    self.decoder_model
                )))
            }
            (DecoderKind::Plain, None) if self.use_ape && !self.dec_cls_token => {
                return Err(bad(
                    "a plain decoder with use_ape=true needs dec_cls_token=true (its position embedding covers [cls | image tokens])".into(),
                ))
            }
            _ => {}
        }
        let quantizer = match self.quantizer.as_deref() {
            None | Some("none") => None,
            Some("softvq") => {
                if self.num_codebooks == 0 || !self.num_latent_tokens.is_multiple_of(self.num_codebooks) {
                    return Err(bad(format!(
                        "num_codebooks = {} does not divide num_latent_tokens = {} (each codebook quantises one contiguous segment of the latent sequence)",
                        self.num_codebooks, self.num_latent_tokens
                    )));
                }
                if self.codebook_size == 0 {
                    return Err(bad("codebook_size must be positive".into()));
                }
                if !(self.tau.is_finite() && self.tau > 0.0) {
                    return Err(bad(format!("tau must be a positive temperature, got {}", self.tau)));
                }
                Some(SoftVqConfig {
                    codebooks: self.num_codebooks,
                    size: self.codebook_size,
                    tau: self.tau,
                    l2_norm: self.codebook_l2_norm,
                    show_usage: self.codebook_show_usage,
                })
            }
            Some(other) => {
                return Err(bad(format!("unknown quantizer '{other}' (known: 'none' for MAETok's AEModel, 'softvq' for SoftVQ-VAE)")))
            }
        };
        if let Some(w) = self.enc_embed_dim {
            enc.width = w;
            enc.mlp_hidden = 4 * w;
        }
        if let Some(d) = self.enc_depth {
            enc.depth = d;
        }
        if let Some(h) = self.enc_num_heads {
            enc.heads = h;
        }
        if let Some(w) = self.dec_embed_dim {
            dec.width = w;
            dec.mlp_hidden = 4 * w;
        }
        if let Some(d) = self.dec_depth {
            dec.depth = d;
        }
        if let Some(h) = self.dec_num_heads {
            dec.heads = h;
        }
        for (name, v, key) in [("encoder", enc, "enc_num_heads"), ("decoder", dec, "dec_num_heads")] {
            check_dims(name, key, v, rope.is_some()).map_err(bad)?;
        }
        for (key, p) in [("enc_patch_size", self.enc_patch_size), ("dec_patch_size", self.dec_patch_size)] {
            if p == 0 || !self.image_size.is_multiple_of(p) {
                return Err(bad(format!("image_size {} is not a multiple of {key} = {p}", self.image_size)));
            }
            if !self.base_image_size.is_multiple_of(p) {
                return Err(bad(format!("base_image_size {} is not a multiple of {key} = {p}", self.base_image_size)));
            }
        }
        for (key, p) in [("enc_patch_size", self.enc_patch_size), ("dec_patch_size", self.dec_patch_size)] {
            let grid = self.image_size / p;
            limits::check_at_most(&format!("the token grid image_size / {key} = {grid}, squared,"), grid * grid, limits::MAX_TOKENS)
                .map_err(bad)?;
        }
        if self.num_latent_tokens == 0 || self.codebook_embed_dim == 0 {
            return Err(bad("num_latent_tokens and codebook_embed_dim must be positive".into()));
        }
        if self.vq_std.is_nan() || self.vq_std <= 0.0 {
            return Err(bad(format!("vq_std must be positive, got {}", self.vq_std)));
        }
        let (ge, gd) = ((self.image_size / self.enc_patch_size) as u128, (self.image_size / self.dec_patch_size) as u128);
        let tokens = self.num_latent_tokens as u128;
        let params = limits::trunk_params(enc.depth, enc.width, enc.mlp_hidden)
            + limits::trunk_params(dec.depth, dec.width, dec.mlp_hidden)
            + (ge * ge + gd * gd + 2 * tokens) * (enc.width + dec.width) as u128
            + quantizer.map_or(0, |q| (q.codebooks * q.size) as u128 * self.codebook_embed_dim as u128);
        limits::check_params("this tokenizer", params).map_err(bad)?;
        let arch = self.encoder_model.split('.').next().unwrap_or_default();
        Ok(TokenizerConfig {
            image_size: self.image_size,
            base_image_size: self.base_image_size,
            enc_patch: self.enc_patch_size,
            dec_patch: self.dec_patch_size,
            latent_tokens: self.num_latent_tokens,
            latent_dim: self.codebook_embed_dim,
            encoder: enc,
            encoder_layer_scale: arch.contains("dinov2"),
            decoder: dec,
            decoder_kind,
            decoder_layer_scale: dec_arch.contains("dinov2"),
            decoder_ape: self.use_ape && !self.use_rope,
            rope,
            rope_theta: self.rope_theta,
            dec_cls_token: self.dec_cls_token,
            enc_mask_token: self.enc_token_drop > 0.0,
            quantizer,
            ln_eps: 1e-6,
            vq_mean: self.vq_mean,
            vq_std: self.vq_std,
        })
    }
}

/// Heads divide the width, the head dim suits 2-D RoPE (when `rope`), depth is positive.
fn check_dims(name: &str, key: &str, v: VitDims, rope: bool) -> Result<(), String> {
    if v.heads == 0 || !v.width.is_multiple_of(v.heads) {
        return Err(format!("{name} width {} is not divisible by {key} = {}", v.width, v.heads));
    }
    if rope && !(v.width / v.heads).is_multiple_of(4) {
        return Err(format!("{name} head dim {} must be a multiple of 4 for 2-D RoPE", v.width / v.heads));
    }
    if v.depth == 0 {
        return Err(format!("{name} depth must be positive"));
    }
    Ok(())
}
