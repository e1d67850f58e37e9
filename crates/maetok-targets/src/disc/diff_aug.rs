//! DiffAugment (`utils/diff_aug.py`, spec §5.4): differentiable colour, translation and cutout
//! augmentations applied to real and generated images before the discriminator.
//!
//! `DiffAugment(x, policy, prob)`: for each policy element **one** uniform draw decides for the
//! whole batch (applied if the draw ≤ `prob`); inside an element the draws are per sample:
//!
//! * `color`: brightness `x + (U − ½)`, saturation `(x − mean_c)·2U + mean_c`, contrast
//!   `(x − mean_chw)·(U + ½) + mean_chw` (values in `[-1, 1]` space).
//! * `translation[_r]` (r = 0.125): integer shifts `t ∈ [−s, s]`, `s = int(H·r + ½)` (rows) and
//!   `int(W·r + ½)` (columns): `out[i, j] = x[i + t_y, j + t_x]`, zero outside.
//! * `cutout[_r]` (r = 0.5 unless given, MAETok uses 0.2 and 0.5): a `int(H·r + ½)` square at a
//!   random centre is zeroed, clipped at the borders.
//!
//! The random numbers are drawn on the host into [`AugDraws`] (seeded, reproducible, reusable),
//! then applied with tensor ops (a gather for translation, a mask for cutout), so gradients flow
//! to the images on any backend.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rand::Rng;

/// One policy element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Augment {
    Color,
    Translation { ratio: f64 },
    Cutout { ratio: f64 },
}

/// A DiffAugment policy string or probability that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiffAugError {
    #[error("DiffAugment policy '{policy}': bad ratio in '{item}'")]
    Ratio { policy: String, item: String },
    #[error("DiffAugment policy '{policy}': unknown element '{item}' (expected color, translation[_r], cutout[_r])")]
    Unknown { policy: String, item: String },
    #[error("DiffAugment probability {0} is not in [0, 1]")]
    Probability(f64),
}

/// A policy such as `color,translation,cutout_0.2` with its application probability.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffAugPolicy {
    pub ops: Vec<Augment>,
    pub prob: f64,
}

impl DiffAugPolicy {
    /// Parses the reference's policy strings: `color`, `translation[_ratio]`, `cutout[_ratio]`,
    /// comma-separated.
    pub fn parse(policy: &str, prob: f64) -> Result<Self, DiffAugError> {
        let mut ops = Vec::new();
        for item in policy.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, ratio) = match item.split_once('_') {
                Some((n, r)) => {
                    (n, Some(r.parse::<f64>().map_err(|_| DiffAugError::Ratio { policy: policy.to_string(), item: item.to_string() })?))
                }
                None => (item, None),
            };
            ops.push(match name {
                "color" if ratio.is_none() => Augment::Color,
                "translation" => Augment::Translation { ratio: ratio.unwrap_or(0.125) },
                "cutout" => Augment::Cutout { ratio: ratio.unwrap_or(0.5) },
                _ => return Err(DiffAugError::Unknown { policy: policy.to_string(), item: item.to_string() }),
            });
        }
        if !(0.0..=1.0).contains(&prob) {
            return Err(DiffAugError::Probability(prob));
        }
        Ok(Self { ops, prob })
    }

    /// `color,translation,cutout_0.2` with probability ½: the discriminator and GAN-loss inputs.
    pub fn weak() -> Self {
        Self { ops: vec![Augment::Color, Augment::Translation { ratio: 0.125 }, Augment::Cutout { ratio: 0.2 }], prob: 0.5 }
    }

    /// `color,translation,cutout_0.5` always: the consistency-regularisation inputs.
    pub fn strong() -> Self {
        Self { ops: vec![Augment::Color, Augment::Translation { ratio: 0.125 }, Augment::Cutout { ratio: 0.5 }], prob: 1.0 }
    }

    /// Draws everything one application needs for a `[b, _, h, w]` batch.
    pub fn draw(&self, b: usize, h: usize, w: usize, rng: &mut impl Rng) -> AugDraws {
        let mut steps = Vec::new();
        for op in &self.ops {
            let gate: f64 = rng.random();
            if gate > self.prob {
                continue;
            }
            steps.push(match *op {
                Augment::Color => {
                    let mut u = || (0..b).map(|_| rng.random::<f32>()).collect::<Vec<f32>>();
                    let (brightness, saturation, contrast) = (u(), u(), u());
                    AugStep::Color { brightness, saturation, contrast }
                }
                Augment::Translation { ratio } => {
                    let (sy, sx) = (round_half(h as f64 * ratio) as i64, round_half(w as f64 * ratio) as i64);
                    let shifts = (0..b).map(|_| (rng.random_range(-sy..=sy), rng.random_range(-sx..=sx))).collect();
                    AugStep::Translation { shifts }
                }
                Augment::Cutout { ratio } => {
                    let (ch, cw) = (round_half(h as f64 * ratio), round_half(w as f64 * ratio));
                    let centres = (0..b).map(|_| (rng.random_range(0..h + 1 - ch % 2), rng.random_range(0..w + 1 - cw % 2))).collect();
                    AugStep::Cutout { size: (ch, cw), centres }
                }
            });
        }
        AugDraws { steps, dims: (b, h, w) }
    }

    /// Draws and applies: `x` `[B, C, H, W]` → same shape.
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>, rng: &mut impl Rng) -> Tensor<B, 4> {
        let [b, _, h, w] = x.dims();
        self.draw(b, h, w, rng).apply(x)
    }
}

