//! SoftVQ-VAE's REPA alignment loss against `fixtures/tokenizer-softvq-tiny` (the teacher and the
//! projection MLP stored in the fixture's checkpoint, `repa_align` and the weight from its
//! config.json, the teacher's size from its meta.json).

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::io::{Loader, VisitParams};
use maetok_nn::testing::{assert_close, fixtures_dir, read_tensors, tensor};
use maetok_targets::{load_vit_from, TargetFeatures, VitConfig};
use maetok_tokenizer::{repa_loss, RepaAlign, RepaProjection};

type B = NdArray<f32>;

#[test]
fn repa_loss_matches_reference() {
    let device = Default::default();
    let dir = fixtures_dir().join("tokenizer-softvq-tiny");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let weights = dir.join("model.safetensors");
    let all = read_tensors(&weights);
    let sub = |prefix: &str| -> HashMap<_, _> {
        all.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
    };
    let t = &meta["config"]["derived"]["teacher"];
    let size = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    let cfg = VitConfig {
        img_size: args.image_size,
        patch_size: size(&t["patch"]),
        dim: size(&t["width"]),
        depth: size(&t["depth"]),
        heads: size(&t["heads"]),
        mlp_hidden: maetok_targets::testing::mlp_hidden(&weights, "repa_model.").unwrap(),
        ..VitConfig::dinov2_large()
    };
    let teacher = load_vit_from(Loader::<B>::from_map(sub("repa_model."), weights.clone(), &device), &cfg, &device).unwrap().0;
    let proj_w = sub("projection.");
    let teacher_dim = proj_w["4.weight"].0[0];
    let mut projection = RepaProjection::<B>::new(args.codebook_embed_dim, args.repa_proj_dim, teacher_dim, &device);
    let mut loader = Loader::<B>::from_map(proj_w, weights.clone(), &device);
    projection.visit_params("", &mut loader);
    loader.finish(&[]).unwrap();

    let io = read_tensors(dir.join("io.safetensors"));
    let x: Tensor<B, 4> = tensor(&io["input"], &device);
    // The teacher's target features (ImageNet-normalised inside, prefix tokens dropped).
    let feats = teacher.target_features(x).unwrap();
    let align = RepaAlign::parse(&args.repa_align).unwrap();
    let projected = projection.project(tensor(&io["z_q"], &device), align);
    let loss = repa_loss(feats, projected, align).unwrap() * args.repa_loss_weight as f32;
    let rel = meta["tolerance"]["losses"]["rel"].as_f64().unwrap() as f32;
    assert_close("repa_loss", loss, &(vec![1], io["repa_loss"].1.clone()), 0.0, rel);
}

#[test]
fn every_alignment_gives_minus_one_for_a_perfect_match_and_repeat_checks_counts() {
    let device = Default::default();
    // An identity-like projection is not needed: align the teacher with the projection itself.
    let proj = RepaProjection::<B>::new(4, 8, 6, &device);
    let z: Tensor<B, 3> = Tensor::random([2, 3, 4], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let p = proj.forward(z.clone());
    let teacher = p.clone().unsqueeze_dim::<4>(2).repeat_dim(2, 2).reshape([2, 6, 6]) * 3.0;
    for align in [RepaAlign::Repeat, RepaAlign::Avg1d] {
        let l = repa_loss(teacher.clone(), proj.project(z.clone(), align), align).unwrap().into_scalar();
        assert!((l + 1.0).abs() < 1e-5, "{align:?}: {l}");
    }
    let odd = Tensor::<B, 3>::zeros([2, 7, 6], &device);
    assert!(repa_loss(odd, proj.project(z, RepaAlign::Repeat), RepaAlign::Repeat).unwrap_err().contains("multiple"));
    assert!(RepaAlign::parse("avg_1d_shuffle").unwrap_err().contains("repa_align"));
}
