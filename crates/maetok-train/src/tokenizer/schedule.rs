//! The tokenizer trainer's learning rate (spec §5.6): timm's `CosineLRScheduler` as the reference
//! builds it (`create_scheduler_v2(sched='cosine', warmup_epochs=2, min_lr=0.1·lr,
//! warmup_lr_init=1e-5, warmup_prefix=False, step_on_epochs=False)`, `step_update(t)` after every
//! optimiser step), and the reference's batch scaling `lr = yaml_lr · global_batch / 256`.
//!
//! ```text
//! t <  W:  lr_t = warmup_init + t·(lr − warmup_init)/W
//! t >= W:  lr_t = lr_min + ½·(lr − lr_min)·(1 + cos(π·t/T))      (warm-up not a prefix: the
//!                                                                cosine counts from t = 0)
//! ```
//! The generator and the discriminator each follow one such schedule.

/// The reference's learning-rate schedule, in optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CosineWarmup {
    /// Peak rate (after batch scaling).
    pub lr: f64,
    /// Floor of the cosine (the reference: 0.1·lr).
    pub lr_min: f64,
    /// Rate at t = 0 (timm's default 1e-5).
    pub warmup_init: f64,
    /// Warm-up length W (the reference: 2 epochs of steps).
    pub warmup_steps: u64,
    /// Cosine period T (the reference: all epochs of steps).
    pub total_steps: u64,
}

impl CosineWarmup {
    /// The reference's schedule for `lr` over `epochs` epochs of `steps_per_epoch`, with
    /// `warmup_epochs` of warm-up.
    pub fn reference(lr: f64, steps_per_epoch: u64, epochs: u64, warmup_epochs: u64) -> Self {
        Self {
            lr,
            lr_min: 0.1 * lr,
            warmup_init: 1e-5,
            warmup_steps: warmup_epochs * steps_per_epoch,
            total_steps: (epochs * steps_per_epoch).max(1),
        }
    }

    /// The rate for the update after `t` completed optimiser steps (the first update uses
    /// `t = 0`, i.e. `warmup_init`).
    pub fn lr(&self, t: u64) -> f64 {
        if t < self.warmup_steps {
            return self.warmup_init + t as f64 * (self.lr - self.warmup_init) / self.warmup_steps as f64;
        }
        let phase = std::f64::consts::PI * t as f64 / self.total_steps as f64;
        // timm keeps the floor once the cycle ends (t > T, single cycle).
        if t >= self.total_steps {
            return self.lr_min;
        }
        self.lr_min + 0.5 * (self.lr - self.lr_min) * (1.0 + phase.cos())
    }
}

/// `yaml_lr · global_batch / 256` (the reference's linear scaling rule).
pub fn scaled_lr(yaml_lr: f64, global_batch: usize) -> f64 {
    yaml_lr * global_batch as f64 / 256.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_formulas() {
        // Fork yaml: 5e-5 at batch 256; 10 steps per epoch, 200 epochs, 2 warm-up epochs.
        let s = CosineWarmup::reference(scaled_lr(5e-5, 256), 10, 200, 2);
        assert_eq!((s.warmup_steps, s.total_steps), (20, 2000));
        assert_eq!(s.lr(0), 1e-5);
        assert!((s.lr(10) - (1e-5 + 10.0 * (5e-5 - 1e-5) / 20.0)).abs() < 1e-18);
        // Not a prefix: at t = W the cosine is already at phase π·W/T, just below the peak.
        let at_w = 5e-6 + 0.5 * (5e-5 - 5e-6) * (1.0 + (std::f64::consts::PI * 20.0 / 2000.0).cos());
        assert!((s.lr(20) - at_w).abs() < 1e-18 && s.lr(20) < 5e-5);
        assert!((s.lr(1000) - (5e-6 + 0.5 * 4.5e-5)).abs() < 1e-15, "half period is the midpoint");
        assert_eq!(s.lr(2000), 5e-6);
        assert_eq!(s.lr(10_000), 5e-6);
        // Upstream yaml: 1e-4 at batch 512 → 2e-4.
        assert!((scaled_lr(1e-4, 512) - 2e-4).abs() < 1e-18);
        // Monotone warm-up, monotone decay.
        assert!((1..20).all(|t| s.lr(t) > s.lr(t - 1)));
        assert!((21..2000).all(|t| s.lr(t) <= s.lr(t - 1)));
    }
}
