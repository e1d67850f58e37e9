//! Gaussian diffusion (IDDPM/DiT) in the reference's numerics: f64 tables, per-step arithmetic in
//! f32 (tables are cast when extracted), ε prediction with the learned-range variance.
//! Latents are `[B, L, C]`; the model returns `[B, L, 2C]` = `[ε̂ | v]`.

use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};

/// β schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `linspace(1e-4·k, 0.02·k, T)`, `k = 1000/T`.
    Linear,
    /// IDDPM cosine, clipped at 0.999.
    Cosine,
}

/// The β's of `schedule` over `t` steps, f64.
pub fn betas(schedule: Schedule, t: usize) -> Vec<f64> {
    match schedule {
        Schedule::Linear => {
            let k = 1000.0 / t as f64;
            let (a, b) = (1e-4 * k, 0.02 * k);
            // np.linspace: i·step + start, the last entry exactly `stop`.
            let step = (b - a) / (t - 1) as f64;
            (0..t).map(|i| if i == t - 1 { b } else { i as f64 * step + a }).collect()
        }
        Schedule::Cosine => {
            let f = |s: f64| ((s + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
            (0..t).map(|i| (1.0 - f((i + 1) as f64 / t as f64) / f(i as f64 / t as f64)).min(0.999)).collect()
        }
    }
}

/// The kept steps of a respacing spec (`"250"`, `"10,15,20"` per section, `"ddim25"`), as the
/// reference's `space_timesteps`: fractional strides accumulated by repeated addition and
/// rounded half-to-even. Empty spec: all steps.
pub fn space_timesteps(t: usize, spec: &str) -> Result<Vec<usize>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok((0..t).collect());
    }
    if let Some(n) = spec.strip_prefix("ddim") {
        let n: usize = n.parse().map_err(|_| format!("bad respacing '{spec}'"))?;
        for i in 1..t {
            if (0..t).step_by(i).count() == n {
                return Ok((0..t).step_by(i).collect());
            }
        }
        return Err(format!("cannot create exactly {n} steps with an integer stride over {t}"));
    }
    let counts: Vec<usize> = spec.split(',').map(|c| c.trim().parse::<usize>().map_err(|_| format!("bad respacing '{spec}'"))).collect::<Result<_, _>>()?;
    let (per, extra) = (t / counts.len(), t % counts.len());
    let mut start = 0;
    let mut all = Vec::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = per + usize::from(i < extra);
        if size < count {
            return Err(format!("cannot divide a section of {size} steps into {count}"));
        }
        let stride = if count <= 1 { 1.0 } else { (size - 1) as f64 / (count - 1) as f64 };
        let mut cur = 0.0f64;
        for _ in 0..count {
            all.push(start + cur.round_ties_even() as usize);
            cur += stride;
        }
        start += size;
    }
    all.sort();
    all.dedup();
    Ok(all)
}

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
}

/// One step of a sampling run (for inspection and tests).
#[derive(Debug, Clone)]
pub struct StepRecord<B: Backend> {
    pub k: usize,
    pub model_out: Tensor<B, 3>,
    pub pred_xstart: Tensor<B, 3>,
    pub sample: Tensor<B, 3>,
}

/// Per-sample hybrid loss terms.
#[derive(Debug, Clone)]
pub struct HybridLoss<B: Backend> {
    /// `[B]` mean squared ε error.
    pub mse: Tensor<B, 1>,
    /// `[B]` variational bound term (bits/dim; decoder NLL at t = 0), gradients to `v` only.
    pub vb: Tensor<B, 1>,
    /// `[B]` `mse + vb`.
    pub loss: Tensor<B, 1>,
    pub x_t: Tensor<B, 3>,
    pub model_output: Tensor<B, 3>,
}

