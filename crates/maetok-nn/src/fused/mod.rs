//! Fused operations of our models: self-attention from the packed qkv projection (RoPE inside),
//! attention with merged heads, RoPE and the sin/cos of its tables, Linear, softmax over the last
//! dimension, exact and tanh-approximated GELU, LayerNorm (with or without affine parameters),
//! MoVQ's latent modulation, SiT/DiT's adaLN modulation and gated residual, a permute into
//! row-major storage, convolutions and pooling, the optimiser passes of the trainers (AdamW, EMA,
//! gradient norm and scaling), and reading a tensor's values on the host.
//!
//! Each function has two implementations:
//! * **the default**, composed of Burn tensor ops, which every backend runs (CUDA and wgpu fuse
//!   it themselves), with gradients exact to rounding (see [`crate::ops`]);
//! * **the CPU fast path** (feature `cpu-kernels`, on by default) for `NdArray<f32>` and
//!   `Autodiff<NdArray<f32>>`: one pass over the raw array with the vectorised, rayon-parallel
//!   kernels of [`kernels`] (attention, RoPE and Linear: their own files, with GEMMs) instead of
//!   5–10 single-threaded NdArray passes and copies, and under autodiff one
//!   graph node with a hand-written backward (the same formulas as the default's gradient)
//!   instead of 10–20 recorded ops.
//!
//! The choice is made at run time from the backend's type (`TypeId`), so models stay generic
//! over `B: Backend` and need no extra trait bound; any other backend, and `NdArray` tensors held
//! in f64, take the default path. The fixture tests run through whichever path their backend
//! selects; `tests` below hold the two paths to each other in value and gradient.

#[cfg(feature = "cpu-kernels")]
mod adaln;
#[cfg(feature = "cpu-kernels")]
mod attention;
#[cfg(feature = "cpu-kernels")]
mod conv;
#[cfg(feature = "cpu-kernels")]
mod gate;
#[cfg(feature = "cpu-kernels")]
mod gemm;
mod heap;
pub mod kernels;
#[cfg(feature = "cpu-kernels")]
mod layout;
#[cfg(feature = "cpu-kernels")]
mod linear;
#[cfg(feature = "cpu-kernels")]
mod modulate;
#[cfg(feature = "cpu-kernels")]
mod ndarray;
#[cfg(feature = "cpu-kernels")]
mod pool;
#[cfg(feature = "cpu-kernels")]
mod qkv_attention;
#[cfg(feature = "cpu-kernels")]
mod rope;
#[cfg(feature = "cpu-kernels")]
mod rope_tables;

use burn::tensor::{backend::Backend, Tensor};
pub use heap::retain_freed_memory;

use crate::ops;

/// The values of `x` as f32 in row-major order, on the host. The CPU fast path copies the array
/// directly (one `memcpy` when contiguous, a row-wise parallel copy otherwise), where Burn's
/// `into_data` walks an array that another tensor shares element by element; elsewhere it is
/// `into_data`.
pub fn host_values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::host_values(x) {
        Ok(v) => return v,
        Err(x) => x,
    };
    x.into_data().convert::<f32>().into_vec::<f32>().expect("f32 values after convert")
}

/// `x` with its axes in the order `axes` (`y.dims()[i] = x.dims()[axes[i]]`), like
/// `Tensor::permute`, but stored row-major, so that a reshape after it is free.
///
/// On NdArray a permute is a strided view, and reshaping one (patchify, unpatchify, patch
/// embedding: `reshape → permute → reshape`) copies it element by element through a dynamic-rank
/// index; the backward of the first reshape then does the same to the permuted gradient. The CPU
/// fast path copies row by row, and its backward gives a row-major gradient too; the
/// default is `permute` (on GPU backends a view or a fused copy).
pub fn permute<B: Backend, const D: usize>(x: Tensor<B, D>, axes: [usize; D]) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::permute(x, axes) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.permute(axes)
}

/// MoVQ modulation of the latent rows: `LN(x)` (no affine, `eps`) with its last `T` rows
/// replaced by `LN(x)·scale + shift`, where `shift` and `scale` are the `D`-wide column blocks
/// `shift_at` and `scale_at` of the modulation `m` `[B, T, k·D]`. `x`: `[B, N, D]` (latent
/// tokens last) → `[B, N, D]`.
///
/// The CPU fast path reads both blocks where they lie in `m` and records one autodiff node; the
/// default slices `m`, normalises, modulates a slice and assigns it back.
pub fn modulate_latents<B: Backend>(x: Tensor<B, 3>, m: Tensor<B, 3>, shift_at: usize, scale_at: usize, eps: f64) -> Tensor<B, 3> {
    #[cfg(feature = "cpu-kernels")]
    let [x, m] = match ndarray::modulate_latents(x, m, [shift_at, scale_at], eps) {
        Ok(y) => return y,
        Err(args) => args,
    };
    modulate_latents_default(x, m, shift_at, scale_at, eps)
}

/// The default of [`modulate_latents`] (Burn ops).
pub fn modulate_latents_default<B: Backend>(x: Tensor<B, 3>, m: Tensor<B, 3>, shift_at: usize, scale_at: usize, eps: f64) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    let t = m.dims()[1];
    let chunk = |at: usize| m.clone().slice([0..b, 0..t, at * d..(at + 1) * d]);
    let h = layer_norm(x, None, None, eps);
    let lat = h.clone().slice([0..b, n - t..n, 0..d]) * chunk(scale_at) + chunk(shift_at);
    h.slice_assign([0..b, n - t..n, 0..d], lat)
}

/// adaLN modulation of SiT/DiT: `LN(x)·(1 + scale) + shift` (LayerNorm without affine, `eps`)
/// on `x` `[B, L, D]`, with `shift` and `scale` the `D`-wide chunks `shift_at` and `scale_at` of
/// the modulation `m` `[B, k·D]`, broadcast over each sample's rows.
///
/// The CPU fast path reads both chunks where they lie in `m` and runs one LayerNorm pass per
/// sample (weight `1 + scale`, bias `shift`) with one autodiff node; the default chunks `m`,
/// normalises and modulates with Burn ops.
pub fn modulate_adaln<B: Backend>(x: Tensor<B, 3>, m: Tensor<B, 2>, shift_at: usize, scale_at: usize, eps: f64) -> Tensor<B, 3> {
    #[cfg(feature = "cpu-kernels")]
    let (x, m) = match ndarray::modulate_adaln(x, m, [shift_at, scale_at], eps) {
        Ok(y) => return y,
        Err(args) => args,
    };
    modulate_adaln_default(x, m, shift_at, scale_at, eps)
}

/// The default of [`modulate_adaln`] (Burn ops).
pub fn modulate_adaln_default<B: Backend>(x: Tensor<B, 3>, m: Tensor<B, 2>, shift_at: usize, scale_at: usize, eps: f64) -> Tensor<B, 3> {
    let [b, _, d] = x.dims();
    let chunk = |at: usize| m.clone().slice([0..b, at * d..(at + 1) * d]);
    crate::adaln::modulate(layer_norm(x, None, None, eps), chunk(shift_at), chunk(scale_at))
}

/// The gated residual of SiT/DiT: `h + g ⊙ a` on `h`, `a` `[B, L, D]`, with the gate `g` the
/// `D`-wide chunk `gate_at` of the adaLN output `m` `[B, k·D]`, broadcast over each sample's rows.
///
/// The CPU fast path reads the gate where it lies in `m` and makes one pass, into `h`'s own
/// buffer when nothing else holds it, with one autodiff node (`dh` is `dy` itself); the default
/// slices, multiplies and adds with Burn ops.
pub fn residual_gate<B: Backend>(h: Tensor<B, 3>, a: Tensor<B, 3>, m: Tensor<B, 2>, gate_at: usize) -> Tensor<B, 3> {
    #[cfg(feature = "cpu-kernels")]
    let (h, a, m) = match ndarray::residual_gate((h, a, m), gate_at) {
        Ok(y) => return y,
        Err(args) => args,
    };
    residual_gate_default(h, a, m, gate_at)
}

/// The default of [`residual_gate`] (Burn ops).
pub fn residual_gate_default<B: Backend>(h: Tensor<B, 3>, a: Tensor<B, 3>, m: Tensor<B, 2>, gate_at: usize) -> Tensor<B, 3> {
    let [b, _, d] = h.dims();
    h + m.slice([0..b, gate_at * d..(gate_at + 1) * d]).unsqueeze_dim::<3>(1) * a
}

/// Softmax along the last dimension. `x`: `[..., n]` → same shape.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::softmax_last(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    softmax_default(x)
}

