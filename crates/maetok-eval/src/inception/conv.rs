//! `BasicConv2d` of torchvision's Inception-v3: Conv2d (no bias) → BatchNorm2d (eps 1e-3,
//! inference statistics) → ReLU. The BatchNorm is applied as a per-channel scale `γ/√(σ²+ε)` and
//! shift `β − μ·γ/√(σ²+ε)` behind the convolution (on the CPU in the same pass as the ReLU, right
//! after each image's GEMM). Folding it into the weights instead cost a pass over all 24 M
//! weights on every call: a quarter of a batch-1 forward.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};

/// BatchNorm epsilon of the TF-converted Inception weights.
pub const BN_EPS: f64 = 1e-3;

#[derive(Module, Debug)]
pub struct BasicConv2d<B: Backend> {
    /// `conv.weight` `[O, I, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `bn.weight`, `bn.bias`, `bn.running_mean`, `bn.running_var`, each `[O]`.
    pub gamma: Param<Tensor<B, 1>>,
    pub beta: Param<Tensor<B, 1>>,
    pub mean: Param<Tensor<B, 1>>,
    pub var: Param<Tensor<B, 1>>,
    pub stride: usize,
    pub padding: [usize; 2],
}

impl<B: Backend> BasicConv2d<B> {
    /// A convolution `cin → cout` with kernel `[kh, kw]`; weights are placeholders until loaded.
    pub fn new(cin: usize, cout: usize, kernel: [usize; 2], stride: usize, padding: [usize; 2], device: &B::Device) -> Self {
        let [kh, kw] = kernel;
        let bound = (3.0 / (cin * kh * kw) as f64).sqrt();
        let dist = burn::tensor::Distribution::Uniform(-bound, bound);
        Self {
            weight: Param::from_tensor(Tensor::random([cout, cin, kh, kw], dist, device)),
            gamma: Param::from_tensor(Tensor::ones([cout], device)),
            beta: Param::from_tensor(Tensor::zeros([cout], device)),
            mean: Param::from_tensor(Tensor::zeros([cout], device)),
            var: Param::from_tensor(Tensor::ones([cout], device)),
            stride,
            padding,
        }
    }

    /// A square kernel `k` with symmetric padding `pad`.
    pub fn square(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &B::Device) -> Self {
        Self::new(cin, cout, [k, k], stride, [pad, pad], device)
    }

    /// `[N, I, H, W]` → `[N, O, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let scale = self.gamma.val() / (self.var.val() + BN_EPS).sqrt();
        let shift = self.beta.val() - self.mean.val() * scale.clone();
        // im2col + GEMM with the BatchNorm and ReLU applied to each image's output on the CPU (a
        // plain GEMM for the 1x1 convolutions), Burn ops elsewhere.
        maetok_nn::fused::conv2d_scale_shift_relu(x, self.weight.val(), Some(scale), Some(shift), [self.stride; 2], self.padding)
    }
}

impl<B: Backend> VisitParams<B> for BasicConv2d<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "conv.weight"), &mut self.weight);
        v.param(&join(prefix, "bn.weight"), &mut self.gamma);
        v.param(&join(prefix, "bn.bias"), &mut self.beta);
        v.param(&join(prefix, "bn.running_mean"), &mut self.mean);
        v.param(&join(prefix, "bn.running_var"), &mut self.var);
    }
}
