//! One discriminator head of `DinoDisc` (spec §5.3), applied to a readout `[B, C, L]`:
//!
//! ```text
//! 0: SNConv1d(C→C, k=1) → BN → LeakyReLU(0.2)
//! 1: Residual[ SNConv1d(C→C, k, circular over the flattened token sequence) → BN → LeakyReLU(0.2) ],
//!    out = (f(x) + x)/√2
//! 2: SNConv1d(C→1, k=1)
//! ```
//! giving `[B, 1, L]`. Keys: `0.0.*`, `0.1.*`, `1.fn.0.*`, `1.fn.1.*`, `2.*`.

use burn::module::Module;
use burn::tensor::{activation::leaky_relu, backend::Backend, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};

use super::batch_norm::BatchNorm1d;
use super::spectral_conv::SpectralConv1d;

#[derive(Module, Debug)]
pub struct DiscHead<B: Backend> {
    pub conv0: SpectralConv1d<B>,
    pub norm0: BatchNorm1d<B>,
    pub conv1: SpectralConv1d<B>,
    pub norm1: BatchNorm1d<B>,
    pub out: SpectralConv1d<B>,
}

impl<B: Backend> DiscHead<B> {
    /// Freshly initialised head (PyTorch defaults) for `dim` channels and kernel `ks`.
    pub fn new(dim: usize, ks: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            conv0: SpectralConv1d::new(dim, dim, 1, device),
            norm0: BatchNorm1d::new(dim, eps, device),
            conv1: SpectralConv1d::new(dim, dim, ks, device),
            norm1: BatchNorm1d::new(dim, eps, device),
            out: SpectralConv1d::new(dim, 1, 1, device),
        }
    }

    /// `x` `[B, C, L]` → `[B, L]` logits.
    pub fn forward(&mut self, x: Tensor<B, 3>, train: bool) -> Tensor<B, 2> {
        let h = self.conv0.forward(x, train);
        let h = leaky_relu(self.norm0.forward(h, train), 0.2);
        let f = self.conv1.forward(h.clone(), train);
        let f = leaky_relu(self.norm1.forward(f, train), 0.2);
        let h = (f + h) * std::f64::consts::FRAC_1_SQRT_2;
        let y = self.out.forward(h, train);
        let [b, _, l] = y.dims();
        y.reshape([b, l])
    }
}

impl<B: Backend> VisitParams<B> for DiscHead<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.conv0.visit_params(&join(prefix, "0.0"), v);
        self.norm0.visit_params(&join(prefix, "0.1"), v);
        self.conv1.visit_params(&join(prefix, "1.fn.0"), v);
        self.norm1.visit_params(&join(prefix, "1.fn.1"), v);
        self.out.visit_params(&join(prefix, "2"), v);
    }
}
