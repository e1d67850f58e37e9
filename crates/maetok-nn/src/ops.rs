//! Small tensor helpers used by the modules.

use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor, TensorData};

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

/// Separable image resize with explicit interpolation matrices (two GEMMs, any backend):
/// `Y = R_h · X · R_wᵀ` per plane. `x` `[B, C, H, W]`, `rh` row-major `[oh, H]`, `rw` row-major
/// `[ow, W]` → `[B, C, oh, ow]`.
pub fn resize_separable<B: Backend>(x: Tensor<B, 4>, rh: &[f32], oh: usize, rw: &[f32], ow: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let rw = Tensor::<B, 2>::from_data(TensorData::new(rw.to_vec(), [ow, w]), &device);
    let rh = Tensor::<B, 2>::from_data(TensorData::new(rh.to_vec(), [oh, h]), &device);
    // Width pass: [B·C·H, W] · [W, ow]; height pass: [oh, H] · [B·C, H, ow].
    let xw = x.reshape([b * c * h, w]).matmul(rw.transpose()).reshape([b * c, h, ow]);
    rh.unsqueeze::<3>().matmul(xw).reshape([b, c, oh, ow])
}
