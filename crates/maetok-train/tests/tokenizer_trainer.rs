//! The tokenizer trainer on a tiny config: exact resume, the discriminator's start step, the
//! decoder fine-tuning stage, learning, export and bad input.

mod common;

use std::collections::BTreeMap;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use maetok_nn::io::{Exporter, VisitParams};
use maetok_targets::disc::GanWeights;
use maetok_targets::{DinoDisc, DiscConfig, HogGenerator, VitConfig};
use maetok_tokenizer::{load_pretrained, ModelArgs, VitSize};
use maetok_train::data::{images_to_tensor, ImageSource, ProceduralShapes, TrainImages};
use maetok_train::parallel::{run_peers, World};
use maetok_train::tokenizer::{AuxTeachers, CosineWarmup, LossNets, Stage, StepLog, TokenizerTrainConfig, TokenizerTrainer, TrainError};

type A = Autodiff<NdArray<f32>>;
type Params = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

const SIZE: usize = 32;

/// NdArray's random generator is one per process: tests that replay seeded draws must not
/// interleave with other tests of this binary.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// 32×32 images, patch 8 (16 tokens), 4 latent tokens of 4 channels, width 32, masking 40–60 %,
/// the HOG auxiliary decoder.
fn args() -> ModelArgs {
    let small = VitSize { width: 32, depth: 1, heads: 2 };
    ModelArgs {
        image_size: SIZE,
        base_image_size: SIZE,
        enc_patch_size: 8,
        dec_patch_size: 8,
        num_latent_tokens: 4,
        codebook_embed_dim: 4,
        enc_token_drop: 0.4,
        enc_token_drop_max: 0.6,
        aux_hog_dec: true,
        aux_dino_dec: false,
        aux_clip_dec: false,
        aux_loss_mask: true,
        ..ModelArgs::default()
    }
    .with_encoder_size(small)
    .with_decoder_size(small)
    .with_aux_decoder_size(small)
}

fn disc(device: &burn::backend::ndarray::NdArrayDevice) -> (DinoDisc<A>, DiscConfig) {
    let backbone = VitConfig {
        img_size: SIZE,
        patch_size: 8,
        dim: 32,
        depth: 2,
        heads: 2,
        mlp_hidden: 64,
        class_token: true,
        layer_scale: false,
        tanh_gelu: true,
        dynamic_img_size: false,
        ln_eps: 1e-6,
    };
    let c = DiscConfig { backbone, key_depths: vec![0], kernel: 3, norm_eps: 1e-6 };
    <A as Backend>::seed(device, 3);
    (DinoDisc::new(&c, device), c)
}

fn config(disc_start: u64) -> TokenizerTrainConfig {
    TokenizerTrainConfig {
        batch_size: 4,
        schedule: CosineWarmup { lr: 1e-3, lr_min: 1e-4, warmup_init: 1e-4, warmup_steps: 2, total_steps: 100 },
        gan: GanWeights { disc_start, perceptual_warmup: 2, ..GanWeights::default() },
        seed: 5,
        ..TokenizerTrainConfig::default()
    }
}

fn nets(device: &burn::backend::ndarray::NdArrayDevice, lpips: bool) -> LossNets<A> {
    LossNets {
        lpips: lpips.then(|| common::lpips::<A>(device)),
        teachers: AuxTeachers { hog: Some(HogGenerator::for_patch(8)), dino: None, clip: None },
    }
}

fn data() -> TrainImages {
    TrainImages::new(ImageSource::Procedural { shapes: ProceduralShapes::new(SIZE, 1), len: 64, offset: 1000 }, 5)
}

fn run(t: &mut TokenizerTrainer<A>, nets: &LossNets<A>, data: &TrainImages, steps: u64) -> Vec<StepLog> {
    let device = Default::default();
    (0..steps)
        .map(|_| {
            let imgs = data.batch(t.step, t.config.batch_size).unwrap();
            t.step(images_to_tensor::<A>(&imgs, &device), nets).unwrap()
        })
        .collect()
}

fn params<B: Backend, M: VisitParams<B>>(m: &mut M) -> Params {
    let mut e = Exporter::new();
    m.visit_params("", &mut e);
    e.tensors().clone()
}

