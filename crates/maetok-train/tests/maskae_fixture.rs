//! MaskAE training forward against `fixtures/tokenizer-maskae-tiny`, for the recorded batch of
//! one and the batch of two (`b2_*`: the image and its mirror): the three auxiliary decoders'
//! outputs and predictions, the reconstruction, the targets and each auxiliary loss. Sizes come
//! from the fixture's config.json / meta.json, tolerances from its meta.json.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use maetok_nn::testing::{assert_close, read_tensors, tensor};
use maetok_tokenizer::AuxTarget;
use maetok_train::tokenizer::aux_losses;

mod common;

type B = NdArray<f32>;

#[test]
fn aux_decoders_recon_and_losses_match_for_both_batches() {
    let device = Default::default();
    let dir = common::maskae_dir();
    let meta = common::meta(&dir);
    let io = read_tensors(dir.join("io.safetensors"));
    let (fa, fr) = common::tol(&meta, "features/recon");
    let (la, lr) = common::tol(&meta, "losses");
    let model = common::mask_ae::<B>(&device);
    let teachers = common::teachers::<B>(&device);
    let ratio = io["mask_ratio"].1[0] as f64;
    let x: Tensor<B, 4> = tensor(&io["input"], &device);

    let m = common::mask(&io["orders"], ratio);
    let out = model.forward(x.clone(), Some(&m)).unwrap();
    assert_close("latent", out.latent.clone(), &io["latent"], fa, fr);
    assert_close("recon", out.recon.clone(), &io["recon"], fa, fr);
    for t in AuxTarget::ALL {
        let a = out.aux(t).unwrap_or_else(|| panic!("{} decoder is switched on in config.json", t.name()));
        assert_close(&format!("aux_{}_dec", t.name()), a.rows.clone(), &io[&format!("aux_{}_dec", t.name())], fa, fr);
        assert_close(&format!("aux_{}_pred", t.name()), a.pred.clone(), &io[&format!("aux_{}_pred", t.name())], fa, fr);
    }
    let targets = teachers.targets(x.clone()).unwrap();
    assert_close("teacher_dino_feat", targets.dino.clone().unwrap(), &io["teacher_dino_feat"], fa, fr);
    assert_close("teacher_clip_feat", targets.clip.clone().unwrap(), &io["teacher_clip_feat"], fa, fr);
    let losses = aux_losses(&out, &targets, Some(&m), true);
    // The HOG target may differ from the recorded one by bin flips at near-edge phases (see
    // targets' hog tests); the loss over 108-dim tokens averages them far below the tolerance.
    assert_close("loss_hog", losses.hog.unwrap(), &io["loss_hog"], la, lr);
    assert_close("loss_dino", losses.dino.unwrap(), &io["loss_dino"], la, lr);
    assert_close("loss_clip", losses.clip.unwrap(), &io["loss_clip"], la, lr);

    // Batch of two: the image and its mirror, each with its own order; the losses' mask sum
    // spans the batch.
    let m2 = common::mask(&io["b2_orders"], ratio);
    let x2 = Tensor::cat(vec![x.clone(), x.flip([3])], 0);
    let out2 = model.forward(x2.clone(), Some(&m2)).unwrap();
    assert_close("b2_latent", out2.latent.clone(), &io["b2_latent"], fa, fr);
    let [b, c, _, _] = out2.recon.dims();
    let channel_mean = out2.recon.clone().mean_dim(3).mean_dim(2).reshape([b, c]);
    assert_close("b2_recon_channel_mean", channel_mean, &io["b2_recon_channel_mean"], fa, fr);
    let pool = io["b2_recon_pool16"].0[2];
    let k = model.ae.config.image_size / pool;
    assert_close("b2_recon_pool16", common::avg_pool(out2.recon.clone(), k), &io["b2_recon_pool16"], fa, fr);
    let t2 = teachers.targets(x2).unwrap();
    let l2 = aux_losses(&out2, &t2, Some(&m2), true);
    assert_close("b2_loss_hog", l2.hog.unwrap(), &io["b2_loss_hog"], la, lr);
    assert_close("b2_loss_dino", l2.dino.unwrap(), &io["b2_loss_dino"], la, lr);
    assert_close("b2_loss_clip", l2.clip.unwrap(), &io["b2_loss_clip"], la, lr);
}
