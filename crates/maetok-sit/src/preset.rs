//! The published SiT sizes on a `[tokens, channels]` latent.

use maetok_generator::LatentTransformerConfig;

use crate::SitError;

/// `SiT-S`, `SiT-B`, `SiT-L`, `SiT-XL` (optionally with `/1`, `/2`, … which mean nothing on
/// sequences): 1000 classes, label dropout 0.1, no qk-norm, velocity head.
pub fn preset(name: &str, tokens: usize, channels: usize) -> Result<LatentTransformerConfig, SitError> {
    let (depth, hidden, heads) = match name.split('/').next().unwrap_or(name) {
        "SiT-XL" => (28, 1152, 16),
        "SiT-L" => (24, 1024, 16),
        "SiT-B" => (12, 768, 12),
        "SiT-S" => (12, 384, 6),
        _ => return Err(SitError::UnknownPreset(name.to_string())),
    };
    let mut cfg = LatentTransformerConfig::new(depth, hidden, heads, tokens, channels);
    cfg.decoder_hidden_size = Some(hidden);
    cfg.qk_norm = Some(false);
    Ok(cfg)
}
