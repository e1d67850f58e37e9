//! MAETok-B-128 and SoftVQ-L-64 (random weights) encode/decode throughput at 256x256, and the
//! cost of MAETok's building blocks at B-128 shapes (to show where the time goes).
//!
//! `cargo bench --bench tokenizer` (NdArray; `--features openblas` for the system BLAS); add
//! `--features wgpu` or `--features cuda` to also measure those backends. Filter with e.g.
//! `-- encode`.

#[path = "common/peak_rss.rs"]
mod peak_rss;
#[path = "common/process.rs"]
mod process;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

use burn::tensor::{activation, backend::Backend, Distribution, Tensor};
use maetok_tokenizer::{ModelArgs, Tokenizer};
use rand::SeedableRng;

fn b128<B: Backend>(device: &B::Device) -> Tokenizer<B> {
    let cfg = ModelArgs::default().resolve("MAETok-B-128").expect("published config");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    Tokenizer::new(&cfg, &mut rng, device)
}

/// SoftVQ-L-64 as `configs/softvq-l-64.json` describes it.
fn softvq_l64<B: Backend>(device: &B::Device) -> Tokenizer<B> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/softvq-l-64.json");
    let cfg = ModelArgs::from_file(&path).and_then(|a| a.resolve("softvq-l-64.json")).expect("shipped config");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    Tokenizer::new(&cfg, &mut rng, device)
}

fn sync<B: Backend>(device: &B::Device) {
    let _ = B::sync(device);
}

fn bench_model<B: Backend>(c: &mut Criterion, backend: &str, device: B::Device) {
    B::seed(&device, 0);
    bench_tokenizer(c, &format!("maetok_b128_{backend}"), b128::<B>(&device), &[1, 4], &device);
    bench_tokenizer(c, &format!("softvq_l64_{backend}"), softvq_l64::<B>(&device), &[1], &device);
}

fn bench_tokenizer<B: Backend>(c: &mut Criterion, name: &str, model: Tokenizer<B>, batches: &[usize], device: &B::Device) {
    let device = device.clone();
    let mut group = c.benchmark_group(name);
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(3));
    for &batch in batches {
        let x = Tensor::<B, 4>::random([batch, 3, 256, 256], Distribution::Uniform(-1.0, 1.0), &device);
        let z = model.encode(x.clone()).unwrap();
        sync::<B>(&device);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("encode", batch), &x, |b, x| {
            peak_rss::once(&format!("{name}/encode/{batch}"), || model.encode(x.clone()).unwrap());
            b.iter(|| {
                let z = model.encode(x.clone()).unwrap();
                sync::<B>(&device);
                z
            })
        });
        group.bench_with_input(BenchmarkId::new("decode", batch), &z, |b, z| {
            peak_rss::once(&format!("{name}/decode/{batch}"), || model.decode(z.clone()).unwrap());
            b.iter(|| {
                let y = model.decode(z.clone()).unwrap();
                sync::<B>(&device);
                y
            })
        });
    }
    group.finish();
}

