//! Checkpoint compatibility: the MAETok-B-128 key set, export round trip, strict loading errors.

use std::collections::BTreeMap;

use burn::backend::NdArray;
use maetok_nn::io::Exporter;
use maetok_nn::testing::{fixtures_dir, read_tensors};
use maetok_tokenizer::{load_pretrained, load_with_args, save_pretrained, ModelArgs, PretrainedError, Tokenizer, VitSize};
use rand::SeedableRng;

type B = NdArray<f32>;

fn tiny_args() -> ModelArgs {
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    maetok_tokenizer::testing::fixture_args(&dir).unwrap()
}

/// The published MAETok-B-128 settings (spec §1.1).
fn b128_args() -> ModelArgs {
    ModelArgs::default()
}

#[test]
fn maetok_b128_state_dict_matches_published_key_list() {
    let expected = maetok_tokenizer::testing::read_key_list(&fixtures_dir().join("maetok-b-128.keys.txt"));
    let cfg = b128_args().resolve("default").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut model = Tokenizer::<B>::new(&cfg, &mut rng, &Default::default());
    let ours: BTreeMap<String, Vec<usize>> = model.state_dict_shapes().into_iter().collect();
    let missing: Vec<_> = expected.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (k, s) in &expected {
        assert_eq!(&ours[k], s, "shape of {k}");
    }
    assert_eq!(expected.len(), 315);
    assert_eq!(model.num_params_lazy(), 173_890_592);
}

/// Writes the tiny fixture checkpoint, modified by `edit`, into a temp folder with its config.
fn edited_checkpoint(edit: impl FnOnce(&mut Exporter)) -> tempfile::TempDir {
    let src = fixtures_dir().join("tokenizer-ae-tiny/model.safetensors");
    let mut ex = Exporter::new();
    for (k, (s, v)) in read_tensors(src) {
        ex.insert(&k, s, v);
    }
    edit(&mut ex);
    let dir = tempfile::tempdir().unwrap();
    ex.write(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_args().to_json()).unwrap();
    dir
}

fn load_err(dir: &std::path::Path) -> String {
    match load_pretrained::<B>(dir, &Default::default()) {
        Ok(_) => panic!("load of {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named_in_one_error() {
    // quant_conv.weight is [latent_dim, width] (PyTorch layout); store it transposed.
    let mut shape = Vec::new();
    let dir = edited_checkpoint(|ex| {
        ex.remove("encoder.model.blocks.0.attn.qkv.bias").unwrap();
        ex.insert("decoder.model.blocks.999.mlp.fc1.weight", vec![2, 2], vec![0.0; 4]);
        let (s, v) = ex.remove("quant_conv.weight").unwrap();
        shape = s;
        ex.insert("quant_conv.weight", vec![shape[1], shape[0]], v);
    });
    let (c, w) = (shape[0], shape[1]);
    let msg = load_err(dir.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("missing keys") && msg.contains("encoder.model.blocks.0.attn.qkv.bias"), "{msg}");
    assert!(msg.contains("unexpected keys") && msg.contains("decoder.model.blocks.999.mlp.fc1.weight"), "{msg}");
    assert!(
        msg.contains("mis-shaped") && msg.contains(&format!("quant_conv.weight: file has [{w}, {c}], model expects [{c}, {w}]")),
        "{msg}"
    );
}

#[test]
fn unused_reference_keys_are_accepted_and_listed() {
    let dir = edited_checkpoint(|ex| ex.insert("projection.0.weight", vec![4, 8], vec![0.5; 32]));
    let (_, report) = load_pretrained::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(report.ignored, vec!["projection.0.weight".to_string()]);
}

#[test]
fn wrong_rope_buffer_values_are_reported() {
    let dir = edited_checkpoint(|ex| ex.insert("encoder.freqs_t_x", vec![64], vec![3.0; 64]));
    let msg = load_err(dir.path());
    assert!(msg.contains("encoder.freqs_t_x"), "{msg}");
}

#[test]
fn unknown_encoder_name_is_a_config_error() {
    let dir = edited_checkpoint(|_| {});
    let mut args = tiny_args();
    args.encoder_model = "vit_gigantic_patch3_foo".into();
    std::fs::write(dir.path().join("config.json"), args.to_json()).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("config.json") && msg.contains("unknown encoder_model 'vit_gigantic_patch3_foo'"), "{msg}");
}

#[test]
fn malformed_config_and_missing_folder_are_clear_errors() {
    let dir = edited_checkpoint(|_| {});
    std::fs::write(dir.path().join("config.json"), "{ \"image_size\": \"big\" }").unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("config.json") && msg.contains("image_size"), "{msg}");
    let gone = dir.path().join("nope");
    assert!(matches!(load_pretrained::<B>(&gone, &Default::default()), Err(PretrainedError::NotAFolder(_))));
    std::fs::write(dir.path().join("model.safetensors"), b"not a safetensors file").unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_args().to_json()).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("model.safetensors") && msg.contains("not a readable safetensors"), "{msg}");
}

