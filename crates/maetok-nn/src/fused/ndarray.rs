//! The CPU fast path of [`super`] for `NdArray<f32>` and `Autodiff<NdArray<f32>>`.
//!
//! A generic tensor is recognised by its backend's `TypeId` and its primitive moved out through
//! `Any` (no unsafe code here); f32 data run the kernels (`kernels`, `attention`, `rope`,
//! `linear`), anything else (f64 data, quantised tensors, other backends, shapes a kernel does
//! not take) is handed back untouched for the default path.
//! Under autodiff each op records one node whose backward calls the matching backward kernel.

use std::any::{Any, TypeId};
use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use super::adaln as ada;
use super::attention as attn;
use super::gate;
use super::kernels;
use super::layout;
use super::linear as lin;
use super::modulate as modl;
use super::qkv_attention as qkva;
use super::rope as rot;
use super::rope_tables as tabs;

type Nd = NdArray<f32>;
type Ad = Autodiff<Nd>;

/// Moves `t` into a `U` when `T` is `U`.
fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("filled above")),
        None => Err(slot.expect("untouched")),
    }
}

/// The float primitive of `x` as backend `T`'s, or `x` back when `B` is not `T`.
fn prim<B: Backend, T: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FloatTensor<T>, Tensor<B, D>> {
    if TypeId::of::<B>() != TypeId::of::<T>() {
        return Err(x);
    }
    match x.into_primitive() {
        TensorPrimitive::Float(p) => cast(p).map_err(|p| Tensor::from_primitive(TensorPrimitive::Float(p))),
        q => Err(Tensor::from_primitive(q)),
    }
}

/// A backend `T` primitive as a tensor of `B` (the caller checked that `B` is `T`).
fn wrap<T: Backend, B: Backend, const D: usize>(p: FloatTensor<T>) -> Tensor<B, D> {
    match cast(p) {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(p)),
        Err(_) => unreachable!("B is T (checked by prim)"),
    }
}

/// Which fast path a backend type takes.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Plain,
    Autodiff,
}

fn path<B: Backend>() -> Option<Path> {
    let id = TypeId::of::<B>();
    if id == TypeId::of::<Nd>() {
        Some(Path::Plain)
    } else if id == TypeId::of::<Ad>() {
        Some(Path::Autodiff)
    } else {
        None
    }
}

/// Whether `B` is one of the backends this module serves.
pub(super) fn takes_fast_path<B: Backend>() -> bool {
    path::<B>().is_some()
}

/// The f32 values of `t` in row-major order (borrowed when contiguous) and its shape.
fn read(t: &NdArrayTensor) -> Option<(Cow<'_, [f32]>, Vec<usize>)> {
    let NdArrayTensor::F32(storage) = t else { return None };
    let view = storage.view();
    let shape = view.shape().to_vec();
    let values = match view.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(layout::standard_layout(&view)),
    };
    Some((values, shape))
}

/// The f32 values of `x` in row-major order, copied with [`layout::standard_layout`]; `x` back
/// when it is not an f32 tensor of this module's backends.
pub(super) fn host_values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Vec<f32>, Tensor<B, D>> {
    let values = |t: &NdArrayTensor| read(t).map(|(v, _)| v.into_owned());
    match path::<B>() {
        Some(Path::Plain) => {
            let p = prim::<B, Nd, D>(x)?;
            values(&p).ok_or_else(|| wrap::<Nd, B, D>(p))
        }
        Some(Path::Autodiff) => {
            let p = prim::<B, Ad, D>(x)?;
            values(&p.primitive).ok_or_else(|| wrap::<Ad, B, D>(p))
        }
        None => Err(x),
    }
}

/// An f32 tensor of `shape` from row-major values.
fn make(shape: &[usize], values: Vec<f32>) -> NdArrayTensor {
    let array = ndarray::Array::from_shape_vec(ndarray::IxDyn(shape), values).expect("values match the shape");
    NdArrayTensor::from(array.into_shared())
}

/// Rows of length `n` (the last dimension), when there is one.
fn row_len(shape: &[usize]) -> Option<usize> {
    shape.last().copied().filter(|&n| n > 0)
}

// ---- softmax ----

fn softmax_nd(x: &NdArrayTensor) -> Option<NdArrayTensor> {
    let (xs, shape) = read(x)?;
    let n = row_len(&shape)?;
    let mut y = layout::zeroed(xs.len());
    kernels::softmax_rows(&xs, &mut y, n);
    Some(make(&shape, y))
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Nd, 1> for SoftmaxBackward {
    /// The output `y`.
    type State = NdArrayTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<Nd, _>(ops.parents, ops.node, grads, |dy| {
            let (ys, shape) = read(&y).expect("f32 output");
            let (gs, _) = read(&dy).expect("f32 gradient");
            let mut dx = layout::zeroed(ys.len());
            kernels::softmax_rows_backward(&ys, &gs, &mut dx, row_len(&shape).expect("checked forward"));
            make(&shape, dx)
        });
    }
}

pub(super) fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let p = prim::<B, Nd, D>(x)?;
            softmax_nd(&p).map(wrap::<Nd, B, D>).ok_or_else(|| wrap::<Nd, B, D>(p))
        }
        Some(Path::Autodiff) => {
            let p = prim::<B, Ad, D>(x)?;
            let Some(y) = softmax_nd(&p.primitive) else { return Err(wrap::<Ad, B, D>(p)) };
            let out = match SoftmaxBackward.prepare::<NoCheckpointing>([p.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(wrap::<Ad, B, D>(out))
        }
        None => Err(x),
    }
}

// ---- element-wise operations whose backward reads the input: GELU, sin, cos ----

/// An element-wise `y = f(x)` whose backward is `dx = dy·f′(x)`.
pub(super) trait Elementwise: Copy + Send + Sync + std::fmt::Debug + 'static {
    fn forward(self, x: &[f32], y: &mut [f32]);
    fn backward(self, x: &[f32], dy: &[f32], dx: &mut [f32]);
    /// Writes `f(x)` over `x` (the same values as [`forward`](Self::forward)).
    fn in_place(self, x: &mut [f32]);
}

/// Which GELU: the exact erf form or the tanh approximation.
#[derive(Clone, Copy, Debug)]
pub(super) enum Gelu {
    Erf,
    Tanh,
}

impl Elementwise for Gelu {
    fn forward(self, x: &[f32], y: &mut [f32]) {
        match self {
            Gelu::Erf => kernels::gelu_erf(x, y),
            Gelu::Tanh => kernels::gelu_tanh(x, y),
        }
    }

    fn backward(self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        match self {
            Gelu::Erf => kernels::gelu_erf_backward(x, dy, dx),
            Gelu::Tanh => kernels::gelu_tanh_backward(x, dy, dx),
        }
    }

    fn in_place(self, x: &mut [f32]) {
        kernels::gelu_in_place(x, matches!(self, Gelu::Tanh))
    }
}

/// `sin` or `cos` (the RoPE tables' angles).
#[derive(Clone, Copy, Debug)]
pub(super) enum Trig {
    Sin,
    Cos,
}

impl Elementwise for Trig {
    fn forward(self, x: &[f32], y: &mut [f32]) {
        kernels::sin_or_cos(x, y, matches!(self, Trig::Cos))
    }

    fn backward(self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        kernels::sin_or_cos_backward(x, dy, dx, matches!(self, Trig::Cos))
    }

    fn in_place(self, x: &mut [f32]) {
        kernels::sin_or_cos_in_place(x, matches!(self, Trig::Cos))
    }
}

fn elementwise_nd<K: Elementwise>(x: &NdArrayTensor, kind: K) -> Option<NdArrayTensor> {
    let (xs, shape) = read(x)?;
    let mut y = layout::zeroed(xs.len());
    kind.forward(&xs, &mut y);
    Some(make(&shape, y))
}

#[derive(Debug)]
struct ElementwiseBackward<K>(K);

impl<K: Elementwise> Backward<Nd, 1> for ElementwiseBackward<K> {
    /// The input `x`.
    type State = NdArrayTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Nd, _>(ops.parents, ops.node, grads, |dy| {
            let (xs, shape) = read(&x).expect("f32 input");
            let (gs, _) = read(&dy).expect("f32 gradient");
            let mut dx = layout::zeroed(xs.len());
            self.0.backward(&xs, &gs, &mut dx);
            make(&shape, dx)
        });
    }
}

