//! A short autoencoder run on the procedural dataset lowers the pixel loss clearly.

use burn::backend::{Autodiff, NdArray};
use maetok_tokenizer::{MaeTok, ModelArgs, VitSize};
use maetok_train::data::ProceduralShapes;
use maetok_train::{train_autoencoder, AeTrainConfig};
use rand::SeedableRng;

type B = Autodiff<NdArray<f32>>;

#[test]
fn short_training_run_lowers_the_loss() {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 7);
    let args = ModelArgs {
        image_size: 16,
        base_image_size: 16,
        enc_patch_size: 4,
        dec_patch_size: 4,
        num_latent_tokens: 8,
        codebook_embed_dim: 8,
        ..ModelArgs::default()
    }
    .with_encoder_size(VitSize { width: 32, depth: 1, heads: 2 })
    .with_decoder_size(VitSize { width: 32, depth: 1, heads: 2 });
    let cfg = args.resolve("test").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let model = MaeTok::<B>::new(&cfg, &mut rng, &device);
    let data = ProceduralShapes::new(16, 3);
    let tc = AeTrainConfig { steps: 60, batch_size: 8, lr: 3e-3, warmup: 5, ..Default::default() };
    let res = train_autoencoder(model, &data, &tc, &device, |_, _| {});
    let first: f32 = res.losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = res.losses[res.losses.len() - 5..].iter().sum::<f32>() / 5.0;
    println!("loss first {first:.4} last {last:.4}");
    assert!(res.losses.iter().all(|l| l.is_finite()));
    assert!(last < 0.5 * first, "loss did not fall clearly: {first} -> {last}");
}
