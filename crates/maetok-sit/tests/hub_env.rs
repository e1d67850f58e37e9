//! `load_sit` with a Hugging Face id (the reference's `SiT.from_pretrained("SoftVQVAE/…")`),
//! resolved through `HF_ENDPOINT` and `HF_HOME` from a local hub server (its own test binary:
//! it sets process environment variables).

use burn::backend::NdArray;
use maetok_nn::testing::{fixtures_dir, HubServer};

#[test]
fn load_sit_takes_a_hub_id() {
    let dir = fixtures_dir().join("sit-tiny");
    let files = ["config.json", "model.safetensors"].map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()));
    let server = HubServer::start("SoftVQVAE/sit-tiny", files.into_iter().collect());
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HF_ENDPOINT", &server.endpoint);
    std::env::set_var("HF_HOME", home.path());
    let device = Default::default();
    let (_, from_hub, _) = maetok_sit::load_sit::<NdArray<f32>>("SoftVQVAE/sit-tiny", &device).unwrap();
    let (_, from_folder, _) = maetok_sit::load_sit::<NdArray<f32>>(&dir, &device).unwrap();
    assert_eq!(from_hub, from_folder);
    assert!(home.path().join("hub/models--SoftVQVAE--sit-tiny/snapshots").is_dir());
}