fn without_time(mut logs: Vec<StepLog>) -> Vec<StepLog> {
    logs.iter_mut().for_each(|l| l.seconds = 0.0);
    logs
}

/// N steps straight equal N/2 steps, a checkpoint, a fresh process state resumed from it, and
/// N/2 more: model, EMA, discriminator (heads, BatchNorm and spectral-norm state), LeCam and
/// every logged value, bit for bit.
#[test]
fn resume_continues_bit_for_bit() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (nets(&device, true), data());
    let mut straight = TokenizerTrainer::<A>::new(args(), "tiny", config(2), Some(disc(&device)), &device).unwrap();
    let logs = without_time(run(&mut straight, &nets, &data, 4));
    assert!(logs[0].mask_ratio.is_some_and(|r| (0.4..=0.6).contains(&r)));
    assert!(logs[3].d_loss.is_some() && logs[3].lambda.is_some() && logs[3].aux.contains_key("hog"));

    let dir = tempfile::tempdir().unwrap();
    let mut first = TokenizerTrainer::<A>::new(args(), "tiny", config(2), Some(disc(&device)), &device).unwrap();
    let mut resumed_logs = run(&mut first, &nets, &data, 2);
    first.save_checkpoint(dir.path(), 2).unwrap();
    drop(first);
    let mut second = TokenizerTrainer::<A>::resume(dir.path(), &device).unwrap().expect("a checkpoint");
    assert_eq!(second.step, 2);
    resumed_logs.extend(run(&mut second, &nets, &data, 2));
    assert_eq!(logs, without_time(resumed_logs));

    assert_eq!(params(&mut straight.model), params(&mut second.model));
    assert_eq!(params(&mut straight.ema), params(&mut second.ema));
    assert_eq!(params(straight.disc.as_mut().unwrap()), params(second.disc.as_mut().unwrap()));
    assert_eq!(straight.lecam, second.lecam);
}

/// Before `disc_start` the discriminator (run every step, as the reference does) changes
/// nothing of the tokenizer: two steps with a discriminator starting at step 3 equal two steps
/// without one.
#[test]
fn discriminator_before_its_start_leaves_the_tokenizer_alone() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (nets(&device, false), data());
    let mut with = TokenizerTrainer::<A>::new(args(), "tiny", config(3), Some(disc(&device)), &device).unwrap();
    let mut without = TokenizerTrainer::<A>::new(args(), "tiny", config(3), None, &device).unwrap();
    let a = run(&mut with, &nets, &data, 2);
    let b = run(&mut without, &nets, &data, 2);
    assert!(a.iter().all(|l| l.d_loss.is_some() && l.disc_weight == 0.0));
    assert!(b.iter().all(|l| l.d_loss.is_none()));
    assert_eq!(params(&mut with.model), params(&mut without.model));
    // From the start step on, the adversarial term moves the tokenizer.
    let a3 = run(&mut with, &nets, &data, 1);
    run(&mut without, &nets, &data, 1);
    assert!(a3[0].disc_weight > 0.0);
    assert_ne!(params(&mut with.model), params(&mut without.model));
}

/// The decoder fine-tuning stage: no masking, no auxiliary decoders, the encoder side frozen,
/// the decoder trained.
#[test]
fn decoder_finetune_trains_only_the_decoder() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (nets(&device, false), data());
    let cfg = TokenizerTrainConfig { stage: Stage::DecoderFinetune, ..config(1000) };
    let mut t = TokenizerTrainer::<A>::new(args(), "tiny", cfg, None, &device).unwrap();
    assert!(t.model.hog.is_none() && t.mask_range().is_none());
    let before = params(&mut t.model);
    let logs = run(&mut t, &nets, &data, 2);
    assert!(logs.iter().all(|l| l.mask_ratio.is_none() && l.aux.is_empty()));
    let after = params(&mut t.model);
    for (k, v) in &before {
        let frozen = k.starts_with("encoder.") || k.starts_with("quant_conv.");
        let changed = after[k] != *v;
        // Dead weights (the decoder's patch_embed, pos_embed, ...) get no gradient either.
        if frozen {
            assert!(!changed, "{k} is frozen in this stage but changed");
        }
    }
    assert_ne!(after["decoder.to_pixel.model.weight"], before["decoder.to_pixel.model.weight"]);
    assert_ne!(after["post_quant_conv.weight"], before["post_quant_conv.weight"]);
}

