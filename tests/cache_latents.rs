//! Latent caching round trip with the tiny fixture tokenizer: the cached latents equal what the
//! tokenizer gives for the same crops (and their mirror images), labels and paths follow the
//! ImageFolder rules, a corrupt image is reported and skipped, a rerun resumes, and the
//! reference `.npz` export reads back.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok::cache_latents::{cache_with_model, CacheArgs, Dataset};
use maetok::eval::npz::read_f64_array;
use maetok::tokenizer::{load_with_args, Tokenizer};
use maetok::train::data::{images_to_tensor, load_rgb, preprocess_center_crop, LatentCache, Layout, ProceduralShapes};

type B = NdArray<f32>;

fn fixtures() -> PathBuf {
    maetok::nn::testing::fixtures_dir()
}

fn tiny_tokenizer() -> Tokenizer<B> {
    let dir = fixtures().join("tokenizer-ae-tiny");
    let args = maetok::tokenizer::testing::fixture_args(&dir).unwrap();
    load_with_args::<B>(&args, "tiny", dir.join("model.safetensors"), &Default::default()).unwrap().0
}

fn encode(model: &Tokenizer<B>, path: &Path, flip: bool) -> Vec<f32> {
    let img = preprocess_center_crop(&load_rgb(path).unwrap(), model.config.image_size);
    let mut x = images_to_tensor::<B>(&[img], &Default::default());
    if flip {
        x = x.flip([3]);
    }
    let z: Tensor<B, 3> = model.encode(x).unwrap();
    z.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn cache_round_trip_with_a_corrupt_image_resume_and_npz_export() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let shapes = ProceduralShapes::new(80, 3);
    // Class folders in reverse creation order; "zebra" has a nested folder (tiny-imagenet style).
    for (rel, k) in [
        ("zebra/b.png", 0u64),
        ("zebra/images/a.png", 1),
        ("apple/2.png", 2),
        ("apple/1.png", 3),
        ("apple/notes.txt", 99),
        ("zebra/c.png", 4),
    ] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        if k == 99 {
            std::fs::write(&p, "not an image").unwrap();
        } else {
            shapes.get(k).0.save(&p).unwrap();
        }
    }
    std::fs::write(root.join("apple/3.png"), b"\x89PNG broken").unwrap();
    let model = tiny_tokenizer();
    let data = Dataset::folder(&root, Layout::ImageFolder).unwrap();
    assert_eq!(data.classes(), vec!["apple", "zebra"]);
    let out = tmp.path().join("cache");
    let args = CacheArgs { out: out.clone(), batch_size: 2, shard_size: 2, export_npz: Some(tmp.path().join("npz")), progress: false };
    let s = cache_with_model(&model, "tiny", &data, &args, &Default::default()).unwrap();
    assert_eq!((s.cached_now, s.total_cached, s.complete), (5, 5, true));
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.failed[0].path, "apple/3.png");
    assert_eq!(s.exported_npz, Some(5));

    let cache = LatentCache::open(&out).unwrap();
    assert_eq!(cache.len(), 5);
    let latent = [model.config.latent_tokens, model.config.latent_dim];
    assert_eq!(cache.latent_shape(), latent);
    // ImageFolder order: apple/{1,2,3}.png then zebra/{b,c}.png then zebra/images/a.png.
    let expected = [
        ("apple/1.png", 0, "apple/1.png"),
        ("apple/2.png", 0, "apple/2.png"),
        ("zebra/b.png", 1, "zebra/b.png"),
        ("zebra/c.png", 1, "zebra/c.png"),
        ("zebra/images/a.png", 1, "zebra/a.png"),
    ];
    for (i, (file, label, rel)) in expected.iter().enumerate() {
        let r = cache.get(i);
        assert_eq!((r.label, r.path.as_str()), (*label, *rel), "record {i}");
        let (zq, zf) = (encode(&model, &root.join(file), false), encode(&model, &root.join(file), true));
        let err = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(err(&r.zq, &zq) < 1e-5 && err(&r.zq_flip, &zf) < 1e-5, "record {i} latents differ");
        assert!(err(&r.zq, &r.zq_flip) > 1e-3, "the mirror image must give another latent");
        assert_eq!(cache.latent(i, true), r.zq_flip);
    }
    // The reference layout: <class>/<file>.npz with zq and zq_flip.
    let npz = tmp.path().join("npz/zebra/a.png.npz");
    let zq = read_f64_array(&npz, "zq").unwrap().unwrap();
    assert_eq!(zq.shape(), &latent);
    assert_eq!(zq.iter().map(|&v| v as f32).collect::<Vec<_>>(), cache.get(4).zq);

    // On two devices (two CPU workers): the same records, failures and order as on one.
    let out2 = tmp.path().join("cache-2-devices");
    let args2 = CacheArgs { out: out2.clone(), export_npz: None, ..args.clone() };
    let d = Default::default();
    let s2 = maetok::cache_latents::cache_with_models(vec![(model.clone(), d), (model.clone(), d)], "tiny", &data, &args2).unwrap();
    assert_eq!((s2.total_cached, s2.failed.len()), (5, 1));
    let two = LatentCache::open(&out2).unwrap();
    for i in 0..5 {
        let (a, b) = (cache.get(i), two.get(i));
        assert_eq!((a.zq, a.zq_flip, a.label, a.path), (b.zq, b.zq_flip, b.label, b.path), "record {i} on 2 devices");
    }

    // A rerun finds everything cached.
    let again = cache_with_model(&model, "tiny", &data, &args, &Default::default()).unwrap();
    assert_eq!((again.cached_now, again.already_cached), (0, 5));
    // Another tokenizer name is refused, naming the field.
    let err = cache_with_model(&model, "other", &data, &args, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("tokenizer") && err.contains("manifest.json"), "{err}");
}

