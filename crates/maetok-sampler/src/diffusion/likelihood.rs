//! The variational-bound terms of IDDPM/ADM (`losses.py`): Gaussian KL and the discretised
//! Gaussian log-likelihood of 8-bit data, elementwise on `[B, L, C]` tensors (nats).

use burn::tensor::{backend::Backend, Tensor};

/// `KL(N(μ1, e^{lv1}) ‖ N(μ2, e^{lv2}))` elementwise:
/// `½(−1 + lv2 − lv1 + e^{lv1 − lv2} + (μ1 − μ2)²·e^{−lv2})`.
pub fn normal_kl<B: Backend>(mean1: Tensor<B, 3>, logvar1: Tensor<B, 3>, mean2: Tensor<B, 3>, logvar2: Tensor<B, 3>) -> Tensor<B, 3> {
    ((logvar2.clone() - logvar1.clone()) - 1.0 + (logvar1 - logvar2.clone()).exp() + (mean1 - mean2).powi_scalar(2) * logvar2.neg().exp())
        * 0.5
}

/// `½(1 + tanh(√(2/π)(x + 0.044715x³)))`.
pub fn approx_standard_normal_cdf<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    ((x.clone() + x.powi_scalar(3) * 0.044715) * c).tanh().add_scalar(1.0) * 0.5
}

/// ADM's discretised Gaussian log-likelihood of 8-bit data `x` in [−1, 1] (bins of width 2/255,
/// open-ended at the extremes).
pub fn discretized_gaussian_log_likelihood<B: Backend>(x: Tensor<B, 3>, means: Tensor<B, 3>, log_scales: Tensor<B, 3>) -> Tensor<B, 3> {
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
