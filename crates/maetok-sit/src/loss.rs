//! The stochastic-interpolant training objective (`losses/sit_loss.py`, `SILoss`, prediction
//! `v`): `x_t = α_t·x0 + σ_t·ε`, target `v* = α'_t·x0 + σ'_t·ε`, per-sample mean squared error
//! over the `L·C` latent values.

use burn::tensor::{backend::Backend, Distribution, Int, Tensor};
use maetok_sampler::flow::{sample_times, PathType, TimeSampling};

use crate::Sit;

/// The random numbers one loss evaluation uses, in the reference's draw order.
#[derive(Debug, Clone)]
pub struct LossDraws<B: Backend> {
    /// `[B]`: `U[0,1)` for uniform time sampling, `N(0,1)` for log-normal.
    pub time: Tensor<B, 1>,
    /// `[B, L, C]` standard normal.
    pub noise: Tensor<B, 3>,
    /// `[B]` `U[0,1)`: label `b` is replaced by the null class when `label_drop[b] < p`
    /// (training mode; `None` in eval mode).
    pub label_drop: Option<Tensor<B, 1>>,
}

impl<B: Backend> LossDraws<B> {
    /// Fresh draws from the backend's generator (seed it with `B::seed`).
    pub fn sample(batch: usize, latent: [usize; 2], sampling: TimeSampling, train: bool, device: &B::Device) -> Self {
        let time = match sampling {
            TimeSampling::Uniform => Tensor::random([batch], Distribution::Uniform(0.0, 1.0), device),
            TimeSampling::LogNormal => Tensor::random([batch], Distribution::Normal(0.0, 1.0), device),
        };
        let noise = Tensor::random([batch, latent[0], latent[1]], Distribution::Normal(0.0, 1.0), device);
        let label_drop = train.then(|| Tensor::random([batch], Distribution::Uniform(0.0, 1.0), device));
        Self { time, noise, label_drop }
    }
}

/// What [`si_loss`] computed (the intermediates are for tests and logging).
#[derive(Debug, Clone)]
pub struct SiLossOutput<B: Backend> {
    /// `[B]` per-sample denoising loss; the training loss is its mean.
    pub per_sample: Tensor<B, 1>,
    /// `[B]` times fed to the model.
    pub t: Tensor<B, 1>,
    /// `[B]` each.
    pub alpha: Tensor<B, 1>,
    pub sigma: Tensor<B, 1>,
    pub d_alpha: Tensor<B, 1>,
    pub d_sigma: Tensor<B, 1>,
    /// `[B, L, C]`.
    pub model_input: Tensor<B, 3>,
    pub target: Tensor<B, 3>,
    pub model_output: Tensor<B, 3>,
    /// `[B]` labels after label dropout.
    pub labels: Tensor<B, 1, Int>,
}

/// The SiT loss on normalised latents `x0` `[B, L, C]` with labels `y` `[B]`.
pub fn si_loss<B: Backend>(
    model: &Sit<B>,
    x0: Tensor<B, 3>,
    y: Tensor<B, 1, Int>,
    path: PathType,
    sampling: TimeSampling,
    class_dropout_prob: f64,
    draws: LossDraws<B>,
) -> SiLossOutput<B> {
    let [b, l, c] = x0.dims();
    let t = sample_times(path, sampling, draws.time);
    let k = path.coefficients(t.clone());
    let col = |v: &Tensor<B, 1>| v.clone().reshape([b, 1, 1]);
    let model_input = x0.clone() * col(&k.alpha) + draws.noise.clone() * col(&k.sigma);
    let target = x0 * col(&k.d_alpha) + draws.noise * col(&k.d_sigma);
    let labels = match draws.label_drop {
        Some(u) => model.drop_labels(y, u, class_dropout_prob),
        None => y,
    };
    let model_output = model.forward(model_input.clone(), t.clone(), labels.clone());
    let per_sample = (model_output.clone() - target.clone()).powi_scalar(2).reshape([b, l * c]).mean_dim(1).reshape([b]);
    SiLossOutput {
        per_sample,
        t,
        alpha: k.alpha,
        sigma: k.sigma,
        d_alpha: k.d_alpha,
        d_sigma: k.d_sigma,
        model_input,
        target,
        model_output,
        labels,
    }
}
