//! MAETok's token masking (spec §4.1): one ratio `r` per forward call from a normal with mean
//! `high` and σ 0.25 truncated to `[low, high]` (0.4–0.6 for MAETok: scipy `truncnorm(a=(low −
//! high)/0.25, b=0, loc=high, scale=0.25)`), then per sample a uniformly random order of the N
//! patches whose first `ceil(N·r)` entries are masked. Every draw comes from the caller's RNG
//! (the reference's numpy generator is unseeded), so training runs are reproducible.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// σ of the mask-ratio distribution.
pub const RATIO_STD: f64 = 0.25;

/// A mask that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaskError {
    #[error("mask ratio {0} is not in [0, 1]")]
    Ratio(f64),
    #[error("mask ratio range [{low}, {high}] is empty or outside [0, 1]")]
    Range { low: f64, high: f64 },
    #[error("order of sample {sample} is not a permutation of 0..{tokens}")]
    Order { sample: usize, tokens: usize },
}

/// Which patches of each sample are masked.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMask {
    pub batch: usize,
    /// Patches per image `N`.
    pub tokens: usize,
    /// The ratio `r` drawn for this call.
    pub ratio: f64,
    /// `[B·N]` row-major, 1 = masked.
    pub mask: Vec<f32>,
}

impl TokenMask {
    /// Masks the first `ceil(N·ratio)` patches of each sample's `order` (a permutation of 0..N).
    pub fn from_orders(orders: &[Vec<usize>], tokens: usize, ratio: f64) -> Result<Self, MaskError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(MaskError::Ratio(ratio));
        }
        let k = (tokens as f64 * ratio).ceil() as usize;
        let mut mask = vec![0f32; orders.len() * tokens];
        for (s, order) in orders.iter().enumerate() {
            let mut seen = vec![false; tokens];
            for &i in order {
                if i >= tokens || std::mem::replace(&mut seen[i], true) {
                    return Err(MaskError::Order { sample: s, tokens });
                }
            }
            if order.len() != tokens {
                return Err(MaskError::Order { sample: s, tokens });
            }
            for &i in &order[..k] {
                mask[s * tokens + i] = 1.0;
            }
        }
        Ok(Self { batch: orders.len(), tokens, ratio, mask })
    }

    /// A ratio from the truncated normal on `[low, high]` (mean `high`, σ [`RATIO_STD`]).
    pub fn draw_ratio(low: f64, high: f64, rng: &mut impl Rng) -> Result<f64, MaskError> {
        if !(0.0 <= low && low <= high && high <= 1.0) {
            return Err(MaskError::Range { low, high });
        }
        if low == high {
            return Ok(low);
        }
        let normal = Normal::new(high, RATIO_STD).expect("positive σ");
        // Rejection: the interval holds ≥ 15 % of the mass for any sub-interval of [0, 1] ending
        // at the mean with σ = 0.25 and width ≥ 0.1, so this ends quickly.
        loop {
            let r = normal.sample(rng);
            if (low..=high).contains(&r) {
                return Ok(r);
            }
        }
    }

    /// One call's mask for `batch` images of `tokens` patches: a ratio, then an order per sample.
    pub fn draw(batch: usize, tokens: usize, low: f64, high: f64, rng: &mut impl Rng) -> Result<Self, MaskError> {
        let ratio = Self::draw_ratio(low, high, rng)?;
        let orders: Vec<Vec<usize>> = (0..batch)
            .map(|_| {
                let mut o: Vec<usize> = (0..tokens).collect();
                o.shuffle(rng);
                o
            })
            .collect();
        Self::from_orders(&orders, tokens, ratio)
    }

    /// The mask of samples `rows` (one peer's share of a global batch): the same ratio, those
    /// samples' patches.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        assert!(rows.end <= self.batch, "rows {rows:?} of a batch of {}", self.batch);
        let mask = self.mask[rows.start * self.tokens..rows.end * self.tokens].to_vec();
        Self { batch: rows.len(), tokens: self.tokens, ratio: self.ratio, mask }
    }

    /// Masked patches per sample, `ceil(N·r)`.
    pub fn masked_per_sample(&self) -> usize {
        (self.tokens as f64 * self.ratio).ceil() as usize
    }

    /// `[B, N]`, 1 = masked.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(self.mask.clone(), [self.batch, self.tokens]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rows_keep_the_ratio_and_those_samples() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let m = TokenMask::draw(4, 6, 0.4, 0.6, &mut rng).unwrap();
        let part = m.rows(1..3);
        assert_eq!((part.batch, part.tokens, part.ratio), (2, 6, m.ratio));
        assert_eq!(part.mask, m.mask[6..18]);
    }

    #[test]
    fn ratios_stay_in_range_and_lean_to_the_top() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let rs: Vec<f64> = (0..4000).map(|_| TokenMask::draw_ratio(0.4, 0.6, &mut rng).unwrap()).collect();
        assert!(rs.iter().all(|r| (0.4..=0.6).contains(r)));
        let mean = rs.iter().sum::<f64>() / rs.len() as f64;
        // The truncated normal's mean (spec: ≈ 0.505), and more mass near 0.6 than near 0.4.
        assert!((mean - 0.505).abs() < 0.005, "{mean}");
        let (top, bottom) = (rs.iter().filter(|&&r| r > 0.58).count(), rs.iter().filter(|&&r| r < 0.42).count());
        assert!(top > bottom, "{top} vs {bottom}");
        assert!(TokenMask::draw_ratio(0.6, 0.4, &mut rng).is_err());
    }

    #[test]
    fn masks_count_and_orders_are_checked() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let m = TokenMask::draw(3, 256, 0.4, 0.6, &mut rng).unwrap();
        let k = m.masked_per_sample();
        assert!((103..=154).contains(&k));
        for s in 0..3 {
            assert_eq!(m.mask[s * 256..(s + 1) * 256].iter().filter(|&&v| v == 1.0).count(), k);
        }
        assert_ne!(m.mask[..256], m.mask[256..512], "each sample has its own order");
        assert!(TokenMask::from_orders(&[vec![0, 0, 1]], 3, 0.5).is_err());
        assert!(TokenMask::from_orders(&[vec![0, 1]], 3, 0.5).is_err());
        assert!(TokenMask::from_orders(&[vec![2, 0, 1]], 3, 1.5).is_err());
        assert_eq!(TokenMask::from_orders(&[vec![2, 0, 1]], 3, 0.5).unwrap().mask, vec![1.0, 0.0, 1.0]);
    }
}
