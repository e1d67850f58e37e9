//! Fixture access shared by the metric tests.

use std::collections::HashMap;
use std::path::PathBuf;

/// `$MAETOK_FIXTURES`, else the repository's vendored `fixtures/`.
pub fn fixtures() -> PathBuf {
    maetok_nn::testing::fixtures_dir()
}

/// Every tensor of `fixtures/<rel>` as `(shape, f64 values)` (F32, F64, U8 and I64 are read).
pub fn tensors(rel: &str) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    maetok_nn::testing::read_tensors_f64(fixtures().join(rel))
}

/// A scalar of `fixtures/<dir>/meta.json`.
#[allow(dead_code)] // not every test file reads scalars
pub fn scalar(dir: &str, key: &str) -> f64 {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(dir).join("meta.json")).unwrap()).unwrap();
    meta["scalars"][key]["value"].as_f64().unwrap_or_else(|| panic!("scalar {key}"))
}