/// `kind`'s `f(x)` on the fast path, or `x` back. On the plain backend `x` is overwritten when
/// nothing else holds it: at inference the MLP's hidden activation (`[B·N, 4D]`) is usually held
/// only by its GELU call, which then fills no new buffer as large.
pub(super) fn elementwise<B: Backend, const D: usize, K: Elementwise>(x: Tensor<B, D>, kind: K) -> Result<Tensor<B, D>, Tensor<B, D>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let p = prim::<B, Nd, D>(x)?;
            if sole_row_major(&p) {
                let mut a = writable(p).expect("f32, checked");
                kind.in_place(a.as_slice_mut().expect("row-major, checked"));
                return Ok(wrap::<Nd, B, D>(NdArrayTensor::from(a)));
            }
            elementwise_nd(&p, kind).map(wrap::<Nd, B, D>).ok_or_else(|| wrap::<Nd, B, D>(p))
        }
        Some(Path::Autodiff) => {
            let p = prim::<B, Ad, D>(x)?;
            let Some(y) = elementwise_nd(&p.primitive, kind) else { return Err(wrap::<Ad, B, D>(p)) };
            let out = match ElementwiseBackward(kind).prepare::<NoCheckpointing>([p.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(p.primitive.clone(), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(wrap::<Ad, B, D>(out))
        }
        None => Err(x),
    }
}

// ---- LayerNorm ----

/// What the LayerNorm backward needs: the input, the weight (affine) and per-row mean and
/// `1/√(var + eps)`.
#[derive(Clone, Debug)]
struct LnState {
    x: NdArrayTensor,
    weight: Option<NdArrayTensor>,
    stats: Vec<f32>,
}

/// Forward on f32 tensors; `None` when any of them is not f32 or the shapes do not fit.
fn layer_norm_nd(x: &NdArrayTensor, w: Option<&NdArrayTensor>, b: Option<&NdArrayTensor>, eps: f64) -> Option<(NdArrayTensor, Vec<f32>)> {
    let (xs, shape) = read(x)?;
    let n = row_len(&shape)?;
    let (ws, bs) = (param(w, n)?, param(b, n)?);
    let mut y = layout::zeroed(xs.len());
    let mut stats = vec![0.0; 2 * (xs.len() / n)];
    kernels::layer_norm_rows(&xs, ws.as_deref(), bs.as_deref(), eps as f32, n, &mut y, &mut stats);
    Some((make(&shape, y), stats))
}

/// The values of an optional `[n]` parameter: `None` when it is not f32 of length `n`.
fn param(t: Option<&NdArrayTensor>, n: usize) -> Option<Option<Cow<'_, [f32]>>> {
    match t {
        None => Some(None),
        Some(t) => read(t).filter(|(v, _)| v.len() == n).map(|(v, _)| Some(v)),
    }
}

/// `(dx, dweight, dbias)` from the state and the output gradient; the parameter gradients only
/// for an affine norm (`None` otherwise).
fn layer_norm_backward_nd(state: &LnState, dy: &NdArrayTensor) -> (NdArrayTensor, Option<(NdArrayTensor, NdArrayTensor)>) {
    let (xs, shape) = read(&state.x).expect("f32 input");
    let (gs, _) = read(dy).expect("f32 gradient");
    let n = row_len(&shape).expect("checked forward");
    let w = state.weight.as_ref().map(|w| read(w).expect("f32 weight").0);
    let mut dx = layout::zeroed(xs.len());
    let affine = w.is_some();
    let (dw, db) = kernels::layer_norm_rows_backward(&xs, w.as_deref(), &state.stats, &gs, n, &mut dx, affine);
    (make(&shape, dx), affine.then(|| (make(&[n], dw), make(&[n], db))))
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Nd, 1> for LayerNormBackward {
    type State = LnState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let state = ops.state;
        unary::<Nd, _>(ops.parents, ops.node, grads, |dy| layer_norm_backward_nd(&state, &dy).0);
    }
}

#[derive(Debug)]
struct AffineLayerNormBackward;

impl Backward<Nd, 3> for AffineLayerNormBackward {
    type State = LnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        let (dx, params) = layer_norm_backward_nd(&ops.state, &dy);
        let (dw, db) = params.expect("an affine norm has a weight");
        for (parent, grad) in [(px, dx), (pw, dw), (pb, db)] {
            if let Some(node) = parent {
                grads.register::<Nd>(node.id, grad);
            }
        }
    }
}

type LnArgs<B, const D: usize> = (Tensor<B, D>, Option<Tensor<B, 1>>, Option<Tensor<B, 1>>);
type LnPrims<T> = (FloatTensor<T>, Option<FloatTensor<T>>, Option<FloatTensor<T>>);

/// The primitives of a LayerNorm's arguments as backend `T`'s, or the arguments back.
fn ln_prims<B: Backend, T: Backend, const D: usize>((x, w, b): LnArgs<B, D>) -> Result<LnPrims<T>, LnArgs<B, D>> {
    let x = match prim::<B, T, D>(x) {
        Ok(p) => p,
        Err(x) => return Err((x, w, b)),
    };
    let w = match w.map(prim::<B, T, 1>).transpose() {
        Ok(p) => p,
        Err(w) => return Err((wrap::<T, B, D>(x), Some(w), b)),
    };
    match b.map(prim::<B, T, 1>).transpose() {
        Ok(p) => Ok((x, w, p)),
        Err(b) => Err((wrap::<T, B, D>(x), w.map(wrap::<T, B, 1>), Some(b))),
    }
}

/// The arguments back from their primitives.
fn ln_args<T: Backend, B: Backend, const D: usize>((x, w, b): LnPrims<T>) -> LnArgs<B, D> {
    (wrap::<T, B, D>(x), w.map(wrap::<T, B, 1>), b.map(wrap::<T, B, 1>))
}

pub(super) fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Option<Tensor<B, 1>>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
) -> Result<Tensor<B, D>, LnArgs<B, D>> {
    let Some(path) = path::<B>() else { return Err((x, weight, bias)) };
    // Weight and bias come together or not at all in our models; other mixes take the default.
    if weight.is_some() != bias.is_some() {
        return Err((x, weight, bias));
    }
    match path {
        Path::Plain => {
            let (x, w, b) = ln_prims::<B, Nd, D>((x, weight, bias))?;
            match layer_norm_nd(&x, w.as_ref(), b.as_ref(), eps) {
                Some((y, _)) => Ok(wrap::<Nd, B, D>(y)),
                None => Err(ln_args::<Nd, B, D>((x, w, b))),
            }
        }
        Path::Autodiff => {
            let (x, w, b) = ln_prims::<B, Ad, D>((x, weight, bias))?;
            let Some((y, stats)) = layer_norm_nd(&x.primitive, w.as_ref().map(|t| &t.primitive), b.as_ref().map(|t| &t.primitive), eps)
            else {
                return Err(ln_args::<Ad, B, D>((x, w, b)));
            };
            let state = LnState { x: x.primitive.clone(), weight: w.as_ref().map(|t| t.primitive.clone()), stats };
            let out = match (w, b) {
                (Some(w), Some(b)) => {
                    let nodes = [x.node.clone(), w.node.clone(), b.node.clone()];
                    match AffineLayerNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
                        OpsKind::Tracked(prep) => prep.finish(state, y),
                        OpsKind::UnTracked(prep) => prep.finish(y),
                    }
                }
                _ => match LayerNormBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => prep.finish(state, y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                },
            };
            Ok(wrap::<Ad, B, D>(out))
        }
    }
}

// ---- attention ----

/// What the attention backward needs: the inputs and the attention weights `P` `[B, H, Nq, Nk]`.
#[derive(Clone, Debug)]
struct AttnState {
    q: NdArrayTensor,
    k: NdArrayTensor,
    v: NdArrayTensor,
    probs: Vec<f32>,
}

/// A 4-d f32 view of `t` (any strides), or `None`.
fn view4(t: &NdArrayTensor) -> Option<ndarray::ArrayView4<'_, f32>> {
    let NdArrayTensor::F32(storage) = t else { return None };
    storage.view().into_dimensionality::<ndarray::Ix4>().ok()
}

