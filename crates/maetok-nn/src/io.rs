//! PyTorch-checkpoint import and export.
//!
//! Every module implements [`VisitParams`]: it walks its parameters in a fixed order and hands
//! each one, with its PyTorch state-dict key, to a [`ParamVisitor`]. Two visitors exist:
//!
//! * [`Loader`] reads a safetensors or PyTorch-pickle state dict (PyTorch names and layouts), replaces each
//!   parameter with the stored tensor, and records missing, mis-shaped and unexpected keys.
//!   [`Loader::finish`] turns them into one [`CheckpointError`] that names every offending key.
//! * [`Exporter`] collects every parameter (and constant buffer) back into PyTorch layout and
//!   writes a safetensors file atomically (temp file + rename).
//!
//! PyTorch `nn.Linear.weight` is `[out, in]`; Burn's `Linear` stores `[in, out]`. Linear weights
//! are visited with [`ParamVisitor::linear`], which transposes in both directions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// Errors of checkpoint import/export. Messages name the file and the keys involved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid checkpoint file: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("checkpoint {path} does not match the model:\n{details}")]
    Mismatch { path: PathBuf, details: String },
}

/// Receives every parameter of a module together with its PyTorch key.
pub trait ParamVisitor<B: Backend> {
    /// A parameter stored with the same layout in PyTorch and Burn.
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>);
    /// A 2-D parameter that PyTorch stores transposed (`nn.Linear.weight`, `[out, in]`).
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>);
    /// A persistent buffer holding constants the model recomputes itself (e.g. RoPE positions).
    /// The loader checks that it is present with these values; the exporter writes it.
    fn buffer(&mut self, key: &str, shape: &[usize], values: &[f32]);

    /// An `nn.Linear` at `prefix` (`prefix.weight`, `prefix.bias`).
    fn linear(&mut self, prefix: &str, layer: &mut Linear<B>) {
        self.param_transposed(&format!("{prefix}.weight"), &mut layer.weight);
        if let Some(bias) = layer.bias.as_mut() {
            self.param(&format!("{prefix}.bias"), bias);
        }
    }
}

/// A module whose parameters can be imported from / exported to a PyTorch state dict.
pub trait VisitParams<B: Backend> {
    /// Visits every parameter, with keys `prefix.<name>` (or `<name>` when `prefix` is empty).
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V);
}

/// Joins a key prefix and a name with a dot.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A tensor read from a checkpoint, converted to f32.
struct StoredTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// What a successful load found besides the parameters it applied.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Number of tensors applied to the model.
    pub applied: usize,
    /// Keys present in the file that the reference carries but never uses (accepted, not loaded).
    pub ignored: Vec<String>,
}

/// Loads a PyTorch-layout safetensors state dict into modules, with strict key coverage.
pub struct Loader<B: Backend> {
    path: PathBuf,
    tensors: HashMap<String, StoredTensor>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    mis_shaped: Vec<String>,
    bad_values: Vec<String>,
    applied: usize,
    device: B::Device,
}

