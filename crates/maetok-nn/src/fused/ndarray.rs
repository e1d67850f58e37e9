//! The CPU fast path of [`super`] for `NdArray<f32>` and `Autodiff<NdArray<f32>>`.
//!
//! A generic tensor is recognised by its backend's `TypeId` and its primitive moved out through
//! `Any` (no unsafe code); f32 data run the slice kernels of [`super::kernels`], anything else
//! (f64 data, quantised tensors, other backends) is handed back untouched for the default path.
//! Under autodiff each op records one node whose backward calls the matching backward kernel.

use std::any::{Any, TypeId};
use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use super::kernels;

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

/// The f32 values of `t` in row-major order (borrowed when contiguous) and its shape.
fn read(t: &NdArrayTensor) -> Option<(Cow<'_, [f32]>, Vec<usize>)> {
    let NdArrayTensor::F32(storage) = t else { return None };
    let view = storage.view();
    let shape = view.shape().to_vec();
    let values = match view.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(view.iter().copied().collect()),
    };
    Some((values, shape))
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
    let mut y = vec![0.0; xs.len()];
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
            let mut dx = vec![0.0; ys.len()];
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

// ---- exact GELU ----

fn gelu_nd(x: &NdArrayTensor) -> Option<NdArrayTensor> {
    let (xs, shape) = read(x)?;
    let mut y = vec![0.0; xs.len()];
    kernels::gelu_erf(&xs, &mut y);
    Some(make(&shape, y))
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Nd, 1> for GeluBackward {
    /// The input `x`.
    type State = NdArrayTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Nd, _>(ops.parents, ops.node, grads, |dy| {
            let (xs, shape) = read(&x).expect("f32 input");
            let (gs, _) = read(&dy).expect("f32 gradient");
            let mut dx = vec![0.0; xs.len()];
            kernels::gelu_erf_backward(&xs, &gs, &mut dx);
            make(&shape, dx)
        });
    }
}

pub(super) fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    match path::<B>() {
        Some(Path::Plain) => {
            let p = prim::<B, Nd, D>(x)?;
            gelu_nd(&p).map(wrap::<Nd, B, D>).ok_or_else(|| wrap::<Nd, B, D>(p))
        }
        Some(Path::Autodiff) => {
            let p = prim::<B, Ad, D>(x)?;
            let Some(y) = gelu_nd(&p.primitive) else { return Err(wrap::<Ad, B, D>(p)) };
            let out = match GeluBackward.prepare::<NoCheckpointing>([p.node.clone()]).compute_bound().stateful() {
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
    let mut y = vec![0.0; xs.len()];
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
    let mut dx = vec![0.0; xs.len()];
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
