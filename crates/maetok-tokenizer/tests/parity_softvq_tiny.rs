//! Parity of SoftVQ-VAE (`SoftVQModel`) with the official PyTorch code on the tiny fixture
//! (`fixtures/tokenizer-softvq-tiny`), loaded through the Hugging Face loader users use: the
//! encoder sequence and output, `quant_conv`'s `h`, the quantiser's logits / probs / indices /
//! `z_q`, the plain decoder's intermediates, the output, and the entropy loss. Every size comes
//! from the fixture's config.json / meta.json, every tolerance from its meta.json.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::ops::linear3;
use maetok_nn::testing::{assert_close, fixtures_dir, read_tensors, tensor};
use maetok_tokenizer::{load_with_args, PixelDecoderIntermediates, SoftVq};

type B = NdArray<f32>;

fn tol(meta: &serde_json::Value, key: &str) -> (f32, f32) {
    let t = &meta["tolerance"][key];
    (t["max_abs"].as_f64().unwrap_or(0.0) as f32, t["rel"].as_f64().unwrap() as f32)
}

/// The reference returns `indices.view(B, nc, s)` of an argmax laid out `[nc, B·s]`, which
/// interleaves the images' codes for B > 1 and nc > 1 (what the fixture recorded). Ours are
/// `[B, nc, s]` by construction (`indices[b, n, j]` = the code of image b's token `n·s + j`);
/// this replays the reference's view on them.
fn reference_view(indices: Tensor<B, 3, burn::tensor::Int>) -> Tensor<B, 3> {
    let [b, nc, s] = indices.dims();
    indices.swap_dims(0, 1).reshape([b, nc, s]).float()
}

#[test]
fn softvq_tiny_matches_reference() {
    let device = Default::default();
    let dir = fixtures_dir().join("tokenizer-softvq-tiny");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let (model, report) = load_with_args::<B>(&args, "tokenizer-softvq-tiny/config.json", dir.join("model.safetensors"), &device).unwrap();
    // The checkpoint is a SoftVQ-VAE by its `quantize.embedding`; REPA's teacher and projection
    // are training-only.
    let q = model.quantizer.as_ref().expect("quantize.embedding makes it a SoftVQ-VAE");
    assert_eq!(q.config.codebooks, args.num_codebooks);
    assert!(!report.ignored.is_empty() && report.ignored.iter().all(|k| k.starts_with("repa_model.") || k.starts_with("projection.")));
    let io = read_tensors(dir.join("io.safetensors"));
    let (ia, ir) = tol(&meta, "intermediates");
    let (oa, or) = tol(&meta, "latent/output");
    let check = |name: &str, t: Tensor<B, 3>| assert_close(name, t, &io[name], ia, ir);
    let x: Tensor<B, 4> = tensor(&io["input"], &device);

    let (enc_out, enc) = {
        let (z, inter) = model.encode_intermediates(x.clone(), None).unwrap();
        let _ = z;
        let [b, n, d] = inter.norm_out.dims();
        let t = model.config.latent_tokens;
        (inter.norm_out.clone().slice([0..b, n - t..n, 0..d]), inter)
    };
    assert!(enc.rope.is_empty(), "use_rope=false: no RoPE table");
    check("enc_tokens_in", enc.tokens_in);
    check("enc_out", enc_out.clone());
    let h = linear3(&model.quant_conv, enc_out);
    check("h", h.clone());

    let out = q.forward(h);
    assert_close("logits", out.logits.clone(), &io["logits"], ia, ir);
    assert_close("probs", out.probs.clone(), &io["probs"], ia, ir);
    assert_close("indices", reference_view(out.indices.clone()), &io["indices"], 0.0, 0.0);
    assert_close("z_q", out.z_q.clone(), &io["z_q"], oa, or);

    // The latent users get from `encode` is z_q; its codes come with `encode_with_codes`.
    let (z, codes) = model.encode_with_codes(x.clone()).unwrap();
    assert_close("encode = z_q", z.clone(), &io["z_q"], oa, or);
    assert_close("encode_with_codes indices", reference_view(codes.unwrap().indices), &io["indices"], 0.0, 0.0);

    let (output, dec) = model.decode_intermediates(tensor(&io["z_q"], &device)).unwrap();
    let PixelDecoderIntermediates::Plain(dec) = dec else { panic!("the fixture's decoder_model is a plain ViT") };
    check("dec_post_quant", dec.post_quant);
    check("dec_tokens_in", dec.tokens_in);
    check("dec_block0_out", dec.blocks[0].clone());
    check("dec_norm_out", dec.norm_out);
    assert_close("output (decode of fixture z_q)", output, &io["output"], oa, or);
    assert_close("output (end to end)", model.reconstruct(x).unwrap(), &io["output"], oa, or);

    // entropy_loss_ratio × compute_entropy_loss(logits).
    let (_, lr) = tol(&meta, "losses");
    let ratio = args.entropy_loss_ratio as f32;
    let scalar = |key: &str| (vec![1], io[key].1.clone());
    assert_close("entropy_loss", SoftVq::<B>::entropy_loss(out.logits) * ratio, &scalar("entropy_loss"), 0.0, lr);
}
