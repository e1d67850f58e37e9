//! The tiny MaskAE setup of `fixtures/tokenizer-maskae-tiny` (tokenizer, auxiliary decoders and
//! teachers), `lpips-tiny` and `disc-tiny`, every size read from the fixtures.
#![allow(dead_code)] // each test binary uses part of this module

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use maetok_nn::io::Loader;
use maetok_nn::testing::{fixtures_dir, read_tensors};
use maetok_targets::{load_dino_disc, load_lpips_from, load_vit_from, DinoDisc, HogGenerator, Lpips, Vit, VitConfig};
use maetok_tokenizer::config::SIGLIP_TEACHER;
use maetok_tokenizer::{load_mask_ae, MaskAe, TokenMask};
use maetok_train::tokenizer::AuxTeachers;

pub type Map = HashMap<String, (Vec<usize>, Vec<f32>)>;

pub fn maskae_dir() -> PathBuf {
    fixtures_dir().join("tokenizer-maskae-tiny")
}

pub fn meta(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap()
}

/// The MaskAE model of the fixture with every auxiliary decoder its config switches on.
pub fn mask_ae<B: Backend>(device: &B::Device) -> MaskAe<B> {
    let dir = maskae_dir();
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    load_mask_ae::<B>(&args, "tokenizer-maskae-tiny/config.json", dir.join("model.safetensors"), device).unwrap().0
}

fn teacher<B: Backend>(timm: &str, prefix: &str, preset: VitConfig, device: &B::Device) -> Vit<B> {
    let dir = maskae_dir();
    let cfg = maetok_targets::testing::maskae_teacher(&dir, timm, prefix, preset).unwrap();
    let all = read_tensors(dir.join("model.safetensors"));
    let sub: Map = all.into_iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v))).collect();
    load_vit_from(Loader::<B>::from_map(sub, dir.join("model.safetensors"), device), &cfg, device).unwrap().0
}

/// HOG and the narrowed DINOv2 / SigLIP teachers stored in the fixture's checkpoint.
pub fn teachers<B: Backend>(device: &B::Device) -> AuxTeachers<B> {
    let args = maetok_tokenizer::testing::fixture_args(&maskae_dir()).unwrap();
    AuxTeachers {
        hog: Some(HogGenerator::new()),
        dino: Some(teacher(&args.repa_model, "repa_model.", VitConfig::dinov2_large(), device)),
        clip: Some(teacher(SIGLIP_TEACHER, "clip_model.", VitConfig::siglip_so400m(), device)),
    }
}

pub fn lpips<B: Backend>(device: &B::Device) -> Lpips<B> {
    let dir = fixtures_dir().join("lpips-tiny");
    let vgg = Loader::<B>::from_map(maetok_targets::testing::lpips_tiny_vgg(&dir).unwrap(), PathBuf::from("vgg16.pth"), device);
    let lin = Loader::<B>::from_file(dir.join("lpips_lin_vgg.safetensors"), device).unwrap();
    load_lpips_from(vgg, lin, device).unwrap().0
}

pub fn disc<B: Backend>(device: &B::Device) -> DinoDisc<B> {
    let dir = fixtures_dir().join("disc-tiny");
    let config = maetok_targets::testing::disc_tiny(&dir).unwrap();
    let heads = dir.join("disc_heads.safetensors");
    load_dino_disc::<B>(dir.join("dino_backbone.safetensors"), Some(heads.as_path()), &config, device).unwrap().0
}

/// The mask that recorded per-sample orders `[B, N]` (stored as floats) give at `ratio`.
pub fn mask(orders: &(Vec<usize>, Vec<f32>), ratio: f64) -> TokenMask {
    maetok_tokenizer::testing::recorded_mask(orders, ratio).unwrap()
}

/// `(max_abs, rel)` of a tolerance entry of meta.json.
pub fn tol(meta: &serde_json::Value, key: &str) -> (f32, f32) {
    let t = &meta["tolerance"][key];
    (t["max_abs"].as_f64().unwrap_or(0.0) as f32, t["rel"].as_f64().unwrap() as f32)
}

/// Mean over `[B, 3, H, W]` windows of `k × k` → `[B, 3, H/k, W/k]`.
pub fn avg_pool<B: Backend>(x: Tensor<B, 4>, k: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / k, k, w / k, k]).mean_dim(5).mean_dim(3).reshape([b, c, h / k, w / k])
}

/// Every parameter gradient a module's walk reaches, by PyTorch key and in PyTorch layout.
pub fn gradients<B: burn::tensor::backend::AutodiffBackend>(
    walk: impl FnOnce(&mut GradCollector<'_, B>),
    grads: &B::Gradients,
) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut c = GradCollector { grads, out: Default::default() };
    walk(&mut c);
    c.out
}

pub struct GradCollector<'a, B: burn::tensor::backend::AutodiffBackend> {
    grads: &'a B::Gradients,
    out: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl<B: burn::tensor::backend::AutodiffBackend> maetok_nn::io::ParamVisitor<B> for GradCollector<'_, B> {
    fn param<const D: usize>(&mut self, key: &str, param: &mut burn::module::Param<Tensor<B, D>>) {
        if let Some(g) = param.grad(self.grads) {
            self.out.insert(key.to_string(), (g.dims().to_vec(), g.into_data().convert::<f32>().to_vec::<f32>().unwrap()));
        }
    }
    fn param_transposed(&mut self, key: &str, param: &mut burn::module::Param<Tensor<B, 2>>) {
        if let Some(g) = param.grad(self.grads) {
            let g = g.transpose();
            self.out.insert(key.to_string(), (g.dims().to_vec(), g.into_data().convert::<f32>().to_vec::<f32>().unwrap()));
        }
    }
    fn buffer(&mut self, _: &str, _: &[usize], _: &[f32]) {}
}

/// The loss settings of `fixtures/tokenizer-train-step` (its meta.json's `VQLoss`, with the
/// random parts it records as switched off) and the step it was recorded at.
pub fn train_step_loss(meta: &serde_json::Value) -> (maetok_train::tokenizer::TokenizerLoss, u64) {
    use maetok_targets::disc::GanWeights;
    let vq = &meta["config"]["VQLoss"];
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert_eq!(vq["use_diff_aug"], false);
    let loss = maetok_train::tokenizer::TokenizerLoss {
        gan: GanWeights {
            disc_weight: num(&vq["disc_weight"]),
            disc_start: num(&vq["disc_start"]) as u64,
            lecam_weight: num(&vq["lecam_loss_weight"]),
            cr_weight: num(&vq["disc_cr_loss_weight"]),
            perceptual_warmup: num(&vq["perceptual_warmup"]) as u64,
            perceptual_weight: num(&vq["perceptual_weight"]),
            ..GanWeights::default()
        },
        diff_aug: None,
        lpips_dropout: false,
        disc_random_crop: false,
        ..maetok_train::tokenizer::TokenizerLoss::default()
    };
    (loss, num(&vq["global_step"]) as u64)
}
