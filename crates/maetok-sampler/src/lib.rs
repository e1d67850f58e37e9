//! Samplers for the latent generators (`modelling/samplers.py`, `shared/spec/generative.md` §5).
//!
//! The sampler state and time grid are f64 on the host; each model call sees f32 inputs (as the
//! reference casts them) and its output is widened back to f64. Classifier-free guidance runs the
//! conditional and unconditional halves in one doubled batch, only while the current time lies in
//! `[guidance.low, guidance.high]` (t = 1 is noise). Every random draw comes from a caller-given
//! source, so runs are reproducible and replayable.

pub mod flow;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use maetok_sit::Sit;

pub use flow::{euler_maruyama_sampler, euler_sampler, score_from_velocity, SdeNoise};

/// A network predicting the velocity of the interpolant: `x [B, L, C]`, `t [B]`, `y [B]` →
/// `[B, L, C]`.
pub trait VelocityModel<B: Backend> {
    fn velocity(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3>;
    /// The unconditional label.
    fn null_class(&self) -> usize;
}

impl<B: Backend> VelocityModel<B> for Sit<B> {
    fn velocity(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        self.forward(x, t, y)
    }
    fn null_class(&self) -> usize {
        Sit::null_class(self)
    }
}

/// Classifier-free guidance `u + scale·(c − u)`, active while `low ≤ t ≤ high`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    pub scale: f64,
    pub low: f64,
    pub high: f64,
}

impl Guidance {
    /// No guidance.
    pub fn none() -> Self {
        Self { scale: 1.0, low: 0.0, high: 1.0 }
    }

    /// Whether the doubled guided batch runs at grid time `t` (inclusive bounds; never for
    /// `scale ≤ 1`).
    pub fn active(&self, t: f64) -> bool {
        self.scale > 1.0 && self.low <= t && t <= self.high
    }
}

/// `torch.linspace(a, b, n)` in f64: the first half counts up from `a`, the second half down
/// from `b` (so both end points are exact).
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n).map(|i| if i < n / 2 { a + step * i as f64 } else { b - step * (n - 1 - i) as f64 }).collect()
}

/// The model on f64 state: `x` (`[B·L·C]`, f64) at time `t` for labels `y`, guided or not;
/// returns the velocities of the conditional (and unconditional) rows as f64, `[rows·L·C]`.
pub(crate) fn eval_model<B: Backend, M: VelocityModel<B>>(model: &M, x: &[f64], shape: [usize; 3], t: f64, y: &[i64], guided: bool, device: &B::Device) -> Vec<f64> {
    let [b, l, c] = shape;
    let rows = if guided { 2 * b } else { b };
    let mut xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let mut ys = y.to_vec();
    if guided {
        xs.extend_from_within(..);
        ys.extend(std::iter::repeat_n(model.null_class() as i64, b));
    }
    let xt = Tensor::<B, 3>::from_data(TensorData::new(xs, [rows, l, c]), device);
    let tt = Tensor::<B, 1>::from_data(TensorData::new(vec![t as f32; rows], [rows]), device);
    let yt = Tensor::<B, 1, Int>::from_data(TensorData::new(ys, [rows]), device);
    let v = model.velocity(xt, tt, yt);
    v.into_data().convert::<f32>().to_vec::<f32>().expect("f32 output").into_iter().map(f64::from).collect()
}