fn to_f32(path: &Path, key: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, CheckpointError> {
    let chunks = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        Dtype::F32 => chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => chunks(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::F16 => chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => chunks(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => {
            return Err(CheckpointError::Format {
                path: path.to_path_buf(),
                msg: format!("tensor '{key}' has dtype {other:?}; expected a float type (F32, F16, BF16, F64)"),
            })
        }
    })
}

impl<B: Backend> Loader<B> {
    /// Reads every tensor of a safetensors file (any float dtype, converted to f32).
    pub fn from_file(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
        Self::from_bytes(&bytes, path, device)
    }

    /// Parses safetensors bytes; `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: PathBuf, device: &B::Device) -> Result<Self, CheckpointError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| CheckpointError::Format { path: path.clone(), msg: format!("not a readable safetensors file: {e}") })?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let values = to_f32(&path, &name, view.dtype(), view.data())?;
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self::from_map(tensors, path, device))
    }

    /// Reads a PyTorch pickle checkpoint (`torch.save` of a state dict, `.pth`/`.pt`/`.bin`)
    /// with burn-store's reader, no Python needed. Non-float entries (e.g. BatchNorm's
    /// `num_batches_tracked`) are converted too; drop them with [`Loader::rename_keys`].
    pub fn from_pytorch(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(CheckpointError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        crate::pickle_guard::check_pytorch_file(&path)
            .map_err(|msg| CheckpointError::Format { path: path.clone(), msg: format!("refused as a PyTorch checkpoint: {msg}") })?;
        let file_len = std::fs::metadata(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?.len();
        let reader = burn_store::pytorch::PytorchReader::new(&path)
            .map_err(|e| CheckpointError::Format { path: path.clone(), msg: format!("not a readable PyTorch checkpoint: {e}") })?;
        let mut map = HashMap::new();
        for (name, snap) in reader.into_tensors() {
            // A tensor's bytes live in the file: a shape claiming more is refused before the
            // reader allocates it (burn-store fills absent storages with zeros of that shape).
            let bytes = crate::limits::checked_numel(&snap.shape).and_then(|n| n.checked_mul(snap.dtype.size() as u64));
            if bytes.is_none_or(|b| b > file_len) {
                return Err(CheckpointError::Format {
                    path: path.clone(),
                    msg: format!(
                        "tensor '{name}' claims shape {:?} of {:?}, more bytes than the {file_len}-byte file holds",
                        snap.shape, snap.dtype
                    ),
                });
            }
            let data =
                snap.to_data().map_err(|e| CheckpointError::Format { path: path.clone(), msg: format!("tensor '{name}': {e:?}") })?;
            let shape = data.shape.to_vec();
            let values = data
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| CheckpointError::Format { path: path.clone(), msg: format!("tensor '{name}': {e:?}") })?;
            map.insert(name, (shape, values));
        }
        Ok(Self::from_map(map, path, device))
    }

    /// Reads a checkpoint by extension: `.safetensors` with the safetensors reader, anything
    /// else (`.pth`, `.pt`, `.bin`, `.ckpt`) as a PyTorch pickle.
    pub fn from_any(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "safetensors") {
            Self::from_file(path, device)
        } else {
            Self::from_pytorch(path, device)
        }
    }

    /// Builds a loader over tensors already in memory (`key → (shape, values)`); `path` names
    /// their origin in messages.
    pub fn from_map(map: HashMap<String, (Vec<usize>, Vec<f32>)>, path: PathBuf, device: &B::Device) -> Self {
        let tensors = map.into_iter().map(|(k, (shape, values))| (k, StoredTensor { shape, values })).collect();
        Self {
            path,
            tensors,
            used: BTreeSet::new(),
            missing: Vec::new(),
            mis_shaped: Vec::new(),
            bad_values: Vec::new(),
            applied: 0,
            device: device.clone(),
        }
    }

    /// Renames the stored keys before loading (to accept another naming of the same network):
    /// `f` returns the new name, or `None` to drop the entry. Fails, naming both, if two keys
    /// map to the same name.
    pub fn rename_keys(&mut self, f: impl Fn(&str) -> Option<String>) -> Result<(), CheckpointError> {
        let old = std::mem::take(&mut self.tensors);
        let mut origin: HashMap<String, String> = HashMap::new();
        for (k, t) in old {
            if let Some(new) = f(&k) {
                if let Some(prev) = origin.insert(new.clone(), k.clone()) {
                    return Err(CheckpointError::Mismatch {
                        path: self.path.clone(),
                        details: format!("  keys '{prev}' and '{k}' both map to '{new}'\n"),
                    });
                }
                self.tensors.insert(new, t);
            }
        }
        Ok(())
    }

    /// The stored keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.tensors.keys().cloned().collect();
        k.sort();
        k
    }

    /// Whether the file holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The file this loader reads (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes `key` and returns its `(shape, values)`, to transform a tensor before loading
    /// (e.g. resampling a patch embedding); put the result back with [`Loader::insert`].
    pub fn take(&mut self, key: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        self.tensors.remove(key).map(|t| (t.shape, t.values))
    }

    /// Adds or replaces a stored tensor.
    pub fn insert(&mut self, key: &str, shape: Vec<usize>, values: Vec<f32>) {
        self.tensors.insert(key.to_string(), StoredTensor { shape, values });
    }

    /// Moves the values of `key` out of the file (each tensor is applied once, so a 700 MB
    /// checkpoint is not held twice); records missing and mis-shaped keys.
    fn fetch(&mut self, key: &str, expected: &[usize]) -> Option<Vec<f32>> {
        match self.tensors.get_mut(key) {
            None => {
                self.missing.push(format!("{key} (expected shape {expected:?})"));
                None
            }
            Some(t) => {
                self.used.insert(key.to_string());
                if t.shape != expected {
                    self.mis_shaped.push(format!("{key}: file has {:?}, model expects {expected:?}", t.shape));
                    None
                } else {
                    Some(std::mem::take(&mut t.values))
                }
            }
        }
    }

    /// Ends the load: fails, naming every key, if any tensor was missing, mis-shaped, had wrong
    /// constant values, or if the file holds keys that the model does not know and that do not
    /// start with one of `ignorable_prefixes` (keys the reference carries but never uses).
    pub fn finish(self, ignorable_prefixes: &[&str]) -> Result<LoadReport, CheckpointError> {
        let mut unexpected = Vec::new();
        let mut ignored = Vec::new();
        let mut rest: Vec<&String> = self.tensors.keys().filter(|k| !self.used.contains(*k)).collect();
        rest.sort();
        for k in rest {
            if ignorable_prefixes.iter().any(|p| k.starts_with(p)) {
                ignored.push(k.clone());
            } else {
                let shape = &self.tensors[k].shape;
                unexpected.push(format!("{k} {shape:?}"));
            }
        }
        let mut details = String::new();
        for (title, list) in [
            ("missing keys", &self.missing),
            ("mis-shaped tensors", &self.mis_shaped),
            ("buffers with unexpected values", &self.bad_values),
            ("unexpected keys", &unexpected),
        ] {
            if !list.is_empty() {
                details.push_str(&format!("  {} {title}:\n", list.len()));
                for item in list {
                    details.push_str(&format!("    {item}\n"));
                }
            }
        }
        if details.is_empty() {
            Ok(LoadReport { applied: self.applied, ignored })
        } else {
            Err(CheckpointError::Mismatch { path: self.path, details })
        }
    }
}