/// A few hundred steps lower the reconstruction loss clearly; the exported EMA model loads with
/// the inference loader and has the Hugging Face key set.
#[test]
fn training_lowers_the_loss_and_exports() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (nets(&device, false), data());
    let cfg = TokenizerTrainConfig {
        batch_size: 8,
        schedule: CosineWarmup { lr: 3e-3, lr_min: 3e-4, warmup_init: 1e-4, warmup_steps: 10, total_steps: 200 },
        ema_decay: 0.9,
        ..config(u64::MAX)
    };
    let mut t = TokenizerTrainer::<A>::new(args(), "tiny", cfg, None, &device).unwrap();
    let logs = run(&mut t, &nets, &data, 200);
    let mean = |l: &[StepLog]| l.iter().map(|l| l.rec).sum::<f64>() / l.len() as f64;
    let (early, late) = (mean(&logs[..10]), mean(&logs[190..]));
    assert!(late < 0.5 * early, "reconstruction loss {early} -> {late}");
    assert!(logs.iter().all(|l| l.aux["hog"].is_finite()));

    let dir = tempfile::tempdir().unwrap();
    t.export_ema(dir.path()).unwrap();
    let (model, report) = load_pretrained::<NdArray<f32>>(dir.path(), &device).unwrap();
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);
    let mut ema_ae = t.ema.ae.clone();
    assert_eq!(params(&mut model.clone()), params(&mut ema_ae));
    let x = images_to_tensor::<NdArray<f32>>(&data.batch(0, 2).unwrap(), &device);
    let _: Tensor<NdArray<f32>, 4> = model.reconstruct(x).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let _serial = serial();
    let device = Default::default();
    let data = data();
    let mut t = TokenizerTrainer::<A>::new(args(), "tiny", config(1000), None, &device).unwrap();
    // The HOG decoder is on but no HOG target is given.
    let no_hog = LossNets::<A> { lpips: None, teachers: AuxTeachers { hog: None, dino: None, clip: None } };
    let x = images_to_tensor::<A>(&data.batch(0, 4).unwrap(), &device);
    let e = t.step(x, &no_hog).unwrap_err();
    assert!(matches!(e, TrainError::MissingTeacher("hog")), "{e}");
    // Images of another size.
    let small = TrainImages::new(ImageSource::Procedural { shapes: ProceduralShapes::new(16, 0), len: 8, offset: 0 }, 0);
    let e = t.step(images_to_tensor::<A>(&small.batch(0, 4).unwrap(), &device), &nets(&device, false)).unwrap_err();
    assert!(e.to_string().contains("16×16") && e.to_string().contains("32×32"), "{e}");
    // An unknown aux decoder preset and a bad DiffAugment policy.
    let bad = ModelArgs { aux_dec_model: "vit_huge_nonsense".into(), ..args() };
    let e = TokenizerTrainer::<A>::new(bad, "bad.yaml", config(1000), None, &device).err().unwrap().to_string();
    assert!(e.contains("bad.yaml") && e.contains("vit_huge_nonsense"), "{e}");
    let odd = ModelArgs { dec_patch_size: 16, ..args() };
    let e = TokenizerTrainer::<A>::new(odd, "odd.yaml", config(1000), None, &device).err().unwrap().to_string();
    assert!(e.contains("odd.yaml") && e.contains("aux_loss_mask"), "{e}");
    let cfg = TokenizerTrainConfig { diff_aug: Some("colour".into()), ..config(1000) };
    let e = TokenizerTrainer::<A>::new(args(), "tiny", cfg, None, &device).err().unwrap().to_string();
    assert!(e.contains("colour"), "{e}");
    // A damaged checkpoint names its file; no checkpoint is not an error.
    let dir = tempfile::tempdir().unwrap();
    assert!(TokenizerTrainer::<A>::resume(dir.path(), &device).unwrap().is_none());
    let ck = t.save_checkpoint(dir.path(), 1).unwrap();
    std::fs::write(ck.join("state.json"), "{ not json").unwrap();
    let e = TokenizerTrainer::<A>::resume(dir.path(), &device).err().unwrap().to_string();
    assert!(e.contains("state.json"), "{e}");
}

