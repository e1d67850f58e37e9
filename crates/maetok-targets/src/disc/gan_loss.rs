//! The GAN objective of MAETok's tokenizer training (`losses/vq_loss.py`, spec §5.1, §5.5):
//! hinge losses, LeCam regularisation with its EMA anchors, the consistency term, and the
//! schedule of their weights.
//!
//! Discriminator step `t` (1-based, `t = train_steps + 1`), logits `lr = D(aug(x))`,
//! `lf = D(aug(x̂))`:
//!
//! ```text
//! ema_r ← d·ema_r + (1−d)·mean(lr);  ema_f ← d·ema_f + (1−d)·mean(lf)     (every step, first)
//! lecam = mean(relu(lr − ema_f)²) + mean(relu(ema_r − lf)²)
//! hinge = ½·(mean(relu(1 − lr)) + mean(relu(1 + lf)))
//! L_D   = w_d(t)·(hinge + 0.001·lecam) [+ 4·mean(([lr; lf] − [D(strong x); D(strong x̂)])²) if t ≥ start]
//! ```
//! Generator: `g = −mean(D(aug(x̂)))`, weighted by `λ·w_d(t)` with the adaptive
//! `λ = clamp(‖∇rec‖ / (‖∇g‖ + 1e-4), 0, 1e4)` on the last decoder layer.

use burn::tensor::{activation::relu, backend::Backend, ElementConversion, Tensor};

/// Hinge discriminator loss `½·(mean(relu(1 − lr)) + mean(relu(1 + lf)))` → `[1]`.
pub fn hinge_d_loss<B: Backend>(logits_real: Tensor<B, 2>, logits_fake: Tensor<B, 2>) -> Tensor<B, 1> {
    (relu(logits_real.neg() + 1.0).mean() + relu(logits_fake + 1.0).mean()) * 0.5
}

/// Hinge generator loss `−mean(lf)` → `[1]`.
pub fn hinge_g_loss<B: Backend>(logits_fake: Tensor<B, 2>) -> Tensor<B, 1> {
    logits_fake.mean().neg()
}

/// LeCam regularisation: EMA anchors of the mean real and fake logits (Python floats in the
/// reference, starting at 0) and the penalty against them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeCam {
    pub ema_real: f64,
    pub ema_fake: f64,
    pub decay: f64,
}

impl Default for LeCam {
    fn default() -> Self {
        Self { ema_real: 0.0, ema_fake: 0.0, decay: 0.999 }
    }
}

impl LeCam {
    /// Moves the anchors with this step's mean logits.
    pub fn update(&mut self, mean_real: f64, mean_fake: f64) {
        self.ema_real = self.decay * self.ema_real + (1.0 - self.decay) * mean_real;
        self.ema_fake = self.decay * self.ema_fake + (1.0 - self.decay) * mean_fake;
    }

    /// `mean(relu(lr − ema_f)²) + mean(relu(ema_r − lf)²)` with the current anchors → `[1]`.
    pub fn penalty<B: Backend>(&self, logits_real: Tensor<B, 2>, logits_fake: Tensor<B, 2>) -> Tensor<B, 1> {
        relu(logits_real - self.ema_fake).powi_scalar(2).mean() + relu(logits_fake.neg() + self.ema_real).powi_scalar(2).mean()
    }
}

/// Consistency regularisation `mean((weak − strong)²)` over the concatenated real and fake
/// logits → `[1]`; gradients flow through both sides, as in the reference.
pub fn consistency_loss<B: Backend>(weak: Tensor<B, 2>, strong: Tensor<B, 2>) -> Tensor<B, 1> {
    (weak - strong).powi_scalar(2).mean()
}

/// Weights and switch-on steps of the GAN terms (reference values in [`Default`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GanWeights {
    /// `w_d` once `step ≥ disc_start`.
    pub disc_weight: f64,
    pub disc_start: u64,
    pub lecam_weight: f64,
    pub cr_weight: f64,
    /// LPIPS warm-up length: `w_p(t) = min(1, t / perceptual_warmup)`.
    pub perceptual_warmup: u64,
    pub perceptual_weight: f64,
    /// Upper clamp of the adaptive weight λ.
    pub max_adaptive_weight: f64,
    /// `disc_adaptive_weight`: λ from the gradient norms (MAETok's recipe); off, λ = 1.
    #[serde(default = "adaptive_default")]
    pub adaptive: bool,
}

fn adaptive_default() -> bool {
    true
}

impl Default for GanWeights {
    fn default() -> Self {
        Self {
            disc_weight: 0.4,
            disc_start: 30_000,
            lecam_weight: 0.001,
            cr_weight: 4.0,
            perceptual_warmup: 10_000,
            perceptual_weight: 1.0,
            max_adaptive_weight: 1e4,
            adaptive: true,
        }
    }
}

impl GanWeights {
    /// `w_d(t)`: 0 before `disc_start`.
    pub fn disc_factor(&self, step: u64) -> f64 {
        if step >= self.disc_start {
            self.disc_weight
        } else {
            0.0
        }
    }

    /// `w_p(t) = min(1, t / warmup) · perceptual_weight`.
    pub fn perceptual_factor(&self, step: u64) -> f64 {
        let ramp = if self.perceptual_warmup == 0 { 1.0 } else { (step as f64 / self.perceptual_warmup as f64).min(1.0) };
        ramp * self.perceptual_weight
    }

