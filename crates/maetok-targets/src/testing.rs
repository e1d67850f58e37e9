//! The configurations of the golden fixtures of this crate's models (`teachers-tiny`,
//! `disc-tiny`, the teachers inside `tokenizer-maskae-tiny`), read from each fixture's
//! `meta.json` and weights, so that tests and device checks hold for any fixture set the same
//! scripts make. Errors name the file and the key.

use std::path::Path;

use crate::disc::DiscConfig;
use crate::teacher::VitConfig;

/// A fixture description that lacks what is asked of it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct FixtureError {
    pub path: String,
    pub msg: String,
}

fn meta(dir: &Path) -> Result<serde_json::Value, FixtureError> {
    let path = dir.join("meta.json");
    let err = |msg: String| FixtureError { path: path.display().to_string(), msg };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

fn size(v: &serde_json::Value, what: &str, dir: &Path) -> Result<usize, FixtureError> {
    v.as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| FixtureError { path: dir.join("meta.json").display().to_string(), msg: format!("{what} is not a size: {v}") })
}

/// The MLP width of a timm ViT state dict: `{prefix}blocks.0.mlp.fc1.weight` is `[hidden, dim]`.
pub fn mlp_hidden(file: &Path, prefix: &str) -> Result<usize, FixtureError> {
    let err = |msg: String| FixtureError { path: file.display().to_string(), msg };
    let bytes = std::fs::read(file).map_err(|e| err(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let key = format!("{prefix}blocks.0.mlp.fc1.weight");
    Ok(st.tensor(&key).map_err(|_| err(format!("no tensor {key}")))?.shape()[0])
}

/// A teacher of `teachers-tiny` (`name`: `dino` or `siglip`): `preset` narrowed as meta.json's
/// `config.teachers.<name>` (`shrink`, `target`) says.
pub fn teachers_tiny(dir: &Path, name: &str, preset: VitConfig) -> Result<VitConfig, FixtureError> {
    let m = meta(dir)?;
    let t = &m["config"]["teachers"][name];
    Ok(VitConfig {
        img_size: size(&t["target"]["img_size"], "target.img_size", dir)?,
        patch_size: size(&t["target"]["patch_size"], "target.patch_size", dir)?,
        dim: size(&t["shrink"]["embed_dim"], "shrink.embed_dim", dir)?,
        depth: size(&t["shrink"]["depth"], "shrink.depth", dir)?,
        heads: size(&t["shrink"]["num_heads"], "shrink.num_heads", dir)?,
        mlp_hidden: size(&t["target"]["mlp_hidden"], "target.mlp_hidden", dir)?,
        ..preset
    })
}

/// The narrowed DINO discriminator of `disc-tiny` (`config.backbone`, `config.DinoDisc`; the MLP
/// width from `dino_backbone.safetensors`).
pub fn disc_tiny(dir: &Path) -> Result<DiscConfig, FixtureError> {
    let m = meta(dir)?;
    let (b, d) = (&m["config"]["backbone"], &m["config"]["DinoDisc"]);
    let backbone = VitConfig {
        img_size: size(&b["img_size"], "backbone.img_size", dir)?,
        patch_size: size(&b["patch_size"], "backbone.patch_size", dir)?,
        dim: size(&b["embed_dim"], "backbone.embed_dim", dir)?,
        depth: size(&b["depth"], "backbone.depth", dir)?,
        heads: size(&b["num_heads"], "backbone.num_heads", dir)?,
        mlp_hidden: mlp_hidden(&dir.join("dino_backbone.safetensors"), "")?,
        ..VitConfig::dino_small()
    };
    let key_depths =
        d["key_depths_arg"].as_array().map(|a| a.iter().map(|v| size(v, "key_depths_arg", dir)).collect::<Result<Vec<_>, _>>());
    Ok(DiscConfig {
        backbone,
        key_depths: key_depths.unwrap_or_else(|| Ok(DiscConfig::dino_small().key_depths))?,
        kernel: size(&d["ks"], "DinoDisc.ks", dir)?,
        norm_eps: d["norm_eps"].as_f64().unwrap_or(DiscConfig::dino_small().norm_eps),
    })
}

/// A teacher inside the MaskAE fixture (`repa_model.` DINOv2, `clip_model.` SigLIP) as
/// `create_model` built it (meta.json `config.create_model_calls`; MLP width from the weights).
pub fn maskae_teacher(dir: &Path, timm_name: &str, prefix: &str, preset: VitConfig) -> Result<VitConfig, FixtureError> {
    let m = meta(dir)?;
    let missing =
        || FixtureError { path: dir.join("meta.json").display().to_string(), msg: format!("no create_model call of {timm_name}") };
    let calls = m["config"]["create_model_calls"].as_array().ok_or_else(missing)?;
    let k = &calls.iter().find(|c| c["name"] == timm_name).ok_or_else(missing)?["kwargs"];
    Ok(VitConfig {
        img_size: size(&k["img_size"], "kwargs.img_size", dir)?,
        patch_size: size(&k["patch_size"], "kwargs.patch_size", dir)?,
        dim: size(&k["embed_dim"], "kwargs.embed_dim", dir)?,
        depth: size(&k["depth"], "kwargs.depth", dir)?,
        heads: size(&k["num_heads"], "kwargs.num_heads", dir)?,
        mlp_hidden: mlp_hidden(&dir.join("model.safetensors"), prefix)?,
        ..preset
    })
}

/// Tensors by key: `(shape, values)`.
pub type StateDict = std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>;

/// splitmix64 uniforms in [0, 1) of stream `stream` (the lpips-tiny weight formula).
fn splitmix_uniform(n: usize, stream: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let mut z = i.wrapping_add(stream << 32);
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 * 2f64.powi(-53)
        })
        .collect()
}

