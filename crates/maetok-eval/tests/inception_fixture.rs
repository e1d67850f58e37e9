//! FID Inception-v3 parity with pytorch-fid 0.3.0 (`fixtures/metrics/inception*`): the conv
//! weights come from the fixture's hash formula, the BatchNorm tensors from the file; the
//! resized input, every block's channel means and the pool3 features must match.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use common::{fixtures, tensors};
use maetok_eval::inception::{canonical_key, load_inception, load_inception_from, Preprocess};
use maetok_nn::io::{Exporter, Loader};

type B = NdArray<f32>;

/// The fixture's weight formula (meta.json `inception.weights`).
fn formula_weight(p: u32, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fan_in: usize = shape[1..].iter().product();
    let offset = (p.wrapping_add(1)).wrapping_mul(0x9E37_79B9);
    (0..n)
        .map(|j| {
            let mut x = (j as u32).wrapping_add(offset);
            x ^= x >> 16;
            x = x.wrapping_mul(0x7feb_352d);
            x ^= x >> 15;
            x = x.wrapping_mul(0x846c_a68b);
            x ^= x >> 16;
            let u = x as f64 / 4294967296.0;
            ((2.0 * u - 1.0) * (3.0 / fan_in as f64).sqrt()) as f32
        })
        .collect()
}

/// The pytorch-fid state dict the fixture describes (`blocks.*` names), as in-memory tensors.
fn fixture_state_dict() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let keys = std::fs::read_to_string(fixtures().join("metrics/inception_keys.txt")).unwrap();
    let bn = tensors("metrics/inception_bn.safetensors");
    let checks = tensors("metrics/fixture.safetensors");
    let mut map = HashMap::new();
    let mut p = 0u32;
    for line in keys.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let key = cols.next().unwrap().to_string();
        let shape: Vec<usize> = cols
            .next()
            .unwrap()
            .trim_matches(['[', ']'])
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        if key.ends_with("conv.weight") {
            let w = formula_weight(p, &shape);
            let check = &checks[&format!("inception/conv_check/{key}/first8")].1;
            assert_eq!(&w[..8].iter().map(|&v| v as f64).collect::<Vec<_>>(), check, "formula weight #{p} ({key})");
            map.insert(key, (shape, w));
            p += 1;
        } else if key.ends_with("num_batches_tracked") {
            map.insert(key, (vec![], vec![0.0]));
        } else {
            let (s, v) = &bn[&format!("inception/bn/{key}")];
            assert_eq!(s, &shape, "{key}");
            map.insert(key, (shape, v.iter().map(|&x| x as f32).collect()));
        }
    }
    assert_eq!(p, 94, "conv count");
    map
}

