//! Every recorded sampler run of `fixtures/sit-samplers` replayed from its recorded noise:
//! Euler and Heun ODE, Euler–Maruyama SDE (linear and cosine paths), with and without guidance
//! on an interval, and the generate_sit.py doubled-batch layout. Each run's settings come from
//! `meta.json`; every model call (inputs and output), the time grid and the result are compared.

use std::cell::RefCell;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use maetok_nn::testing::{assert_close_elementwise, Fixture};
use maetok_sampler::{euler_maruyama_sampler, euler_sampler, linspace, Denoiser, Guidance, PathType};
use maetok_sit::{load_sit, Sit};

type B = NdArray<f32>;

/// The model, recording every call's `(x, t, y, out)`.
struct Recording<'a> {
    model: &'a Sit<B>,
    calls: RefCell<Vec<[Tensor<B, 3>; 2]>>,
    times: RefCell<Vec<Tensor<B, 1>>>,
    labels: RefCell<Vec<Tensor<B, 1, Int>>>,
}

impl Denoiser<B> for Recording<'_> {
    fn denoise(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        let out = self.model.forward(x.clone(), t.clone(), y.clone());
        self.calls.borrow_mut().push([x, out.clone()]);
        self.times.borrow_mut().push(t);
        self.labels.borrow_mut().push(y);
        out
    }
    fn null_class(&self) -> usize {
        self.model.null_class()
    }
}

fn values<const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f64>) {
    (t.dims().to_vec(), t.into_data().convert::<f64>().to_vec::<f64>().unwrap())
}

#[test]
fn recorded_runs_replay() {
    let fx = Fixture::open("sit-samplers", "fixture.safetensors");
    let device = Default::default();
    let (model, _, _) = load_sit::<B>(fx.dir.join("../sit-tiny"), &device).unwrap();
    let (shape, x0) = fx.get("inputs/latents").clone();
    let y = fx.ints("inputs/y");
    let runs = fx.meta["runs"].as_object().expect("meta.json runs").clone();
    assert!(!runs.is_empty());
    for (run, spec) in runs {
        let kw = &spec["kwargs"];
        let steps = kw["num_steps"].as_u64().unwrap() as usize;
        let guidance = Guidance {
            scale: kw["cfg_scale"].as_f64().unwrap(),
            low: kw["guidance_low"].as_f64().unwrap(),
            high: kw["guidance_high"].as_f64().unwrap(),
        };
        let path = if kw["path_type"] == "cosine" { PathType::Cosine } else { PathType::Linear };
        let doubled = spec["generate_sit_style_doubled_batch"].as_bool().unwrap_or(false);
        let sde = spec["function"] == "euler_maruyama_sampler";
        // The time grid, in f64 as meta.json keeps it, and the guided steps it implies.
        let grid: Vec<f64> = spec["t_steps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let ours_grid = if sde {
            let mut g = linspace(1.0, 0.04, steps);
            g.push(0.0);
            g
        } else {
            linspace(1.0, 0.0, steps + 1)
        };
        assert_close_elementwise(&format!("{run}/t_steps"), &ours_grid, &grid, 1e-15, 0.0);
        let active: Vec<bool> = spec["cfg_active_per_step(t_cur)"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
        assert_eq!(ours_grid[..steps].iter().map(|&t| guidance.active(t)).collect::<Vec<_>>(), active, "{run}: guided steps");

        let (x, ys, shp) = if doubled {
            let mut x = x0.clone();
            x.extend_from_within(..);
            let mut ys = y.clone();
            ys.extend(std::iter::repeat_n(model.null_class() as i64, y.len()));
            (x, ys, [2 * shape[0], shape[1], shape[2]])
        } else {
            (x0.clone(), y.clone(), [shape[0], shape[1], shape[2]])
        };
        let rec = Recording { model: &model, calls: RefCell::default(), times: RefCell::default(), labels: RefCell::default() };
        let out = if sde {
            let n_draws = spec["n_draws"].as_u64().unwrap() as usize;
            let mut draws = (0..n_draws).map(|i| fx.get(&format!("{run}/draws/{i:02}_randn")).1.clone());
            let mut noise = |n: usize| {
                let d = draws.next().expect("a recorded draw per stochastic step");
                assert_eq!(d.len(), n);
                d
            };
            euler_maruyama_sampler(&rec, &x, shp, &ys, steps, path, guidance, &mut noise, &device).unwrap()
        } else {
            euler_sampler(&rec, &x, shp, &ys, steps, kw["heun"].as_bool().unwrap(), guidance, &device).unwrap()
        };
        let calls = rec.calls.into_inner();
        assert_eq!(calls.len() as u64, spec["n_model_calls"].as_u64().unwrap(), "{run}: model calls");
        for (i, ([cx, cout], (ct, cy))) in
            calls.into_iter().zip(rec.times.into_inner().into_iter().zip(rec.labels.into_inner())).enumerate()
        {
            let p = |k: &str| format!("{run}/calls/{i:02}/{k}");
            let (s, v) = values(cx);
            fx.check_values(&p("x"), &s, &v);
            let (s, v) = values(ct);
            fx.check_values(&p("t"), &s, &v);
            assert_eq!(cy.into_data().to_vec::<i64>().unwrap(), fx.ints(&p("y")), "{}", p("y"));
            let (s, v) = values(cout);
            fx.check_values(&p("out"), &s, &v);
        }
        fx.check_values(&format!("{run}/output"), &shp, &out);
        if doubled {
            let half = out.len() / 2;
            fx.check_values(&format!("{run}/output_first_half"), &[shape[0], shape[1], shape[2]], &out[..half]);
        }
    }
}
