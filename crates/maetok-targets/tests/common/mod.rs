//! The fixtures' configurations, from the library's fixture readers.

use maetok_nn::testing::fixtures_dir;
use maetok_targets::disc::DiscConfig;
use maetok_targets::VitConfig;

/// The narrowed DINO discriminator of `disc-tiny`.
#[allow(dead_code)] // each test binary uses part of this module
pub fn disc_config() -> DiscConfig {
    maetok_targets::testing::disc_tiny(&fixtures_dir().join("disc-tiny")).unwrap()
}

/// A MaskAE teacher (`repa_model.` DINOv2 or `clip_model.` SigLIP of `tokenizer-maskae-tiny`).
#[allow(dead_code)]
pub fn maskae_teacher(timm_name: &str, prefix: &str, preset: VitConfig) -> VitConfig {
    maetok_targets::testing::maskae_teacher(&fixtures_dir().join("tokenizer-maskae-tiny"), timm_name, prefix, preset).unwrap()
}
