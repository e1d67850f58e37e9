//! The latent transformer: `x [B, L, C]`, `t [B]`, `y [B]` (class ids; `num_classes` is the
//! null class) → `[B, L, C_out]`.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::ops::linear3;
use maetok_nn::{
    sincos_1d, AdaLnBlock, AdaLnBlockConfig, FinalLayer, FinalLayerConfig, LabelEmbedder, LabelEmbedderConfig, TimestepEmbedder,
    TimestepEmbedderConfig,
};
use maetok_sampler::Denoiser;

use crate::config::LatentTransformerConfig;

#[derive(Module, Debug)]
pub struct LatentTransformer<B: Backend> {
    /// `x_embedder`: `C → D` per token.
    pub x_embedder: Linear<B>,
    /// `pos_embed` `[1, L, D]`, frozen (loaded, never recomputed: the published EMA drifted it).
    pub pos_embed: Param<Tensor<B, 3>>,
    pub t_embedder: TimestepEmbedder<B>,
    pub y_embedder: LabelEmbedder<B>,
    pub blocks: Vec<AdaLnBlock<B>>,
    pub final_layer: FinalLayer<B>,
}

/// What [`LatentTransformer::forward_intermediates`] returns besides the output.
pub struct Intermediates<B: Backend> {
    /// `[B, L, D]` token embeddings before the positions are added.
    pub x_embed: Tensor<B, 3>,
    /// `[B, D]`.
    pub t_embed: Tensor<B, 2>,
    /// `[B, D]`.
    pub y_embed: Tensor<B, 2>,
    /// `[B, L, D]` after each block.
    pub blocks: Vec<Tensor<B, 3>>,
}

impl LatentTransformerConfig {
    /// The network with placeholder weights and the reference's sin-cos positions. Initialise
    /// for training with [`LatentTransformer::init_for_training`] or load weights with
    /// [`crate::load_folder`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> LatentTransformer<B> {
        let d = self.hidden_size;
        let pe = TensorData::new(sincos_1d(d, self.input_size), [1, self.input_size, d]);
        LatentTransformer {
            x_embedder: LinearConfig::new(self.in_channels, d).init(device),
            pos_embed: Param::from_tensor(Tensor::from_data(pe, device)).set_require_grad(false),
            t_embedder: TimestepEmbedderConfig::new(d).init(device),
            y_embedder: LabelEmbedderConfig::new(self.num_classes, d).init(device),
            blocks: (0..self.depth)
                .map(|_| {
                    AdaLnBlockConfig::new(d, self.num_heads)
                        .with_mlp_ratio(self.mlp_ratio)
                        .with_qk_norm(self.qk_norm.unwrap_or(false))
                        .init(device)
                })
                .collect(),
            final_layer: FinalLayerConfig::new(d, self.out_channels()).init(device),
        }
    }
}

impl<B: Backend> LatentTransformer<B> {
    /// Number of real classes; the null class id equals it.
    pub fn num_classes(&self) -> usize {
        self.y_embedder.num_classes()
    }

    /// The unconditional label (classifier-free guidance).
    pub fn null_class(&self) -> usize {
        self.num_classes()
    }

    /// Label dropout of classifier-free-guidance training: labels `y` `[B]` whose draw `u`
    /// `[B]` (`U[0, 1)`) is below `p` become the null class.
    pub fn drop_labels(&self, y: Tensor<B, 1, Int>, u: Tensor<B, 1>, p: f64) -> Tensor<B, 1, Int> {
        y.mask_fill(u.lower_elem(p), self.null_class() as i64)
    }

    /// `[L, C]` of the latents this model takes.
    pub fn latent_shape(&self) -> [usize; 2] {
        let [_, l, _] = self.pos_embed.dims();
        [l, self.x_embedder.weight.dims()[0]]
    }

    /// Output channels per token (`C`, or `2C` with learned variance).
    pub fn out_channels(&self) -> usize {
        self.final_layer.linear.weight.dims()[1]
    }

    /// Whether the head outputs `[ε̂ | v]` (a diffusion model) rather than a velocity.
    pub fn learns_sigma(&self) -> bool {
        self.out_channels() == 2 * self.latent_shape()[1]
    }

    /// Uses the backend's fused attention op in every block.
    pub fn set_fused_attention(&mut self, fused: bool) {
        for b in &mut self.blocks {
            b.attn.fused = fused;
        }
    }

    /// `x [B, L, C]`, `t [B]`, `y [B]` → `[B, L, C_out]`.
    pub fn forward(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        let mut h = linear3(&self.x_embedder, x) + self.pos_embed.val(); // [B, L, D]
        let c = self.t_embedder.forward(t) + self.y_embedder.forward(y); // [B, D]
        for block in &self.blocks {
            h = block.forward(h, c.clone());
        }
        self.final_layer.forward(h, c) // [B, L, C_out]
    }

    /// [`LatentTransformer::forward`] with the embeddings and every block's output.
    pub fn forward_intermediates(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> (Tensor<B, 3>, Intermediates<B>) {
        let x_embed = linear3(&self.x_embedder, x);
        let t_embed = self.t_embedder.forward(t);
        let y_embed = self.y_embedder.forward(y);
        let c = t_embed.clone() + y_embed.clone();
        let mut h = x_embed.clone() + self.pos_embed.val();
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            h = block.forward(h, c.clone());
            blocks.push(h.clone());
        }
        let out = self.final_layer.forward(h, c);
        (out, Intermediates { x_embed, t_embed, y_embed, blocks })
    }
}

impl<B: Backend> Denoiser<B> for LatentTransformer<B> {
    fn denoise(&self, x: Tensor<B, 3>, t: Tensor<B, 1>, y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        self.forward(x, t, y)
    }
    fn null_class(&self) -> usize {
        LatentTransformer::null_class(self)
    }
}

impl<B: Backend> VisitParams<B> for LatentTransformer<B> {
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
