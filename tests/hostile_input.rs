//! Hostile and malformed files: the inputs that are dangerous by construction (a safetensors
//! header claiming a terabyte, a pickle importing `os.system`, zip bombs, a 100000² PNG, a config
//! with a billion blocks) each fail with a clear error, quickly and without a large allocation;
//! every fuzz target (`fuzz/`, run with `fuzz/run`) survives its seeds, a few hundred seeded
//! mutations of them, and every input the fuzzers found (`fuzz/regressions/<target>/`).

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::backend::NdArray;
use rand::{Rng, SeedableRng};

type B = NdArray<f32>;

/// Records the largest single allocation (the tests of this file run one at a time, [`serial`]).
struct Largest;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the file's tests apart, so that one test's allocations never count for another's.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// Runs `f`, which must fail; returns its message after checking that it took under a second
/// and allocated no single block over 64 MiB.
fn refused<T, E: std::fmt::Display>(what: &str, f: impl FnOnce() -> Result<T, E>) -> String {
    LARGEST.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let result = f();
    let (took, largest) = (start.elapsed(), LARGEST.load(Ordering::Relaxed));
    let Err(e) = result else { panic!("{what}: accepted") };
    let msg = e.to_string();
    eprintln!("{what}: {took:?}, largest allocation {largest} bytes: {msg}");
    assert!(took < Duration::from_secs(1), "{what}: took {took:?}");
    assert!(largest < 64 << 20, "{what}: allocated {largest} bytes at once");
    msg
}

fn tiny_tokenizer_config() -> String {
    let seed = &targets::seeds("tokenizer_folder")[0];
    String::from_utf8(targets::split2(seed).0.to_vec()).unwrap()
}

fn folder(dir: &Path, name: &str, config: &str, weights: &[u8]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), config).unwrap();
    std::fs::write(d.join("model.safetensors"), weights).unwrap();
    d
}

#[test]
fn a_safetensors_header_claiming_a_terabyte_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let header = br#"{"encoder.latent_tokens":{"dtype":"F32","shape":[262144,1048576],"data_offsets":[0,1099511627776]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&[0u8; 16]);
    let d = folder(dir.path(), "tb", &tiny_tokenizer_config(), &file);
    let msg = refused("1 TB safetensors", || maetok::tokenizer::load_pretrained::<B>(&d, &Default::default()));
    assert!(msg.contains("model.safetensors"), "{msg}");
    // The same header in a latent-cache shard.
    let seed = &targets::seeds("latent_cache")[0];
    let c = dir.path().join("cache");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("manifest.json"), targets::split2(seed).0).unwrap();
    std::fs::write(c.join("shard-00000.safetensors"), &file).unwrap();
    let msg = refused("1 TB cache shard", || maetok::train::data::LatentCache::open(&c));
    assert!(msg.contains("shard-00000.safetensors"), "{msg}");
}

/// A zip archive of `(name, bytes, deflate)` members.
fn zip_of(members: &[(&str, &[u8], bool)]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    for (name, bytes, deflate) in members {
        let method = if *deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        zip.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method).large_file(false)).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    buf.into_inner()
}

/// Rewrites the uncompressed size of every deflated member (local header and central
/// directory) to `size`: the member then inflates far past what it declares.
fn forge_sizes(mut z: Vec<u8>, size: u32) -> Vec<u8> {
    let mut i = 0;
    while i + 30 <= z.len() {
        match &z[i..i + 4] {
            b"PK\x03\x04" if z[i + 8] == 8 => z[i + 22..i + 26].copy_from_slice(&size.to_le_bytes()),
            b"PK\x01\x02" if z[i + 10] == 8 => z[i + 24..i + 28].copy_from_slice(&size.to_le_bytes()),
            _ => {}
        }
        i += 1;
    }
    z
}

#[test]
fn a_pickle_importing_os_system_is_refused_by_name() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pkl = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
    let pth = dir.path().join("evil.pth");
    std::fs::write(&pth, zip_of(&[("archive/data.pkl", pkl, false), ("archive/version", b"3\n", false)])).unwrap();
    let msg = refused("os.system pickle", || maetok::nn::io::Loader::<B>::from_pytorch(&pth, &Default::default()));
    assert!(msg.contains("os.system") && msg.contains("evil.pth"), "{msg}");
    // Also as a legacy (non-zip) pickle stream.
    std::fs::write(&pth, pkl).unwrap();
    let msg = refused("os.system legacy pickle", || maetok::nn::io::Loader::<B>::from_pytorch(&pth, &Default::default()));
    assert!(msg.contains("os.system"), "{msg}");
}

