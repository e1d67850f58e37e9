//! DiffAugment replays every recorded run of `fixtures/diffaug`: each run's policy and
//! probability, the per-element gate, and every `rand`/`randint` draw come from meta.json and
//! the fixture tensors; the output must match the official `DiffAugment` (meta.json tolerance).

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::testing::{fixtures_dir, read_tensors_f64};
use maetok_targets::disc::{AugDraws, AugStep, Augment, DiffAugPolicy};

type B = NdArray<f32>;

#[test]
fn every_recorded_run_replays() {
    let dir = fixtures_dir().join("diffaug");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let io = read_tensors_f64(dir.join("io.safetensors"));
    let tol = meta["tolerance"]["output"]["max_abs"].as_f64().unwrap();
    let (shape, input) = &io["input"];
    let (b, h, w) = (shape[0], shape[2], shape[3]);
    let device = Default::default();
    let x = Tensor::<B, 4>::from_data(
        burn::tensor::TensorData::new(input.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape.clone()),
        &device,
    );
    let runs = meta["config"]["runs"].as_array().unwrap();
    assert!(!runs.is_empty());
    for run in runs {
        let id = run["run"].as_u64().unwrap();
        let policy = DiffAugPolicy::parse(run["policy"].as_str().unwrap(), run["prob"].as_f64().unwrap()).unwrap();
        // The recorded draws in call order, by function name.
        let draws: Vec<(String, Vec<f64>)> = run["draws"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["fn"].as_str().unwrap().to_string(), io[d["key"].as_str().unwrap()].1.clone()))
            .collect();
        let mut next = draws.iter();
        let mut take = |f: &str| {
            let (name, v) = next.next().unwrap_or_else(|| panic!("run {id}: no draw left for {f}"));
            assert_eq!(name, f, "run {id}: draw order");
            v.clone()
        };
        let mut steps = Vec::new();
        for op in &policy.ops {
            // One gate per policy element for the whole batch, skipping the element above prob.
            if take("gate")[0] > policy.prob {
                continue;
            }
            steps.push(match *op {
                Augment::Color => {
                    let f32s = |v: Vec<f64>| v.into_iter().map(|u| u as f32).collect::<Vec<f32>>();
                    let (brightness, saturation, contrast) = (f32s(take("brightness")), f32s(take("saturation")), f32s(take("contrast")));
                    AugStep::Color { brightness, saturation, contrast }
                }
                Augment::Translation { .. } => {
                    let (rows, cols) = (take("translation"), take("translation"));
                    AugStep::Translation { shifts: rows.iter().zip(&cols).map(|(&r, &c)| (r as i64, c as i64)).collect() }
                }
                Augment::Cutout { ratio } => {
                    let size = (((h as f64) * ratio + 0.5) as usize, ((w as f64) * ratio + 0.5) as usize);
                    let (rows, cols) = (take("cutout"), take("cutout"));
                    AugStep::Cutout { size, centres: rows.iter().zip(&cols).map(|(&r, &c)| (r as usize, c as usize)).collect() }
                }
            });
        }
        assert!(next.next().is_none(), "run {id}: draws left over");
        let out = AugDraws { steps, dims: (b, h, w) }.apply(x.clone());
        let got = out.into_data().convert::<f64>().to_vec::<f64>().unwrap();
        let want = &io[&format!("run{id}/output")].1;
        let max = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("run {id} ({}): max_abs {max:.2e}", run["policy"]);
        assert!(max <= tol, "run {id}: max_abs {max:.3e} > {tol:e}");
    }
}
