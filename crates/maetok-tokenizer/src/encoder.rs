//! MAETok ViT encoder (`TimmViTEncoder`): the timm ViT trunk ([`maetok_nn::Vit`], keys
//! `model.*`, the same trunk as the teachers') plus learnable 1-D latent tokens, RoPE and the
//! mask token of MAE training.
//!
//! Sequence `[cls | N image tokens | T latent tokens]`. The cls and image tokens get the trunk's
//! learned absolute position embedding (the reference adds it even with RoPE on; spec §8.1), the
//! latent tokens their own `latent_pos_embed`. RoPE rotates the image tokens (`1..1+N`) only.

use std::ops::Range;

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::{Rope, RopeFull, RopeTable, Vit, VitConfig};
use rand::Rng;

use crate::config::{RopeKind, TokenizerConfig};

#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// The timm trunk: patch embedding, cls token, position embedding `[1, 1+N, D]`, blocks and
    /// the final norm.
    pub model: Vit<B>,
    /// `[1, T, D]`
    pub latent_tokens: Param<Tensor<B, 3>>,
    /// `[1, T, D]`
    pub latent_pos_embed: Param<Tensor<B, 3>>,
    /// `[1, 1, D]`, replaces masked patches during MAE training.
    pub mask_token: Option<Param<Tensor<B, 3>>>,
    /// RoPE on the image tokens; `None` for APE-only encoders (SoftVQ-VAE).
    pub rope: Option<Rope<B>>,
}

/// The encoder's trunk as a timm ViT: cls token, LayerScale as the preset says, the
/// tokenizer's LayerNorm eps, no dynamic image size (the tokenizer checks image sizes itself).
pub fn trunk_config(cfg: &TokenizerConfig) -> VitConfig {
    let e = cfg.encoder;
    VitConfig {
        img_size: cfg.image_size,
        patch_size: cfg.enc_patch,
        dim: e.width,
        depth: e.depth,
        heads: e.heads,
        mlp_hidden: e.mlp_hidden,
        class_token: true,
        layer_scale: cfg.encoder_layer_scale,
        tanh_gelu: false,
        dynamic_img_size: false,
        ln_eps: cfg.ln_eps,
    }
}

/// A `[1, ·, D]` token / position parameter drawn from N(0, std²).
pub(crate) fn normal<B: Backend>(shape: [usize; 3], std: f64, device: &B::Device) -> Param<Tensor<B, 3>> {
    Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, std), device))
}

/// The RoPE of a trunk of `depth` blocks, `heads` heads of dim `hd`, on a `base_grid²` grid.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_rope<B: Backend>(
    kind: RopeKind,
    depth: usize,
    heads: usize,
    hd: usize,
    theta: f64,
    base_grid: usize,
    rng: &mut impl Rng,
    device: &B::Device,
) -> Rope<B> {
    match kind {
        RopeKind::Mixed => Rope::mixed(depth, heads, hd, theta, base_grid, rng, device),
        RopeKind::Axial => Rope::axial(heads, hd, theta, base_grid),
    }
}

impl<B: Backend> Encoder<B> {
    /// A randomly initialised encoder: tokens and position embeddings ~ N(0, 0.02), LayerScale
    /// starting at 0.1 (timm's DINOv2 uses 1e-5; a larger start lets small models train quickly).
    pub fn new(cfg: &TokenizerConfig, rng: &mut impl Rng, device: &B::Device) -> Self {
        let e = cfg.encoder;
        let hd = e.width / e.heads;
        let base_grid = cfg.base_image_size / cfg.enc_patch;
        let rope = cfg.rope.map(|kind| build_rope(kind, e.depth, e.heads, hd, cfg.rope_theta, base_grid, rng, device));
        Self {
            model: Vit::random(&trunk_config(cfg), 0.02, 0.1, device),
            latent_tokens: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            latent_pos_embed: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            mask_token: cfg.enc_mask_token.then(|| normal([1, 1, e.width], 0.02, device)),
            rope,
        }
    }

    /// Side of the image-token grid (`image_size / enc_patch`).
    pub fn grid(&self) -> usize {
        self.model.grid()
    }

