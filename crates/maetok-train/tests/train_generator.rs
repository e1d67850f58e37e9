//! A tiny SiT (flow objective) and a tiny DiT (diffusion objective) trained on cached latents of the procedural shapes (tiny fixture tokenizer) learns,
//! and a run resumed from a checkpoint continues exactly like an uninterrupted one.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tensor;
use maetok_generator::LatentTransformerConfig;
use maetok_sampler::Schedule;
use maetok_tokenizer::load_with_args;
use maetok_train::data::latent_cache::CacheManifest;
use maetok_train::data::{images_to_tensor, LatentCache, LatentCacheWriter, LatentRecord, ProceduralShapes};
use maetok_train::{GeneratorTrainConfig, GeneratorTrainError, GeneratorTrainer};

type A = Autodiff<NdArray<f32>>;

fn tiny_sit([l, c]: [usize; 2]) -> LatentTransformerConfig {
    let mut c = maetok_sit::preset("SiT-S", l, c).unwrap();
    (c.depth, c.hidden_size, c.decoder_hidden_size, c.num_heads, c.num_classes) = (2, 64, Some(64), 4, 6);
    c
}

#[test]
fn tiny_sit_learns_on_procedural_latents_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = maetok_nn::testing::fixtures_dir().join("tokenizer-ae-tiny");
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let tok = load_with_args::<NdArray<f32>>(&args, "tiny", dir.join("model.safetensors"), &Default::default()).unwrap().0;
    // Cache latents (and mirrored latents) of 96 procedural images at the tokenizer's size.
    let (size, latent) = (tok.config.image_size, [tok.config.latent_tokens, tok.config.latent_dim]);
    let per = latent[0] * latent[1];
    let cache_dir = tmp.path().join("latents");
    let classes = maetok_train::data::procedural::CLASSES.iter().map(|s| s.to_string()).collect();
    let mut w = LatentCacheWriter::create_or_resume(
        &cache_dir,
        CacheManifest::new("tiny".into(), "procedural".into(), size, latent, classes, 96, 32),
    )
    .unwrap();
    let shapes = ProceduralShapes::new(size, 0);
    let batch = 16;
    for start in (0..96).step_by(batch) {
        let (imgs, labels) = shapes.batch(start as u64, batch);
        let x = images_to_tensor::<NdArray<f32>>(&imgs, &Default::default());
        let z: Vec<f32> = tok.encode(Tensor::cat(vec![x.clone(), x.flip([3])], 0)).unwrap().into_data().to_vec().unwrap();
        for (k, label) in labels.into_iter().enumerate() {
            let (zq, zq_flip) = (z[k * per..(k + 1) * per].to_vec(), z[(batch + k) * per..(batch + k + 1) * per].to_vec());
            w.push(LatentRecord { zq, zq_flip, label, index: start + k, path: format!("{label}/{}.png", start + k) }).unwrap();
        }
    }
    w.finish().unwrap();
    let cache = LatentCache::open(&cache_dir).unwrap();

    // Latent statistics for the normalisation, as the trainer expects them.
    let all: Vec<f32> = (0..cache.len()).flat_map(|i| cache.latent(i, false)).collect();
    let mean = all.iter().map(|&v| v as f64).sum::<f64>() / all.len() as f64;
    let std = (all.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    let cfg = GeneratorTrainConfig { batch_size: 32, lr: 2e-3, ema_decay: 0.9, latent_mean: mean, latent_std: std, ..Default::default() };
    let device = Default::default();

    let mut t = GeneratorTrainer::<A>::new(tiny_sit(latent), cfg.clone(), &device).unwrap();
    for _ in 0..80 {
        t.step(&cache).unwrap();
    }
    let first: f32 = t.losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = t.losses[70..].iter().sum::<f32>() / 10.0;
    println!("loss {first:.3} -> {last:.3}");
    assert!(last < 0.75 * first, "the loss must fall clearly: {first} -> {last}");

    // Resume: 3 steps, checkpoint, 2 more; against 5 uninterrupted steps.
    let out = tmp.path().join("run");
    let mut a = GeneratorTrainer::<A>::new(tiny_sit(latent), cfg.clone(), &device).unwrap();
    for _ in 0..3 {
        a.step(&cache).unwrap();
    }
    a.save_checkpoint(&out).unwrap();
    let mut b = GeneratorTrainer::<A>::resume(&out, &device).unwrap().expect("a checkpoint");
    assert_eq!(b.step, 3);
    for _ in 0..2 {
        a.step(&cache).unwrap();
        b.step(&cache).unwrap();
    }
    assert_eq!(a.losses, b.losses, "a resumed run continues exactly");
    let ema_dir = out.join("checkpoints/step-0000003/ema");
    assert!(ema_dir.join("config.json").is_file() && ema_dir.join("model.safetensors").is_file());

    // DiT with the hybrid loss (no clipping, cosine schedule) learns too, and resumes exactly.
    let mut dcfg = maetok_dit::preset("DiT-S", latent[0], latent[1]).unwrap();
    (dcfg.depth, dcfg.hidden_size, dcfg.num_heads, dcfg.num_classes) = (2, 64, 4, 6);
    let dtrain =
        GeneratorTrainConfig { grad_clip: None, objective: GeneratorTrainConfig::diffusion(Schedule::Cosine).objective, ..cfg.clone() };
    // A model whose head does not fit the objective is refused, naming both.
    let err = GeneratorTrainer::<A>::new(tiny_sit(latent), dtrain.clone(), &device).err().unwrap();
    assert!(matches!(err, GeneratorTrainError::ObjectiveMismatch { channels, .. } if channels == latent[1]), "{err}");
    assert!(GeneratorTrainer::<A>::new(dcfg.clone(), cfg.clone(), &device).is_err());
    let mut d = GeneratorTrainer::<A>::new(dcfg.clone(), dtrain.clone(), &device).unwrap();
    for _ in 0..60 {
        d.step(&cache).unwrap();
    }
    let first: f32 = d.losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = d.losses[50..].iter().sum::<f32>() / 10.0;
    println!("DiT loss {first:.3} -> {last:.3}");
    assert!(last < 0.9 * first, "the DiT loss must fall: {first} -> {last}");
    let dout = tmp.path().join("dit");
    d.save_checkpoint(&dout).unwrap();
    let mut r = GeneratorTrainer::<A>::resume(&dout, &device).unwrap().unwrap();
    d.step(&cache).unwrap();
    r.step(&cache).unwrap();
    assert_eq!(d.losses, r.losses);
    assert!(maetok_dit::load_dit::<NdArray<f32>>(dout.join("checkpoints/step-0000060/ema"), &device).is_ok());
}
