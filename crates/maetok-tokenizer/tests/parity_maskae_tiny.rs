//! MAETok's masked encoder (training mode, spec §4.1) against `fixtures/tokenizer-maskae-tiny`:
//! the recorded order and ratio give the recorded mask; the masked patch tokens, the encoder
//! output and the latent match, for the recorded batch of one and the batch of two (`b2_*`).
//! Sizes come from the fixture (config.json + meta.json), tolerances from its meta.json.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::testing::{assert_close, fixtures_dir, read_tensors, tensor};
use maetok_tokenizer::{load_with_args, InputError, TokenMask};

type B = NdArray<f32>;

fn mask(orders: &(Vec<usize>, Vec<f32>), ratio: f64) -> TokenMask {
    maetok_tokenizer::testing::recorded_mask(orders, ratio).unwrap()
}

#[test]
fn masked_encoder_matches_maskae_for_both_recorded_batches() {
    let dir = fixtures_dir().join("tokenizer-maskae-tiny");
    let device = Default::default();
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let (model, _) = load_with_args::<B>(&args, "maskae", dir.join("model.safetensors"), &device).unwrap();
    let io = read_tensors(dir.join("io.safetensors"));
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let tol = &meta["tolerance"]["features/recon"];
    let (atol, rtol) = (tol["max_abs"].as_f64().unwrap() as f32, tol["rel"].as_f64().unwrap() as f32);
    let ratio = io["mask_ratio"].1[0] as f64;

    // The recorded order and ratio give the recorded mask.
    let m = mask(&io["orders"], ratio);
    assert_eq!(m.mask, io["mask"].1, "mask from orders and ratio");
    let x: Tensor<B, 4> = tensor(&io["input"], &device);
    let (latent, enc) = model.encode_intermediates(x.clone(), Some(&m)).unwrap();
    assert_close("enc_patch_embed", enc.patch_embed, &io["enc_patch_embed"], atol, rtol);
    assert_close("enc_tokens_in", enc.tokens_in, &io["enc_tokens_in"], atol, rtol);
    let [b, n, d] = enc.norm_out.dims();
    let t = model.config.latent_tokens;
    assert_close("enc_out", enc.norm_out.slice([0..b, n - t..n, 0..d]), &io["enc_out"], atol, rtol);
    assert_close("latent", latent, &io["latent"], atol, rtol);
    // The plain training entry point gives the same latent (its last block computes only the
    // latent rows, so not necessarily bit for bit); the unmasked encode does not.
    let again = model.encode_masked(x.clone(), &m).unwrap();
    assert_close("encode_masked", again, &io["latent"], atol, rtol);
    let plain = model.encode(x.clone()).unwrap().into_data().to_vec::<f32>().unwrap();
    let diff = plain.iter().zip(&io["latent"].1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "masking must change the latent ({diff})");

    // The batch of two: the image and its mirror, each with its own order.
    let m2 = mask(&io["b2_orders"], ratio);
    assert_eq!(m2.mask, io["b2_mask"].1, "b2 mask");
    let x2 = Tensor::cat(vec![x.clone(), x.clone().flip([3])], 0);
    assert_close("b2_latent", model.encode_masked(x2, &m2).unwrap(), &io["b2_latent"], atol, rtol);

    // A mask for another batch or grid is refused, naming both shapes.
    let err = model.encode_masked(x, &m2).unwrap_err();
    assert!(matches!(err, InputError::MaskShape { .. }), "{err}");
}

#[test]
fn an_encoder_without_mask_token_refuses_masking() {
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    let device = Default::default();
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let (model, _) = load_with_args::<B>(&args, "ae", dir.join("model.safetensors"), &device).unwrap();
    let s = model.config.image_size;
    let n = model.encoder.grid() * model.encoder.grid();
    let m = TokenMask::from_orders(&[(0..n).collect()], n, 0.5).unwrap();
    let err = model.encode_masked(Tensor::zeros([1, 3, s, s], &device), &m).unwrap_err();
    assert_eq!(err, InputError::NoMaskToken);
    assert!(err.to_string().contains("mask_token"), "{err}");
}

#[test]
fn mask_ae_checkpoints_load_strictly_and_aux_configs_are_checked() {
    let dir = fixtures_dir().join("tokenizer-maskae-tiny");
    let device = Default::default();
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let weights = dir.join("model.safetensors");
    // Every auxiliary decoder on, as the fixture's config says: the teachers are left over.
    let (mut model, report) = maetok_tokenizer::load_mask_ae::<B>(&args, "maskae", &weights, &device).unwrap();
    assert!(model.hog.is_some() && model.dino.is_some() && model.clip.is_some());
    assert!(report.ignored.iter().all(|k| maetok_tokenizer::pretrained::TEACHER_PREFIXES.iter().any(|p| k.starts_with(p))));
    maetok_nn::testing::assert_walk_covers_module("MaskAe", &mut model);
    // A config with the SigLIP decoder off does not match this checkpoint: its keys are named.
    let off = maetok_tokenizer::ModelArgs { aux_clip_dec: false, ..args.clone() };
    let err = maetok_tokenizer::load_mask_ae::<B>(&off, "maskae", &weights, &device).err().unwrap().to_string();
    assert!(err.contains("decoder_clip.") && err.contains("to_pixel_clip."), "{err}");
    // Unknown presets and a HOG decoder on a patch the 8-pixel cells do not divide.
    let bad = maetok_tokenizer::ModelArgs { aux_dec_model: "vit_huge_patch14_movq2".into(), ..args.clone() };
    let err = bad.resolve_aux("my.yaml").unwrap_err().to_string();
    assert!(err.contains("my.yaml") && err.contains("vit_huge_patch14_movq2"), "{err}");
    let bad = maetok_tokenizer::ModelArgs { dec_patch_size: 12, image_size: 240, base_image_size: 240, ..args };
    let err = bad.resolve_aux("my.yaml").unwrap_err().to_string();
    assert!(err.contains("dec_patch_size") && err.contains("12"), "{err}");
}
