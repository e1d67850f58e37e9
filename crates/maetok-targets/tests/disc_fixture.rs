//! `DinoDisc` against `fixtures/disc-tiny` (narrowed trunk: width 48, 6 heads, depth 6, so the
//! readouts are after the embedding and blocks 2 and 5): preprocessing (bicubic 64 → 224),
//! trunk readouts, eval-mode logits, and the training-mode forward with its update step
//! (one power iteration per spectral conv, batch statistics, running statistics moved).

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::io::{Exporter, Loader};
use maetok_nn::testing::{assert_close, errors, fixtures_dir, read_tensors, tensor};
use maetok_targets::disc::{load_dino_disc, load_dino_disc_from, DinoDisc, DiscConfig, DiscResize};

type B = NdArray<f32>;

fn dir() -> std::path::PathBuf {
    fixtures_dir().join("disc-tiny")
}

mod common;

fn config() -> DiscConfig {
    common::disc_config()
}

fn load() -> DinoDisc<B> {
    let heads = dir().join("disc_heads.safetensors");
    load_dino_disc::<B>(dir().join("dino_backbone.safetensors"), Some(heads.as_path()), &config(), &Default::default()).unwrap().0
}

#[test]
fn eval_and_train_forward_match_the_reference() {
    let device = Default::default();
    let io = read_tensors(dir().join("io.safetensors"));
    let x: Tensor<B, 4> = tensor(&io["input"], &device);
    let mut disc = load();
    let cfg = config();
    let b = x.dims()[0];
    assert_eq!(cfg.logits_per_image() * b, io["logits_eval"].0.iter().product::<usize>());

    let pre = disc.preprocess(x.clone(), DiscResize::Interpolate);
    let s = cfg.backbone.img_size;
    assert_eq!(pre.dims(), [b, 3, s, s]);
    assert_close("backbone_in_224_mean", pre.clone().mean_dim(3).mean_dim(2).reshape([b, 3]), &io["backbone_in_224_mean"], 1e-5, 1e-5);
    let acts = disc.readouts(pre).unwrap();
    assert_eq!(acts.len(), cfg.used_key_depths().len() + 1);
    for (i, a) in acts.into_iter().enumerate() {
        assert_close(&format!("act{i}"), a, &io[&format!("act{i}")], 1e-5, 1e-5);
    }
    let eval = disc.forward(x.clone(), DiscResize::Interpolate, false).unwrap();
    assert_close("logits_eval", eval, &io["logits_eval"], 1e-4, 1e-4);

    // Training mode: batch statistics and one power iteration, then the recorded buffers.
    let train = disc.forward(x, DiscResize::Interpolate, true).unwrap();
    assert_close("logits_train", train, &io["logits_train"], 1e-4, 1e-4);
    let after = read_tensors(dir().join("disc_heads_after_train_step.safetensors"));
    let mut ex = Exporter::new();
    disc.visit_heads(&mut ex);
    let got = ex.tensors();
    let mut keys: Vec<&String> = after.keys().collect();
    keys.sort();
    for k in keys {
        let (ea, er) = errors(&got[k].1, &after[k].1);
        println!("{k}: max_abs {ea:.2e} rel {er:.2e}");
        assert!(ea <= 1e-5 || er <= 1e-5, "{k}: max_abs {ea:.2e} rel {er:.2e}");
    }
}

#[test]
fn crops_and_area_resizing_of_large_inputs() {
    let device = Default::default();
    let disc = load();
    // An input larger than the trunk's side s: a crop or an area resize to s x s.
    let s = config().backbone.img_size;
    let big = s + s / 7;
    let x = Tensor::<B, 4>::random([1, 3, big, big], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
    let margin = big - s;
    let (top, left) = (margin / 3, 2 * margin / 3);
    let crop = disc.preprocess(x.clone(), DiscResize::Crop { top, left });
    let whole = disc.preprocess(x.clone(), DiscResize::Crop { top: 0, left: 0 });
    assert_eq!(crop.dims(), [1, 3, s, s]);
    let a = crop.slice([0..1, 0..1, 0..1, 0..1]).into_scalar();
    let b = whole.slice([0..1, 0..1, top..top + 1, left..left + 1]).into_scalar();
    assert_eq!(a, b);
    // Area resize of a constant image stays constant.
    let ones = Tensor::<B, 4>::ones([1, 3, big, big], &device);
    let r = disc.preprocess(ones, DiscResize::Interpolate);
    let v = r.clone().into_data().to_vec::<f32>().unwrap();
    let first = v[0];
    assert!(v[..s * s].iter().all(|x| (x - first).abs() < 1e-5));
    // The random choice: small inputs are always interpolated; large ones cropped about half the time.
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let small = s / 2;
    assert!((0..50).all(|_| DiscResize::draw(small, small, s, &mut rng) == DiscResize::Interpolate));
    let crops = (0..1000)
        .filter(|_| matches!(DiscResize::draw(big, big, s, &mut rng), DiscResize::Crop { top, left } if top <= margin && left <= margin))
        .count();
    assert!((430..570).contains(&crops), "{crops} crops of 1000");
}

#[test]
fn bad_discriminator_checkpoints_are_named() {
    let device = Default::default();
    let mut trunk = read_tensors(dir().join("dino_backbone.safetensors"));
    trunk.insert("x_scale".into(), (vec![1, 3, 1, 1], vec![1.0, 1.0, 1.0]));
    let err = load_dino_disc_from::<B>(Loader::from_map(trunk, dir().join("dino_backbone.safetensors"), &device), None, &config(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("x_scale"), "{err}");
    let mut heads = read_tensors(dir().join("disc_heads.safetensors"));
    heads.remove("heads.2.1.fn.0.weight_v");
    let trunk = Loader::from_map(read_tensors(dir().join("dino_backbone.safetensors")), dir().join("trunk"), &device);
    let err = load_dino_disc_from::<B>(trunk, Some(Loader::from_map(heads, dir().join("heads.safetensors"), &device)), &config(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("heads.2.1.fn.0.weight_v") && err.contains("heads.safetensors"), "{err}");
    // A config that cannot be built is refused before any tensor is touched.
    let trunk = Loader::from_map(read_tensors(dir().join("dino_backbone.safetensors")), dir().join("trunk"), &device);
    let bad = DiscConfig { kernel: 8, ..config() };
    let err = load_dino_disc_from::<B>(trunk, None, &bad, &device).unwrap_err().to_string();
    assert!(err.contains("kernel 8"), "{err}");
}
