//! Helpers for parity tests against the golden fixtures in `shared/fixtures/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// The fixtures folder: `$MAETOK_FIXTURES`, else `shared/fixtures` beside the repository root.
pub fn fixtures_dir() -> PathBuf {
    if let Ok(p) = std::env::var("MAETOK_FIXTURES") {
        return PathBuf::from(p);
    }
    // crates/<crate>/ -> repository root -> ../shared/fixtures
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("../shared/fixtures")
}

/// All tensors of a safetensors file as `(shape, f32 values)` (any dtype [`read_tensors_f64`] reads).
pub fn read_tensors(path: impl AsRef<Path>) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    read_tensors_f64(path).into_iter().map(|(k, (s, v))| (k, (s, v.into_iter().map(|x| x as f32).collect()))).collect()
}

/// A fixture tensor on a device.
pub fn tensor<B: Backend, const D: usize>(t: &(Vec<usize>, Vec<f32>), device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.1.clone(), t.0.clone()), device)
}

/// `(max_abs, rel)` with `rel = max|a-b| / max|b|`.
pub fn errors(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let max_abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let max_b = b.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    (max_abs, if max_b > 0.0 { max_abs / max_b } else { max_abs })
}

/// Asserts that `ours` matches the fixture within `max_abs` or `rel` (either passes, as the
/// fixture README prescribes); prints the errors.
pub fn assert_close<B: Backend, const D: usize>(name: &str, ours: Tensor<B, D>, fixture: &(Vec<usize>, Vec<f32>), max_abs: f32, rel: f32) {
    assert_eq!(ours.dims().to_vec(), fixture.0, "{name}: shape");
    let a = ours.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let (ea, er) = errors(&a, &fixture.1);
    println!("{name}: max_abs {ea:.3e} rel {er:.3e}");
    assert!(ea <= max_abs || er <= rel, "{name}: max_abs {ea:.3e} > {max_abs:.1e} and rel {er:.3e} > {rel:.1e}");
}

/// All tensors of a safetensors file as `(shape, f64 values)`; F32, F64, I64 and U8 are read
/// (labels and timesteps are I64 in the generative fixtures, images U8 in the metric ones).
pub fn read_tensors_f64(path: impl AsRef<Path>) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let vals = match v.dtype() {
                safetensors::Dtype::F32 => v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
                safetensors::Dtype::F64 => v.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
                safetensors::Dtype::I64 => v.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64).collect(),
                safetensors::Dtype::U8 => v.data().iter().map(|&b| b as f64).collect(),
                d => panic!("fixture tensor {k} has dtype {d:?}"),
            };
            (k, (v.shape().to_vec(), vals))
        })
        .collect()
}