/// A checkpoint write that dies half-way (its temporary folder left behind) leaves the previous
/// checkpoint the one that resumes; only the newest `keep` are kept.
#[test]
fn interrupted_checkpoint_leaves_the_previous_one() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (nets(&device, false), data());
    let dir = tempfile::tempdir().unwrap();
    let mut t = TokenizerTrainer::<A>::new(args(), "tiny", config(1000), None, &device).unwrap();
    run(&mut t, &nets, &data, 1);
    t.save_checkpoint(dir.path(), 2).unwrap();
    run(&mut t, &nets, &data, 1);
    t.save_checkpoint(dir.path(), 2).unwrap();
    run(&mut t, &nets, &data, 1);
    t.save_checkpoint(dir.path(), 2).unwrap();
    let root = dir.path().join("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, ["latest", "step-0000002", "step-0000003"]);
    // A writer killed mid-way: a partial temporary folder, `latest` untouched.
    std::fs::create_dir_all(root.join(".step-0000004.tmp")).unwrap();
    std::fs::write(root.join(".step-0000004.tmp/model.mpk"), b"partial").unwrap();
    let r = TokenizerTrainer::<A>::resume(dir.path(), &device).unwrap().unwrap();
    assert_eq!(r.step, 3);
}

/// A tiny SoftVQ-VAE: APE encoder, 2 soft codebooks of 8 codes, plain decoder with a cls token,
/// entropy loss and REPA (`repeat`) against a random DINOv2-layout teacher of width 24.
fn softvq_args() -> ModelArgs {
    let small = VitSize { width: 32, depth: 1, heads: 2 };
    ModelArgs {
        image_size: SIZE,
        base_image_size: SIZE,
        enc_patch_size: 8,
        dec_patch_size: 8,
        num_latent_tokens: 4,
        codebook_embed_dim: 4,
        decoder_model: "vit_base_patch14_dinov2.lvd142m".into(),
        use_rope: false,
        use_ape: true,
        dec_cls_token: true,
        quantizer: Some("softvq".into()),
        num_codebooks: 2,
        codebook_size: 8,
        tau: 0.07,
        entropy_loss_ratio: 0.01,
        repa: true,
        repa_align: "repeat".into(),
        repa_proj_dim: 16,
        repa_loss_weight: 0.1,
        aux_dino_dim: Some(24),
        ..ModelArgs::default()
    }
    .with_encoder_size(small)
    .with_decoder_size(small)
}

fn softvq_nets(device: &burn::backend::ndarray::NdArrayDevice) -> LossNets<A> {
    let teacher = VitConfig {
        img_size: SIZE,
        patch_size: 8,
        dim: 24,
        depth: 1,
        heads: 2,
        mlp_hidden: 48,
        class_token: true,
        layer_scale: true,
        tanh_gelu: false,
        dynamic_img_size: false,
        ln_eps: 1e-6,
    };
    <A as Backend>::seed(device, 11);
    let mut dino = maetok_targets::Vit::new(&teacher, device);
    // Random weights made concrete now (Burn initialises parameters lazily, on first use, from
    // the generator's state at that moment), as loaded teacher weights are.
    let _ = params(&mut dino);
    LossNets { lpips: None, teachers: AuxTeachers { hog: None, dino: Some(dino), clip: None } }
}

