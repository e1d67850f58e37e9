//! The generator's `config.json`: the constructor arguments `PyTorchModelHubMixin` records for
//! the reference's SiT and DiT classes (flat keys; unknown keys are kept and written back).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors reading or validating a generator configuration; messages name the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("{origin}: {msg}")]
    Invalid { origin: String, msg: String },
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

/// The constructor arguments of the 1-D latent-sequence SiT/DiT. Keys that one of the two
/// reference classes does not take (`learn_sigma` for SiT, `qk_norm` and
/// `decoder_hidden_size` for DiT) are optional and written back only when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentTransformerConfig {
    pub depth: usize,
    pub hidden_size: usize,
    /// SiT only; must equal `hidden_size` (the reference's SiT-S sets 768 by mistake and cannot run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// DiT: output `[ε̂ | v]` (2C channels). Absent means false here; the DiT loader applies the
    /// DiT default (true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn_sigma: Option<bool>,
    /// SiT: LayerNorms on q and k over the head dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qk_norm: Option<bool>,
    #[serde(default = "default_true")]
    pub vae_1d: bool,
    /// Ignored on latent sequences (always 1).
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Every other key (`path_type`, `fused_attn`, `tags`, …), kept and written back.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl LatentTransformerConfig {
    /// A trunk of the given size on `[tokens, channels]` latents with 1000 classes.
    pub fn new(depth: usize, hidden_size: usize, num_heads: usize, tokens: usize, channels: usize) -> Self {
        Self {
            depth,
            hidden_size,
            decoder_hidden_size: None,
            num_heads,
            mlp_ratio: 4.0,
            in_channels: channels,
            input_size: tokens,
            num_classes: 1000,
            class_dropout_prob: 0.1,
            learn_sigma: None,
            qk_norm: None,
            vae_1d: true,
            patch_size: Some(1),
            extra: BTreeMap::new(),
        }
    }

    /// Whether the head outputs `[ε̂ | v]`.
    pub fn learns_sigma(&self) -> bool {
        self.learn_sigma.unwrap_or(false)
    }

    /// Output channels per token: `C`, or `2C` with learned variance.
    pub fn out_channels(&self) -> usize {
        if self.learns_sigma() {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    /// Parses `config.json` text; `origin` names it in messages.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let c: Self = serde_json::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_string(), msg: e.to_string() })?;
        c.check(origin)?;
        Ok(c)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let p = path.as_ref();
        let text = maetok_nn::limits::read_text(p).map_err(|source| ConfigError::Io { path: p.display().to_string(), source })?;
        Self::from_json(&text, &p.display().to_string())
    }

    /// Sorted, pretty JSON.
    pub fn to_json(&self) -> String {
        let v = serde_json::to_value(self).expect("serialisable");
        serde_json::to_string_pretty(&v).expect("serialisable")
    }

    /// Checks what the 1-D latent transformer can run; the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check("latent transformer config")
    }

    /// [`LatentTransformerConfig::validate`] with `origin` (a file name) in the message.
    pub fn check(&self, origin: &str) -> Result<(), ConfigError> {
        self.first_problem().map_err(|msg| ConfigError::Invalid { origin: origin.to_string(), msg })
    }

    /// The first inconsistency found, described.
    fn first_problem(&self) -> Result<(), String> {
        use maetok_nn::limits::{self, MAX_DEPTH, MAX_HEADS, MAX_TOKENS, MAX_WIDTH};
        for (key, value, max) in [
            ("depth", self.depth, MAX_DEPTH),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("num_heads", self.num_heads, MAX_HEADS),
            ("in_channels", self.in_channels, MAX_WIDTH),
            ("input_size", self.input_size, MAX_TOKENS),
            ("num_classes", self.num_classes, MAX_TOKENS),
        ] {
            limits::check_at_most(key, value, max)?;
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio > 64.0 {
            return Err(format!("mlp_ratio {} exceeds the limit 64", self.mlp_ratio));
        }
        let mlp = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        let (w, l) = (self.hidden_size as u128, (self.input_size + self.num_classes + 1) as u128);
        limits::check_params("this latent transformer", limits::trunk_params(self.depth, self.hidden_size, mlp) + l * w)?;
        if !self.vae_1d {
            return Err("vae_1d = false (2-D latent grids) is not supported: MAETok latents are token sequences".into());
        }
        if let Some(d) = self.decoder_hidden_size {
            if d != self.hidden_size {
                return Err(format!(
                    "decoder_hidden_size {d} differs from hidden_size {} (the reference's final layer would fail the same way)",
                    self.hidden_size
                ));
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
        if !(self.mlp_ratio > 0.0 && self.mlp_ratio.is_finite()) {
            return Err(format!("mlp_ratio {} must be positive", self.mlp_ratio));
        }
        Ok(())
    }
}
