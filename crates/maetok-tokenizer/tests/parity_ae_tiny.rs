//! Parity of the MAETok autoencoder with the official PyTorch code on the tiny fixture
//! (`shared/fixtures/tokenizer-ae-tiny`), loaded through the same Hugging Face loader users use.

use burn::backend::NdArray;
use maetok_nn::testing::{assert_close, fixtures_dir, read_tensors, tensor};
use maetok_tokenizer::{load_with_args, ModelArgs, Trace};

type B = NdArray<f32>;

/// The fixture's config.json with the tiny dimensions of its meta.json (width 64, depth 2, 4 heads).
fn tiny_args() -> ModelArgs {
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    ModelArgs::from_file(dir.join("config.json")).unwrap().with_dims((64, 2, 4), (64, 2, 4))
}

#[test]
fn ae_tiny_matches_reference() {
    let device = Default::default();
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    let (model, report) = load_with_args::<B>(&tiny_args(), "tokenizer-ae-tiny/config.json", dir.join("model.safetensors"), &device).unwrap();
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);
    let io = read_tensors(dir.join("io.safetensors"));
    let input = tensor::<B, 4>(&io["input"], &device);

    let mut trace = Trace::on();
    let latent = model.encode_traced(input, &mut trace).unwrap();
    let mut dtrace = Trace::on();
    let fix_latent = tensor::<B, 3>(&io["latent"], &device);
    let output = model.decode_traced(fix_latent, &mut dtrace).unwrap();

    let (ia, ir) = (1e-5, 1e-5);
    for name in ["enc_patch_embed", "enc_tokens_in", "enc_block0_out", "enc_norm_out", "enc_out"] {
        assert_close(name, trace.get(name).unwrap().clone(), &io[name], ia, ir);
    }
    for name in ["enc_rope_cos_block0", "enc_rope_sin_block0"] {
        assert_close(name, trace.get(name).unwrap().clone(), &io[name], ia, ir);
    }
    for name in ["dec_post_quant", "dec_tokens_in", "dec_block0_adaln", "dec_block0_out", "dec_norm_out", "dec_rope_cos_block0", "dec_rope_sin_block0"] {
        assert_close(name, dtrace.get(name).unwrap().clone(), &io[name], ia, ir);
    }
    assert_close("latent", latent.clone(), &io["latent"], 1e-4, 1e-4);
    assert_close("output (decode of fixture latent)", output, &io["output"], 1e-4, 1e-4);
    // End to end: our own latents through our decoder.
    let recon = model.decode(latent).unwrap();
    assert_close("output (end to end)", recon, &io["output"], 1e-4, 1e-4);
}

#[test]
fn ae_tiny_fused_attention_path_matches_reference() {
    let device = Default::default();
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    let (mut model, _) = load_with_args::<B>(&tiny_args(), "tokenizer-ae-tiny/config.json", dir.join("model.safetensors"), &device).unwrap();
    model.set_fused_attention(true);
    let io = read_tensors(dir.join("io.safetensors"));
    let latent = model.encode(tensor::<B, 4>(&io["input"], &device)).unwrap();
    assert_close("latent (fused attention)", latent, &io["latent"], 1e-4, 1e-4);
    let output = model.decode(tensor::<B, 3>(&io["latent"], &device)).unwrap();
    assert_close("output (fused attention)", output, &io["output"], 1e-4, 1e-4);
}
