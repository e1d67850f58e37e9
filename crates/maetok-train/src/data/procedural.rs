//! Built-in procedural dataset: coloured shapes on textured backgrounds, with class labels.
//! Any resolution, fully determined by `(seed, index)`; no download.

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Class names, indexed by label.
pub const CLASSES: &[&str] = &["circle", "square", "triangle", "diamond", "ring", "cross"];

/// An endless, seeded dataset of `size × size` images of one shape each.
#[derive(Debug, Clone)]
pub struct ProceduralShapes {
    pub size: usize,
    pub seed: u64,
}

fn colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [rng.random(), rng.random(), rng.random()]
}

impl ProceduralShapes {
    pub fn new(size: usize, seed: u64) -> Self {
        Self { size, seed }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        CLASSES.len()
    }

    /// Image `index` and its class label.
    pub fn get(&self, index: u64) -> (RgbImage, usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
        let class = rng.random_range(0..CLASSES.len());
        let (bg_a, bg_b) = (colour(&mut rng), colour(&mut rng));
        let stripe_freq: f32 = rng.random_range(2.0..8.0);
        let stripe_angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
        let mut fg = colour(&mut rng);
        // Keep the shape visible against the background.
        if (0..3).map(|c| (fg[c] - (bg_a[c] + bg_b[c]) / 2.0).abs()).sum::<f32>() < 0.6 {
            fg = fg.map(|v| 1.0 - v);
        }
        let radius: f32 = rng.random_range(0.18..0.32);
        let cx: f32 = rng.random_range(radius + 0.05..0.95 - radius);
        let cy: f32 = rng.random_range(radius + 0.05..0.95 - radius);
        let rot: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let s = self.size as f32;
        let img = RgbImage::from_fn(self.size as u32, self.size as u32, |x, y| {
            let (u, v) = ((x as f32 + 0.5) / s, (y as f32 + 0.5) / s);
            let t = (u + v) / 2.0;
            let stripes = 0.5 + 0.5 * ((u * stripe_angle.cos() + v * stripe_angle.sin()) * stripe_freq * std::f32::consts::TAU).sin();
            let mut p = [0.0f32; 3];
            for c in 0..3 {
                p[c] = (bg_a[c] * (1.0 - t) + bg_b[c] * t) * (0.75 + 0.25 * stripes);
            }
            let (dx, dy) = (u - cx, v - cy);
            let (rx, ry) = (dx * rot.cos() + dy * rot.sin(), -dx * rot.sin() + dy * rot.cos());
            let inside = match class {
                0 => dx * dx + dy * dy < radius * radius,
                1 => rx.abs() < radius * 0.8 && ry.abs() < radius * 0.8,
                2 => {
                    let h = radius * 1.2;
                    ry > -h / 2.0 && ry < h / 2.0 && rx.abs() < (h / 2.0 - ry) * 0.6
                }
                3 => dx.abs() + dy.abs() < radius,
                4 => {
                    let d = (dx * dx + dy * dy).sqrt();
                    d < radius && d > radius * 0.55
                }
                _ => (rx.abs() < radius * 0.3 && ry.abs() < radius) || (ry.abs() < radius * 0.3 && rx.abs() < radius),
            };
            if inside {
                p = fg;
            }
            image::Rgb(p.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8))
        });
        (img, class)
    }

    /// Images `start..start + n` and their labels.
    pub fn batch(&self, start: u64, n: usize) -> (Vec<RgbImage>, Vec<usize>) {
        (0..n as u64).map(|i| self.get(start + i)).unzip()
    }
}
