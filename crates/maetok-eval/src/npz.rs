//! ADM-format `.npz` sample batches: `arr_0`, uint8 `[N, H, W, 3]` (what the ADM evaluator and
//! `inference/reconstruct_vq.py` / `generate_*.py` read and write).

use std::fs::File;
use std::path::Path;

use maetok_nn::limits::{checked_numel, MAX_ARRAY_BYTES};
use ndarray::Array4;
use ndarray_npy::NpzWriter;

/// Errors reading or writing `.npz` files; messages name the file and key.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    #[error("cannot open {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
}

/// Reads `arr_0` as uint8 `[N, H, W, C]` (the whole batch in memory; [`SampleStream`] reads
/// it in parts).
pub fn read_samples(path: impl AsRef<Path>) -> Result<Array4<u8>, NpzError> {
    let mut stream = SampleStream::open(path)?;
    let n = stream.len();
    stream.read(0, n)
}

/// Checks a zip member's declared size against [`MAX_ARRAY_BYTES`] and reads it, never past
/// that size (a member that inflates further is a zip bomb, refused).
fn read_member(member: &mut impl std::io::Read, declared: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    if declared > MAX_ARRAY_BYTES {
        return Err(format!("{what} declares {declared} bytes, more than the limit {MAX_ARRAY_BYTES}"));
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    member.take(declared + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {what}: {e}"))?;
    if bytes.len() as u64 > declared {
        return Err(format!("{what} inflates past the size its zip entry declares (a zip bomb?)"));
    }
    if (bytes.len() as u64) < declared {
        return Err(format!("{what} is shorter than its zip entry declares"));
    }
    Ok(bytes)
}

/// Writes `samples` (uint8 `[N, H, W, C]`) as `arr_0`, uncompressed like `np.savez`, through a
/// temporary file and a rename.
pub fn write_samples(path: impl AsRef<Path>, samples: &Array4<u8>) -> Result<(), NpzError> {
    let shape: [usize; 4] = samples.shape().try_into().expect("4-D");
    let mut writer = SampleWriter::create_shape(path, shape)?;
    writer.write(samples.as_standard_layout().as_slice().expect("standard layout"))?;
    writer.finish()
}

/// Writes an `.npz` through [`maetok_nn::io::write_atomic_with`]; `add` adds the arrays.
fn write_npz(path: &Path, add: impl FnOnce(&mut NpzWriter<&mut File>) -> Result<(), ndarray_npy::WriteNpzError>) -> Result<(), NpzError> {
    let p = path.display().to_string();
    let fail = |e: std::io::Error| match e.get_ref().map(|inner| inner.is::<ndarray_npy::WriteNpzError>()) {
        Some(true) => NpzError::Format { path: p.clone(), msg: e.to_string() },
        _ => NpzError::Io { path: p.clone(), source: e },
    };
    maetok_nn::io::write_atomic_with(path, |file: &mut File| -> std::io::Result<()> {
        let mut npz = NpzWriter::new(file);
        add(&mut npz).map_err(std::io::Error::other)?;
        npz.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
    .map_err(fail)
}

/// The `.npy` (format 1.0) header for an array of `descr` and `shape`, padded with spaces so that
/// the data starts at a multiple of 64 bytes, as NumPy writes it.
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_text = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out
}

/// Writes an ADM sample batch (`arr_0`, uint8 `[N, H, W, 3]`) a few images at a time, so that
/// 50,000 samples (9.8 GB at 256², 39 GB at 512²) never sit in memory together: the `.npy`
/// header goes first (`N` is known in advance), the images follow as they are produced, stored
/// uncompressed as `np.savez` does (zip64 past 4 GB, which NumPy reads), into a temporary file
/// that [`SampleWriter::finish`] flushes to disk and renames over `path`. Dropped unfinished
/// (an error, a panic), it removes the temporary file and leaves `path` as it was.
pub struct SampleWriter {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    zip: Option<zip::ZipWriter<File>>,
    shape: [usize; 4],
    written: usize,
}

impl SampleWriter {
    /// Starts `path` for `n` images of `h × w` RGB.
    pub fn create(path: impl AsRef<Path>, n: usize, h: usize, w: usize) -> Result<Self, NpzError> {
        Self::create_shape(path, [n, h, w, 3])
    }

    /// Starts `path` for a uint8 array of `shape` `[N, H, W, C]`.
    fn create_shape(path: impl AsRef<Path>, shape: [usize; 4]) -> Result<Self, NpzError> {
        use std::io::Write;
        let [n, h, w, c] = shape;
        let path = path.as_ref().to_path_buf();
        let p = path.display().to_string();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let bytes = checked_numel(&shape)
            .ok_or_else(|| NpzError::Format { path: p.clone(), msg: format!("{n} images of {h}x{w}x{c} overflow") })?;
        let header = npy_header("|u1", &shape);
        let file = File::create(&tmp).map_err(|source| NpzError::Io { path: tmp.display().to_string(), source })?;
        let mut writer = Self { path, tmp, zip: Some(zip::ZipWriter::new(file)), shape, written: 0 };
        // A fixed timestamp (1980-01-01, the zip format's zero): the file depends only on the
        // images, so runs with the same seeds (on any number of devices) write identical bytes.
        let opts = zip::write::SimpleFileOptions::default()
            .last_modified_time(zip::DateTime::default())
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes + header.len() as u64 >= u32::MAX as u64);
        let zip = writer.zip.as_mut().expect("open");
        zip.start_file("arr_0.npy", opts).map_err(|e| NpzError::Format { path: p.clone(), msg: e.to_string() })?;
        zip.write_all(&header).map_err(|source| NpzError::Io { path: p, source })?;
        Ok(writer)
    }

    /// Appends whole images: `images` holds `k·H·W·3` bytes (`[k, H, W, 3]`, row-major).
    pub fn write(&mut self, images: &[u8]) -> Result<(), NpzError> {
        use std::io::Write;
        let p = self.path.display().to_string();
        let [_, h, w, c] = self.shape;
        let image = h * w * c;
        if image == 0 || !images.len().is_multiple_of(image) {
            return Err(NpzError::Format { path: p, msg: format!("{} bytes are not whole {h}x{w}x{c} images", images.len()) });
        }
        let k = images.len() / image;
        if self.written + k > self.shape[0] {
            return Err(NpzError::Format { path: p, msg: format!("{} images written to a batch of {}", self.written + k, self.shape[0]) });
        }
        let zip = self.zip.as_mut().expect("open until finish");
        zip.write_all(images).map_err(|source| NpzError::Io { path: p, source })?;
        self.written += k;
        Ok(())
    }

    /// Images written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Completes the archive (every image written), flushes it to disk and renames it over the
    /// destination.
    pub fn finish(mut self) -> Result<(), NpzError> {
        let p = self.path.display().to_string();
        if self.written != self.shape[0] {
            return Err(NpzError::Format { path: p, msg: format!("{} of {} images written", self.written, self.shape[0]) });
        }
        let zip = self.zip.take().expect("open until finish");
        let file = zip.finish().map_err(|e| NpzError::Format { path: p.clone(), msg: e.to_string() })?;
        let io = |source| NpzError::Io { path: p.clone(), source };
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io)
    }
}

impl Drop for SampleWriter {
    fn drop(&mut self) {
        if self.zip.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    /// `descr`, e.g. `|u1`, `<f4`, `<f8`.
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// Bytes before the data (magic, version, length field, header text).
    pub data_offset: usize,
}

/// An `.npy` header that cannot be read; the message quotes the offending part.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NpyHeaderError(pub String);

/// Parses the header at the start of an `.npy` stream (format versions 1, 2 and 3).
pub fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, NpyHeaderError> {
    parse_header(bytes).map_err(NpyHeaderError)
}

fn parse_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (bad magic)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let text = bytes.get(start..start + len).ok_or("truncated .npy header")?;
    let text = std::str::from_utf8(text).map_err(|_| "non-UTF-8 .npy header")?;
    let field = |name: &str| -> Result<&str, String> {
        let at = text.find(&format!("'{name}'")).ok_or(format!("header has no '{name}': {text}"))?;
        Ok(text[at + name.len() + 2..].trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.trim_start_matches('\'').split('\'').next().unwrap_or_default().to_string();
    let fortran_order = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let inner = shape_text.trim_start_matches('(').split(')').next().unwrap_or_default();
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape entry '{s}' in {text}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NpyHeader { descr, fortran_order, shape, data_offset: start + len })
}

/// Streams images out of an ADM sample batch (`arr_0`, uint8 `[N, H, W, 3]`) without loading
/// all of it: 50,000 images at 256² are 9.8 GB. Stored (uncompressed, `np.savez`) archives are
/// read in place by offset; compressed ones (`np.savez_compressed`) are decompressed once into
/// memory.
pub struct SampleStream {
    path: String,
    file: File,
    /// Absolute offset of the first image byte in the file, for stored archives.
    offset: Option<u64>,
    in_memory: Option<Vec<u8>>,
    shape: [usize; 4],
}

impl SampleStream {
    /// Opens `path` and checks `arr_0`'s header: uint8, C order, 4-D, 3 channels.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NpzError> {
        use std::io::Read;
        let p = path.as_ref().display().to_string();
        let fmt = |msg: String| NpzError::Format { path: p.clone(), msg };
        let file = File::open(path.as_ref()).map_err(|source| NpzError::Io { path: p.clone(), source })?;
        let mut zip = zip::ZipArchive::new(file.try_clone().map_err(|source| NpzError::Io { path: p.clone(), source })?)
            .map_err(|e| fmt(format!("not a .npz (zip) archive: {e}")))?;
        let name = ["arr_0.npy", "arr_0"].into_iter().find(|n| zip.index_for_name(n).is_some());
        let name = name.ok_or_else(|| fmt("has no 'arr_0' array (expected an ADM sample batch)".into()))?;
        let mut member = zip.by_name(name).map_err(|e| fmt(format!("cannot open arr_0: {e}")))?;
        let stored = member.compression() == zip::CompressionMethod::Stored;
        let data_start = member.data_start();
        let mut head = vec![0u8; 4096.min(member.size() as usize)];
        member.read_exact(&mut head).map_err(|e| fmt(format!("cannot read arr_0: {e}")))?;
        let h = parse_npy_header(&head).map_err(|m| fmt(format!("arr_0: {m}")))?;
        if h.descr != "|u1" && h.descr != "u1" && h.descr != "<u1" {
            return Err(fmt(format!("arr_0 has dtype {} (expected uint8 images)", h.descr)));
        }
        if h.fortran_order || h.shape.len() != 4 || h.shape[3] != 3 {
            return Err(fmt(format!(
                "arr_0 has shape {:?}{} (expected [N, H, W, 3] in C order)",
                h.shape,
                if h.fortran_order { " in Fortran order" } else { "" }
            )));
        }
        let shape = [h.shape[0], h.shape[1], h.shape[2], h.shape[3]];
        let data = checked_numel(&shape)
            .filter(|&n| n <= MAX_ARRAY_BYTES)
            .ok_or_else(|| fmt(format!("arr_0 claims shape {shape:?}, more than the limit of {MAX_ARRAY_BYTES} bytes")))?;
        let expected = h.data_offset as u64 + data;
        if member.size() < expected {
            return Err(fmt(format!("arr_0 is truncated: {} bytes for shape {:?}", member.size(), shape)));
        }
        let file_len = file.metadata().map_err(|source| NpzError::Io { path: p.clone(), source })?.len();
        let (offset, in_memory) = match (stored, data_start) {
            (true, Some(start)) => {
                if start + expected > file_len {
                    return Err(fmt(format!("arr_0 claims {expected} bytes from byte {start}, past the end of the {file_len}-byte file")));
                }
                (Some(start + h.data_offset as u64), None)
            }
            _ => {
                let declared = member.size();
                let mut all = head.clone();
                all.extend(read_member(&mut member, declared - head.len() as u64, "arr_0").map_err(fmt)?);
                (None, Some(all.split_off(h.data_offset)))
            }
        };
        drop(member);
        Ok(Self { path: p, file, offset, in_memory, shape })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// `[H, W, 3]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.shape[1], self.shape[2], self.shape[3]]
    }

    /// Images `start .. start + n` (clamped to the end) as `[n, H, W, 3]`.
    pub fn read(&mut self, start: usize, n: usize) -> Result<Array4<u8>, NpzError> {
        use std::io::{Read, Seek, SeekFrom};
        let n = n.min(self.len().saturating_sub(start));
        let img = self.shape[1] * self.shape[2] * self.shape[3];
        let mut buf = vec![0u8; n * img];
        if let Some(mem) = &self.in_memory {
            buf.copy_from_slice(&mem[start * img..(start + n) * img]);
        } else {
            let off = self.offset.expect("stored archive") + (start * img) as u64;
            let io = |source| NpzError::Io { path: self.path.clone(), source };
            self.file.seek(SeekFrom::Start(off)).map_err(io)?;
            self.file.read_exact(&mut buf).map_err(|source| NpzError::Io { path: self.path.clone(), source })?;
        }
        Ok(Array4::from_shape_vec((n, self.shape[1], self.shape[2], self.shape[3]), buf).expect("sizes agree"))
    }
}

/// Reads the float array `name` (`<f8` or `<f4`) of an `.npz`, or `None` if it is absent
/// (e.g. the `mu`/`sigma`/`mu_s`/`sigma_s` statistics of an ADM reference batch).
pub fn read_f64_array(path: impl AsRef<Path>, name: &str) -> Result<Option<ndarray::ArrayD<f64>>, NpzError> {
    let p = path.as_ref().display().to_string();
    let fmt = |msg: String| NpzError::Format { path: p.clone(), msg };
    let file = File::open(path.as_ref()).map_err(|source| NpzError::Io { path: p.clone(), source })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fmt(format!("not a .npz (zip) archive: {e}")))?;
    let member_name = [format!("{name}.npy"), name.to_string()].into_iter().find(|n| zip.index_for_name(n).is_some());
    let Some(member_name) = member_name else { return Ok(None) };
    let mut member = zip.by_name(&member_name).map_err(|e| fmt(format!("cannot read '{name}': {e}")))?;
    let declared = member.size();
    let bytes = read_member(&mut member, declared, &format!("'{name}'")).map_err(fmt)?;
    let h = parse_npy_header(&bytes).map_err(|m| fmt(format!("'{name}': {m}")))?;
    if h.fortran_order {
        return Err(fmt(format!("'{name}' is stored in Fortran order (expected C order)")));
    }
    let data = &bytes[h.data_offset..];
    let count = checked_numel(&h.shape)
        .filter(|&n| n <= data.len() as u64)
        .ok_or_else(|| fmt(format!("'{name}' claims shape {:?}, more values than its {} bytes hold", h.shape, data.len())))?
        as usize;
    let values: Vec<f64> = match h.descr.as_str() {
        "<f8" => data.chunks_exact(8).take(count).map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect(),
        "<f4" => data.chunks_exact(4).take(count).map(|c| f32::from_le_bytes(c.try_into().expect("4")) as f64).collect(),
        other => return Err(fmt(format!("'{name}' has dtype {other} (expected <f8 or <f4)"))),
    };
    if values.len() != count {
        return Err(fmt(format!("'{name}' is truncated ({} of {count} values)", values.len())));
    }
    Ok(Some(ndarray::ArrayD::from_shape_vec(h.shape, values).expect("count checked")))
}

/// Writes float64 arrays (e.g. `mu`, `sigma`, `mu_s`, `sigma_s`) to an `.npz` atomically.
pub fn write_f64_arrays(path: impl AsRef<Path>, arrays: &[(&str, ndarray::ArrayD<f64>)]) -> Result<(), NpzError> {
    write_npz(path.as_ref(), |npz| arrays.iter().try_for_each(|(name, a)| npz.add_array(*name, a)))
}
