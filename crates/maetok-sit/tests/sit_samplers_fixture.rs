//! Every recorded sampler run of `fixtures/sit-samplers` replayed from its recorded noise:
//! Euler and Heun ODE, Euler–Maruyama SDE (linear and cosine paths), with and without guidance
//! on the interval [0, 0.7], and the generate_sit.py doubled-batch layout.

use std::collections::HashMap;

use burn::backend::NdArray;
use maetok_nn::testing::{errors, fixtures_dir};
use maetok_sampler::{euler_maruyama_sampler, euler_sampler, linspace, Guidance};
use maetok_sit::{load_sit, PathType};

type B = NdArray<f32>;

fn tensors() -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    maetok_nn::testing::read_tensors_f64(fixtures_dir().join("sit-samplers/fixture.safetensors"))
}

fn assert_close(name: &str, ours: &[f64], want: &[f64]) {
    let a: Vec<f32> = ours.iter().map(|&v| v as f32).collect();
    let b: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    let (ea, er) = errors(&a, &b);
    println!("{name}: max_abs {ea:.2e} rel {er:.2e}");
    assert!(ea <= 1e-4 || er <= 1e-3, "{name}: max_abs {ea:.3e} rel {er:.3e}");
}

#[test]
fn time_grids_match_torch_linspace() {
    // meta.json keeps the grids in f64 (the safetensors copies are f32).
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("sit-samplers/meta.json")).unwrap()).unwrap();
    let grid = |run: &str| -> Vec<f64> { meta["runs"][run]["t_steps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    assert_eq!(linspace(1.0, 0.0, 9), grid("ode_euler_linear"));
    let mut sde = linspace(1.0, 0.04, 8);
    sde.push(0.0);
    for (a, b) in sde.iter().zip(grid("sde_linear")) {
        assert!((a - b).abs() <= 1e-16, "{a} vs {b}");
    }
    // The guided steps the reference recorded follow from the interval rule.
    let g = Guidance { scale: 1.75, low: 0.0, high: 0.7 };
    let mask: Vec<bool> = meta["runs"]["sde_linear"]["cfg_active_per_step(t_cur)"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
    assert_eq!(sde[..8].iter().map(|&t| g.active(t)).collect::<Vec<_>>(), mask);
}

#[test]
fn recorded_runs_replay() {
    let fx = tensors();
    let device = Default::default();
    let sit_dir = fixtures_dir().join("sit-tiny");
    let (model, _, _) = load_sit::<B>(&sit_dir, &device).unwrap();
    let x0 = fx["inputs/latents"].1.clone();
    let y: Vec<i64> = fx["inputs/y"].1.iter().map(|&v| v as i64).collect();
    let shape = [2, 16, 8];
    let cfg = Guidance { scale: 1.75, low: 0.0, high: 0.7 };
    for (run, heun, guidance) in [
        ("ode_euler_linear", false, cfg),
        ("ode_euler_cosine", false, cfg),
        ("ode_heun_linear", true, cfg),
        ("ode_heun_cosine", true, cfg),
        ("ode_euler_nocfg", false, Guidance { scale: 1.0, ..cfg }),
    ] {
        let out = euler_sampler(&model, &x0, shape, &y, 8, heun, guidance, &device);
        assert_close(run, &out, &fx[&format!("{run}/output")].1);
    }
    for (run, path, guidance, doubled) in [
        ("sde_linear", PathType::Linear, cfg, false),
        ("sde_cosine", PathType::Cosine, cfg, false),
        ("sde_linear_nocfg", PathType::Linear, Guidance { scale: 1.0, ..cfg }, false),
        ("sde_cosine_generate_style", PathType::Cosine, cfg, true),
    ] {
        let mut draws = (0..7).map(|i| fx[&format!("{run}/draws/{i:02}_randn")].1.clone());
        let mut noise = |n: usize| {
            let d = draws.next().expect("7 draws");
            assert_eq!(d.len(), n);
            d
        };
        let (x, ys, shp) = if doubled {
            let mut x = x0.clone();
            x.extend_from_within(..);
            (x, vec![y[0], y[1], 1000, 1000], [4, 16, 8])
        } else {
            (x0.clone(), y.clone(), shape)
        };
        let out = euler_maruyama_sampler(&model, &x, shp, &ys, 8, path, guidance, &mut noise, &device);
        assert_close(run, &out, &fx[&format!("{run}/output")].1);
        if doubled {
            assert_close("generate_style first half", &out[..256], &fx[&format!("{run}/output_first_half")].1);
        }
    }
}
