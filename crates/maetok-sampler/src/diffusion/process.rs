//! The Gaussian diffusion process (IDDPM/DiT `GaussianDiffusion` with `SpacedDiffusion`) in the
//! reference's numerics: f64 tables, per-step arithmetic in f32 (a table entry is cast when it
//! is extracted), ε prediction with the learned-range variance. Latents are `[B, L, C]`; the
//! model output is `[B, L, 2C]` = `[ε̂ | v]`.

use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};

use super::likelihood::{discretized_gaussian_log_likelihood, normal_kl};
use super::schedule::{betas, space_timesteps, Schedule};
use crate::SamplerError;

/// Tables of a (possibly respaced) diffusion, f64, index k = 0 (least noisy) .. N−1.
#[derive(Debug, Clone)]
pub struct GaussianDiffusion {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub sqrt_alphas_cumprod: Vec<f64>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    pub posterior_variance: Vec<f64>,
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
    pub log_betas: Vec<f64>,
    /// Original step index the model sees at respaced index k.
    pub timestep_map: Vec<usize>,
    /// Steps of the un-respaced process (`T`, 1000 in the reference).
    pub train_steps: usize,
}

/// `p(x_{k−1} | x_k)` as the model predicts it.
#[derive(Debug, Clone)]
pub struct ReverseStep<B: Backend> {
    /// `[B, L, C]` each.
    pub mean: Tensor<B, 3>,
    pub log_variance: Tensor<B, 3>,
    pub pred_xstart: Tensor<B, 3>,
}

impl GaussianDiffusion {
    /// Tables from β's; `timestep_map[k]` is the step the model is told.
    pub fn from_betas(betas: Vec<f64>, timestep_map: Vec<usize>, train_steps: usize) -> Self {
        let n = betas.len();
        let mut ac = Vec::with_capacity(n);
        let mut p = 1.0;
        for b in &betas {
            p *= 1.0 - b;
            ac.push(p);
        }
        let prev: Vec<f64> = std::iter::once(1.0).chain(ac[..n - 1].iter().copied()).collect();
        let pv: Vec<f64> = (0..n).map(|i| betas[i] * (1.0 - prev[i]) / (1.0 - ac[i])).collect();
        // The posterior variance is 0 at k = 0: its log is clipped to the value at k = 1.
        let lv: Vec<f64> = (0..n).map(|i| if i == 0 { pv.get(1).copied().unwrap_or(pv[0]).ln() } else { pv[i].ln() }).collect();
        Self {
            alphas_cumprod_prev: prev.clone(),
            sqrt_alphas_cumprod: ac.iter().map(|a| a.sqrt()).collect(),
            sqrt_one_minus_alphas_cumprod: ac.iter().map(|a| (1.0 - a).sqrt()).collect(),
            sqrt_recip_alphas_cumprod: ac.iter().map(|a| (1.0 / a).sqrt()).collect(),
            sqrt_recipm1_alphas_cumprod: ac.iter().map(|a| (1.0 / a - 1.0).sqrt()).collect(),
            posterior_mean_coef1: (0..n).map(|i| betas[i] * prev[i].sqrt() / (1.0 - ac[i])).collect(),
            posterior_mean_coef2: (0..n).map(|i| (1.0 - prev[i]) * (1.0 - betas[i]).sqrt() / (1.0 - ac[i])).collect(),
            posterior_variance: pv,
            posterior_log_variance_clipped: lv,
            log_betas: betas.iter().map(|b| b.ln()).collect(),
            alphas_cumprod: ac,
            betas,
            timestep_map,
            train_steps,
        }
    }

