//! The discriminator update step end to end on the autodiff backend, with the narrowed
//! disc-tiny weights: DiffAugment (weak and strong) → DinoDisc in training mode → hinge + LeCam +
//! consistency loss → backward → Adam(β 0.9/0.95). The consistency term is computed but weighted
//! 0 here (with the reference's weight 4 the heads need far more than a test's few steps to move
//! the hinge loss). Only the heads learn; the trunk stays frozen,
//! the loss is exactly zero before `disc_start`, and the generator's GAN loss reaches the images.

use burn::backend::{Autodiff, NdArray};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use maetok_nn::io::Exporter;
use maetok_nn::testing::fixtures_dir;
use maetok_targets::disc::{discriminator_loss, hinge_g_loss, load_dino_disc, DiffAugPolicy, DinoDisc, DiscResize, GanWeights, LeCam};
use rand::{Rng, SeedableRng};

mod common;

type B = Autodiff<NdArray<f32>>;

fn load() -> DinoDisc<B> {
    let dir = fixtures_dir().join("disc-tiny");
    let config = common::disc_config();
    let heads = dir.join("disc_heads.safetensors");
    load_dino_disc::<B>(dir.join("dino_backbone.safetensors"), Some(heads.as_path()), &config, &Default::default()).unwrap().0
}

/// Smooth "real" images and noisy "fake" ones, `[4, 3, 64, 64]` in [-1, 1].
fn batch() -> (Tensor<B, 4>, Tensor<B, 4>) {
    let device = Default::default();
    let real: Vec<f32> = (0..4 * 3 * 64 * 64)
        .map(|i| {
            let (c, y, x) = ((i / 4096) % 3, (i / 64) % 64, i % 64);
            ((x as f32 * 0.1 + c as f32).sin() * (y as f32 * 0.07).cos()) * 0.8
        })
        .collect();
    let real = Tensor::from_data(TensorData::new(real, [4, 3, 64, 64]), &device);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let noise: Vec<f32> = (0..4 * 3 * 64 * 64).map(|_| rng.random_range(-1.0..1.0)).collect();
    let fake = Tensor::from_data(TensorData::new(noise, [4, 3, 64, 64]), &device);
    (real, fake)
}

fn state(disc: &mut DinoDisc<B>) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut ex = Exporter::new();
    disc.visit_heads(&mut ex);
    maetok_nn::io::VisitParams::visit_params(&mut disc.backbone, "trunk", &mut ex);
    ex.tensors().clone()
}

#[test]
fn heads_learn_trunk_stays_frozen() {
    let mut disc = load();
    let (real, fake) = batch();
    let weights = GanWeights { disc_start: 3, cr_weight: 0.0, ..GanWeights::default() };
    let mut lecam = LeCam::default();
    let mut optim = AdamConfig::new().with_beta_1(0.9).with_beta_2(0.95).init();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let before = state(&mut disc);
    let mut losses = Vec::new();
    for step in 1..=24u64 {
        let weak = DiffAugPolicy::weak();
        let lr = disc.forward(weak.apply(real.clone(), &mut rng), DiscResize::Interpolate, true).unwrap();
        let lf = disc.forward(weak.apply(fake.clone(), &mut rng), DiscResize::Interpolate, true).unwrap();
        let strong = (step >= weights.disc_start).then(|| {
            let s = DiffAugPolicy::strong();
            let sr = disc.forward(s.apply(real.clone(), &mut rng), DiscResize::Interpolate, true).unwrap();
            let sf = disc.forward(s.apply(fake.clone(), &mut rng), DiscResize::Interpolate, true).unwrap();
            (sr, sf)
        });
        let loss = discriminator_loss(&weights, step, &mut lecam, lr, lf, strong);
        let total: f32 = loss.total.clone().into_scalar();
        if step < weights.disc_start {
            assert_eq!(total, 0.0, "step {step}: loss before disc_start");
        } else {
            assert!(loss.consistency.as_ref().is_some_and(|c| c.clone().into_scalar().is_finite()));
            losses.push(loss.hinge.clone().into_scalar());
        }
        let grads = GradientsParams::from_grads(loss.total.backward(), &disc);
        disc = optim.step(3e-3, disc, grads);
        if step == weights.disc_start - 1 {
            // Zero loss → zero gradients → Adam leaves every trained weight where it was.
            let now = state(&mut disc);
            for (k, (_, v)) in &before {
                if k.ends_with("weight_orig") || k.ends_with(".bias") || k.ends_with(".weight") {
                    assert_eq!(&now[k].1, v, "{k} moved before disc_start");
                }
            }
        }
    }
    println!("hinge per step from disc_start: {losses:?}");
    let avg = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (avg(&losses[..4]), avg(&losses[losses.len() - 4..]));
    assert!(last < first * 0.96, "hinge loss did not fall: {first} -> {last}");
    assert!(lecam.ema_real > lecam.ema_fake, "{lecam:?}");
    let after = state(&mut disc);
    let moved = |k: &str| before[k].1 != after[k].1;
    assert!(moved("heads.0.0.0.weight_orig") && moved("heads.2.1.fn.0.weight_orig") && moved("heads.1.2.bias"));
    assert!(moved("heads.0.0.1.running_mean") && moved("heads.0.0.0.weight_u"));
    for k in before.keys().filter(|k| k.starts_with("trunk")) {
        assert!(!moved(k), "frozen trunk parameter {k} changed");
    }
}

#[test]
fn generator_loss_reaches_the_images() {
    let mut disc = load();
    let (_, fake) = batch();
    let fake = fake.require_grad();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let logits = disc.forward(DiffAugPolicy::weak().apply(fake.clone(), &mut rng), DiscResize::Interpolate, false).unwrap();
    let grads = hinge_g_loss(logits).backward();
    let g = fake.grad(&grads).expect("gradient on the generated images");
    let norm: f32 = g.powi_scalar(2).sum().sqrt().into_scalar();
    assert!(norm > 0.0 && norm.is_finite(), "{norm}");
}
