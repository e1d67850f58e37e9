//! Data-parallel training overhead: one step of a small SiT (MAETok-B-128 latents, 128 × 32;
//! depth 4, width 192, global batch 16) on 1 peer and on 2 NdArray peers of this process (each
//! peer takes 8 samples, the gradients are all-reduced through burn-collective once per step).
//! On a CPU both peers share the cores, so this measures what the all-reduce, the second
//! autodiff graph and the thread hand-offs cost, not a speed-up.
//!
//! The same for the tokenizer trainer: the quickstart's tiny MAETok (64 px, width 64, HOG
//! decoder, masking) with LPIPS (frozen placeholder weights: the cost, not the values; and without it)
//! and a tiny DINO-style discriminator from step 1, global batch 16, on 1 and 2 peers; per step the 2 peers
//! all-reduce both gradients, λ's last-layer gradients and the logged means, and gather the
//! discriminator's readouts four times.
//!
//! And one step of the small SiT's DiT twin (learned variance, hybrid loss) on one peer, beside
//! `benches/torch_dit_step_reference.py`.
//!
//! `cargo bench --bench parallel`

#[path = "common/peak_rss.rs"]
mod peak_rss;
#[path = "common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use criterion::{criterion_group, criterion_main, Criterion};
use maetok::train::data::latent_cache::CacheManifest;
use maetok::train::data::{LatentCache, LatentCacheWriter, LatentRecord};
use maetok::train::parallel::{run_peers, World};
use maetok::train::{GeneratorTrainConfig, GeneratorTrainError, GeneratorTrainer};
use rand::{Rng, SeedableRng};

type I = NdArray<f32>;
type A = Autodiff<I>;

fn cache(dir: &std::path::Path) -> LatentCache {
    let latent = [128, 32];
    let mut w = LatentCacheWriter::create_or_resume(
        dir,
        CacheManifest::new("random".into(), "bench".into(), 256, latent, vec!["a".into(), "b".into()], 64, 64),
    )
    .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for i in 0..64 {
        let mut v = || (0..128 * 32).map(|_| rng.random::<f32>() - 0.5).collect::<Vec<f32>>();
        let (zq, zq_flip) = (v(), v());
        w.push(LatentRecord { zq, zq_flip, label: i % 2, index: i, path: format!("{i}") }).unwrap();
    }
    w.finish().unwrap();
    LatentCache::open(dir).unwrap()
}

fn bench_peers(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache(&tmp.path().join("latents"));
    let mut model = maetok::sit::preset("SiT-S", 128, 32).unwrap();
    (model.depth, model.hidden_size, model.decoder_hidden_size, model.num_heads, model.num_classes) = (4, 192, Some(192), 3, 2);
    let cfg = GeneratorTrainConfig { batch_size: 16, ..Default::default() };
    let device = Default::default();
    let start = GeneratorTrainer::<A>::new(model, cfg, &device).unwrap();
    let mut group = c.benchmark_group("sit_small_train_step_batch16_ndarray");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(2));
    // Peak memory of one step on one peer (beside `benches/torch_sit_step_reference.py`'s).
    peak_rss::once("sit_small_train_step_batch16_ndarray/peers_1", || {
        let mut t = start.fork(World::local(1).peer(0), &device);
        t.step(&cache).unwrap()
    });
    for peers in [1usize, 2] {
        group.bench_function(format!("peers_{peers}"), |b| {
            b.iter_custom(|iters| {
                let world = World::local(peers);
                let devices = vec![device; peers];
                let forks = (0..peers).map(|k| start.fork(world.peer(k), &devices[k])).collect();
                let times = run_peers::<I, _, _, GeneratorTrainError, _>(&world, &devices, forks, |_, mut t| {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        t.step(&cache)?;
                    }
                    Ok(t0.elapsed())
                })
                .unwrap();
                times[0]
            })
        });
    }
    group.finish();
}

