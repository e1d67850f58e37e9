//! DiT `config.json` and the published sizes.

use std::collections::BTreeMap;
use std::path::Path;

use maetok_sit::{SitConfig, SitConfigError};
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}
fn default_classes() -> usize {
    1000
}
fn default_dropout() -> f64 {
    0.1
}
fn default_mlp_ratio() -> f64 {
    4.0
}

/// The DiT constructor arguments (1-D latent-sequence mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DitConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    pub in_channels: usize,
    pub input_size: usize,
    #[serde(default = "default_classes")]
    pub num_classes: usize,
    #[serde(default = "default_dropout")]
    pub class_dropout_prob: f64,
    /// Output `[ε̂ | v]` (2C channels); the reference always uses it.
    #[serde(default = "default_true")]
    pub learn_sigma: bool,
    #[serde(default = "default_true")]
    pub vae_1d: bool,
    #[serde(default)]
    pub patch_size: Option<usize>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl DitConfig {
    /// `DiT-XL`, `DiT-SL`, `DiT-L`, `DiT-B`, `DiT-S` (patch suffixes accepted; patch 1 on sequences).
    pub fn preset(name: &str, tokens: usize, channels: usize) -> Result<Self, SitConfigError> {
        let (depth, hidden, heads) = match name.split('/').next().unwrap_or(name) {
            "DiT-XL" => (28, 1152, 16),
            "DiT-SL" => (16, 1024, 16),
            "DiT-L" => (24, 1024, 16),
            "DiT-B" => (12, 768, 12),
            "DiT-S" => (12, 384, 6),
            _ => return Err(SitConfigError::Invalid(format!("unknown DiT preset '{name}'; choose DiT-S, DiT-B, DiT-L, DiT-SL or DiT-XL"))),
        };
        Ok(Self {
            depth,
            hidden_size: hidden,
            num_heads: heads,
            mlp_ratio: 4.0,
            in_channels: channels,
            input_size: tokens,
            num_classes: 1000,
            class_dropout_prob: 0.1,
            learn_sigma: true,
            vae_1d: true,
            patch_size: Some(1),
            extra: BTreeMap::new(),
        })
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SitConfigError> {
        let p = path.as_ref();
        let text = std::fs::read_to_string(p).map_err(|source| SitConfigError::Io { path: p.display().to_string(), source })?;
        let c: Self = serde_json::from_str(&text).map_err(|e| SitConfigError::Parse { path: p.display().to_string(), msg: e.to_string() })?;
        c.trunk().validate().map_err(|m| SitConfigError::Invalid(format!("{}: {m}", p.display())))?;
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&serde_json::to_value(self).expect("serialisable")).expect("serialisable")
    }

    /// Output channels per token.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 2 * self.in_channels } else { self.in_channels }
    }

    /// The shared SiT/DiT trunk settings.
    pub fn trunk(&self) -> SitConfig {
        SitConfig {
            depth: self.depth,
            hidden_size: self.hidden_size,
            decoder_hidden_size: Some(self.hidden_size),
            num_heads: self.num_heads,
            mlp_ratio: self.mlp_ratio,
            in_channels: self.in_channels,
            input_size: self.input_size,
            num_classes: self.num_classes,
            class_dropout_prob: self.class_dropout_prob,
            qk_norm: false,
            vae_1d: self.vae_1d,
            patch_size: Some(1),
            extra: BTreeMap::new(),
        }
    }
}
