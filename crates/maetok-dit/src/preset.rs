//! The published DiT sizes on a `[tokens, channels]` latent.

use maetok_generator::LatentTransformerConfig;

use crate::DitError;

/// `DiT-XL`, `DiT-SL`, `DiT-L`, `DiT-B`, `DiT-S` (patch suffixes accepted; patch 1 on
/// sequences): 1000 classes, label dropout 0.1, learned variance.
pub fn preset(name: &str, tokens: usize, channels: usize) -> Result<LatentTransformerConfig, DitError> {
    let (depth, hidden, heads) = match name.split('/').next().unwrap_or(name) {
        "DiT-XL" => (28, 1152, 16),
        "DiT-SL" => (16, 1024, 16),
        "DiT-L" => (24, 1024, 16),
        "DiT-B" => (12, 768, 12),
        "DiT-S" => (12, 384, 6),
        _ => return Err(DitError::UnknownPreset(name.to_string())),
    };
    let mut cfg = LatentTransformerConfig::new(depth, hidden, heads, tokens, channels);
    cfg.learn_sigma = Some(true);
    Ok(cfg)
}
