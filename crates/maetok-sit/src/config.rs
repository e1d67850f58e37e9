//! SiT `config.json` (the constructor arguments `PyTorchModelHubMixin` records) and the
//! published sizes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors reading or validating a SiT configuration; messages name the file, key or value.
#[derive(Debug, thiserror::Error)]
pub enum SitConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error("unknown SiT preset '{0}'; choose SiT-S, SiT-B, SiT-L or SiT-XL (patch suffixes /1 /2 /4 /8 are accepted and collapse to 1 on latent sequences)")]
    UnknownPreset(String),
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_classes() -> usize {
    1000
}
fn default_dropout() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}

/// The SiT constructor arguments (1-D latent-sequence mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitConfig {
    pub depth: usize,
    pub hidden_size: usize,
    /// Must equal `hidden_size` (the reference's SiT-S sets 768 by mistake and cannot run).
    #[serde(default)]
    pub decoder_hidden_size: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Latent channels `C`.
    pub in_channels: usize,
    /// Latent tokens `L`.
    pub input_size: usize,
    #[serde(default = "default_classes")]
    pub num_classes: usize,
    #[serde(default = "default_dropout")]
    pub class_dropout_prob: f64,
    #[serde(default)]
    pub qk_norm: bool,
    #[serde(default = "default_true")]
    pub vae_1d: bool,
    /// Ignored on latent sequences (always 1).
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Every other key (`path_type`, `fused_attn`, `tags`, …), kept and written back.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl SitConfig {
    /// A published size on a `[tokens, channels]` latent: `SiT-S`, `SiT-B`, `SiT-L`, `SiT-XL`
    /// (optionally with `/1`, `/2`, … which mean nothing on sequences).
    pub fn preset(name: &str, tokens: usize, channels: usize) -> Result<Self, SitConfigError> {
        let base = name.split('/').next().unwrap_or(name);
        let (depth, hidden, heads) = match base {
            "SiT-XL" => (28, 1152, 16),
            "SiT-L" => (24, 1024, 16),
            "SiT-B" => (12, 768, 12),
            "SiT-S" => (12, 384, 6),
            _ => return Err(SitConfigError::UnknownPreset(name.to_string())),
        };
        Ok(Self {
            depth,
            hidden_size: hidden,
            decoder_hidden_size: Some(hidden),
            num_heads: heads,
            mlp_ratio: 4.0,
            in_channels: channels,
            input_size: tokens,
            num_classes: 1000,
            class_dropout_prob: 0.1,
            qk_norm: false,
            vae_1d: true,
            patch_size: Some(1),
            extra: BTreeMap::new(),
        })
    }

    /// Parses `config.json` text; `origin` names it in messages.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, SitConfigError> {
        let c: Self = serde_json::from_str(text).map_err(|e| SitConfigError::Parse { path: origin.to_string(), msg: e.to_string() })?;
        c.validate().map_err(|m| SitConfigError::Invalid(format!("{origin}: {m}")))?;
        Ok(c)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SitConfigError> {
        let p = path.as_ref();
        let text = std::fs::read_to_string(p).map_err(|source| SitConfigError::Io { path: p.display().to_string(), source })?;
        Self::from_json(&text, &p.display().to_string())
    }

    /// Sorted, pretty JSON.
    pub fn to_json(&self) -> String {
        let v = serde_json::to_value(self).expect("serialisable");
        serde_json::to_string_pretty(&v).expect("serialisable")
    }

    /// Checks what the 1-D SiT can run.
    pub fn validate(&self) -> Result<(), String> {
        if !self.vae_1d {
            return Err("vae_1d = false (2-D latent grids) is not supported: MAETok latents are token sequences".into());
        }
        if let Some(d) = self.decoder_hidden_size {
            if d != self.hidden_size {
                return Err(format!("decoder_hidden_size {d} differs from hidden_size {} (the reference's final layer would fail the same way)", self.hidden_size));
            }
        }
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(format!("hidden_size {} is not divisible by num_heads {}", self.hidden_size, self.num_heads));
        }
        if !self.hidden_size.is_multiple_of(2) {
            return Err(format!("hidden_size {} must be even for the sin-cos positions", self.hidden_size));
        }
        if self.depth == 0 || self.in_channels == 0 || self.input_size == 0 || self.num_classes == 0 {
            return Err("depth, in_channels, input_size and num_classes must be positive".into());
        }
        Ok(())
    }
}
