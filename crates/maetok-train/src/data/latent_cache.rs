//! Cached tokenizer latents: a folder of safetensors shards plus `manifest.json`, written
//! resumably by [`LatentCacheWriter`] and read with random access by [`LatentCache`] (the
//! SiT/DiT trainers' input). Each image contributes the latent of its centre crop (`zq`) and of
//! the mirrored crop (`zq_flip`), its class label, dataset index and `<class>/<file>` path, as
//! `inference/cache_latent.py` caches them (but keeping the labels).
//!
//! Shard `shard-NNNNN.safetensors`: `zq`, `zq_flip` f32 `[n, L, C]`; `labels`, `indices` i64
//! `[n]`; metadata `paths` (JSON list). Shards and the manifest are written atomically, the
//! manifest last, so an interrupted run resumes after the last complete shard.
//! [`LatentCache::export_npz`] writes the reference's one-`.npz`-per-image layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use maetok_nn::io::write_atomic;
use serde::{Deserialize, Serialize};

/// Format name in the manifest.
pub const FORMAT: &str = "maetok-latent-cache";
/// Manifest file name.
pub const MANIFEST: &str = "manifest.json";

/// Errors of the latent cache; messages name the folder or file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path} holds a cache made with a different {field} ({found} vs {wanted}); use another output folder or delete it")]
    Incompatible { path: PathBuf, field: &'static str, found: String, wanted: String },
}

/// One stored shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardInfo {
    pub file: String,
    pub count: usize,
}

/// An image that could not be read (skipped, reported).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedImage {
    pub index: usize,
    pub path: String,
    pub error: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheManifest {
    pub format: String,
    pub version: u32,
    /// The tokenizer checkpoint that produced the latents.
    pub tokenizer: String,
    /// The dataset (folder and layout, or the procedural dataset's parameters).
    pub source: String,
    pub image_size: usize,
    /// `[L, C]` (tokens, channels).
    pub latent_shape: [usize; 2],
    pub classes: Vec<String>,
    /// Images in the dataset (cached + failed + not yet reached).
    pub dataset_len: usize,
    pub shard_size: usize,
    pub shards: Vec<ShardInfo>,
    pub failed: Vec<FailedImage>,
    /// First dataset index not yet processed.
    pub next_index: usize,
    /// The tokenizer config's `vq_mean` / `vq_std` (the diffusion trainers normalise with them).
    pub latent_mean: Option<f64>,
    pub latent_std: Option<f64>,
    /// Mean and standard deviation of every cached `zq` value (what the authors computed their
    /// `vq_mean`/`vq_std` from; useful for tokenizers whose config leaves them at 0/1).
    #[serde(default)]
    pub data_mean: Option<f64>,
    #[serde(default)]
    pub data_std: Option<f64>,
    /// Running sums behind `data_mean`/`data_std`: count, Σz, Σz².
    #[serde(default)]
    pub data_sums: [f64; 3],
}

impl CacheManifest {
    /// A manifest for a new cache.
    pub fn new(
        tokenizer: String,
        source: String,
        image_size: usize,
        latent_shape: [usize; 2],
        classes: Vec<String>,
        dataset_len: usize,
        shard_size: usize,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            tokenizer,
            source,
            image_size,
            latent_shape,
            classes,
            dataset_len,
            shard_size: shard_size.max(1),
            shards: Vec::new(),
            failed: Vec::new(),
            next_index: 0,
            latent_mean: None,
            latent_std: None,
            data_mean: None,
            data_std: None,
            data_sums: [0.0; 3],
        }
    }

    /// Whether every image of the dataset was processed.
    pub fn complete(&self) -> bool {
        self.next_index >= self.dataset_len
    }

    fn read(dir: &Path) -> Result<Self, CacheError> {
        let path = dir.join(MANIFEST);
        let text = maetok_nn::limits::read_text(&path).map_err(|source| CacheError::Io { path: path.clone(), source })?;
        let m: Self = serde_json::from_str(&text).map_err(|e| CacheError::Format { path: path.clone(), msg: e.to_string() })?;
        if m.format != FORMAT {
            return Err(CacheError::Format { path, msg: format!("format '{}' is not '{FORMAT}'", m.format) });
        }
        Ok(m)
    }

    fn write(&self, dir: &Path) -> Result<(), CacheError> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        write_atomic(&path, text.as_bytes()).map_err(|source| CacheError::Io { path, source })
    }
}