/// Forward on f32 tensors; `None` when any of them is not f32 or the shapes do not fit.
fn attention_nd(q: &NdArrayTensor, k: &NdArrayTensor, v: &NdArrayTensor, keep: bool) -> Option<(NdArrayTensor, Option<Vec<f32>>)> {
    let (qv, kv, vv) = (view4(q)?, view4(k)?, view4(v)?);
    let d = attn::Dims::of(&qv, &kv, &vv)?;
    let (out, probs) = attn::attention(qv, kv, vv, d, keep);
    Some((make(&[d.b, d.nq, d.h * d.hv], out), probs))
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Nd, 3> for AttentionBackward {
    type State = AttnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pq, pk, pv] = ops.parents;
        let dout = grads.consume::<Nd>(&ops.node);
        let s = ops.state;
        let (q, k, v) = (view4(&s.q).expect("f32 q"), view4(&s.k).expect("f32 k"), view4(&s.v).expect("f32 v"));
        let d = attn::Dims::of(&q, &k, &v).expect("checked forward");
        let NdArrayTensor::F32(g) = &dout else { panic!("f32 output gradient") };
        let g = g.view().into_dimensionality::<ndarray::Ix3>().expect("[B, Nq, H·hv] gradient");
        let (dq, dk, dv) = attn::attention_backward(q, k, v, d, &s.probs, g);
        let grads_of = [(pq, dq, [d.b, d.h, d.nq, d.hd]), (pk, dk, [d.b, d.h, d.nk, d.hd]), (pv, dv, [d.b, d.h, d.nk, d.hv])];
        for (parent, grad, shape) in grads_of {
            if let Some(node) = parent {
                grads.register::<Nd>(node.id, make(&shape, grad));
            }
        }
    }
}

/// The primitives of `xs` as backend `T`'s, or the tensors back (another backend, or any of
/// them quantised).
fn prims<B: Backend, T: Backend, const D: usize, const K: usize>(xs: [Tensor<B, D>; K]) -> Result<[FloatTensor<T>; K], [Tensor<B, D>; K]> {
    let all = xs.map(prim::<B, T, D>);
    if all.iter().all(Result::is_ok) {
        return Ok(all.map(|p| p.unwrap_or_else(|_| unreachable!("all converted"))));
    }
    Err(all.map(|p| p.map_or_else(|x| x, wrap::<T, B, D>)))
}

pub(super) type Qkv<B> = [Tensor<B, 4>; 3];

pub(super) fn attention<B: Backend>(qkv: Qkv<B>) -> Result<Tensor<B, 3>, Qkv<B>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let [q, k, v] = prims::<B, Nd, 4, 3>(qkv)?;
            match attention_nd(&q, &k, &v, false) {
                Some((y, ..)) => Ok(wrap::<Nd, B, 3>(y)),
                None => Err([q, k, v].map(wrap::<Nd, B, 4>)),
            }
        }
        Some(Path::Autodiff) => {
            let [q, k, v] = prims::<B, Ad, 4, 3>(qkv)?;
            let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
            let kind = AttentionBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful();
            let keep = matches!(kind, OpsKind::Tracked(_));
            let Some((y, probs)) = attention_nd(&q.primitive, &k.primitive, &v.primitive, keep) else {
                return Err([q, k, v].map(wrap::<Ad, B, 4>));
            };
            let out = match kind {
                OpsKind::Tracked(prep) => {
                    let state = AttnState { q: q.primitive, k: k.primitive, v: v.primitive, probs: probs.expect("kept when tracked") };
                    prep.finish(state, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(wrap::<Ad, B, 3>(out))
        }
        None => Err(qkv),
    }
}

// ---- permute into a contiguous tensor ----

/// `x`'s axes in the order `axes` (`y.shape[i] = x.shape[axes[i]]`), as a row-major array.
fn permute_nd(x: &NdArrayTensor, axes: &[usize]) -> Option<NdArrayTensor> {
    let NdArrayTensor::F32(storage) = x else { return None };
    let view = storage.view().permuted_axes(ndarray::IxDyn(axes));
    let shape = view.shape().to_vec();
    Some(make(&shape, layout::standard_layout(&view)))
}

#[derive(Debug)]
struct PermuteBackward;

impl Backward<Nd, 1> for PermuteBackward {
    /// The inverse permutation.
    type State = Vec<usize>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let inverse = ops.state;
        unary::<Nd, _>(ops.parents, ops.node, grads, |dy| permute_nd(&dy, &inverse).expect("f32 gradient"));
    }
}

pub(super) fn permute<B: Backend, const D: usize>(x: Tensor<B, D>, axes: [usize; D]) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let mut seen = [false; D];
    if !axes.iter().all(|&a| a < D && !std::mem::replace(&mut seen[a], true)) {
        return Err(x);
    }
    match path::<B>() {
        Some(Path::Plain) => {
            let p = prim::<B, Nd, D>(x)?;
            permute_nd(&p, &axes).map(wrap::<Nd, B, D>).ok_or_else(|| wrap::<Nd, B, D>(p))
        }
        Some(Path::Autodiff) => {
            let p = prim::<B, Ad, D>(x)?;
            let Some(y) = permute_nd(&p.primitive, &axes) else { return Err(wrap::<Ad, B, D>(p)) };
            let mut inverse = vec![0; D];
            for (i, &a) in axes.iter().enumerate() {
                inverse[a] = i;
            }
            let out = match PermuteBackward.prepare::<NoCheckpointing>([p.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(inverse, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(wrap::<Ad, B, D>(out))
        }
        None => Err(x),
    }
}

// ---- LayerNorm modulations: MoVQ's latent rows, adaLN's per-sample rows ----

/// One of the two modulation kernels (`LN(x)` modulated by chunks of `m`, read in place): the
/// autodiff glue below is shared and differs only in the kernel it calls.
trait Modulation: std::fmt::Debug + Send + 'static {
    /// The kernel's sizes and chunk positions.
    type Dims: Copy + std::fmt::Debug + Send + Sync + 'static;
    /// The sizes when `x` and `m` fit the kernel.
    fn dims(x: &[usize], m: &[usize], at: [usize; 2]) -> Option<Self::Dims>;
    /// `y` and the LayerNorm statistics.
    fn forward(x: &[f32], m: &[f32], d: Self::Dims, eps: f32) -> (Vec<f32>, Vec<f32>);
    /// `(dx, dm)` from `dy`, each when wanted.
    fn backward(x: &[f32], m: &[f32], stats: &[f32], dy: &[f32], d: Self::Dims, want: [bool; 2]) -> (Option<Vec<f32>>, Option<Vec<f32>>);
}

/// MoVQ: `x` `[B, N, D]`, `m` `[B, T, k·D]`, the last `T` rows modulated ([`modl`]).
#[derive(Debug)]
struct Movq;

impl Modulation for Movq {
    type Dims = modl::Dims;
    fn dims(x: &[usize], m: &[usize], [sh, sc]: [usize; 2]) -> Option<modl::Dims> {
        modl::Dims::of(x, m, sh, sc)
    }
    fn forward(x: &[f32], m: &[f32], d: modl::Dims, eps: f32) -> (Vec<f32>, Vec<f32>) {
        modl::forward(x, m, d, eps)
    }
    fn backward(
        x: &[f32],
        m: &[f32],
        stats: &[f32],
        dy: &[f32],
        d: modl::Dims,
        [wx, wm]: [bool; 2],
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        modl::backward(x, m, stats, dy, d, wx, wm)
    }
}

/// adaLN: `x` `[B, L, D]`, `m` `[B, k·D]`, every row of a sample modulated ([`ada`]).
#[derive(Debug)]
struct AdaLn;

impl Modulation for AdaLn {
    type Dims = ada::Dims;
    fn dims(x: &[usize], m: &[usize], [sh, sc]: [usize; 2]) -> Option<ada::Dims> {
        ada::Dims::of(x, m, sh, sc)
    }
    fn forward(x: &[f32], m: &[f32], d: ada::Dims, eps: f32) -> (Vec<f32>, Vec<f32>) {
        ada::forward(x, m, d, eps)
    }
    fn backward(
        x: &[f32],
        m: &[f32],
        stats: &[f32],
        dy: &[f32],
        d: ada::Dims,
        [wx, wm]: [bool; 2],
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        ada::backward(x, m, stats, dy, d, wx, wm)
    }
}

/// What a modulation's backward needs: its inputs, the kernel's sizes and the LayerNorm
/// statistics.
#[derive(Clone, Debug)]
struct ModState<D> {
    x: NdArrayTensor,
    m: NdArrayTensor,
    d: D,
    stats: Vec<f32>,
}

/// Kernel `K`'s output, its sizes and statistics, or `None` when the shapes do not fit.
fn modulate_nd<K: Modulation>(
    x: &NdArrayTensor,
    m: &NdArrayTensor,
    at: [usize; 2],
    eps: f64,
) -> Option<(NdArrayTensor, K::Dims, Vec<f32>)> {
    let ((xs, xshape), (ms, mshape)) = (read(x)?, read(m)?);
    let d = K::dims(&xshape, &mshape, at)?;
    let (y, stats) = K::forward(&xs, &ms, d, eps as f32);
    Some((make(&xshape, y), d, stats))
}

#[derive(Debug)]
struct ModulateBackward<K>(std::marker::PhantomData<K>);

impl<K: Modulation> Backward<Nd, 2> for ModulateBackward<K> {
    type State = ModState<K::Dims>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pm] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        let s = ops.state;
        let ((xs, xshape), (ms, mshape), (gs, _)) =
            (read(&s.x).expect("f32 x"), read(&s.m).expect("f32 m"), read(&dy).expect("f32 gradient"));
        let (dx, dm) = K::backward(&xs, &ms, &s.stats, &gs, s.d, [px.is_some(), pm.is_some()]);
        for (parent, grad, shape) in [(px, dx, &xshape), (pm, dm, &mshape)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Nd>(node.id, make(shape, grad));
            }
        }
    }
}