/// Exact GELU `½·x·(1 + erf(x/√2))` (PyTorch's `nn.GELU()`), elementwise.
pub fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::elementwise(x, ndarray::Gelu::Erf) {
        Ok(y) => return y,
        Err(x) => x,
    };
    gelu_erf_default(x)
}

/// Tanh-approximated GELU `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (PyTorch's
/// `GELU(approximate='tanh')`), elementwise.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::elementwise(x, ndarray::Gelu::Tanh) {
        Ok(y) => return y,
        Err(x) => x,
    };
    gelu_tanh_default(x)
}

/// `sin x`, elementwise (the RoPE tables' angles).
pub fn sin<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::elementwise(x, ndarray::Trig::Sin) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.sin()
}

/// `cos x`, elementwise (the RoPE tables' angles).
pub fn cos<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::elementwise(x, ndarray::Trig::Cos) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.cos()
}

/// LayerNorm over the last dimension: `(x − mean)/√(var + eps)·weight + bias` (biased variance),
/// each affine part optional. `x`: `[..., n]`, `weight`/`bias`: `[n]`.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Option<Tensor<B, 1>>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let (x, weight, bias) = match ndarray::layer_norm(x, weight, bias, eps) {
        Ok(y) => return y,
        Err(args) => args,
    };
    layer_norm_default(x, weight, bias, eps)
}

/// Attention with merged heads: `softmax(q·kᵀ)·v` per head, the heads concatenated.
/// `q` `[B, H, Nq, hd]` (already scaled), `k` `[B, H, Nk, hd]`, `v` `[B, H, Nk, hv]` →
/// `[B, Nq, H·hv]` (head `h` in columns `h·hv..(h+1)·hv`, the layout the output projection reads).
///
/// The CPU fast path runs each (batch, head) as one task over raw views (no head split or merge
/// copy) and records one autodiff node that keeps the attention weights for its backward.
pub fn attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 3> {
    #[cfg(feature = "cpu-kernels")]
    let [q, k, v] = match ndarray::attention([q, k, v]) {
        Ok(y) => return y,
        Err(qkv) => qkv,
    };
    attention_default(q, k, v)
}

/// Multi-head self-attention from the packed projection `qkv` `[B, N, 3·H·hd]` (q, k, v in that
/// order, heads in order within each): q and k rotated by `rope` (whose q tables carry the
/// attention scale), or without it q multiplied by `scale`; → `[B, N, H·hd]` (heads merged).
///
/// The CPU fast path reads q, k and v where they lie in the projection and records one autodiff
/// node whose backward writes one packed gradient (and the tables' gradients); the default
/// splits the projection and runs [`rope`] and [`attention`].
pub fn attention_qkv<B: Backend>(qkv: Tensor<B, 3>, heads: usize, rope: Option<&crate::rope::RopeFull<B>>, scale: f64) -> Tensor<B, 3> {
    #[cfg(feature = "cpu-kernels")]
    let qkv = {
        let tables = rope.map(|r| [r.cos_q.clone(), r.sin_q.clone(), r.cos_k.clone(), r.sin_k.clone()]);
        match ndarray::qkv_attention((qkv, tables), heads, scale as f32) {
            Ok(y) => return y,
            Err((qkv, _)) => qkv,
        }
    };
    attention_qkv_default(qkv, heads, rope, scale)
}

/// The default of [`attention_qkv`]: three slices of the projection as `[B, H, N, hd]` views,
/// [`rope`] (or the scale), [`attention`].
pub fn attention_qkv_default<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    rope: Option<&crate::rope::RopeFull<B>>,
    scale: f64,
) -> Tensor<B, 3> {
    let [b, n, c] = qkv.dims();
    let d = c / 3;
    let split = |i: usize| qkv.clone().slice([0..b, 0..n, i * d..(i + 1) * d]).reshape([b, n, heads, d / heads]).swap_dims(1, 2);
    let (q, k, v) = (split(0), split(1), split(2));
    let (q, k) = match rope {
        Some(r) => (r.apply_q(q), r.apply_k(k)),
        None => (q * scale, k),
    };
    attention(q, k, v)
}

/// The default attention (Burn ops): matmul, [`softmax_last`], matmul, merge the heads.
pub fn attention_default<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, nq, _] = q.dims();
    let hv = v.dims()[3];
    softmax_last(q.matmul(k.swap_dims(2, 3))).matmul(v).swap_dims(1, 2).reshape([b, nq, h * hv])
}

/// Rotary embedding of adjacent pairs: `x·cos + swap_pairs(x)·sin` with `x` `[B, H, N, hd]` and
/// tables `[Hr, N, hd]` (`Hr` = H or 1, see [`crate::rope::RopeFull`]); `swap` `[hd, hd]` is the
/// pair permutation, used by the default path only.
///
/// The CPU fast path reads `x` where it lies (a strided view of the qkv projection), writes one
/// contiguous result and records one autodiff node (gradients for `x` and for the tables, which
/// carry the learnable frequencies of mixed RoPE).
pub fn rope<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 3>, sin: Tensor<B, 3>, swap: &Tensor<B, 2>) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    let (x, cos, sin) = match ndarray::rope((x, cos, sin)) {
        Ok(y) => return y,
        Err(args) => args,
    };
    rope_default(x, cos, sin, swap)
}

/// The default RoPE (Burn ops): the swap as a permutation GEMM, two broadcast products, a sum.
pub fn rope_default<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 3>, sin: Tensor<B, 3>, swap: &Tensor<B, 2>) -> Tensor<B, 4> {
    let [b, h, n, hd] = x.dims();
    let swapped = x.clone().reshape([b * h * n, hd]).matmul(swap.clone()).reshape([b, h, n, hd]);
    x * cos.unsqueeze::<4>() + swapped * sin.unsqueeze::<4>()
}

/// Which compact RoPE table [`rope_expand`] expands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeHalf {
    /// cos θ: both lanes of a pair `+cos θ`; identity rows `1`.
    Cos,
    /// sin θ: lanes `(−sin θ, +sin θ)`; identity rows `0`.
    Sin,
}

/// A compact RoPE table `t` `[Hr, n, hd/2]` (cos θ or sin θ per pair) expanded for [`rope`] and
/// [`attention_qkv`]: `[Hr, seq_len, hd]`, the table on rows `start..start + n` (both lanes of
/// each pair, sin with the rotation's signs), the identity on the others, all times `scale`.
///
/// The CPU fast path writes it in one pass and its backward in one more; the default's repeat,
/// concatenations and scaling back-propagate through slices that NdArray copies element by
/// element.
pub fn rope_expand<B: Backend>(t: Tensor<B, 3>, kind: RopeHalf, seq_len: usize, start: usize, scale: f64) -> Tensor<B, 3> {
    let [_, n, _] = t.dims();
    assert!(start + n <= seq_len, "rope_expand: table rows {start}..{} outside a sequence of {seq_len}", start + n);
    #[cfg(feature = "cpu-kernels")]
    let t = {
        let [hr, n, half] = t.dims();
        match ndarray::rope_expand(t, rope_tables::Expand { hr, n, half, seq: seq_len, start, scale: scale as f32, kind }) {
            Ok(y) => return y,
            Err(t) => t,
        }
    };
    rope_expand_default(t, kind, seq_len, start, scale)
}

/// [`rope_expand`] from Burn tensor ops.
pub fn rope_expand_default<B: Backend>(t: Tensor<B, 3>, kind: RopeHalf, seq_len: usize, start: usize, scale: f64) -> Tensor<B, 3> {
    let [hr, n, half] = t.dims();
    assert!(start + n <= seq_len, "rope_expand: table rows {start}..{} outside a sequence of {seq_len}", start + n);
    let hd = 2 * half;
    let device = t.device();
    let pairs = t.reshape([hr, n, half, 1]);
    let (table, fill) = match kind {
        RopeHalf::Cos => (pairs.repeat_dim(3, 2).reshape([hr, n, hd]), 1.0),
        RopeHalf::Sin => (Tensor::cat(vec![pairs.clone().neg(), pairs], 3).reshape([hr, n, hd]), 0.0),
    };
    let rest = seq_len - start - n;
    let mut parts = Vec::new();
    if start > 0 {
        parts.push(Tensor::full([hr, start, hd], fill, &device));
    }
    parts.push(table);
    if rest > 0 {
        parts.push(Tensor::full([hr, rest, hd], fill, &device));
    }
    let padded = Tensor::cat(parts, 1);
    if scale == 1.0 {
        padded
    } else {
        padded * scale
    }
}

