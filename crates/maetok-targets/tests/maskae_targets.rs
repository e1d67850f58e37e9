//! The training targets exactly as `MaskAEModel` computes them at MAETok's real setting (256 px,
//! patch 16), from `fixtures/tokenizer-maskae-tiny`: the HOG target, the DINOv2 and SigLIP
//! teachers' features (narrowed teachers stored under `repa_model.` / `clip_model.`), and the
//! three auxiliary losses over the masked tokens from the recorded predictions.

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::io::Loader;
use maetok_nn::testing::{assert_close, fixtures_dir, read_tensors, tensor};
use maetok_targets::aux_loss::{cosine_feature_loss, hog_loss};
use maetok_targets::{load_vit_from, HogGenerator, TargetFeatures, VitConfig};

mod common;

type B = NdArray<f32>;
type Map = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn dir() -> std::path::PathBuf {
    fixtures_dir().join("tokenizer-maskae-tiny")
}

/// The tensors under `prefix`, prefix stripped.
fn sub(model: &Map, prefix: &str) -> Map {
    model.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
}

#[test]
fn teachers_hog_and_aux_losses_match_maskae() {
    let device = Default::default();
    let io = read_tensors(dir().join("io.safetensors"));
    let model = read_tensors(dir().join("model.safetensors"));
    let x: Tensor<B, 4> = tensor(&io["input"], &device);

    let dino = common::maskae_teacher("vit_large_patch14_dinov2.lvd142m", "repa_model.", VitConfig::dinov2_large());
    let siglip = common::maskae_teacher("vit_so400m_patch14_siglip_gap_224", "clip_model.", VitConfig::siglip_so400m());
    let path = dir().join("model.safetensors");
    let (repa, _) = load_vit_from(Loader::<B>::from_map(sub(&model, "repa_model."), path.clone(), &device), &dino, &device).unwrap();
    let (clip, _) = load_vit_from(Loader::<B>::from_map(sub(&model, "clip_model."), path, &device), &siglip, &device).unwrap();
    assert_close("teacher_dino_feat", repa.target_features(x.clone()).unwrap(), &io["teacher_dino_feat"], 1e-4, 1e-4);
    assert_close("teacher_clip_feat", clip.target_features(x.clone()).unwrap(), &io["teacher_clip_feat"], 1e-4, 1e-4);

    // HOG of the photo: values may flip only where a pixel's phase sits on a bin edge, 9 per
    // such pixel (fixtures/hog/meta.json counts them for this photo).
    let hog = HogGenerator::new().forward(x).unwrap();
    let got = hog.into_data().to_vec::<f32>().unwrap();
    let off = got.iter().zip(&io["hog_target"].1).filter(|(a, b)| (*a - *b).abs() > 1e-5).count();
    let hog_meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("hog/meta.json")).unwrap()).unwrap();
    let allowed = 9 * hog_meta["results"]["photo"]["phase_margin"]["count_margin_below_1e-5"].as_u64().unwrap() as usize;
    println!("hog_target: {off} of {} values off by more than 1e-5 (at most {allowed} may)", got.len());
    assert!(off <= allowed);

    // The losses on the recorded predictions, averaged over the masked tokens.
    let [b, n, _] = <[usize; 3]>::try_from(io["mask"].0.clone()).unwrap();
    let mask: Tensor<B, 2> = tensor::<B, 3>(&io["mask"], &device).reshape([b, n]);
    let t3 = |k: &str| tensor::<B, 3>(&io[k], &device);
    assert_close("loss_hog", hog_loss(t3("aux_hog_pred"), t3("hog_target"), Some(mask.clone())), &io["loss_hog"], 1e-5, 1e-4);
    assert_close(
        "loss_dino",
        cosine_feature_loss(t3("aux_dino_pred"), t3("teacher_dino_feat"), Some(mask.clone())),
        &io["loss_dino"],
        1e-5,
        1e-4,
    );
    assert_close("loss_clip", cosine_feature_loss(t3("aux_clip_pred"), t3("teacher_clip_feat"), Some(mask)), &io["loss_clip"], 1e-5, 1e-4);
    // Without a mask the mean runs over every token (aux_loss_mask=False).
    let all = cosine_feature_loss(t3("aux_dino_pred"), t3("teacher_dino_feat"), None).into_scalar();
    let ones = cosine_feature_loss(t3("aux_dino_pred"), t3("teacher_dino_feat"), Some(Tensor::ones([b, n], &device))).into_scalar();
    assert!((all - ones).abs() < 1e-6 && (-1.0..=1.0).contains(&all) && (all - io["loss_dino"].1[0]).abs() > 1e-4, "{all} {ones}");
}
