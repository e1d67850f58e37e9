//! SoftVQ-VAE's soft vector quantiser (`SoftVectorQuantizer`): every latent token becomes a
//! softmax-weighted mixture of its codebook's entries.
//!
//! `h` `[B, L, C]` is split into `nc` contiguous segments of `s = L / nc` tokens; segment `n` uses
//! codebook `n` (`embedding` `[nc, K, C]`). With `l2_norm`, tokens and codes are l2-normalised;
//! `logits = h · e_detachedᵀ` `[B, nc, s, K]`, `probs = softmax(logits / τ)`, `z_q = probs · e`
//! (the codebook learns through `z_q` only), `indices = argmax(probs)`.
//!
//! The reference's `quantize.codebook_used` buffer (a ring of recent indices, kept for logging
//! when `codebook_show_usage`) is training bookkeeping: loading lists it as ignored.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Int, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::ops::{log_softmax, softmax};

use crate::config::SoftVqConfig;

#[derive(Module, Debug)]
pub struct SoftVq<B: Backend> {
    /// `quantize.embedding` `[nc, K, C]`.
    pub embedding: Param<Tensor<B, 3>>,
    pub config: SoftVqConfig,
}

/// What the quantiser gives for `h` `[B, L, C]`.
pub struct SoftVqOutput<B: Backend> {
    /// `[B, L, C]` the quantised latents (what `SoftVQModel.encode` returns).
    pub z_q: Tensor<B, 3>,
    /// `[B, nc, s, K]` cosine (or dot-product) affinities with the detached codebook.
    pub logits: Tensor<B, 4>,
    /// `[B, nc, s, K]` `softmax(logits / τ)`.
    pub probs: Tensor<B, 4>,
    /// `[B, nc, s]` the most likely code of every token.
    pub indices: Tensor<B, 3, Int>,
}

pub(crate) use maetok_nn::ops::l2_normalize;

impl<B: Backend> SoftVq<B> {
    /// A codebook drawn uniformly from `[-1/K, 1/K]` (the reference's init; l2-normalised at use).
    pub fn new(config: SoftVqConfig, latent_dim: usize, device: &B::Device) -> Self {
        let (nc, k) = (config.codebooks, config.size);
        let bound = 1.0 / k as f64;
        Self { embedding: Param::from_tensor(Tensor::random([nc, k, latent_dim], Distribution::Uniform(-bound, bound), device)), config }
    }

    /// The codebook as used: `[nc, K, C]`, l2-normalised when the config says so.
    pub fn codes(&self) -> Tensor<B, 3> {
        let e = self.embedding.val();
        if self.config.l2_norm {
            l2_normalize(e)
        } else {
            e
        }
    }

    /// `h` `[B, L, C]` (L divisible by `nc`, checked by the config) → [`SoftVqOutput`].
    pub fn forward(&self, h: Tensor<B, 3>) -> SoftVqOutput<B> {
        let [b, l, c] = h.dims();
        let nc = self.config.codebooks;
        let s = l / nc;
        let mut segs = h.reshape([b, nc, s, c]);
        if self.config.l2_norm {
            segs = l2_normalize(segs);
        }
        let codes = self.codes().unsqueeze::<4>(); // [1, nc, K, C], broadcast over the batch
        let logits = segs.matmul(codes.clone().detach().swap_dims(2, 3)); // [B, nc, s, K]
        let probs = softmax(logits.clone() / self.config.tau, 3);
        let z_q = probs.clone().matmul(codes).reshape([b, l, c]);
        let indices = probs.clone().argmax(3).reshape([b, nc, s]);
        SoftVqOutput { z_q, logits, probs, indices }
    }

    /// The quantiser's entropy loss (`compute_entropy_loss`, unweighted; the trainer applies
    /// `entropy_loss_ratio`): with `p = softmax(logits / 0.01)` over every token's `K`
    /// affinities (its own temperature, applied to the raw logits, not to `logits / τ`),
    /// `mean_i H(p_i) − H(mean_i p_i)`: sharp codes per token, all codes used across tokens.
    /// `logits` `[B, nc, s, K]` → `[1]`.
    pub fn entropy_loss(logits: Tensor<B, 4>) -> Tensor<B, 1> {
        let [b, nc, s, k] = logits.dims();
        let a = logits.reshape([b * nc * s, k]) / 0.01;
        let probs = softmax(a.clone(), 1);
        // The reference's `log_softmax(a + 1e-5)` equals `log_softmax(a)` (shift invariance).
        let log_probs = log_softmax(a, 1);
        let avg = probs.clone().mean_dim(0); // [1, K]
        let avg_entropy = (avg.clone() * (avg + 1e-6).log()).sum().neg();
        let sample_entropy = (probs * log_probs).sum_dim(1).mean().neg();
        sample_entropy - avg_entropy
    }
}

impl<B: Backend> VisitParams<B> for SoftVq<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "embedding"), &mut self.embedding);
    }
}
