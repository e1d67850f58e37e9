//! Latent generators: SiT-XL/1 and DiT-XL/1 forward throughput (latents/s) at batch 8 on the
//! MAETok-B-128 latent (128 tokens x 32 channels), and sampler steps/s with a tiny SiT.
//!
//! `cargo bench --bench generative` (NdArray; the XL forwards take ~15-25 s each).

#[path = "common/peak_rss.rs"]
mod peak_rss;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use maetok_sampler::{euler_maruyama_sampler, euler_sampler, sample, Guidance, PathType, Sampler, Schedule};

type B = NdArray<f32>;

fn bench_xl(c: &mut Criterion) {
    let device = Default::default();
    let batch = 8;
    let x = Tensor::<B, 3>::random([batch, 128, 32], Distribution::Normal(0.0, 1.0), &device);
    let y = Tensor::<B, 1, Int>::from_ints([1, 2, 3, 4, 5, 6, 7, 1000], &device);
    let mut group = c.benchmark_group("generator_forward_batch8_ndarray");
    group.sample_size(10).measurement_time(Duration::from_secs(60)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(batch as u64));
    {
        let sit = maetok_sit::preset("SiT-XL/1", 128, 32).unwrap().init::<B>(&device);
        let t = Tensor::<B, 1>::random([batch], Distribution::Uniform(0.0, 1.0), &device);
        group.bench_function("sit_xl_1", |b| {
            peak_rss::once("generator_forward_batch8_ndarray/sit_xl_1", || sit.forward(x.clone(), t.clone(), y.clone()));
            b.iter(|| sit.forward(x.clone(), t.clone(), y.clone()))
        });
    }
    {
        let dit = maetok_dit::preset("DiT-XL/1", 128, 32).unwrap().init::<B>(&device);
        let t = Tensor::<B, 1>::from_floats([999.0, 800.0, 600.0, 400.0, 200.0, 100.0, 10.0, 0.0], &device);
        group.bench_function("dit_xl_1", |b| {
            peak_rss::once("generator_forward_batch8_ndarray/dit_xl_1", || dit.forward(x.clone(), t.clone(), y.clone()));
            b.iter(|| dit.forward(x.clone(), t.clone(), y.clone()))
        });
    }
    group.finish();
}

fn bench_samplers(c: &mut Criterion) {
    let device = Default::default();
    let mut cfg = maetok_sit::preset("SiT-S", 16, 8).unwrap();
    (cfg.depth, cfg.hidden_size, cfg.decoder_hidden_size, cfg.num_heads) = (2, 64, Some(64), 4);
    let sit = cfg.init::<B>(&device);
    let (n, steps) = (8usize, 50usize);
    let x: Vec<f64> = (0..n * 16 * 8).map(|i| ((i * 7919) % 1000) as f64 / 500.0 - 1.0).collect();
    let y: Vec<i64> = (0..n as i64).collect();
    let g = Guidance { scale: 1.5, low: 0.0, high: 0.7 };
    let mut group = c.benchmark_group("sampler_tiny_sit_batch8_50steps");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(steps as u64));
    group.bench_function("euler_ode_cfg", |b| b.iter(|| euler_sampler(&sit, &x, [n, 16, 8], &y, steps, false, g, &device)));
    group.bench_function("euler_maruyama_sde_cfg", |b| {
        b.iter(|| {
            let mut noise = |k: usize| vec![0.1; k];
            euler_maruyama_sampler(&sit, &x, [n, 16, 8], &y, steps, PathType::Linear, g, &mut noise, &device)
        })
    });
    let mut dcfg = maetok_dit::preset("DiT-S", 16, 8).unwrap();
    (dcfg.depth, dcfg.hidden_size, dcfg.num_heads) = (2, 64, 4);
    let dit = dcfg.init::<B>(&device);
    let zeros = vec![0.0; n * 16 * 8];
    group.bench_function("ddpm_ancestral", |b| {
        b.iter(|| {
            let mut noise = |k: usize| vec![0.0; k];
            sample(
                &dit,
                &zeros,
                [n, 16, 8],
                &y,
                Sampler::Ddpm { schedule: Schedule::Cosine, steps: 50 },
                Guidance::none(),
                &mut noise,
                &device,
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, process::setup, bench_samplers, bench_xl);
criterion_main!(benches);
