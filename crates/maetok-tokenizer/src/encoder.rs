//! MAETok ViT encoder (`TimmViTEncoder`): image patches + learnable 1-D latent tokens.
//!
//! Sequence `[cls | N image tokens | T latent tokens]`. The cls and image tokens get the learned
//! absolute position embedding (the reference adds it even with RoPE on; spec §8.1), the latent
//! tokens their own `latent_pos_embed`. RoPE rotates the image tokens (`1..1+N`) only.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::{Block, LayerNorm, PatchEmbed, Rope, RopeFull};
use rand::Rng;

use crate::config::{RopeKind, TokenizerConfig};
use crate::trace::Trace;

#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    /// `[1, 1, D]`
    pub cls_token: Param<Tensor<B, 3>>,
    /// `[1, 1+N, D]` (index 0 = cls)
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks: Vec<Block<B>>,
    pub norm: LayerNorm<B>,
    /// `[1, T, D]`
    pub latent_tokens: Param<Tensor<B, 3>>,
    /// `[1, T, D]`
    pub latent_pos_embed: Param<Tensor<B, 3>>,
    /// `[1, 1, D]`, replaces masked patches during MAE training.
    pub mask_token: Option<Param<Tensor<B, 3>>>,
    pub rope: Rope<B>,
    pub grid: usize,
}

fn normal<B: Backend>(shape: [usize; 3], std: f64, device: &B::Device) -> Param<Tensor<B, 3>> {
    Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, std), device))
}

impl<B: Backend> Encoder<B> {
    /// A randomly initialised encoder: tokens and position embeddings ~ N(0, 0.02), LayerScale
    /// starting at 0.1 (timm's DINOv2 uses 1e-5; a larger start lets small models train quickly).
    pub fn new(cfg: &TokenizerConfig, rng: &mut impl Rng, device: &B::Device) -> Self {
        let e = cfg.encoder;
        let grid = cfg.enc_grid();
        let n = grid * grid;
        let hd = e.width / e.heads;
        let base_grid = cfg.base_image_size / cfg.enc_patch;
        let rope = match cfg.rope {
            RopeKind::Mixed => Rope::mixed(e.depth, e.heads, hd, cfg.rope_theta, base_grid, rng, device),
            RopeKind::Axial => Rope::axial(e.heads, hd, cfg.rope_theta, base_grid),
        };
        let ls = cfg.encoder_layer_scale.then_some(0.1);
        Self {
            patch_embed: PatchEmbed::new(3, e.width, cfg.enc_patch, device),
            cls_token: normal([1, 1, e.width], 0.02, device),
            pos_embed: normal([1, 1 + n, e.width], 0.02, device),
            blocks: (0..e.depth).map(|_| Block::new(e.width, e.heads, e.mlp_hidden, ls, cfg.ln_eps, device)).collect(),
            norm: LayerNorm::affine(e.width, cfg.ln_eps, device),
            latent_tokens: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            latent_pos_embed: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            mask_token: cfg.enc_mask_token.then(|| normal([1, 1, e.width], 0.02, device)),
            rope,
            grid,
        }
    }

    /// `x`: `[B, 3, H, W]` in [-1, 1], H = W = image_size → latent-token features `[B, T, D]`
    /// (after the final LayerNorm, before `quant_conv`).
    pub fn forward(&self, x: Tensor<B, 4>, trace: &mut Trace<B>) -> Tensor<B, 3> {
        let device = x.device();
        let b = x.dims()[0];
        let tokens = self.patch_embed.forward(x);
        trace.record("enc_patch_embed", || tokens.clone());
        let d = tokens.dims()[2];
        let cls = self.cls_token.val().expand([b, 1, d]);
        let x = Tensor::cat(vec![cls, tokens], 1) + self.pos_embed.val();
        let t = self.latent_tokens.dims()[1];
        let lat = (self.latent_tokens.val() + self.latent_pos_embed.val()).expand([b, t, d]);
        let mut x = Tensor::cat(vec![x, lat], 1);
        trace.record("enc_tokens_in", || x.clone());
        for (i, blk) in self.blocks.iter().enumerate() {
            let table = self.rope.table(i, self.grid, self.grid, &device);
            if i == 0 {
                trace.record("enc_rope_cos_block0", || table.cos.clone());
                trace.record("enc_rope_sin_block0", || table.sin.clone());
            }
            let full = RopeFull::new(&table, x.dims()[1], 1, blk.attn.scale(d));
            x = blk.forward(x, Some(&full));
            if i == 0 {
                trace.record("enc_block0_out", || x.clone());
            }
        }
        let x = self.norm.forward(x);
        trace.record("enc_norm_out", || x.clone());
        let n = x.dims()[1];
        let out = x.slice([0..b, n - t..n, 0..d]);
        trace.record("enc_out", || out.clone());
        out
    }
}

impl<B: Backend> VisitParams<B> for Encoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "latent_tokens"), &mut self.latent_tokens);
        v.param(&join(prefix, "latent_pos_embed"), &mut self.latent_pos_embed);
        if let Some(m) = self.mask_token.as_mut() {
            v.param(&join(prefix, "mask_token"), m);
        }
        self.rope.visit_params(prefix, v);
        let model = join(prefix, "model");
        v.param(&join(&model, "cls_token"), &mut self.cls_token);
        v.param(&join(&model, "pos_embed"), &mut self.pos_embed);
        self.patch_embed.visit_params(&join(&model, "patch_embed"), v);
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            blk.visit_params(&join(&model, &format!("blocks.{i}")), v);
        }
        self.norm.visit_params(&join(&model, "norm"), v);
    }
}
