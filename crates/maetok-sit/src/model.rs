//! The SiT network on latent sequences: `x [B, L, C]`, `t [B]` (0 = data, 1 = noise),
//! `y [B]` (class ids; `num_classes` is the null class) → velocity `[B, L, C]`.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::ops::linear3;
use maetok_nn::{sincos_1d, AdaLnBlock, FinalLayer, LabelEmbedder, TimestepEmbedder};

use crate::config::SitConfig;

#[derive(Module, Debug)]
pub struct Sit<B: Backend> {
    /// `x_embedder`: `C → D` per token.
    pub x_embedder: Linear<B>,
    /// `pos_embed` `[1, L, D]`, frozen (loaded, never recomputed: the published EMA drifted it).
    pub pos_embed: Param<Tensor<B, 3>>,
    pub t_embedder: TimestepEmbedder<B>,
    pub y_embedder: LabelEmbedder<B>,
    pub blocks: Vec<AdaLnBlock<B>>,
    pub final_layer: FinalLayer<B>,
}

/// Intermediate activations of [`Sit::forward_traced`].
pub struct SitTrace<B: Backend> {
    /// `[B, L, D]` token embeddings before the positions are added.
    pub x_embed: Tensor<B, 3>,
    /// `[B, D]`.
    pub t_embed: Tensor<B, 2>,
    /// `[B, D]`.
    pub y_embed: Tensor<B, 2>,
    /// `[B, L, D]` after each block.
    pub blocks: Vec<Tensor<B, 3>>,
}

impl<B: Backend> Sit<B> {
    /// A model with placeholder weights and the reference's sin-cos positions. Initialise for
    /// training with [`Sit::init_weights`] or load weights with [`crate::load_sit`].
    pub fn new(cfg: &SitConfig, device: &B::Device) -> Self {
        Self::with_out_channels(cfg, cfg.in_channels, device)
    }

    /// The same trunk with `out_channels` outputs per token (DiT's learned variance doubles them).
    pub fn with_out_channels(cfg: &SitConfig, out_channels: usize, device: &B::Device) -> Self {
        let d = cfg.hidden_size;
        let pe = TensorData::new(sincos_1d(d, cfg.input_size), [1, cfg.input_size, d]);
        Self {
            x_embedder: LinearConfig::new(cfg.in_channels, d).init(device),
            pos_embed: Param::from_tensor(Tensor::from_data(pe, device)).set_require_grad(false),
            t_embedder: TimestepEmbedder::new(d, device),
            y_embedder: LabelEmbedder::new(cfg.num_classes, d, device),
            blocks: (0..cfg.depth).map(|_| AdaLnBlock::new(d, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm, device)).collect(),
            final_layer: FinalLayer::new(d, out_channels, device),
        }
    }

    /// Number of real classes; the null class id equals it.
    pub fn num_classes(&self) -> usize {
        self.y_embedder.num_classes()
    }

    /// The unconditional label (classifier-free guidance).
    pub fn null_class(&self) -> usize {
        self.num_classes()
    }

    /// `[L, C]` of the latents this model takes.
    pub fn latent_shape(&self) -> [usize; 2] {
        let [_, l, _] = self.pos_embed.dims();
        [l, self.x_embedder.weight.dims()[0]]
    }

    /// Uses the backend's fused attention op in every block.
    pub fn set_fused_attention(&mut self, fused: bool) {
        for b in &mut self.blocks {
            b.attn.fused = fused;
        }
    }

    /// Velocity `[B, L, C]`.
    pub fn forward(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        self.forward_traced(x, t, y, false).0
    }

    /// [`Sit::forward`], optionally returning the intermediate activations.
    pub fn forward_traced(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>, trace: bool) -> (Tensor<B, 3>, Option<SitTrace<B>>) {
        let xe = linear3(&self.x_embedder, x);
        let mut h = xe.clone() + self.pos_embed.val();
        let te = self.t_embedder.forward(t);
        let ye = self.y_embedder.forward(y);
        let c = te.clone() + ye.clone();
        let mut outs = Vec::new();
        for b in &self.blocks {
            h = b.forward(h, c.clone());
            if trace {
                outs.push(h.clone());
            }
        }
        let out = self.final_layer.forward(h, c);
        let tr = trace.then_some(SitTrace { x_embed: xe, t_embed: te, y_embed: ye, blocks: outs });
        (out, tr)
    }
}

impl<B: Backend> VisitParams<B> for Sit<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "pos_embed"), &mut self.pos_embed);
        v.linear(&join(prefix, "x_embedder"), &mut self.x_embedder);
        self.t_embedder.visit_params(&join(prefix, "t_embedder"), v);
        self.y_embedder.visit_params(&join(prefix, "y_embedder"), v);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_params(&join(prefix, &format!("blocks.{i}")), v);
        }
        self.final_layer.visit_params(&join(prefix, "final_layer"), v);
    }
}

/// Sets the reference's training initialisation (spec §2.6): Xavier-uniform Linear weights and
/// zero biases, `N(0, 0.02²)` label table and timestep-MLP weights, zero adaLN modulations and
/// final linear (so the untrained network outputs exactly 0). `pos_embed` keeps its sin-cos values.
pub fn init_for_training<B: Backend>(model: &mut Sit<B>, device: &B::Device) {
    struct Init<'a, B: Backend> {
        device: &'a B::Device,
    }
    impl<B: Backend> Init<'_, B> {
        fn value<const D: usize>(&self, key: &str, shape: burn::tensor::Shape) -> Option<Tensor<B, D>> {
            use burn::tensor::Distribution;
            let zero = key.ends_with(".bias") || key.contains("adaLN_modulation") || key.starts_with("final_layer.linear");
            if key == "pos_embed" {
                None
            } else if zero {
                Some(Tensor::zeros(shape, self.device))
            } else if key.starts_with("y_embedder") || key.starts_with("t_embedder") {
                Some(Tensor::random(shape, Distribution::Normal(0.0, 0.02), self.device))
            } else {
                let dims = shape.dims::<D>();
                let (a, b) = (dims[0] as f64, dims[D - 1] as f64);
                let bound = (6.0 / (a + b)).sqrt();
                Some(Tensor::random(shape, Distribution::Uniform(-bound, bound), self.device))
            }
        }
    }
    impl<B: Backend> ParamVisitor<B> for Init<'_, B> {
        fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
            if let Some(v) = self.value::<D>(key, param.shape()) {
                let grad = param.is_require_grad();
                *param = Param::initialized(param.id, v).set_require_grad(grad);
            }
        }
        fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
            self.param(key, param);
        }
        fn buffer(&mut self, _key: &str, _shape: &[usize], _values: &[f32]) {}
    }
    model.visit_params("", &mut Init { device });
}