impl GaussianDiffusion {
    /// Tables from β's; `timestep_map[k]` is the step the model is told.
    pub fn from_betas(betas: Vec<f64>, timestep_map: Vec<usize>) -> Self {
        let n = betas.len();
        let mut ac = Vec::with_capacity(n);
        let mut p = 1.0;
        for b in &betas {
            p *= 1.0 - b;
            ac.push(p);
        }
        let prev: Vec<f64> = std::iter::once(1.0).chain(ac[..n - 1].iter().copied()).collect();
        let pv: Vec<f64> = (0..n).map(|i| betas[i] * (1.0 - prev[i]) / (1.0 - ac[i])).collect();
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
        }
    }

    /// `create_diffusion(respacing, schedule)` over `t` base steps.
    pub fn new(schedule: Schedule, t: usize, respacing: &str) -> Result<Self, String> {
        let base = Self::from_betas(betas(schedule, t), (0..t).collect());
        let keep = space_timesteps(t, respacing)?;
        let mut last = 1.0;
        let mut nb = Vec::new();
        for &i in &keep {
            nb.push(1.0 - base.alphas_cumprod[i] / last);
            last = base.alphas_cumprod[i];
        }
        Ok(Self::from_betas(nb, keep))
    }

    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }

    /// `table[k_b]` cast to f32, as `[B, 1, 1]`.
    fn extract<B: Backend>(table: &[f64], k: &[usize], device: &B::Device) -> Tensor<B, 3> {
        let v: Vec<f32> = k.iter().map(|&i| table[i] as f32).collect();
        Tensor::from_data(TensorData::new(v, [k.len(), 1, 1]), device)
    }

    fn model_steps<B: Backend>(&self, k: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
        Tensor::from_data(TensorData::new(k.iter().map(|&i| self.timestep_map[i] as i64).collect::<Vec<_>>(), [k.len()]), device)
    }

    /// `(mean, log_variance, pred_xstart)` of `p(x_{k−1} | x_k)` from the model output `[ε̂ | v]`.
    pub fn p_mean_variance<B: Backend>(&self, out: Tensor<B, 3>, x: Tensor<B, 3>, k: &[usize]) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        let d = x.device();
        let c = x.dims()[2];
        let eps = out.clone().narrow(2, 0, c);
        let v = out.narrow(2, c, c);
        let min_log = Self::extract::<B>(&self.posterior_log_variance_clipped, k, &d);
        let max_log = Self::extract::<B>(&self.log_betas, k, &d);
        let frac = (v + 1.0) / 2.0;
        let log_var = frac.clone() * max_log + (frac.neg() + 1.0) * min_log;
        let x0 = Self::extract::<B>(&self.sqrt_recip_alphas_cumprod, k, &d) * x.clone() - Self::extract::<B>(&self.sqrt_recipm1_alphas_cumprod, k, &d) * eps;
        let mean = Self::extract::<B>(&self.posterior_mean_coef1, k, &d) * x0.clone() + Self::extract::<B>(&self.posterior_mean_coef2, k, &d) * x;
        (mean, log_var, x0)
    }

    /// Ancestral sampling from `x_T` `[B, L, C]`: `model(x, τ_k)` returns `[ε̂ | v]`;
    /// `noise(k)` gives the step's standard normal draws (drawn at every step, masked at k = 0).
    pub fn p_sample_loop<B: Backend>(&self, x_t: Tensor<B, 3>, mut model: impl FnMut(Tensor<B, 3>, Tensor<B, 1, Int>) -> Tensor<B, 3>, mut noise: impl FnMut(usize) -> Tensor<B, 3>, mut on_step: impl FnMut(StepRecord<B>)) -> Tensor<B, 3> {
        let d = x_t.device();
        let b = x_t.dims()[0];
        let mut x = x_t;
        for k in (0..self.num_steps()).rev() {
            let ks = vec![k; b];
            let out = model(x.clone(), self.model_steps(&ks, &d));
            let (mean, log_var, x0) = self.p_mean_variance(out.clone(), x.clone(), &ks);
            let z = noise(k);
            x = if k == 0 { mean } else { mean + (log_var * 0.5).exp() * z };
            on_step(StepRecord { k, model_out: out, pred_xstart: x0, sample: x.clone() });
        }
        x
    }

    /// DDIM sampling with `eta` (0: deterministic); noise drawn at every step.
    pub fn ddim_sample_loop<B: Backend>(&self, x_t: Tensor<B, 3>, eta: f64, mut model: impl FnMut(Tensor<B, 3>, Tensor<B, 1, Int>) -> Tensor<B, 3>, mut noise: impl FnMut(usize) -> Tensor<B, 3>, mut on_step: impl FnMut(StepRecord<B>)) -> Tensor<B, 3> {
        let d = x_t.device();
        let b = x_t.dims()[0];
        let mut x = x_t;
        for k in (0..self.num_steps()).rev() {
            let ks = vec![k; b];
            let out = model(x.clone(), self.model_steps(&ks, &d));
            let (_, _, x0) = self.p_mean_variance(out.clone(), x.clone(), &ks);
            let eps = (Self::extract::<B>(&self.sqrt_recip_alphas_cumprod, &ks, &d) * x.clone() - x0.clone()) / Self::extract::<B>(&self.sqrt_recipm1_alphas_cumprod, &ks, &d);
            let ab = Self::extract::<B>(&self.alphas_cumprod, &ks, &d);
            let abp = Self::extract::<B>(&self.alphas_cumprod_prev, &ks, &d);
            let sigma = ((abp.clone().neg() + 1.0) / (ab.clone().neg() + 1.0)).sqrt() * (ab / abp.clone()).neg().add_scalar(1.0).sqrt() * eta;
            let z = noise(k);
            let mean = x0.clone() * abp.clone().sqrt() + (abp.neg() + 1.0 - sigma.clone().powi_scalar(2)).sqrt() * eps;
            x = if k == 0 { mean } else { mean + sigma * z };
            on_step(StepRecord { k, model_out: out, pred_xstart: x0, sample: x.clone() });
        }
        x
    }

    /// `x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε`.
    pub fn q_sample<B: Backend>(&self, x0: Tensor<B, 3>, k: &[usize], noise: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = x0.device();
        Self::extract::<B>(&self.sqrt_alphas_cumprod, k, &d) * x0 + Self::extract::<B>(&self.sqrt_one_minus_alphas_cumprod, k, &d) * noise
    }

    /// The hybrid training loss at steps `k` with noise `noise`; `model(x_t, τ)` returns `[ε̂ | v]`.
    pub fn training_losses<B: Backend>(&self, x0: Tensor<B, 3>, k: &[usize], noise: Tensor<B, 3>, model: impl FnOnce(Tensor<B, 3>, Tensor<B, 1, Int>) -> Tensor<B, 3>) -> HybridLoss<B> {
        let d = x0.device();
        let [b, l, c] = x0.dims();
        let x_t = self.q_sample(x0.clone(), k, noise.clone());
        let out = model(x_t.clone(), self.model_steps(k, &d));
        let eps = out.clone().narrow(2, 0, c);
        let v = out.clone().narrow(2, c, c);
        let flat = |t: Tensor<B, 3>| t.reshape([b, l * c]).mean_dim(1).reshape([b]);
        let mse = flat((noise - eps.clone()).powi_scalar(2));
        let frozen = Tensor::cat(vec![eps.detach(), v], 2);
        let true_mean = Self::extract::<B>(&self.posterior_mean_coef1, k, &d) * x0.clone() + Self::extract::<B>(&self.posterior_mean_coef2, k, &d) * x_t.clone();
        let true_log_var = Self::extract::<B>(&self.posterior_log_variance_clipped, k, &d);
        let (mean, log_var, _) = self.p_mean_variance(frozen, x_t.clone(), k);
        let kl = ((log_var.clone() - true_log_var.clone()) - 1.0 + (true_log_var - log_var.clone()).exp() + (true_mean - mean.clone()).powi_scalar(2) * log_var.clone().neg().exp()) * 0.5;
        let ln2 = std::f64::consts::LN_2;
        let kl = flat(kl) / ln2;
        let nll = flat(discretized_gaussian_log_likelihood(x0, mean, log_var * 0.5).neg()) / ln2;
        let at_zero: Tensor<B, 1, Bool> = Tensor::<B, 1, Int>::from_data(TensorData::new(k.iter().map(|&i| i as i64).collect::<Vec<_>>(), [b]), &d).equal_elem(0);
        let vb = kl.mask_where(at_zero, nll);
        HybridLoss { loss: mse.clone() + vb.clone(), mse, vb, x_t, model_output: out }
    }
}

/// `½(1 + tanh(√(2/π)(x + 0.044715x³)))`.
fn approx_standard_normal_cdf<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    ((x.clone() + x.powi_scalar(3) * 0.044715) * c).tanh().add_scalar(1.0) * 0.5
}

/// ADM's discretised Gaussian log-likelihood of 8-bit data in [−1, 1].
fn discretized_gaussian_log_likelihood<B: Backend>(x: Tensor<B, 3>, means: Tensor<B, 3>, log_scales: Tensor<B, 3>) -> Tensor<B, 3> {
    let centred = x.clone() - means;
    let inv = log_scales.neg().exp();
    let cdf_plus = approx_standard_normal_cdf(inv.clone() * (centred.clone() + 1.0 / 255.0));
    let cdf_min = approx_standard_normal_cdf(inv * (centred - 1.0 / 255.0));
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (cdf_min.clone().neg() + 1.0).clamp_min(1e-12).log();
    let log_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    let hi = log_delta.mask_where(x.clone().greater_elem(0.999), log_one_minus_cdf_min);
    hi.mask_where(x.lower_elem(-0.999), log_cdf_plus)
}