/// One autodiff node for kernel `K`'s output `y` (its backward is `K`'s).
fn track<K: Modulation>(x: FloatTensor<Ad>, m: FloatTensor<Ad>, (y, d, stats): (NdArrayTensor, K::Dims, Vec<f32>)) -> FloatTensor<Ad> {
    let backward = ModulateBackward::<K>(std::marker::PhantomData);
    match backward.prepare::<NoCheckpointing>([x.node.clone(), m.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(ModState { x: x.primitive, m: m.primitive, d, stats }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

pub(super) fn modulate_latents<B: Backend>(
    x: Tensor<B, 3>,
    m: Tensor<B, 3>,
    at: [usize; 2],
    eps: f64,
) -> Result<Tensor<B, 3>, [Tensor<B, 3>; 2]> {
    match path::<B>() {
        Some(Path::Plain) => {
            let [x, m] = prims::<B, Nd, 3, 2>([x, m])?;
            match modulate_nd::<Movq>(&x, &m, at, eps) {
                Some((y, ..)) => Ok(wrap::<Nd, B, 3>(y)),
                None => Err([x, m].map(wrap::<Nd, B, 3>)),
            }
        }
        Some(Path::Autodiff) => {
            let [x, m] = prims::<B, Ad, 3, 2>([x, m])?;
            match modulate_nd::<Movq>(&x.primitive, &m.primitive, at, eps) {
                Some(out) => Ok(wrap::<Ad, B, 3>(track::<Movq>(x, m, out))),
                None => Err([x, m].map(wrap::<Ad, B, 3>)),
            }
        }
        None => Err([x, m]),
    }
}

/// The arguments of [`modulate_adaln`]: `x` `[B, L, D]` and `m` `[B, k·D]`.
pub(super) type AdaLnArgs<B> = (Tensor<B, 3>, Tensor<B, 2>);

/// `x` and `m` as backend `T`'s primitives, or both back.
fn prims_3_2<B: Backend, T: Backend>(x: Tensor<B, 3>, m: Tensor<B, 2>) -> Result<[FloatTensor<T>; 2], AdaLnArgs<B>> {
    let x = match prim::<B, T, 3>(x) {
        Ok(x) => x,
        Err(x) => return Err((x, m)),
    };
    match prim::<B, T, 2>(m) {
        Ok(m) => Ok([x, m]),
        Err(m) => Err((wrap::<T, B, 3>(x), m)),
    }
}

pub(super) fn modulate_adaln<B: Backend>(x: Tensor<B, 3>, m: Tensor<B, 2>, at: [usize; 2], eps: f64) -> Result<Tensor<B, 3>, AdaLnArgs<B>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let [x, m] = prims_3_2::<B, Nd>(x, m)?;
            match modulate_nd::<AdaLn>(&x, &m, at, eps) {
                Some((y, ..)) => Ok(wrap::<Nd, B, 3>(y)),
                None => Err((wrap::<Nd, B, 3>(x), wrap::<Nd, B, 2>(m))),
            }
        }
        Some(Path::Autodiff) => {
            let [x, m] = prims_3_2::<B, Ad>(x, m)?;
            match modulate_nd::<AdaLn>(&x.primitive, &m.primitive, at, eps) {
                Some(out) => Ok(wrap::<Ad, B, 3>(track::<AdaLn>(x, m, out))),
                None => Err((wrap::<Ad, B, 3>(x), wrap::<Ad, B, 2>(m))),
            }
        }
        None => Err((x, m)),
    }
}

// ---- gated residual ----

/// What the gated residual's backward needs: the branch output `a`, the adaLN output `m` and
/// the gate's chunk.
#[derive(Clone, Debug)]
struct GateState {
    a: NdArrayTensor,
    m: NdArrayTensor,
    d: gate::Dims,
}

/// The shape of an f32 tensor (values not read).
fn f32_shape(t: &NdArrayTensor) -> Option<Vec<usize>> {
    match t {
        NdArrayTensor::F32(storage) => Some(storage.view().shape().to_vec()),
        _ => None,
    }
}

fn gate_dims(h: &NdArrayTensor, a: &NdArrayTensor, m: &NdArrayTensor, at: usize) -> Option<gate::Dims> {
    gate::Dims::of(&f32_shape(h)?, &f32_shape(a)?, &f32_shape(m)?, at)
}

/// `h + g ⊙ a` for f32 tensors that fit `d`: written into `h` when it holds the only reference
/// to a row-major buffer, else into a new one.
fn gate_nd(h: NdArrayTensor, a: &NdArrayTensor, m: &NdArrayTensor, d: gate::Dims) -> NdArrayTensor {
    let ((av, _), (mv, _)) = (read(a).expect("f32, checked"), read(m).expect("f32, checked"));
    if sole_row_major(&h) {
        let mut arr = writable(h).expect("f32, checked");
        gate::forward_in_place(arr.as_slice_mut().expect("row-major, checked"), &av, &mv, d);
        return NdArrayTensor::from(arr);
    }
    let (hv, shape) = read(&h).expect("f32, checked");
    make(&shape, gate::forward(&hv, &av, &mv, d))
}

#[derive(Debug)]
struct GateBackward;

impl Backward<Nd, 3> for GateBackward {
    type State = GateState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [ph, pa, pm] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        let s = ops.state;
        let (da, dm) = {
            let ((av, ashape), (mv, mshape), (gs, _)) =
                (read(&s.a).expect("f32 a"), read(&s.m).expect("f32 m"), read(&dy).expect("f32 gradient"));
            let (da, dm) = gate::backward(&av, &mv, &gs, s.d, pa.is_some(), pm.is_some());
            (da.map(|g| make(&ashape, g)), dm.map(|g| make(&mshape, g)))
        };
        for (parent, grad) in [(pa, da), (pm, dm)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Nd>(node.id, grad);
            }
        }
        if let Some(node) = ph {
            grads.register::<Nd>(node.id, dy);
        }
    }
}

/// The arguments of [`residual_gate`]: `h`, `a` `[B, L, D]` and `m` `[B, k·D]`.
pub(super) type GateArgs<B> = (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 2>);

/// `h`, `a` and `m` as backend `T`'s primitives, or all three back.
fn gate_prims<B: Backend, T: Backend>((h, a, m): GateArgs<B>) -> Result<[FloatTensor<T>; 3], GateArgs<B>> {
    let [h, a] = match prims::<B, T, 3, 2>([h, a]) {
        Ok(ha) => ha,
        Err([h, a]) => return Err((h, a, m)),
    };
    match prim::<B, T, 2>(m) {
        Ok(m) => Ok([h, a, m]),
        Err(m) => Err((wrap::<T, B, 3>(h), wrap::<T, B, 3>(a), m)),
    }
}

pub(super) fn residual_gate<B: Backend>(args: GateArgs<B>, at: usize) -> Result<Tensor<B, 3>, GateArgs<B>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let [h, a, m] = gate_prims::<B, Nd>(args)?;
            let Some(d) = gate_dims(&h, &a, &m, at) else {
                return Err((wrap::<Nd, B, 3>(h), wrap::<Nd, B, 3>(a), wrap::<Nd, B, 2>(m)));
            };
            Ok(wrap::<Nd, B, 3>(gate_nd(h, &a, &m, d)))
        }
        Some(Path::Autodiff) => {
            let [h, a, m] = gate_prims::<B, Ad>(args)?;
            let Some(d) = gate_dims(&h.primitive, &a.primitive, &m.primitive, at) else {
                return Err((wrap::<Ad, B, 3>(h), wrap::<Ad, B, 3>(a), wrap::<Ad, B, 2>(m)));
            };
            let y = gate_nd(h.primitive, &a.primitive, &m.primitive, d);
            let out = match GateBackward.prepare::<NoCheckpointing>([h.node, a.node.clone(), m.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(GateState { a: a.primitive, m: m.primitive, d }, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(wrap::<Ad, B, 3>(out))
        }
        None => Err(args),
    }
}

// ---- attention from the packed qkv projection ----

/// What the packed attention's backward needs: the projection, the tables (none: q scaled) and
/// the kernel's saved values.
#[derive(Clone, Debug)]
struct QkvState {
    qkv: NdArrayTensor,
    tables: Option<[NdArrayTensor; 4]>,
    heads: usize,
    scale: f32,
    saved: qkva::Saved,
}

/// The values of a packed-attention call as the kernel takes them.
struct QkvCall<'a> {
    qkv: Cow<'a, [f32]>,
    d: qkva::Dims,
    /// `[cos_q, sin_q, cos_k, sin_k]` row-major `[Hr, N, hd]`, and `Hr`.
    tables: Option<([Cow<'a, [f32]>; 4], usize)>,
}

impl QkvCall<'_> {
    fn position(&self, scale: f32) -> qkva::Position<'_> {
        match &self.tables {
            Some(([cq, sq, ck, sk], hr)) => qkva::Position::Rope(qkva::Tables { cos_q: cq, sin_q: sq, cos_k: ck, sin_k: sk, hr: *hr }),
            None => qkva::Position::Scale(scale),
        }
    }
}

