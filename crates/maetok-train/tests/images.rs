//! Image preprocessing and the procedural dataset.

use image::RgbImage;
use maetok_train::data::{preprocess_center_crop, ProceduralShapes};

#[test]
fn centre_crop_passes_through_and_resizes() {
    let img = RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 7]));
    assert_eq!(preprocess_center_crop(&img, 64), img);
    let wide = RgbImage::from_fn(300, 100, |x, _| image::Rgb([(x % 256) as u8, 0, 0]));
    let out = preprocess_center_crop(&wide, 64);
    assert_eq!(out.dimensions(), (64, 64));
    // Box-halving path: short side 256 >= 2*64.
    let big = RgbImage::from_pixel(400, 256, image::Rgb([10, 20, 30]));
    let out = preprocess_center_crop(&big, 64);
    assert_eq!(out.dimensions(), (64, 64));
    assert_eq!(out.get_pixel(10, 10), &image::Rgb([10, 20, 30]));
}

#[test]
fn procedural_dataset_is_deterministic_and_labelled() {
    let d = ProceduralShapes::new(24, 5);
    let (a, la) = d.get(3);
    let (b, lb) = d.get(3);
    assert_eq!(a, b);
    assert_eq!(la, lb);
    assert_eq!(a.dimensions(), (24, 24));
    let labels: std::collections::HashSet<usize> = (0..60).map(|i| d.get(i).1).collect();
    assert_eq!(labels.len(), d.num_classes(), "all classes appear");
    assert_ne!(d.get(4).0, a);
}