/// One encoder layer's worth of each op at batch 4 (N = 385 tokens, D = 768, 12 heads).
fn bench_ops<B: Backend>(c: &mut Criterion, backend: &str, device: B::Device) {
    let (b, n, d, h) = (4usize, 385usize, 768usize, 12usize);
    let hd = d / h;
    let mut group = c.benchmark_group(format!("b128_ops_batch4_{backend}"));
    group.sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    let x = Tensor::<B, 2>::random([b * n, d], Distribution::Default, &device);
    let x3 = x.clone().reshape([b, n, d]);
    for (name, out) in [("linear_qkv", 3 * d), ("linear_proj", d), ("linear_fc1", 4 * d)] {
        let w = Tensor::<B, 2>::random([d, out], Distribution::Default, &device);
        group.bench_function(name, |bch| {
            bch.iter(|| {
                let y = x.clone().matmul(w.clone());
                sync::<B>(&device);
                y
            })
        });
    }
    // The model's Linear (bias included, on [B, N, D] tokens): the CPU fast path (one GEMM with
    // the bias written first, no reshape copies) and the Burn-op default it replaces.
    let wq = Tensor::<B, 2>::random([d, 3 * d], Distribution::Default, &device);
    let bq = Tensor::<B, 1>::random([3 * d], Distribution::Default, &device);
    for (name, fast) in [("linear_qkv_with_bias", true), ("linear_qkv_with_bias_default", false)] {
        group.bench_function(name, |bch| {
            bch.iter(|| {
                let (x, w, bias) = (x3.clone(), wq.clone(), Some(bq.clone()));
                let y = if fast { maetok_nn::fused::linear(x, w, bias) } else { maetok_nn::fused::linear_default(x, w, bias) };
                sync::<B>(&device);
                y
            })
        });
    }
    let hidden = Tensor::<B, 2>::random([b * n, 4 * d], Distribution::Default, &device);
    let w2 = Tensor::<B, 2>::random([4 * d, d], Distribution::Default, &device);
    group.bench_function("linear_fc2", |bch| {
        bch.iter(|| {
            let y = hidden.clone().matmul(w2.clone());
            sync::<B>(&device);
            y
        })
    });
    let q = Tensor::<B, 4>::random([b, h, n, hd], Distribution::Default, &device);
    let k = Tensor::<B, 4>::random([b, h, n, hd], Distribution::Default, &device);
    group.bench_function("attn_scores_qk", |bch| {
        bch.iter(|| {
            let y = q.clone().matmul(k.clone().swap_dims(2, 3));
            sync::<B>(&device);
            y
        })
    });
    let s = q.clone().matmul(k.clone().swap_dims(2, 3));
    group.bench_function("attn_softmax", |bch| {
        bch.iter(|| {
            let y = activation::softmax(s.clone(), 3);
            sync::<B>(&device);
            y
        })
    });
    group.bench_function("attn_weights_v", |bch| {
        bch.iter(|| {
            let y = s.clone().matmul(k.clone());
            sync::<B>(&device);
            y
        })
    });
    let opts = burn::tensor::ops::AttentionModuleOptions { scale: Some(0.125), softcap: None, is_causal: false };
    group.bench_function("attention_fused_op", |bch| {
        bch.iter(|| {
            let y = burn::tensor::module::attention(q.clone(), k.clone(), k.clone(), None, None, opts);
            sync::<B>(&device);
            y
        })
    });
    // Our attention with merged heads (the model's path): the CPU fast path on NdArray, and the
    // Burn-op default it replaces (matmul, softmax, matmul, head merge).
    for (name, fast) in [("attention_merged_heads", true), ("attention_merged_heads_default", false)] {
        group.bench_function(name, |bch| {
            bch.iter(|| {
                let (q, k) = (q.clone(), k.clone());
                let y =
                    if fast { maetok_nn::fused::attention(q, k.clone(), k) } else { maetok_nn::fused::attention_default(q, k.clone(), k) };
                sync::<B>(&device);
                y
            })
        });
    }
    group.bench_function("layer_norm", |bch| {
        bch.iter(|| {
            let y = maetok_nn::layer_norm::normalize(x3.clone(), 1e-6);
            sync::<B>(&device);
            y
        })
    });
    // The model's MLP path on the CPU (fused Linear with bias, fused exact GELU): fc1, GELU, fc2
    // at an encoder layer's shapes, next to Burn's matmul and GELU above.
    let (w1, b1) = (Tensor::<B, 2>::random([d, 4 * d], Distribution::Default, &device), Tensor::<B, 1>::zeros([4 * d], &device));
    let b2 = Tensor::<B, 1>::zeros([d], &device);
    let hidden3 = hidden.clone().reshape([b, n, 4 * d]);
    for (name, x, w, bias) in [("fused_linear_fc1", &x3, &w1, &b1), ("fused_linear_fc2", &hidden3, &w2, &b2)] {
        group.bench_function(name, |bch| {
            bch.iter(|| {
                let y = maetok_nn::fused::linear(x.clone(), w.clone(), Some(bias.clone()));
                sync::<B>(&device);
                y
            })
        });
    }
    group.bench_function("fused_gelu_fc1_out", |bch| {
        bch.iter(|| {
            let y = maetok_nn::fused::gelu_erf(hidden3.clone());
            sync::<B>(&device);
            y
        })
    });
    group.bench_function("gelu_fc1_out", |bch| {
        bch.iter(|| {
            let y = activation::gelu(hidden.clone());
            sync::<B>(&device);
            y
        })
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let rope = maetok_nn::Rope::<B>::mixed(12, h, hd, 10.0, 16, &mut rng, &device);
    let table = rope.table(0, 16, 16, &device);
    let full = maetok_nn::RopeFull::new(&table, n, 1, 0.125);
    let qf = Tensor::<B, 4>::random([b, h, n, hd], Distribution::Default, &device);
    group.bench_function("rope_q_full_sequence", |bch| {
        bch.iter(|| {
            let y = full.apply_q(qf.clone());
            sync::<B>(&device);
            y
        })
    });
    group.bench_function("qkv_split_heads_copy", |bch| {
        bch.iter(|| {
            let y = x3.clone().reshape([b, n, h, hd]).swap_dims(1, 2).reshape([b * h, n, hd]);
            sync::<B>(&device);
            y
        })
    });
    group.bench_function("residual_add", |bch| {
        bch.iter(|| {
            let y = x3.clone() + x3.clone();
            sync::<B>(&device);
            y
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    {
        bench_model::<burn::backend::NdArray<f32>>(c, "ndarray", Default::default());
        bench_ops::<burn::backend::NdArray<f32>>(c, "ndarray", Default::default());
    }
    #[cfg(feature = "flex")]
    {
        bench_model::<burn::backend::Flex>(c, "flex", Default::default());
        bench_ops::<burn::backend::Flex>(c, "flex", Default::default());
    }
    #[cfg(feature = "wgpu")]
    {
        bench_model::<burn::backend::Wgpu>(c, "wgpu", Default::default());
        bench_ops::<burn::backend::Wgpu>(c, "wgpu", Default::default());
    }
    #[cfg(feature = "cuda")]
    {
        bench_model::<burn::backend::Cuda>(c, "cuda", Default::default());
        bench_ops::<burn::backend::Cuda>(c, "cuda", Default::default());
    }
}

criterion_group!(tokenizer, process::setup, benches);
criterion_main!(tokenizer);
