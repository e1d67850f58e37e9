//! Checks a PyTorch checkpoint (`torch.save`: a zip of `data.pkl` + `data/<n>` storages, or the
//! legacy pickle stream) before burn-store's reader parses it.
//!
//! burn-store trusts what the file says: a string opcode claiming 4 GB allocates 4 GB, a zip
//! member is inflated to whatever size it reaches, and a tensor whose storage is absent is filled
//! with zeros of the claimed shape. A pickle may also name any Python global (`os.system`); the
//! reader never calls one, but such a file is not a state dict and is refused, as PyTorch's own
//! `weights_only` unpickler refuses it. This module walks the file without building anything:
//!
//! * the zip directory: every member's declared size within [`MAX_ARRAY_BYTES`], stored members
//!   inside the file, compressed members inflated (to nowhere) at most one byte past their
//!   declared size, so a zip bomb is caught after reading what it declared;
//! * every pickle opcode: known, its arguments inside the pickle, and every global it imports
//!   (`GLOBAL`, `INST`, `STACK_GLOBAL`) on [`ALLOWED_GLOBALS`], the globals a state dict needs.
//!
//! Tensor shapes are checked after parsing, against the bytes the file holds
//! ([`crate::io::Loader::from_pytorch`]).

use std::io::Read;
use std::path::Path;

use crate::limits::MAX_ARRAY_BYTES;

/// Python globals a `torch.save`d state dict (or a checkpoint dict of them) may import: what
/// PyTorch's `weights_only` unpickler allows for tensors, containers and their dtypes.
pub const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.Tensor",
    "torch.Size",
    "torch.device",
    "torch.serialization._get_layout",
    "torch.strided",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.float32",
    "torch.float64",
    "torch.float16",
    "torch.bfloat16",
    "torch.int64",
    "torch.int32",
    "torch.int16",
    "torch.int8",
    "torch.uint8",
    "torch.bool",
    "builtins.set",
    "builtins.frozenset",
    "__builtin__.set",
];

/// Pickles in a legacy (non-zip) file: magic, protocol, system info, the state dict, storage keys.
const LEGACY_PICKLES: usize = 5;

