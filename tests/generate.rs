//! Generation end to end with the tiny fixture SiT and tokenizer (both [16, 8] latents):
//! PNGs, grid and ADM batch written; bad class ids and mismatched latent shapes refused.

use std::path::PathBuf;

use maetok::eval::npz::SampleStream;
use maetok::generate::{generate, Classes, GenerateArgs};
use maetok::sampler::{Guidance, PathType, Sampler, Schedule};

fn fixtures() -> PathBuf {
    maetok::nn::testing::fixtures_dir()
}

/// The tiny tokenizer fixture as a model folder (its config needs the tiny widths spelled out).
fn tokenizer_folder(dir: &std::path::Path) -> PathBuf {
    let src = fixtures().join("tokenizer-ae-tiny");
    let out = dir.join("tok");
    std::fs::create_dir_all(&out).unwrap();
    let args = maetok::tokenizer::testing::fixture_args(&src).unwrap();
    std::fs::write(out.join("config.json"), args.to_json()).unwrap();
    std::fs::copy(src.join("model.safetensors"), out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn generates_images_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer_folder(tmp.path());
    let args = GenerateArgs {
        generator: fixtures().join("sit-tiny"),
        tokenizer: tok,
        out: tmp.path().join("samples"),
        classes: Classes::List { classes: vec![3, 999], per_class: 2 },
        sampler: Sampler::Sde { steps: 4, path: PathType::Linear },
        guidance: Guidance { scale: 1.5, low: 0.0, high: 1.0 },
        batch_size: 3,
        seed: 1,
        latent_stats: None,
        progress: false,
        devices: vec![],
    };
    let s = generate(args.clone(), "ndarray").unwrap();
    assert_eq!(s.images, 4);
    // On two devices (two CPU workers), batch by batch: the same samples.npz, byte for byte
    // (batch b's noise is seeded by (seed, b) whichever device draws it).
    let two = GenerateArgs { out: tmp.path().join("two-devices"), devices: vec![0, 1], batch_size: 1, ..args.clone() };
    let one = GenerateArgs { out: tmp.path().join("one-device"), devices: vec![], batch_size: 1, ..args.clone() };
    generate(two.clone(), "ndarray").unwrap();
    generate(one.clone(), "ndarray").unwrap();
    let bytes = |a: &GenerateArgs| std::fs::read(a.out.join("samples.npz")).unwrap();
    assert_eq!(bytes(&two), bytes(&one), "2 devices write the samples of 1 device");
    for i in 0..4 {
        assert!(args.out.join(format!("{i:06}.png")).is_file());
    }
    let targs = maetok::tokenizer::testing::fixture_args(&fixtures().join("tokenizer-ae-tiny")).unwrap();
    let (size, latent) = (targs.image_size, [targs.num_latent_tokens, targs.codebook_embed_dim]);
    let npz = SampleStream::open(args.out.join("samples.npz")).unwrap();
    assert_eq!((npz.len(), npz.image_shape()), (4, [size, size, 3]));
    // Same seed, ODE mode, twice: identical images.
    let ode = GenerateArgs { sampler: Sampler::Ode { steps: 4, heun: false }, out: tmp.path().join("ode1"), ..args.clone() };
    generate(ode.clone(), "ndarray").unwrap();
    generate(GenerateArgs { out: tmp.path().join("ode2"), ..ode }, "ndarray").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("ode1/000002.png")).unwrap(), std::fs::read(tmp.path().join("ode2/000002.png")).unwrap());

    // DiT: ancestral DDPM (5 respaced cosine steps, guided) and DDIM.
    for (i, sampler) in
        [Sampler::Ddpm { schedule: Schedule::Cosine, steps: 5 }, Sampler::Ddim { schedule: Schedule::Linear, steps: 5, eta: 0.0 }]
            .into_iter()
            .enumerate()
    {
        let out = tmp.path().join(format!("dit{i}"));
        let s = generate(GenerateArgs { generator: fixtures().join("dit-tiny"), sampler, out: out.clone(), ..args.clone() }, "ndarray")
            .unwrap();
        assert_eq!(s.images, 4);
        assert!(out.join("grid.png").is_file());
    }
    let err = generate(GenerateArgs { classes: Classes::List { classes: vec![1000], per_class: 1 }, ..args.clone() }, "ndarray")
        .unwrap_err()
        .to_string();
    assert!(err.contains("class id 1000") && err.contains("1000 classes"), "{err}");
    // A generator for latents with other channels does not fit the tokenizer.
    let mut cfg = maetok::generator::LatentTransformerConfig::from_file(fixtures().join("sit-tiny/config.json")).unwrap();
    cfg.in_channels = latent[1] + 1;
    let other = tmp.path().join("sit4");
    let mut m = cfg.init::<burn::backend::NdArray<f32>>(&Default::default());
    maetok::sit::save_sit(&mut m, &cfg, &other).unwrap();
    let err = generate(GenerateArgs { generator: other, ..args.clone() }, "ndarray").unwrap_err().to_string();
    let (theirs, ours) = (format!("[{}, {}]", latent[0], latent[1] + 1), format!("[{}, {}]", latent[0], latent[1]));
    assert!(err.contains(&theirs) && err.contains(&ours), "{err}");
    // A DiT folder under a flow sampler is refused, naming what the sampler needs.
    let err = format!("{:#}", generate(GenerateArgs { generator: fixtures().join("dit-tiny"), ..args.clone() }, "ndarray").unwrap_err());
    assert!(err.contains("SiT folder") && err.contains("learn_sigma"), "{err}");
    let err = generate(GenerateArgs { tokenizer: PathBuf::from("/nonexistent/tok"), ..args.clone() }, "ndarray").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/tok"), "{err}");
}

