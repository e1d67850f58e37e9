//! Evaluation throughput: FID Inception-v3 features (images/s at 256x256 inputs, resized to 299
//! inside), HOG targets and LPIPS, the DINOv2-L / SigLIP-so400m teachers and the DINO
//! discriminator (random weights of the published shapes), the Fréchet distance at the 2048-d pool width, and GMM fits of latent spaces (K = 50
//! on 10,000 latents reduced to 100 dimensions, as in the paper's analysis).
//!
//! `cargo bench --bench eval` (NdArray); add `--features wgpu` or `--features cuda`
//! for those backends. Filter with e.g. `-- inception`. `MAETOK_BENCH_BACKENDS=cuda` (comma list)
//! limits the backends set up at all (criterion filters only skip the timing, not the setup, and a
//! wgpu build on a machine without a Vulkan adapter would stop there).

#[path = "common/peak_rss.rs"]
mod peak_rss;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use maetok_eval::gmm::{fit_em, Covariance, EmOptions};
use maetok_eval::inception::{InceptionV3, Preprocess};
use maetok_eval::{frechet_distance, FeatureStats};
use rand::{Rng, SeedableRng};

fn bench_inception<B: Backend>(c: &mut Criterion, backend: &str, device: B::Device) {
    B::seed(&device, 0);
    let mut model = InceptionV3::<B>::new(true, &device);
    model.preprocess = Preprocess::Tf1;
    let mut group = c.benchmark_group(format!("inception_features_{backend}"));
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(3));
    for batch in [1usize, 8, 32] {
        let x = Tensor::<B, 4>::random([batch, 3, 256, 256], Distribution::Uniform(0.0, 255.0), &device);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("pool_spatial_logits", batch), &x, |b, x| {
            peak_rss::once(&format!("inception_features_{backend}/{batch}"), || model.features(x.clone()));
            b.iter(|| {
                let f = model.features(x.clone());
                let _ = B::sync(&device);
                f
            })
        });
    }
    group.finish();
}

/// Whether the backend `name` is selected by `MAETOK_BENCH_BACKENDS` (all when unset).
fn wanted(name: &str) -> bool {
    std::env::var("MAETOK_BENCH_BACKENDS").map(|v| v.split(',').any(|b| b.trim() == name)).unwrap_or(true)
}

fn bench_backends(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    if wanted("ndarray") {
        bench_inception::<burn::backend::NdArray<f32>>(c, "ndarray", Default::default());
    }
    #[cfg(feature = "wgpu")]
    if wanted("wgpu") {
        bench_inception::<burn::backend::Wgpu>(c, "wgpu", Default::default());
    }
    #[cfg(feature = "cuda")]
    if wanted("cuda") {
        bench_inception::<burn::backend::Cuda>(c, "cuda", Default::default());
    }
}

/// HOG targets (MAETok's auxiliary decoder target) and LPIPS at 256x256.
fn bench_targets<B: Backend>(c: &mut Criterion, backend: &str, device: B::Device) {
    B::seed(&device, 0);
    let mut group = c.benchmark_group(format!("targets_{backend}"));
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    let batch = 8;
    let x = Tensor::<B, 4>::random([batch, 3, 256, 256], Distribution::Uniform(-1.0, 1.0), &device);
    group.throughput(Throughput::Elements(batch as u64));
    let hog = maetok_targets::HogGenerator::new();
    group.bench_function("hog_batch8", |b| {
        b.iter(|| {
            let h = hog.forward(x.clone()).unwrap();
            let _ = B::sync(&device);
            h
        })
    });
    let lpips = maetok_targets::Lpips::<B>::new(&device);
    let y = x.clone().flip([3]);
    group.bench_function("lpips_vgg16_batch8", |b| {
        b.iter(|| {
            let d = lpips.forward(x.clone(), y.clone()).total;
            let _ = B::sync(&device);
            d
        })
    });
    group.finish();
}

fn bench_target_backends(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    if wanted("ndarray") {
        bench_targets::<burn::backend::NdArray<f32>>(c, "ndarray", Default::default());
    }
    #[cfg(feature = "wgpu")]
    if wanted("wgpu") {
        bench_targets::<burn::backend::Wgpu>(c, "wgpu", Default::default());
    }
    #[cfg(feature = "cuda")]
    if wanted("cuda") {
        bench_targets::<burn::backend::Cuda>(c, "cuda", Default::default());
    }
}

