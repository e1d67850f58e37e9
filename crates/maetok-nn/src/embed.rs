//! Conditioning embeddings of SiT and DiT: sinusoidal timestep features + MLP, class-label table
//! (with the extra null row used for classifier-free guidance), and the fixed 1-D sin-cos
//! position table of the latent-sequence mode.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::silu, backend::Backend, Int, Tensor, TensorData};

use crate::io::{join, ParamVisitor, VisitParams};

/// Width of the sinusoidal timestep features.
pub const FREQ_DIM: usize = 256;

/// `[cos(t·f) | sin(t·f)]` with `f_k = exp(−ln(10000)·k/128)`, computed in f32 as the reference
/// does. `t`: `[B]` → `[B, 256]`.
pub fn timestep_features<B: Backend>(t: Tensor<B, 1>) -> Tensor<B, 2> {
    let half = FREQ_DIM / 2;
    let freqs: Vec<f32> = (0..half).map(|k| (-(10000f32.ln()) * k as f32 / half as f32).exp()).collect();
    let f = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &t.device());
    let a = t.unsqueeze_dim::<2>(1) * f.unsqueeze_dim::<2>(0);
    Tensor::cat(vec![a.clone().cos(), a.sin()], 1)
}

/// `t_embedder`: features → `Linear(256→D)` → SiLU → `Linear(D→D)`.
#[derive(Module, Debug)]
pub struct TimestepEmbedder<B: Backend> {
    pub mlp0: Linear<B>,
    pub mlp2: Linear<B>,
}

/// The timestep MLP to width `dim`.
#[derive(Config, Debug)]
pub struct TimestepEmbedderConfig {
    pub dim: usize,
}

impl TimestepEmbedderConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TimestepEmbedder<B> {
        TimestepEmbedder {
            mlp0: LinearConfig::new(FREQ_DIM, self.dim).init(device),
            mlp2: LinearConfig::new(self.dim, self.dim).init(device),
        }
    }
}

impl<B: Backend> TimestepEmbedder<B> {
    /// `t`: `[B]` → `[B, D]`.
    pub fn forward(&self, t: Tensor<B, 1>) -> Tensor<B, 2> {
        self.mlp2.forward(silu(self.mlp0.forward(timestep_features(t))))
    }
}

impl<B: Backend> VisitParams<B> for TimestepEmbedder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.linear(&join(prefix, "mlp.0"), &mut self.mlp0);
        v.linear(&join(prefix, "mlp.2"), &mut self.mlp2);
    }
}

/// `y_embedder.embedding_table` `[K + 1, D]`; row `K` is the null class (CFG).
#[derive(Module, Debug)]
pub struct LabelEmbedder<B: Backend> {
    pub table: Param<Tensor<B, 2>>,
}

/// The class table: `num_classes` real classes plus the null class, width `dim`.
#[derive(Config, Debug)]
pub struct LabelEmbedderConfig {
    pub num_classes: usize,
    pub dim: usize,
}

impl LabelEmbedderConfig {
    /// Rows `~ N(0, 0.02²)`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LabelEmbedder<B> {
        let table = Tensor::random([self.num_classes + 1, self.dim], burn::tensor::Distribution::Normal(0.0, 0.02), device);
        LabelEmbedder { table: Param::from_tensor(table) }
    }
}

impl<B: Backend> LabelEmbedder<B> {
    /// Number of real classes (the null class is index `num_classes()`).
    pub fn num_classes(&self) -> usize {
        self.table.dims()[0] - 1
    }

    /// `y`: `[B]` class ids (the null class allowed) → `[B, D]`.
    pub fn forward(&self, y: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.table.val().select(0, y)
    }
}

impl<B: Backend> VisitParams<B> for LabelEmbedder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "embedding_table.weight"), &mut self.table);
    }
}

/// The reference `positionalencoding1d(D, L)`: `PE[p, 2i] = sin(p·ω_i)`, `PE[p, 2i+1] =
/// cos(p·ω_i)`, `ω_i = exp(2i·(−ln 10000 / D))`, in f32. Row-major `[L, D]`.
pub fn sincos_1d(dim: usize, len: usize) -> Vec<f32> {
    let mut pe = vec![0f32; len * dim];
    let step = -(10000f32.ln()) / dim as f32;
    for p in 0..len {
        for i in 0..dim / 2 {
            let w = ((2 * i) as f32 * step).exp();
            let a = p as f32 * w;
            pe[p * dim + 2 * i] = a.sin();
            pe[p * dim + 2 * i + 1] = a.cos();
        }
    }
    pe
}