/// One cached image.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentRecord {
    /// `[L·C]` latent of the centre crop, row-major `[L, C]`.
    pub zq: Vec<f32>,
    /// `[L·C]` latent of the mirrored crop.
    pub zq_flip: Vec<f32>,
    pub label: usize,
    /// Index in the dataset.
    pub index: usize,
    /// `<class>/<file>`.
    pub path: String,
}

/// Writes a cache, resuming a compatible one found in the folder.
pub struct LatentCacheWriter {
    dir: PathBuf,
    manifest: CacheManifest,
    pending: Vec<LatentRecord>,
    pending_failed: Vec<FailedImage>,
    last_index: Option<usize>,
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

impl LatentCacheWriter {
    /// Opens `dir` for writing. An existing manifest must describe the same tokenizer,
    /// dataset, image size, latent shape, classes and shard size (else an error names the
    /// field); writing then continues at its `next_index`.
    pub fn create_or_resume(dir: impl AsRef<Path>, template: CacheManifest) -> Result<Self, CacheError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| CacheError::Io { path: dir.clone(), source })?;
        let manifest = if dir.join(MANIFEST).is_file() {
            let found = CacheManifest::read(&dir)?;
            let path = dir.join(MANIFEST);
            let check = |field: &'static str, a: String, b: String| {
                if a == b {
                    Ok(())
                } else {
                    Err(CacheError::Incompatible { path: path.clone(), field, found: a, wanted: b })
                }
            };
            check("tokenizer", found.tokenizer.clone(), template.tokenizer.clone())?;
            check("dataset", found.source.clone(), template.source.clone())?;
            check("image size", found.image_size.to_string(), template.image_size.to_string())?;
            check("latent shape", format!("{:?}", found.latent_shape), format!("{:?}", template.latent_shape))?;
            check("dataset length", found.dataset_len.to_string(), template.dataset_len.to_string())?;
            check("class list", found.classes.join(","), template.classes.join(","))?;
            check("shard size", found.shard_size.to_string(), template.shard_size.to_string())?;
            found
        } else {
            template.write(&dir)?;
            template
        };
        Ok(Self { dir, manifest, pending: Vec::new(), pending_failed: Vec::new(), last_index: None })
    }

    /// The first dataset index still to process.
    pub fn next_index(&self) -> usize {
        self.manifest.next_index
    }

    pub fn manifest(&self) -> &CacheManifest {
        &self.manifest
    }

    /// Sets the latent normalisation recorded for the trainers.
    pub fn set_latent_stats(&mut self, mean: Option<f64>, std: Option<f64>) {
        self.manifest.latent_mean = mean;
        self.manifest.latent_std = std;
    }

    fn advance(&mut self, index: usize) -> Result<(), CacheError> {
        if index < self.manifest.next_index || self.last_index.is_some_and(|l| index <= l) {
            return Err(CacheError::Format {
                path: self.dir.clone(),
                msg: format!("image {index} was already written or is out of order"),
            });
        }
        self.last_index = Some(index);
        Ok(())
    }

    /// Adds one image's latents; writes a shard when `shard_size` are pending.
    pub fn push(&mut self, record: LatentRecord) -> Result<(), CacheError> {
        let want = self.manifest.latent_shape[0] * self.manifest.latent_shape[1];
        if record.zq.len() != want || record.zq_flip.len() != want {
            return Err(CacheError::Format {
                path: self.dir.clone(),
                msg: format!("latent of {} has {} values, the cache holds {:?}", record.path, record.zq.len(), self.manifest.latent_shape),
            });
        }
        self.advance(record.index)?;
        self.pending.push(record);
        if self.pending.len() >= self.manifest.shard_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Records an image that could not be read.
    pub fn fail(&mut self, index: usize, path: String, error: String) -> Result<(), CacheError> {
        self.advance(index)?;
        self.pending_failed.push(FailedImage { index, path, error });
        Ok(())
    }

    /// Writes the pending shard (if any) and the manifest.
    pub fn flush(&mut self) -> Result<(), CacheError> {
        let Some(last) = self.last_index else { return Ok(()) };
        if !self.pending.is_empty() {
            let n = self.pending.len();
            let [l, c] = self.manifest.latent_shape;
            let file = format!("shard-{:05}.safetensors", self.manifest.shards.len());
            let zq = f32_bytes(self.pending.iter().flat_map(|r| r.zq.iter().copied()));
            let zf = f32_bytes(self.pending.iter().flat_map(|r| r.zq_flip.iter().copied()));
            let labels: Vec<u8> = self.pending.iter().flat_map(|r| (r.label as i64).to_le_bytes()).collect();
            let indices: Vec<u8> = self.pending.iter().flat_map(|r| (r.index as i64).to_le_bytes()).collect();
            let paths: Vec<&str> = self.pending.iter().map(|r| r.path.as_str()).collect();
            use safetensors::{tensor::TensorView, Dtype};
            let views = vec![
                ("zq", TensorView::new(Dtype::F32, vec![n, l, c], &zq).expect("sizes")),
                ("zq_flip", TensorView::new(Dtype::F32, vec![n, l, c], &zf).expect("sizes")),
                ("labels", TensorView::new(Dtype::I64, vec![n], &labels).expect("sizes")),
                ("indices", TensorView::new(Dtype::I64, vec![n], &indices).expect("sizes")),
            ];
            let meta = HashMap::from([("paths".to_string(), serde_json::to_string(&paths).expect("json"))]);
            let bytes = safetensors::serialize(views, Some(meta))
                .map_err(|e| CacheError::Format { path: self.dir.join(&file), msg: e.to_string() })?;
            let path = self.dir.join(&file);
            write_atomic(&path, &bytes).map_err(|source| CacheError::Io { path, source })?;
            self.manifest.shards.push(ShardInfo { file, count: n });
            let sums = &mut self.manifest.data_sums;
            for r in &self.pending {
                for &v in &r.zq {
                    sums[0] += 1.0;
                    sums[1] += v as f64;
                    sums[2] += (v as f64) * (v as f64);
                }
            }
            let [cnt, s1, s2] = *sums;
            if cnt > 1.0 {
                let mean = s1 / cnt;
                self.manifest.data_mean = Some(mean);
                self.manifest.data_std = Some(((s2 - cnt * mean * mean) / (cnt - 1.0)).max(0.0).sqrt());
            }
            self.pending.clear();
        }
        self.manifest.failed.append(&mut self.pending_failed);
        self.manifest.next_index = last + 1;
        self.manifest.write(&self.dir)
    }

    /// Writes what is pending and returns the final manifest.
    pub fn finish(mut self) -> Result<CacheManifest, CacheError> {
        self.flush()?;
        Ok(self.manifest)
    }
}

