//! SiT parity with the official code (`fixtures/sit-tiny`): forward pass and intermediates,
//! classifier-free guidance on the doubled batch, the qk-norm variant, every loss variant.
//! Every size and tolerance comes from the fixture (`config.json`, `meta.json`).

use burn::backend::NdArray;
use maetok_generator::LatentTransformerConfig;
use maetok_nn::testing::{assert_close_elementwise, Fixture};
use maetok_sampler::guidance::guided_prediction;
use maetok_sampler::{PathType, TimeSampling};
use maetok_sit::{load_sit, save_sit, si_loss, LossDraws, Sit};

type B = NdArray<f32>;

fn fixture() -> Fixture {
    Fixture::open("sit-tiny", "fixture.safetensors")
}

fn model(fx: &Fixture) -> (Sit<B>, LatentTransformerConfig) {
    let (m, cfg, report) = load_sit::<B>(&fx.dir, &Default::default()).unwrap();
    assert!(report.ignored.is_empty());
    (m, cfg)
}

#[test]
fn forward_intermediates_and_cfg_match() {
    let fx = fixture();
    let d = Default::default();
    let (m, cfg) = model(&fx);
    let (l, dim) = (cfg.input_size, cfg.hidden_size);
    fx.check("expected/pos_embed", m.pos_embed.val().reshape([l, dim]));
    // The recomputed table equals the stored one (it is what a fresh model starts from).
    let fresh: Vec<f64> = maetok_nn::sincos_1d(dim, l).into_iter().map(f64::from).collect();
    let (atol, rtol) = fx.tolerance("expected/pos_embed");
    assert_close_elementwise("sincos_1d", &fresh, &fx.get("expected/pos_embed").1, atol, rtol);

    let (x, t, y) = (fx.float::<B, 3>("inputs/x", &d), fx.float::<B, 1>("inputs/t", &d), fx.int::<B, 1>("inputs/y", &d));
    fx.check("forward/intermediate/t_freq", maetok_nn::timestep_features(t.clone()));
    let (out, inter) = m.forward_intermediates(x, t, y);
    fx.check("forward/intermediate/x_embed", inter.x_embed);
    fx.check("forward/intermediate/t_embed", inter.t_embed);
    fx.check("forward/intermediate/y_embed", inter.y_embed);
    assert_eq!(inter.blocks.len(), cfg.depth);
    for (i, b) in inter.blocks.into_iter().enumerate() {
        fx.check(&format!("forward/intermediate/block{i}_out"), b);
    }
    fx.check("forward/out", out);

    // CFG: the recorded doubled batch [x; x] with labels [y; null], and the guided velocity
    // from the workspace's one guidance routine on the conditional half.
    let (cx, ct, cy) = (fx.float::<B, 3>("cfg/x", &d), fx.float::<B, 1>("cfg/t", &d), fx.int::<B, 1>("cfg/y", &d));
    fx.check("cfg/out", m.forward(cx.clone(), ct.clone(), cy.clone()));
    let n = cx.dims()[0] / 2;
    assert!(fx.ints("cfg/y")[n..].iter().all(|&v| v == m.null_class() as i64), "the second half is the null class");
    let guided = guided_prediction(&m, cx.narrow(0, 0, n), ct.narrow(0, 0, n), cy.narrow(0, 0, n), fx.scalar("cfg/scale"), cfg.in_channels);
    fx.check("cfg/guided", guided);
}

#[test]
fn qk_norm_variant_matches() {
    let fx = fixture();
    let d = Default::default();
    let (m, cfg, _) = load_sit::<B>(fx.dir.join("qknorm"), &d).unwrap();
    assert_eq!(cfg.qk_norm, Some(true));
    let out = m.forward(fx.float::<B, 3>("inputs/x", &d), fx.float::<B, 1>("inputs/t", &d), fx.int::<B, 1>("inputs/y", &d));
    fx.check("qknorm/out", out);
}

/// `linear_uniform`, `cosine_lognormal_trainmode`, … → (path, time sampling, train mode).
fn variant(name: &str) -> (PathType, TimeSampling, bool) {
    let path = if name.starts_with("cosine") { PathType::Cosine } else { PathType::Linear };
    let sampling = if name.contains("lognormal") { TimeSampling::LogNormal } else { TimeSampling::Uniform };
    (path, sampling, name.contains("trainmode"))
}

