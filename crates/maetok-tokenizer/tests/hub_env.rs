//! `load_pretrained` with a Hugging Face id, resolved through `HF_ENDPOINT` and `HF_HOME` as
//! Python's `huggingface_hub` does (its own test binary: it sets process environment variables).

use burn::backend::NdArray;
use maetok_nn::testing::{fixtures_dir, HubServer};

#[test]
fn load_pretrained_takes_a_hub_id_through_hf_endpoint_and_hf_home() {
    let dir = fixtures_dir().join("tokenizer-softvq-tiny");
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    let files = std::collections::HashMap::from([
        ("config.json".to_string(), args.to_json().into_bytes()),
        ("model.safetensors".to_string(), std::fs::read(dir.join("model.safetensors")).unwrap()),
    ]);
    let server = HubServer::start("SoftVQVAE/softvq-tiny", files);
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HF_ENDPOINT", &server.endpoint);
    std::env::set_var("HF_HOME", home.path());
    let (model, _) = maetok_tokenizer::load_pretrained::<NdArray<f32>>("SoftVQVAE/softvq-tiny", &Default::default()).unwrap();
    assert!(model.quantizer.is_some());
    // Python's layout: $HF_HOME/hub/models--owner--name.
    assert!(home.path().join("hub/models--SoftVQVAE--softvq-tiny/snapshots").is_dir());
}