/// SoftVQ-VAE trains in the same trainer: the entropy and REPA terms are logged and trained,
/// the reconstruction improves, resume is exact, and the export is a SoftVQ folder.
#[test]
fn softvq_trains_resumes_and_exports() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (softvq_nets(&device), data());
    let cfg = TokenizerTrainConfig {
        batch_size: 8,
        schedule: CosineWarmup { lr: 3e-3, lr_min: 3e-4, warmup_init: 1e-4, warmup_steps: 5, total_steps: 60 },
        ema_decay: 0.9,
        ..config(u64::MAX)
    };
    let mut t = TokenizerTrainer::<A>::new(softvq_args(), "softvq", cfg.clone(), None, &device).unwrap();
    assert!(t.model.ae.quantizer.is_some() && t.model.projection.is_some() && t.model.hog.is_none());
    assert!(t.mask_range().is_none(), "enc_token_drop 0: no masking");
    let logs = run(&mut t, &nets, &data, 60);
    assert!(logs.iter().all(|l| l.aux["entropy"].is_finite() && l.aux["repa"].is_finite()));
    let mean = |l: &[StepLog], f: fn(&StepLog) -> f64| l.iter().map(f).sum::<f64>() / l.len() as f64;
    let (early, late) = (mean(&logs[..5], |l| l.rec), mean(&logs[55..], |l| l.rec));
    assert!(late < 0.7 * early, "reconstruction loss {early} -> {late}");
    let (r0, r1) = (mean(&logs[..5], |l| l.aux["repa"]), mean(&logs[55..], |l| l.aux["repa"]));
    assert!(r1 < r0, "REPA loss {r0} -> {r1}");

    // Resume (the quantiser choice travels in the checkpoint's args). Not bit for bit: Burn's
    // autodiff on NdArray gives the soft quantiser's input gradient with run-to-run differences
    // at f32 rounding (~3e-6 relative) when the entropy loss and z_q both reach it — two
    // independent runs of the same step differ as much (not from rayon or BLAS threads;
    // each loss alone is reproducible), amplified by the sharp softmax (τ = 0.07) within a few
    // steps. So: the same steps, schedule and terms, values within 1 %.
    let dir = tempfile::tempdir().unwrap();
    let mut a = TokenizerTrainer::<A>::new(softvq_args(), "softvq", cfg.clone(), None, &device).unwrap();
    let straight = without_time(run(&mut a, &nets, &data, 4));
    let mut b = TokenizerTrainer::<A>::new(softvq_args(), "softvq", cfg, None, &device).unwrap();
    let mut resumed = run(&mut b, &nets, &data, 2);
    b.save_checkpoint(dir.path(), 1).unwrap();
    drop(b);
    let mut c = TokenizerTrainer::<A>::resume(dir.path(), &device).unwrap().expect("a checkpoint");
    assert_eq!(c.step, 2);
    resumed.extend(run(&mut c, &nets, &data, 2));
    for (x, y) in straight.iter().zip(&without_time(resumed)) {
        assert_eq!((x.step, x.lr, x.aux.keys().collect::<Vec<_>>()), (y.step, y.lr, y.aux.keys().collect::<Vec<_>>()));
        for (p, q) in [(x.rec, y.rec), (x.total, y.total), (x.grad_norm, y.grad_norm), (x.aux["repa"], y.aux["repa"])] {
            assert!((p - q).abs() <= 1e-2 * p.abs().max(1e-3), "step {}: {p} vs {q}", x.step);
        }
    }

    // The EMA export is a SoftVQ-VAE folder for every inference command.
    let out = tempfile::tempdir().unwrap();
    t.export_ema(out.path()).unwrap();
    let (model, report) = load_pretrained::<NdArray<f32>>(out.path(), &device).unwrap();
    assert!(model.quantizer.is_some() && report.ignored.is_empty(), "{:?}", report.ignored);

    // REPA without its teacher is a clear error.
    let no_teacher = LossNets::<A> { lpips: None, teachers: AuxTeachers { hog: None, dino: None, clip: None } };
    let x = images_to_tensor::<A>(&data.batch(0, 4).unwrap(), &device);
    let e = t.step(x, &no_teacher).unwrap_err();
    assert!(matches!(e, TrainError::MissingRepaTeacher), "{e}");
}