/// `int(v + 0.5)` for non-negative `v`.
fn round_half(v: f64) -> usize {
    (v + 0.5) as usize
}

/// One applied element with its per-sample draws.
#[derive(Debug, Clone, PartialEq)]
pub enum AugStep {
    /// Per-sample `U(0, 1)` draws of the three colour ops.
    Color { brightness: Vec<f32>, saturation: Vec<f32>, contrast: Vec<f32> },
    /// Per-sample `(row shift, column shift)`.
    Translation { shifts: Vec<(i64, i64)> },
    /// Square `(rows, columns)` and per-sample centre `(row, column)`.
    Cutout { size: (usize, usize), centres: Vec<(usize, usize)> },
}

/// The draws of one DiffAugment application (elements whose gate failed are absent).
#[derive(Debug, Clone, PartialEq)]
pub struct AugDraws {
    pub steps: Vec<AugStep>,
    /// `(batch, height, width)` the draws were made for.
    pub dims: (usize, usize, usize),
}

impl AugDraws {
    /// The draws of samples `rows` of the batch drawn for (one peer's share of a global batch):
    /// the same gates, each element's per-sample values restricted to `rows`.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> AugDraws {
        let (b, h, w) = self.dims;
        assert!(rows.end <= b, "rows {rows:?} of a batch of {b}");
        let steps = self
            .steps
            .iter()
            .map(|s| match s {
                AugStep::Color { brightness, saturation, contrast } => AugStep::Color {
                    brightness: brightness[rows.clone()].to_vec(),
                    saturation: saturation[rows.clone()].to_vec(),
                    contrast: contrast[rows.clone()].to_vec(),
                },
                AugStep::Translation { shifts } => AugStep::Translation { shifts: shifts[rows.clone()].to_vec() },
                AugStep::Cutout { size, centres } => AugStep::Cutout { size: *size, centres: centres[rows.clone()].to_vec() },
            })
            .collect();
        AugDraws { steps, dims: (rows.len(), h, w) }
    }

    /// Applies the recorded augmentations to `x` `[B, C, H, W]` (the size drawn for).
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        assert_eq!((b, h, w), self.dims, "DiffAugment draws were made for another batch shape");
        let device = x.device();
        let per_sample = |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [b]), &device).reshape([b, 1, 1, 1]);
        let mut x = x;
        for step in &self.steps {
            x = match step {
                AugStep::Color { brightness, saturation, contrast } => {
                    let x = x + (per_sample(brightness) - 0.5);
                    let m = x.clone().mean_dim(1);
                    let x = (x - m.clone()) * (per_sample(saturation) * 2.0) + m;
                    let m = x.clone().mean_dim(1).mean_dim(2).mean_dim(3);
                    (x - m.clone()) * (per_sample(contrast) + 0.5) + m
                }
                AugStep::Translation { shifts } => {
                    // Gather from the flattened image with one extra zero pixel at index h·w.
                    let mut idx = Vec::with_capacity(b * h * w);
                    for &(ty, tx) in shifts {
                        for i in 0..h as i64 {
                            for j in 0..w as i64 {
                                let (si, sj) = (i + ty, j + tx);
                                let inside = (0..h as i64).contains(&si) && (0..w as i64).contains(&sj);
                                idx.push(if inside { si * w as i64 + sj } else { (h * w) as i64 });
                            }
                        }
                    }
                    let idx = Tensor::<B, 3, Int>::from_data(TensorData::new(idx, [b, 1, h * w]), &device).expand([b, c, h * w]);
                    let flat = Tensor::cat(vec![x.reshape([b, c, h * w]), Tensor::zeros([b, c, 1], &device)], 2);
                    flat.gather(2, idx).reshape([b, c, h, w])
                }
                AugStep::Cutout { size: (ch, cw), centres } => {
                    let mut mask = vec![1f32; b * h * w];
                    for (s, &(oy, ox)) in centres.iter().enumerate() {
                        for k in 0..*ch {
                            let i = (k as i64 + oy as i64 - (*ch / 2) as i64).clamp(0, h as i64 - 1) as usize;
                            for l in 0..*cw {
                                let j = (l as i64 + ox as i64 - (*cw / 2) as i64).clamp(0, w as i64 - 1) as usize;
                                mask[(s * h + i) * w + j] = 0.0;
                            }
                        }
                    }
                    x * Tensor::<B, 4>::from_data(TensorData::new(mask, [b, 1, h, w]), &device)
                }
            };
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::SeedableRng;

    type B = NdArray<f32>;

    fn img(b: usize, h: usize, w: usize) -> Tensor<B, 4> {
        let v: Vec<f32> = (0..b * 3 * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(v, [b, 3, h, w]), &Default::default())
    }

    /// Applying the draws of a row range to those rows gives those rows of the whole batch.
    #[test]
    fn rows_of_the_draws_augment_rows_of_the_batch() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let draws = DiffAugPolicy::strong().draw(4, 16, 16, &mut rng);
        let x = img(4, 16, 16);
        let whole = draws.apply(x.clone()).narrow(0, 1, 2).into_data().to_vec::<f32>().unwrap();
        let part = draws.rows(1..3).apply(x.narrow(0, 1, 2)).into_data().to_vec::<f32>().unwrap();
        assert_eq!(whole, part);
    }

    #[test]
    fn policies_parse_and_reject() {
        assert_eq!(DiffAugPolicy::parse("color,translation,cutout_0.2", 0.5).unwrap(), DiffAugPolicy::weak());
        assert_eq!(DiffAugPolicy::parse("color,translation,cutout_0.5", 1.0).unwrap(), DiffAugPolicy::strong());
        assert!(DiffAugPolicy::parse("colour", 0.5).unwrap_err().to_string().contains("colour"));
        assert!(DiffAugPolicy::parse("cutout_x", 0.5).unwrap_err().to_string().contains("cutout_x"));
        assert!(DiffAugPolicy::parse("color", 1.5).is_err());
    }

    #[test]
    fn gates_follow_the_probability() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let never = DiffAugPolicy { prob: 0.0, ..DiffAugPolicy::weak() };
        assert!(never.draw(2, 16, 16, &mut rng).steps.is_empty());
        let always = DiffAugPolicy::strong();
        assert_eq!(always.draw(2, 16, 16, &mut rng).steps.len(), 3);
        let n: usize = (0..2000).map(|_| DiffAugPolicy::weak().draw(1, 16, 16, &mut rng).steps.len()).sum();
        assert!((2700..3300).contains(&n), "{n} of 6000 elements applied at p = 0.5");
    }

    #[test]
    fn translation_shifts_with_zero_fill() {
        let x = img(1, 8, 8);
        let d = AugDraws { steps: vec![AugStep::Translation { shifts: vec![(2, -1)] }], dims: (1, 8, 8) };
        let y = d.apply(x.clone()).into_data().to_vec::<f32>().unwrap();
        let xv = x.into_data().to_vec::<f32>().unwrap();
        for c in 0..3 {
            for i in 0..8 {
                for j in 0..8 {
                    let (si, sj) = (i as i64 + 2, j as i64 - 1);
                    let want = if (0..8).contains(&si) && (0..8).contains(&sj) { xv[(c * 8 + si as usize) * 8 + sj as usize] } else { 0.0 };
                    assert_eq!(y[(c * 8 + i) * 8 + j], want);
                }
            }
        }
    }

    #[test]
    fn cutout_zeroes_a_clipped_square() {
        let x = Tensor::<B, 4>::ones([1, 3, 16, 16], &Default::default());
        // Side int(16·0.2 + 0.5) = 3, centre (0, 15): rows 0..=1 (clipped), columns 14..=15.
        let d = AugDraws { steps: vec![AugStep::Cutout { size: (3, 3), centres: vec![(0, 15)] }], dims: (1, 16, 16) };
        let y = d.apply(x).into_data().to_vec::<f32>().unwrap();
        let zeros: Vec<(usize, usize)> = (0..256).filter(|&p| y[p] == 0.0).map(|p| (p / 16, p % 16)).collect();
        assert_eq!(zeros, vec![(0, 14), (0, 15), (1, 14), (1, 15)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        match &DiffAugPolicy::strong().draw(2, 256, 256, &mut rng).steps[2] {
            AugStep::Cutout { size, .. } => assert_eq!(*size, (128, 128)),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn colour_ops_follow_the_formulas() {
        let x = img(1, 4, 4);
        let xv = x.clone().into_data().to_vec::<f32>().unwrap();
        let d = AugDraws {
            steps: vec![AugStep::Color { brightness: vec![0.75], saturation: vec![0.5], contrast: vec![0.25] }],
            dims: (1, 4, 4),
        };
        let y = d.apply(x).into_data().to_vec::<f32>().unwrap();
        // Brightness +0.25; saturation factor 1 (identity); contrast factor 0.75 about the mean.
        let b: Vec<f32> = xv.iter().map(|v| v + 0.25).collect();
        let m = b.iter().sum::<f32>() / b.len() as f32;
        for (yi, bi) in y.iter().zip(&b) {
            assert!((yi - ((bi - m) * 0.75 + m)).abs() < 1e-5);
        }
    }
}
