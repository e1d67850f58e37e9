//! One entry point over every sampler, as generation and the trainers' previews call it.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::diffusion::{GaussianDiffusion, Schedule, Update};
use crate::flow::{euler_maruyama_sampler, euler_sampler, PathType};
use crate::{Denoiser, Guidance, SamplerError};

/// Source of Gaussian noise: called with the number of standard normal values needed.
pub type NoiseSource<'a> = dyn FnMut(usize) -> Vec<f64> + 'a;

/// The four samplers: the flow ODE/SDE for velocity models, DDPM/DDIM for diffusion models.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "sampler", rename_all = "lowercase")]
pub enum Sampler {
    /// Euler (or Heun) probability-flow ODE over `steps` uniform steps.
    Ode { steps: usize, heun: bool },
    /// Euler–Maruyama reverse SDE over `steps` steps; `path` is the one trained with.
    Sde { steps: usize, path: PathType },
    /// Ancestral sampling over `steps` respaced steps of the 1000-step `schedule`.
    Ddpm { schedule: Schedule, steps: usize },
    /// DDIM with `eta` over `steps` respaced steps.
    Ddim { schedule: Schedule, steps: usize, eta: f64 },
}

/// Steps of the training diffusion the DiT reference respaces (`create_diffusion`).
pub const DIFFUSION_STEPS: usize = 1000;

/// Samples `[n·L·C]` latents (f64, row-major) for `labels` starting from the noise `x` of
/// `shape = [n, L, C]`; further noise comes from `noise`.
#[allow(clippy::too_many_arguments)]
pub fn sample<B: Backend, M: Denoiser<B> + ?Sized>(
    model: &M,
    x: &[f64],
    shape: [usize; 3],
    labels: &[i64],
    sampler: Sampler,
    guidance: Guidance,
    noise: &mut NoiseSource,
    device: &B::Device,
) -> Result<Vec<f64>, SamplerError> {
    match sampler {
        Sampler::Ode { steps, heun } => euler_sampler(model, x, shape, labels, steps, heun, guidance, device),
        Sampler::Sde { steps, path } => euler_maruyama_sampler(model, x, shape, labels, steps, path, guidance, noise, device),
        Sampler::Ddpm { schedule, steps } | Sampler::Ddim { schedule, steps, .. } => {
            let update = match sampler {
                Sampler::Ddim { eta, .. } => Update::Ddim { eta },
                _ => Update::Ancestral,
            };
            let diffusion = GaussianDiffusion::new(schedule, DIFFUSION_STEPS, &steps.to_string())?;
            let n = shape[0];
            let x_t = Tensor::<B, 3>::from_data(TensorData::new(x.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape), device);
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), device);
            let out = diffusion.sample_loop(model, x_t, y, update, guidance, noise, |_| {})?;
            Ok(out.into_data().convert::<f32>().to_vec::<f32>().expect("f32 output").into_iter().map(f64::from).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    /// The exact velocity of the linear path for data concentrated at 0: `v = x / t`
    /// (x_t = t·ε, v = ε). Every sampler must bring noise to ~0.
    struct ToZero {
        diffusion: bool,
    }
    impl Denoiser<B> for ToZero {
        fn denoise(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, _y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
            let n = x.dims()[0];
            if self.diffusion {
                // ε̂ = x (right at the noisiest steps for data at 0); v = 0 (midpoint variance).
                return Tensor::cat(vec![x.clone(), x.zeros_like()], 2);
            }
            x / t.reshape([n, 1, 1]).clamp_min(1e-3)
        }
        fn null_class(&self) -> usize {
            0
        }
    }

    #[test]
    fn every_sampler_runs_and_the_ode_reaches_the_data() {
        let d = Default::default();
        let x: Vec<f64> = (0..12).map(|i| (i as f64 - 5.5) / 3.0).collect();
        let shape = [2, 3, 2];
        let mut noise = |n: usize| vec![0.0; n];
        let ode = sample(
            &ToZero { diffusion: false },
            &x,
            shape,
            &[1, 1],
            Sampler::Ode { steps: 10, heun: false },
            Guidance::none(),
            &mut noise,
            &d,
        )
        .unwrap();
        assert!(ode.iter().all(|v| v.abs() < 1e-5), "{ode:?}");
        let sde = sample(
            &ToZero { diffusion: false },
            &x,
            shape,
            &[1, 1],
            Sampler::Sde { steps: 10, path: PathType::Linear },
            Guidance::none(),
            &mut noise,
            &d,
        )
        .unwrap();
        assert_eq!(sde.len(), 12);
        let ddim = sample(
            &ToZero { diffusion: true },
            &x,
            shape,
            &[1, 1],
            Sampler::Ddim { schedule: Schedule::Linear, steps: 10, eta: 0.0 },
            Guidance::always(2.0),
            &mut noise,
            &d,
        )
        .unwrap();
        assert!(ddim.len() == 12 && ddim.iter().all(|v| v.is_finite()), "{ddim:?}");
        // A velocity model under a diffusion sampler (and vice versa) is named, not garbage.
        let err = sample(
            &ToZero { diffusion: false },
            &x,
            shape,
            &[1, 1],
            Sampler::Ddpm { schedule: Schedule::Linear, steps: 5 },
            Guidance::none(),
            &mut noise,
            &d,
        )
        .unwrap_err();
        assert!(matches!(err, SamplerError::Channels { got: 2, want: 4 }), "{err}");
        let err = sample(
            &ToZero { diffusion: true },
            &x,
            shape,
            &[1, 1],
            Sampler::Ode { steps: 5, heun: true },
            Guidance::none(),
            &mut noise,
            &d,
        )
        .unwrap_err();
        assert!(matches!(err, SamplerError::VelocityChannels { got: 4, want: 2 }), "{err}");
        let err = sample(
            &ToZero { diffusion: false },
            &x,
            shape,
            &[1, 1],
            Sampler::Sde { steps: 1, path: PathType::Linear },
            Guidance::none(),
            &mut noise,
            &d,
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 2"), "{err}");
    }
}
