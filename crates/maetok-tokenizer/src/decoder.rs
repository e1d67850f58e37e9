//! MAETok MoVQ pixel decoder (`TimmViTDecoder`): learned mask tokens at every image position,
//! followed by the projected latent tokens; MoVQ blocks modulated by the raw latents.
//!
//! Sequence `[cls? | N mask tokens | T latents]`; no absolute position embedding (its tensor
//! exists in checkpoints and is loaded but unused); RoPE rotates the N image positions.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::{unpatchify, MovqBlock, MovqNorm, PatchEmbed, Rope, RopeFull};
use rand::Rng;

use crate::config::{RopeKind, TokenizerConfig};
use crate::trace::Trace;

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// `[1, 1, D]`, the query token at every image position.
    pub mask_token: Param<Tensor<B, 3>>,
    /// `[1, T, D]`
    pub latent_pos_embed: Param<Tensor<B, 3>>,
    /// `[1, 1, D]` when the config has a decoder cls token.
    pub cls_token: Option<Param<Tensor<B, 3>>>,
    /// `[1, 1+N, D]`: present in checkpoints, never used (spec §8.1).
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Present in checkpoints, never used.
    pub patch_embed: PatchEmbed<B>,
    pub blocks: Vec<MovqBlock<B>>,
    pub norm: MovqNorm<B>,
    /// `to_pixel.model`: Linear(D → p·p·3).
    pub to_pixel: Linear<B>,
    pub rope: Rope<B>,
    pub grid: usize,
    pub patch: usize,
}

fn normal<B: Backend>(shape: [usize; 3], std: f64, device: &B::Device) -> Param<Tensor<B, 3>> {
    Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, std), device))
}

impl<B: Backend> Decoder<B> {
    pub fn new(cfg: &TokenizerConfig, rng: &mut impl Rng, device: &B::Device) -> Self {
        let e = cfg.decoder;
        let grid = cfg.dec_grid();
        let n = grid * grid;
        let hd = e.width / e.heads;
        let base_grid = cfg.base_image_size / cfg.dec_patch;
        let rope = match cfg.rope {
            RopeKind::Mixed => Rope::mixed(e.depth, e.heads, hd, cfg.rope_theta, base_grid, rng, device),
            RopeKind::Axial => Rope::axial(e.heads, hd, cfg.rope_theta, base_grid),
        };
        let z = cfg.latent_dim;
        Self {
            mask_token: normal([1, 1, e.width], 0.02, device),
            latent_pos_embed: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            cls_token: cfg.dec_cls_token.then(|| normal([1, 1, e.width], 0.02, device)),
            pos_embed: normal([1, 1 + n, e.width], 0.02, device),
            patch_embed: PatchEmbed::new(3, e.width, cfg.dec_patch, device),
            blocks: (0..e.depth).map(|_| MovqBlock::new(e.width, e.heads, e.mlp_hidden, z, cfg.ln_eps, device)).collect(),
            norm: MovqNorm::new(e.width, z, cfg.ln_eps, device),
            to_pixel: LinearConfig::new(e.width, cfg.dec_patch * cfg.dec_patch * 3).init(device),
            rope,
            grid,
            patch: cfg.dec_patch,
        }
    }

    /// `zq`: `post_quant_conv(z)` `[B, T, D]`, `z`: raw latents `[B, T, C]` → image `[B, 3, H, W]`
    /// (not clamped).
    pub fn forward(&self, zq: Tensor<B, 3>, z: Tensor<B, 3>, trace: &mut Trace<B>) -> Tensor<B, 4> {
        let device = zq.device();
        let [b, _, d] = zq.dims();
        let n = self.grid * self.grid;
        let mut parts = Vec::new();
        if let Some(cls) = &self.cls_token {
            parts.push(cls.val().expand([b, 1, d]));
        }
        let prefix = parts.len();
        parts.push(self.mask_token.val().expand([b, n, d]));
        parts.push(zq + self.latent_pos_embed.val());
        let mut x = Tensor::cat(parts, 1);
        trace.record("dec_tokens_in", || x.clone());
        for (i, blk) in self.blocks.iter().enumerate() {
            let table = self.rope.table(i, self.grid, self.grid, &device);
            if i == 0 {
                trace.record("dec_rope_cos_block0", || table.cos.clone());
                trace.record("dec_rope_sin_block0", || table.sin.clone());
                trace.record("dec_block0_adaln", || maetok_nn::ops::linear3(&blk.ada_ln, burn::tensor::activation::silu(z.clone())));
            }
            let full = RopeFull::new(&table, x.dims()[1], prefix, blk.attn.scale(d));
            x = blk.forward(x, z.clone(), Some(&full));
            if i == 0 {
                trace.record("dec_block0_out", || x.clone());
            }
        }
        trace.record("dec_norm_out", || self.norm.forward(x.clone(), z.clone()));
        // The MoVQNorm modulation touches only the latent rows, which are discarded here.
        let img_tokens = self.norm.forward_prefix(x, prefix, n);
        let pix = maetok_nn::ops::linear3(&self.to_pixel, img_tokens);
        unpatchify(pix, self.patch, self.grid, self.grid, 3)
    }
}

impl<B: Backend> VisitParams<B> for Decoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "mask_token"), &mut self.mask_token);
        v.param(&join(prefix, "latent_pos_embed"), &mut self.latent_pos_embed);
        self.rope.visit_params(prefix, v);
        let model = join(prefix, "model");
        if let Some(cls) = self.cls_token.as_mut() {
            v.param(&join(&model, "cls_token"), cls);
        }
        v.param(&join(&model, "pos_embed"), &mut self.pos_embed);
        self.patch_embed.visit_params(&join(&model, "patch_embed"), v);
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            blk.visit_params(&join(&model, &format!("blocks.{i}")), v);
        }
        self.norm.visit_params(&join(&model, "norm"), v);
        v.linear(&join(prefix, "to_pixel.model"), &mut self.to_pixel);
    }
}
