//! SoftVQ-VAE checkpoint compatibility: the SoftVQ-L-64 key set and parameter count, the export
//! round trip, and clear errors for configs that cannot describe a SoftVQ-VAE.

use std::collections::BTreeMap;

use burn::backend::NdArray;
use maetok_nn::testing::{fixtures_dir, read_tensors};
use maetok_tokenizer::{load_pretrained, load_with_args, save_pretrained, DecoderKind, ModelArgs, Tokenizer};
use rand::SeedableRng;

type B = NdArray<f32>;

/// Keys of a SoftVQModel state dict that inference does not use (listed as ignored on load).
fn training_only(key: &str) -> bool {
    key.starts_with("repa_model.") || key.starts_with("projection.") || key == "quantize.codebook_used"
}

#[test]
fn softvq_l_64_state_dict_matches_published_key_list() {
    let text = std::fs::read_to_string(fixtures_dir().join("softvq-l-64.keys.txt")).unwrap();
    let mut expected = maetok_tokenizer::testing::read_key_list(&fixtures_dir().join("softvq-l-64.keys.txt"));
    expected.retain(|k, _| !training_only(k));
    // The header states the inference parameter count ("inference_numel(...)=N").
    let numel: usize = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .find_map(|l| l.split("inference_numel").nth(1).and_then(|r| r.split('=').nth(1)).map(|n| n.trim().parse().unwrap()))
        .expect("the key list's header gives inference_numel");

    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/softvq-l-64.json");
    let cfg = ModelArgs::from_file(&config).unwrap().resolve("softvq-l-64.json").unwrap();
    assert_eq!(cfg.decoder_kind, DecoderKind::Plain);
    assert!(cfg.quantizer.is_some() && cfg.rope.is_none());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut model = Tokenizer::<B>::new(&cfg, &mut rng, &Default::default());
    let ours: BTreeMap<String, Vec<usize>> = model.state_dict_shapes().into_iter().collect();
    let missing: Vec<_> = expected.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (k, s) in &expected {
        assert_eq!(&ours[k], s, "shape of {k}");
    }
    assert_eq!(model.num_params_lazy(), numel);
}

#[test]
fn softvq_export_round_trip_is_bit_identical() {
    let device = Default::default();
    let src = fixtures_dir().join("tokenizer-softvq-tiny");
    let args = maetok_tokenizer::testing::fixture_args(&src).unwrap();
    let (mut model, report) = load_with_args::<B>(&args, "softvq", src.join("model.safetensors"), &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(&mut model, &args, out.path()).unwrap();
    let original = read_tensors(src.join("model.safetensors"));
    let saved = read_tensors(out.path().join("model.safetensors"));
    let inference: BTreeMap<_, _> = original.iter().filter(|(k, _)| !training_only(k)).collect();
    assert_eq!(inference.len() + report.ignored.len(), original.len());
    let saved_keys: std::collections::BTreeSet<&String> = saved.keys().collect();
    assert_eq!(inference.keys().copied().collect::<std::collections::BTreeSet<_>>(), saved_keys, "key sets differ");
    for (k, v) in &inference {
        assert_eq!(&&saved[*k], v, "tensor {k} changed in the round trip");
    }
    // The written config has no `quantizer` key (Python's `ModelArgs(**cfg)` would refuse it);
    // the folder is recognised as a SoftVQ-VAE by its weights.
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
    assert!(written.get("quantizer").is_none());
    let (again, report) = load_pretrained::<B>(out.path(), &device).unwrap();
    assert!(again.quantizer.is_some() && report.ignored.is_empty());
    let mut again = again;
    let mut ex = maetok_nn::io::Exporter::new();
    maetok_nn::io::VisitParams::visit_params(&mut again, "", &mut ex);
    let dir2 = tempfile::tempdir().unwrap();
    ex.write(dir2.path().join("m.safetensors")).unwrap();
    assert_eq!(read_tensors(dir2.path().join("m.safetensors")), saved, "save → load → save changed a tensor");
}

fn resolve_err(edit: impl FnOnce(&mut ModelArgs)) -> String {
    let src = fixtures_dir().join("tokenizer-softvq-tiny");
    let mut args = maetok_tokenizer::testing::fixture_args(&src).unwrap();
    args.quantizer = Some("softvq".into());
    edit(&mut args);
    args.resolve("cfg.json").unwrap_err().to_string()
}

#[test]
fn configs_that_cannot_be_a_softvq_vae_name_the_key() {
    let e = resolve_err(|a| a.num_codebooks = a.num_latent_tokens + 1);
    assert!(e.contains("cfg.json") && e.contains("num_codebooks") && e.contains("num_latent_tokens"), "{e}");
    let e = resolve_err(|a| a.quantizer = Some("vq".into()));
    assert!(e.contains("cfg.json") && e.contains("quantizer 'vq'"), "{e}");
    let e = resolve_err(|a| a.decoder_model = "resnet50".into());
    assert!(e.contains("cfg.json") && e.contains("decoder_model 'resnet50'") && e.contains("neither"), "{e}");
    let e = resolve_err(|a| a.decoder_model = "vit_base_patch14_dinov2_movq".into());
    assert!(e.contains("decoder_model") && e.contains("MoVQBlockv2"), "{e}");
    let e = resolve_err(|a| a.tau = 0.0);
    assert!(e.contains("tau"), "{e}");
    let e = resolve_err(|a| a.codebook_size = 0);
    assert!(e.contains("codebook_size"), "{e}");
    // A checkpoint whose codebook does not match the config is a shape error naming the key.
    let src = fixtures_dir().join("tokenizer-softvq-tiny");
    let mut args = maetok_tokenizer::testing::fixture_args(&src).unwrap();
    args.codebook_size *= 2;
    let e = load_with_args::<B>(&args, "cfg.json", src.join("model.safetensors"), &Default::default()).unwrap_err().to_string();
    assert!(e.contains("quantize.embedding"), "{e}");
}
