//! Hugging Face ids in place of folders: a fixture served in hub layout by a local HTTP server
//! (`maetok_nn::testing::HubServer`) is fetched into a Hugging Face cache, loads like the folder,
//! and is found again offline; unknown ids and non-ids are clear errors.

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::hub::{Hub, HubError};
use maetok_nn::testing::{fixtures_dir, read_tensors, tensor, HubServer};
use maetok_tokenizer::{load_pretrained, load_with_args};

type B = NdArray<f32>;

/// The SoftVQ fixture as the files of a hub model (config.json with the fixture's sizes).
fn softvq_files() -> HashMap<String, Vec<u8>> {
    let dir = fixtures_dir().join("tokenizer-softvq-tiny");
    let args = maetok_tokenizer::testing::fixture_args(&dir).unwrap();
    HashMap::from([
        ("config.json".to_string(), args.to_json().into_bytes()),
        ("model.safetensors".to_string(), std::fs::read(dir.join("model.safetensors")).unwrap()),
    ])
}

#[test]
fn a_hub_id_is_fetched_into_the_cache_loads_like_the_folder_and_works_offline() {
    let cache = tempfile::tempdir().unwrap();
    let id = "SoftVQVAE/softvq-tiny";
    let server = HubServer::start(id, softvq_files());
    let hub = Hub { endpoint: server.endpoint.clone(), cache: cache.path().to_path_buf(), progress: false };
    let dir = hub.resolve(std::path::Path::new(id)).unwrap();
    assert!(dir.starts_with(cache.path().join("models--SoftVQVAE--softvq-tiny").join("snapshots")), "{}", dir.display());
    let served = server.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(served >= 2, "both files came from the server ({served} requests)");

    let device = Default::default();
    let (from_hub, _) = load_pretrained::<B>(&dir, &device).unwrap();
    let fixture = fixtures_dir().join("tokenizer-softvq-tiny");
    let args = maetok_tokenizer::testing::fixture_args(&fixture).unwrap();
    let (from_folder, _) = load_with_args::<B>(&args, "softvq", fixture.join("model.safetensors"), &device).unwrap();
    let x: Tensor<B, 4> = tensor(&read_tensors(fixture.join("io.safetensors"))["input"], &device);
    let (a, b) = (from_hub.encode(x.clone()).unwrap(), from_folder.encode(x).unwrap());
    assert_eq!(a.into_data().to_vec::<f32>().unwrap(), b.into_data().to_vec::<f32>().unwrap());

    // Offline: the server is gone, the cache answers.
    drop(server);
    let hub = Hub { endpoint: "http://127.0.0.1:9".into(), ..hub };
    assert_eq!(hub.resolve(std::path::Path::new(id)).unwrap(), dir);
}

#[test]
fn unknown_ids_and_non_ids_are_clear_errors() {
    let cache = tempfile::tempdir().unwrap();
    let server = HubServer::start("SoftVQVAE/softvq-tiny", softvq_files());
    let hub = Hub { endpoint: server.endpoint.clone(), cache: cache.path().to_path_buf(), progress: false };
    let e = hub.resolve(std::path::Path::new("MAETok/no-such-model")).unwrap_err();
    assert!(matches!(e, HubError::Download { .. }));
    let msg = e.to_string();
    assert!(msg.contains("MAETok/no-such-model") && msg.contains(&server.endpoint) && msg.contains("config.json"), "{msg}");
    let e = hub.resolve(std::path::Path::new("no/such/folder")).unwrap_err().to_string();
    assert!(e.contains("no/such/folder") && e.contains("neither"), "{e}");
    // A missing local path that is not an id stays a folder error in the loader.
    let e = load_pretrained::<B>("./missing-model", &Default::default()).err().unwrap().to_string();
    assert!(e.contains("missing-model"), "{e}");
}