/// The VGG16 state dict of `lpips-tiny` (torchvision key names), generated by the formula its
/// `meta.json` gives under `config.vgg_weight_formula` (the real backbone is a 528 MB download):
/// `features.{j}.weight` = `(u − ½)·sqrt(24 / fan_in)` from stream `2j`, bias `(u − ½)·0.1`
/// from stream `2j + 1`; plus one `classifier.` entry, which LPIPS ignores.
pub fn lpips_tiny_vgg(dir: &Path) -> Result<StateDict, FixtureError> {
    let m = meta(dir)?;
    let err = |msg: String| FixtureError { path: dir.join("meta.json").display().to_string(), msg };
    let layers = m["config"]["vgg_weight_formula"]["conv layers"]
        .as_object()
        .ok_or_else(|| err("no config.vgg_weight_formula['conv layers']".into()))?;
    let mut out = std::collections::HashMap::new();
    for (k, l) in layers {
        let j: u64 = k.trim_start_matches("features.").parse().map_err(|_| err(format!("bad layer key {k}")))?;
        let shape: Vec<usize> = l["shape"]
            .as_array()
            .ok_or_else(|| err(format!("{k}: no shape")))?
            .iter()
            .filter_map(|d| d.as_u64())
            .map(|d| d as usize)
            .collect();
        let (cout, cin) = (shape[0], shape[1]);
        let fan_in = (cin * 9) as f64;
        let w = splitmix_uniform(cout * cin * 9, 2 * j).into_iter().map(|u| ((u - 0.5) * (24.0 / fan_in).sqrt()) as f32).collect();
        let b = splitmix_uniform(cout, 2 * j + 1).into_iter().map(|u| ((u - 0.5) * 0.1) as f32).collect();
        out.insert(format!("features.{j}.weight"), (vec![cout, cin, 3, 3], w));
        out.insert(format!("features.{j}.bias"), (vec![cout], b));
    }
    // torchvision's file also holds the classifier, which LPIPS ignores.
    out.insert("classifier.0.weight".into(), (vec![2, 2], vec![0.0; 4]));
    Ok(out)
}