/// Whether a parameter is trained (keeps a loaded value trainable on autodiff backends, as
/// `Param::from_tensor` would make it, and state/frozen tensors frozen). Lazily initialised
/// parameters (Burn's `Linear`) are trainable unless frozen after loading.
fn trainable<B: Backend, const D: usize>(param: &Param<Tensor<B, D>>) -> bool {
    !param.is_initialized() || param.val().is_require_grad()
}

impl<B: Backend> ParamVisitor<B> for Loader<B> {
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
        let shape = param.lazy_shape().to_vec();
        if let Some(values) = self.fetch(key, &shape) {
            let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), &self.device);
            *param = Param::initialized(param.id, t.set_require_grad(trainable(param)));
            self.applied += 1;
        }
    }

    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        let [a, b] = param.lazy_shape().dims::<2>();
        if let Some(values) = self.fetch(key, &[b, a]) {
            let t = Tensor::<B, 2>::from_data(TensorData::new(values, [b, a]), &self.device).transpose();
            *param = Param::initialized(param.id, t.set_require_grad(trainable(param)));
            self.applied += 1;
        }
    }

    fn buffer(&mut self, key: &str, shape: &[usize], values: &[f32]) {
        if let Some(stored) = self.fetch(key, shape) {
            let max_diff = stored.iter().zip(values).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            if max_diff > 1e-5 {
                self.bad_values.push(format!("{key}: differs from the recomputed constants by {max_diff}"));
            }
        }
    }
}

/// Collects parameters in PyTorch layout and writes them as a safetensors state dict.
pub struct Exporter {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter {
    pub fn new() -> Self {
        Self { tensors: BTreeMap::new() }
    }

    /// Adds a tensor directly (for tools that build state dicts by hand).
    pub fn insert(&mut self, key: &str, shape: Vec<usize>, values: Vec<f32>) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{key}: shape and value count differ");
        self.tensors.insert(key.to_string(), (shape, values));
    }

    /// Removes a tensor, returning it.
    pub fn remove(&mut self, key: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        self.tensors.remove(key)
    }

    /// The collected keys with their shapes, sorted by key.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect()
    }

    /// The collected tensors `(key, shape, values)`, sorted by key.
    pub fn tensors(&self) -> &BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        &self.tensors
    }

    /// Writes the state dict as f32 safetensors (metadata `format: pt`, as PyTorch writes it),
    /// atomically: to a temporary file in the same folder, then renamed over `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let io = |source| CheckpointError::Io { path: path.to_path_buf(), source };
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
            self.tensors.iter().map(|(k, (s, v))| (k.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(k, s, b)| {
                let view =
                    safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).expect("shape and byte length agree by construction");
                (k.clone(), view)
            })
            .collect();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let data = safetensors::serialize(views, Some(meta))
            .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), msg: e.to_string() })?;
        write_atomic(path, &data).map_err(io)
    }
}

/// Writes `data` to `path` through a temporary file in the same folder and a rename, so that a
/// crash never leaves a truncated file at `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    write_atomic_with(path, |f| f.write_all(data))
}

/// Writes `path` with `write` (a streaming writer: npz archives, …) into a temporary file in the
/// same folder, flushed to disk, then renamed over `path`. On any error (a full disk, a file-size
/// limit) the temporary file is removed and the previous `path`, if any, is left untouched; a
/// killed process leaves at most a hidden `.<name>.tmp-<pid>` beside it.
pub fn write_atomic_with<E: From<std::io::Error>>(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<(), E>) -> Result<(), E> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl<B: Backend> ParamVisitor<B> for Exporter {
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let values = crate::fused::host_values(t);
        self.tensors.insert(key.to_string(), (shape, values));
    }

    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        let t = param.val().transpose();
        let shape = t.dims().to_vec();
        let values = crate::fused::host_values(t);
        self.tensors.insert(key.to_string(), (shape, values));
    }

    fn buffer(&mut self, key: &str, shape: &[usize], values: &[f32]) {
        self.tensors.insert(key.to_string(), (shape.to_vec(), values.to_vec()));
    }
}

/// Lists the keys and PyTorch shapes a module would export, without materialising any
/// parameter (lazily initialised parameters stay uninitialised).
#[derive(Default)]
pub struct ShapeLister {
    pub entries: Vec<(String, Vec<usize>)>,
}

impl<B: Backend> ParamVisitor<B> for ShapeLister {
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
        self.entries.push((key.to_string(), param.lazy_shape().to_vec()));
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        let [a, b] = param.lazy_shape().dims::<2>();
        self.entries.push((key.to_string(), vec![b, a]));
    }
    fn buffer(&mut self, key: &str, shape: &[usize], _values: &[f32]) {
        self.entries.push((key.to_string(), shape.to_vec()));
    }
}
