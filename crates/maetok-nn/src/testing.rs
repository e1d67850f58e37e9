//! Helpers for parity tests against the golden fixtures (`fixtures/` at the repository root,
//! or `$MAETOK_FIXTURES`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// The fixtures folder: `$MAETOK_FIXTURES`, else the copy vendored in the repository
/// (`fixtures/` at its root; see its README for where the tensors come from).
pub fn fixtures_dir() -> PathBuf {
    if let Ok(p) = std::env::var("MAETOK_FIXTURES") {
        return PathBuf::from(p);
    }
    // The package being tested (cargo sets CARGO_MANIFEST_DIR at run time) and its ancestors: a
    // build of this crate made in another checkout keeps that checkout's compile-time path.
    let here = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    for dir in here.iter().flat_map(|d| d.ancestors()) {
        let f = dir.join("fixtures");
        if f.join("README.md").is_file() {
            return f;
        }
    }
    // crates/<crate>/ -> repository root
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
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
                safetensors::Dtype::I64 => {
                    v.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64).collect()
                }
                safetensors::Dtype::U8 => v.data().iter().map(|&b| b as f64).collect(),
                d => panic!("fixture tensor {k} has dtype {d:?}"),
            };
            (k, (v.shape().to_vec(), vals))
        })
        .collect()
}

/// A fixture folder whose `meta.json` lists every tensor with its own tolerance (the generative
/// fixtures: per element `|a − b| ≤ atol + rtol·|b|`), read once.
pub struct Fixture {
    pub dir: PathBuf,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f64>)>,
    pub meta: serde_json::Value,
}

