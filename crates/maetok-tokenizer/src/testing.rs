//! Reading the golden tokenizer fixtures (`fixtures/tokenizer-*`) at their own sizes.

use std::path::Path;

use crate::config::{ConfigError, ModelArgs, VitSize, SIGLIP_TEACHER};

/// The `ModelArgs` of a fixture folder: its `config.json` with the encoder, decoder and
/// auxiliary-decoder sizes and the teachers' widths its `meta.json` records under
/// `config.create_model_overrides` (the fixture script shrinks the timm presets named by
/// `encoder_model`, `decoder_model`, `aux_dec_model`, `repa_model` and the SigLIP teacher).
pub fn fixture_args(dir: &Path) -> Result<ModelArgs, ConfigError> {
    let args = ModelArgs::from_file(dir.join("config.json"))?;
    let meta_path = dir.join("meta.json");
    let origin = meta_path.display().to_string();
    let text = std::fs::read_to_string(&meta_path).map_err(|source| ConfigError::Io { path: origin.clone(), source })?;
    let meta: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ConfigError::Invalid { path: origin.clone(), msg: e.to_string() })?;
    let overrides = &meta["config"]["create_model_overrides"];
    let size = |model: &str| -> Result<Option<VitSize>, ConfigError> {
        match overrides.get(model) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| ConfigError::Invalid { path: origin.clone(), msg: format!("create_model_overrides.{model}: {e}") }),
        }
    };
    let (enc, dec, aux) = (size(&args.encoder_model)?, size(&args.decoder_model)?, size(&args.aux_dec_model)?);
    let width = |model: &str| overrides.get(model).and_then(|v| v["embed_dim"].as_u64()).map(|w| w as usize);
    let mut args = args;
    args.aux_dino_dim = width(&args.repa_model).or(args.aux_dino_dim);
    args.aux_clip_dim = width(SIGLIP_TEACHER).or(args.aux_clip_dim);
    let args = match aux {
        Some(s) => args.with_aux_decoder_size(s),
        None => args,
    };
    // The SoftVQ fixture names one timm preset for encoder, decoder and teacher and records
    // the shrunk sizes under `config.derived` instead.
    let derived = |part: &str| -> Result<Option<VitSize>, ConfigError> {
        let v = &meta["config"]["derived"][part];
        if v.is_null() {
            return Ok(None);
        }
        let get = |k: &str| {
            v[k].as_u64().map(|n| n as usize).ok_or_else(|| ConfigError::Invalid {
                path: origin.clone(),
                msg: format!("config.derived.{part}.{k} is not a size: {}", v[k]),
            })
        };
        Ok(Some(VitSize { width: get("width")?, depth: get("depth")?, heads: get("heads")? }))
    };
    let (enc, dec) = (derived("encoder")?.or(enc), derived("decoder")?.or(dec));
    let args = match enc {
        Some(s) => args.with_encoder_size(s),
        None => args,
    };
    Ok(match dec {
        Some(s) => args.with_decoder_size(s),
        None => args,
    })
}

/// The mask that the fixture's recorded per-sample orders (`orders` `[B, N]`, stored as floats)
/// give at the recorded ratio (the first `ceil(N·ratio)` entries of each order are masked).
pub fn recorded_mask(orders: &(Vec<usize>, Vec<f32>), ratio: f64) -> Result<crate::TokenMask, crate::MaskError> {
    let n = orders.0[1];
    let rows: Vec<Vec<usize>> = orders.1.chunks(n).map(|r| r.iter().map(|&v| v as usize).collect()).collect();
    crate::TokenMask::from_orders(&rows, n, ratio)
}

/// A published state-dict key list (`fixtures/*.keys.txt`: `name (shape) dtype` lines, `#`
/// comments) as key → shape.
pub fn read_key_list(path: &Path) -> std::collections::BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let key = it.next().unwrap_or_default().to_string();
            let shape = it.next().unwrap_or_default().trim_matches(|c| c == '(' || c == ')');
            (key, shape.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("a dimension")).collect())
        })
        .collect()
}

/// A tiny MAETok config for tests that build and save models (16 px, patch 8, 4 latent tokens of
/// 4 channels, one block of `width` with 2 heads in encoder and decoder).
pub fn tiny_args(width: usize) -> ModelArgs {
    ModelArgs {
        image_size: 16,
        base_image_size: 16,
        enc_patch_size: 8,
        dec_patch_size: 8,
        num_latent_tokens: 4,
        codebook_embed_dim: 4,
        enc_embed_dim: Some(width),
        enc_depth: Some(1),
        enc_num_heads: Some(2),
        dec_embed_dim: Some(width),
        dec_depth: Some(1),
        dec_num_heads: Some(2),
        ..ModelArgs::default()
    }
}