/// The frozen teachers at MAETok's 256x256 / patch 16 (target features, images/s) and the DINO
/// discriminator (logits of 8 images of 256² interpolated to 224²).
fn bench_teachers<B: Backend>(c: &mut Criterion, backend: &str, device: B::Device) {
    use maetok_targets::disc::{DinoDisc, DiscConfig, DiscResize};
    use maetok_targets::{TargetFeatures, Vit, VitConfig};
    B::seed(&device, 0);
    let mut group = c.benchmark_group(format!("teachers_{backend}"));
    group.sample_size(10).measurement_time(Duration::from_secs(30)).warm_up_time(Duration::from_secs(3));
    let batch = 2;
    let x = Tensor::<B, 4>::random([batch, 3, 256, 256], Distribution::Uniform(-1.0, 1.0), &device);
    group.throughput(Throughput::Elements(batch as u64));
    for (name, config) in [("dinov2_l16_batch2", VitConfig::dinov2_large()), ("siglip_so400m16_batch2", VitConfig::siglip_so400m())] {
        let model = Vit::<B>::new(&config, &device);
        group.bench_function(name, |b| {
            b.iter(|| {
                let f = model.target_features(x.clone()).unwrap();
                let _ = B::sync(&device);
                f
            })
        });
    }
    let batch = 8;
    let x = Tensor::<B, 4>::random([batch, 3, 256, 256], Distribution::Uniform(-1.0, 1.0), &device);
    group.throughput(Throughput::Elements(batch as u64));
    let mut disc = DinoDisc::<B>::new(&DiscConfig::dino_small(), &device);
    group.bench_function("dino_disc_batch8", |b| {
        b.iter(|| {
            let l = disc.forward(x.clone(), DiscResize::Interpolate, true).unwrap();
            let _ = B::sync(&device);
            l
        })
    });
    group.finish();
}

fn bench_teacher_backends(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    if wanted("ndarray") {
        bench_teachers::<burn::backend::NdArray<f32>>(c, "ndarray", Default::default());
    }
    #[cfg(feature = "wgpu")]
    if wanted("wgpu") {
        bench_teachers::<burn::backend::Wgpu>(c, "wgpu", Default::default());
    }
    #[cfg(feature = "cuda")]
    if wanted("cuda") {
        bench_teachers::<burn::backend::Cuda>(c, "cuda", Default::default());
    }
}

fn bench_frechet(c: &mut Criterion) {
    let (n, d) = (4096usize, 2048usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let a: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>()).collect();
    let b: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>() * 1.1).collect();
    let (sa, sb) = (FeatureStats::from_features(&a, n, d), FeatureStats::from_features(&b, n, d));
    let mut group = c.benchmark_group("frechet_distance");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function("d2048", |bch| bch.iter(|| frechet_distance(&sa, &sb)));
    group.bench_function("stats_4096x2048", |bch| bch.iter(|| FeatureStats::from_features(&a, n, d)));
    group.finish();
}

fn bench_gmm(c: &mut Criterion) {
    let (n, d, modes) = (10_000usize, 100usize, 20usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let centres: Vec<f64> = (0..modes * d).map(|_| rng.random::<f64>() * 6.0 - 3.0).collect();
    let data: Vec<f64> =
        (0..n).flat_map(|i| (0..d).map(|j| centres[(i % modes) * d + j] + rng.random::<f64>() - 0.5).collect::<Vec<_>>()).collect();
    let mut group = c.benchmark_group("gmm_fit_k50_10k_x100");
    group.sample_size(10).measurement_time(Duration::from_secs(60));
    let opts = EmOptions { covariance: Covariance::Diagonal, max_iter: 100, tol: 1e-3, reg_covar: 1e-6, seed: 0 };
    group.bench_function("em_diag", |b| b.iter(|| fit_em(&data, d, 50, &opts)));
    group.finish();
}

criterion_group!(benches, process::setup, bench_backends, bench_target_backends, bench_teacher_backends, bench_frechet, bench_gmm);
criterion_main!(benches);
