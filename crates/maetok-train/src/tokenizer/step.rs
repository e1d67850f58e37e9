//! One training step of MAETok's tokenizer objective (the reference's `VQLoss`, spec §5.1/§5.5):
//! the generator (tokenizer) loss with the adaptive GAN weight λ, and the discriminator loss.
//!
//! Generator, step `t`:
//! ```text
//! nll = mean((x − x̂)²) + w_p(t)·LPIPS(x, x̂)         g = −mean(D(aug(x̂)))
//! λ   = clamp(‖∂nll/∂W‖ / (‖∂g/∂W‖ + 1e-4), 0, 1e4)   W = the pixel decoder's last layer (to_pixel)
//! L_G = nll + λ·w_d(t)·g + L_hog + L_dino + L_clip
//! ```
//! **How λ is computed without running the model twice** (the reference calls
//! `autograd.grad(..., retain_graph=True)` twice on the full graph; Burn consumes a graph on
//! backward). `x̂ = unpatchify(h·W + b)` with the decoder's image rows `h`, so for any loss `ℓ(x̂)`:
//! `∂ℓ/∂W = hᵀ · patchify(∂ℓ/∂x̂)`. The step therefore
//! 1. runs the tokenizer forward once (graph kept);
//! 2. evaluates `nll` and `g` on two detached leaf copies of `x̂` and back-propagates each through
//!    LPIPS / the discriminator only, giving `∂nll/∂x̂` and `∂g/∂x̂`;
//! 3. forms both `∂/∂W` from `h` (two small matmuls) and their norms, hence λ;
//! 4. back-propagates `Σ x̂ ⊙ (∂nll/∂x̂ + λ·w_d·∂g/∂x̂) + L_aux` through the tokenizer once:
//!    by the chain rule this is exactly the gradient of `L_G`.
//!
//! **Data parallelism** ([`Shard`]): each of `W` peers holds rows `rows` of a global batch and
//! every peer draws the random numbers of the *whole* batch from the same generator (mask,
//! DiffAugment, crop), keeping its rows, so `W` peers compute what one device computes:
//! - `nll` and the auxiliary losses are means over the peer's rows; the trainer averages the
//!   gradients over the peers (the global mean);
//! - the discriminator needs the whole batch (its heads' BatchNorm takes batch statistics): each
//!   peer runs the frozen trunk on its rows and gathers every peer's readouts
//!   ([`crate::parallel::gather_rows`]), then runs the heads on the global batch, so the logits,
//!   `g`, the hinge and LeCam terms are the global ones on every peer, and `∂g/∂x̂` reaches each
//!   peer's own rows (scaled by `W` in the seed, since the trainer averages);
//! - `∂nll/∂W` is the mean and `∂g/∂W` the sum of the peers' `hᵀ·patchify(∂/∂x̂)` (all-reduced),
//!   so λ is the single-device λ;
//! - LPIPS dropout masks come from one seed per sample (its index in the global batch).

use std::ops::Range;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use maetok_nn::patchify;
use maetok_targets::disc::{discriminator_loss, hinge_g_loss, DiffAugPolicy, DiscResize, GanWeights, LeCam};
use maetok_targets::{DinoDisc, Lpips, VitInputError};
use maetok_tokenizer::{InputError, MaskAe, MaskAeOutput, TokenMask};
use rand::Rng;

use super::aux::{aux_losses, AuxLosses, AuxTargets};
use crate::parallel::{all_reduce, all_reduce_values, gather_rows, ParallelError, Peer};

/// This peer's part of a step: rows `rows` of a global batch of `global` images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub peer: Peer,
    pub rows: Range<usize>,
    pub global: usize,
    /// Seeds the per-sample LPIPS dropout masks (with the sample's index in the global batch).
    pub seed: u64,
}

impl Shard {
    /// One device holding the whole batch of `batch`.
    pub fn whole(batch: usize, seed: u64) -> Self {
        Self { peer: Peer::SINGLE, rows: 0..batch, global: batch, seed }
    }