/// Linear layer on the last dimension: `x·weight + bias`. `x` `[..., in]`, `weight` `[in, out]`
/// (Burn's layout), `bias` `[out]` → `[..., out]`.
///
/// The CPU fast path runs one GEMM on `x` seen as `[rows, in]` with the bias written into the
/// output first (no reshape copies, no broadcast pass) and records one autodiff node.
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let (x, weight, bias) = match ndarray::linear((x, weight, bias)) {
        Ok(y) => return y,
        Err(args) => args,
    };
    linear_default(x, weight, bias)
}

/// The default Linear (Burn ops): the leading dimensions flattened into one GEMM (much faster on
/// BLAS backends than the broadcast batched matmul), the bias broadcast-added.
pub fn linear_default<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    let mut shape = x.dims();
    let [inp, out] = weight.dims();
    let rows = shape[..D - 1].iter().product();
    let y = x.reshape([rows, inp]).matmul(weight);
    let y = match bias {
        Some(b) => y + b.unsqueeze_dim::<2>(0),
        None => y,
    };
    shape[D - 1] = out;
    y.reshape(shape)
}

/// 2-D convolution without groups or dilation: `x` `[N, C, H, W]`, `weight` `[O, C, kh, kw]`,
/// `bias` `[O]` → `[N, O, H', W']`.
///
/// The CPU fast path (NdArray, with or without autodiff: the FID Inception network, LPIPS as a
/// metric and as a training loss) runs im2col and one GEMM per image, and under autodiff records
/// one node whose backward is GEMMs and a col2im (Burn 0.21's NdArray computes a convolution's
/// input gradient as a scalar transposed-convolution loop). Other backends use Burn's `conv2d`.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    let (x, weight, bias) = match ndarray::conv2d((x, weight, bias), stride, padding) {
        Ok(y) => return y,
        Err(args) => args,
    };
    conv2d_default(x, weight, bias, stride, padding)
}

/// [`conv2d`] followed by a ReLU. The CPU fast path (plain NdArray: inference) applies the ReLU
/// to each image's output right after its GEMM; elsewhere it is `relu(conv2d(..))`.
pub fn conv2d_relu<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    conv2d_scale_shift_relu(x, weight, None, bias, stride, padding)
}

/// [`conv2d`] (no bias), then `scale·y + shift` per output channel (`scale`, `shift` `[O]`: an
/// inference BatchNorm), then a ReLU. The CPU fast path (plain NdArray: inference) applies all
/// three to each image's output right after its GEMM, so a BatchNorm costs neither a pass over
/// the activations nor one over the weights (folding it into them would, on every call);
/// elsewhere it is Burn ops.
pub fn conv2d_scale_shift_relu<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    scale: Option<Tensor<B, 1>>,
    shift: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    let ((x, weight, shift), scale) = match ndarray::conv2d_scale_shift_relu((x, weight, shift), scale, stride, padding) {
        Ok(y) => return y,
        Err(args) => args,
    };
    let y = match scale {
        Some(scale) => {
            let o = scale.dims()[0];
            let y = conv2d(x, weight, None, stride, padding) * scale.reshape([1, o, 1, 1]);
            match shift {
                Some(shift) => y + shift.reshape([1, o, 1, 1]),
                None => y,
            }
        }
        None => conv2d(x, weight, shift, stride, padding),
    };
    burn::tensor::activation::relu(y)
}

/// 2-D average pooling (floor mode, no dilation): `x` `[N, C, H, W]` → `[N, C, H', W']`; the
/// mean over the whole window when `count_include_pad` (PyTorch's flag), else over the values
/// inside the input. The CPU fast path (plain NdArray: inference) runs one parallel pass; under
/// autodiff and on other backends it is Burn's `avg_pool2d`.
pub fn avg_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    count_include_pad: bool,
) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::pool2d(x, kernel, stride, padding, pool::Reduce::Mean { count_padding: count_include_pad }) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::module::avg_pool2d(x, kernel, stride, padding, count_include_pad, false)
}

/// 2-D max pooling (floor mode, no dilation): `x` `[N, C, H, W]` → `[N, C, H', W']`. The CPU fast
/// path as [`avg_pool2d`]'s; elsewhere Burn's `max_pool2d`.
pub fn max_pool2d<B: Backend>(x: Tensor<B, 4>, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::pool2d(x, kernel, stride, padding, pool::Reduce::Max) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::module::max_pool2d(x, kernel, stride, padding, [1, 1], false)
}

/// Whether `B` takes the CPU fast path of this module (NdArray f32, with or without autodiff).
pub fn cpu_fast_path<B: Backend>() -> bool {
    #[cfg(feature = "cpu-kernels")]
    return ndarray::takes_fast_path::<B>();
    #[cfg(not(feature = "cpu-kernels"))]
    false
}

/// The default convolution (Burn's `conv2d`).
pub fn conv2d_default<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    burn::tensor::module::conv2d(x, weight, bias, burn::tensor::ops::ConvOptions::new(stride, padding, [1, 1], 1))
}

/// The default softmax (Burn ops, exact gradient).
pub fn softmax_default<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    ops::softmax_composed(x, D - 1)
}

/// The default exact GELU. Burn 0.21's `activation::gelu` computes this forward but
/// back-propagates the derivative of the *tanh approximation* (`burn-backend` `gelu_backward`; off
/// by up to ~1e-3 per unit), so on an autodiff backend the composed form, whose autodiff is exact,
/// is used; other backends keep Burn's op.
pub fn gelu_erf_default<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !B::ad_enabled(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    x.clone() * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
}

/// The default tanh-approximated GELU (Burn ops; autodiff differentiates them exactly).
pub fn gelu_tanh_default<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * (inner.tanh() + 1.0) * 0.5
}

/// The default LayerNorm (Burn ops, exact gradient).
pub fn layer_norm_default<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Option<Tensor<B, 1>>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    // Not `.div(…)`: its gradient goes through Burn's approximate reciprocal (crate::ops).
    let y = ops::divide(x - mean, (var + eps).sqrt());
    let y = match weight {
        Some(w) => y * w.unsqueeze::<D>(),
        None => y,
    };
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

/// One AdamW update (Burn's `AdamW`: decoupled weight decay, no AMSGrad). `time` is the step
/// number this update makes (1 for the first, when there are no moments yet).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    pub time: usize,
}

impl AdamWStep {
    /// The scalars in the f32 values Burn's tensor ops apply.
    pub fn scalars(&self) -> kernels::AdamWScalars {
        let t = self.time.min(i32::MAX as usize) as i32;
        let decay = self.lr * self.weight_decay as f64;
        kernels::AdamWScalars {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            one_minus_beta_1: 1.0 - self.beta_1,
            one_minus_beta_2: 1.0 - self.beta_2,
            correction_1: 1.0 - self.beta_1.powi(t),
            correction_2: 1.0 - self.beta_2.powi(t),
            epsilon: self.epsilon,
            keep: (decay != 0.0).then_some((1.0 - decay) as f32),
            lr: self.lr as f32,
            first: self.time <= 1,
        }
    }
}

/// One AdamW update of a parameter: `param`, its `grad` and the moments `(m, v)` of the previous
/// steps (`None` before the first) → `[param, m, v]` after the step, all of one shape.
///
/// The CPU fast path makes one parallel pass that updates the buffers in place (copying only a
/// buffer that is shared), instead of ten tensor ops that each allocate a parameter-sized
/// result; it is bit-identical to the default.
pub fn adamw_update<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    step: &AdamWStep,
) -> [Tensor<B, D>; 3] {
    #[cfg(feature = "cpu-kernels")]
    let (param, grad, moments) = match ndarray::adamw_update((param, grad, moments), step) {
        Ok(out) => return out,
        Err(args) => args,
    };
    adamw_update_default(param, grad, moments, step)
}

/// [`adamw_update`] from Burn tensor ops, in the order of Burn's `AdamW`.
pub fn adamw_update_default<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    step: &AdamWStep,
) -> [Tensor<B, D>; 3] {
    let s = step.scalars();
    let (m, v) = match moments.filter(|_| !s.first) {
        Some((m, v)) => (
            m.mul_scalar(s.beta_1) + grad.clone().mul_scalar(s.one_minus_beta_1),
            v.mul_scalar(s.beta_2) + grad.square().mul_scalar(s.one_minus_beta_2),
        ),
        None => (grad.clone().mul_scalar(s.one_minus_beta_1), grad.square().mul_scalar(s.one_minus_beta_2)),
    };
    let delta = m.clone().div_scalar(s.correction_1) / (v.clone().div_scalar(s.correction_2).sqrt().add_scalar(s.epsilon));
    let kept = match s.keep {
        Some(k) => param.mul_scalar(k),
        None => param,
    };
    [kept - delta.mul_scalar(s.lr), m, v]
}