struct Shard {
    map: memmap2::Mmap,
    /// Byte ranges of `zq`, `zq_flip` in the file.
    zq: usize,
    zq_flip: usize,
    labels: Vec<usize>,
    indices: Vec<usize>,
    paths: Vec<String>,
}

/// Random access to a cache written by [`LatentCacheWriter`].
pub struct LatentCache {
    dir: PathBuf,
    manifest: CacheManifest,
    shards: Vec<Shard>,
    /// `starts[s]` = index of the first record of shard `s`.
    starts: Vec<usize>,
    len: usize,
}

impl LatentCache {
    /// Opens a cache folder (complete or not) and maps its shards.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CacheError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = CacheManifest::read(&dir)?;
        let [l, c] = manifest.latent_shape;
        {
            use maetok_nn::limits::{check_positive_at_most, MAX_TOKENS, MAX_WIDTH};
            let bad = |msg: String| CacheError::Format { path: dir.join(MANIFEST), msg };
            check_positive_at_most("latent_shape[0] (tokens)", l, MAX_TOKENS).map_err(bad)?;
            check_positive_at_most("latent_shape[1] (channels)", c, MAX_WIDTH).map_err(bad)?;
        }
        let mut shards = Vec::new();
        let mut starts = Vec::new();
        let mut len = 0;
        for info in &manifest.shards {
            let path = dir.join(&info.file);
            let bad = |msg: String| CacheError::Format { path: path.clone(), msg };
            let file = std::fs::File::open(&path).map_err(|source| CacheError::Io { path: path.clone(), source })?;
            // SAFETY: shards are written once (atomically) and never modified afterwards.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| CacheError::Io { path: path.clone(), source })?;
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
            let base = 8 + header_len;
            let info_of = |name: &str, dtype: safetensors::Dtype, shape: Vec<usize>| -> Result<usize, CacheError> {
                let t = meta.info(name).ok_or_else(|| bad(format!("no tensor '{name}'")))?;
                if t.dtype != dtype || t.shape != shape {
                    return Err(bad(format!("tensor '{name}' is {:?} {:?}, expected {dtype:?} {shape:?}", t.dtype, t.shape)));
                }
                if base + t.data_offsets.1 > map.len() {
                    return Err(bad(format!(
                        "tensor '{name}' ends at byte {}, past the end of the {}-byte file",
                        base + t.data_offsets.1,
                        map.len()
                    )));
                }
                Ok(base + t.data_offsets.0)
            };
            let n = info.count;
            let zq = info_of("zq", safetensors::Dtype::F32, vec![n, l, c])?;
            let zq_flip = info_of("zq_flip", safetensors::Dtype::F32, vec![n, l, c])?;
            let ints = |off: usize| -> Vec<usize> {
                map[off..off + 8 * n].chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8")) as usize).collect()
            };
            let labels = ints(info_of("labels", safetensors::Dtype::I64, vec![n])?);
            let indices = ints(info_of("indices", safetensors::Dtype::I64, vec![n])?);
            let paths: Vec<String> = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get("paths"))
                .and_then(|p| serde_json::from_str(p).ok())
                .ok_or_else(|| bad("metadata 'paths' is missing or not a JSON list".into()))?;
            if paths.len() != n {
                return Err(bad(format!("{} paths for {n} records", paths.len())));
            }
            // Paths name files of the export (`<out>/<path>.npz`): relative, inside the folder.
            if let Some(p) = paths.iter().find(|p| !is_plain_relative(p)) {
                return Err(bad(format!("record path '{p}' is not a plain relative path (<class>/<file>)")));
            }
            if let Some(&bad_label) = labels.iter().find(|&&x| x >= manifest.classes.len()) {
                return Err(bad(format!("label {bad_label} is out of range for {} classes", manifest.classes.len())));
            }
            starts.push(len);
            len += n;
            shards.push(Shard { map, zq, zq_flip, labels, indices, paths });
        }
        Ok(Self { dir, manifest, shards, starts, len })
    }

    /// Number of cached images.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn manifest(&self) -> &CacheManifest {
        &self.manifest
    }

    /// `[L, C]`.
    pub fn latent_shape(&self) -> [usize; 2] {
        self.manifest.latent_shape
    }

    pub fn classes(&self) -> &[String] {
        &self.manifest.classes
    }

    fn locate(&self, i: usize) -> (usize, usize) {
        assert!(i < self.len, "record {i} out of range ({} cached in {})", self.len, self.dir.display());
        let s = self.starts.partition_point(|&st| st <= i) - 1;
        (s, i - self.starts[s])
    }

    fn read_f32(&self, s: usize, base: usize, j: usize) -> Vec<f32> {
        let [l, c] = self.manifest.latent_shape;
        let bytes = l * c * 4;
        let off = base + j * bytes;
        self.shards[s].map[off..off + bytes].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect()
    }

    /// Label of record `i`.
    pub fn label(&self, i: usize) -> usize {
        let (s, j) = self.locate(i);
        self.shards[s].labels[j]
    }

    /// Latent of record `i`, mirrored or not, `[L·C]` row-major.
    pub fn latent(&self, i: usize, flip: bool) -> Vec<f32> {
        let (s, j) = self.locate(i);
        let sh = &self.shards[s];
        self.read_f32(s, if flip { sh.zq_flip } else { sh.zq }, j)
    }

    /// Everything stored for record `i`.
    pub fn get(&self, i: usize) -> LatentRecord {
        let (s, j) = self.locate(i);
        let sh = &self.shards[s];
        LatentRecord {
            zq: self.read_f32(s, sh.zq, j),
            zq_flip: self.read_f32(s, sh.zq_flip, j),
            label: sh.labels[j],
            index: sh.indices[j],
            path: sh.paths[j].clone(),
        }
    }

    /// Writes the reference layout: `<out>/<class>/<file>.npz` with `path` (0-d `<U`), `zq`
    /// and `zq_flip` (`<f4` `[L, C]`), stored uncompressed like `np.savez`. Returns the count.
    pub fn export_npz(&self, out: impl AsRef<Path>) -> Result<usize, CacheError> {
        let out = out.as_ref();
        let [l, c] = self.manifest.latent_shape;
        for i in 0..self.len {
            let r = self.get(i);
            let path = out.join(format!("{}.npz", r.path));
            let io = |source| CacheError::Io { path: path.clone(), source };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let utf32: Vec<u8> = r.path.chars().flat_map(|ch| (ch as u32).to_le_bytes()).collect();
            let members = [
                ("path.npy", npy_bytes(&format!("<U{}", r.path.chars().count()), &[], &utf32)),
                ("zq.npy", npy_bytes("<f4", &[l, c], &f32_bytes(r.zq))),
                ("zq_flip.npy", npy_bytes("<f4", &[l, c], &f32_bytes(r.zq_flip))),
            ];
            let mut buf = std::io::Cursor::new(Vec::new());
            {
                let mut zip = zip::ZipWriter::new(&mut buf);
                let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
                for (name, bytes) in members {
                    use std::io::Write;
                    zip.start_file(name, opts).map_err(|e| CacheError::Format { path: path.clone(), msg: e.to_string() })?;
                    zip.write_all(&bytes).map_err(io)?;
                }
                zip.finish().map_err(|e| CacheError::Format { path: path.clone(), msg: e.to_string() })?;
            }
            write_atomic(&path, &buf.into_inner()).map_err(io)?;
        }
        Ok(self.len)
    }
}

