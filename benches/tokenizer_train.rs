//! Tokenizer training steps (NdArray, with `--features openblas` on the system BLAS, and Flex with
//! `--features flex`; random weights, timing does not depend on them):
//!
//! * `tiny_quickstart/step_batch16`: one step of the quickstart (64x64, patch 8, width 64, token
//!   masking, HOG auxiliary decoder; no LPIPS, no GAN), the whole trainer step (AdamW, EMA).
//! * `maetok_b128/autoencoder_step_batch1`: MAETok-B-128's encoder + pixel decoder alone, masked
//!   forward + pixel loss + backward + AdamW, at 256x256: compare with
//!   `shared/bench/torch_vit_reference.py --train --batch 1` (one ViT-B trunk of the encoder's token
//!   count, forward + backward + AdamW; MAETok-B-128 runs two such trunks).
//! * `maetok_b128/full_loss_step_batch1` (filter `full_loss`; ~minutes per sample on 2 cores): the
//!   whole MAETok objective: HOG + DINOv2-L + SigLIP-so400m auxiliary decoders and teachers, LPIPS,
//!   the DINO discriminator (both steps).
//!
//! `cargo bench --bench tokenizer_train [-- tiny]`

#[path = "common/peak_rss.rs"]
mod peak_rss;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use maetok::quickstart::{tiny_model_args, tiny_train_config, QuickstartArgs};
use maetok_targets::disc::GanWeights;
use maetok_targets::{DinoDisc, DiscConfig, HogGenerator, Lpips, Vit, VitConfig};
use maetok_tokenizer::ModelArgs;
use maetok_train::tokenizer::{AuxTeachers, CosineWarmup, LossNets, TokenizerTrainConfig, TokenizerTrainer};

fn images<A: Backend>(b: usize, s: usize) -> Tensor<A, 4> {
    Tensor::random([b, 3, s, s], Distribution::Uniform(-1.0, 1.0), &Default::default())
}

fn bench_tiny<A: AutodiffBackend>(c: &mut Criterion, backend: &str) {
    let device = Default::default();
    let q = QuickstartArgs::default();
    let mut t = TokenizerTrainer::<A>::new(tiny_model_args(q.image_size), "tiny", tiny_train_config(&q), None, &device).unwrap();
    let nets = LossNets::<A> { lpips: None, teachers: AuxTeachers { hog: Some(HogGenerator::for_patch(8)), dino: None, clip: None } };
    let x = images::<A>(q.batch_size, q.image_size);
    let mut g = c.benchmark_group(format!("tiny_quickstart_{backend}"));
    g.sample_size(20).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(2));
    g.bench_function("step_batch16", |b| {
        peak_rss::once(&format!("tiny_quickstart_{backend}/step_batch16"), || t.step(x.clone(), &nets).unwrap());
        b.iter(|| t.step(x.clone(), &nets).unwrap())
    });
    g.finish();
}

fn b128_train(aux: bool) -> TokenizerTrainConfig {
    TokenizerTrainConfig {
        batch_size: 1,
        schedule: CosineWarmup::reference(1e-4, 1000, 200, 2),
        gan: GanWeights { disc_start: if aux { 0 } else { u64::MAX }, perceptual_warmup: 0, ..GanWeights::default() },
        ..TokenizerTrainConfig::default()
    }
}

fn bench_b128<A: AutodiffBackend>(c: &mut Criterion, backend: &str) {
    let device = Default::default();
    let mut g = c.benchmark_group(format!("maetok_b128_{backend}"));
    g.sample_size(10).measurement_time(Duration::from_secs(30)).warm_up_time(Duration::from_secs(1));
    let x = images::<A>(1, 256);

    let plain = ModelArgs { enc_token_drop: 0.4, aux_hog_dec: false, aux_dino_dec: false, aux_clip_dec: false, ..ModelArgs::default() };
    let mut t = TokenizerTrainer::<A>::new(plain, "MAETok-B-128", b128_train(false), None, &device).unwrap();
    let none = LossNets::<A> { lpips: None, teachers: AuxTeachers { hog: None, dino: None, clip: None } };
    g.bench_function("autoencoder_step_batch1", |b| {
        peak_rss::once(&format!("maetok_b128_{backend}/autoencoder_step_batch1"), || t.step(x.clone(), &none).unwrap());
        b.iter(|| t.step(x.clone(), &none).unwrap())
    });
    drop(t);

    let full = ModelArgs { enc_token_drop: 0.4, ..ModelArgs::default() };
    <A as Backend>::seed(&device, 0);
    let disc = DiscConfig::dino_small();
    let mut t =
        TokenizerTrainer::<A>::new(full, "MAETok-B-128", b128_train(true), Some((DinoDisc::new(&disc, &device), disc)), &device).unwrap();
    let nets = LossNets::<A> {
        lpips: Some(Lpips::new(&device)),
        teachers: AuxTeachers {
            hog: Some(HogGenerator::new()),
            dino: Some(Vit::new(&VitConfig::dinov2_large(), &device)),
            clip: Some(Vit::new(&VitConfig::siglip_so400m(), &device)),
        },
    };
    g.bench_function("full_loss_step_batch1", |b| b.iter(|| t.step(x.clone(), &nets).unwrap()));
    g.finish();
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    {
        type A = Autodiff<burn::backend::NdArray<f32>>;
        bench_tiny::<A>(c, "ndarray");
        bench_b128::<A>(c, "ndarray");
    }
    #[cfg(feature = "flex")]
    {
        type A = Autodiff<burn::backend::Flex>;
        bench_tiny::<A>(c, "flex");
        bench_b128::<A>(c, "flex");
    }
}

criterion_group!(tokenizer_train, process::setup, benches);
criterion_main!(tokenizer_train);
