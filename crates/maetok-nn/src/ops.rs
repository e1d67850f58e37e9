//! Small tensor helpers used by the modules.

use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

/// Applies a [`Linear`] layer to a token tensor by flattening the leading dimensions into one
/// GEMM (`[B, N, in] -> [B*N, in] @ [in, out]`), which is much faster on BLAS backends than the
/// broadcast batched matmul.
///
/// `x`: `[B, N, in]` → `[B, N, out]`.
pub fn linear3<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    let w = layer.weight.val();
    let out = w.dims()[1];
    let y = x.reshape([b * n, d]).matmul(w);
    let y = match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze_dim::<2>(0),
        None => y,
    };
    y.reshape([b, n, out])
}
