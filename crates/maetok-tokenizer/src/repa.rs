//! SoftVQ-VAE's REPA alignment (`VQModel.encode` in training mode): the latents `z_q` `[B, L, C]`,
//! projected by an MLP to the DINOv2 teacher's width, are pulled towards the teacher's patch
//! features `[B, N, D_t]` (of the ImageNet-normalised image, prefix tokens dropped):
//!
//! ```text
//! global : mean_N(teacher)        vs  proj(mean_L(z_q))               [B, D_t]
//! avg_1d : adaptive_avg_pool_N→L  vs  proj(z_q)                       [B, L, D_t]
//! repeat : teacher                vs  proj(z_q), each row repeated N/L times   [B, N, D_t]
//! loss   = mean(−cos(teacher, projection))        (the trainer applies repa_loss_weight)
//! ```
//! (`avg_1d_shuffle`, a reference experiment that shuffles the teacher tokens with an unseeded
//! permutation, is not offered.)

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::ops::linear3;

pub use crate::config::RepaAlign;
use crate::soft_vq::l2_normalize;

/// The projection MLP `projection.{0,2,4}`: `Linear(C → P) · SiLU · Linear(P → P) · SiLU ·
/// Linear(P → D_t)`.
#[derive(Module, Debug)]
pub struct RepaProjection<B: Backend> {
    pub fc0: Linear<B>,
    pub fc2: Linear<B>,
    pub fc4: Linear<B>,
}

impl<B: Backend> RepaProjection<B> {
    /// `latent_dim` C → `hidden` P (`repa_proj_dim`) → `teacher_dim` D_t.
    pub fn new(latent_dim: usize, hidden: usize, teacher_dim: usize, device: &B::Device) -> Self {
        Self {
            fc0: LinearConfig::new(latent_dim, hidden).init(device),
            fc2: LinearConfig::new(hidden, hidden).init(device),
            fc4: LinearConfig::new(hidden, teacher_dim).init(device),
        }
    }

    /// `[B, L, C]` → `[B, L, D_t]`.
    pub fn forward(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = silu(linear3(&self.fc0, z));
        let h = silu(linear3(&self.fc2, h));
        linear3(&self.fc4, h)
    }
}

impl<B: Backend> VisitParams<B> for RepaProjection<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "0"), &mut self.fc0);
        v.linear(&join(prefix, "2"), &mut self.fc2);
        v.linear(&join(prefix, "4"), &mut self.fc4);
    }
}

/// `adaptive_avg_pool1d` over the token axis: `[B, N, D]` → `[B, L, D]` (window `i` spans
/// `floor(i·N/L) .. ceil((i+1)·N/L)`, PyTorch's rule).
fn adaptive_avg_tokens<B: Backend>(x: Tensor<B, 3>, l: usize) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    if n.is_multiple_of(l) {
        return x.reshape([b, l, n / l, d]).mean_dim(2).reshape([b, l, d]);
    }
    let rows = (0..l).map(|i| x.clone().slice([0..b, i * n / l..((i + 1) * n).div_ceil(l), 0..d]).mean_dim(1)).collect();
    Tensor::cat(rows, 1)
}

impl<B: Backend> RepaProjection<B> {
    /// The model side of the alignment: `z_q` `[B, L, C]` → `proj(mean_L z_q)` `[B, 1, D_t]`
    /// (`Global`) or `proj(z_q)` `[B, L, D_t]`.
    pub fn project(&self, z_q: Tensor<B, 3>, align: RepaAlign) -> Tensor<B, 3> {
        match align {
            RepaAlign::Global => self.forward(z_q.mean_dim(1)),
            RepaAlign::Avg1d | RepaAlign::Repeat => self.forward(z_q),
        }
    }
}

/// The unweighted REPA loss `mean(−cos)` between teacher features `[B, N, D_t]` and the
/// [`RepaProjection::project`]ion of the latents (`[B, 1, D_t]` or `[B, L, D_t]`). `Repeat`
/// needs `N` divisible by `L` (an error otherwise).
pub fn repa_loss<B: Backend>(teacher: Tensor<B, 3>, projected: Tensor<B, 3>, align: RepaAlign) -> Result<Tensor<B, 1>, String> {
    let [b, n, d] = teacher.dims();
    let l = projected.dims()[1];
    let (z, z_hat) = match align {
        RepaAlign::Global => (teacher.mean_dim(1), projected),
        RepaAlign::Avg1d => (adaptive_avg_tokens(teacher, l), projected),
        RepaAlign::Repeat => {
            if !n.is_multiple_of(l) {
                return Err(format!("repa_align 'repeat' needs the teacher's {n} tokens to be a multiple of the {l} latent tokens"));
            }
            (teacher, projected.unsqueeze_dim::<4>(2).expand([b, l, n / l, d]).reshape([b, n, d]))
        }
    };
    Ok((l2_normalize(z) * l2_normalize(z_hat)).sum_dim(2).mean().neg())
}