    /// The adaptive GAN weight `λ = clamp(‖∇_W nll‖ / (‖∇_W g‖ + 1e-4), 0, max)` from the two
    /// gradient norms on the decoder's last layer; 1 when `adaptive` is off.
    pub fn adaptive_weight(&self, nll_grad_norm: f64, g_grad_norm: f64) -> f64 {
        if !self.adaptive {
            return 1.0;
        }
        (nll_grad_norm / (g_grad_norm + 1e-4)).clamp(0.0, self.max_adaptive_weight)
    }
}

/// The terms of one discriminator loss.
pub struct DiscLoss<B: Backend> {
    /// What to back-propagate `[1]`.
    pub total: Tensor<B, 1>,
    pub hinge: Tensor<B, 1>,
    pub lecam: Tensor<B, 1>,
    /// Present once the consistency term is on.
    pub consistency: Option<Tensor<B, 1>>,
}

/// The discriminator loss at step `t` from the weakly augmented logits, updating the LeCam
/// anchors first. `strong`: logits of the strongly augmented real and fake images
/// (`[lr_s; lf_s]` in that order), used from `disc_start` on.
pub fn discriminator_loss<B: Backend>(
    weights: &GanWeights,
    step: u64,
    lecam: &mut LeCam,
    logits_real: Tensor<B, 2>,
    logits_fake: Tensor<B, 2>,
    strong: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
) -> DiscLoss<B> {
    let mean = |t: &Tensor<B, 2>| t.clone().mean().into_scalar().elem::<f64>();
    lecam.update(mean(&logits_real), mean(&logits_fake));
    let penalty = lecam.penalty(logits_real.clone(), logits_fake.clone());
    let hinge = hinge_d_loss(logits_real.clone(), logits_fake.clone());
    let mut total = (hinge.clone() + penalty.clone() * weights.lecam_weight) * weights.disc_factor(step);
    let mut consistency = None;
    if step >= weights.disc_start {
        if let Some((sr, sf)) = strong {
            let cr = consistency_loss(Tensor::cat(vec![logits_real, logits_fake], 0), Tensor::cat(vec![sr, sf], 0));
            total = total + cr.clone() * weights.cr_weight;
            consistency = Some(cr);
        }
    }
    DiscLoss { total, hinge, lecam: penalty, consistency }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn t(v: &[f32]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &Default::default())
    }

    fn s(x: Tensor<B, 1>) -> f64 {
        x.into_scalar() as f64
    }

    #[test]
    fn hinge_values() {
        // relu(1 - [2, 0.5, -1]) = [0, 0.5, 2] → mean 5/6; relu(1 + [-2, 0]) = [0, 1] → 0.5.
        let d = s(hinge_d_loss(t(&[2.0, 0.5, -1.0]), t(&[-2.0, 0.0])));
        assert!((d - 0.5 * (5.0 / 6.0 + 0.5)).abs() < 1e-6);
        assert!((s(hinge_g_loss(t(&[1.0, 3.0]))) + 2.0).abs() < 1e-6);
    }

    #[test]
    fn lecam_anchors_and_penalty() {
        let mut l = LeCam::default();
        l.update(1.0, -1.0);
        assert!((l.ema_real - 0.001).abs() < 1e-12 && (l.ema_fake + 0.001).abs() < 1e-12);
        l.update(1.0, -1.0);
        assert!((l.ema_real - (0.999 * 0.001 + 0.001)).abs() < 1e-12);
        let l = LeCam { ema_real: 0.5, ema_fake: -0.5, decay: 0.999 };
        // relu([1, -1] + 0.5)² = [2.25, 0] → 1.125; relu(0.5 − [0, 2])² = [0.25, 0] → 0.125.
        assert!((s(l.penalty(t(&[1.0, -1.0]), t(&[0.0, 2.0]))) - 1.25).abs() < 1e-6);
    }

    #[test]
    fn schedule_and_total() {
        let w = GanWeights::default();
        assert_eq!(w.disc_factor(29_999), 0.0);
        assert_eq!(w.disc_factor(30_000), 0.4);
        assert_eq!(w.perceptual_factor(5_000), 0.5);
        assert_eq!(w.perceptual_factor(20_000), 1.0);
        assert!((w.adaptive_weight(0.5, 0.0) - 5000.0).abs() < 1e-6);
        assert!((w.adaptive_weight(3.0, 1.0) - 3.0 / 1.0001).abs() < 1e-12);
        assert_eq!(w.adaptive_weight(1e9, 0.0), 1e4);
        let fixed = GanWeights { adaptive: false, ..w.clone() };
        assert_eq!(fixed.adaptive_weight(0.5, 0.0), 1.0);
        // Before disc_start the loss is exactly 0 but the LeCam anchors still move.
        let mut l = LeCam::default();
        let out = discriminator_loss(&w, 10, &mut l, t(&[0.3]), t(&[-0.2]), Some((t(&[0.0]), t(&[0.0]))));
        assert_eq!(s(out.total), 0.0);
        assert!(out.consistency.is_none());
        assert!(l.ema_real > 0.0);
        // From disc_start on: 0.4·(hinge + 0.001·lecam) + 4·CR.
        let mut l = LeCam::default();
        let out = discriminator_loss(&w, 30_000, &mut l, t(&[0.3]), t(&[-0.2]), Some((t(&[0.1]), t(&[0.2]))));
        let hinge = 0.5 * (0.7 + 0.8);
        let (er, ef) = (0.3e-3, -0.2e-3);
        let lecam = f64::powi(0.3f64 - ef, 2) + f64::powi(er + 0.2, 2);
        let cr = (0.04 + 0.16) / 2.0;
        let want = 0.4 * (hinge + 0.001 * lecam) + 4.0 * cr;
        let got = s(out.total);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