    /// `x`: `[B, 3, H, W]` in [-1, 1], H = W = image_size → latent-token features `[B, T, D]`
    /// (after the final LayerNorm, before `quant_conv`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let h = self.tokens(self.model.patch_embed.forward(x)); // [B, 1+N+T, D]
        self.model.norm.forward(self.latent_blocks(h))
    }

    /// The training forward (spec §4.1): the patches where `mask` `[B, N]` is 1 are replaced by
    /// `mask_token` right after the patch embedding, so they still receive APE and RoPE; nothing
    /// is dropped. `None` without a mask token.
    pub fn forward_masked(&self, x: Tensor<B, 4>, mask: Tensor<B, 2>) -> Option<Tensor<B, 3>> {
        let h = self.tokens(self.mask_patches(self.model.patch_embed.forward(x), mask)?);
        Some(self.model.norm.forward(self.latent_blocks(h)))
    }

    /// Every block of the trunk, each with its RoPE table, keeping only the latent rows of the
    /// last (whose other rows nothing reads: that block's projection and MLP run on `T` of the
    /// `1+N+T` rows): `[B, 1+N+T, D]` → `[B, T, D]`.
    fn latent_blocks(&self, mut h: Tensor<B, 3>) -> Tensor<B, 3> {
        let device = h.device();
        let blocks = self.model.blocks.len();
        for i in 0..blocks.saturating_sub(1) {
            h = self.block(i, h, self.table(i, &device).as_ref());
        }
        let Some(last) = blocks.checked_sub(1) else { return self.latent_rows(h) };
        let (n, t) = (h.dims()[1], self.latent_tokens.dims()[1]);
        self.block_rows(last, h, self.table(last, &device).as_ref(), n - t..n)
    }

    /// `patches` `[B, N, D]` with the rows where `mask` `[B, N]` is 1 replaced by `mask_token`.
    fn mask_patches(&self, patches: Tensor<B, 3>, mask: Tensor<B, 2>) -> Option<Tensor<B, 3>> {
        let token = self.mask_token.as_ref()?.val();
        let [b, n, d] = patches.dims();
        let masked = mask.greater_elem(0.5).unsqueeze_dim::<3>(2).expand([b, n, d]);
        Some(patches.mask_where(masked, token.expand([b, n, d])))
    }

    /// [`Encoder::forward`] (or with `mask`, [`Encoder::forward_masked`]) with every intermediate
    /// (for parity tests and inspection). `None` when a mask is given to an encoder without a
    /// mask token.
    pub fn forward_intermediates(&self, x: Tensor<B, 4>, mask: Option<Tensor<B, 2>>) -> Option<(Tensor<B, 3>, EncoderIntermediates<B>)> {
        let device = x.device();
        let patch_embed = self.model.patch_embed.forward(x);
        let patches = match mask {
            Some(m) => self.mask_patches(patch_embed.clone(), m)?,
            None => patch_embed.clone(),
        };
        let tokens_in = self.tokens(patches);
        let (mut h, mut rope, mut blocks) = (tokens_in.clone(), Vec::new(), Vec::new());
        for i in 0..self.model.blocks.len() {
            let table = self.table(i, &device);
            h = self.block(i, h, table.as_ref());
            rope.extend(table);
            blocks.push(h.clone());
        }
        let norm_out = self.model.norm.forward(h);
        let out = self.latent_rows(norm_out.clone());
        Some((out, EncoderIntermediates { patch_embed, tokens_in, rope, blocks, norm_out }))
    }

    /// `[cls | patches] + pos_embed` followed by `latent_tokens + latent_pos_embed`:
    /// `[B, N, D]` patch tokens → `[B, 1+N+T, D]`.
    fn tokens(&self, patches: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, d] = patches.dims();
        let t = self.latent_tokens.dims()[1];
        let g = self.grid();
        let image = self.model.embed_patches(patches, g, g);
        let latent = (self.latent_tokens.val() + self.latent_pos_embed.val()).expand([b, t, d]);
        Tensor::cat(vec![image, latent], 1)
    }

    /// Block `i`'s RoPE table, if the encoder has RoPE.
    fn table(&self, i: usize, device: &B::Device) -> Option<RopeTable<B>> {
        let g = self.grid();
        self.rope.as_ref().map(|r| r.table(i, g, g, device))
    }

    /// Block `i`, with RoPE on the image tokens (after the cls token) when `table` is given.
    fn block(&self, i: usize, h: Tensor<B, 3>, table: Option<&RopeTable<B>>) -> Tensor<B, 3> {
        let n = h.dims()[1];
        self.block_rows(i, h, table, 0..n)
    }

    /// [`Encoder::block`]'s output rows `rows` only: `[B, 1+N+T, D]` → `[B, rows.len(), D]`.
    fn block_rows(&self, i: usize, h: Tensor<B, 3>, table: Option<&RopeTable<B>>, rows: Range<usize>) -> Tensor<B, 3> {
        let blk = &self.model.blocks[i];
        let [_, n, d] = h.dims();
        let rope = table.map(|t| RopeFull::new(t, n, 1, blk.attn.scale(d)));
        blk.forward_rows(h, rope.as_ref(), rows)
    }

    /// The last `T` rows: `[B, 1+N+T, D]` → `[B, T, D]`.
    fn latent_rows(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = h.dims();
        let t = self.latent_tokens.dims()[1];
        h.slice([0..b, n - t..n, 0..d])
    }
}

/// What [`Encoder::forward_intermediates`] returns besides the output.
pub struct EncoderIntermediates<B: Backend> {
    /// `[B, N, D]` patch embeddings (before any masking).
    pub patch_embed: Tensor<B, 3>,
    /// `[B, 1+N+T, D]` the sequence entering block 0.
    pub tokens_in: Tensor<B, 3>,
    /// The RoPE table of each block (`[heads, N, hd/2]` cos and sin); empty without RoPE.
    pub rope: Vec<RopeTable<B>>,
    /// `[B, 1+N+T, D]` after each block.
    pub blocks: Vec<Tensor<B, 3>>,
    /// `[B, 1+N+T, D]` after the final LayerNorm.
    pub norm_out: Tensor<B, 3>,
}

impl<B: Backend> VisitParams<B> for Encoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "latent_tokens"), &mut self.latent_tokens);
        v.param(&join(prefix, "latent_pos_embed"), &mut self.latent_pos_embed);
        if let Some(m) = self.mask_token.as_mut() {
            v.param(&join(prefix, "mask_token"), m);
        }
        if let Some(r) = self.rope.as_mut() {
            r.visit_params(prefix, v);
        }
        self.model.visit_params(&join(prefix, "model"), v);
    }
}
