//! LPIPS parity (`fixtures/lpips-tiny`): VGG16 weights from the fixture's splitmix formula (the
//! real 59 MB backbone is the user's torchvision file), the published linear layers; features at
//! the five taps, per-layer terms and the distance.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use maetok_nn::io::Loader;
use maetok_nn::testing::{errors, fixtures_dir, read_tensors};
use maetok_targets::load_lpips_from;

type B = NdArray<f32>;

/// The fixture's meta.json.
fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("lpips-tiny/meta.json")).unwrap()).unwrap()
}

fn vgg_state_dict() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    maetok_targets::testing::lpips_tiny_vgg(&fixtures_dir().join("lpips-tiny")).unwrap()
}

#[test]
fn lpips_matches_the_reference() {
    let dir = fixtures_dir().join("lpips-tiny");
    let device = Default::default();
    let vgg = vgg_state_dict();
    // meta.json `vgg_weight_checks["slice{s}.{j}.weight|bias"]`: the first four values and the sum
    // of each generated tensor (f64 values of the f32 weights).
    let checks = meta()["config"]["vgg_weight_checks"].as_object().expect("vgg_weight_checks").clone();
    assert!(!checks.is_empty());
    for (key, check) in checks {
        let (_, rest) = key.split_once('.').unwrap();
        let ours = &vgg[&format!("features.{rest}")].1;
        let first4: Vec<f64> = check["first4"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let ea = ours.iter().zip(&first4).map(|(&a, b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(ea < 1e-7, "{key}: weight formula");
        let sum: f64 = ours.iter().map(|&v| v as f64).sum();
        let want = check["sum"].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-6 * ours.len() as f64, "{key}: sum {sum} vs {want}");
    }
    let vgg = Loader::<B>::from_map(vgg, PathBuf::from("vgg16.pth"), &device);
    let lin = Loader::<B>::from_file(dir.join("lpips_lin_vgg.safetensors"), &device).unwrap();
    let (m, report) = load_lpips_from(vgg, lin, &device).unwrap();
    assert_eq!(report.ignored, vec!["classifier.0.weight".to_string()]);
    let io = read_tensors(dir.join("io.safetensors"));
    let t = |k: &str| Tensor::<B, 4>::from_data(TensorData::new(io[k].1.clone(), io[k].0.clone()), &device);
    for (feat, name) in m.features(t("input")).into_iter().zip(["vgg_relu1_2", "vgg_relu2_2", "vgg_relu3_3", "vgg_relu4_3", "vgg_relu5_3"])
    {
        let (ea, er) = errors(&feat.into_data().to_vec::<f32>().unwrap(), &io[name].1);
        println!("{name}: max_abs {ea:.2e} rel {er:.2e}");
        assert!(ea <= 1e-4 || er <= 1e-4, "{name}");
    }
    let out = m.forward(t("input"), t("target"));
    let (ea, er) = errors(&out.per_layer.into_data().to_vec::<f32>().unwrap(), &io["per_layer"].1);
    println!("per_layer: max_abs {ea:.2e} rel {er:.2e}");
    assert!(er <= 1e-4);
    let (ea, er) = errors(&out.total.into_data().to_vec::<f32>().unwrap(), &io["lpips"].1);
    println!("lpips: max_abs {ea:.2e} rel {er:.2e}");
    assert!(er <= 1e-4);
    // Training mode: dropout before each projection. Unbiased, so each layer term stays near the
    // evaluation value (averaged over many pixels) but is not equal to it.
    let eval = io["per_layer"].1.clone();
    let n = t("input").dims()[0];
    let seeds: Vec<u64> = (0..n as u64).map(|i| 1000 + i).collect();
    let train = m.forward_train(t("input"), t("target"), &seeds).per_layer.into_data().to_vec::<f32>().unwrap();
    assert_ne!(train, eval);
    for (a, b) in train.iter().zip(&eval) {
        assert!((a / b - 1.0).abs() < 0.5, "train-mode term {a} vs eval {b}");
    }
}

#[test]
fn dropout_keeps_half_and_doubles() {
    use maetok_targets::lpips::dropout_half;
    let device = Default::default();
    let seeds: Vec<u64> = (0..100).collect();
    let y = dropout_half(Tensor::<B, 2>::ones([100, 100], &device), &seeds, 0).into_data().to_vec::<f32>().unwrap();
    assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    let kept = y.iter().filter(|&&v| v == 2.0).count();
    assert!((4500..5500).contains(&kept), "{kept} of 10000 kept");
    // A sample's mask depends on its seed and the stream only, not on its batch.
    let alone = dropout_half(Tensor::<B, 2>::ones([1, 100], &device), &[37], 0).into_data().to_vec::<f32>().unwrap();
    assert_eq!(alone, y[3700..3800]);
    let other_stream = dropout_half(Tensor::<B, 2>::ones([1, 100], &device), &[37], 1).into_data().to_vec::<f32>().unwrap();
    assert_ne!(alone, other_stream);
    // Sizes that are not a multiple of 64 bits per sample.
    let odd = dropout_half(Tensor::<B, 3>::ones([2, 3, 5], &device), &[1, 2], 0).into_data().to_vec::<f32>().unwrap();
    assert_eq!(odd.len(), 30);
    assert!(odd.iter().all(|&v| v == 0.0 || v == 2.0));
}

#[test]
fn missing_backbone_keys_are_named() {
    let device = Default::default();
    let mut vgg = vgg_state_dict();
    vgg.remove("features.14.bias");
    let lin = Loader::<B>::from_file(fixtures_dir().join("lpips-tiny/lpips_lin_vgg.safetensors"), &device).unwrap();
    let err = load_lpips_from(Loader::<B>::from_map(vgg, PathBuf::from("my_vgg16.pth"), &device), lin, &device).err().unwrap().to_string();
    assert!(err.contains("my_vgg16.pth") && err.contains("features.14.bias"), "{err}");
}

/// The linear layers as a PyTorch `.pth` (zip + pickle, as `torch.save` writes it; made from the
/// fixture by `tests/assets/make_pth.py` without torch) load through burn-store's reader and give
/// the same distance.
#[test]
fn pytorch_pth_checkpoints_load() {
    let device = Default::default();
    let pth = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/lpips_lin_vgg.pth");
    let lin = Loader::<B>::from_any(&pth, &device).unwrap();
    assert_eq!(lin.keys(), (0..5).map(|k| format!("lin{k}.model.1.weight")).collect::<Vec<_>>());
    let (m, _) = load_lpips_from(Loader::<B>::from_map(vgg_state_dict(), PathBuf::from("vgg16.pth"), &device), lin, &device).unwrap();
    let io = read_tensors(fixtures_dir().join("lpips-tiny/io.safetensors"));
    let t = |k: &str| Tensor::<B, 4>::from_data(TensorData::new(io[k].1.clone(), io[k].0.clone()), &device);
    let (_, er) = errors(&m.forward(t("input"), t("target")).total.into_data().to_vec::<f32>().unwrap(), &io["lpips"].1);
    assert!(er <= 1e-4);
    let bad = std::env::temp_dir().join("maetok_not_a_checkpoint.pth");
    std::fs::write(&bad, b"not a zip").unwrap();
    let err = Loader::<B>::from_any(&bad, &device).err().unwrap().to_string();
    assert!(err.contains("maetok_not_a_checkpoint.pth"), "{err}");
}