/// `steps` steps of `t` on `world` NdArray peers (threads, Burn's collective), each on its rows
/// of the global batch; returns every peer's trainer and logs.
fn run_on_peers(
    t: &TokenizerTrainer<A>,
    nets: &LossNets<A>,
    data: &TrainImages,
    world: usize,
    steps: u64,
) -> Vec<(TokenizerTrainer<A>, Vec<StepLog>)> {
    let device: burn::backend::ndarray::NdArrayDevice = Default::default();
    let w = World::local(world);
    let devices = vec![device; world];
    let states: Vec<_> = (0..world).map(|k| (t.fork(w.peer(k), &device), nets.fork(&device))).collect();
    run_peers::<NdArray<f32>, _, _, TrainError, _>(&w, &devices, states, |peer, (mut t, nets)| {
        assert_eq!(t.peer, peer);
        let batch = t.config.batch_size;
        let mut logs = Vec::new();
        for _ in 0..steps {
            let imgs = data.batch_rows(t.step, batch, peer.shard(batch)).unwrap();
            logs.push(t.step(images_to_tensor::<A>(&imgs, &device), &nets)?);
        }
        Ok((t, logs))
    })
    .unwrap()
}

/// The discriminator's convolution biases that feed a BatchNorm in training mode, and those
/// BatchNorms' running means. `BN(x + b) = BN(x)` under batch statistics, so the true gradient of
/// such a bias is exactly zero: what each run computes is float rounding (~1e-9), which AdamW
/// normalises into steps of about ±lr, different for any other summation order. (The same holds
/// for the reference.) The running means carry the bias.
fn before_batch_norm(key: &str) -> bool {
    key.ends_with(".0.0.bias") || key.ends_with(".1.fn.0.bias") || key.ends_with("running_mean")
}

/// The largest difference over the keys `keep` selects.
fn max_diff_of(a: &Params, b: &Params, keep: impl Fn(&str) -> bool) -> f32 {
    let pick = |p: &Params| p.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect::<Params>();
    max_diff(&pick(a), &pick(b))
}

fn max_diff(a: &Params, b: &Params) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, (s, v))| {
            assert_eq!(s, &b[k].0, "{k}");
            v.iter().zip(&b[k].1).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
        })
        .fold(0f32, f32::max)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1e-3)
}

/// Data parallelism: 4 steps on 2 peers (global batch 4, 2 rows each) train the weights one
/// device trains on the whole batch, with everything on: masking (one ratio, per-sample orders
/// of the global draw), the HOG decoder, LPIPS with per-sample dropout, DiffAugment and the
/// random crop, the discriminator from step 2 (its heads' BatchNorm over the gathered global
/// batch), λ from all-reduced last-layer gradients, LeCam. The two peers end bit-identical.
#[test]
fn two_peers_train_the_weights_of_one_device() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (nets(&device, true), data());
    let mut cfg = config(2);
    cfg.disc_random_crop = true;
    let fresh = || TokenizerTrainer::<A>::new(args(), "tiny", cfg.clone(), Some(disc(&device)), &device).unwrap();
    let mut one = fresh();
    let one_logs = run(&mut one, &nets, &data, 4);
    assert!(one_logs[3].lambda.is_some() && one_logs[3].d_loss.is_some());

    let mut peers = run_on_peers(&fresh(), &nets, &data, 2, 4);
    let (mut p1, l1) = peers.pop().unwrap();
    let (mut p0, l0) = peers.pop().unwrap();
    assert_eq!(without_time(l0.clone()), without_time(l1));
    assert_eq!(params(&mut p0.model), params(&mut p1.model));
    assert_eq!(params(&mut p0.ema), params(&mut p1.ema));
    assert_eq!(params(p0.disc.as_mut().unwrap()), params(p1.disc.as_mut().unwrap()));

    let dm = max_diff(&params(&mut one.model), &params(&mut p0.model));
    let de = max_diff(&params(&mut one.ema), &params(&mut p0.ema));
    let (d1, d2) = (params(one.disc.as_mut().unwrap()), params(p0.disc.as_mut().unwrap()));
    let dd = max_diff_of(&d1, &d2, |k| !before_batch_norm(k));
    let noise = max_diff_of(&d1, &d2, before_batch_norm);
    println!(
        "2 peers vs 1 device after 4 steps: max |Δw| model {dm:.2e}, EMA {de:.2e}, discriminator {dd:.2e} (biases before BatchNorm: {noise:.2e})"
    );
    assert!(dm < 1e-5 && de < 1e-5 && dd < 1e-5, "model {dm:.2e}, EMA {de:.2e}, discriminator {dd:.2e}");
    // Zero-gradient biases: at most one lr-sized step apart per discriminator step (lr ≤ 1e-3).
    assert!(noise < 4e-3, "{noise:.2e}");
    for (a, b) in one_logs.iter().zip(&l0) {
        assert_eq!(a.mask_ratio, b.mask_ratio);
        for (what, x, y) in [
            ("rec", a.rec, b.rec),
            ("perceptual", a.perceptual, b.perceptual),
            ("total", a.total, b.total),
            ("grad_norm", a.grad_norm, b.grad_norm),
            ("hog", a.aux["hog"], b.aux["hog"]),
            ("lambda", a.lambda.unwrap_or(0.0), b.lambda.unwrap_or(0.0)),
            ("d_loss", a.d_loss.unwrap_or(0.0), b.d_loss.unwrap_or(0.0)),
            ("lecam", a.lecam.unwrap_or(0.0), b.lecam.unwrap_or(0.0)),
        ] {
            assert!(close(x, y), "step {}: {what} {x} (1 device) vs {y} (2 peers)", a.step);
        }
    }
    assert!((one.lecam.ema_real - p0.lecam.ema_real).abs() < 1e-5 && (one.lecam.ema_fake - p0.lecam.ema_fake).abs() < 1e-5);
}