/// The f32 values and sizes of a call, or `None` (not f32, or shapes that do not fit).
fn qkv_args<'a>(qkv: &'a NdArrayTensor, tables: Option<&'a [NdArrayTensor; 4]>, heads: usize) -> Option<QkvCall<'a>> {
    let (xs, shape) = read(qkv)?;
    let d = qkva::Dims::of(&shape, heads)?;
    let tables = match tables {
        None => None,
        Some([cq, sq, ck, sk]) => {
            let (cq, shape) = read(cq)?;
            let &[hr, n, hd] = shape.as_slice() else { return None };
            let rest = [sq, ck, sk].map(read);
            if (n, hd) != (d.n, d.hd) || rest.iter().any(|t| t.as_ref().is_none_or(|(_, s)| *s != shape)) {
                return None;
            }
            let [sq, ck, sk] = rest.map(|t| t.expect("checked above").0);
            let ts = qkva::Tables { cos_q: &cq, sin_q: &sq, cos_k: &ck, sin_k: &sk, hr };
            if !ts.fit(d) {
                return None;
            }
            Some(([cq, sq, ck, sk], hr))
        }
    };
    Some(QkvCall { qkv: xs, d, tables })
}

fn qkv_attention_nd(
    qkv: &NdArrayTensor,
    tables: Option<&[NdArrayTensor; 4]>,
    heads: usize,
    scale: f32,
    keep: bool,
) -> Option<(NdArrayTensor, Option<qkva::Saved>)> {
    let call = qkv_args(qkv, tables, heads)?;
    let d = call.d;
    let (out, saved) = qkva::forward(&call.qkv, d, call.position(scale), keep);
    Some((make(&[d.b, d.n, d.h * d.hd], out), saved))
}

/// Registers the gradients of a packed-attention node for the parents that are tracked
/// (`[qkv, cos_q, sin_q, cos_k, sin_k]`).
fn qkv_attention_backward_nd(state: &QkvState, dout: &NdArrayTensor, parents: [Option<NodeId>; 5], grads: &mut Gradients) {
    let call = qkv_args(&state.qkv, state.tables.as_ref(), state.heads).expect("checked forward");
    let NdArrayTensor::F32(g) = dout else { panic!("f32 output gradient") };
    let g = g.view().into_dimensionality::<ndarray::Ix3>().expect("[B, N, D] gradient");
    let want_tables = parents[1..].iter().any(Option::is_some);
    let (dqkv, tables) = qkva::backward(&call.qkv, call.d, call.position(state.scale), &state.saved, g, want_tables);
    let d = call.d;
    if let Some(id) = parents[0] {
        grads.register::<Nd>(id, make(&[d.b, d.n, 3 * d.h * d.hd], dqkv));
    }
    if let (Some(tg), Some((_, hr))) = (tables, &call.tables) {
        for (parent, grad) in parents[1..].iter().zip(tg) {
            if let Some(id) = parent {
                grads.register::<Nd>(*id, make(&[*hr, d.n, d.hd], grad));
            }
        }
    }
}

#[derive(Debug)]
struct QkvAttentionBackward;

impl Backward<Nd, 1> for QkvAttentionBackward {
    type State = QkvState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [p] = ops.parents;
        let dout = grads.consume::<Nd>(&ops.node);
        qkv_attention_backward_nd(&ops.state, &dout, [p.map(|n| n.id), None, None, None, None], grads);
    }
}

impl Backward<Nd, 5> for QkvAttentionBackward {
    type State = QkvState;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<Nd>(&ops.node);
        qkv_attention_backward_nd(&ops.state, &dout, ops.parents.map(|p| p.map(|n| n.id)), grads);
    }
}

/// The packed projection `[B, N, 3·D]` and, with RoPE, `[cos_q, sin_q, cos_k, sin_k]`.
pub(super) type QkvArgs<B> = (Tensor<B, 3>, Option<[Tensor<B, 3>; 4]>);

/// The projection's and the tables' primitives of backend `T`.
type QkvPrims<T> = (FloatTensor<T>, Option<[FloatTensor<T>; 4]>);

/// The primitives of a packed-attention call as backend `T`'s, or the arguments back.
fn qkv_prims<B: Backend, T: Backend>(args: QkvArgs<B>) -> Result<QkvPrims<T>, QkvArgs<B>> {
    match args {
        (qkv, None) => prims::<B, T, 3, 1>([qkv]).map(|[p]| (p, None)).map_err(|[x]| (x, None)),
        (qkv, Some([a, b, c, d])) => match prims::<B, T, 3, 5>([qkv, a, b, c, d]) {
            Ok([p, a, b, c, d]) => Ok((p, Some([a, b, c, d]))),
            Err([x, a, b, c, d]) => Err((x, Some([a, b, c, d]))),
        },
    }
}

/// Runs the forward (keeping what the backward needs when the node is tracked) and records
/// the node; `None` when the kernel does not take the arguments.
fn finish_qkv<const N: usize>(
    kind: OpsKind<QkvAttentionBackward, Nd, QkvState, NoCheckpointing, N>,
    forward: impl FnOnce(bool) -> Option<(NdArrayTensor, Option<qkva::Saved>)>,
    state: impl FnOnce(qkva::Saved) -> QkvState,
) -> Option<FloatTensor<Ad>>
where
    QkvAttentionBackward: Backward<Nd, N, State = QkvState>,
{
    match kind {
        OpsKind::Tracked(prep) => {
            let (y, saved) = forward(true)?;
            Some(prep.finish(state(saved?), y))
        }
        OpsKind::UnTracked(prep) => forward(false).map(|(y, _)| prep.finish(y)),
    }
}

pub(super) fn qkv_attention<B: Backend>(args: QkvArgs<B>, heads: usize, scale: f32) -> Result<Tensor<B, 3>, QkvArgs<B>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let (qkv, tables) = qkv_prims::<B, Nd>(args)?;
            match qkv_attention_nd(&qkv, tables.as_ref(), heads, scale, false) {
                Some((y, ..)) => Ok(wrap::<Nd, B, 3>(y)),
                None => Err((wrap::<Nd, B, 3>(qkv), tables.map(|t| t.map(wrap::<Nd, B, 3>)))),
            }
        }
        Some(Path::Autodiff) => {
            let (qkv, tables) = qkv_prims::<B, Ad>(args)?;
            let inner = tables.as_ref().map(|t| t.clone().map(|t| t.primitive));
            let forward = |keep| qkv_attention_nd(&qkv.primitive, inner.as_ref(), heads, scale, keep);
            let state = |saved| QkvState { qkv: qkv.primitive.clone(), tables: inner.clone(), heads, scale, saved };
            let out = match &tables {
                None => {
                    let kind = QkvAttentionBackward.prepare::<NoCheckpointing>([qkv.node.clone()]).compute_bound().stateful();
                    finish_qkv(kind, forward, state)
                }
                Some(t) => {
                    let nodes = [qkv.node.clone(), t[0].node.clone(), t[1].node.clone(), t[2].node.clone(), t[3].node.clone()];
                    let kind = QkvAttentionBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful();
                    finish_qkv(kind, forward, state)
                }
            };
            match out {
                Some(y) => Ok(wrap::<Ad, B, 3>(y)),
                None => Err((wrap::<Ad, B, 3>(qkv), tables.map(|t| t.map(wrap::<Ad, B, 3>)))),
            }
        }
        None => Err(args),
    }
}

// ---- RoPE ----

/// What the RoPE backward needs: the input and the tables.
#[derive(Clone, Debug)]
struct RopeState {
    x: NdArrayTensor,
    cos: NdArrayTensor,
    sin: NdArrayTensor,
}

/// The arguments of a RoPE call as the kernel takes them.
struct RopeCall<'a> {
    x: ndarray::ArrayView4<'a, f32>,
    cos: Cow<'a, [f32]>,
    sin: Cow<'a, [f32]>,
    d: rot::Dims,
}

