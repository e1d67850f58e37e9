//! Parity of the MAETok autoencoder with the official PyTorch code on the tiny fixture
//! (`fixtures/tokenizer-ae-tiny`), loaded through the same Hugging Face loader users use.

use burn::backend::NdArray;
use maetok_nn::testing::{assert_close, fixtures_dir, read_tensors, tensor};
use maetok_tokenizer::{load_with_args, ModelArgs, PixelDecoderIntermediates};

type B = NdArray<f32>;

/// The fixture's config.json with the tiny sizes its meta.json records.
fn tiny_args() -> ModelArgs {
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    maetok_tokenizer::testing::fixture_args(&dir).unwrap()
}

#[test]
fn ae_tiny_matches_reference() {
    let device = Default::default();
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    let (model, report) =
        load_with_args::<B>(&tiny_args(), "tokenizer-ae-tiny/config.json", dir.join("model.safetensors"), &device).unwrap();
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);
    let io = read_tensors(dir.join("io.safetensors"));
    let input = tensor::<B, 4>(&io["input"], &device);

    let (latent, enc) = model.encode_intermediates(input, None).unwrap();
    let fix_latent = tensor::<B, 3>(&io["latent"], &device);
    let (output, dec) = model.decode_intermediates(fix_latent).unwrap();
    let PixelDecoderIntermediates::Movq(dec) = dec else { panic!("the fixture's decoder_model is a MoVQ decoder") };

    // Intermediates at the fixture README's tolerance; block 0 is the recorded one.
    let (ia, ir) = (1e-5, 1e-5);
    let check = |name: &str, t: burn::tensor::Tensor<B, 3>| assert_close(name, t, &io[name], ia, ir);
    check("enc_patch_embed", enc.patch_embed);
    check("enc_tokens_in", enc.tokens_in);
    check("enc_rope_cos_block0", enc.rope[0].cos.clone());
    check("enc_rope_sin_block0", enc.rope[0].sin.clone());
    check("enc_block0_out", enc.blocks[0].clone());
    check("enc_norm_out", enc.norm_out.clone());
    let [b, n, d] = enc.norm_out.dims();
    let t = model.config.latent_tokens;
    check("enc_out", enc.norm_out.slice([0..b, n - t..n, 0..d]));
    check("dec_post_quant", dec.post_quant);
    check("dec_tokens_in", dec.tokens_in);
    check("dec_rope_cos_block0", dec.rope[0].cos.clone());
    check("dec_rope_sin_block0", dec.rope[0].sin.clone());
    check("dec_block0_adaln", dec.modulation[0].clone());
    check("dec_block0_out", dec.blocks[0].clone());
    check("dec_norm_out", dec.norm_out);
    assert_close("latent", latent.clone(), &io["latent"], 1e-4, 1e-4);
    // The inference encoder (its last block keeps only the latent rows).
    assert_close("latent (encode)", model.encode(tensor::<B, 4>(&io["input"], &device)).unwrap(), &io["latent"], 1e-4, 1e-4);
    assert_close("output (decode of fixture latent)", output, &io["output"], 1e-4, 1e-4);
    // End to end: our own latents through our decoder.
    let recon = model.decode(latent).unwrap();
    assert_close("output (end to end)", recon, &io["output"], 1e-4, 1e-4);
}

#[test]
fn ae_tiny_fused_attention_path_matches_reference() {
    let device = Default::default();
    let dir = fixtures_dir().join("tokenizer-ae-tiny");
    let (mut model, _) =
        load_with_args::<B>(&tiny_args(), "tokenizer-ae-tiny/config.json", dir.join("model.safetensors"), &device).unwrap();
    model.set_fused_attention(true);
    let io = read_tensors(dir.join("io.safetensors"));
    let latent = model.encode(tensor::<B, 4>(&io["input"], &device)).unwrap();
    assert_close("latent (fused attention)", latent, &io["latent"], 1e-4, 1e-4);
    let output = model.decode(tensor::<B, 3>(&io["latent"], &device)).unwrap();
    assert_close("output (fused attention)", output, &io["output"], 1e-4, 1e-4);
}