/// SiT sampling on SoftVQ-VAE latents: a SiT for the SoftVQ fixture's `[8, 8]` latents and the
/// SoftVQ folder give the images that the library's `sample_latents` + `decode_latents` give.
#[test]
fn samples_on_softvq_latents_match_the_library() {
    type B = burn::backend::NdArray<f32>;
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("tokenizer-softvq-tiny");
    let tok_dir = tmp.path().join("softvq");
    std::fs::create_dir_all(&tok_dir).unwrap();
    let targs = maetok::tokenizer::testing::fixture_args(&src).unwrap();
    std::fs::write(tok_dir.join("config.json"), targs.to_json()).unwrap();
    std::fs::copy(src.join("model.safetensors"), tok_dir.join("model.safetensors")).unwrap();
    let mut cfg = maetok::generator::LatentTransformerConfig::from_file(fixtures().join("sit-tiny/config.json")).unwrap();
    (cfg.input_size, cfg.in_channels) = (targs.num_latent_tokens, targs.codebook_embed_dim);
    let sit_dir = tmp.path().join("sit");
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 4);
    let mut m = cfg.init::<B>(&device);
    maetok::sit::save_sit(&mut m, &cfg, &sit_dir).unwrap();

    let sampler = Sampler::Ode { steps: 3, heun: false };
    let guidance = Guidance { scale: 1.5, low: 0.0, high: 1.0 };
    let args = GenerateArgs {
        generator: sit_dir.clone(),
        tokenizer: tok_dir.clone(),
        out: tmp.path().join("samples"),
        classes: Classes::List { classes: vec![5, 7], per_class: 1 },
        sampler,
        guidance,
        batch_size: 2,
        seed: 3,
        latent_stats: None,
        progress: false,
        devices: vec![],
    };
    assert_eq!(generate(args.clone(), "ndarray").unwrap().images, 2);

    let (sit, _, _) = maetok::sit::load_sit::<B>(&sit_dir, &device).unwrap();
    let (tok, _) = maetok::tokenizer::load_pretrained::<B>(&tok_dir, &device).unwrap();
    assert!(tok.quantizer.is_some());
    let latent = [targs.num_latent_tokens, targs.codebook_embed_dim];
    let z = maetok::generate::sample_latents(&sit, latent, &[5, 7], 0, sampler, guidance, 3, &device).unwrap();
    let imgs = maetok::generate::decode_latents(&tok, &z, 2, (0.0, 1.0), &device).unwrap();
    for (i, img) in imgs.iter().enumerate() {
        let saved = image::open(args.out.join(format!("{i:06}.png"))).unwrap().to_rgb8();
        assert_eq!(saved.as_raw(), img.as_raw(), "image {i}");
    }
}
