//! The hybrid DiT loss (IDDPM `training_losses` with `LossType.MSE` and the learned range):
//! `mse(ε, ε̂) + vb`, where the variational-bound term sees ε̂ detached, so it trains `v` only.

use burn::tensor::{backend::Backend, Int, Tensor};
use maetok_sampler::GaussianDiffusion;

use crate::Dit;

/// Per-sample hybrid loss terms.
#[derive(Debug, Clone)]
pub struct HybridLoss<B: Backend> {
    /// `[B]` mean squared ε error.
    pub mse: Tensor<B, 1>,
    /// `[B]` variational-bound term (bits/dim; decoder NLL at k = 0), gradients to `v` only.
    pub vb: Tensor<B, 1>,
    /// `[B]` `mse + vb`.
    pub loss: Tensor<B, 1>,
    /// `[B, L, C]` the noised input.
    pub x_t: Tensor<B, 3>,
    /// `[B]` the steps the model was told.
    pub model_t: Tensor<B, 1>,
    /// `[B, L, 2C]`.
    pub model_output: Tensor<B, 3>,
}

/// The hybrid loss of `model` on clean latents `x0` `[B, L, C]` at steps `k` with noise
/// `noise` `[B, L, C]` and (already dropped-out) labels `y`.
pub fn hybrid_loss<B: Backend>(
    model: &Dit<B>,
    diffusion: &GaussianDiffusion,
    x0: Tensor<B, 3>,
    k: &[usize],
    noise: Tensor<B, 3>,
    y: Tensor<B, 1, Int>,
) -> HybridLoss<B> {
    let [b, l, c] = x0.dims();
    let x_t = diffusion.q_sample(x0.clone(), k, noise.clone());
    let model_t = diffusion.model_times::<B>(k, &x0.device());
    let out = model.forward(x_t.clone(), model_t.clone(), y);
    let eps = out.clone().narrow(2, 0, c);
    let v = out.clone().narrow(2, c, c);
    let mse = (noise - eps.clone()).powi_scalar(2).reshape([b, l * c]).mean_dim(1).reshape([b]);
    let frozen = Tensor::cat(vec![eps.detach(), v], 2);
    let vb = diffusion.vb_terms_bpd(frozen, x0, x_t.clone(), k);
    HybridLoss { loss: mse.clone() + vb.clone(), mse, vb, x_t, model_t, model_output: out }
}
