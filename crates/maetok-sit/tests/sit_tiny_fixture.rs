//! SiT parity with the official code (`fixtures/sit-tiny`): forward pass and intermediates,
//! classifier-free guidance on the doubled batch, the qk-norm variant, every loss variant.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use maetok_nn::testing::errors;
use maetok_sit::{load_sit, save_sit, si_loss, LossDraws, PathType, Sit, TimeSampling};

type B = NdArray<f32>;

fn dir() -> PathBuf {
    maetok_nn::testing::fixtures_dir().join("sit-tiny")
}

fn tensors() -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    maetok_nn::testing::read_tensors_f64(dir().join("fixture.safetensors"))
}

fn f<const D: usize>(t: &(Vec<usize>, Vec<f64>)) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.1.iter().map(|&v| v as f32).collect::<Vec<_>>(), t.0.clone()), &Default::default())
}

fn int(t: &(Vec<usize>, Vec<f64>)) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(t.1.iter().map(|&v| v as i64).collect::<Vec<_>>(), t.0.clone()), &Default::default())
}

fn check<const D: usize>(name: &str, ours: Tensor<B, D>, want: &(Vec<usize>, Vec<f64>), atol: f32, rtol: f32) {
    assert_eq!(ours.dims().to_vec(), want.0, "{name}: shape");
    let a = ours.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let b: Vec<f32> = want.1.iter().map(|&v| v as f32).collect();
    let (ea, er) = errors(&a, &b);
    println!("{name}: max_abs {ea:.2e} rel {er:.2e}");
    assert!(ea <= atol || er <= rtol, "{name}: max_abs {ea:.3e} rel {er:.3e}");
}

fn model() -> Sit<B> {
    let (m, cfg, report) = load_sit::<B>(dir(), &Default::default()).unwrap();
    assert_eq!((cfg.depth, cfg.hidden_size, cfg.input_size, cfg.in_channels), (2, 64, 16, 8));
    assert!(report.ignored.is_empty());
    m
}

#[test]
fn forward_intermediates_and_cfg_match() {
    let fx = tensors();
    let m = model();
    check("pos_embed (stored)", m.pos_embed.val().reshape([16, 64]), &fx["expected/pos_embed"], 1e-6, 1e-6);
    // The recomputed table equals the stored one (it is what a fresh model starts from).
    let fresh = maetok_nn::sincos_1d(64, 16);
    let (ea, _) = errors(&fresh, &fx["expected/pos_embed"].1.iter().map(|&v| v as f32).collect::<Vec<_>>());
    assert!(ea < 1e-6, "sincos_1d differs by {ea}");
    let (x, t, y) = (f::<3>(&fx["inputs/x"]), f::<1>(&fx["inputs/t"]), int(&fx["inputs/y"]));
    check("t_freq", maetok_nn::timestep_features(t.clone()), &fx["forward/intermediate/t_freq"], 1e-5, 1e-4);
    let (out, tr) = m.forward_traced(x, t, y, true);
    let tr = tr.unwrap();
    check("x_embed", tr.x_embed, &fx["forward/intermediate/x_embed"], 1e-5, 1e-4);
    check("t_embed", tr.t_embed, &fx["forward/intermediate/t_embed"], 1e-5, 1e-4);
    check("y_embed", tr.y_embed, &fx["forward/intermediate/y_embed"], 1e-5, 1e-4);
    for (i, b) in tr.blocks.into_iter().enumerate() {
        check(&format!("block{i}_out"), b, &fx[&format!("forward/intermediate/block{i}_out")], 1e-5, 1e-4);
    }
    check("out", out, &fx["forward/out"], 1e-5, 1e-4);

    // CFG: the model on [x; x] with labels [y; null], combined u + s (c - u).
    let out = m.forward(f::<3>(&fx["cfg/x"]), f::<1>(&fx["cfg/t"]), int(&fx["cfg/y"]));
    check("cfg/out", out.clone(), &fx["cfg/out"], 1e-5, 1e-4);
    let (c, u) = (out.clone().narrow(0, 0, 4), out.narrow(0, 4, 4));
    check("cfg/guided", u.clone() + (c - u) * 1.75, &fx["cfg/guided"], 1e-5, 1e-4);
}

#[test]
fn qk_norm_variant_matches() {
    let fx = tensors();
    let (m, cfg, _) = load_sit::<B>(dir().join("qknorm"), &Default::default()).unwrap();
    assert!(cfg.qk_norm);
    let out = m.forward(f::<3>(&fx["inputs/x"]), f::<1>(&fx["inputs/t"]), int(&fx["inputs/y"]));
    check("qknorm/out", out, &fx["qknorm/out"], 1e-5, 1e-4);
}