/// Whether `p` is a relative path of plain names (no root, no `..`, no `.`, not empty).
fn is_plain_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// An `.npy` (format 1.0) holding `data` with the given dtype and shape; the header is padded
/// with spaces so that the data starts at a multiple of 64 bytes, as NumPy writes it.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = maetok_eval::npz::npy_header(descr, shape);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> LatentRecord {
        LatentRecord { zq: vec![i as f32; 6], zq_flip: vec![-(i as f32); 6], label: i % 2, index: i, path: format!("c{}/{i}.png", i % 2) }
    }

    #[test]
    fn an_interrupted_cache_resumes_after_its_last_shard() {
        let dir = tempfile::tempdir().unwrap();
        let template = CacheManifest::new("tok".into(), "data".into(), 32, [2, 3], vec!["c0".into(), "c1".into()], 7, 2);
        let mut w = LatentCacheWriter::create_or_resume(dir.path(), template.clone()).unwrap();
        for i in 0..3 {
            w.push(record(i)).unwrap();
        }
        drop(w); // interrupted: record 2 was pending
        let mut w = LatentCacheWriter::create_or_resume(dir.path(), template.clone()).unwrap();
        assert_eq!(w.next_index(), 2);
        assert!(w.push(record(1)).is_err(), "already written");
        for i in 2..6 {
            w.push(record(i)).unwrap();
        }
        w.fail(6, "c0/6.png".into(), "corrupt".into()).unwrap();
        let m = w.finish().unwrap();
        assert!(m.complete());
        assert_eq!(m.failed.len(), 1);
        let cache = LatentCache::open(dir.path()).unwrap();
        assert_eq!(cache.len(), 6);
        for i in 0..6 {
            assert_eq!(cache.get(i), record(i));
        }
        let mut other = template;
        other.image_size = 64;
        let err = LatentCacheWriter::create_or_resume(dir.path(), other).err().unwrap().to_string();
        assert!(err.contains("image size"), "{err}");
    }

    #[test]
    fn npy_headers_are_64_byte_aligned() {
        for (descr, shape) in [("<f4", vec![128, 32]), ("<U31", vec![]), ("<f4", vec![5])] {
            let b = npy_bytes(descr, &shape, &[]);
            assert_eq!(b.len() % 64, 0, "{descr} {shape:?}");
            assert_eq!(*b.last().unwrap(), b'\n');
        }
    }
}
