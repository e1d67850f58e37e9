//! DiT + DDPM parity with the official code (`fixtures/dit-tiny`): forward and intermediates,
//! guided forward, every schedule table (incl. respacing), the hybrid loss, and every recorded
//! sampling run step by step. Every size, run setting and tolerance comes from the fixture.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_dit::{hybrid_loss, load_dit, Dit};
use maetok_nn::testing::{assert_close_elementwise, read_tensors_f64, Fixture};
use maetok_sampler::diffusion::{space_timesteps, Update};
use maetok_sampler::guidance::guided_prediction;
use maetok_sampler::{GaussianDiffusion, Guidance, Schedule};

type B = NdArray<f32>;

fn fixture() -> Fixture {
    Fixture::open("dit-tiny", "fixture.safetensors")
}

fn model(fx: &Fixture) -> Dit<B> {
    let (m, cfg, report) = load_dit::<B>(&fx.dir, &Default::default()).unwrap();
    assert!(report.ignored.is_empty());
    assert_eq!(m.out_channels(), 2 * cfg.in_channels);
    m
}

fn schedule(name: &str) -> Schedule {
    if name.starts_with("cosine") {
        Schedule::Cosine
    } else {
        Schedule::Linear
    }
}

/// The `create_diffusion(spacing, schedule)` a meta.json description names.
fn parse_diffusion(desc: &str) -> GaussianDiffusion {
    let spacing = desc.split('\'').nth(1).expect("a quoted respacing");
    GaussianDiffusion::new(schedule(desc.split("noise_schedule='").nth(1).unwrap()), 1000, spacing).unwrap()
}

#[test]
fn forward_and_guided_forward_match() {
    let fx = fixture();
    let d = Default::default();
    let m = model(&fx);
    let c = m.latent_shape()[1];
    let (x, t, y) = (fx.float::<B, 3>("inputs/x", &d), fx.int::<B, 1>("inputs/t", &d).float(), fx.int::<B, 1>("inputs/y", &d));
    fx.check("forward/intermediate/t_freq", maetok_nn::timestep_features(t.clone()));
    let (out, inter) = m.forward_intermediates(x, t, y);
    fx.check("forward/intermediate/x_embed", inter.x_embed);
    fx.check("forward/intermediate/t_embed", inter.t_embed);
    fx.check("forward/intermediate/y_embed", inter.y_embed);
    for (i, b) in inter.blocks.into_iter().enumerate() {
        fx.check(&format!("forward/intermediate/block{i}_out"), b);
    }
    fx.check("forward/out", out);

    // The reference's forward_with_cfg on [x_half; x_half] with labels [y; null]: the guided
    // prediction of the conditional half is the first half of its output; its second half
    // repeats the guided ε with the unconditional v.
    let (cx, ct, cy) = (fx.float::<B, 3>("cfg/x", &d), fx.int::<B, 1>("cfg/t", &d).float(), fx.int::<B, 1>("cfg/y", &d));
    let raw = m.forward(cx.clone(), ct.clone(), cy.clone());
    fx.check("cfg/raw_out", raw.clone());
    let n = cx.dims()[0] / 2;
    let guided = guided_prediction(&m, cx.narrow(0, 0, n), ct.narrow(0, 0, n), cy.narrow(0, 0, n), fx.scalar("cfg/scale"), c);
    let eps = guided.clone().narrow(2, 0, c);
    let second = Tensor::cat(vec![eps, raw.narrow(0, n, n).narrow(2, c, c)], 2);
    fx.check("cfg/out", Tensor::cat(vec![guided, second], 0));
}