#[test]
fn every_loss_variant_matches() {
    let fx = tensors();
    let m = model();
    let (x0, y) = (f::<3>(&fx["loss/x0"]), int(&fx["loss/y"]));
    for (name, path, sampling, train) in [
        ("linear_uniform", PathType::Linear, TimeSampling::Uniform, false),
        ("linear_lognormal", PathType::Linear, TimeSampling::LogNormal, false),
        ("cosine_uniform", PathType::Cosine, TimeSampling::Uniform, false),
        ("cosine_lognormal", PathType::Cosine, TimeSampling::LogNormal, false),
        ("linear_uniform_trainmode", PathType::Linear, TimeSampling::Uniform, true),
    ] {
        let p = |k: &str| &fx[&format!("loss/{name}/{k}")];
        let kind = if sampling == TimeSampling::Uniform { "rand" } else { "randn" };
        let draws = LossDraws {
            time: f::<3>(p(&format!("draws/00_{kind}"))).reshape([4]),
            noise: f::<3>(p("draws/01_randn")),
            label_drop: train.then(|| f::<1>(p("draws/02_rand"))),
        };
        let out = si_loss(&m, x0.clone(), y.clone(), path, sampling, 0.1, draws);
        check(&format!("{name}/time_input"), out.t, p("time_input"), 1e-6, 1e-5);
        check(&format!("{name}/alpha_t"), out.alpha, p("alpha_t"), 1e-6, 1e-5);
        check(&format!("{name}/sigma_t"), out.sigma, p("sigma_t"), 1e-6, 1e-5);
        check(&format!("{name}/d_alpha_t"), out.d_alpha, p("d_alpha_t"), 1e-6, 1e-5);
        check(&format!("{name}/d_sigma_t"), out.d_sigma, p("d_sigma_t"), 1e-6, 1e-5);
        check(&format!("{name}/model_input"), out.model_input, p("model_input"), 1e-5, 1e-4);
        check(&format!("{name}/target"), out.target, p("target"), 1e-5, 1e-4);
        check(&format!("{name}/model_output"), out.model_output, p("model_output"), 1e-5, 1e-4);
        check(&format!("{name}/denoising_loss"), out.per_sample, p("denoising_loss"), 0.0, 1e-5);
        if train {
            let labels: Vec<i64> = out.labels.into_data().to_vec().unwrap();
            let want: Vec<i64> = p("effective_y").1.iter().map(|&v| v as i64).collect();
            assert_eq!(labels, want, "label dropout");
        }
    }
}

#[test]
fn save_load_round_trip_and_bad_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut m, cfg, _) = load_sit::<B>(dir(), &Default::default()).unwrap();
    save_sit(&mut m, &cfg, tmp.path()).unwrap();
    let (m2, cfg2, _) = load_sit::<B>(tmp.path(), &Default::default()).unwrap();
    assert_eq!(cfg2, cfg, "config (including unknown keys) round-trips");
    let fx = tensors();
    let run = |m: &Sit<B>| m.forward(f::<3>(&fx["inputs/x"]), f::<1>(&fx["inputs/t"]), int(&fx["inputs/y"])).into_data().to_vec::<f32>().unwrap();
    assert_eq!(run(&m), run(&m2));
    // A config for another size fails naming the mismatched tensors.
    let mut text: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap()).unwrap();
    text["hidden_size"] = 32.into();
    text["decoder_hidden_size"] = 32.into();
    std::fs::write(tmp.path().join("config.json"), text.to_string()).unwrap();
    let err = load_sit::<B>(tmp.path(), &Default::default()).err().unwrap().to_string();
    assert!(err.contains("x_embedder.weight") && err.contains("mis-shaped"), "{err}");
    let err = load_sit::<B>("/nonexistent/sit", &Default::default()).err().unwrap().to_string();
    assert!(err.contains("/nonexistent/sit"), "{err}");
    text["vae_1d"] = false.into();
    std::fs::write(tmp.path().join("config.json"), text.to_string()).unwrap();
    let err = load_sit::<B>(tmp.path(), &Default::default()).err().unwrap().to_string();
    assert!(err.contains("vae_1d"), "{err}");
}

#[test]
fn presets_have_the_published_sizes_and_unknown_ones_are_named() {
    use maetok_sit::SitConfig;
    let xl = SitConfig::preset("SiT-XL/1", 128, 32).unwrap();
    assert_eq!((xl.depth, xl.hidden_size, xl.num_heads), (28, 1152, 16));
    // SiT-XL/1 on the (128, 32) latent: 675,000,608 parameters (spec §2.8), counted lazily.
    let mut m = Sit::<B>::new(&xl, &Default::default());
    let mut lister = maetok_nn::io::ShapeLister::default();
    maetok_nn::io::VisitParams::<B>::visit_params(&mut m, "", &mut lister);
    let total: usize = lister.entries.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!((lister.entries.len(), total), (292, 675_000_608));
    let err = SitConfig::preset("SiT-Q/2", 128, 32).unwrap_err().to_string();
    assert!(err.contains("SiT-Q/2") && err.contains("SiT-XL"), "{err}");
}