    /// Peer `peer`'s rows of a global batch of `global` (a multiple of the world size).
    pub fn of(peer: Peer, global: usize, seed: u64) -> Self {
        Self { peer, rows: peer.shard(global), global, seed }
    }

    fn parallel(&self) -> bool {
        self.peer.world > 1
    }

    /// The LPIPS dropout seed of each of this peer's samples.
    fn sample_seeds(&self) -> Vec<u64> {
        self.rows.clone().map(|i| (self.seed ^ 0x243F_6A88_85A3_08D3).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64)).collect()
    }

    /// The draws of the whole batch, this peer's rows applied to `x`.
    fn augment<B: Backend>(&self, policy: &DiffAugPolicy, x: Tensor<B, 4>, rng: &mut impl Rng) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        policy.draw(self.global, h, w, rng).rows(self.rows.clone()).apply(x)
    }

    /// Mean over the peers of a few numbers (themselves unchanged on one device).
    fn mean<B: Backend>(&self, xs: &[f64], device: &B::Device) -> Result<Vec<f64>, ParallelError> {
        if self.parallel() {
            all_reduce_values::<B>(self.peer, xs, true, device)
        } else {
            Ok(xs.to_vec())
        }
    }
}

/// Settings of the tokenizer objective.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerLoss {
    /// Weights and switch-on steps of the perceptual and GAN terms.
    pub gan: GanWeights,
    /// DiffAugment policy applied to the discriminator's inputs (`None`: off).
    pub diff_aug: Option<DiffAugPolicy>,
    /// Strong policy of the consistency regulariser (used when `gan.cr_weight > 0`).
    pub cr_aug: DiffAugPolicy,
    /// LPIPS in training mode (Dropout(0.5) active, as the reference's `vq_loss.train()` does).
    pub lpips_dropout: bool,
    /// The discriminator's random 224-crop (probability ½) instead of always resizing.
    pub disc_random_crop: bool,
    /// Average the auxiliary losses over the masked tokens only (`aux_loss_mask`).
    pub aux_masked_only: bool,
}

impl Default for TokenizerLoss {
    /// The reference recipe (spec §5).
    fn default() -> Self {
        Self {
            gan: GanWeights::default(),
            diff_aug: Some(DiffAugPolicy::weak()),
            cr_aug: DiffAugPolicy::strong(),
            lpips_dropout: true,
            disc_random_crop: true,
            aux_masked_only: true,
        }
    }
}