/// On 2 peers, 2 steps, a checkpoint, a resume and 2 more steps equal 4 steps straight, bit for
/// bit; a batch that does not split over the peers is refused on every peer.
#[test]
fn two_peers_resume_exactly_and_refuse_uneven_batches() {
    let _serial = serial();
    let device = Default::default();
    let (nets, data) = (nets(&device, true), data());
    let fresh = || TokenizerTrainer::<A>::new(args(), "tiny", config(2), Some(disc(&device)), &device).unwrap();
    let mut straight = run_on_peers(&fresh(), &nets, &data, 2, 4).swap_remove(0);

    let dir = tempfile::tempdir().unwrap();
    let (mut first, mut logs) = run_on_peers(&fresh(), &nets, &data, 2, 2).swap_remove(0);
    first.save_checkpoint(dir.path(), 2).unwrap();
    drop(first);
    let resumed = TokenizerTrainer::<A>::resume(dir.path(), &device).unwrap().expect("a checkpoint");
    let (mut second, more) = run_on_peers(&resumed, &nets, &data, 2, 2).swap_remove(0);
    logs.extend(more);
    assert_eq!(without_time(straight.1), without_time(logs));
    assert_eq!(params(&mut straight.0.model), params(&mut second.model));
    assert_eq!(params(&mut straight.0.ema), params(&mut second.ema));
    assert_eq!(params(straight.0.disc.as_mut().unwrap()), params(second.disc.as_mut().unwrap()));

    // Peers given different numbers of rows: the shard check names it before any collective.
    let w = World::local(2);
    let t = fresh();
    let states: Vec<_> = (0..2).map(|k| (t.fork(w.peer(k), &device), nets.fork(&device))).collect();
    let err = run_peers::<NdArray<f32>, _, _, TrainError, _>(&w, &[device, device], states, |peer, (mut t, nets)| {
        let rows = if peer.rank == 0 { 0..3 } else { 3..4 };
        let imgs = data.batch_rows(0, 4, rows).unwrap();
        t.step(images_to_tensor::<A>(&imgs, &device), &nets).map(|_| ())
    })
    .expect_err("uneven shards are refused")
    .to_string();
    assert!(err.contains("3 images") && err.contains("0..2"), "{err}");
}