#[test]
fn zip_bombs_are_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB of zeros deflate to ~16 KB; the forged entries declare 1 KiB.
    let zeros = vec![0u8; 16 << 20];
    let good = maetok::nn::testing::torch_save_bytes(&[("w", vec![2], vec![1.0, 2.0])]);
    let pkl = {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(good)).unwrap();
        let mut f = z.by_name("archive/data.pkl").unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        v
    };
    let bomb = forge_sizes(zip_of(&[("archive/data.pkl", &pkl, false), ("archive/data/0", &zeros, true)]), 1024);
    drop(zeros);
    let pth = dir.path().join("bomb.pth");
    std::fs::write(&pth, &bomb).unwrap();
    let msg = refused("zip bomb .pth", || maetok::nn::io::Loader::<B>::from_pytorch(&pth, &Default::default()));
    assert!(msg.contains("bomb.pth") && msg.contains("archive/data/0"), "{msg}");
    // The same bomb as an ADM sample batch's arr_0.
    let npz = dir.path().join("bomb.npz");
    let header = maetok::train::data::latent_cache::npy_bytes("|u1", &[1, 4, 4, 3], &[0u8; 48]);
    let mut arr = header.clone();
    arr.resize(16 << 20, 0);
    std::fs::write(&npz, forge_sizes(zip_of(&[("arr_0.npy", &arr, true)]), header.len() as u32 + 48)).unwrap();
    let msg = refused("zip bomb .npz", || maetok::eval::npz::SampleStream::open(&npz));
    assert!(msg.contains("bomb.npz") && msg.contains("zip bomb"), "{msg}");
    // A member declaring a terabyte.
    let huge = forge_sizes(zip_of(&[("arr_0.npy", &header, true)]), u32::MAX);
    std::fs::write(&npz, huge).unwrap();
    refused("npz member declaring 4 GB", || maetok::eval::npz::read_samples(&npz));
}

/// A PNG whose header declares `w × h` (valid chunks and CRCs, a few bytes of pixel data).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_png_declaring_100000_squared_pixels_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.png");
    std::fs::write(&p, png_header(100_000, 100_000)).unwrap();
    let msg = refused("100000² PNG", || maetok::train::data::load_rgb(&p));
    assert!(msg.contains("huge.png"), "{msg}");
}

#[test]
fn configs_with_a_billion_blocks_are_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let seed = &targets::seeds("tokenizer_folder")[0];
    let (cfg, weights) = targets::split2(seed);
    let mut v: serde_json::Value = serde_json::from_slice(cfg).unwrap();
    v["enc_depth"] = 1_000_000_000.into();
    let d = folder(dir.path(), "deep", &v.to_string(), weights);
    let msg = refused("enc_depth 1e9", || maetok::tokenizer::load_pretrained::<B>(&d, &Default::default()));
    assert!(msg.contains("enc_depth") && msg.contains("1000000000"), "{msg}");
    // The published default with an absurd width or grid.
    for (key, value) in [("dec_embed_dim", 1u64 << 40), ("image_size", 1 << 30), ("num_latent_tokens", 1 << 40)] {
        let mut v: serde_json::Value = serde_json::from_slice(cfg).unwrap();
        v[key] = value.into();
        let d = folder(dir.path(), key, &v.to_string(), weights);
        let msg = refused(key, || maetok::tokenizer::load_pretrained::<B>(&d, &Default::default()));
        assert!(msg.contains(key), "{msg}");
    }
    // A SiT folder and a training recipe.
    let seed = &targets::seeds("generator_folder")[0];
    let (cfg, weights) = targets::split2(seed);
    let mut v: serde_json::Value = serde_json::from_slice(cfg).unwrap();
    v["depth"] = 1_000_000_000.into();
    let d = folder(dir.path(), "sit", &v.to_string(), weights);
    let msg = refused("SiT depth 1e9", || maetok::sit::load_sit::<B>(&d, &Default::default()));
    assert!(msg.contains("depth"), "{msg}");
    let msg =
        refused("recipe", || maetok::tokenizer_recipe::TokenizerRecipe::from_yaml("vq_model: AE-16\nenc_depth: 1000000000\n", "r.yaml"));
    assert!(msg.contains("enc_depth"), "{msg}");
}