/// Checks `path` as a PyTorch checkpoint; the error says what is wrong (not the path: the
/// caller names it).
pub fn check_pytorch_file(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut magic = [0u8; 4];
    let got = file.read(&mut magic).map_err(|e| e.to_string())?;
    if got == 4 && &magic == b"PK\x03\x04" {
        return check_zip(file, len);
    }
    if len > MAX_ARRAY_BYTES {
        return Err(format!("a {len}-byte legacy checkpoint exceeds the limit {MAX_ARRAY_BYTES}"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        return Err("tar-format PyTorch checkpoints (PyTorch before 0.1.10) are not supported; re-save it with torch.save".into());
    }
    // Legacy layout: several pickles back to back, then raw storage bytes.
    let mut at = 0;
    for i in 0..LEGACY_PICKLES {
        if i > 0 && bytes.get(at) != Some(&0x80) {
            break;
        }
        at += scan_pickle(&bytes[at..]).map_err(|e| format!("pickle {} at byte {at}: {e}", i + 1))?;
    }
    Ok(())
}

fn check_zip(file: std::fs::File, len: u64) -> Result<(), String> {
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mut pickle = None;
    for i in 0..zip.len() {
        let (name, size, stored) = {
            let m = zip.by_index_raw(i).map_err(|e| format!("zip member {i}: {e}"))?;
            let stored = m.compression() == zip::CompressionMethod::Stored;
            if stored && (m.size() != m.compressed_size() || m.size() > len) {
                return Err(format!(
                    "zip member '{}' claims {} bytes stored in {} (file: {len} bytes)",
                    m.name(),
                    m.size(),
                    m.compressed_size()
                ));
            }
            (m.name().to_string(), m.size(), stored)
        };
        if size > MAX_ARRAY_BYTES {
            return Err(format!("zip member '{name}' declares {size} bytes, more than the limit {MAX_ARRAY_BYTES}"));
        }
        if !stored {
            // Inflate it to nowhere, one byte past what it declares at most.
            let m = zip.by_index(i).map_err(|e| format!("zip member '{name}': {e}"))?;
            let n = std::io::copy(&mut m.take(size + 1), &mut std::io::sink()).map_err(|e| format!("zip member '{name}': {e}"))?;
            if n > size {
                return Err(format!("zip member '{name}' inflates past its declared {size} bytes (a zip bomb?)"));
            }
        }
        if name.ends_with("data.pkl") && !name.contains("/data/") {
            if pickle.is_some() {
                return Err("the archive holds more than one data.pkl".into());
            }
            pickle = Some((i, name, size));
        }
    }
    let (i, name, size) = pickle.ok_or("the zip archive has no data.pkl (not a torch.save checkpoint)")?;
    let mut bytes = Vec::with_capacity(size as usize);
    zip.by_index(i).map_err(|e| format!("{name}: {e}"))?.take(size).read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
    scan_pickle(&bytes).map_err(|e| format!("{name}: {e}"))?;
    Ok(())
}

/// What a value pushed by the last opcodes was, as far as `STACK_GLOBAL` needs to know.
#[derive(Clone)]
enum Pushed {
    Text(String),
    Other,
}

/// Walks one pickle (protocols 0-5) from the start of `bytes` to its `STOP` without building
/// anything; returns the pickle's length. Fails on an unknown opcode, an argument running past
/// the end, or a global outside [`ALLOWED_GLOBALS`] (named).
pub fn scan_pickle(bytes: &[u8]) -> Result<usize, String> {
    let mut pos = 0usize;
    // The last values pushed, and memoised strings: enough to name `STACK_GLOBAL`'s operands
    // as Python's pickler writes them (two strings, possibly memoised and fetched back).
    let mut recent: Vec<Pushed> = Vec::new();
    let mut memo: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut memo_len = 0u64;
    let take = |pos: &mut usize, n: u64| -> Result<&[u8], String> {
        let end =
            (*pos as u64).checked_add(n).filter(|&e| e <= bytes.len() as u64).ok_or_else(|| {
                format!("an argument of {n} bytes at byte {} runs past the end of the pickle ({} bytes)", *pos, bytes.len())
            })? as usize;
        let s = &bytes[*pos..end];
        *pos = end;
        Ok(s)
    };
    let line = |pos: &mut usize| -> Result<String, String> {
        let rest = &bytes[*pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| format!("unterminated text argument at byte {}", *pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        *pos += n + 1;
        Ok(s)
    };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64);
    loop {
        let at = pos;
        let op = *take(&mut pos, 1)?.first().expect("one byte");
        let mut pushed = Pushed::Other;
        match op {
            b'.' => return Ok(pos),
            // No argument.
            b'(' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e' | b'l' | b']' | b'o' | b's' | b't' | b')'
            | b'u' | 0x81 | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | 0x8f | 0x90 | 0x91 | 0x92 | 0x97 | 0x98 => {}
            // One text line.
            b'F' | b'I' | b'L' | b'P' | b'S' | b'g' => {
                line(&mut pos)?;
            }
            b'V' => pushed = Pushed::Text(line(&mut pos)?),
            b'p' => {
                let idx = line(&mut pos)?;
                if let (Ok(i), Some(Pushed::Text(s))) = (idx.trim().parse::<u64>(), recent.last()) {
                    memo.insert(i, s.clone());
                }
                continue;
            }
            // Fixed-size arguments.
            b'K' | 0x80 | 0x82 => {
                take(&mut pos, 1)?;
            }
            b'M' | 0x83 => {
                take(&mut pos, 2)?;
            }
            b'J' | 0x84 => {
                take(&mut pos, 4)?;
            }
            b'G' => {
                take(&mut pos, 8)?;
            }
            0x95 => {
                take(&mut pos, 8)?;
                continue;
            }
            // Memo.
            b'h' | b'j' => {
                let i = le(take(&mut pos, if op == b'h' { 1 } else { 4 })?);
                pushed = memo.get(&i).cloned().map_or(Pushed::Other, Pushed::Text);
            }
            b'q' | b'r' | 0x94 => {
                let i = match op {
                    b'q' => le(take(&mut pos, 1)?),
                    b'r' => le(take(&mut pos, 4)?),
                    _ => memo_len,
                };
                memo_len = memo_len.max(i + 1);
                if let Some(Pushed::Text(s)) = recent.last() {
                    memo.insert(i, s.clone());
                }
                continue;
            }
            // Length-prefixed data.
            b'T' | b'X' | b'B' | b'U' | b'C' | 0x8a | 0x8b | 0x8c | 0x8d | 0x8e | 0x96 => {
                let width = match op {
                    b'U' | b'C' | 0x8a | 0x8c => 1,
                    b'T' | b'X' | b'B' | 0x8b => 4,
                    _ => 8,
                };
                let n = le(take(&mut pos, width)?);
                let data = take(&mut pos, n)?;
                if matches!(op, b'X' | 0x8c | 0x8d) {
                    pushed = Pushed::Text(String::from_utf8_lossy(data).into_owned());
                }
            }
            // Imports.
            b'c' | b'i' => {
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                allow(&module, &name, at)?;
            }
            0x93 => {
                let n = recent.len();
                match (n >= 2).then(|| (&recent[n - 2], &recent[n - 1])) {
                    Some((Pushed::Text(module), Pushed::Text(name))) => allow(module, name, at)?,
                    _ => return Err(format!("STACK_GLOBAL at byte {at} imports a name that cannot be read from the pickle")),
                }
            }
            other => return Err(format!("unknown pickle opcode 0x{other:02x} at byte {at}")),
        }
        recent.push(pushed);
        if recent.len() > 2 {
            recent.remove(0);
        }
    }
}

fn allow(module: &str, name: &str, at: usize) -> Result<(), String> {
    let full = format!("{module}.{name}");
    if ALLOWED_GLOBALS.contains(&full.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "the pickle imports '{full}' (byte {at}), which a state dict never needs; only tensors, their storages and containers are read (refused as torch.load(weights_only=True) refuses it)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_system_is_refused_by_name() {
        // cos\nsystem\n(S'echo hi'\ntR.  — the classic pickle exploit.
        let evil = b"cos\nsystem\n(S'echo hi'\ntR.";
        let e = scan_pickle(evil).unwrap_err();
        assert!(e.contains("os.system"), "{e}");
        // Protocol 4 spelling: SHORT_BINUNICODE module, MEMOIZE, SHORT_BINUNICODE name, STACK_GLOBAL.
        let mut p4 = vec![0x80, 4, 0x8c, 5];
        p4.extend(b"posix");
        p4.extend([0x94, 0x8c, 6]);
        p4.extend(b"system");
        p4.extend([0x94, 0x93, b'.']);
        assert!(scan_pickle(&p4).unwrap_err().contains("posix.system"));
    }

    #[test]
    fn a_state_dict_pickle_passes_and_huge_claims_fail() {
        let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
        assert_eq!(scan_pickle(ok).unwrap(), ok.len());
        // BINUNICODE claiming 4 GB in a 10-byte pickle.
        let huge = b"\x80\x02X\xff\xff\xff\xff.";
        assert!(scan_pickle(huge).unwrap_err().contains("runs past the end"));
        assert!(scan_pickle(b"\x80\x02\xff.").unwrap_err().contains("unknown pickle opcode 0xff"));
        assert!(scan_pickle(b"\x80\x02").is_err());
    }
}