#[test]
fn export_round_trip_keeps_every_tensor_and_key() {
    let device = Default::default();
    let src = fixtures_dir().join("tokenizer-ae-tiny");
    let args = tiny_args();
    let (mut model, _) = load_with_args::<B>(&args, "tiny", src.join("model.safetensors"), &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(&mut model, &args, out.path()).unwrap();
    let original = read_tensors(src.join("model.safetensors"));
    let saved = read_tensors(out.path().join("model.safetensors"));
    let mut a: Vec<_> = original.keys().collect();
    let mut b: Vec<_> = saved.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "key sets differ");
    for (k, v) in &original {
        assert_eq!(&saved[k], v, "tensor {k} changed in the round trip");
    }
    // And the saved folder loads again, with the same config.
    let (_, report) = load_pretrained::<B>(out.path(), &device).unwrap();
    assert_eq!(report.applied, original.len() - 4, "all parameters (not the 4 buffers) applied");
    assert_eq!(ModelArgs::from_file(out.path().join("config.json")).unwrap(), args);
}

#[test]
fn maskae_training_checkpoint_loads_for_inference() {
    let dir = fixtures_dir().join("tokenizer-maskae-tiny");
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let (_, report) = load_with_args::<B>(&args, "maskae", dir.join("model.safetensors"), &Default::default()).unwrap();
    assert!(report.ignored.iter().any(|k| k.starts_with("decoder_hog.")));
    assert!(report.ignored.iter().any(|k| k.starts_with("repa_model.")));
}

#[test]
fn wrong_image_and_latent_shapes_are_errors() {
    let device = Default::default();
    let src = fixtures_dir().join("tokenizer-ae-tiny");
    let (model, _) = load_with_args::<B>(&tiny_args(), "tiny", src.join("model.safetensors"), &device).unwrap();
    let (s, t, c) = (model.config.image_size, model.config.latent_tokens, model.config.latent_dim);
    let err = model.encode(burn::tensor::Tensor::zeros([1, 3, s / 2, s], &device)).unwrap_err();
    assert!(
        err.to_string().contains(&format!("[1, 3, {}, {s}]", s / 2)) && err.to_string().contains(&format!("[B, 3, {s}, {s}]")),
        "{err}"
    );
    let err = model.decode(burn::tensor::Tensor::zeros([1, t, c + 1], &device)).unwrap_err();
    assert!(err.to_string().contains(&format!("[B, {t}, {c}]")), "{err}");
}

#[test]
fn shipped_configs_resolve() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for (name, size, tokens) in [("maetok-b-128-256.json", 256, 128), ("maetok-b-128-512.json", 512, 128), ("tiny-32.json", 32, 16)] {
        let cfg = ModelArgs::from_file(dir.join(name)).unwrap().resolve(name).unwrap();
        assert_eq!((cfg.image_size, cfg.latent_tokens), (size, tokens), "{name}");
    }
    let b = ModelArgs::from_file(dir.join("maetok-b-128-256.json")).unwrap().resolve("b").unwrap();
    assert_eq!((b.encoder.width, b.encoder.depth, b.encoder.heads, b.latent_dim), (768, 12, 12, 32));
    assert!(b.enc_mask_token && b.encoder_layer_scale && !b.dec_cls_token);
}

/// A model trained at a base size and run at a larger one (as MAETok-B-128-512): the RoPE
/// buffers describe the base grid, positions run over the larger grid, and save/load round-trips.
#[test]
fn larger_image_than_base_grid_runs_and_round_trips() {
    let device = Default::default();
    let args = ModelArgs {
        image_size: 32,
        base_image_size: 16,
        enc_patch_size: 4,
        dec_patch_size: 4,
        num_latent_tokens: 4,
        codebook_embed_dim: 4,
        ..ModelArgs::default()
    }
    .with_encoder_size(VitSize { width: 16, depth: 1, heads: 2 })
    .with_decoder_size(VitSize { width: 16, depth: 1, heads: 2 });
    let cfg = args.resolve("t").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut model = Tokenizer::<B>::new(&cfg, &mut rng, &device);
    let shapes: BTreeMap<String, Vec<usize>> = model.state_dict_shapes().into_iter().collect();
    assert_eq!(shapes["encoder.freqs_t_x"], vec![16]);
    assert_eq!(shapes["encoder.model.pos_embed"], vec![1, 65, 16]);
    let x = burn::tensor::Tensor::<B, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
    let y = model.reconstruct(x.clone()).unwrap();
    assert_eq!(y.dims(), [2, 3, 32, 32]);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(&mut model, &args, dir.path()).unwrap();
    let (loaded, _) = load_pretrained::<B>(dir.path(), &device).unwrap();
    let y2 = loaded.reconstruct(x).unwrap();
    let diff = (y - y2).abs().max().into_scalar();
    assert!(diff < 1e-6, "reloaded model differs by {diff}");
}

#[test]
fn the_checkpoint_walk_covers_every_parameter() {
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    let cfg = maetok_tokenizer::testing::fixture_args(&dir).unwrap().resolve("tiny").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut model = Tokenizer::<B>::new(&cfg, &mut rng, &Default::default());
    maetok_nn::testing::assert_walk_covers_module("MAETok", &mut model);
}