#[test]
fn every_loss_variant_matches() {
    let fx = fixture();
    let d = Default::default();
    let (m, cfg) = model(&fx);
    let (x0, y) = (fx.float::<B, 3>("loss/x0", &d), fx.int::<B, 1>("loss/y", &d));
    let b = x0.dims()[0];
    let variants: Vec<String> = fx.children("loss/").into_iter().filter(|v| fx.has(&format!("loss/{v}/denoising_loss"))).collect();
    assert!(!variants.is_empty());
    for name in variants {
        let (path, sampling, train) = variant(&name);
        let p = |k: &str| format!("loss/{name}/{k}");
        let kind = if sampling == TimeSampling::Uniform { "rand" } else { "randn" };
        let draws = LossDraws {
            time: fx.float::<B, 3>(&p(&format!("draws/00_{kind}")), &d).reshape([b]),
            noise: fx.float::<B, 3>(&p("draws/01_randn"), &d),
            label_drop: train.then(|| fx.float::<B, 1>(&p("draws/02_rand"), &d)),
        };
        let out = si_loss(&m, x0.clone(), y.clone(), path, sampling, cfg.class_dropout_prob, draws);
        fx.check(&p("time_input"), out.t);
        fx.check(&p("alpha_t"), out.alpha);
        fx.check(&p("sigma_t"), out.sigma);
        fx.check(&p("d_alpha_t"), out.d_alpha);
        fx.check(&p("d_sigma_t"), out.d_sigma);
        fx.check(&p("model_input"), out.model_input);
        fx.check(&p("target"), out.target);
        fx.check(&p("model_output"), out.model_output);
        let mean = out.per_sample.clone().mean().into_scalar() as f64;
        fx.check(&p("denoising_loss"), out.per_sample);
        let scalar = format!("loss/{name}/denoising_loss_mean");
        let tol = &fx.meta["scalars"][&scalar]["tolerance"];
        assert_close_elementwise(&scalar, &[mean], &[fx.scalar(&scalar)], tol["atol"].as_f64().unwrap(), tol["rtol"].as_f64().unwrap());
        if train {
            assert_eq!(out.labels.into_data().to_vec::<i64>().unwrap(), fx.ints(&p("effective_y")), "{name}: label dropout");
        }
    }
}

#[test]
fn save_load_round_trip_and_bad_folders() {
    let fx = fixture();
    let d = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    let (mut m, cfg) = model(&fx);
    save_sit(&mut m, &cfg, tmp.path()).unwrap();
    let (m2, cfg2, _) = load_sit::<B>(tmp.path(), &d).unwrap();
    assert_eq!(cfg2, cfg, "config (including unknown keys) round-trips");
    let run = |m: &Sit<B>| {
        m.forward(fx.float::<B, 3>("inputs/x", &d), fx.float::<B, 1>("inputs/t", &d), fx.int::<B, 1>("inputs/y", &d))
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(run(&m), run(&m2));
    // A config for another size fails naming the mismatched tensors.
    let mut text: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap()).unwrap();
    let other = cfg.hidden_size + 2 * cfg.num_heads;
    text["hidden_size"] = other.into();
    text["decoder_hidden_size"] = other.into();
    std::fs::write(tmp.path().join("config.json"), text.to_string()).unwrap();
    let err = load_sit::<B>(tmp.path(), &d).err().unwrap().to_string();
    assert!(err.contains("x_embedder.weight") && err.contains("mis-shaped"), "{err}");
    let err = load_sit::<B>("/nonexistent/sit", &d).err().unwrap().to_string();
    assert!(err.contains("/nonexistent/sit"), "{err}");
    text["vae_1d"] = false.into();
    std::fs::write(tmp.path().join("config.json"), text.to_string()).unwrap();
    let err = load_sit::<B>(tmp.path(), &d).err().unwrap().to_string();
    assert!(err.contains("vae_1d"), "{err}");
    // A DiT folder is not a SiT.
    text["vae_1d"] = true.into();
    text["learn_sigma"] = true.into();
    std::fs::write(tmp.path().join("config.json"), text.to_string()).unwrap();
    let err = load_sit::<B>(tmp.path(), &d).err().unwrap().to_string();
    assert!(err.contains("learn_sigma") && err.contains("DiT"), "{err}");
}

#[test]
fn presets_have_the_published_sizes_and_unknown_ones_are_named() {
    let xl = maetok_sit::preset("SiT-XL/1", 128, 32).unwrap();
    assert_eq!((xl.depth, xl.hidden_size, xl.num_heads), (28, 1152, 16));
    // SiT-XL/1 on the (128, 32) latent: 675,000,608 parameters (spec §2.8), counted lazily.
    let mut m = xl.init::<B>(&Default::default());
    let mut lister = maetok_nn::io::ShapeLister::default();
    maetok_nn::io::VisitParams::<B>::visit_params(&mut m, "", &mut lister);
    let total: usize = lister.entries.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!((lister.entries.len(), total), (292, 675_000_608));
    let err = maetok_sit::preset("SiT-Q/2", 128, 32).unwrap_err().to_string();
    assert!(err.contains("SiT-Q/2") && err.contains("SiT-XL"), "{err}");
}
