//! `SpectralConv1d` of the DINO discriminator: a Conv1d (circular padding `k/2`) whose weight is
//! divided by its largest singular value, estimated by power iteration as
//! `torch.nn.utils.spectral_norm(n_power_iterations=1, dim=0, eps=1e-12)` does.
//!
//! * Training forward: one power iteration on the detached weight matrix `W = weight_orig.reshape(out, in·k)`:
//!   `v ← normalize(Wᵀu)`, `u ← normalize(W v)` (stored), then `σ = u·(W v)` with gradient through `W`.
//! * Evaluation forward: `σ` from the stored `u`, `v`, no iteration.
//!
//! Keys: `weight_orig` `[out, in, k]`, `bias` `[out]`, `weight_u` `[out]`, `weight_v` `[in·k]`.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};

/// `x / max(‖x‖₂, 1e-12)` of a vector (`F.normalize(dim=0, eps=1e-12)`).
fn normalize<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    let norm = x.clone().powi_scalar(2).sum().sqrt().clamp_min(1e-12);
    maetok_nn::ops::divide(x, norm)
}

#[derive(Module, Debug)]
pub struct SpectralConv1d<B: Backend> {
    /// `[out, in, k]`.
    pub weight_orig: Param<Tensor<B, 3>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Power-iteration state `[out]` (not trained).
    pub weight_u: Param<Tensor<B, 1>>,
    /// Power-iteration state `[in·k]` (not trained).
    pub weight_v: Param<Tensor<B, 1>>,
}

/// A non-trainable state tensor.
pub(crate) fn state<B: Backend, const D: usize>(t: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(t).set_require_grad(false)
}

impl<B: Backend> SpectralConv1d<B> {
    /// PyTorch's initialisation: weight and bias `U(±1/√(in·k))`, `u`, `v` normalised normal draws.
    pub fn new(cin: usize, cout: usize, k: usize, device: &B::Device) -> Self {
        let bound = 1.0 / ((cin * k) as f64).sqrt();
        let uni = Distribution::Uniform(-bound, bound);
        Self {
            weight_orig: Param::from_tensor(Tensor::random([cout, cin, k], uni, device)),
            bias: Param::from_tensor(Tensor::random([cout], uni, device)),
            weight_u: state(normalize(Tensor::random([cout], Distribution::Normal(0.0, 1.0), device))),
            weight_v: state(normalize(Tensor::random([cin * k], Distribution::Normal(0.0, 1.0), device))),
        }
    }

    /// `W` `[out, in·k]`.
    fn matrix(&self) -> Tensor<B, 2> {
        let [o, i, k] = self.weight_orig.dims();
        self.weight_orig.val().reshape([o, i * k])
    }

    /// One power iteration on the detached weight; updates the stored `u`, `v`.
    pub fn power_iteration(&mut self) {
        let w = self.matrix().detach();
        let u = self.weight_u.val().detach();
        let v = normalize(w.clone().transpose().matmul(u.unsqueeze_dim::<2>(1)).squeeze_dim::<1>(1));
        let u = normalize(w.matmul(v.clone().unsqueeze_dim::<2>(1)).squeeze_dim::<1>(1));
        self.weight_u = Param::initialized(self.weight_u.id, u).set_require_grad(false);
        self.weight_v = Param::initialized(self.weight_v.id, v).set_require_grad(false);
    }

    /// `σ = u·(W v)` `[1]` (gradient flows through `W` only).
    pub fn sigma(&self) -> Tensor<B, 1> {
        let wv = self.matrix().matmul(self.weight_v.val().detach().unsqueeze_dim::<2>(1)).squeeze_dim::<1>(1);
        (wv * self.weight_u.val().detach()).sum()
    }

    /// `x` `[B, in, L]` → `[B, out, L]` with the spectrally normalised weight and circular padding.
    /// `train`: run the power iteration first (and keep its result).
    ///
    /// Computed as one GEMM over the unfolded input (`[B, in·k, L]`, row `c·k + j` holding the
    /// input shifted by `j − k/2`), which is much faster than direct convolution loops on the CPU,
    /// forward and backward.
    pub fn forward(&mut self, x: Tensor<B, 3>, train: bool) -> Tensor<B, 3> {
        if train {
            self.power_iteration();
        }
        let [o, i, k] = self.weight_orig.dims();
        let w = maetok_nn::ops::divide(self.matrix(), self.sigma().unsqueeze::<2>());
        let [b, c, l] = x.dims();
        let pad = k / 2;
        let cols = if k == 1 {
            x
        } else {
            let head = x.clone().slice([0..b, 0..c, l - pad..l]);
            let tail = x.clone().slice([0..b, 0..c, 0..pad]);
            let padded = Tensor::cat(vec![head, x, tail], 2);
            // [B, C, k, L] → [B, C·k, L]: tap j reads padded[.., j + t].
            let taps: Vec<Tensor<B, 4>> = (0..k).map(|j| padded.clone().slice([0..b, 0..c, j..j + l]).unsqueeze_dim::<4>(2)).collect();
            Tensor::cat(taps, 2).reshape([b, c * k, l])
        };
        let y = w.unsqueeze::<3>().expand([b, o, i * k]).matmul(cols);
        y + self.bias.val().reshape([1, o, 1])
    }
}

impl<B: Backend> VisitParams<B> for SpectralConv1d<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "bias"), &mut self.bias);
        v.param(&join(prefix, "weight_orig"), &mut self.weight_orig);
        v.param(&join(prefix, "weight_u"), &mut self.weight_u);
        v.param(&join(prefix, "weight_v"), &mut self.weight_v);
    }
}