/// The f32 view, sizes and standard-layout tables of a RoPE call, or `None`.
fn rope_args<'a>(x: &'a NdArrayTensor, cos: &'a NdArrayTensor, sin: &'a NdArrayTensor) -> Option<RopeCall<'a>> {
    let xv = view4(x)?;
    let (NdArrayTensor::F32(c), NdArrayTensor::F32(s)) = (cos, sin) else { return None };
    let (cv, sv) = (c.view().into_dimensionality::<ndarray::Ix3>().ok()?, s.view().into_dimensionality::<ndarray::Ix3>().ok()?);
    let d = rot::Dims::of(&xv, &cv, &sv)?;
    Some(RopeCall { x: xv, cos: read(cos)?.0, sin: read(sin)?.0, d })
}

fn rope_nd(x: &NdArrayTensor, cos: &NdArrayTensor, sin: &NdArrayTensor) -> Option<NdArrayTensor> {
    let c = rope_args(x, cos, sin)?;
    let d = c.d;
    Some(make(&[d.b, d.h, d.n, d.hd], rot::rotate(&c.x, &c.cos, &c.sin, d)))
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Nd, 3> for RopeBackward {
    type State = RopeState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pc, ps] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        let s = ops.state;
        let c = rope_args(&s.x, &s.cos, &s.sin).expect("checked forward");
        let d = c.d;
        let (g, _) = read(&dy).expect("f32 gradient");
        let (dx, tables) = rot::rotate_backward(&c.x, &c.cos, &c.sin, &g, d, pc.is_some() || ps.is_some());
        let table_shape = [d.hr, d.n, d.hd];
        if let Some(node) = px {
            grads.register::<Nd>(node.id, make(&[d.b, d.h, d.n, d.hd], dx));
        }
        if let Some((dcos, dsin)) = tables {
            for (parent, grad) in [(pc, dcos), (ps, dsin)] {
                if let Some(node) = parent {
                    grads.register::<Nd>(node.id, make(&table_shape, grad));
                }
            }
        }
    }
}

pub(super) type RopeArgs<B> = (Tensor<B, 4>, Tensor<B, 3>, Tensor<B, 3>);

/// The primitives of a RoPE call's arguments as backend `T`'s, or the arguments back.
type RopePrims<T> = (FloatTensor<T>, [FloatTensor<T>; 2]);

fn rope_prims<B: Backend, T: Backend>((x, cos, sin): RopeArgs<B>) -> Result<RopePrims<T>, RopeArgs<B>> {
    let x = match prim::<B, T, 4>(x) {
        Ok(p) => p,
        Err(x) => return Err((x, cos, sin)),
    };
    match prims::<B, T, 3, 2>([cos, sin]) {
        Ok(tables) => Ok((x, tables)),
        Err([cos, sin]) => Err((wrap::<T, B, 4>(x), cos, sin)),
    }
}

pub(super) fn rope<B: Backend>(args: RopeArgs<B>) -> Result<Tensor<B, 4>, RopeArgs<B>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let (x, [c, s]) = rope_prims::<B, Nd>(args)?;
            match rope_nd(&x, &c, &s) {
                Some(y) => Ok(wrap::<Nd, B, 4>(y)),
                None => Err((wrap::<Nd, B, 4>(x), wrap::<Nd, B, 3>(c), wrap::<Nd, B, 3>(s))),
            }
        }
        Some(Path::Autodiff) => {
            let (x, [c, s]) = rope_prims::<B, Ad>(args)?;
            let Some(y) = rope_nd(&x.primitive, &c.primitive, &s.primitive) else {
                return Err((wrap::<Ad, B, 4>(x), wrap::<Ad, B, 3>(c), wrap::<Ad, B, 3>(s)));
            };
            let nodes = [x.node.clone(), c.node.clone(), s.node.clone()];
            let out = match RopeBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(RopeState { x: x.primitive, cos: c.primitive, sin: s.primitive }, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(wrap::<Ad, B, 4>(out))
        }
        None => Err(args),
    }
}

// ---- Linear ----

/// What the Linear backward needs: the input and the weight.
#[derive(Clone, Debug)]
struct LinearState {
    x: NdArrayTensor,
    w: NdArrayTensor,
}

/// The arguments of a Linear call as the kernel takes them.
struct LinearCall<'a> {
    /// `x`'s values, row-major (borrowed when contiguous), and its shape `[..., in]`.
    xs: Cow<'a, [f32]>,
    shape: Vec<usize>,
    /// `[in, out]`, any strides.
    w: ndarray::ArrayView2<'a, f32>,
}

fn linear_args<'a>(x: &'a NdArrayTensor, w: &'a NdArrayTensor) -> Option<LinearCall<'a>> {
    let (xs, shape) = read(x)?;
    let NdArrayTensor::F32(ws) = w else { return None };
    let w = ws.view().into_dimensionality::<ndarray::Ix2>().ok()?;
    (row_len(&shape)? == w.nrows()).then_some(LinearCall { xs, shape, w })
}

/// `xs` (`rows × n` values) as a matrix.
fn matrix(xs: &[f32], n: usize) -> ndarray::ArrayView2<'_, f32> {
    ndarray::ArrayView2::from_shape((xs.len() / n, n), xs).expect("whole rows")
}

fn linear_nd(x: &NdArrayTensor, w: &NdArrayTensor, b: Option<&NdArrayTensor>) -> Option<NdArrayTensor> {
    let LinearCall { xs, mut shape, w } = linear_args(x, w)?;
    let out = w.ncols();
    let bias = param(b, out)?;
    let y = lin::linear(matrix(&xs, w.nrows()), w, bias.as_deref());
    *shape.last_mut().expect("rank ≥ 1") = out;
    Some(make(&shape, y))
}

/// Registers the gradients of a Linear node for the parents that are tracked.
fn linear_backward_nd(state: &LinearState, dy: &NdArrayTensor, parents: [Option<NodeId>; 3], grads: &mut Gradients) {
    let LinearCall { xs, shape, w } = linear_args(&state.x, &state.w).expect("checked forward");
    let (gs, _) = read(dy).expect("f32 gradient");
    let (inp, out) = w.dim();
    let needs = lin::Needs { x: parents[0].is_some(), w: parents[1].is_some(), bias: parents[2].is_some() };
    let g = lin::linear_backward(matrix(&xs, inp), w, matrix(&gs, out), needs);
    let grads_of = [
        (parents[0], g.x.map(|g| make(&shape, g))),
        (parents[1], g.w.map(|g| make(&[inp, out], g))),
        (parents[2], g.bias.map(|g| make(&[out], g))),
    ];
    for (parent, grad) in grads_of {
        if let (Some(id), Some(grad)) = (parent, grad) {
            grads.register::<Nd>(id, grad);
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Nd, 2> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        linear_backward_nd(&ops.state, &dy, [px.map(|n| n.id), pw.map(|n| n.id), None], grads);
    }
}

impl Backward<Nd, 3> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        linear_backward_nd(&ops.state, &dy, [px.map(|n| n.id), pw.map(|n| n.id), pb.map(|n| n.id)], grads);
    }
}

pub(super) type LinearArgs<B, const D: usize> = (Tensor<B, D>, Tensor<B, 2>, Option<Tensor<B, 1>>);

type LinearPrims<T> = (FloatTensor<T>, FloatTensor<T>, Option<FloatTensor<T>>);

/// The primitives of a Linear (`E = 2`) or convolution (`E = 4`) call's arguments (input, weight
/// of rank `E`, bias) as backend `T`'s, or the arguments back.
#[allow(clippy::type_complexity)]
fn linear_prims<B: Backend, T: Backend, const D: usize, const E: usize>(
    (x, w, b): (Tensor<B, D>, Tensor<B, E>, Option<Tensor<B, 1>>),
) -> Result<LinearPrims<T>, (Tensor<B, D>, Tensor<B, E>, Option<Tensor<B, 1>>)> {
    let x = match prim::<B, T, D>(x) {
        Ok(p) => p,
        Err(x) => return Err((x, w, b)),
    };
    let w = match prim::<B, T, E>(w) {
        Ok(p) => p,
        Err(w) => return Err((wrap::<T, B, D>(x), w, b)),
    };
    match b.map(prim::<B, T, 1>).transpose() {
        Ok(b) => Ok((x, w, b)),
        Err(b) => Err((wrap::<T, B, D>(x), wrap::<T, B, E>(w), Some(b))),
    }
}