fn check(name: &str, ours: &[f32], fixture: &(Vec<usize>, Vec<f64>), atol: f64, rtol: f64) {
    assert_eq!(ours.len(), fixture.1.len(), "{name}: length");
    let mut worst = 0f64;
    for (a, b) in ours.iter().zip(&fixture.1) {
        let excess = (*a as f64 - b).abs() - (atol + rtol * b.abs());
        worst = worst.max(excess);
        assert!(excess <= 0.0, "{name}: {a} vs {b} beyond atol {atol} + rtol {rtol}");
    }
    let max_abs = ours.iter().zip(&fixture.1).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    println!("{name}: max_abs {max_abs:.3e}");
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn pool3_and_blocks_match_pytorch_fid() {
    let device = Default::default();
    let loader = Loader::<B>::from_map(fixture_state_dict(), PathBuf::from("fixture"), &device);
    let (model, report) = load_inception_from(loader, &device).unwrap();
    assert!(!model.has_logits(), "pytorch-fid's module has no fc");
    assert_eq!(report.applied, 94 * 5);
    let fx = tensors("metrics/fixture.safetensors");
    let (shape, imgs) = &fx["inception/images"];
    let x =
        Tensor::<B, 4>::from_data(TensorData::new(imgs.iter().map(|&v| (v * 255.0) as f32).collect::<Vec<_>>(), shape.clone()), &device);

    let input = Preprocess::PytorchFid.apply(x.clone());
    check("resized_rows0to7", &values(input.clone().narrow(2, 0, 8)), &fx["inception/resized_rows0to7"], 1e-6, 1e-5);
    let [n, c, _, _] = input.dims();
    check(
        "resized_channel_mean",
        &values(input.clone().reshape([n, c, 299 * 299]).mean_dim(2)),
        &fx["inception/resized_channel_mean"],
        1e-6,
        1e-5,
    );

    let out = model.forward_blocks(input);
    for (i, b) in out.blocks.iter().enumerate() {
        let [n, c, h, w] = b.dims();
        let means = values(b.clone().reshape([n, c, h * w]).mean_dim(2));
        check(&format!("block{i}_channel_mean"), &means, &fx[&format!("inception/block{i}_channel_mean")], 1e-4, 1e-3);
    }
    let feats = model.features(x);
    check("pool3", &values(feats.pool), &fx["inception/pool3"], 1e-4, 1e-3);
    // sFID's spatial features: 7 channels of the 17x17 Mixed_6d map, per image.
    assert_eq!(feats.spatial.dims(), [n, 7 * 17 * 17]);
    // The spatial features are the first 7 channels of Mixed_6d.branch1x1 in NHWC order.
    let b1 = values(out.mixed_6d_branch1x1.clone());
    let sp = values(feats.spatial);
    for (h, w, ch) in [(0, 0, 0), (3, 5, 6), (16, 16, 2)] {
        assert_eq!(sp[(h * 17 + w) * 7 + ch], b1[(ch * 17 + h) * 17 + w]);
    }
}

#[test]
fn torchvision_names_with_fc_load_from_safetensors_and_give_logits() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut ex = Exporter::new();
    for (k, (s, v)) in fixture_state_dict() {
        if let Some(name) = canonical_key(&k) {
            ex.insert(&name, s, v);
        }
    }
    let fc: Vec<f32> = (0..1008 * 2048).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect();
    ex.insert("fc.weight", vec![1008, 2048], fc.clone());
    ex.insert("fc.bias", vec![1008], vec![1.0; 1008]);
    let path = dir.path().join("pt_inception.safetensors");
    ex.write(&path).unwrap();
    let (model, report) = load_inception::<B>(&path, &device).unwrap();
    assert_eq!(report.ignored, vec!["fc.bias".to_string()]);
    assert!(model.has_logits());
    let x = Tensor::<B, 4>::ones([1, 3, 64, 64], &device) * 128.0;
    let f = model.features(x);
    let pool = values(f.pool);
    let logits = values(f.logits.unwrap());
    let expect: f32 = (0..2048).map(|j| pool[j] * fc[5 * 2048 + j]).sum();
    assert!((logits[5] - expect).abs() <= 1e-4 * expect.abs().max(1.0), "logit 5: {} vs {expect}", logits[5]);
}

#[test]
fn bad_checkpoints_are_named() {
    let device = Default::default();
    let mut map = fixture_state_dict();
    map.remove("blocks.2.6.branch1x1.conv.weight");
    map.insert("blocks.3.1.branch_pool.bn.bias".into(), (vec![7], vec![0.0; 7]));
    map.insert("head.extra".into(), (vec![1], vec![0.0]));
    let loader = Loader::<B>::from_map(map, PathBuf::from("my_inception.pth"), &device);
    let err = load_inception_from(loader, &device).unwrap_err().to_string();
    assert!(err.contains("my_inception.pth"), "{err}");
    assert!(err.contains("Mixed_6d.branch1x1.conv.weight"), "{err}");
    assert!(err.contains("Mixed_7b.branch_pool.bn.bias"), "{err}");
    assert!(err.contains("head.extra"), "{err}");
    let missing = load_inception::<B>("/nonexistent/pt_inception.pth", &device).unwrap_err().to_string();
    assert!(missing.contains("/nonexistent/pt_inception.pth"), "{missing}");
}

#[test]
fn uint8_batches_give_per_image_features_and_fid_of_a_set_with_itself_is_zero() {
    use maetok_eval::ndarray::Array4;
    use maetok_eval::{frechet_distance, FeatureStats};
    let device = Default::default();
    let loader = Loader::<B>::from_map(fixture_state_dict(), PathBuf::from("fixture"), &device);
    let (mut model, _) = load_inception_from(loader, &device).unwrap();
    model.preprocess = Preprocess::Tf1;
    let imgs = Array4::from_shape_fn((3, 24, 20, 3), |(n, h, w, c)| ((n * 71 + h * 13 + w * 5 + c * 40) % 256) as u8);
    let all = model.features_u8(imgs.view(), &device);
    assert_eq!((all.n, all.pool.len(), all.spatial.len()), (3, 3 * 2048, 3 * 2023));
    let one = model.features_u8(imgs.slice(maetok_eval::ndarray::s![1..2, .., .., ..]), &device);
    // The same image alone or in a batch: equal up to the GEMM's summation order (the GEMM picks
    // its blocking by matrix size), i.e. relative to the features' scale.
    let (a, r) = maetok_nn::testing::errors(&one.pool, &all.pool[2048..4096]);
    assert!(r < 1e-5, "batching changes features by {a} ({r} relative)");
    let stats = FeatureStats::from_features(&all.spatial, 3, 2023);
    let fid = frechet_distance(&stats, &stats);
    assert!(fid.abs() < 1e-6 * stats.sigma.trace().max(1.0), "FID(A, A) = {fid}");
}
