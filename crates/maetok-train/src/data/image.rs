//! Image files: discovery, decoding, the reference preprocessing, and tensor conversion.

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::{imageops::FilterType, RgbImage};

/// Errors reading images. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a readable image (PNG/JPEG): {msg}")]
    Decode { path: PathBuf, msg: String },
    #[error("no PNG or JPEG images found in {0}")]
    Empty(PathBuf),
    #[error("no class folders in {0} (expected <root>/<class>/<images>)")]
    NoClasses(PathBuf),
}

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).map(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())).unwrap_or(false)
}

/// Expands inputs into image files: a file is taken as is (whatever its extension, so a
/// mistaken file is reported when decoded); a folder is searched recursively for PNG/JPEG files,
/// sorted by path. A path that does not exist is an error.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ImageError> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| ImageError::Io { path: input.clone(), source })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            if found.is_empty() {
                return Err(ImageError::Empty(input.clone()));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ImageError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| ImageError::Io { path: dir.to_path_buf(), source })?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Largest image file read (bytes).
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;
/// Largest buffer one decode may allocate (a 16384² RGB image is 0.8 GB).
const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// Decodes an image file to 8-bit RGB (grey and alpha images are converted). The declared
/// dimensions are checked against [`maetok_nn::limits::MAX_IMAGE_SIDE`] before any pixel buffer
/// is allocated (a PNG header can claim 100000 × 100000).
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageError> {
    let decode = |msg: String| ImageError::Decode { path: path.to_path_buf(), msg };
    let io = |source| ImageError::Io { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_IMAGE_FILE_BYTES {
        return Err(decode(format!("the file has {len} bytes, more than the {MAX_IMAGE_FILE_BYTES} an image may have")));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(io)?;
    let side = maetok_nn::limits::MAX_IMAGE_SIDE as u32;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| decode(e.to_string()))?;
    Ok(img.to_rgb8())
}

/// The reference evaluation transform (ADM `center_crop_arr`): halve with a box filter while the
/// short side is at least `2·size`, resize bicubically so the short side is `size` (each side
/// rounded), then crop the centre `size × size` (offsets `floor((side − size)/2)`). An image
/// already `size × size` passes through unchanged.
pub fn preprocess_center_crop(img: &RgbImage, size: usize) -> RgbImage {
    let size = size as u32;
    let mut img = img.clone();
    if img.width() == size && img.height() == size {
        return img;
    }
    while img.width().min(img.height()) >= 2 * size {
        img = box_halve(&img);
    }
    let scale = size as f64 / img.width().min(img.height()) as f64;
    let (w, h) = ((img.width() as f64 * scale).round() as u32, (img.height() as f64 * scale).round() as u32);
    if (w, h) != (img.width(), img.height()) {
        img = image::imageops::resize(&img, w.max(size), h.max(size), FilterType::CatmullRom);
    }
    let (x0, y0) = ((img.width() - size) / 2, (img.height() - size) / 2);
    image::imageops::crop_imm(&img, x0, y0, size, size).to_image()
}

/// The reference training transform's crop (ADM `random_crop_arr`, spec §6.1): a short side `s`
/// drawn uniformly from the integers `[size, ceil(size/0.8)]`, box-halving while the short side is
/// at least `2·s`, a bicubic resize to short side `s` (each side rounded), then a uniform random
/// `size × size` crop. (The horizontal flip is separate: [`flip_horizontal`].)
pub fn random_crop_arr(img: &RgbImage, size: usize, rng: &mut impl rand::Rng) -> RgbImage {
    let max_side = (size as f64 / 0.8).ceil() as u32;
    let s = rng.random_range(size as u32..=max_side);
    let mut img = img.clone();
    while img.width().min(img.height()) >= 2 * s {
        img = box_halve(&img);
    }
    let scale = s as f64 / img.width().min(img.height()) as f64;
    let (w, h) = ((img.width() as f64 * scale).round() as u32, (img.height() as f64 * scale).round() as u32);
    let size = size as u32;
    if (w, h) != (img.width(), img.height()) {
        img = image::imageops::resize(&img, w.max(size), h.max(size), FilterType::CatmullRom);
    }
    let y0 = rng.random_range(0..=img.height() - size);
    let x0 = rng.random_range(0..=img.width() - size);
    image::imageops::crop_imm(&img, x0, y0, size, size).to_image()
}

/// Mirrors an image left–right (`RandomHorizontalFlip` when drawn).
pub fn flip_horizontal(img: &RgbImage) -> RgbImage {
    image::imageops::flip_horizontal(img)
}

/// PIL `resize((W//2, H//2), BOX)`: each output pixel is the mean of its 2×2 source block.
fn box_halve(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() / 2, img.height() / 2);
    RgbImage::from_fn(w, h, |x, y| {
        let mut acc = [0u32; 3];
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let p = img.get_pixel(2 * x + dx, 2 * y + dy);
            for c in 0..3 {
                acc[c] += p[c] as u32;
            }
        }
        image::Rgb([0, 1, 2].map(|c| ((acc[c] as f32) / 4.0).round() as u8))
    })
}

/// Images (all the same size) → `[B, 3, H, W]` in [-1, 1] (`2·u8/255 − 1`, the reference
/// `ToTensor + Normalize(0.5, 0.5)`).
pub fn images_to_tensor<B: Backend>(images: &[RgbImage], device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = (images[0].width() as usize, images[0].height() as usize);
    let mut data = Vec::with_capacity(images.len() * 3 * h * w);
    for img in images {
        assert_eq!((img.width() as usize, img.height() as usize), (w, h), "images in a batch must share one size");
        for c in 0..3 {
            for p in img.pixels() {
                data.push(p[c] as f32 / 255.0 * 2.0 - 1.0);
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [images.len(), 3, h, w]), device)
}

/// `[B, 3, H, W]` in [-1, 1] → 8-bit images, quantised as the reference does
/// ([`maetok_eval::quantize_reference`]).
pub fn tensor_to_images<B: Backend>(t: Tensor<B, 4>) -> Vec<RgbImage> {
    let [b, _, h, w] = t.dims();
    let v = maetok_nn::fused::host_values(t);
    (0..b)
        .map(|i| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = |c: usize| v[((i * 3 + c) * h + y as usize) * w + x as usize];
                image::Rgb([0, 1, 2].map(|c| maetok_eval::quantize_reference(at(c))))
            })
        })
        .collect()
}

/// HWC f32 values in [0, 1] of an 8-bit image (for PSNR/SSIM).
pub fn to_unit_hwc(img: &RgbImage) -> Vec<f32> {
    img.as_raw().iter().map(|&v| v as f32 / 255.0).collect()
}