/// One EMA step of a parameter: `ema·decay + online·(1 − decay)` (two tensors of one shape).
///
/// The CPU fast path makes one parallel pass into a new buffer (bit-identical to the default);
/// the default is those tensor ops, which on NdArray are four single-threaded passes.
pub fn ema_mix<B: Backend, const D: usize>(ema: Tensor<B, D>, online: Tensor<B, D>, decay: f64) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let [ema, online] = match ndarray::ema_mix(ema, online, decay) {
        Ok(y) => return y,
        Err(args) => args,
    };
    ema_mix_default(ema, online, decay)
}

/// [`ema_mix`] from Burn tensor ops.
pub fn ema_mix_default<B: Backend, const D: usize>(ema: Tensor<B, D>, online: Tensor<B, D>, decay: f64) -> Tensor<B, D> {
    ema * decay + online * (1.0 - decay)
}

/// `Σ x²` over all elements, as a one-element tensor (what a global gradient norm adds up).
///
/// The CPU fast path sums in one parallel pass without a squared copy (f32 lanes per chunk, the
/// chunks in f64), so it may differ from the default in the last bits.
pub fn squared_norm<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::squared_norm(x) {
        Ok(s) => return s,
        Err(x) => x,
    };
    squared_norm_default(x)
}

/// [`squared_norm`] from Burn tensor ops.
pub fn squared_norm_default<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    x.powi_scalar(2).sum()
}

/// `x·s` (e.g. gradients scaled to a clipped norm). The CPU fast path makes one parallel pass
/// (bit-identical to the default, a single-threaded pass on NdArray).
pub fn scale<B: Backend, const D: usize>(x: Tensor<B, D>, s: f64) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match ndarray::scale(x, s) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x * s
}

