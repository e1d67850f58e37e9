//! timm `Mlp`: `fc1 → GELU → fc2`, GELU exact (erf; ViTs) or tanh-approximated (SiT/DiT).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::io::{join, ParamVisitor, VisitParams};
use crate::ops::linear3;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    /// `GELU(approximate='tanh')` instead of the exact erf form.
    pub tanh_gelu: bool,
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, PyTorch's `GELU(approximate='tanh')` (see
/// [`crate::fused::gelu_tanh`]).
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    crate::fused::gelu_tanh(x)
}

/// `0.5·x·(1 + erf(x/√2))`, PyTorch's exact `GELU()`, with its exact gradient (Burn 0.21's own
/// `gelu` back-propagates the tanh form's derivative; see [`crate::fused::gelu_erf_default`]).
pub fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    crate::fused::gelu_erf(x)
}

/// `fc1 (dim → hidden) → GELU → fc2 (hidden → dim)`.
#[derive(Config, Debug)]
pub struct MlpConfig {
    pub dim: usize,
    pub hidden: usize,
    /// `GELU(approximate='tanh')` (SiT/DiT, the DINO discriminator) instead of the exact erf form.
    #[config(default = false)]
    pub tanh_gelu: bool,
}

impl MlpConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            fc1: LinearConfig::new(self.dim, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.dim).init(device),
            tanh_gelu: self.tanh_gelu,
        }
    }
}

impl<B: Backend> Mlp<B> {
    /// `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = linear3(&self.fc1, x);
        let h = if self.tanh_gelu { gelu_tanh(h) } else { gelu_erf(h) };
        linear3(&self.fc2, h)
    }
}

impl<B: Backend> VisitParams<B> for Mlp<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "fc1"), &mut self.fc1);
        v.linear(&join(prefix, "fc2"), &mut self.fc2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{activation::gelu, TensorData};

    /// The gradient of the exact GELU is `Φ(x) + x·φ(x)`, not the tanh form's derivative.
    #[test]
    fn exact_gelu_has_the_exact_gradient() {
        type A = Autodiff<NdArray<f32>>;
        let xs = [-2.0, -0.7, 0.0, 0.3, 1.5];
        let f32s: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
        let x = Tensor::<A, 1>::from_data(TensorData::new(f32s.clone(), [5]), &Default::default()).require_grad();
        let y = gelu_erf(x.clone());
        let vals = |d: TensorData| d.convert::<f64>().to_vec::<f64>().unwrap();
        let g = vals(x.grad(&y.clone().sum().backward()).unwrap().into_data());
        let plain = gelu(Tensor::<NdArray<f32>, 1>::from_data(TensorData::new(f32s, [5]), &Default::default()));
        let (ours, burn) = (vals(y.inner().into_data()), vals(plain.into_data()));
        for ((x, g), (a, b)) in xs.iter().zip(g).zip(ours.iter().zip(&burn)) {
            assert!((a - b).abs() < 1e-6, "forward at {x}: {a} vs {b}");
            let want = exact_gelu_grad(*x);
            assert!((g - want).abs() < 2e-6, "gradient at {x}: {g} vs {want}");
        }
        // Burn's own op back-propagates the tanh form's derivative: measurably off.
        let x = Tensor::<A, 1>::from_data(TensorData::new(f32s_again(&xs), [5]), &Default::default()).require_grad();
        let burn_g = vals(x.grad(&gelu(x.clone()).sum().backward()).unwrap().into_data());
        let worst = xs.iter().zip(&burn_g).map(|(&x, g)| (g - exact_gelu_grad(x)).abs()).fold(0.0, f64::max);
        assert!(worst > 1e-5, "Burn's gelu gradient is exact now ({worst:.1e}): gelu_erf can use it");
    }

    fn f32s_again(xs: &[f64]) -> Vec<f32> {
        xs.iter().map(|&v| v as f32).collect()
    }

    /// `Φ(x) + x·φ(x)`, Φ from erf, φ the standard normal density.
    fn exact_gelu_grad(x: f64) -> f64 {
        let cdf = 0.5 * (1.0 + libm_erf(x / std::f64::consts::SQRT_2));
        cdf + x * (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }

    /// erf by its Taylor series (|x| ≤ 1.5 here; 60 terms are exact to f64).
    fn libm_erf(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..60 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
