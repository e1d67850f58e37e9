//! DiT + DDPM parity with the official code (`fixtures/dit-tiny`): forward, guided forward,
//! every schedule table (incl. respacing), the hybrid loss, and every recorded sampling run.

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use maetok_dit::{load_dit, space_timesteps, GaussianDiffusion, Schedule};
use maetok_nn::testing::{errors, fixtures_dir};

type B = NdArray<f32>;
type T = HashMap<String, (Vec<usize>, Vec<f64>)>;

fn read(file: &str) -> T {
    maetok_nn::testing::read_tensors_f64(fixtures_dir().join("dit-tiny").join(file))
}

fn f(t: &(Vec<usize>, Vec<f64>)) -> Tensor<B, 3> {
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

#[test]
fn forward_and_guided_forward_match() {
    let fx = read("fixture.safetensors");
    let (m, cfg, _) = load_dit::<B>(fixtures_dir().join("dit-tiny"), &Default::default()).unwrap();
    assert_eq!(cfg.out_channels(), 16);
    let out = m.forward(f(&fx["inputs/x"]), int(&fx["inputs/t"]), int(&fx["inputs/y"]));
    check("forward/out", out, &fx["forward/out"], 1e-5, 1e-4);
    let (x, t, y) = (f(&fx["cfg/x"]), int(&fx["cfg/t"]), int(&fx["cfg/y"]));
    let half = x.clone().narrow(0, 0, 2);
    check("cfg/raw_out", m.forward(Tensor::cat(vec![half.clone(), half], 0), t.clone(), y.clone()), &fx["cfg/raw_out"], 1e-5, 1e-4);
    check("cfg/out", m.forward_with_cfg(x, t, y, 1.75), &fx["cfg/out"], 1e-5, 1e-4);
}

#[test]
fn schedules_and_respacing_match() {
    let exact = read("schedules_f64.safetensors");
    let fx = read("fixture.safetensors");
    for sched in ["linear", "cosine"] {
        for spacing in ["1000", "10", "25", "ddim10", "ddim25"] {
            let s = if sched == "linear" { Schedule::Linear } else { Schedule::Cosine };
            let d = GaussianDiffusion::new(s, 1000, spacing).unwrap();
            let name = format!("schedule/{sched}_{spacing}");
            let map: Vec<usize> = fx[&format!("{name}/timestep_map")].1.iter().map(|&v| v as usize).collect();
            assert_eq!(d.timestep_map, map, "{name}/timestep_map");
            for (key, ours) in [
                ("betas", &d.betas),
                ("alphas_cumprod", &d.alphas_cumprod),
                ("alphas_cumprod_prev", &d.alphas_cumprod_prev),
                ("posterior_variance", &d.posterior_variance),
                ("posterior_log_variance_clipped", &d.posterior_log_variance_clipped),
                ("posterior_mean_coef1", &d.posterior_mean_coef1),
                ("posterior_mean_coef2", &d.posterior_mean_coef2),
                ("sqrt_recip_alphas_cumprod", &d.sqrt_recip_alphas_cumprod),
                ("sqrt_recipm1_alphas_cumprod", &d.sqrt_recipm1_alphas_cumprod),
            ] {
                let want = &exact[&format!("{name}/{key}")].1;
                assert_eq!(ours.len(), want.len(), "{name}/{key}");
                for (i, (a, b)) in ours.iter().zip(want).enumerate() {
                    assert!((a - b).abs() <= 1e-12 * b.abs().max(1e-300) || (a - b).abs() < 1e-15, "{name}/{key}[{i}]: {a} vs {b}");
                }
            }
        }
    }
    // The spec's check values, incl. the banker's-rounding case "25".
    assert_eq!(&space_timesteps(1000, "250").unwrap()[..4], &[0, 4, 8, 12]);
    assert_eq!(&space_timesteps(1000, "100").unwrap()[..7], &[0, 10, 20, 30, 40, 50, 61]);
    assert!(space_timesteps(1000, "ddim999").is_err());
    assert!(space_timesteps(10, "20").is_err());
}

#[test]
fn hybrid_losses_match() {
    let fx = read("fixture.safetensors");
    let (m, _, _) = load_dit::<B>(fixtures_dir().join("dit-tiny"), &Default::default()).unwrap();
    let x0 = f(&fx["loss/x0"]);
    let k: Vec<usize> = fx["loss/t"].1.iter().map(|&v| v as usize).collect();
    for (name, sched, train) in [("linear", Schedule::Linear, false), ("cosine", Schedule::Cosine, false), ("cosine_trainmode", Schedule::Cosine, true)] {
        let d = GaussianDiffusion::new(sched, 1000, "").unwrap();
        let p = |key: &str| &fx[&format!("loss/{name}/{key}")];
        let mut y = int(&fx["loss/y"]);
        if train {
            let u = Tensor::<B, 1>::from_data(TensorData::new(p("draws/01_rand").1.iter().map(|&v| v as f32).collect::<Vec<_>>(), [4]), &Default::default());
            let drop: Tensor<B, 1, Bool> = u.lower_elem(0.1);
            y = y.mask_fill(drop, 1000);
            assert_eq!(y.clone().into_data().to_vec::<i64>().unwrap(), p("effective_y").1.iter().map(|&v| v as i64).collect::<Vec<_>>());
        }
        let out = d.training_losses(x0.clone(), &k, f(p("draws/00_randn")), |x, t| {
            assert_eq!(t.clone().into_data().to_vec::<i64>().unwrap(), p("model_t").1.iter().map(|&v| v as i64).collect::<Vec<_>>());
            m.forward(x, t, y.clone())
        });
        check(&format!("{name}/x_t"), out.x_t, p("x_t"), 1e-5, 1e-4);
        check(&format!("{name}/model_output"), out.model_output, p("model_output"), 1e-5, 1e-4);
        check(&format!("{name}/mse"), out.mse, p("mse"), 0.0, 1e-5);
        check(&format!("{name}/vb"), out.vb, p("vb"), 0.0, 1e-4);
        check(&format!("{name}/loss"), out.loss, p("loss"), 0.0, 1e-4);
    }
}

#[test]
fn sampling_runs_replay() {
    let fx = read("fixture.safetensors");
    let (m, _, _) = load_dit::<B>(fixtures_dir().join("dit-tiny"), &Default::default()).unwrap();
    for (run, sched, cfg, ddim_eta) in [
        ("psample_cosine_cfg", Schedule::Cosine, true, None),
        ("psample_cosine_nocfg", Schedule::Cosine, false, None),
        ("psample_linear_cfg", Schedule::Linear, true, None),
        ("ddim_cosine_cfg_eta0", Schedule::Cosine, true, Some(0.0)),
        ("ddim_cosine_nocfg_eta1", Schedule::Cosine, false, Some(1.0)),
    ] {
        let d = GaussianDiffusion::new(sched, 1000, "10").unwrap();
        let y = int(&fx[&format!("{run}/y")]);
        let mut draws = (0..10).map(|i| f(&fx[&format!("{run}/draws/{i:02}_randn")]));
        let mut steps = Vec::new();
        let model = |x: Tensor<B, 3>, t: Tensor<B, 1, Int>| if cfg { m.forward_with_cfg(x, t, y.clone(), 1.75) } else { m.forward(x, t, y.clone()) };
        let noise = |_k: usize| draws.next().expect("10 draws");
        let on_step = |s| steps.push(s);
        let x_t = f(&fx[&format!("{run}/x_T")]);
        let out = match ddim_eta {
            None => d.p_sample_loop(x_t, model, noise, on_step),
            Some(eta) => d.ddim_sample_loop(x_t, eta, model, noise, on_step),
        };
        for (i, s) in steps.iter().enumerate() {
            let p = |key: &str| &fx[&format!("{run}/steps/{i:02}/{key}")];
            assert_eq!(p("t_index").1[0] as usize, s.k);
            check(&format!("{run}/{i}/model_out"), s.model_out.clone(), p("model_out"), 1e-4, 1e-3);
            check(&format!("{run}/{i}/pred_xstart"), s.pred_xstart.clone(), p("pred_xstart"), 1e-4, 1e-3);
            check(&format!("{run}/{i}/sample"), s.sample.clone(), p("sample"), 1e-4, 1e-3);
        }
        check(&format!("{run}/final"), out, &fx[&format!("{run}/final")], 1e-4, 1e-3);
    }
}

#[test]
fn presets_have_the_published_sizes() {
    use maetok_dit::{Dit, DitConfig};
    for (name, params) in [("DiT-XL/1", 675_037_504usize), ("DiT-L/1", 458_020_928), ("DiT-SL/1", 306_903_104), ("DiT-B/2", 130_451_008), ("DiT-S/2", 32_932_672)] {
        let cfg = DitConfig::preset(name, 128, 32).unwrap();
        let mut m = Dit::<B>::new(&cfg, &Default::default());
        let mut lister = maetok_nn::io::ShapeLister::default();
        maetok_nn::io::VisitParams::<B>::visit_params(&mut m, "", &mut lister);
        let total: usize = lister.entries.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(total, params, "{name}");
    }
    assert!(DitConfig::preset("DiT-M", 128, 32).unwrap_err().to_string().contains("DiT-M"));
}