#[cfg(all(test, feature = "cpu-kernels"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;

    type N = NdArray<f32>;
    type A = Autodiff<N>;

    fn data(shape: [usize; 3], seed: usize) -> TensorData {
        let n: usize = shape.iter().product();
        TensorData::new((0..n).map(|i| (((i + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * 5.0).collect::<Vec<_>>(), shape)
    }

    fn close(a: TensorData, b: TensorData, rel: f32, what: &str) {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a.iter().zip(&b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= rel * scale, "{what}: max |Δ| {worst:e} (scale {scale:e})");
    }

    /// Convolution: the im2col + GEMM path equals Burn's conv2d (plain NdArray), with and without
    /// bias, for strided, padded and asymmetric kernels.
    #[test]
    fn conv2d_fast_path_equals_default() {
        let dev = Default::default();
        for (kernel, stride, padding, bias) in [
            ([3, 3], [2, 2], [0, 0], true),
            ([3, 3], [1, 1], [1, 1], false),
            ([1, 7], [1, 1], [0, 3], true),
            ([1, 1], [1, 1], [0, 0], true),
        ] {
            let x = Tensor::<N, 3>::from_data(data([2 * 6, 17, 19], 1), &dev).reshape([2, 6, 17, 19]);
            let w = Tensor::<N, 3>::from_data(data([8 * 6, kernel[0], kernel[1]], 2), &dev).reshape([8, 6, kernel[0], kernel[1]]);
            let b = bias.then(|| Tensor::<N, 3>::from_data(data([1, 1, 8], 3), &dev).reshape([8]));
            let fast = conv2d(x.clone(), w.clone(), b.clone(), stride, padding);
            let relu = conv2d_relu(x.clone(), w.clone(), b.clone(), stride, padding);
            close(relu.into_data(), burn::tensor::activation::relu(fast.clone()).into_data(), 0.0, "conv2d_relu");
            // An inference BatchNorm behind the convolution: the epilogue against Burn ops.
            let scale = Tensor::<N, 3>::from_data(data([1, 1, 8], 4), &dev).reshape([8]);
            let bn = conv2d_scale_shift_relu(x.clone(), w.clone(), Some(scale.clone()), b.clone(), stride, padding);
            let o = |t: Tensor<N, 1>| t.reshape([1, 8, 1, 1]);
            let unfused = conv2d_default(x.clone(), w.clone(), None, stride, padding) * o(scale);
            let unfused = burn::tensor::activation::relu(match b.clone() {
                Some(b) => unfused + o(b),
                None => unfused,
            });
            close(bn.into_data(), unfused.into_data(), 2e-6, &format!("conv+scale+shift+relu {kernel:?}"));
            let slow = conv2d_default(x, w, b, stride, padding);
            assert_eq!(fast.dims(), slow.dims());
            close(fast.into_data(), slow.into_data(), 2e-6, &format!("conv {kernel:?} stride {stride:?} pad {padding:?} bias {bias}"));
        }
    }

    /// Pooling: the fast path equals Burn's average (with and without the padding counted) and
    /// max pooling for Inception's windows and an uneven one.
    #[test]
    fn pool_fast_path_equals_burn() {
        use burn::tensor::module as m;
        let dev = Default::default();
        let x = Tensor::<N, 3>::from_data(data([2 * 5, 17, 19], 4), &dev).reshape([2, 5, 17, 19]);
        for (k, s, p) in [([3, 3], [1, 1], [1, 1]), ([3, 3], [2, 2], [0, 0]), ([2, 3], [2, 1], [1, 1])] {
            for pad in [false, true] {
                let fast = avg_pool2d(x.clone(), k, s, p, pad);
                close(
                    fast.into_data(),
                    m::avg_pool2d(x.clone(), k, s, p, pad, false).into_data(),
                    1e-6,
                    &format!("avg {k:?} {s:?} {p:?} {pad}"),
                );
            }
            let fast = max_pool2d(x.clone(), k, s, p);
            close(fast.into_data(), m::max_pool2d(x.clone(), k, s, p, [1, 1], false).into_data(), 0.0, &format!("max {k:?} {s:?} {p:?}"));
        }
    }

    /// Under autodiff the fast convolution's value and gradients (input, weight, bias; a frozen
    /// weight gets none) equal Burn's convolution's.
    #[test]
    fn conv2d_fast_path_equals_default_in_gradient() {
        let dev = Default::default();
        for (kernel, stride, padding, bias, frozen) in [
            ([3, 3], [1, 1], [1, 1], true, false),
            ([3, 3], [2, 2], [0, 0], false, false),
            ([1, 7], [1, 1], [0, 3], true, true),
            ([1, 1], [1, 1], [0, 0], true, false),
            ([5, 3], [2, 3], [2, 1], false, true),
        ] {
            let run = |fast: bool| {
                let x = Tensor::<A, 3>::from_data(data([2 * 4, 11, 13], 1), &dev).reshape([2, 4, 11, 13]).require_grad();
                let w = Tensor::<A, 3>::from_data(data([6 * 4, kernel[0], kernel[1]], 2), &dev).reshape([6, 4, kernel[0], kernel[1]]);
                let w = if frozen { w } else { w.require_grad() };
                let b = bias.then(|| Tensor::<A, 3>::from_data(data([1, 1, 6], 3), &dev).reshape([6]).require_grad());
                let y = if fast {
                    conv2d(x.clone(), w.clone(), b.clone(), stride, padding)
                } else {
                    conv2d_default(x.clone(), w.clone(), b.clone(), stride, padding)
                };
                let [n, o, ho, wo] = y.dims();
                let g = Tensor::<A, 3>::from_data(data([n * o, ho, wo], 9), &dev).reshape([n, o, ho, wo]);
                let grads = (y.clone() * g).sum().backward();
                (
                    y.into_data(),
                    x.grad(&grads).unwrap().into_data(),
                    w.grad(&grads).map(|t| t.into_data()),
                    b.and_then(|t| t.grad(&grads)).map(|t| t.into_data()),
                )
            };
            let (fast, slow) = (run(true), run(false));
            let what = format!("conv {kernel:?} stride {stride:?} pad {padding:?} bias {bias} frozen {frozen}");
            close(fast.0, slow.0, 2e-6, &format!("{what} value"));
            close(fast.1, slow.1, 2e-6, &format!("{what} dx"));
            assert_eq!(fast.2.is_some(), !frozen, "{what}: dW only for a trainable weight");
            if let (Some(a), Some(b)) = (fast.2, slow.2) {
                close(a, b, 2e-6, &format!("{what} dW"));
            }
            assert_eq!(fast.3.is_some(), bias);
            if let (Some(a), Some(b)) = (fast.3, slow.3) {
                close(a, b, 2e-6, &format!("{what} db"));
            }
        }
        assert!(cpu_fast_path::<A>() && cpu_fast_path::<N>());
    }

    /// Every fused op equals the default path in value and gradient, on NdArray and under
    /// autodiff, for a small tensor (serial kernel) and a large one (parallel kernel).
    #[test]
    fn fast_path_equals_default_in_value_and_gradient() {
        let dev = Default::default();
        for shape in [[2, 5, 13], [6, 300, 77]] {
            let x = || Tensor::<A, 3>::from_data(data(shape, 1), &dev).require_grad();
            let w = Tensor::<A, 3>::from_data(data(shape, 5), &dev);
            let n = shape[2];
            let p = |seed| Tensor::<A, 1>::from_data(TensorData::new(data([1, 1, n], seed).to_vec::<f32>().unwrap(), [n]), &dev);
            type Op = fn(Tensor<A, 3>, Option<Tensor<A, 1>>, Option<Tensor<A, 1>>) -> Tensor<A, 3>;
            let cases: [(&str, Op, Op); 6] = [
                ("softmax", |x, _, _| softmax_last(x), |x, _, _| softmax_default(x)),
                ("sin", |x, _, _| sin(x * 20.0), |x, _, _| (x * 20.0).sin()),
                ("cos", |x, _, _| cos(x * 20.0), |x, _, _| (x * 20.0).cos()),
                ("gelu", |x, _, _| gelu_erf(x), |x, _, _| gelu_erf_default(x)),
                ("gelu_tanh", |x, _, _| gelu_tanh(x), |x, _, _| gelu_tanh_default(x)),
                ("layer_norm", |x, g, b| layer_norm(x, g, b, 1e-6), |x, g, b| layer_norm_default(x, g, b, 1e-6)),
            ];
            for (name, fast, slow) in cases {
                let affine: &[bool] = if name == "layer_norm" { &[false, true] } else { &[false] };
                for &aff in affine {
                    let params = || if aff { (Some(p(2).require_grad()), Some(p(3).require_grad())) } else { (None, None) };
                    let (xa, (ga, ba)) = (x(), params());
                    let (xb, (gb, bb)) = (x(), params());
                    let ya = fast(xa.clone(), ga.clone(), ba.clone());
                    let yb = slow(xb.clone(), gb.clone(), bb.clone());
                    close(ya.clone().into_data(), yb.clone().into_data(), 2e-6, &format!("{name} {shape:?} value"));
                    let (gra, grb) = ((ya * w.clone()).sum().backward(), (yb * w.clone()).sum().backward());
                    close(xa.grad(&gra).unwrap().into_data(), xb.grad(&grb).unwrap().into_data(), 5e-6, &format!("{name} {shape:?} dx"));
                    if aff {
                        for (pa, pb, what) in [(ga.unwrap(), gb.unwrap(), "dweight"), (ba.unwrap(), bb.unwrap(), "dbias")] {
                            close(pa.grad(&gra).unwrap().into_data(), pb.grad(&grb).unwrap().into_data(), 5e-6, what);
                        }
                    }
                    // Inference backend (no autodiff).
                    let xi = Tensor::<N, 3>::from_data(data(shape, 1), &dev);
                    let inner = |t: Option<Tensor<A, 1>>| t.map(|t| t.inner());
                    let (gi, bi) = params();
                    close(
                        fast(x(), gi.clone(), bi.clone()).inner().into_data(),
                        match name {
                            "softmax" => softmax_last(xi).into_data(),
                            "gelu" => gelu_erf(xi).into_data(),
                            "gelu_tanh" => gelu_tanh(xi).into_data(),
                            "sin" => sin(xi * 20.0).into_data(),
                            "cos" => cos(xi * 20.0).into_data(),
                            _ => layer_norm(xi, inner(gi), inner(bi), 1e-6).into_data(),
                        },
                        0.0,
                        &format!("{name} inference = autodiff forward"),
                    );
                }
            }
        }
    }

    /// Attention: the fast path equals the default in value and in the gradients of q, k and v,
    /// with v a strided view (as the qkv split makes it), at a serial and a parallel size; the
    /// inference backend gives the autodiff forward.
    #[test]
    fn attention_fast_path_equals_default() {
        let dev = Default::default();
        for (b, h, n, hd) in [(2, 3, 5, 4), (2, 4, 70, 16)] {
            let t = |seed| Tensor::<A, 3>::from_data(data([b * h, n, hd], seed), &dev).reshape([b, h, n, hd]);
            // v as the qkv split leaves it: [B, N, H, hd] storage seen as [B, H, N, hd].
            let v_store = || Tensor::<A, 3>::from_data(data([b * n, h, hd], 3), &dev).reshape([b, n, h, hd]).require_grad();
            let g = Tensor::<A, 3>::from_data(data([b, n, h * hd], 7), &dev);
            let run = |fast: bool| {
                let (q, k, vs) = ((t(1) * 0.5).require_grad(), t(2).require_grad(), v_store());
                let v = vs.clone().swap_dims(1, 2);
                let y = if fast { attention(q.clone(), k.clone(), v) } else { attention_default(q.clone(), k.clone(), v) };
                let grads = (y.clone() * g.clone()).sum().backward();
                let grad = |x: &Tensor<A, 4>| x.grad(&grads).unwrap().into_data();
                (y.into_data(), grad(&q), grad(&k), grad(&vs))
            };
            let (fast, slow) = (run(true), run(false));
            let what = format!("attention {b}x{h}x{n}x{hd}");
            close(fast.0.clone(), slow.0, 2e-6, &format!("{what} value"));
            close(fast.1, slow.1, 5e-6, &format!("{what} dq"));
            close(fast.2, slow.2, 5e-6, &format!("{what} dk"));
            close(fast.3, slow.3, 5e-6, &format!("{what} dv"));
            let inner = |x: Tensor<A, 4>| x.inner();
            let vi = Tensor::<N, 3>::from_data(data([b * n, h, hd], 3), &dev).reshape([b, n, h, hd]).swap_dims(1, 2);
            assert!(ndarray::attention([inner(t(1)), inner(t(2)), vi.clone()]).is_ok(), "{what}: the fast path takes a strided v");
            close(attention(inner(t(1) * 0.5), inner(t(2)), vi).into_data(), fast.0, 0.0, &format!("{what} inference = autodiff forward"));
        }
    }

    /// Attention from the packed projection: the fast path equals the default (slices, RoPE,
    /// attention) in value and in the gradients of the projection and of all four tables, with
    /// RoPE tables shared by the heads or per head and without RoPE (q scaled), at a serial and
    /// a parallel size; the inference backend gives the autodiff forward.
    #[test]
    fn packed_qkv_attention_fast_path_equals_default() {
        use crate::rope::RopeFull;
        let dev = Default::default();
        for (b, h, n, hd) in [(2, 3, 5, 4), (2, 4, 70, 16)] {
            let d = h * hd;
            let mut p = vec![0f32; hd * hd];
            for j in 0..hd / 2 {
                p[(2 * j + 1) * hd + 2 * j] = 1.0;
                p[(2 * j) * hd + 2 * j + 1] = 1.0;
            }
            let swap = Tensor::<A, 2>::from_data(TensorData::new(p, [hd, hd]), &dev);
            let g = Tensor::<A, 3>::from_data(data([b, n, d], 7), &dev);
            for hr in [None, Some(1), Some(h)] {
                let run = |fast: bool| {
                    let qkv = (Tensor::<A, 3>::from_data(data([b, n, 3 * d], 1), &dev) * 0.3).require_grad();
                    let table = |seed| hr.map(|hr| (Tensor::<A, 3>::from_data(data([hr, n, hd], seed), &dev) * 0.2).require_grad());
                    let tables = [table(2), table(3), table(4), table(5)];
                    let rope = tables[0].as_ref().map(|_| {
                        let [cq, sq, ck, sk] = tables.clone().map(|t| t.expect("all four"));
                        RopeFull { cos_q: cq, sin_q: sq, cos_k: ck, sin_k: sk, swap: swap.clone() }
                    });
                    let y = if fast {
                        attention_qkv(qkv.clone(), h, rope.as_ref(), 0.25)
                    } else {
                        attention_qkv_default(qkv.clone(), h, rope.as_ref(), 0.25)
                    };
                    let grads = (y.clone() * g.clone()).sum().backward();
                    let tg: Vec<TensorData> = tables.iter().flatten().map(|t| t.grad(&grads).unwrap().into_data()).collect();
                    (y.into_data(), qkv.grad(&grads).unwrap().into_data(), tg, rope)
                };
                let (fast, slow) = (run(true), run(false));
                let what = format!("packed attention {b}x{h}x{n}x{hd} rope tables {hr:?}");
                close(fast.0.clone(), slow.0, 2e-6, &format!("{what} value"));
                close(fast.1, slow.1, 5e-6, &format!("{what} dqkv"));
                assert_eq!(fast.2.len(), slow.2.len());
                for (i, (a, s)) in fast.2.into_iter().zip(slow.2).enumerate() {
                    close(a, s, 5e-6, &format!("{what} dtable {i}"));
                }
                let qi = Tensor::<N, 3>::from_data(data([b, n, 3 * d], 1), &dev) * 0.3;
                let rope_i = fast.3.map(|r| RopeFull {
                    cos_q: r.cos_q.inner(),
                    sin_q: r.sin_q.inner(),
                    cos_k: r.cos_k.inner(),
                    sin_k: r.sin_k.inner(),
                    swap: r.swap.inner(),
                });
                let tables_i = rope_i.as_ref().map(|r| [r.cos_q.clone(), r.sin_q.clone(), r.cos_k.clone(), r.sin_k.clone()]);
                assert!(ndarray::qkv_attention((qi.clone(), tables_i), h, 0.25).is_ok(), "{what}: the fast path takes the call");
                close(
                    attention_qkv(qi, h, rope_i.as_ref(), 0.25).into_data(),
                    fast.0,
                    0.0,
                    &format!("{what} inference = autodiff forward"),
                );
            }
        }
    }

    /// The contiguous permute equals Burn's permute in value and gradient (input itself a
    /// transposed view), serial and parallel sizes, and leaves row-major storage.
    #[test]
    fn permute_fast_path_equals_burn() {
        let dev = Default::default();
        for (b, n, c) in [(2, 3, 5), (4, 60, 330)] {
            let g = Tensor::<A, 3>::from_data(data([c, b, n], 9), &dev).reshape([c, 1, b, n]);
            let run = |fast: bool| {
                let xs = Tensor::<A, 3>::from_data(data([b, n, c], 1), &dev).require_grad();
                let x = xs.clone().swap_dims(1, 2).unsqueeze_dim::<4>(1); // [B, 1, C, N], strided
                let y = if fast { permute(x, [2, 1, 0, 3]) } else { x.permute([2, 1, 0, 3]) };
                let grads = (y.clone() * g.clone()).sum().backward();
                (y.into_data(), xs.grad(&grads).unwrap().into_data())
            };
            let (fast, slow) = (run(true), run(false));
            close(fast.0.clone(), slow.0, 0.0, "permute value");
            close(fast.1, slow.1, 0.0, "permute gradient");
            let xi = Tensor::<N, 3>::from_data(data([b, n, c], 1), &dev).swap_dims(1, 2).unsqueeze_dim::<4>(1);
            let yi = ndarray::permute(xi, [2, 1, 0, 3]).unwrap_or_else(|_| panic!("the fast path takes f32"));
            let burn::tensor::TensorPrimitive::Float(burn::backend::ndarray::NdArrayTensor::F32(st)) = yi.clone().into_primitive() else {
                panic!("an f32 NdArray tensor")
            };
            assert!(st.view().is_standard_layout(), "row-major result");
            close(yi.into_data(), fast.0, 0.0, "inference = autodiff forward");
        }
    }

    /// MoVQ modulation: the fast path equals the default in value and in the gradients of x and
    /// of the whole modulation `m` (zero outside the two chunks read), for two chunk orders, all
    /// rows latent or only the last ones, serial and parallel sizes; inference = autodiff forward.
    #[test]
    fn modulate_latents_fast_path_equals_default() {
        let dev = Default::default();
        for (b, n, t, d, k) in [(2, 5, 3, 4, 2), (3, 200, 128, 64, 4), (2, 6, 6, 8, 4)] {
            for (shift_at, scale_at) in [(0, 1), (k - 1, k - 2)] {
                let g = Tensor::<A, 3>::from_data(data([b, n, d], 7), &dev);
                let run = |fast: bool| {
                    let x = Tensor::<A, 3>::from_data(data([b, n, d], 1), &dev).require_grad();
                    let m = (Tensor::<A, 3>::from_data(data([b, t, k * d], 2), &dev) * 0.3).require_grad();
                    let y = if fast {
                        modulate_latents(x.clone(), m.clone(), shift_at, scale_at, 1e-6)
                    } else {
                        modulate_latents_default(x.clone(), m.clone(), shift_at, scale_at, 1e-6)
                    };
                    let grads = (y.clone() * g.clone()).sum().backward();
                    (y.into_data(), x.grad(&grads).unwrap().into_data(), m.grad(&grads).unwrap().into_data())
                };
                let (fast, slow) = (run(true), run(false));
                let what = format!("modulate {b}x{n}x{d}, {t} latent rows, chunks {shift_at}/{scale_at} of {k}");
                close(fast.0.clone(), slow.0, 2e-6, &format!("{what} value"));
                close(fast.1, slow.1, 5e-6, &format!("{what} dx"));
                close(fast.2, slow.2, 5e-6, &format!("{what} dm"));
                let xi = Tensor::<N, 3>::from_data(data([b, n, d], 1), &dev);
                let mi = Tensor::<N, 3>::from_data(data([b, t, k * d], 2), &dev) * 0.3;
                assert!(ndarray::modulate_latents(xi.clone(), mi.clone(), [shift_at, scale_at], 1e-6).is_ok(), "{what}: fast path taken");
                close(modulate_latents(xi, mi, shift_at, scale_at, 1e-6).into_data(), fast.0, 0.0, &format!("{what} inference"));
            }
        }
    }

    /// adaLN modulation: the fast path equals the default in value and in the gradients of x and
    /// of the whole modulation `m` (zero outside the two chunks read), for two chunk orders, at a
    /// serial and a parallel size; inference = autodiff forward.
    #[test]
    fn modulate_adaln_fast_path_equals_default() {
        let dev = Default::default();
        for (b, n, d, k) in [(2, 5, 4, 2), (3, 130, 96, 6)] {
            for (shift_at, scale_at) in [(0, 1), (k - 1, k - 2)] {
                let g = Tensor::<A, 3>::from_data(data([b, n, d], 7), &dev);
                let m_of = || Tensor::<A, 3>::from_data(data([b, 1, k * d], 2), &dev).reshape([b, k * d]) * 0.3;
                let run = |fast: bool| {
                    let x = Tensor::<A, 3>::from_data(data([b, n, d], 1), &dev).require_grad();
                    let m = m_of().require_grad();
                    let y = if fast {
                        modulate_adaln(x.clone(), m.clone(), shift_at, scale_at, 1e-6)
                    } else {
                        modulate_adaln_default(x.clone(), m.clone(), shift_at, scale_at, 1e-6)
                    };
                    let grads = (y.clone() * g.clone()).sum().backward();
                    (y.into_data(), x.grad(&grads).unwrap().into_data(), m.grad(&grads).unwrap().into_data())
                };
                let (fast, slow) = (run(true), run(false));
                let what = format!("adaLN {b}x{n}x{d}, chunks {shift_at}/{scale_at} of {k}");
                close(fast.0.clone(), slow.0, 2e-6, &format!("{what} value"));
                close(fast.1, slow.1, 5e-6, &format!("{what} dx"));
                close(fast.2, slow.2, 5e-6, &format!("{what} dm"));
                let xi = Tensor::<N, 3>::from_data(data([b, n, d], 1), &dev);
                let mi = Tensor::<N, 3>::from_data(data([b, 1, k * d], 2), &dev).reshape([b, k * d]) * 0.3;
                assert!(ndarray::modulate_adaln(xi.clone(), mi.clone(), [shift_at, scale_at], 1e-6).is_ok(), "{what}: fast path taken");
                close(modulate_adaln(xi, mi, shift_at, scale_at, 1e-6).into_data(), fast.0, 0.0, &format!("{what} inference"));
            }
        }
    }

    /// On the plain backend GELU, sin and cos overwrite an input that nothing else holds, with
    /// the values of the out-of-place kernels, and leave a shared input untouched (serial and
    /// parallel sizes; sin and cos also past the polynomial's range).
    #[test]
    fn elementwise_in_place_only_when_sole_owner() {
        let dev = Default::default();
        type Op = fn(Tensor<N, 3>) -> Tensor<N, 3>;
        let ops: [(&str, Op, f32); 5] =
            [("gelu", gelu_erf, 1.0), ("gelu_tanh", gelu_tanh, 1.0), ("sin", sin, 20.0), ("cos", cos, 20.0), ("cos", cos, 5e3)];
        for shape in [[2, 5, 13], [6, 300, 77]] {
            for (name, f, scale) in ops {
                let shared = Tensor::<N, 3>::from_data(data(shape, 4), &dev) * scale;
                let before = shared.clone().into_data();
                let out_of_place = f(shared.clone()).into_data();
                close(shared.into_data(), before.clone(), 0.0, &format!("{name}: shared input kept"));
                let unique = Tensor::<N, 3>::from_data(before, &dev);
                close(f(unique).into_data(), out_of_place, 0.0, &format!("{name}: in place = out of place"));
            }
        }
    }

    /// The gated residual: the fast path equals the default in value (exactly: the same product
    /// and sum) and in the gradients of `h`, `a` and `m`, at a serial and a parallel size; on the
    /// plain backend it writes into `h` only when nothing else holds it.
    #[test]
    fn residual_gate_fast_path_equals_default() {
        let dev = Default::default();
        for (b, n, d, k) in [(2, 5, 4, 3), (3, 130, 96, 6)] {
            for at in [0, k - 1] {
                let g = Tensor::<A, 3>::from_data(data([b, n, d], 7), &dev);
                let run = |fast: bool| {
                    let h = Tensor::<A, 3>::from_data(data([b, n, d], 1), &dev).require_grad();
                    let a = Tensor::<A, 3>::from_data(data([b, n, d], 3), &dev).require_grad();
                    let m = (Tensor::<A, 3>::from_data(data([b, 1, k * d], 2), &dev).reshape([b, k * d]) * 0.3).require_grad();
                    let y = if fast {
                        residual_gate(h.clone(), a.clone(), m.clone(), at)
                    } else {
                        residual_gate_default(h.clone(), a.clone(), m.clone(), at)
                    };
                    let grads = (y.clone() * g.clone()).sum().backward();
                    let grad = |t: Tensor<A, 3>| t.grad(&grads).unwrap().into_data();
                    (y.into_data(), grad(h), grad(a), m.grad(&grads).unwrap().into_data())
                };
                let (fast, slow) = (run(true), run(false));
                let what = format!("gate {b}x{n}x{d}, chunk {at} of {k}");
                close(fast.0.clone(), slow.0.clone(), 0.0, &format!("{what} value"));
                close(fast.1, slow.1, 0.0, &format!("{what} dh"));
                close(fast.2, slow.2, 0.0, &format!("{what} da"));
                close(fast.3, slow.3, 2e-5, &format!("{what} dm"));
                let hi = Tensor::<N, 3>::from_data(data([b, n, d], 1), &dev);
                let ai = Tensor::<N, 3>::from_data(data([b, n, d], 3), &dev);
                let mi = Tensor::<N, 3>::from_data(data([b, 1, k * d], 2), &dev).reshape([b, k * d]) * 0.3;
                // `h` shared: a new buffer, `h` untouched; then `h` alone: written in place.
                let shared = residual_gate(hi.clone(), ai.clone(), mi.clone(), at);
                close(shared.into_data(), fast.0.clone(), 0.0, &format!("{what} inference, h shared"));
                close(hi.clone().into_data(), data([b, n, d], 1), 0.0, &format!("{what}: shared h unchanged"));
                assert!(ndarray::residual_gate((hi.clone(), ai.clone(), mi.clone()), at).is_ok(), "{what}: fast path taken");
                close(residual_gate(hi, ai, mi, at).into_data(), fast.0, 0.0, &format!("{what} inference, in place"));
            }
        }
    }

    /// RoPE: the fast path equals the default in value (exactly: same products and sums) and in
    /// the gradients of x and of both tables, for tables shared by all heads and per head, with x
    /// a strided view as the qkv split leaves it, at a serial and a parallel size.
    #[test]
    fn rope_fast_path_equals_default() {
        let dev = Default::default();
        for (b, h, n, hd) in [(2, 3, 5, 4), (3, 4, 70, 32)] {
            for hr in [1, h] {
                let mut p = vec![0f32; hd * hd];
                for j in 0..hd / 2 {
                    p[(2 * j + 1) * hd + 2 * j] = 1.0;
                    p[(2 * j) * hd + 2 * j + 1] = 1.0;
                }
                let swap = Tensor::<A, 2>::from_data(TensorData::new(p, [hd, hd]), &dev);
                let g = Tensor::<A, 3>::from_data(data([b * h, n, hd], 9), &dev).reshape([b, h, n, hd]);
                let run = |fast: bool| {
                    let xs = Tensor::<A, 3>::from_data(data([b * n, h, hd], 1), &dev).reshape([b, n, h, hd]).require_grad();
                    let (c, s) = (
                        Tensor::<A, 3>::from_data(data([hr, n, hd], 2), &dev).require_grad(),
                        Tensor::<A, 3>::from_data(data([hr, n, hd], 3), &dev).require_grad(),
                    );
                    let x = xs.clone().swap_dims(1, 2);
                    let y = if fast { rope(x, c.clone(), s.clone(), &swap) } else { rope_default(x, c.clone(), s.clone(), &swap) };
                    let grads = (y.clone() * g.clone()).sum().backward();
                    (
                        y.into_data(),
                        xs.grad(&grads).unwrap().into_data(),
                        c.grad(&grads).unwrap().into_data(),
                        s.grad(&grads).unwrap().into_data(),
                    )
                };
                let (fast, slow) = (run(true), run(false));
                let what = format!("rope {b}x{h}x{n}x{hd} tables for {hr} heads");
                close(fast.0.clone(), slow.0, 0.0, &format!("{what} value"));
                close(fast.1, slow.1, 0.0, &format!("{what} dx"));
                close(fast.2, slow.2, 5e-6, &format!("{what} dcos"));
                close(fast.3, slow.3, 5e-6, &format!("{what} dsin"));
                let xi = Tensor::<N, 3>::from_data(data([b * n, h, hd], 1), &dev).reshape([b, n, h, hd]).swap_dims(1, 2);
                let ti = |seed| Tensor::<N, 3>::from_data(data([hr, n, hd], seed), &dev);
                assert!(ndarray::rope((xi.clone(), ti(2), ti(3))).is_ok(), "{what}: the fast path takes a strided x");
                close(rope(xi, ti(2), ti(3), &swap.inner()).into_data(), fast.0, 0.0, &format!("{what} inference = autodiff forward"));
            }
        }
    }

    /// Linear: the fast path equals the default in value and in dx, dW and db, with and without
    /// bias, with a frozen weight (no dW asked), and on a strided input.
    #[test]
    fn linear_fast_path_equals_default() {
        let dev = Default::default();
        for (b, n, inp, out) in [(2, 3, 5, 4), (4, 70, 96, 130)] {
            for (bias, frozen) in [(true, false), (false, false), (true, true)] {
                let g = Tensor::<A, 3>::from_data(data([b, n, out], 9), &dev);
                let run = |fast: bool| {
                    // x as a transposed view of [B, in, N] storage.
                    let xs = Tensor::<A, 3>::from_data(data([b, inp, n], 1), &dev).require_grad();
                    let w = Tensor::<A, 3>::from_data(data([1, inp, out], 2), &dev).reshape([inp, out]);
                    let w = if frozen { w } else { w.require_grad() };
                    let bb = bias.then(|| Tensor::<A, 3>::from_data(data([1, 1, out], 3), &dev).reshape([out]).require_grad());
                    let x = xs.clone().swap_dims(1, 2);
                    let y = if fast { linear(x, w.clone(), bb.clone()) } else { linear_default(x, w.clone(), bb.clone()) };
                    let grads = (y.clone() * g.clone()).sum().backward();
                    (
                        y.into_data(),
                        xs.grad(&grads).unwrap().into_data(),
                        w.grad(&grads).map(|t| t.into_data()),
                        bb.and_then(|t| t.grad(&grads)).map(|t| t.into_data()),
                    )
                };
                let (fast, slow) = (run(true), run(false));
                let what = format!("linear {b}x{n}x{inp}->{out} bias {bias} frozen {frozen}");
                close(fast.0.clone(), slow.0, 2e-6, &format!("{what} value"));
                close(fast.1, slow.1, 2e-6, &format!("{what} dx"));
                assert_eq!(fast.2.is_some(), !frozen, "{what}: dW only for a trainable weight");
                if let (Some(a), Some(b)) = (fast.2, slow.2) {
                    close(a, b, 2e-6, &format!("{what} dW"));
                }
                assert_eq!(fast.3.is_some(), bias);
                if let (Some(a), Some(b)) = (fast.3, slow.3) {
                    close(a, b, 2e-6, &format!("{what} db"));
                }
                let xi = Tensor::<N, 3>::from_data(data([b, inp, n], 1), &dev).swap_dims(1, 2);
                let wi = Tensor::<N, 3>::from_data(data([1, inp, out], 2), &dev).reshape([inp, out]);
                let bi = bias.then(|| Tensor::<N, 3>::from_data(data([1, 1, out], 3), &dev).reshape([out]));
                assert!(ndarray::linear((xi.clone(), wi.clone(), bi.clone())).is_ok(), "{what}: the fast path takes a strided x");
                close(linear(xi, wi, bi).into_data(), fast.0, 0.0, &format!("{what} inference = autodiff forward"));
            }
        }
    }

    /// Empty tensors go to the default path instead of the kernels (which assume whole rows).
    #[test]
    fn empty_tensors_take_the_default() {
        let dev = Default::default();
        let e = Tensor::<N, 4>::zeros([2, 3, 0, 4], &dev);
        assert!(ndarray::attention([e.clone(), e.clone(), e.clone()]).is_err());
        assert!(ndarray::rope((e, Tensor::zeros([3, 0, 4], &dev), Tensor::zeros([3, 0, 4], &dev))).is_err());
    }

    /// A parameter that needs no gradient, and an input that needs none, still work.
    #[test]
    fn untracked_inputs() {
        let dev = Default::default();
        let x = Tensor::<A, 3>::from_data(data([2, 3, 8], 0), &dev);
        let g = Tensor::<A, 1>::ones([8], &dev).require_grad();
        let y = layer_norm(x.clone(), Some(g.clone()), None, 1e-5);
        let grads = y.sum().backward();
        assert!(g.grad(&grads).is_some());
        assert!(x.grad(&grads).is_none());
        let y = softmax_last(x);
        assert_eq!(y.dims(), [2, 3, 8]);
    }

    /// The AdamW pass equals the ten tensor ops bit for bit: first and later steps, with and
    /// without weight decay, serial and parallel sizes; a shared parameter buffer is copied, not
    /// written through.
    #[test]
    fn adamw_fast_path_equals_default_bit_for_bit() {
        let dev = Default::default();
        for shape in [[2, 5, 13], [4, 150, 77]] {
            for weight_decay in [0.0, 0.05] {
                let t = |seed| Tensor::<N, 3>::from_data(data(shape, seed), &dev);
                let (mut fast, mut slow) = ((t(1), None), (t(1), None));
                for time in 1..=3 {
                    let step = AdamWStep { lr: 0.01 * time as f64, beta_1: 0.9, beta_2: 0.95, epsilon: 1e-8, weight_decay, time };
                    let grad = t(10 + time);
                    let (shared, before) = (fast.0.clone(), fast.0.clone().into_data());
                    let [p, m, v] = adamw_update(fast.0, grad.clone(), fast.1, &step);
                    let [q, n, w] = adamw_update_default(slow.0, grad, slow.1, &step);
                    for (a, b) in [(&p, &q), (&m, &n), (&v, &w)] {
                        a.clone().into_data().assert_eq(&b.clone().into_data(), true);
                    }
                    assert_eq!(shared.into_data(), before, "a shared buffer keeps its old value");
                    assert_ne!(p.clone().into_data(), before, "the parameter moved");
                    (fast, slow) = ((p, Some((m, v))), (q, Some((n, w))));
                }
            }
        }
    }

    /// EMA step and scaling: bit-identical to the tensor ops, on a size split across threads and
    /// on a strided input; the squared norm within f32 rounding of the default's (another order).
    #[test]
    fn optimiser_passes_equal_their_defaults() {
        let dev = Default::default();
        for shape in [[2, 5, 13], [4, 150, 77]] {
            let t = |seed| Tensor::<N, 3>::from_data(data(shape, seed), &dev);
            // A strided view and the same values stored row-major.
            let strided = t(3).swap_dims(1, 2);
            let dense = || Tensor::<N, 3>::from_data(strided.clone().into_data(), &dev);
            let other = || Tensor::<N, 3>::from_data(data([shape[0], shape[2], shape[1]], 2), &dev);
            for decay in [0.0, 0.9999, 0.5] {
                let (fast, slow) = (ema_mix(t(1), t(2), decay), ema_mix_default(t(1), t(2), decay));
                fast.into_data().assert_eq(&slow.into_data(), true);
            }
            ema_mix(strided.clone(), other(), 0.75).into_data().assert_eq(&ema_mix_default(dense(), other(), 0.75).into_data(), true);
            // In place (the only reference), and into a new buffer when another tensor shares it.
            scale(t(4), 0.123).into_data().assert_eq(&(t(4) * 0.123).into_data(), true);
            let shared = t(4);
            scale(shared.clone(), 0.123).into_data().assert_eq(&(t(4) * 0.123).into_data(), true);
            shared.into_data().assert_eq(&t(4).into_data(), true);
            scale(strided.clone(), -2.5).into_data().assert_eq(&(dense() * -2.5).into_data(), true);
            let (fast, slow) = (squared_norm(t(5)).into_scalar(), squared_norm_default(t(5)).into_scalar());
            assert!((fast - slow).abs() <= 1e-5 * slow, "squared norm {fast} vs {slow}");
            let exact: f64 = data(shape, 5).to_vec::<f32>().unwrap().iter().map(|&v| (v as f64).powi(2)).sum();
            assert!((fast as f64 - exact).abs() <= 1e-6 * exact, "squared norm {fast} vs exact {exact}");
        }
        // Autodiff tensors take the default path and stay tracked.
        let x = Tensor::<A, 3>::from_data(data([2, 3, 4], 1), &dev).require_grad();
        let g = squared_norm(x.clone()).backward();
        x.grad(&g).unwrap().into_data().assert_eq(&(x.inner() * 2.0).into_data(), true);
    }

    /// RoPE table expansion: the fast path equals the default in value and in the gradient of
    /// the compact table, for both halves, with identity rows before and after the table, with
    /// and without a scale, per head and shared; the inference backend gives the same values.
    #[test]
    fn rope_expand_equals_default() {
        let dev = Default::default();
        for (hr, n, half, seq, start) in [(1, 4, 3, 6, 1), (3, 5, 8, 5, 0), (12, 40, 32, 171, 128)] {
            let t = || Tensor::<A, 3>::from_data(data([hr, n, half], 2), &dev).require_grad();
            let w = Tensor::<A, 3>::from_data(data([hr, seq, 2 * half], 9), &dev);
            for kind in [RopeHalf::Cos, RopeHalf::Sin] {
                for scale in [1.0, 0.125, 0.3] {
                    let (ta, tb) = (t(), t());
                    let (ya, yb) =
                        (rope_expand(ta.clone(), kind, seq, start, scale), rope_expand_default(tb.clone(), kind, seq, start, scale));
                    let what = format!("{kind:?} [{hr}, {n}, {half}] in {seq} at {start} ×{scale}");
                    ya.clone().into_data().assert_eq(&yb.clone().into_data(), true);
                    let (ga, gb) = ((ya * w.clone()).sum().backward(), (yb * w.clone()).sum().backward());
                    close(ta.grad(&ga).unwrap().into_data(), tb.grad(&gb).unwrap().into_data(), 1e-6, &format!("{what} gradient"));
                    let ti = Tensor::<N, 3>::from_data(data([hr, n, half], 2), &dev);
                    rope_expand(ti, kind, seq, start, scale)
                        .into_data()
                        .assert_eq(&rope_expand_default(t().inner(), kind, seq, start, scale).into_data(), true);
                }
            }
        }
    }

    /// A table that does not fit in the sequence is a caller bug, named, on both paths (the
    /// default used to underflow `seq − start − n`).
    #[test]
    fn rope_expand_outside_the_sequence_panics_with_the_rows() {
        let dev = Default::default();
        for fast in [true, false] {
            let t = Tensor::<N, 3>::from_data(data([1, 4, 2], 2), &dev);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if fast {
                    rope_expand(t, RopeHalf::Sin, 5, 2, 1.0)
                } else {
                    rope_expand_default(t, RopeHalf::Sin, 5, 2, 1.0)
                }
            }));
            let message = run.expect_err("rows 2..6 of 5").downcast::<String>().expect("a formatted message");
            assert!(message.contains("rows 2..6 outside a sequence of 5"), "{message}");
        }
    }
}
