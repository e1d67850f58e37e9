//! ADM-format `.npz` sample batches: `arr_0`, uint8 `[N, H, W, 3]` (what the ADM evaluator and
//! `inference/reconstruct_vq.py` / `generate_*.py` read and write).

use std::fs::File;
use std::path::Path;

use ndarray::Array4;
use ndarray_npy::{NpzReader, NpzWriter};

/// Errors reading or writing `.npz` files; messages name the file and key.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    #[error("cannot open {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
}

/// Reads `arr_0` as uint8 `[N, H, W, C]`.
pub fn read_samples(path: impl AsRef<Path>) -> Result<Array4<u8>, NpzError> {
    let p = path.as_ref().display().to_string();
    let file = File::open(path.as_ref()).map_err(|source| NpzError::Io { path: p.clone(), source })?;
    let mut npz = NpzReader::new(file).map_err(|e| NpzError::Format { path: p.clone(), msg: e.to_string() })?;
    npz.by_name("arr_0").or_else(|_| npz.by_name("arr_0.npy")).map_err(|e| NpzError::Format {
        path: p.clone(),
        msg: format!("no uint8 4-D array 'arr_0' ({e})"),
    })
}

/// Writes `samples` (uint8 `[N, H, W, C]`) as `arr_0`, uncompressed like `np.savez`, through a
/// temporary file and a rename.
pub fn write_samples(path: impl AsRef<Path>, samples: &Array4<u8>) -> Result<(), NpzError> {
    let path = path.as_ref();
    let p = path.display().to_string();
    let io = |source| NpzError::Io { path: p.clone(), source };
    let tmp = path.with_extension("npz.tmp");
    let file = File::create(&tmp).map_err(io)?;
    let mut npz = NpzWriter::new(file);
    npz.add_array("arr_0", samples).map_err(|e| NpzError::Format { path: p.clone(), msg: e.to_string() })?;
    npz.finish().map_err(|e| NpzError::Format { path: p.clone(), msg: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(io)
}
