//! The fuzz targets: each takes arbitrary bytes, turns them into the file(s) one loader reads,
//! and runs the loader as a user's command would. A target may return any error; it must never
//! panic, hang or allocate without bound. Built two ways:
//!
//! * `fuzz/fuzz_targets/*.rs`: libFuzzer binaries (coverage-guided, stable Rust; `fuzz/run`);
//! * `tests/hostile_input.rs` includes this file and runs every target over the seed corpus and
//!   a few thousand seeded mutations of it in `cargo test`.
//!
//! Targets that read a folder (config + weights, manifest + shard) split their input with
//! [`split2`]: a little-endian `u32` length, the first file, then the second.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;

type B = NdArray<f32>;

/// A scratch folder per process (and thread), emptied for each input.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maetok-fuzz-{}-{:?}-{name}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Splits `data` into two files: `[len: u32 LE][first: len bytes][second: rest]`.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 4 {
        return (data, &[]);
    }
    let n = (u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize).min(data.len() - 4);
    (&data[4..4 + n], &data[4 + n..])
}

/// Joins two files into one input of [`split2`]'s layout (for seed corpora).
pub fn join2(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut v = (first.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(first);
    v.extend_from_slice(second);
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("scratch write");
    p
}

/// A tokenizer folder (`config.json` + `model.safetensors`) through `load_pretrained`, and the
/// config alone through the training-side resolution.
pub fn tokenizer_folder(data: &[u8]) {
    let (config, weights) = split2(data);
    let dir = scratch("tok");
    write(&dir, "config.json", config);
    write(&dir, "model.safetensors", weights);
    let _ = maetok::tokenizer::load_pretrained::<B>(&dir, &Default::default());
    if let Ok(args) = maetok::tokenizer::ModelArgs::from_json(&String::from_utf8_lossy(config), "config.json") {
        let _ = args.resolve_aux("config.json");
    }
}

/// A SiT / DiT folder (`config.json` + `model.safetensors`) through both loaders.
pub fn generator_folder(data: &[u8]) {
    let (config, weights) = split2(data);
    let dir = scratch("gen");
    write(&dir, "config.json", config);
    write(&dir, "model.safetensors", weights);
    let _ = maetok::sit::load_sit::<B>(&dir, &Default::default());
    let _ = maetok::dit::load_dit::<B>(&dir, &Default::default());
}

/// A PyTorch pickle checkpoint (`.pth`: zip + pickle, or legacy) through the checkpoint loader,
/// then every tensor it yields.
pub fn pytorch_checkpoint(data: &[u8]) {
    let dir = scratch("pth");
    let path = write(&dir, "model.pth", data);
    if let Ok(loader) = maetok::nn::io::Loader::<B>::from_pytorch(&path, &Default::default()) {
        let _ = loader.keys();
    }
}

/// An ADM `.npz` batch through the streaming reader, the statistics reader and the whole-batch
/// reader; the same bytes as an `.npy` matrix through the GMM tool's reader.
pub fn npz(data: &[u8]) {
    use maetok::eval::npz::{read_f64_array, read_samples, SampleStream};
    let dir = scratch("npz");
    let path = write(&dir, "samples.npz", data);
    if let Ok(mut s) = SampleStream::open(&path) {
        let mut start = 0;
        while start < s.len() {
            if s.read(start, 4).is_err() {
                break;
            }
            start += 4;
        }
    }
    let _ = read_f64_array(&path, "mu");
    let _ = read_samples(&path);
    let npy = write(&dir, "rows.npy", data);
    let _ = maetok::gmm_fit::read_npy_matrix(&npy);
}

/// A latent cache folder (`manifest.json` + `shard-00000.safetensors`): open, read every record.
pub fn latent_cache(data: &[u8]) {
    let (manifest, shard) = split2(data);
    let dir = scratch("cache");
    write(&dir, "manifest.json", manifest);
    write(&dir, "shard-00000.safetensors", shard);
    if let Ok(cache) = maetok::train::data::LatentCache::open(&dir) {
        for i in 0..cache.len().min(64) {
            let _ = cache.get(i);
        }
    }
}

/// Training and model configs: a tokenizer recipe (yaml), a tokenizer `config.json`, a
/// generator `config.json`.
pub fn configs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(r) = maetok::tokenizer_recipe::TokenizerRecipe::from_yaml(&text, "recipe.yaml") {
        let _ = r.train_config(1000);
    }
    if let Ok(args) = maetok::tokenizer::ModelArgs::from_json(&text, "config.json") {
        let _ = args.resolve("config.json");
        let _ = args.resolve_aux("config.json");
    }
    let _ = maetok::generator::config::LatentTransformerConfig::from_json(&text, "config.json");
}

/// An image file (PNG/JPEG or anything else) through the decoder and the evaluation crop.
pub fn image(data: &[u8]) {
    let dir = scratch("img");
    let path = write(&dir, "image.png", data);
    if let Ok(img) = maetok::train::data::load_rgb(&path) {
        let _ = maetok::train::data::preprocess_center_crop(&img, 16);
    }
}

/// A fuzz target: takes any bytes, may fail, must not panic.
pub type Target = fn(&[u8]);