/// A SoftVQ-VAE caches its quantised latents `z_q` (what its `encode` gives) like MAETok's, and
/// the chain goes on: a SiT trains on that cache (the tokenizer's latent normalisation) and
/// samples decode to images through the SoftVQ folder, with the ADM batch for evaluation.
#[test]
fn softvq_tokenizer_caches_its_quantised_latents() {
    let dir = fixtures().join("tokenizer-softvq-tiny");
    let args = maetok::tokenizer::testing::fixture_args(&dir).unwrap();
    let model = load_with_args::<B>(&args, "softvq", dir.join("model.safetensors"), &Default::default()).unwrap().0;
    assert!(model.quantizer.is_some());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let shapes = ProceduralShapes::new(model.config.image_size, 5);
    for (rel, k) in [("a/0.png", 0u64), ("a/1.png", 1), ("b/2.png", 2)] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        shapes.get(k).0.save(&p).unwrap();
    }
    let data = Dataset::folder(&root, Layout::ImageFolder).unwrap();
    let out = tmp.path().join("cache");
    let cargs = CacheArgs { out: out.clone(), batch_size: 2, shard_size: 2, export_npz: None, progress: false };
    let s = cache_with_model(&model, "softvq", &data, &cargs, &Default::default()).unwrap();
    assert_eq!(s.total_cached, 3);
    let cache = LatentCache::open(&out).unwrap();
    assert_eq!(cache.latent_shape(), [model.config.latent_tokens, model.config.latent_dim]);
    for (i, file) in ["a/0.png", "a/1.png", "b/2.png"].iter().enumerate() {
        let (zq, zf) = (encode(&model, &root.join(file), false), encode(&model, &root.join(file), true));
        let err = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let r = cache.get(i);
        assert!(err(&r.zq, &zq) < 1e-5 && err(&r.zq_flip, &zf) < 1e-5, "record {i} latents differ");
    }

    // Train a tiny SiT on the cache for a few steps and sample through the SoftVQ folder.
    type A = burn::backend::Autodiff<B>;
    let latent = cache.latent_shape();
    let mut sit = maetok::sit::preset("SiT-S", latent[0], latent[1]).unwrap();
    (sit.depth, sit.hidden_size, sit.decoder_hidden_size, sit.num_heads, sit.num_classes) = (1, 32, Some(32), 2, 2);
    let cfg = maetok::train::GeneratorTrainConfig {
        batch_size: 2,
        lr: 1e-3,
        latent_mean: model.config.vq_mean,
        latent_std: model.config.vq_std,
        ..Default::default()
    };
    let device = Default::default();
    let mut t = maetok::train::GeneratorTrainer::<A>::new(sit, cfg, &device).unwrap();
    for _ in 0..3 {
        assert!(t.step(&cache).unwrap().is_finite());
    }
    let run = tmp.path().join("sit");
    let ck = t.save_checkpoint(&run).unwrap();
    let tok_dir = tmp.path().join("softvq");
    std::fs::create_dir_all(&tok_dir).unwrap();
    std::fs::write(tok_dir.join("config.json"), args.to_json()).unwrap();
    std::fs::copy(dir.join("model.safetensors"), tok_dir.join("model.safetensors")).unwrap();
    let out = tmp.path().join("samples");
    let g = maetok::generate::generate(
        maetok::generate::GenerateArgs {
            generator: ck.join("ema"),
            tokenizer: tok_dir,
            out: out.clone(),
            classes: maetok::generate::Classes::List { classes: vec![0, 1], per_class: 1 },
            sampler: maetok::sampler::Sampler::Ode { steps: 2, heun: false },
            guidance: maetok::sampler::Guidance { scale: 1.0, low: 0.0, high: 1.0 },
            batch_size: 2,
            seed: 0,
            latent_stats: None,
            progress: false,
            devices: vec![],
        },
        "ndarray",
    )
    .unwrap();
    assert_eq!(g.images, 2);
    let npz = maetok::eval::npz::SampleStream::open(out.join("samples.npz")).unwrap();
    assert_eq!((npz.len(), npz.image_shape()), (2, [model.config.image_size, model.config.image_size, 3]));

    // The trainer CLI's run on two CPU peers (`--devices ndarray:0,ndarray:1`): the leader writes
    // the checkpoints, and a second call resumes on two peers.
    let flags = maetok::parallel_cli::ParallelFlags {
        devices: vec!["ndarray:0".into(), "ndarray:1".into()],
        num_nodes: 1,
        node_rank: 0,
        coordinator: None,
        node_host: None,
        data_port: None,
        join_timeout: 30,
    };
    let layout = flags.layout(None).unwrap();
    assert_eq!((layout.backend.as_str(), layout.world.size()), ("ndarray", 2));
    let mut sit2 = maetok::sit::preset("SiT-S", latent[0], latent[1]).unwrap();
    (sit2.depth, sit2.hidden_size, sit2.decoder_hidden_size, sit2.num_heads, sit2.num_classes) = (1, 32, Some(32), 2, 2);
    let targs = |steps| maetok::train_generator::TrainGeneratorArgs {
        cache: out_cache(&tmp),
        out: tmp.path().join("sit-2peers"),
        model: sit2.clone(),
        train: maetok::train::GeneratorTrainConfig { batch_size: 2, lr: 1e-3, ..Default::default() },
        steps,
        checkpoint_every: 2,
        sample_every: 0,
        tokenizer: None,
        normalisation: maetok::train_generator::Normalisation::TokenizerConfig,
        progress: false,
        devices: layout.indices.clone(),
        world: layout.world.clone(),
    };
    let s = maetok::train_generator::train_generator(targs(2), "ndarray").unwrap();
    assert_eq!((s.resumed_from_step, s.steps), (0, 2));
    assert!(s.checkpoint.ends_with("step-0000002"), "{}", s.checkpoint);
    let s = maetok::train_generator::train_generator(targs(3), "ndarray").unwrap();
    assert_eq!((s.resumed_from_step, s.steps), (2, 3));
    // burn-train's metric files (the leader's dashboard) hold every step's loss, across the resume.
    let run = tmp.path().join("sit-2peers");
    let losses: Vec<f32> = serde_json::from_str(&std::fs::read_to_string(run.join("losses.json")).unwrap()).unwrap();
    let mut logged = Vec::new();
    for epoch in 1.. {
        match maetok::train::dashboard::read_metric(&run, epoch, "loss") {
            Ok(v) => logged.extend(v),
            Err(_) => break,
        }
    }
    assert_eq!(logged, losses.iter().map(|&l| l as f64).collect::<Vec<_>>());
    // A global batch that does not split over the peers is refused before any work.
    let mut odd = targs(4);
    odd.train.batch_size = 3;
    odd.out = tmp.path().join("odd");
    let e = maetok::train_generator::train_generator(odd, "ndarray").unwrap_err().to_string();
    assert!(e.contains("batch of 3") && e.contains("2 peers"), "{e}");
}

fn out_cache(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    tmp.path().join("cache")
}