#[test]
fn a_yaml_alias_bomb_is_refused() {
    let _serial = serial();
    // "Billion laughs": nine levels of nine aliases expand to 9⁹ strings if followed.
    let mut yaml = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..10 {
        let p = i - 1;
        yaml.push_str(&format!("a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
    }
    let msg = refused("yaml alias bomb", || maetok::tokenizer_recipe::TokenizerRecipe::from_yaml(&yaml, "bomb.yaml"));
    assert!(msg.contains("bomb.yaml"), "{msg}");
}

#[test]
fn a_cache_path_leaving_its_folder_is_refused() {
    let _serial = serial();
    use maetok::train::data::latent_cache::CacheManifest;
    use maetok::train::data::{LatentCache, LatentCacheWriter, LatentRecord};
    let dir = tempfile::tempdir().unwrap();
    // A cache whose record path would make `export_npz` write outside its output folder.
    let c = dir.path().join("cache");
    let m = CacheManifest::new("tok".into(), "src".into(), 16, [2, 3], vec!["a".into()], 1, 8);
    let mut w = LatentCacheWriter::create_or_resume(&c, m).unwrap();
    w.push(LatentRecord { zq: vec![0.0; 6], zq_flip: vec![0.0; 6], label: 0, index: 0, path: "../../escape".into() }).unwrap();
    w.finish().unwrap();
    let msg = LatentCache::open(&c).err().expect("refused").to_string();
    assert!(msg.contains("../../escape") && msg.contains("shard-00000.safetensors"), "{msg}");
}

#[test]
fn a_torch_save_file_loads_through_the_guard() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.pth");
    std::fs::write(&p, maetok::nn::testing::torch_save_bytes(&[("w", vec![2, 3], (0..6).map(|i| i as f32).collect())])).unwrap();
    let mut loader = maetok::nn::io::Loader::<B>::from_pytorch(&p, &Default::default()).unwrap();
    assert_eq!(loader.keys(), vec!["w".to_string()]);
    assert_eq!(loader.take("w").unwrap(), (vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
}

/// One mutation of `input`: byte flips, interesting integers, truncation, duplication,
/// insertion, or a splice with `other`.
fn mutate(input: &[u8], other: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if v.is_empty() {
            v.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..v.len());
        match rng.random_range(0..7) {
            0 => v[at] ^= 1 << rng.random_range(0..8),
            1 => v[at] = rng.random(),
            2 => {
                const INTERESTING: [u64; 6] = [0, 1, 0x7f, 0xffff_ffff, 1 << 40, u64::MAX];
                let x = INTERESTING[rng.random_range(0..INTERESTING.len())].to_le_bytes();
                let n = [1, 2, 4, 8][rng.random_range(0..4)].min(v.len() - at);
                v[at..at + n].copy_from_slice(&x[..n]);
            }
            3 => v.truncate(at),
            4 => {
                let end = (at + rng.random_range(1..64)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
            5 => {
                let digits = b"9999999999";
                v.splice(at..at, digits[..rng.random_range(1..digits.len())].iter().copied());
            }
            _ => {
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let end = (from + rng.random_range(1..256)).min(other.len());
                    v.splice(at..at, other[from..end].iter().copied());
                }
            }
        }
    }
    v
}

fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Every fuzz target over its seeds, its kept regression inputs and seeded mutations of the
/// seeds: none may panic (a hang or runaway allocation would stall or abort the test).
#[test]
fn every_loader_survives_mutated_inputs() {
    let _serial = serial();
    let mutations: usize = std::env::var("MAETOK_FUZZ_MUTATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    for (name, target) in targets::TARGETS {
        let seeds = targets::seeds(name);
        let start = Instant::now();
        for input in seeds.iter().chain(regressions(name).iter()) {
            target(input);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for i in 0..mutations {
            let a = &seeds[i % seeds.len()];
            let b = &seeds[rng.random_range(0..seeds.len())];
            let input = mutate(a, b, &mut rng);
            if let Err(e) = std::panic::catch_unwind(|| target(&input)) {
                let keep = std::env::temp_dir().join(format!("maetok-fuzz-failure-{name}-{i}"));
                std::fs::write(&keep, &input).unwrap();
                std::panic::resume_unwind(Box::new(format!(
                    "target {name} panicked on mutation {i} (input kept at {}): {e:?}",
                    keep.display()
                )));
            }
        }
        eprintln!("{name}: {} seeds + {mutations} mutations in {:?}", seeds.len(), start.elapsed());
    }
}
