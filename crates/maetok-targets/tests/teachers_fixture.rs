//! DINOv2 / SigLIP teachers against `fixtures/teachers-tiny`: timm's checkpoint filter (FlexiViT
//! patch-embedding resampling 14 → 16, antialiased bicubic position resampling, OpenCLIP prefix
//! handling) reproduced from the patch-14 source files, the ImageNet re-normalisation, and
//! `forward_features` of both narrowed teachers.

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::io::{Exporter, Loader, VisitParams};
use maetok_nn::resample::{resample_patch_embed, resample_pos_embed};
use maetok_nn::testing::{assert_close, errors, fixtures_dir, read_tensors, tensor};
use maetok_targets::timm::{load_vit, load_vit_from};
use maetok_targets::{imagenet_from_pm1, TargetFeatures, VitConfig, VitInputError};

type B = NdArray<f32>;
type Map = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn dir() -> std::path::PathBuf {
    fixtures_dir().join("teachers-tiny")
}

/// A teacher preset narrowed as meta.json records (`config.teachers.<name>`: `shrink`, `target`).
fn teacher_cfg(name: &str, preset: VitConfig) -> VitConfig {
    maetok_targets::testing::teachers_tiny(&dir(), name, preset).unwrap()
}

fn dino_cfg() -> VitConfig {
    teacher_cfg("dino", VitConfig::dinov2_large())
}

fn siglip_cfg() -> VitConfig {
    teacher_cfg("siglip", VitConfig::siglip_so400m())
}

/// Every tensor the model holds after loading equals timm's resampled state dict.
fn check_state(name: &str, model: &mut impl VisitParams<B>, want: &Map) {
    let mut ex = Exporter::new();
    model.visit_params("", &mut ex);
    let got = ex.tensors();
    let mut keys: Vec<&String> = want.keys().collect();
    keys.sort();
    assert_eq!(got.len(), want.len(), "{name}: key count");
    for k in keys {
        let (ws, wv) = &want[k];
        let (gs, gv) = got.get(k).unwrap_or_else(|| panic!("{name}: model lacks {k}"));
        assert_eq!(gs, ws, "{name}: {k} shape");
        let (ea, er) = errors(gv, wv);
        assert!(ea <= 1e-5 || er <= 1e-5, "{name}: {k} max_abs {ea:.2e} rel {er:.2e}");
        if k.contains("pos_embed") || k.contains("patch_embed") {
            println!("{name}: {k} max_abs {ea:.2e} rel {er:.2e}");
        }
    }
}

#[test]
fn resampling_matches_timm() {
    let io = read_tensors(dir().join("io.safetensors"));
    let dino = read_tensors(dir().join("dino_src_patch14.safetensors"));
    let sig = read_tensors(dir().join("siglip_src_patch14.safetensors"));
    for (name, src, want) in [
        ("dino", &dino["patch_embed.proj.weight"], &io["dino_patch_weight_img256"]),
        ("siglip", &sig["visual.trunk.patch_embed.proj.weight"], &io["siglip_patch_weight_img256"]),
    ] {
        let s = [src.0[0], src.0[1], src.0[2], src.0[3]];
        // The target kernel size is the resampled tensor's own.
        let got = resample_patch_embed(&src.1, s, [want.0[2], want.0[3]]);
        let (ea, er) = errors(&got, &want.1);
        println!("{name} patch {}->{}: max_abs {ea:.2e} rel {er:.2e}", s[2], want.0[2]);
        assert!(ea <= 1e-5 || er <= 1e-5);
    }
    // The position grids: DINOv2's with the cls row kept, SigLIP's without prefix; the target
    // grid side follows from the resampled tensor's row count.
    let side = |rows: usize, prefix: usize| ((rows - prefix) as f64).sqrt().round() as usize;
    let p = &dino["pos_embed"];
    let want = &io["dino_pos_embed_img256"];
    let g = side(want.0[1], 1);
    let got = resample_pos_embed(&p.1, p.0[1], p.0[2], 1, [g, g]).unwrap();
    let (ea, _) = errors(&got, &want.1);
    println!("dino pos {}->{g}: max_abs {ea:.2e}", side(p.0[1], 1));
    assert!(ea <= 1e-5);
    let p = &sig["visual.trunk.pos_embed"];
    let g = side(io["siglip_pos_embed_img256"].0[1], 0);
    let got = resample_pos_embed(&p.1, p.0[1], p.0[2], 0, [g, g]).unwrap();
    assert_eq!(got, io["siglip_pos_embed_img256"].1);
}