/// One step of the same small transformer as DiT (learned variance: `2C` output channels; the
/// hybrid MSE + VB loss on the linear schedule, no clipping), on one peer; next to
/// `benches/torch_dit_step_reference.py`.
fn bench_dit_step(c: &mut Criterion) {
    use maetok::sampler::Schedule;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache(&tmp.path().join("latents"));
    let mut model = maetok::dit::preset("DiT-S", 128, 32).unwrap();
    (model.depth, model.hidden_size, model.num_heads, model.num_classes) = (4, 192, 3, 2);
    let cfg = GeneratorTrainConfig { batch_size: 16, ..GeneratorTrainConfig::diffusion(Schedule::Linear) };
    let device = Default::default();
    let start = GeneratorTrainer::<A>::new(model, cfg, &device).unwrap();
    let mut group = c.benchmark_group("dit_small_train_step_batch16_ndarray");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(2));
    peak_rss::once("dit_small_train_step_batch16_ndarray/peers_1", || start.fork(World::local(1).peer(0), &device).step(&cache).unwrap());
    let mut t = start.fork(World::local(1).peer(0), &device);
    group.bench_function("peers_1", |b| b.iter(|| t.step(&cache).unwrap()));
    group.finish();
}

fn bench_tokenizer_peers(c: &mut Criterion) {
    use burn::module::Module;
    use maetok::targets::{DinoDisc, DiscConfig, HogGenerator, Lpips, VitConfig};
    use maetok::train::data::{images_to_tensor, ImageSource, ProceduralShapes, TrainImages};
    use maetok::train::tokenizer::{AuxTeachers, LossNets, TokenizerTrainer, TrainError};

    let device = Default::default();
    let q = maetok::quickstart::QuickstartArgs { steps: 1000, batch_size: 16, ..Default::default() };
    let mut cfg = maetok::quickstart::tiny_train_config(&q);
    cfg.gan.disc_start = 1;
    let backbone = VitConfig {
        img_size: 64,
        patch_size: 8,
        dim: 64,
        depth: 2,
        heads: 4,
        mlp_hidden: 256,
        class_token: true,
        layer_scale: false,
        tanh_gelu: true,
        dynamic_img_size: false,
        ln_eps: 1e-6,
    };
    let dc = DiscConfig { backbone, key_depths: vec![0, 1], kernel: 3, norm_eps: 1e-6 };
    let disc = DinoDisc::<A>::new(&dc, &device);
    let start = TokenizerTrainer::<A>::new(maetok::quickstart::tiny_model_args(64), "bench", cfg, Some((disc, dc)), &device).unwrap();
    let nets = |lpips: bool| LossNets::<A> {
        lpips: lpips.then(|| Lpips::new(&device).no_grad()),
        teachers: AuxTeachers { hog: Some(HogGenerator::for_patch(8)), dino: None, clip: None },
    };
    let data = TrainImages::new(ImageSource::Procedural { shapes: ProceduralShapes::new(64, 0), len: 4096, offset: 0 }, 0);
    let mut group = c.benchmark_group("maetok_tiny_train_step_batch16_ndarray");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(2));
    for (lpips, peers) in [(true, 1usize), (true, 2), (false, 1), (false, 2)] {
        let nets = nets(lpips);
        let name = if lpips { format!("peers_{peers}") } else { format!("no_lpips/peers_{peers}") };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let world = World::local(peers);
                let devices = vec![device; peers];
                let forks = (0..peers).map(|k| (start.fork(world.peer(k), &devices[k]), nets.fork(&devices[k]))).collect();
                let times = run_peers::<I, _, _, TrainError, _>(&world, &devices, forks, |peer, (mut t, nets)| {
                    // Decoding is not timed (the trainer prefetches it on another thread).
                    let batches: Vec<_> = (0..iters).map(|s| data.batch_rows(s, 16, peer.shard(16)).unwrap()).collect();
                    let t0 = Instant::now();
                    for imgs in &batches {
                        t.step(images_to_tensor::<A>(imgs, &device), &nets)?;
                    }
                    Ok(t0.elapsed())
                })
                .unwrap();
                times[0]
            })
        });
    }
    group.finish();
}

criterion_group!(benches, process::setup, bench_peers, bench_dit_step, bench_tokenizer_peers);
criterion_main!(benches);