/// A step's input was refused.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("discriminator: {0}")]
    Disc(#[from] VitInputError),
    #[error(transparent)]
    Targets(#[from] super::aux::AuxTargetError),
    #[error(transparent)]
    Parallel(#[from] ParallelError),
    #[error("the step was given {got} images for the shard {rows:?} of a global batch of {global}")]
    ShardSize { got: usize, rows: Range<usize>, global: usize },
}

/// What the generator step computed (losses as values; the gradients for the optimiser).
pub struct GenStepOutput<B: AutodiffBackend> {
    /// Gradients of `L_G` for the tokenizer's parameters.
    pub grads: B::Gradients,
    /// `[B, 3, S, S]` the reconstruction, detached (the discriminator step's fake batch).
    pub recon: Tensor<B, 4>,
    pub rec: f64,
    /// LPIPS (batch mean) and its weight `w_p(t)` (both 0 when training without LPIPS).
    pub perceptual: f64,
    pub perceptual_weight: f64,
    /// `rec + w_p·perceptual`.
    pub nll: f64,
    /// The generator's GAN loss, the two gradient norms on `W` and λ (absent without a
    /// discriminator).
    pub gan: Option<GanTerms<B>>,
    /// `w_d(t)`.
    pub disc_weight: f64,
    /// `(name, value)` of each auxiliary loss.
    pub aux: Vec<(&'static str, f64)>,
    /// `L_G`.
    pub total: f64,
}

/// The generator's adversarial terms.
pub struct GanTerms<B: AutodiffBackend> {
    pub g_loss: f64,
    pub nll_grad_norm: f64,
    pub g_grad_norm: f64,
    pub lambda: f64,
    /// `[B, K]` the discriminator's logits on the (augmented) reconstruction.
    pub logits_fake: Tensor<B::InnerBackend, 2>,
}

/// What the discriminator step computed.
pub struct DiscStepOutput<B: AutodiffBackend> {
    /// Gradients of `L_D` (the heads' parameters).
    pub grads: B::Gradients,
    pub logits_real: Tensor<B::InnerBackend, 2>,
    pub logits_fake: Tensor<B::InnerBackend, 2>,
    pub hinge: f64,
    pub lecam: f64,
    pub consistency: Option<f64>,
    pub total: f64,
}

fn scalar<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// `∂ℓ/∂W` `[D, K]` for the linear layer `x̂ = unpatchify(rows·W + b)`: `rows` `[B, N, D]`,
/// `grad_image` `[B, 3, S, S]` = `∂ℓ/∂x̂`.
pub fn last_layer_grad<B: Backend>(rows: Tensor<B, 3>, grad_image: Tensor<B, 4>, patch: usize) -> Tensor<B, 2> {
    let [b, n, d] = rows.dims();
    let g = patchify(grad_image, patch); // [B, N, K]
    let k = g.dims()[2];
    rows.reshape([b * n, d]).transpose().matmul(g.reshape([b * n, k]))
}

/// The Frobenius norm, summed on the host in f64 (a sequential f32 sum of D·K positive squares
/// drifts by ~1e-4).
fn frobenius<B: Backend>(x: Tensor<B, 2>) -> f64 {
    let values = x.into_data().convert::<f64>().to_vec::<f64>().expect("f64 gradient values");
    values.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `‖∂ℓ/∂W‖` ([`last_layer_grad`]'s norm).
pub fn last_layer_grad_norm<B: Backend>(rows: Tensor<B, 3>, grad_image: Tensor<B, 4>, patch: usize) -> f64 {
    frobenius(last_layer_grad(rows, grad_image, patch))
}

/// `‖∂ℓ/∂W‖` of a loss over the global batch, from each peer's part: the mean of the peers'
/// `∂/∂W` (`mean`: `ℓ` is a mean of per-peer means) or their sum (`ℓ` is one global value whose
/// gradient each peer has for its own rows).
fn global_last_layer_grad_norm<B: Backend>(
    shard: &Shard,
    rows: Tensor<B, 3>,
    grad_image: Tensor<B, 4>,
    patch: usize,
    mean: bool,
) -> Result<f64, ParallelError> {
    let dw = last_layer_grad(rows, grad_image, patch);
    let dw = if shard.parallel() { all_reduce(shard.peer, dw, mean)? } else { dw };
    Ok(frobenius(dw))
}

impl TokenizerLoss {
    /// The generator (tokenizer) step at 1-based step `t`: forward with `mask`, every loss term,
    /// λ, and the gradients of `L_G` (see the module docs for how). `disc`: the discriminator
    /// (its heads run in training mode, as in the reference: batch statistics, a power
    /// iteration); `None` trains without the GAN term. `lpips`: `None` trains without the
    /// perceptual term (no VGG weights at hand).
    #[allow(clippy::too_many_arguments)]
    pub fn generator_step<B: AutodiffBackend>(
        &self,
        model: &MaskAe<B>,
        lpips: Option<&Lpips<B>>,
        disc: Option<&mut DinoDisc<B>>,
        t: u64,
        images: Tensor<B, 4>,
        mask: Option<&TokenMask>,
        targets: &AuxTargets<B>,
        shard: &Shard,
        rng: &mut impl Rng,
    ) -> Result<GenStepOutput<B>, StepError> {
        let images = images.detach();
        let got = images.dims()[0];
        if got != shard.rows.len() {
            return Err(StepError::ShardSize { got, rows: shard.rows.clone(), global: shard.global });
        }
        let device = images.device();
        let out: MaskAeOutput<B> = model.forward(images.clone(), mask)?;
        let patch = model.ae.config.dec_patch;
        let rows = out.rows.clone().detach().inner();

        // ∂nll/∂x̂ on a leaf copy of x̂: only LPIPS is differentiated here.
        let w_p = if lpips.is_some() { self.gan.perceptual_factor(t) } else { 0.0 };
        let leaf = out.recon.clone().detach().require_grad();
        let rec = (images.clone() - leaf.clone()).powi_scalar(2).mean();
        let perceptual = lpips.map(|lpips| {
            let lp = if self.lpips_dropout {
                lpips.forward_train(images.clone(), leaf.clone(), &shard.sample_seeds())
            } else {
                lpips.forward(images.clone(), leaf.clone())
            };
            lp.total.mean()
        });
        let nll = match &perceptual {
            Some(p) => rec.clone() + p.clone() * w_p,
            None => rec.clone(),
        };
        let d_nll = leaf.grad(&nll.clone().backward()).expect("x̂ leaf is on the nll graph");
        let nll_grad_norm = global_last_layer_grad_norm(shard, rows.clone(), d_nll.clone(), patch, true)?;

        // ∂g/∂x̂ on another leaf copy, through DiffAugment and the discriminator.
        let w_d = self.gan.disc_factor(t);
        let mut seed = d_nll;
        let mut gan = None;
        if let Some(disc) = disc {
            let leaf = out.recon.clone().detach().require_grad();
            let aug = match &self.diff_aug {
                Some(p) => shard.augment(p, leaf.clone(), rng),
                None => leaf.clone(),
            };
            let logits = self.disc_forward(disc, aug, shard, rng)?;
            let g = hinge_g_loss(logits.clone());
            let d_g = leaf.grad(&g.clone().backward()).expect("x̂ leaf is on the GAN graph");
            let g_grad_norm = global_last_layer_grad_norm(shard, rows, d_g.clone(), patch, false)?;
            let lambda = self.gan.adaptive_weight(nll_grad_norm, g_grad_norm);
            if w_d != 0.0 {
                // `g` is global: this peer holds its rows' share of ∂g, and the trainer averages
                // the peers' gradients, hence the factor W (1 on one device).
                seed = seed + d_g * (lambda * w_d * shard.peer.world as f64);
            }
            gan = Some(GanTerms { g_loss: scalar(g.inner()), nll_grad_norm, g_grad_norm, lambda, logits_fake: logits.inner() });
        }

        // One backward through the tokenizer: the image-space gradient plus the aux losses.
        let aux: AuxLosses<B> = aux_losses(&out, targets, mask, self.aux_masked_only);
        let seed = Tensor::<B, 4>::from_inner(seed);
        let mut surrogate = (out.recon.clone() * seed).sum();
        if let Some(a) = aux.total() {
            surrogate = surrogate + a;
        }
        let grads = surrogate.backward();

        // The per-peer means, averaged over the peers: the global batch's means.
        let aux: Vec<(&'static str, f64)> = aux.named().into_iter().map(|(n, l)| (n, scalar(l.inner()))).collect();
        let mut local = vec![scalar(rec.inner()), perceptual.map_or(0.0, |p| scalar(p.inner()))];
        local.extend(aux.iter().map(|(_, v)| *v));
        let means = shard.mean::<B::InnerBackend>(&local, &device)?;
        let (rec, perceptual) = (means[0], means[1]);
        let aux: Vec<(&'static str, f64)> = aux.iter().zip(&means[2..]).map(|((n, _), v)| (*n, *v)).collect();
        let nll = rec + w_p * perceptual;
        let adv = gan.as_ref().map_or(0.0, |g| g.lambda * w_d * g.g_loss);
        let total = nll + adv + aux.iter().map(|(_, v)| v).sum::<f64>();
        Ok(GenStepOutput {
            grads,
            recon: out.recon.detach(),
            rec,
            perceptual,
            perceptual_weight: w_p,
            nll,
            gan,
            disc_weight: w_d,
            aux,
            total,
        })
    }

    /// The discriminator step at 1-based step `t` on the real `images` and the generator step's
    /// detached `recon`: `D(aug(x))` and `D(aug(x̂))` as two calls (each with its own batch
    /// statistics, as in the reference), LeCam anchors updated first, hinge + LeCam (+ the
    /// consistency term from `disc_start` on when its weight is positive).
    #[allow(clippy::too_many_arguments)]
    pub fn discriminator_step<B: AutodiffBackend>(
        &self,
        disc: &mut DinoDisc<B>,
        lecam: &mut LeCam,
        t: u64,
        images: Tensor<B, 4>,
        recon: Tensor<B, 4>,
        shard: &Shard,
        rng: &mut impl Rng,
    ) -> Result<DiscStepOutput<B>, StepError> {
        let (x, xr) = (images.detach(), recon.detach());
        let got = x.dims()[0];
        if got != shard.rows.len() {
            return Err(StepError::ShardSize { got, rows: shard.rows.clone(), global: shard.global });
        }
        let weak = |v: Tensor<B, 4>, rng: &mut _| match &self.diff_aug {
            Some(p) => shard.augment(p, v, rng),
            None => v,
        };
        let xa = weak(x.clone(), rng);
        let lr = self.disc_forward(disc, xa, shard, rng)?;
        let xra = weak(xr.clone(), rng);
        let lf = self.disc_forward(disc, xra, shard, rng)?;
        let strong = if t >= self.gan.disc_start && self.gan.cr_weight > 0.0 {
            let xs = shard.augment(&self.cr_aug, x, rng);
            let sr = self.disc_forward(disc, xs, shard, rng)?;
            let xrs = shard.augment(&self.cr_aug, xr, rng);
            Some((sr, self.disc_forward(disc, xrs, shard, rng)?))
        } else {
            None
        };
        let loss = discriminator_loss(&self.gan, t, lecam, lr.clone(), lf.clone(), strong);
        let total = scalar(loss.total.clone().inner());
        let grads = loss.total.backward();
        Ok(DiscStepOutput {
            grads,
            logits_real: lr.inner(),
            logits_fake: lf.inner(),
            hinge: scalar(loss.hinge.inner()),
            lecam: scalar(loss.lecam.inner()),
            consistency: loss.consistency.map(|c| scalar(c.inner())),
            total,
        })
    }

    /// The discriminator's logits `[global, K]` for this peer's rows `x`: the trunk on `x`, the
    /// readouts of every peer gathered, the heads (training mode) on the global batch.
    fn disc_forward<B: AutodiffBackend>(
        &self,
        disc: &mut DinoDisc<B>,
        x: Tensor<B, 4>,
        shard: &Shard,
        rng: &mut impl Rng,
    ) -> Result<Tensor<B, 2>, StepError> {
        let [_, _, h, w] = x.dims();
        let resize = if self.disc_random_crop { DiscResize::draw(h, w, disc.backbone.img_size, rng) } else { DiscResize::Interpolate };
        let acts = disc.readouts(disc.preprocess(x, resize)).map_err(StepError::Disc)?;
        if !shard.parallel() {
            return Ok(disc.heads_forward(acts, true));
        }
        // One gather for all heads: [b, Σ C_h, N] → [global, Σ C_h, N] → split again.
        let widths: Vec<usize> = acts.iter().map(|a| a.dims()[1]).collect();
        let all = gather_rows(shard.peer, Tensor::cat(acts, 1), shard.rows.clone(), shard.global)?;
        let [g, _, n] = all.dims();
        let mut start = 0;
        let acts = widths
            .iter()
            .map(|&c| {
                let a = all.clone().slice([0..g, start..start + c, 0..n]);
                start += c;
                a
            })
            .collect();
        Ok(disc.heads_forward(acts, true))
    }
}
