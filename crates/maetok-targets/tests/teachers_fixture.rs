//! DINOv2 / SigLIP teachers against `fixtures/teachers-tiny`: timm's checkpoint filter (FlexiViT
//! patch-embedding resampling 14 → 16, antialiased bicubic position resampling, OpenCLIP prefix
//! handling) reproduced from the patch-14 source files, the ImageNet re-normalisation, and
//! `forward_features` of both narrowed teachers.

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::io::{Exporter, Loader, VisitParams};
use maetok_nn::testing::{assert_close, errors, fixtures_dir, read_tensors, tensor};
use maetok_targets::resample::{resample_patch_embed, resample_pos_embed};
use maetok_targets::timm::{load_vit, load_vit_from};
use maetok_targets::vit::{imagenet_from_pm1, VitConfig, VitInputError};

type B = NdArray<f32>;
type Map = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn dir() -> std::path::PathBuf {
    fixtures_dir().join("teachers-tiny")
}

fn dino_cfg() -> VitConfig {
    VitConfig { img_size: 64, patch_size: 16, dim: 48, depth: 2, heads: 4, mlp_hidden: 192, class_token: true, layer_scale: true, tanh_gelu: false, dynamic_img_size: false }
}

fn siglip_cfg() -> VitConfig {
    VitConfig { img_size: 64, patch_size: 16, dim: 48, depth: 2, heads: 4, mlp_hidden: 179, class_token: false, layer_scale: false, tanh_gelu: false, dynamic_img_size: true }
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
        let got = resample_patch_embed(&src.1, s, [16, 16]);
        let (ea, er) = errors(&got, &want.1);
        println!("{name} patch 14->16: max_abs {ea:.2e} rel {er:.2e}");
        assert!(ea <= 1e-5 || er <= 1e-5);
    }
    // DINOv2 at 256 px: 37x37 -> 16x16 with the cls row kept; SigLIP's 16x16 grid is kept.
    let p = &dino["pos_embed"];
    let got = resample_pos_embed(&p.1, p.0[1], p.0[2], 1, [16, 16]).unwrap();
    let (ea, _) = errors(&got, &io["dino_pos_embed_img256"].1);
    println!("dino pos 37->16: max_abs {ea:.2e}");
    assert!(ea <= 1e-5);
    let p = &sig["visual.trunk.pos_embed"];
    let got = resample_pos_embed(&p.1, p.0[1], p.0[2], 0, [16, 16]).unwrap();
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
    let t = dino.target_features(x.clone()).unwrap();
    assert_eq!(t.dims(), [2, 16, 48]);

    let (mut sig, report) = load_vit::<B>(dir().join("siglip_src_patch14.safetensors"), &siglip_cfg(), &device).unwrap();
    assert_eq!(report.ignored, vec!["attn_pool.latent".to_string()]);
    check_state("siglip", &mut sig, &read_tensors(dir().join("siglip_resampled_img64_p16.safetensors")));
    assert_close("siglip_features", sig.forward_features(xin).unwrap(), &io["siglip_features"], 1e-4, 1e-4);
    assert_eq!(sig.target_features(x).unwrap().dims(), [2, 16, 48]);
    // The fused attention op gives the same features.
    dino.set_fused_attention(true);
    assert_close("dino_features_fused", dino.forward_features(tensor(&io["input_imagenet"], &device)).unwrap(), &io["dino_features"], 1e-4, 1e-4);
}

#[test]
fn image_sizes_are_checked() {
    let device = Default::default();
    let (dino, _) = load_vit::<B>(dir().join("dino_src_patch14.safetensors"), &dino_cfg(), &device).unwrap();
    let x = Tensor::<B, 4>::zeros([1, 3, 48, 48], &device);
    let err = dino.forward_features(x).unwrap_err();
    assert_eq!(err, VitInputError::Size { h: 48, w: 48, expected: 64 });
    assert!(err.to_string().contains("48x48"));
    let err = dino.forward_features(Tensor::zeros([1, 1, 64, 64], &device)).unwrap_err();
    assert!(matches!(err, VitInputError::Channels(_)));
    // SigLIP is dynamic: another multiple of 16 works (position grid resampled), 40 px does not.
    let (sig, _) = load_vit::<B>(dir().join("siglip_src_patch14.safetensors"), &siglip_cfg(), &device).unwrap();
    assert_eq!(sig.target_features(Tensor::zeros([1, 3, 96, 32], &device)).unwrap().dims(), [1, 12, 48]);
    let err = sig.forward_features(Tensor::zeros([1, 3, 40, 64], &device)).unwrap_err();
    assert!(matches!(err, VitInputError::NotMultiple { .. }), "{err}");
}

#[test]
fn bad_checkpoints_name_the_keys() {
    let device = Default::default();
    let src = read_tensors(dir().join("dino_src_patch14.safetensors"));
    let path = dir().join("dino_src_patch14.safetensors");
    // Missing key, extra key, mis-shaped key.
    let mut map = src.clone();
    map.remove("blocks.1.ls2.gamma");
    map.insert("head.weight".into(), (vec![10, 48], vec![0.0; 480]));
    map.insert("blocks.0.norm1.bias".into(), (vec![47], vec![0.0; 47]));
    let err = load_vit_from(Loader::<B>::from_map(map, path.clone(), &device), &dino_cfg(), &device).unwrap_err().to_string();
    println!("{err}");
    for k in ["blocks.1.ls2.gamma", "head.weight", "blocks.0.norm1.bias", "dino_src_patch14.safetensors"] {
        assert!(err.contains(k), "message lacks {k}");
    }
    // A SigLIP checkpoint offered to the DINOv2 shape: the missing cls token / LayerScale are named.
    let err = load_vit::<B>(dir().join("siglip_src_patch14.safetensors"), &dino_cfg(), &device).unwrap_err().to_string();
    assert!(err.contains("cls_token") && err.contains("blocks.0.ls1.gamma") && err.contains("pos_embed"), "{err}");
    // A non-square position grid cannot be resampled: reported as mis-shaped.
    let mut map = src;
    map.insert("pos_embed".into(), (vec![1, 1 + 30, 48], vec![0.0; 31 * 48]));
    let err = load_vit_from(Loader::<B>::from_map(map, path, &device), &dino_cfg(), &device).unwrap_err().to_string();
    assert!(err.contains("pos_embed: file has [1, 31, 48], model expects [1, 17, 48]"), "{err}");
}