#[test]
fn schedules_and_respacing_match() {
    let fx = fixture();
    let exact = read_tensors_f64(fx.dir.join("schedules_f64.safetensors"));
    let runs = fx.children("schedule/");
    assert!(!runs.is_empty());
    for name in runs {
        let (sched, spacing) = name.split_once('_').unwrap();
        let base = 1000;
        let spacing = if spacing == base.to_string() { "" } else { spacing };
        let dif = GaussianDiffusion::new(schedule(sched), base, spacing).unwrap();
        let key = |k: &str| format!("schedule/{name}/{k}");
        assert_eq!(dif.timestep_map.iter().map(|&v| v as i64).collect::<Vec<_>>(), fx.ints(&key("timestep_map")), "{name}/timestep_map");
        for (table, ours) in [
            ("betas", &dif.betas),
            ("alphas_cumprod", &dif.alphas_cumprod),
            ("alphas_cumprod_prev", &dif.alphas_cumprod_prev),
            ("posterior_variance", &dif.posterior_variance),
            ("posterior_log_variance_clipped", &dif.posterior_log_variance_clipped),
            ("posterior_mean_coef1", &dif.posterior_mean_coef1),
            ("posterior_mean_coef2", &dif.posterior_mean_coef2),
            ("sqrt_recip_alphas_cumprod", &dif.sqrt_recip_alphas_cumprod),
            ("sqrt_recipm1_alphas_cumprod", &dif.sqrt_recipm1_alphas_cumprod),
        ] {
            // The f64 copies: to 1e-12 relative (the f32 ones within their meta.json tolerance).
            let want = &exact.get(&key(table)).unwrap_or_else(|| panic!("no f64 table {}", key(table))).1;
            assert_close_elementwise(&key(table), ours, want, 1e-15, 1e-12);
            fx.check_values(&key(table), &[ours.len()], ours);
        }
    }
    // The spec's check values, incl. the banker's-rounding case "25".
    assert_eq!(&space_timesteps(1000, "250").unwrap()[..4], &[0, 4, 8, 12]);
    assert_eq!(&space_timesteps(1000, "100").unwrap()[..7], &[0, 10, 20, 30, 40, 50, 61]);
    assert!(space_timesteps(1000, "ddim999").unwrap_err().to_string().contains("ddim999"));
    assert!(space_timesteps(10, "20").is_err());
}

#[test]
fn hybrid_losses_match() {
    let fx = fixture();
    let d = Default::default();
    let m = model(&fx);
    let x0 = fx.float::<B, 3>("loss/x0", &d);
    let k: Vec<usize> = fx.ints("loss/t").into_iter().map(|v| v as usize).collect();
    let cfg_p = {
        let cfg = maetok_generator::read_config(&fx.dir, |_| {}).unwrap();
        cfg.class_dropout_prob
    };
    let variants: Vec<String> = fx.children("loss/").into_iter().filter(|v| fx.has(&format!("loss/{v}/loss"))).collect();
    assert!(!variants.is_empty());
    for name in variants {
        let dif = GaussianDiffusion::new(schedule(&name), 1000, "").unwrap();
        let p = |key: &str| format!("loss/{name}/{key}");
        let mut y = fx.int::<B, 1>("loss/y", &d);
        if fx.has(&p("draws/01_rand")) {
            y = m.drop_labels(y, fx.float::<B, 1>(&p("draws/01_rand"), &d), cfg_p);
            assert_eq!(y.clone().into_data().to_vec::<i64>().unwrap(), fx.ints(&p("effective_y")));
        }
        let out = hybrid_loss(&m, &dif, x0.clone(), &k, fx.float::<B, 3>(&p("draws/00_randn"), &d), y);
        fx.check(&p("x_t"), out.x_t);
        fx.check(&p("model_t"), out.model_t);
        fx.check(&p("model_output"), out.model_output);
        for (term, v) in [("mse", out.mse), ("vb", out.vb), ("loss", out.loss)] {
            let mean = v.clone().mean().into_scalar() as f64;
            fx.check(&p(term), v);
            let scalar = format!("loss/{name}/{term}_mean");
            let tol = &fx.meta["scalars"][&scalar]["tolerance"];
            assert_close_elementwise(&scalar, &[mean], &[fx.scalar(&scalar)], tol["atol"].as_f64().unwrap(), tol["rtol"].as_f64().unwrap());
        }
    }
}

