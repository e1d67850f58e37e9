//! Loading Inception weights: the pytorch-fid file `pt_inception-2015-12-05-6726825d.pth`
//! (torchvision names, with `fc`), torch-fidelity's conversion, a full torchvision state dict
//! (its `AuxLogits.*` are accepted and ignored), or the state dict of pytorch-fid's
//! `InceptionV3` module (`blocks.<i>.<j>.…` names, no `fc`), as `.pth` or `.safetensors`.

use std::path::Path;

use burn::tensor::backend::Backend;
use maetok_nn::io::{CheckpointError, LoadReport, Loader, VisitParams};

use super::model::InceptionV3;

/// torchvision names of pytorch-fid's `blocks.<i>.<j>` (pooling layers have no weights).
const BLOCKS: [&[&str]; 4] = [
    &["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"],
    &["Conv2d_3b_1x1", "Conv2d_4a_3x3"],
    &["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"],
    &["Mixed_7a", "Mixed_7b", "Mixed_7c"],
];

/// Maps a pytorch-fid `InceptionV3` key to the torchvision name (other keys pass through);
/// BatchNorm's `num_batches_tracked` counters are dropped.
pub fn canonical_key(key: &str) -> Option<String> {
    if key.ends_with("num_batches_tracked") {
        return None;
    }
    let Some(rest) = key.strip_prefix("blocks.") else { return Some(key.to_string()) };
    let mut parts = rest.splitn(3, '.');
    let (Some(i), Some(j), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return Some(key.to_string());
    };
    let name = i.parse::<usize>().ok().zip(j.parse::<usize>().ok()).and_then(|(i, j)| BLOCKS.get(i)?.get(j));
    Some(match name {
        Some(n) => format!("{n}.{tail}"),
        None => key.to_string(),
    })
}

/// Builds the network from `loader`'s tensors (strict: missing, mis-shaped or unknown keys are
/// all named in the error). The 1008-class head is present when the file has `fc.weight`.
pub fn load_inception_from<B: Backend>(mut loader: Loader<B>, device: &B::Device) -> Result<(InceptionV3<B>, LoadReport), CheckpointError> {
    loader.rename_keys(canonical_key)?;
    let mut model = InceptionV3::new(loader.contains("fc.weight"), device);
    model.visit_params("", &mut loader);
    let report = loader.finish(&["fc.bias", "AuxLogits."])?;
    Ok((model, report))
}

/// Loads an Inception checkpoint file (`.pth`/`.pt` pickle or `.safetensors`).
pub fn load_inception<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<(InceptionV3<B>, LoadReport), CheckpointError> {
    load_inception_from(Loader::from_any(path, device)?, device)
}