pub(super) fn linear<B: Backend, const D: usize>(args: LinearArgs<B, D>) -> Result<Tensor<B, D>, LinearArgs<B, D>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let (x, w, b) = linear_prims::<B, Nd, D, 2>(args)?;
            match linear_nd(&x, &w, b.as_ref()) {
                Some(y) => Ok(wrap::<Nd, B, D>(y)),
                None => Err((wrap::<Nd, B, D>(x), wrap::<Nd, B, 2>(w), b.map(wrap::<Nd, B, 1>))),
            }
        }
        Some(Path::Autodiff) => {
            let (x, w, b) = linear_prims::<B, Ad, D, 2>(args)?;
            let Some(y) = linear_nd(&x.primitive, &w.primitive, b.as_ref().map(|b| &b.primitive)) else {
                return Err((wrap::<Ad, B, D>(x), wrap::<Ad, B, 2>(w), b.map(wrap::<Ad, B, 1>)));
            };
            let state = || LinearState { x: x.primitive.clone(), w: w.primitive.clone() };
            let out = match &b {
                Some(b) => match LinearBackward
                    .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
                    .compute_bound()
                    .stateful()
                {
                    OpsKind::Tracked(prep) => prep.finish(state(), y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                },
                None => match LinearBackward.prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()]).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => prep.finish(state(), y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                },
            };
            Ok(wrap::<Ad, B, D>(out))
        }
        None => Err(args),
    }
}

// ---- Convolution ----

pub(super) type ConvArgs<B> = (Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>);

/// A convolution call as the kernels take it: `x`'s values (row-major), the weight as
/// `[O, C·kh·kw]`, the geometry.
struct ConvCall<'a> {
    xs: Cow<'a, [f32]>,
    ws: Cow<'a, [f32]>,
    g: super::conv::Conv2d,
}

fn conv_args<'a>(x: &'a NdArrayTensor, w: &'a NdArrayTensor, stride: [usize; 2], padding: [usize; 2]) -> Option<ConvCall<'a>> {
    let (xs, xshape) = read(x)?;
    let (ws, wshape) = read(w)?;
    let ([n, c, h, wd], [o, wc, kh, kw]) = (<[usize; 4]>::try_from(xshape).ok()?, <[usize; 4]>::try_from(wshape).ok()?);
    if wc != c || h + 2 * padding[0] < kh || wd + 2 * padding[1] < kw || stride.contains(&0) || n * c * h * wd == 0 || o == 0 {
        return None;
    }
    Some(ConvCall { xs, ws, g: super::conv::Conv2d { input: [n, c, h, wd], out_channels: o, kernel: [kh, kw], stride, padding } })
}

/// The convolution, then per output channel `scale·y + bias` (the bias alone when no scale) and a
/// ReLU when `relu`, applied to each image's output right after its GEMM.
fn conv2d_nd(
    x: &NdArrayTensor,
    w: &NdArrayTensor,
    b: Option<&NdArrayTensor>,
    scale: Option<&NdArrayTensor>,
    stride: [usize; 2],
    padding: [usize; 2],
    relu: bool,
) -> Option<NdArrayTensor> {
    let ConvCall { xs, ws, g } = conv_args(x, w, stride, padding)?;
    let bias = param(b, g.out_channels)?;
    let scale = param(scale, g.out_channels)?;
    let [ho, wo] = g.output_hw();
    let [kh, kw] = g.kernel;
    let wm = ndarray::ArrayView2::from_shape((g.out_channels, g.input[1] * kh * kw), &ws[..]).ok()?;
    let epilogue = super::conv::Epilogue { scale: scale.as_deref(), relu };
    let y = super::conv::conv2d(&xs, wm, bias.as_deref(), g, epilogue);
    Some(make(&[g.input[0], g.out_channels, ho, wo], y))
}

/// The convolution, a per-channel scale (when given) and shift, and a ReLU, on plain NdArray
/// tensors (inference); the arguments back elsewhere.
#[allow(clippy::type_complexity)]
pub(super) fn conv2d_scale_shift_relu<B: Backend>(
    args: ConvArgs<B>,
    scale: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<Tensor<B, 4>, (ConvArgs<B>, Option<Tensor<B, 1>>)> {
    if path::<B>() != Some(Path::Plain) {
        return Err((args, scale));
    }
    let scale = match scale.map(prim::<B, Nd, 1>).transpose() {
        Ok(s) => s,
        Err(s) => return Err((args, Some(s))),
    };
    let back = |s: Option<FloatTensor<Nd>>| s.map(wrap::<Nd, B, 1>);
    let (x, w, b) = match linear_prims::<B, Nd, 4, 4>(args) {
        Ok(p) => p,
        Err(args) => return Err((args, back(scale))),
    };
    match conv2d_nd(&x, &w, b.as_ref(), scale.as_ref(), stride, padding, true) {
        Some(y) => Ok(wrap::<Nd, B, 4>(y)),
        None => Err(((wrap::<Nd, B, 4>(x), wrap::<Nd, B, 4>(w), b.map(wrap::<Nd, B, 1>)), back(scale))),
    }
}

#[derive(Debug, Clone)]
struct ConvState {
    x: NdArrayTensor,
    w: NdArrayTensor,
    stride: [usize; 2],
    padding: [usize; 2],
}

/// Registers the gradients of a convolution node for the parents that are tracked.
fn conv_backward_nd(state: &ConvState, dy: &NdArrayTensor, parents: [Option<NodeId>; 3], grads: &mut Gradients) {
    let ConvCall { xs, ws, g } = conv_args(&state.x, &state.w, state.stride, state.padding).expect("checked forward");
    let (gs, _) = read(dy).expect("f32 gradient");
    let [n, c, h, wd] = g.input;
    let [kh, kw] = g.kernel;
    let o = g.out_channels;
    let wm = ndarray::ArrayView2::from_shape((o, c * kh * kw), &ws[..]).expect("checked forward");
    let needs = super::conv::Needs { x: parents[0].is_some(), w: parents[1].is_some(), bias: parents[2].is_some() };
    let gr = super::conv::conv2d_backward(&xs, wm, &gs, g, needs);
    let grads_of = [
        (parents[0], gr.x.map(|v| make(&[n, c, h, wd], v))),
        (parents[1], gr.w.map(|v| make(&[o, c, kh, kw], v))),
        (parents[2], gr.bias.map(|v| make(&[o], v))),
    ];
    for (parent, grad) in grads_of {
        if let (Some(id), Some(grad)) = (parent, grad) {
            grads.register::<Nd>(id, grad);
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Nd, 2> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        conv_backward_nd(&ops.state, &dy, [px.map(|n| n.id), pw.map(|n| n.id), None], grads);
    }
}

impl Backward<Nd, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let dy = grads.consume::<Nd>(&ops.node);
        conv_backward_nd(&ops.state, &dy, [px.map(|n| n.id), pw.map(|n| n.id), pb.map(|n| n.id)], grads);
    }
}

/// The convolution on NdArray tensors: im2col + GEMM, and under autodiff one node whose backward
/// is [`super::conv::conv2d_backward`] (Burn 0.21's NdArray runs a convolution's input gradient as
/// a scalar transposed-convolution loop).
pub(super) fn conv2d<B: Backend>(args: ConvArgs<B>, stride: [usize; 2], padding: [usize; 2]) -> Result<Tensor<B, 4>, ConvArgs<B>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let (x, w, b) = linear_prims::<B, Nd, 4, 4>(args)?;
            match conv2d_nd(&x, &w, b.as_ref(), None, stride, padding, false) {
                Some(y) => Ok(wrap::<Nd, B, 4>(y)),
                None => Err((wrap::<Nd, B, 4>(x), wrap::<Nd, B, 4>(w), b.map(wrap::<Nd, B, 1>))),
            }
        }
        Some(Path::Autodiff) => {
            let (x, w, b) = linear_prims::<B, Ad, 4, 4>(args)?;
            let Some(y) = conv2d_nd(&x.primitive, &w.primitive, b.as_ref().map(|b| &b.primitive), None, stride, padding, false) else {
                return Err((wrap::<Ad, B, 4>(x), wrap::<Ad, B, 4>(w), b.map(wrap::<Ad, B, 1>)));
            };
            let state = || ConvState { x: x.primitive.clone(), w: w.primitive.clone(), stride, padding };
            let out = match &b {
                Some(b) => match ConvBackward
                    .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
                    .compute_bound()
                    .stateful()
                {
                    OpsKind::Tracked(prep) => prep.finish(state(), y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                },
                None => match ConvBackward.prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()]).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => prep.finish(state(), y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                },
            };
            Ok(wrap::<Ad, B, 4>(out))
        }
        None => Err(args),
    }
}

// ---- Pooling (inference) ----

