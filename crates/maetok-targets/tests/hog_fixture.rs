//! HOG parity with `utils/hog.py` (`fixtures/hog`). The bin index comes from `floor()`, so a
//! gradient whose `gx` should cancel to 0 can land in bin 0 or 8 depending on summation order;
//! the fixture lists how many pixels sit that close to a bin edge. The quantised input must match
//! everywhere; for the others only a tiny share of features may differ.

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use maetok_nn::testing::fixtures_dir;
use maetok_targets::hog::gaussian_window;
use maetok_targets::{HogError, HogGenerator};

type B = NdArray<f32>;

fn fx() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    maetok_nn::testing::read_tensors(fixtures_dir().join("hog/io.safetensors"))
}

fn input(t: &(Vec<usize>, Vec<f32>)) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(t.1.clone(), t.0.clone()), &Default::default())
}

/// `(max_abs, share of values off by more than 1e-5)`.
fn compare<const D: usize>(name: &str, ours: Tensor<B, D>, want: &(Vec<usize>, Vec<f32>)) -> (f32, f64) {
    assert_eq!(ours.dims().to_vec(), want.0, "{name}: shape");
    let a = ours.into_data().to_vec::<f32>().unwrap();
    let diffs: Vec<f32> = a.iter().zip(&want.1).map(|(x, y)| (x - y).abs()).collect();
    let max = diffs.iter().cloned().fold(0.0, f32::max);
    let share = diffs.iter().filter(|&&d| d > 1e-5).count() as f64 / diffs.len() as f64;
    println!("{name}: max_abs {max:.2e}, {:.4}% above 1e-5", share * 100.0);
    (max, share)
}

#[test]
fn hog_matches_the_reference() {
    let f = fx();
    let win = gaussian_window();
    let (ea, _) = maetok_nn::testing::errors(&win, &f["gaussian_kernel"].1);
    assert!(ea < 1e-8, "window differs by {ea}");
    let hog = HogGenerator::new();
    // The quantised image has no near-cancellations: exact to 1e-5.
    let (max, _) = compare("quant256_hog", hog.forward(input(&f["quant256_input"])).unwrap(), &f["quant256_hog"]);
    assert!(max <= 1e-5);
    for (name, cells) in [("rand256", Some("rand256_cells")), ("photo", Some("photo_cells"))] {
        let x = input(&f[&format!("{name}_input")]);
        let (_, share) = compare(&format!("{name}_hog"), hog.forward(x.clone()).unwrap(), &f[&format!("{name}_hog")]);
        assert!(share < 0.005, "{name}: {:.3}% of the features differ", share * 100.0);
        if let Some(c) = cells {
            let (_, share) = compare(&format!("{name}_cells"), hog.cells(x).unwrap(), &f[c]);
            assert!(share < 0.005);
        }
    }
    // 64x64: the per-cell histograms work; the token grouping fails as in the reference, clearly.
    let x = input(&f["rand64_input"]);
    let (_, share) = compare("rand64_cells", hog.cells(x.clone()).unwrap(), &f["rand64_cells"]);
    assert!(share < 0.005);
    assert_eq!(hog.forward(x).unwrap_err(), HogError::TooNarrow { w: 64 });
    let odd = Tensor::<B, 4>::zeros([1, 3, 256, 200], &Default::default());
    assert!(hog.forward(odd).unwrap_err().to_string().contains("multiples of 16"));
    let grey = Tensor::<B, 4>::zeros([1, 1, 256, 256], &Default::default());
    assert!(matches!(hog.forward(grey), Err(HogError::Channels(_))));
}

#[test]
fn larger_inputs_group_more_cells_per_token() {
    let x = Tensor::<B, 4>::random([1, 3, 512, 512], burn::tensor::Distribution::Uniform(-1.0, 1.0), &Default::default());
    let out = HogGenerator::new().forward(x).unwrap();
    assert_eq!(out.dims(), [1, 256, 27 * 16]);
}