    /// The reference's `create_diffusion(respacing, schedule)` over `t` base steps: the kept
    /// steps' ᾱ define new β's.
    pub fn new(schedule: Schedule, t: usize, respacing: &str) -> Result<Self, SamplerError> {
        let base = Self::from_betas(betas(schedule, t), (0..t).collect(), t);
        let keep = space_timesteps(t, respacing)?;
        let mut last = 1.0;
        let mut spaced = Vec::with_capacity(keep.len());
        for &i in &keep {
            spaced.push(1.0 - base.alphas_cumprod[i] / last);
            last = base.alphas_cumprod[i];
        }
        Ok(Self::from_betas(spaced, keep, t))
    }

    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }

    /// `table[k_b]` cast to f32, as `[B, 1, 1]`.
    fn extract<B: Backend>(table: &[f64], k: &[usize], device: &B::Device) -> Tensor<B, 3> {
        let v: Vec<f32> = k.iter().map(|&i| table[i] as f32).collect();
        Tensor::from_data(TensorData::new(v, [k.len(), 1, 1]), device)
    }

    /// The steps the model is told at respaced indices `k`, as floats `[B]`.
    pub fn model_times<B: Backend>(&self, k: &[usize], device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(k.iter().map(|&i| self.timestep_map[i] as f32).collect::<Vec<_>>(), [k.len()]), device)
    }

    /// Forward process `x_k = √ᾱ_k·x0 + √(1−ᾱ_k)·ε`.
    pub fn q_sample<B: Backend>(&self, x0: Tensor<B, 3>, k: &[usize], noise: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = x0.device();
        Self::extract::<B>(&self.sqrt_alphas_cumprod, k, &d) * x0 + Self::extract::<B>(&self.sqrt_one_minus_alphas_cumprod, k, &d) * noise
    }

    /// The true posterior `q(x_{k−1} | x_k, x0)`: `(mean, log_variance_clipped)`.
    pub fn q_posterior_mean_variance<B: Backend>(&self, x0: Tensor<B, 3>, x_t: Tensor<B, 3>, k: &[usize]) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let d = x0.device();
        let mean = Self::extract::<B>(&self.posterior_mean_coef1, k, &d) * x0 + Self::extract::<B>(&self.posterior_mean_coef2, k, &d) * x_t;
        (mean, Self::extract::<B>(&self.posterior_log_variance_clipped, k, &d))
    }

    /// `x0 = √(1/ᾱ)·x_k − √(1/ᾱ − 1)·ε`.
    pub fn predict_xstart_from_eps<B: Backend>(&self, x_t: Tensor<B, 3>, k: &[usize], eps: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = x_t.device();
        Self::extract::<B>(&self.sqrt_recip_alphas_cumprod, k, &d) * x_t
            - Self::extract::<B>(&self.sqrt_recipm1_alphas_cumprod, k, &d) * eps
    }

    /// `ε = (√(1/ᾱ)·x_k − x0) / √(1/ᾱ − 1)`.
    pub fn predict_eps_from_xstart<B: Backend>(&self, x_t: Tensor<B, 3>, k: &[usize], x0: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = x_t.device();
        (Self::extract::<B>(&self.sqrt_recip_alphas_cumprod, k, &d) * x_t - x0)
            / Self::extract::<B>(&self.sqrt_recipm1_alphas_cumprod, k, &d)
    }

    /// The learned-range log-variance: `v ∈ [−1, 1]` interpolates between the clipped posterior
    /// log-variance (`v = −1`) and `log β` (`v = 1`).
    pub fn learned_range_log_variance<B: Backend>(&self, v: Tensor<B, 3>, k: &[usize]) -> Tensor<B, 3> {
        let d = v.device();
        let min_log = Self::extract::<B>(&self.posterior_log_variance_clipped, k, &d);
        let max_log = Self::extract::<B>(&self.log_betas, k, &d);
        let frac = (v + 1.0) / 2.0;
        frac.clone() * max_log + (frac.neg() + 1.0) * min_log
    }

    /// `p(x_{k−1} | x_k)` from the model output `[ε̂ | v]` `[B, L, 2C]` at `x` `[B, L, C]`.
    pub fn p_mean_variance<B: Backend>(&self, out: Tensor<B, 3>, x: Tensor<B, 3>, k: &[usize]) -> ReverseStep<B> {
        let c = x.dims()[2];
        let eps = out.clone().narrow(2, 0, c);
        let log_variance = self.learned_range_log_variance(out.narrow(2, c, c), k);
        let pred_xstart = self.predict_xstart_from_eps(x.clone(), k, eps);
        let (mean, _) = self.q_posterior_mean_variance(pred_xstart.clone(), x, k);
        ReverseStep { mean, log_variance, pred_xstart }
    }

    /// The variational-bound term `[B]` in bits per dimension (`_vb_terms_bpd`): the KL between
    /// the true posterior and the model's reverse step, or at k = 0 the decoder NLL of `x0`.
    pub fn vb_terms_bpd<B: Backend>(&self, out: Tensor<B, 3>, x0: Tensor<B, 3>, x_t: Tensor<B, 3>, k: &[usize]) -> Tensor<B, 1> {
        let [b, l, c] = x0.dims();
        let d = x0.device();
        let (true_mean, true_log_variance) = self.q_posterior_mean_variance(x0.clone(), x_t.clone(), k);
        let p = self.p_mean_variance(out, x_t, k);
        let mean_flat = |t: Tensor<B, 3>| t.reshape([b, l * c]).mean_dim(1).reshape([b]);
        let ln2 = std::f64::consts::LN_2;
        let kl = mean_flat(normal_kl(true_mean, true_log_variance, p.mean.clone(), p.log_variance.clone())) / ln2;
        let nll = mean_flat(discretized_gaussian_log_likelihood(x0, p.mean, p.log_variance * 0.5).neg()) / ln2;
        let at_zero: Tensor<B, 1, Bool> =
            Tensor::<B, 1, Int>::from_data(TensorData::new(k.iter().map(|&i| i as i64).collect::<Vec<_>>(), [b]), &d).equal_elem(0);
        kl.mask_where(at_zero, nll)
    }
}
