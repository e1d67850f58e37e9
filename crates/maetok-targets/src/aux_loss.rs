//! MAETok's auxiliary losses (spec §4.5): the shallow decoders' predictions of the HOG, DINOv2 and
//! SigLIP targets, averaged over the **masked** tokens (`aux_loss_mask=True`), or over all tokens
//! when no mask is given. Each has weight 1 in the reference's total.
//!
//! With `m[b, t] ∈ {0, 1}` and `M = Σ m`:
//! * HOG: `Σ m·(ĥ − h)² / M / D` (an MSE over the masked tokens and the D = 108 features);
//! * DINO / SigLIP: `−Σ m·⟨ŷ/‖ŷ‖, y/‖y‖⟩ / M` (mean negative cosine; norms clamped at 1e-12).

use burn::tensor::{backend::Backend, Tensor};

use maetok_nn::ops::{divide, l2_normalize};

/// Weighted mean of per-token values `[B, N]` over the masked tokens (`mask` `[B, N]`, 1 =
/// masked), or the plain mean without a mask → `[1]`.
fn masked_mean<B: Backend>(per_token: Tensor<B, 2>, mask: Option<Tensor<B, 2>>) -> Tensor<B, 1> {
    match mask {
        Some(m) => divide((per_token * m.clone()).sum(), m.sum()),
        None => per_token.mean(),
    }
}

/// HOG loss: `pred`, `target` `[B, N, D]` → `[1]`.
pub fn hog_loss<B: Backend>(pred: Tensor<B, 3>, target: Tensor<B, 3>, mask: Option<Tensor<B, 2>>) -> Tensor<B, 1> {
    let [b, n, _] = pred.dims();
    let per_token = (pred - target).powi_scalar(2).mean_dim(2).reshape([b, n]);
    masked_mean(per_token, mask)
}

/// Feature-alignment loss (DINOv2, SigLIP): mean negative cosine similarity `[1]` between
/// `pred` `[B, N, D]` and the teacher's `target` `[B, N, D]` (the target carries no gradient in
/// training: pass it detached).
pub fn cosine_feature_loss<B: Backend>(pred: Tensor<B, 3>, target: Tensor<B, 3>, mask: Option<Tensor<B, 2>>) -> Tensor<B, 1> {
    let [b, n, _] = pred.dims();
    let cos = (l2_normalize(pred) * l2_normalize(target)).sum_dim(2).reshape([b, n]);
    masked_mean(cos.neg(), mask)
}