fn pool_nd(
    x: &NdArrayTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    reduce: super::pool::Reduce,
) -> Option<NdArrayTensor> {
    let (xs, shape) = read(x)?;
    let [n, c, h, w] = <[usize; 4]>::try_from(shape).ok()?;
    // PyTorch's own conditions (padding at most half the window), and no empty tensors.
    let fits = (0..2).all(|i| kernel[i] > 0 && stride[i] > 0 && 2 * padding[i] <= kernel[i]);
    if !fits || h + 2 * padding[0] < kernel[0] || w + 2 * padding[1] < kernel[1] || n * c * h * w == 0 {
        return None;
    }
    let g = super::pool::Pool2d { input: [n, c, h, w], kernel, stride, padding };
    let [ho, wo] = g.output_hw();
    Some(make(&[n, c, ho, wo], super::pool::pool2d(&xs, g, reduce)))
}

/// Pooling on plain NdArray tensors (under autodiff: the default, which has Burn's backward).
pub(super) fn pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    reduce: super::pool::Reduce,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if path::<B>() != Some(Path::Plain) {
        return Err(x);
    }
    let p = prim::<B, Nd, 4>(x)?;
    match pool_nd(&p, kernel, stride, padding, reduce) {
        Some(y) => Ok(wrap::<Nd, B, 4>(y)),
        None => Err(wrap::<Nd, B, 4>(p)),
    }
}

// ---- AdamW ----

pub(super) type AdamWArgs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<(Tensor<B, D>, Tensor<B, D>)>);

/// Whether `t` is an f32 tensor holding the only reference to a row-major buffer (so that an
/// operation may write its result there).
fn sole_row_major(t: &NdArrayTensor) -> bool {
    matches!(t, NdArrayTensor::F32(st) if st.is_unique() && st.view().is_standard_layout())
}

/// The values of an f32 tensor as a row-major array that this call may write: moved when the
/// buffer is already such an array (writing then copies it only if it is shared), copied when it
/// is borrowed or strided.
fn writable(t: NdArrayTensor) -> Option<ndarray::ArcArray<f32, ndarray::IxDyn>> {
    let NdArrayTensor::F32(storage) = t else { return None };
    let a = storage.into_owned();
    Some(if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned().into_shared() })
}

/// One AdamW update on NdArray f32 tensors (the optimiser runs on the inner backend, so only the
/// plain path exists): one parallel pass, in place.
pub(super) fn adamw_update<B: Backend, const D: usize>(
    (p, g, mv): AdamWArgs<B, D>,
    step: &super::AdamWStep,
) -> Result<[Tensor<B, D>; 3], AdamWArgs<B, D>> {
    let shape = p.shape();
    let fits = |t: &Tensor<B, D>| t.dtype() == DType::F32 && t.shape() == shape;
    if path::<B>() != Some(Path::Plain) || !fits(&g) || !fits(&p) || mv.as_ref().is_some_and(|(m, v)| !fits(m) || !fits(v)) {
        return Err((p, g, mv));
    }
    let [p, g] = match prims::<B, Nd, D, 2>([p, g]) {
        Ok(pg) => pg,
        Err([p, g]) => return Err((p, g, mv)),
    };
    let moments = match mv {
        Some((m, v)) => match prims::<B, Nd, D, 2>([m, v]) {
            Ok(mv) => Some(mv),
            Err([m, v]) => return Err((wrap::<Nd, B, D>(p), wrap::<Nd, B, D>(g), Some((m, v)))),
        },
        None => None,
    };
    let (gs, _) = read(&g).expect("f32, checked above");
    let mut pa = writable(p).expect("f32, checked above");
    let first = moments.is_none();
    let [mut ma, mut va] = match moments {
        Some(mv) => mv.map(|t| writable(t).expect("f32, checked above")),
        None => [(); 2].map(|_| ndarray::ArcArray::zeros(pa.raw_dim())),
    };
    let s = kernels::AdamWScalars { first: first || step.time <= 1, ..step.scalars() };
    match (pa.as_slice_mut(), ma.as_slice_mut(), va.as_slice_mut()) {
        (Some(ps), Some(ms), Some(vs)) => kernels::adamw(ps, ms, vs, &gs, &s),
        _ => unreachable!("standard-layout arrays have slices"),
    }
    Ok([pa, ma, va].map(|a| wrap::<Nd, B, D>(NdArrayTensor::from(a))))
}

// ---- optimiser passes: EMA, gradient norm, scaling (inner backend only) ----

/// A plain-NdArray f32 tensor's primitive and its shape (values not read yet), or the tensor
/// back.
fn plain_values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<(NdArrayTensor, Vec<usize>), Tensor<B, D>> {
    if path::<B>() != Some(Path::Plain) {
        return Err(x);
    }
    let p = prim::<B, Nd, D>(x)?;
    let Some(shape) = f32_shape(&p) else { return Err(wrap::<Nd, B, D>(p)) };
    Ok((p, shape))
}

/// `ema·decay + online·(1 − decay)` in one parallel pass into a new buffer.
pub(super) fn ema_mix<B: Backend, const D: usize>(
    ema: Tensor<B, D>,
    online: Tensor<B, D>,
    decay: f64,
) -> Result<Tensor<B, D>, [Tensor<B, D>; 2]> {
    if ema.shape() != online.shape() {
        return Err([ema, online]);
    }
    let (e, shape) = match plain_values(ema) {
        Ok(v) => v,
        Err(ema) => return Err([ema, online]),
    };
    let (o, _) = match plain_values(online) {
        Ok(v) => v,
        Err(online) => return Err([wrap::<Nd, B, D>(e), online]),
    };
    let ((ev, _), (ov, _)) = (read(&e).expect("f32, checked"), read(&o).expect("f32, checked"));
    let y = kernels::ema_mix(&ev, &ov, decay as f32, (1.0 - decay) as f32);
    Ok(wrap::<Nd, B, D>(make(&shape, y)))
}

/// `Σ x²` as a one-element tensor (summed in f64, rounded once to f32).
pub(super) fn squared_norm<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, 1>, Tensor<B, D>> {
    let (p, _) = plain_values(x)?;
    let s = kernels::sum_squares(&read(&p).expect("f32, checked").0);
    Ok(wrap::<Nd, B, 1>(make(&[1], vec![s as f32])))
}

/// `x·s` in one parallel pass: in place when `x` holds the only reference to a row-major
/// buffer, else into a new one.
pub(super) fn scale<B: Backend, const D: usize>(x: Tensor<B, D>, s: f64) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let (p, shape) = plain_values(x)?;
    let s = s as f32;
    if sole_row_major(&p) {
        let mut a = writable(p).expect("f32, checked");
        kernels::scale_in_place(a.as_slice_mut().expect("row-major, checked"), s);
        return Ok(wrap::<Nd, B, D>(NdArrayTensor::from(a)));
    }
    let y = kernels::scaled(&read(&p).expect("f32, checked").0, s);
    Ok(wrap::<Nd, B, D>(make(&shape, y)))
}

// ---- RoPE table expansion ----

/// The expanded table of `t` (`[hr, n, half]`, f32) when `e` describes it.
fn rope_expand_nd(t: &NdArrayTensor, e: &tabs::Expand) -> Option<NdArrayTensor> {
    let (values, shape) = read(t)?;
    (shape == [e.hr, e.n, e.half]).then(|| make(&e.out_shape(), tabs::expand(&values, e)))
}

#[derive(Debug)]
struct RopeExpandBackward;

impl Backward<Nd, 1> for RopeExpandBackward {
    type State = tabs::Expand;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let e = ops.state;
        unary::<Nd, _>(ops.parents, ops.node, grads, |dy| {
            let (g, _) = read(&dy).expect("f32 gradient");
            make(&[e.hr, e.n, e.half], tabs::expand_backward(&g, &e))
        });
    }
}

/// [`super::rope_expand`] on the fast path; `t` back when it does not apply.
pub(super) fn rope_expand<B: Backend>(t: Tensor<B, 3>, e: tabs::Expand) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    if e.hr * e.n * e.half == 0 || e.start + e.n > e.seq {
        return Err(t);
    }
    match path::<B>() {
        Some(Path::Plain) => {
            let p = prim::<B, Nd, 3>(t)?;
            rope_expand_nd(&p, &e).map(wrap::<Nd, B, 3>).ok_or_else(|| wrap::<Nd, B, 3>(p))
        }
        Some(Path::Autodiff) => {
            let p = prim::<B, Ad, 3>(t)?;
            let Some(y) = rope_expand_nd(&p.primitive, &e) else { return Err(wrap::<Ad, B, 3>(p)) };
            let out = match RopeExpandBackward.prepare::<NoCheckpointing>([p.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(e, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Ok(wrap::<Ad, B, 3>(out))
        }
        None => Err(t),
    }
}
