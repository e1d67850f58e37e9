//! Fixture access shared by the metric tests.

use std::collections::HashMap;
use std::path::PathBuf;

/// `$MAETOK_FIXTURES`, else `shared/fixtures` beside the repository.
pub fn fixtures() -> PathBuf {
    std::env::var("MAETOK_FIXTURES").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

/// Every tensor of `fixtures/<rel>` as `(shape, f64 values)` (F32, F64, U8 and I64 are read).
pub fn tensors(rel: &str) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(fixtures().join(rel)).unwrap_or_else(|e| panic!("cannot read fixture {rel}: {e}"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let vals: Vec<f64> = match v.dtype() {
                safetensors::Dtype::F32 => v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                safetensors::Dtype::F64 => v.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                safetensors::Dtype::U8 => v.data().iter().map(|&b| b as f64).collect(),
                safetensors::Dtype::I64 => v.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                other => panic!("{k}: unexpected dtype {other:?}"),
            };
            (k, (v.shape().to_vec(), vals))
        })
        .collect()
}

/// A scalar of `fixtures/<dir>/meta.json`.
#[allow(dead_code)] // not every test file reads scalars
pub fn scalar(dir: &str, key: &str) -> f64 {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join(dir).join("meta.json")).unwrap()).unwrap();
    meta["scalars"][key]["value"].as_f64().unwrap_or_else(|| panic!("scalar {key}"))
}
