//! Generation end to end with the tiny fixture SiT and tokenizer (both [16, 8] latents):
//! PNGs, grid and ADM batch written; bad class ids and mismatched latent shapes refused.

use std::path::PathBuf;

use maetok::eval::npz::SampleStream;
use maetok::generate::{generate, Classes, GenerateArgs, Mode};
use maetok::sampler::Guidance;
use maetok::sit::PathType;

fn fixtures() -> PathBuf {
    std::env::var("MAETOK_FIXTURES").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

/// The tiny tokenizer fixture as a model folder (its config needs the tiny widths spelled out).
fn tokenizer_folder(dir: &std::path::Path) -> PathBuf {
    let src = fixtures().join("tokenizer-ae-tiny");
    let out = dir.join("tok");
    std::fs::create_dir_all(&out).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    for (k, v) in [("enc_embed_dim", 64), ("enc_depth", 2), ("enc_num_heads", 4), ("dec_embed_dim", 64), ("dec_depth", 2), ("dec_num_heads", 4)] {
        cfg[k] = v.into();
    }
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn generates_images_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer_folder(tmp.path());
    let args = GenerateArgs {
        sit: fixtures().join("sit-tiny"),
        tokenizer: tok,
        out: tmp.path().join("samples"),
        classes: Classes::List { classes: vec![3, 999], per_class: 2 },
        mode: Mode::Sde,
        steps: 4,
        heun: false,
        path: PathType::Linear,
        guidance: Guidance { scale: 1.5, low: 0.0, high: 1.0 },
        batch_size: 3,
        seed: 1,
        latent_stats: None,
        progress: false,
    };
    let s = generate(args.clone(), "ndarray").unwrap();
    assert_eq!(s.images, 4);
    for i in 0..4 {
        assert!(args.out.join(format!("{i:06}.png")).is_file());
    }
    let npz = SampleStream::open(args.out.join("samples.npz")).unwrap();
    assert_eq!((npz.len(), npz.image_shape()), (4, [64, 64, 3]));
    // Same seed, ODE mode, twice: identical images.
    let ode = GenerateArgs { mode: Mode::Ode, out: tmp.path().join("ode1"), ..args.clone() };
    generate(ode.clone(), "ndarray").unwrap();
    generate(GenerateArgs { out: tmp.path().join("ode2"), ..ode }, "ndarray").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("ode1/000002.png")).unwrap(), std::fs::read(tmp.path().join("ode2/000002.png")).unwrap());

    // DiT: ancestral DDPM (5 respaced cosine steps, guided) and DDIM.
    for (i, mode) in [Mode::Ddpm { schedule: maetok::dit::Schedule::Cosine }, Mode::Ddim { schedule: maetok::dit::Schedule::Linear, eta: 0.0 }].into_iter().enumerate() {
        let out = tmp.path().join(format!("dit{i}"));
        let s = generate(GenerateArgs { sit: fixtures().join("dit-tiny"), mode, steps: 5, out: out.clone(), ..args.clone() }, "ndarray").unwrap();
        assert_eq!(s.images, 4);
        assert!(out.join("grid.png").is_file());
    }
    let err = generate(GenerateArgs { classes: Classes::List { classes: vec![1000], per_class: 1 }, ..args.clone() }, "ndarray").unwrap_err().to_string();
    assert!(err.contains("class id 1000") && err.contains("1000 classes"), "{err}");
    // A generator for [16, 4] latents does not fit a [16, 8] tokenizer.
    let mut cfg = maetok::sit::SitConfig::from_file(fixtures().join("sit-tiny/config.json")).unwrap();
    cfg.in_channels = 4;
    let other = tmp.path().join("sit4");
    let mut m = maetok::sit::Sit::<burn::backend::NdArray<f32>>::new(&cfg, &Default::default());
    maetok::sit::save_sit(&mut m, &cfg, &other).unwrap();
    let err = generate(GenerateArgs { sit: other, ..args.clone() }, "ndarray").unwrap_err().to_string();
    assert!(err.contains("[16, 4]") && err.contains("[16, 8]"), "{err}");
    let err = generate(GenerateArgs { tokenizer: PathBuf::from("/nonexistent/tok"), ..args.clone() }, "ndarray").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/tok"), "{err}");
}