#[test]
fn teachers_match_timm() {
    let device = Default::default();
    let io = read_tensors(dir().join("io.safetensors"));
    let x: Tensor<B, 4> = tensor(&io["input"], &device);
    assert_close("input_imagenet", imagenet_from_pm1(x.clone()), &io["input_imagenet"], 1e-6, 1e-6);
    let xin: Tensor<B, 4> = tensor(&io["input_imagenet"], &device);

    let (mut dino, report) = load_vit::<B>(dir().join("dino_src_patch14.safetensors"), &dino_cfg(), &device).unwrap();
    assert!(report.ignored.is_empty());
    check_state("dino", &mut dino, &read_tensors(dir().join("dino_resampled_img64_p16.safetensors")));
    assert_close("dino_features", dino.forward_features(xin.clone()).unwrap(), &io["dino_features"], 1e-4, 1e-4);
    let (cfg, b) = (dino_cfg(), x.dims()[0]);
    let t = dino.target_features(x.clone()).unwrap();
    assert_eq!(t.dims(), [b, cfg.grid() * cfg.grid(), cfg.dim]);

    let (mut sig, report) = load_vit::<B>(dir().join("siglip_src_patch14.safetensors"), &siglip_cfg(), &device).unwrap();
    assert_eq!(report.ignored, vec!["attn_pool.latent".to_string()]);
    check_state("siglip", &mut sig, &read_tensors(dir().join("siglip_resampled_img64_p16.safetensors")));
    assert_close("siglip_features", sig.forward_features(xin).unwrap(), &io["siglip_features"], 1e-4, 1e-4);
    assert_eq!(sig.target_features(x).unwrap().dims(), [b, cfg.grid() * cfg.grid(), siglip_cfg().dim]);
    // The fused attention op gives the same features.
    dino.set_fused_attention(true);
    assert_close(
        "dino_features_fused",
        dino.forward_features(tensor(&io["input_imagenet"], &device)).unwrap(),
        &io["dino_features"],
        1e-4,
        1e-4,
    );
}

#[test]
fn image_sizes_are_checked() {
    let device = Default::default();
    let cfg = dino_cfg();
    let (s, p) = (cfg.img_size, cfg.patch_size);
    let (dino, _) = load_vit::<B>(dir().join("dino_src_patch14.safetensors"), &cfg, &device).unwrap();
    let small = s - p;
    let err = dino.forward_features(Tensor::<B, 4>::zeros([1, 3, small, small], &device)).unwrap_err();
    assert_eq!(err, VitInputError::Size { h: small, w: small, expected: s });
    assert!(err.to_string().contains(&format!("{small}x{small}")));
    let err = dino.forward_features(Tensor::zeros([1, 1, s, s], &device)).unwrap_err();
    assert!(matches!(err, VitInputError::Channels(_)));
    // SigLIP is dynamic: other multiples of the patch work (position grid resampled), others do not.
    let scfg = siglip_cfg();
    let p = scfg.patch_size;
    let (sig, _) = load_vit::<B>(dir().join("siglip_src_patch14.safetensors"), &scfg, &device).unwrap();
    assert_eq!(sig.target_features(Tensor::zeros([1, 3, 6 * p, 2 * p], &device)).unwrap().dims(), [1, 12, scfg.dim]);
    let err = sig.forward_features(Tensor::zeros([1, 3, 2 * p + p / 2, s], &device)).unwrap_err();
    assert!(matches!(err, VitInputError::NotMultiple { .. }), "{err}");
}

#[test]
fn bad_checkpoints_name_the_keys() {
    let device = Default::default();
    let src = read_tensors(dir().join("dino_src_patch14.safetensors"));
    let path = dir().join("dino_src_patch14.safetensors");
    // Missing key, extra key, mis-shaped key.
    let mut map = src.clone();
    let cfg = dino_cfg();
    let last = format!("blocks.{}.ls2.gamma", cfg.depth - 1);
    map.remove(&last);
    map.insert("head.weight".into(), (vec![10, cfg.dim], vec![0.0; 10 * cfg.dim]));
    map.insert("blocks.0.norm1.bias".into(), (vec![cfg.dim - 1], vec![0.0; cfg.dim - 1]));
    let err = load_vit_from(Loader::<B>::from_map(map, path.clone(), &device), &cfg, &device).unwrap_err().to_string();
    println!("{err}");
    for k in [last.as_str(), "head.weight", "blocks.0.norm1.bias", "dino_src_patch14.safetensors"] {
        assert!(err.contains(k), "message lacks {k}");
    }
    // A SigLIP checkpoint offered to the DINOv2 shape: the missing cls token / LayerScale are named.
    let err = load_vit::<B>(dir().join("siglip_src_patch14.safetensors"), &dino_cfg(), &device).unwrap_err().to_string();
    assert!(err.contains("cls_token") && err.contains("blocks.0.ls1.gamma") && err.contains("pos_embed"), "{err}");
    // A non-square position grid cannot be resampled: reported as mis-shaped.
    let mut map = src;
    let (g, d) = (cfg.grid(), cfg.dim);
    map.insert("pos_embed".into(), (vec![1, 1 + 30, d], vec![0.0; 31 * d]));
    let err = load_vit_from(Loader::<B>::from_map(map, path, &device), &cfg, &device).unwrap_err().to_string();
    assert!(err.contains(&format!("pos_embed: file has [1, 31, {d}], model expects [1, {}, {d}]", 1 + g * g)), "{err}");
}