#[test]
fn sampling_runs_replay() {
    let fx = fixture();
    let d = Default::default();
    let m = model(&fx);
    let runs = fx.meta["runs"].as_object().expect("meta.json runs").clone();
    assert!(!runs.is_empty());
    for (run, spec) in runs {
        let dif = parse_diffusion(spec["diffusion"].as_str().unwrap());
        assert_eq!(
            dif.timestep_map.iter().map(|&v| v as u64).collect::<Vec<_>>(),
            spec["timestep_map"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>()
        );
        let model_fn = spec["model_fn"].as_str().unwrap();
        let scale: f64 = model_fn.split("cfg_scale=").nth(1).map(|s| s.trim_end_matches(')').parse().unwrap()).unwrap_or(1.0);
        let update = match spec["loop"].as_str().unwrap().split("eta=").nth(1) {
            Some(eta) => Update::Ddim { eta: eta.trim_end_matches(')').parse().unwrap() },
            None => Update::Ancestral,
        };
        // Guided runs use generate_dit.py's doubled layout [z; z] with labels [y; null], in
        // which the model only reads the first half: the first half's trajectory is the
        // guided sampler's on the conditional rows.
        let x_full = fx.float::<B, 3>(&format!("{run}/x_T"), &d);
        let rows = if scale > 1.0 { x_full.dims()[0] / 2 } else { x_full.dims()[0] };
        let half = |t: Tensor<B, 3>| t.narrow(0, 0, rows);
        let y = fx.int::<B, 1>(&format!("{run}/y"), &d).narrow(0, 0, rows);
        // Every run starts from the shared initial noise and labels of `sample/*`.
        let sz = fx.get("sample/z").1.len();
        assert_eq!(&fx.get(&format!("{run}/x_T")).1[..sz], fx.get("sample/z").1.as_slice(), "{run}: x_T is sample/z");
        assert_eq!(&fx.ints(&format!("{run}/y"))[..fx.ints("sample/y").len()], fx.ints("sample/y").as_slice(), "{run}: y is sample/y");
        let n_draws = spec["n_draws"].as_u64().unwrap() as usize;
        let mut draws = (0..n_draws).map(|i| {
            half(fx.float::<B, 3>(&format!("{run}/draws/{i:02}_randn"), &d)).into_data().convert::<f64>().to_vec::<f64>().unwrap()
        });
        let mut noise = |n: usize| {
            let v = draws.next().expect("a recorded draw per step");
            assert_eq!(v.len(), n);
            v
        };
        let mut steps = Vec::new();
        let out = dif.sample_loop(&m, half(x_full), y, update, Guidance::always(scale), &mut noise, |s| steps.push(s)).unwrap();
        assert_eq!(steps.len(), n_draws);
        for (i, s) in steps.into_iter().enumerate() {
            let p = |key: &str| format!("{run}/steps/{i:02}/{key}");
            assert_eq!(fx.ints(&p("t_index")), vec![s.k as i64]);
            assert!(fx.ints(&p("model_t")).iter().all(|&t| t == s.model_t as i64), "{}", p("model_t"));
            for (key, ours) in [("model_out", s.model_out), ("pred_xstart", s.pred_xstart), ("sample", s.sample)] {
                let (want_shape, want) = fx.get(&p(key));
                let per_row = want.len() / want_shape[0];
                let (shape, v) = (ours.dims().to_vec(), ours.into_data().convert::<f64>().to_vec::<f64>().unwrap());
                let (atol, rtol) = fx.tolerance(&p(key));
                assert_eq!(&shape[1..], &want_shape[1..], "{}", p(key));
                assert_close_elementwise(&p(key), &v, &want[..rows * per_row], atol, rtol);
            }
        }
        let fin = if scale > 1.0 { format!("{run}/final_first_half") } else { format!("{run}/final") };
        fx.check(&fin, out);
    }
}

#[test]
fn presets_have_the_published_sizes() {
    for (name, params) in [
        ("DiT-XL/1", 675_037_504usize),
        ("DiT-L/1", 458_020_928),
        ("DiT-SL/1", 306_903_104),
        ("DiT-B/2", 130_451_008),
        ("DiT-S/2", 32_932_672),
    ] {
        let mut m = maetok_dit::preset(name, 128, 32).unwrap().init::<B>(&Default::default());
        let mut lister = maetok_nn::io::ShapeLister::default();
        maetok_nn::io::VisitParams::<B>::visit_params(&mut m, "", &mut lister);
        let total: usize = lister.entries.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(total, params, "{name}");
    }
    assert!(maetok_dit::preset("DiT-M", 128, 32).unwrap_err().to_string().contains("DiT-M"));
}