/// Every target by name (for the runner and the test).
pub const TARGETS: &[(&str, Target)] = &[
    ("tokenizer_folder", tokenizer_folder),
    ("generator_folder", generator_folder),
    ("pytorch_checkpoint", pytorch_checkpoint),
    ("npz", npz),
    ("latent_cache", latent_cache),
    ("configs", configs),
    ("image", image),
];

/// Seed inputs for `target`, small valid files of each kind (tiny models built and saved here,
/// files the writers produce, the repository's configs) and a few known-hostile ones.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    use maetok::nn::testing::torch_save_bytes;
    let dir = scratch(&format!("seed-{target}"));
    let read = |p: &Path| std::fs::read(p).expect("seed file");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = if repo.join("configs").is_dir() { repo } else { Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf() };
    match target {
        "tokenizer_folder" => {
            use maetok::tokenizer::{save_pretrained, Tokenizer};
            let tiny = |softvq: bool| {
                let mut a = maetok::tokenizer::testing::tiny_args(8);
                if softvq {
                    a.quantizer = Some("softvq".into());
                    a.decoder_model = "vit_base_patch14_dinov2.lvd142m".into();
                    (a.use_rope, a.use_ape, a.dec_cls_token) = (false, true, true);
                    (a.codebook_size, a.num_codebooks) = (8, 2);
                }
                let cfg = a.resolve("seed").expect("tiny config");
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
                let mut model = Tokenizer::<B>::new(&cfg, &mut rng, &Default::default());
                let d = dir.join(if softvq { "softvq" } else { "ae" });
                save_pretrained(&mut model, &a, &d).expect("save");
                join2(&read(&d.join("config.json")), &read(&d.join("model.safetensors")))
            };
            vec![tiny(false), tiny(true), join2(br#"{"enc_depth": 1000000000}"#, b"")]
        }
        "generator_folder" => {
            use maetok::generator::config::LatentTransformerConfig;
            let tiny = |learn_sigma: bool| {
                let mut c = LatentTransformerConfig::new(1, 8, 2, 4, 4);
                c.num_classes = 4;
                c.learn_sigma = learn_sigma.then_some(true);
                let mut m = c.init::<B>(&Default::default());
                let d = dir.join(format!("g{learn_sigma}"));
                maetok::generator::folder::save_folder(&mut m, &c, &d).expect("save");
                join2(&read(&d.join("config.json")), &read(&d.join("model.safetensors")))
            };
            vec![tiny(false), tiny(true)]
        }
        "pytorch_checkpoint" => {
            let ok = torch_save_bytes(&[("w", vec![2, 3], vec![1.0; 6]), ("b", vec![3], vec![0.5; 3])]);
            vec![ok, b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00lstR.".to_vec()]
        }
        "npz" => {
            use maetok::eval::npz::{write_f64_arrays, write_samples};
            let a = dir.join("a.npz");
            write_samples(&a, &ndarray::Array4::from_shape_fn((3, 4, 4, 3), |(n, h, w, c)| (n + h + w + c) as u8)).expect("npz");
            let b = dir.join("b.npz");
            write_f64_arrays(
                &b,
                &[("mu", ndarray::ArrayD::from_elem(vec![4], 0.5)), ("sigma", ndarray::ArrayD::from_elem(vec![4, 4], 1.0))],
            )
            .expect("npz");
            let npy = maetok::train::data::latent_cache::npy_bytes("<f4", &[3, 2], &[0u8; 24]);
            vec![read(&a), read(&b), npy]
        }
        "latent_cache" => {
            use maetok::train::data::latent_cache::CacheManifest;
            use maetok::train::data::{LatentCacheWriter, LatentRecord};
            let d = dir.join("cache");
            let m = CacheManifest::new("tok".into(), "src".into(), 16, [2, 3], vec!["a".into(), "b".into()], 3, 8);
            let mut w = LatentCacheWriter::create_or_resume(&d, m).expect("cache");
            for i in 0..3 {
                let r = LatentRecord {
                    zq: vec![i as f32; 6],
                    zq_flip: vec![-(i as f32); 6],
                    label: i % 2,
                    index: i,
                    path: format!("a/{i}.png"),
                };
                w.push(r).expect("push");
            }
            w.finish().expect("finish");
            vec![join2(&read(&d.join("manifest.json")), &read(&d.join("shard-00000.safetensors")))]
        }
        "configs" => {
            let mut v: Vec<Vec<u8>> = ["tiny-cpu.yaml", "tiny-softvq-cpu.yaml", "maetok-b-64.yaml", "tiny-32.json"]
                .iter()
                .map(|f| read(&repo.join("configs").join(f)))
                .collect();
            for f in ["sit-tiny", "tokenizer-ae-tiny", "tokenizer-softvq-tiny", "tokenizer-maskae-tiny"] {
                v.push(read(&repo.join("fixtures").join(f).join("config.json")));
            }
            v.push(b"a: &a [*a, *a]\nb: [*a, *a, *a, *a]\n".to_vec());
            v
        }
        "image" => {
            use image::{ImageFormat, RgbImage};
            let img = RgbImage::from_fn(8, 6, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 7]));
            let mut out = Vec::new();
            for f in [ImageFormat::Png, ImageFormat::Jpeg] {
                let mut c = std::io::Cursor::new(Vec::new());
                img.write_to(&mut c, f).expect("encode");
                out.push(c.into_inner());
            }
            out
        }
        other => panic!("no target '{other}'"),
    }
}
