//! Ancestral (`p_sample_loop`) and DDIM (`ddim_sample_loop`) sampling over a (respaced)
//! diffusion, with classifier-free guidance on ε (the DiT reference's `forward_with_cfg`).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::process::GaussianDiffusion;
use crate::guidance::guided_prediction;
use crate::sample::NoiseSource;
use crate::{Denoiser, Guidance, SamplerError};

/// One step of a sampling run (for inspection and tests).
#[derive(Debug, Clone)]
pub struct StepRecord<B: Backend> {
    /// Respaced step index (counts down).
    pub k: usize,
    /// The step the model was told.
    pub model_t: usize,
    /// `[B, L, 2C]` the (guided) model output.
    pub model_out: Tensor<B, 3>,
    /// `[B, L, C]` each.
    pub pred_xstart: Tensor<B, 3>,
    pub sample: Tensor<B, 3>,
}

/// How the next state follows from the model output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// `x = μ + exp(½·log σ²)·z` (none at k = 0).
    Ancestral,
    /// DDIM with `eta` (0: deterministic).
    Ddim { eta: f64 },
}

impl GaussianDiffusion {
    /// Runs the reverse process from `x_T` `[B, L, C]` for labels `y` `[B]`. The noise `z` of
    /// every step is drawn (and masked at k = 0), as the reference does. Guidance applies while
    /// `guidance.active(model_t / T)`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_loop<B: Backend, M: Denoiser<B> + ?Sized>(
        &self,
        model: &M,
        x_t: Tensor<B, 3>,
        y: Tensor<B, 1, Int>,
        update: Update,
        guidance: Guidance,
        noise: &mut NoiseSource,
        mut on_step: impl FnMut(StepRecord<B>),
    ) -> Result<Tensor<B, 3>, SamplerError> {
        let device = x_t.device();
        let [b, l, c] = x_t.dims();
        let mut x = x_t;
        for k in (0..self.num_steps()).rev() {
            let ks = vec![k; b];
            let model_t = self.timestep_map[k];
            let scale = if guidance.active(model_t as f64 / self.train_steps as f64) { guidance.scale } else { 1.0 };
            let out = guided_prediction(model, x.clone(), self.model_times(&ks, &device), y.clone(), scale, c);
            if out.dims()[2] != 2 * c {
                return Err(SamplerError::Channels { got: out.dims()[2], want: 2 * c });
            }
            let p = self.p_mean_variance(out.clone(), x.clone(), &ks);
            let draws = noise(b * l * c);
            if draws.len() != b * l * c {
                return Err(SamplerError::Noise { got: draws.len(), want: b * l * c });
            }
            let z = Tensor::<B, 3>::from_data(TensorData::new(draws.into_iter().map(|v| v as f32).collect::<Vec<_>>(), [b, l, c]), &device);
            x = match update {
                Update::Ancestral => {
                    if k == 0 {
                        p.mean
                    } else {
                        p.mean + (p.log_variance * 0.5).exp() * z
                    }
                }
                Update::Ddim { eta } => self.ddim_step(x, p.pred_xstart.clone(), &ks, eta, z),
            };
            on_step(StepRecord { k, model_t, model_out: out, pred_xstart: p.pred_xstart, sample: x.clone() });
        }
        Ok(x)
    }

    /// `x_{k−1} = x0·√ᾱ' + √(1 − ᾱ' − σ²)·ε + σ·z` with
    /// `σ = η·√((1 − ᾱ')/(1 − ᾱ))·√(1 − ᾱ/ᾱ')` (no noise term at k = 0).
    fn ddim_step<B: Backend>(&self, x: Tensor<B, 3>, x0: Tensor<B, 3>, ks: &[usize], eta: f64, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = x.device();
        let eps = self.predict_eps_from_xstart(x, ks, x0.clone());
        let table = |t: &[f64]| {
            let v: Vec<f32> = ks.iter().map(|&i| t[i] as f32).collect();
            Tensor::<B, 3>::from_data(TensorData::new(v, [ks.len(), 1, 1]), &d)
        };
        let ab = table(&self.alphas_cumprod);
        let abp = table(&self.alphas_cumprod_prev);
        let sigma = ((abp.clone().neg() + 1.0) / (ab.clone().neg() + 1.0)).sqrt() * (ab / abp.clone()).neg().add_scalar(1.0).sqrt() * eta;
        let mean = x0 * abp.clone().sqrt() + (abp.neg() + 1.0 - sigma.clone().powi_scalar(2)).sqrt() * eps;
        if ks[0] == 0 {
            mean
        } else {
            mean + sigma * z
        }
    }
}
