//! BatchNorm over `[B, C, L]` as the discriminator heads use it (`nn.SyncBatchNorm`, eps 1e-6):
//! training normalises with the batch statistics over `(B, L)` (biased variance) and moves the
//! running statistics by momentum 0.1 (unbiased variance); evaluation uses the running ones.
//! Multi-GPU training would all-reduce the batch statistics; a single device computes them locally.
//!
//! Keys: `weight`, `bias`, `running_mean`, `running_var` (`num_batches_tracked` is not used).

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};

use super::spectral_conv::state;

/// PyTorch's default momentum.
pub const MOMENTUM: f64 = 0.1;

#[derive(Module, Debug)]
pub struct BatchNorm1d<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub running_mean: Param<Tensor<B, 1>>,
    pub running_var: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> BatchNorm1d<B> {
    pub fn new(c: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: state(Tensor::zeros([c], device)),
            running_var: state(Tensor::ones([c], device)),
            eps,
        }
    }

    /// `x` `[B, C, L]` → same shape. `train`: batch statistics, running statistics updated.
    pub fn forward(&mut self, x: Tensor<B, 3>, train: bool) -> Tensor<B, 3> {
        let [b, c, l] = x.dims();
        let (mean, var) = if train {
            let n = (b * l) as f64;
            let mean = x.clone().mean_dim(2).mean_dim(0).reshape([c]);
            let centred = x.clone() - mean.clone().reshape([1, c, 1]);
            let var = centred.powi_scalar(2).mean_dim(2).mean_dim(0).reshape([c]);
            let unbiased = var.clone().detach() * (n / (n - 1.0).max(1.0));
            let rm = self.running_mean.val() * (1.0 - MOMENTUM) + mean.clone().detach() * MOMENTUM;
            let rv = self.running_var.val() * (1.0 - MOMENTUM) + unbiased * MOMENTUM;
            self.running_mean = Param::initialized(self.running_mean.id, rm).set_require_grad(false);
            self.running_var = Param::initialized(self.running_var.id, rv).set_require_grad(false);
            (mean, var)
        } else {
            (self.running_mean.val(), self.running_var.val())
        };
        let scale = maetok_nn::ops::divide(self.weight.val(), (var + self.eps).sqrt());
        let shift = self.bias.val() - mean * scale.clone();
        x * scale.reshape([1, c, 1]) + shift.reshape([1, c, 1])
    }
}

impl<B: Backend> VisitParams<B> for BatchNorm1d<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "weight"), &mut self.weight);
        v.param(&join(prefix, "bias"), &mut self.bias);
        v.param(&join(prefix, "running_mean"), &mut self.running_mean);
        v.param(&join(prefix, "running_var"), &mut self.running_var);
    }
}