/// Environment of a node process started by [`two_processes_train_the_tokenizer_like_one`].
const NODE_ENV: &str = "MAETOK_TEST_TOKENIZER_NODE";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The tokenizer's and the discriminator's weights (but the zero-gradient biases, see
/// [`before_batch_norm`]) in key order.
fn flat_weights(t: &mut TokenizerTrainer<A>) -> Vec<f32> {
    let mut all: Vec<f32> = params(&mut t.model).into_values().flat_map(|(_, v)| v).collect();
    all.extend(params(t.disc.as_mut().unwrap()).into_iter().filter(|(k, _)| !before_batch_norm(k)).flat_map(|(_, (_, v))| v));
    all
}

/// One node of the two-process run: `rank coordinator-port data-port dir`; 3 steps on its half
/// of every batch, then its weights written to `dir/node-RANK.bin`.
fn node_main(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    let [rank, coord, data_port, dir] = parts[..] else { panic!("bad {NODE_ENV}: {spec}") };
    let device: burn::backend::ndarray::NdArrayDevice = Default::default();
    let world = World {
        local_devices: 1,
        node: Some(maetok_train::parallel::NodeSpec {
            num_nodes: 2,
            node_rank: rank.parse().unwrap(),
            coordinator: format!("127.0.0.1:{coord}"),
            host: Some("127.0.0.1".into()),
            data_port: Some(data_port.parse().unwrap()),
        }),
        timeout: std::time::Duration::from_secs(60),
    };
    let (nets, images) = (nets(&device, true), data());
    let t = TokenizerTrainer::<A>::new(args(), "tiny", config(2), Some(disc(&device)), &device).unwrap();
    let mut t = run_peers::<NdArray<f32>, _, _, TrainError, _>(&world, &[device], vec![t], |peer, mut t| {
        t.peer = peer;
        let batch = t.config.batch_size;
        for _ in 0..3 {
            let imgs = images.batch_rows(t.step, batch, peer.shard(batch)).unwrap();
            t.step(images_to_tensor::<A>(&imgs, &device), &nets)?;
        }
        Ok(t)
    })
    .unwrap()
    .remove(0);
    let w: Vec<u8> = flat_weights(&mut t).iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(std::path::Path::new(dir).join(format!("node-{rank}.bin")), w).unwrap();
}

/// Two processes on 127.0.0.1 (`--num-nodes 2`, one peer each) against one process with the
/// whole batch: the readout gather, λ's all-reduced gradients and the gradient means all cross
/// machines through Burn's global collective. Bounded: a node that hangs is killed.
#[test]
fn two_processes_train_the_tokenizer_like_one() {
    if let Ok(spec) = std::env::var(NODE_ENV) {
        return node_main(&spec);
    }
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (coord, d0, d1) = (free_port(), free_port(), free_port());
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = [(0, d0), (1, d1)]
        .into_iter()
        .map(|(rank, data_port)| {
            std::process::Command::new(&exe)
                .args(["two_processes_train_the_tokenizer_like_one", "--exact", "--nocapture", "--test-threads=1"])
                .env(NODE_ENV, format!("{rank} {coord} {data_port} {}", tmp.path().display()))
                .spawn()
                .unwrap()
        })
        .collect();
    let device = Default::default();
    let (nets, images) = (nets(&device, true), data());
    let mut one = TokenizerTrainer::<A>::new(args(), "tiny", config(2), Some(disc(&device)), &device).unwrap();
    run(&mut one, &nets, &images, 3);
    let want = flat_weights(&mut one);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut status = [None, None];
    while status.iter().any(Option::is_none) && std::time::Instant::now() < deadline {
        for (k, c) in children.iter_mut().enumerate() {
            if status[k].is_none() {
                status[k] = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for c in &mut children {
        let _ = c.kill();
    }
    for (rank, s) in status.iter().enumerate() {
        let s = s.unwrap_or_else(|| panic!("node {rank} did not finish within 180 s"));
        assert!(s.success(), "node {rank} failed: {s}");
    }
    for rank in 0..2 {
        let bytes = std::fs::read(tmp.path().join(format!("node-{rank}.bin"))).unwrap();
        let got: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got.len(), want.len());
        let diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("node {rank} of 2 processes vs 1 process after 3 tokenizer steps: max |Δw| = {diff:.3e}");
        assert!(diff < 1e-5, "node {rank} ends {diff} away from one process");
    }
}
