//! End-to-end `reconstruct` on the tiny fixture checkpoint, and its input errors.

use std::path::{Path, PathBuf};

use maetok::reconstruct::{run, ReconstructArgs};
use maetok_nn::testing::{fixtures_dir, read_tensors};

/// The tiny fixture as a model folder whose config carries its dimensions.
fn tiny_model_dir(root: &Path) -> PathBuf {
    fixture_model_dir(root, "tokenizer-ae-tiny")
}

/// Fixture `name` as a model folder (`config.json` with the fixture's sizes + its weights).
fn fixture_model_dir(root: &Path, name: &str) -> PathBuf {
    let src = fixtures_dir().join(name);
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let args = maetok::tokenizer::testing::fixture_args(&src).unwrap();
    std::fs::write(dir.join("config.json"), args.to_json()).unwrap();
    dir
}

fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8 ^ seed, (y * 5) as u8, seed.wrapping_mul(7)]));
    img.save(path).unwrap();
}

fn args(model: PathBuf, out: PathBuf, inputs: Vec<PathBuf>) -> ReconstructArgs {
    ReconstructArgs { model, out, latents_out: None, indices_out: None, batch_size: 2, inputs, progress: false, devices: vec![] }
}

#[test]
fn reconstructs_files_and_folders_and_writes_latents() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path());
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(imgs.join("sub")).unwrap();
    write_png(&imgs.join("a.png"), 64, 64, 1);
    write_png(&imgs.join("sub/b.png"), 96, 80, 2); // resized + centre-cropped to 64
    let single = tmp.path().join("c.png");
    write_png(&single, 64, 64, 3);
    let out = tmp.path().join("out");
    let mut a = args(model, out.clone(), vec![imgs, single]);
    a.latents_out = Some(tmp.path().join("latents.safetensors"));
    let s = run(a, "ndarray").unwrap();
    assert_eq!(s.images.len(), 3);
    for name in ["a.png", "b.png", "c.png", "grid.png", "metrics.json"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    assert!(s.images.iter().all(|m| m.psnr.is_finite() && m.ssim <= 1.0));
    let lat = read_tensors(tmp.path().join("latents.safetensors"));
    let targs = maetok::tokenizer::testing::fixture_args(&fixtures_dir().join("tokenizer-ae-tiny")).unwrap();
    assert_eq!(lat["latents"].0, vec![3, targs.num_latent_tokens, targs.codebook_embed_dim]);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["images"].as_array().unwrap().len(), 3);
}

#[test]
fn non_image_file_and_missing_path_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path());
    let bogus = tmp.path().join("notes.png");
    std::fs::write(&bogus, b"this is not a PNG").unwrap();
    let err = run(args(model.clone(), tmp.path().join("o1"), vec![bogus.clone()]), "ndarray").unwrap_err().to_string();
    assert!(err.contains("notes.png") && err.contains("not a readable image"), "{err}");
    let missing = tmp.path().join("does/not/exist.jpg");
    let err = run(args(model.clone(), tmp.path().join("o2"), vec![missing]), "ndarray").unwrap_err().to_string();
    assert!(err.contains("does/not/exist.jpg") && err.contains("cannot read"), "{err}");
    let err = run(args(model, tmp.path().join("o3"), vec![bogus]), "tpu").unwrap_err().to_string();
    assert!(err.contains("unknown backend 'tpu'"), "{err}");
}

/// A SoftVQ-VAE folder goes through the same command without a flag (recognised by its
/// weights): the latents it writes are the library's `encode` (z_q), and `--indices-out` writes
/// the code indices the library gives.
#[test]
fn softvq_folder_reconstructs_and_writes_latents_and_indices() {
    use burn::backend::NdArray;
    type B = NdArray<f32>;
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = fixture_model_dir(tmp.path(), "tokenizer-softvq-tiny");
    let (model, _) = maetok::tokenizer::load_pretrained::<B>(&model_dir, &Default::default()).unwrap();
    let size = model.config.image_size as u32;
    let imgs: Vec<PathBuf> = (0..3u8).map(|i| tmp.path().join(format!("i{i}.png"))).collect();
    for (i, p) in imgs.iter().enumerate() {
        write_png(p, size, size, 10 + i as u8);
    }
    let mut a = args(model_dir.clone(), tmp.path().join("out"), imgs.clone());
    a.latents_out = Some(tmp.path().join("latents.safetensors"));
    a.indices_out = Some(tmp.path().join("indices.safetensors"));
    let s = run(a, "ndarray").unwrap();
    assert_eq!(s.images.len(), 3);
    let lat = read_tensors(tmp.path().join("latents.safetensors"));
    let idx = read_tensors(tmp.path().join("indices.safetensors"));
    let x = maetok::train::data::images_to_tensor::<B>(
        &imgs.iter().map(|p| maetok::train::data::load_rgb(p).unwrap()).collect::<Vec<_>>(),
        &Default::default(),
    );
    let (z, codes) = model.encode_with_codes(x).unwrap();
    let codes = codes.expect("a SoftVQ-VAE gives codes");
    assert_eq!(lat["latents"].0, z.dims().to_vec());
    let z = z.into_data().to_vec::<f32>().unwrap();
    assert!(lat["latents"].1.iter().zip(&z).all(|(a, b)| (a - b).abs() < 1e-5), "CLI latents differ from the library's");
    assert_eq!(idx["indices"].0, codes.indices.dims().to_vec());
    let want: Vec<f32> = codes.indices.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    assert_eq!(idx["indices"].1, want);

    // A MAETok folder has no codes: asking for them is a clear error.
    let maetok = tiny_model_dir(tmp.path());
    let mut a = args(maetok, tmp.path().join("o2"), imgs);
    a.indices_out = Some(tmp.path().join("none.safetensors"));
    let err = run(a, "ndarray").unwrap_err().to_string();
    assert!(err.contains("--indices-out") && err.contains("no quantizer"), "{err}");
}

/// `--devices ndarray:0,ndarray:1`: the batches are spread over two model copies and merged in
/// input order: the same reconstructions, latents, code indices and metrics as on one device.
#[test]
fn two_devices_write_what_one_device_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model_dir(tmp.path(), "tokenizer-softvq-tiny");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let size = cfg["image_size"].as_u64().unwrap() as u32;
    let imgs: Vec<PathBuf> = (0..5u8).map(|i| tmp.path().join(format!("i{i}.png"))).collect();
    for (i, p) in imgs.iter().enumerate() {
        write_png(p, size, size, 20 + i as u8);
    }
    let go = |name: &str, devices: Vec<u16>| {
        let mut a = args(model.clone(), tmp.path().join(name), imgs.clone());
        a.latents_out = Some(tmp.path().join(format!("{name}-latents.safetensors")));
        a.indices_out = Some(tmp.path().join(format!("{name}-indices.safetensors")));
        a.devices = devices;
        run(a, "ndarray").unwrap()
    };
    let one = go("one", vec![]);
    let two = go("two", vec![0, 1]);
    for t in ["latents", "indices"] {
        assert_eq!(
            read_tensors(tmp.path().join(format!("one-{t}.safetensors"))),
            read_tensors(tmp.path().join(format!("two-{t}.safetensors"))),
            "{t}"
        );
    }
    for f in ["i0.png", "i4.png", "grid.png"] {
        assert_eq!(std::fs::read(tmp.path().join("one").join(f)).unwrap(), std::fs::read(tmp.path().join("two").join(f)).unwrap(), "{f}");
    }
    assert_eq!((one.mean_psnr, one.mean_ssim), (two.mean_psnr, two.mean_ssim));
}
