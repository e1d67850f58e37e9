//! PSNR/SSIM parity with skimage as `inference/reconstruct_vq.py` calls it
//! (`fixtures/metrics`, `psnr_ssim/*`).

mod common;
use common::{scalar as meta_scalar, tensors};
use maetok_eval::{psnr, ssim, SsimOptions};

/// The int64-stored u8 HWC crops, as f32 in [0, 1], with their `[H, W, C]`.
fn image(name: &str) -> (Vec<f32>, [usize; 3]) {
    let t = tensors("metrics/fixture.safetensors");
    let (shape, v) = &t[&format!("psnr_ssim/{name}_u8")];
    let hwc: [usize; 3] = shape.clone().try_into().expect("an HWC image");
    (v.iter().map(|&x| x as f32 / 255.0).collect(), hwc)
}

#[test]
fn psnr_and_ssim_match_skimage() {
    let scalar = |k: &str| meta_scalar("metrics", k);
    for (a, b) in [("astronaut", "coffee"), ("astronaut", "astronaut_degraded"), ("coffee", "coffee_degraded")] {
        let pair = format!("{a}_vs_{}", if b.ends_with("degraded") { "degraded" } else { b });
        let ((x, [h, w, c]), (y, _)) = (image(a), image(b));
        let p = psnr(&x, &y, 1.0).unwrap();
        let want = scalar(&format!("psnr_ssim/{pair}/psnr"));
        println!("{pair}: psnr {p} (skimage {want})");
        assert!((p - want).abs() <= 1e-4 + 1e-6 * want.abs());
        let s = ssim(&x, &y, h, w, c, SsimOptions::reference()).unwrap();
        let want = scalar(&format!("psnr_ssim/{pair}/ssim"));
        println!("{pair}: ssim {s} (skimage {want})");
        assert!((s - want).abs() <= 1e-5);
        let s1 = ssim(&x, &y, h, w, c, SsimOptions::standard()).unwrap();
        let want = scalar(&format!("psnr_ssim/{pair}/ssim_data_range_1"));
        assert!((s1 - want).abs() <= 1e-5, "{s1} vs {want}");
    }
}

#[test]
fn identical_images_and_size_mismatch() {
    let (x, [h, w, c]) = image("coffee");
    assert_eq!(psnr(&x, &x, 1.0).unwrap(), f64::INFINITY);
    assert!((ssim(&x, &x, h, w, c, SsimOptions::standard()).unwrap() - 1.0).abs() < 1e-12);
    assert!(psnr(&x, &x[..10], 1.0).is_err());
}
