//! End-to-end `teacher_features` on the teachers-tiny DINOv2 source checkpoint (patch 14,
//! resampled to patch 16 at 64 px when loading).

use std::path::Path;

use burn::backend::NdArray;
use maetok::teacher_features::{run, TeacherFeaturesArgs};
use maetok_nn::testing::{errors, fixtures_dir, read_tensors};
use maetok_targets::timm::load_vit;
use maetok_targets::{TargetFeatures, VitConfig};
use maetok_train::data::{images_to_tensor, load_rgb};

/// The narrowed DINOv2 of `teachers-tiny`, as its meta.json records it.
fn tiny() -> VitConfig {
    maetok_targets::testing::teachers_tiny(&fixtures_dir().join("teachers-tiny"), "dino", VitConfig::dinov2_large()).unwrap()
}

fn write_png(path: &Path, seed: u8) {
    let s = tiny().img_size as u32;
    image::RgbImage::from_fn(s, s, |x, y| image::Rgb([(x * 3) as u8 ^ seed, (y * 5) as u8, seed.wrapping_mul(7)])).save(path).unwrap();
}

#[test]
fn writes_features_pca_and_resampled_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.png"), tmp.path().join("b.png"));
    write_png(&a, 1);
    write_png(&b, 2);
    let ckpt = fixtures_dir().join("teachers-tiny/dino_src_patch14.safetensors");
    let out = tmp.path().join("out");
    let args = TeacherFeaturesArgs {
        checkpoint: ckpt.clone(),
        config: tiny(),
        inputs: vec![a.clone(), b],
        out: out.clone(),
        batch_size: 1,
        export_weights: Some(tmp.path().join("resampled.safetensors")),
        progress: false,
    };
    let s = run(args, "ndarray").unwrap();
    let cfg = tiny();
    let tokens = cfg.grid() * cfg.grid();
    assert_eq!(s.shape, [2, tokens, cfg.dim]);
    for f in ["features.safetensors", "pca.png", "summary.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(s.pca_explained > 0.0 && s.pca_explained <= 1.0);
    // The exported weights are timm's resampled state dict.
    let want = read_tensors(fixtures_dir().join("teachers-tiny/dino_resampled_img64_p16.safetensors"));
    let got = read_tensors(tmp.path().join("resampled.safetensors"));
    assert_eq!(got.len(), want.len());
    for (k, (shape, v)) in &want {
        assert_eq!(&got[k].0, shape, "{k}");
        assert!(errors(&got[k].1, v).0 < 1e-5, "{k}");
    }
    // The written features are the model's target features of the first image.
    let device = Default::default();
    let (m, _) = load_vit::<NdArray<f32>>(&ckpt, &tiny(), &device).unwrap();
    let direct = m.target_features(images_to_tensor::<NdArray<f32>>(&[load_rgb(&a).unwrap()], &device)).unwrap();
    let feats = read_tensors(out.join("features.safetensors"));
    let direct = direct.into_data().to_vec::<f32>().unwrap();
    assert!(errors(&feats["features"].1[..tokens * cfg.dim], &direct).0 < 1e-6);
}

#[test]
fn reports_bad_images_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let args = |ckpt: std::path::PathBuf, inputs| TeacherFeaturesArgs {
        checkpoint: ckpt,
        config: tiny(),
        inputs,
        out: tmp.path().join("out"),
        batch_size: 2,
        export_weights: None,
        progress: false,
    };
    let ckpt = fixtures_dir().join("teachers-tiny/dino_src_patch14.safetensors");
    let err = run(args(ckpt, vec![bad.clone()]), "ndarray").unwrap_err();
    assert!(format!("{err:#}").contains("bad.png"), "{err:#}");
    let good = tmp.path().join("a.png");
    write_png(&good, 3);
    let err = run(args(fixtures_dir().join("teachers-tiny/siglip_src_patch14.safetensors"), vec![good]), "ndarray").unwrap_err();
    assert!(format!("{err:#}").contains("cls_token"), "{err:#}");
}