impl Fixture {
    /// `fixtures_dir()/name` with the tensors of `file` (and of every other file `meta.json`
    /// names, when `file` is `None`).
    pub fn open(name: &str, file: &str) -> Self {
        let dir = fixtures_dir().join(name);
        let meta_path = dir.join("meta.json");
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&meta_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", meta_path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", meta_path.display()));
        let tensors = read_tensors_f64(dir.join(file));
        Self { dir, tensors, meta }
    }

    /// The tensor `name`; panics naming it when the fixture lacks it.
    pub fn get(&self, name: &str) -> &(Vec<usize>, Vec<f64>) {
        self.tensors.get(name).unwrap_or_else(|| panic!("fixture {} has no tensor '{name}'", self.dir.display()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name` as an f32 tensor.
    pub fn float<B: Backend, const D: usize>(&self, name: &str, device: &B::Device) -> Tensor<B, D> {
        let (shape, v) = self.get(name);
        Tensor::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape.clone()), device)
    }

    /// The tensor `name` as an integer tensor.
    pub fn int<B: Backend, const D: usize>(&self, name: &str, device: &B::Device) -> Tensor<B, D, burn::tensor::Int> {
        let (shape, v) = self.get(name);
        Tensor::from_data(TensorData::new(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), shape.clone()), device)
    }

    /// The tensor `name` as integers.
    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.get(name).1.iter().map(|&x| x as i64).collect()
    }

    /// Names of the tensors under `prefix` (sorted).
    pub fn names(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        v.sort();
        v
    }

    /// The distinct path segments right after `prefix` (e.g. the run names under `loss/`).
    pub fn children(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.tensors.keys().filter_map(|k| k.strip_prefix(prefix)).filter_map(|r| r.split('/').next()).map(str::to_string).collect();
        v.sort();
        v.dedup();
        v
    }

    /// `(atol, rtol)` of tensor `name` from `meta.json`.
    pub fn tolerance(&self, name: &str) -> (f64, f64) {
        let entry = self.meta["tensors"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .unwrap_or_else(|| panic!("meta.json of {} lists no tensor '{name}'", self.dir.display()));
        let tol = &entry["tolerance"];
        (tol["atol"].as_f64().unwrap_or(0.0), tol["rtol"].as_f64().unwrap_or(0.0))
    }

    /// A scalar's value from `meta.json` `scalars`.
    pub fn scalar(&self, name: &str) -> f64 {
        self.meta["scalars"][name]["value"].as_f64().unwrap_or_else(|| panic!("meta.json of {} has no scalar '{name}'", self.dir.display()))
    }

    /// Asserts `ours` equals tensor `name` element by element within its meta.json tolerance.
    pub fn check_values(&self, name: &str, shape: &[usize], ours: &[f64]) {
        let (want_shape, want) = self.get(name);
        assert_eq!(shape, want_shape.as_slice(), "{name}: shape");
        let (atol, rtol) = self.tolerance(name);
        assert_close_elementwise(name, ours, want, atol, rtol);
    }

    /// [`Fixture::check_values`] for a tensor.
    pub fn check<B: Backend, const D: usize>(&self, name: &str, ours: Tensor<B, D>) {
        let shape = ours.dims().to_vec();
        let v: Vec<f64> = ours.into_data().convert::<f64>().to_vec::<f64>().expect("f64");
        self.check_values(name, &shape, &v);
    }
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` for every element; prints the worst excess.
pub fn assert_close_elementwise(name: &str, ours: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(ours.len(), want.len(), "{name}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (a, b)) in ours.iter().zip(want).enumerate() {
        let excess = (a - b).abs() / (atol + rtol * b.abs()).max(f64::MIN_POSITIVE);
        if !worst.0.is_nan() && (excess.is_nan() || excess > worst.0) {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    println!("{name}: worst |a-b| / (atol + rtol|b|) = {:.3} at {i}", worst.0);
    assert!(worst.0 <= 1.0, "{name}[{i}]: {} vs {} (atol {atol:e}, rtol {rtol:e})", ours[i], want[i]);
}

/// Counts the values of every parameter a state-dict walk visits (buffers are not parameters).
#[derive(Default)]
pub struct ParamCensus {
    pub values: usize,
    pub keys: Vec<String>,
}

impl<B: Backend> crate::io::ParamVisitor<B> for ParamCensus {
    fn param<const D: usize>(&mut self, key: &str, param: &mut burn::module::Param<Tensor<B, D>>) {
        self.values += param.shape().num_elements();
        self.keys.push(key.to_string());
    }
    fn param_transposed(&mut self, key: &str, param: &mut burn::module::Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _key: &str, _shape: &[usize], _values: &[f32]) {}
}

/// Asserts that the walk export, EMA and clipping use ([`crate::io::VisitParams`]) visits every
/// parameter of the module exactly once: the visited values equal `num_params()` and no key
/// repeats. A field added to a model but forgotten in its walk fails here.
pub fn assert_walk_covers_module<B: Backend, M: crate::io::VisitParams<B> + burn::module::Module<B>>(name: &str, model: &mut M) {
    let mut census = ParamCensus::default();
    model.visit_params("", &mut census);
    let mut keys = census.keys.clone();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), census.keys.len(), "{name}: a key is visited twice");
    assert_eq!(
        census.values,
        model.num_params(),
        "{name}: the parameter walk visits {} values, the module holds {}",
        census.values,
        model.num_params()
    );
}

/// A minimal Hugging Face hub on `127.0.0.1` for tests: serves `files` of model `id` at
/// `/{id}/resolve/main/{file}` with the headers `hf-hub` reads (`x-repo-commit`, `etag`,
/// `Content-Range` for ranged requests); 404 for anything else. Stops when dropped.
pub struct HubServer {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    /// Requests served so far.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubServer {
    /// Serves `files` (name → bytes) as model `id`.
    pub fn start(id: &str, files: HashMap<String, Vec<u8>>) -> Self {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, requests2, prefix) = (stop.clone(), requests.clone(), format!("/{id}/resolve/main/"));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).ok();
                let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("range") {
                            range = v.trim().strip_prefix("bytes=").map(str::to_string);
                        }
                    }
                }
                requests2.fetch_add(1, Ordering::SeqCst);
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut out = stream;
                let Some(body) = path.strip_prefix(&prefix).and_then(|f| files.get(f)) else {
                    let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                };
                let len = body.len();
                let (status, part, content_range) = match range.as_deref().and_then(|r| r.split_once('-')) {
                    Some((a, b)) => {
                        let start: usize = a.parse().unwrap_or(0).min(len);
                        let end: usize = b.parse().map(|e: usize| e + 1).unwrap_or(len).min(len);
                        ("206 Partial Content", &body[start..end], Some(format!("bytes {start}-{}/{len}", end.max(1) - 1)))
                    }
                    None => ("200 OK", &body[..], None),
                };
                let mut head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nx-repo-commit: {}\r\netag: \"{:016x}{len}\"\r\nConnection: close\r\n",
                    part.len(),
                    "0123456789abcdef0123456789abcdef01234567",
                    body.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64))
                );
                if let Some(cr) = content_range {
                    head.push_str(&format!("Content-Range: {cr}\r\n"));
                }
                head.push_str("\r\n");
                let _ = out.write_all(head.as_bytes()).and_then(|_| out.write_all(part));
            }
        });
        Self { endpoint, requests, stop, thread: Some(thread) }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The bytes `torch.save(OrderedDict(tensors))` writes (PyTorch ≥ 1.6 zip layout, pickle
/// protocol 2, f32 storages, one per tensor, contiguous), for tests of the `.pth` reader and the
/// fuzz seeds. `tensors`: `(key, shape, values)`.
pub fn torch_save_bytes(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    use std::io::Write;
    fn int(p: &mut Vec<u8>, v: usize) {
        if v < 256 {
            p.extend([b'K', v as u8]);
        } else {
            p.push(b'J');
            p.extend((v as i32).to_le_bytes());
        }
    }
    fn text(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn tuple(p: &mut Vec<u8>, items: &[usize]) {
        p.push(b'(');
        for &i in items {
            int(p, i);
        }
        p.push(b't');
    }
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    for (i, (key, shape, values)) in tensors.iter().enumerate() {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{key}: shape and values differ");
        text(&mut p, key);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        text(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        text(&mut p, &i.to_string());
        text(&mut p, "cpu");
        int(&mut p, values.len());
        p.extend(b"tQ");
        int(&mut p, 0);
        tuple(&mut p, shape);
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        tuple(&mut p, &strides);
        p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let mut add = |name: &str, bytes: &[u8]| {
            zip.start_file(name, opts).expect("zip entry");
            zip.write_all(bytes).expect("zip write");
        };
        add("archive/data.pkl", &p);
        add("archive/byteorder", b"little");
        for (i, (_, _, values)) in tensors.iter().enumerate() {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            add(&format!("archive/data/{i}"), &bytes);
        }
        add("archive/version", b"3\n");
        zip.finish().expect("zip finish");
    }
    buf.into_inner()
}
