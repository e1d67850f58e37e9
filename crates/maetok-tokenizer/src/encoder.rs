//! MAETok ViT encoder (`TimmViTEncoder`): image patches + learnable 1-D latent tokens.
//!
//! Sequence `[cls | N image tokens | T latent tokens]`. The cls and image tokens get the learned
//! absolute position embedding (the reference adds it even with RoPE on; spec §8.1), the latent
//! tokens their own `latent_pos_embed`. RoPE rotates the image tokens (`1..1+N`) only.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::{Block, BlockConfig, LayerNorm, LayerNormConfig, PatchEmbed, PatchEmbedConfig, Rope, RopeFull, RopeTable};
use rand::Rng;

use crate::config::{RopeKind, TokenizerConfig};

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
    /// RoPE on the image tokens; `None` for APE-only encoders (SoftVQ-VAE).
    pub rope: Option<Rope<B>>,
    pub grid: usize,
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
        let grid = cfg.enc_grid();
        let n = grid * grid;
        let hd = e.width / e.heads;
        let base_grid = cfg.base_image_size / cfg.enc_patch;
        let rope = cfg.rope.map(|kind| build_rope(kind, e.depth, e.heads, hd, cfg.rope_theta, base_grid, rng, device));
        let ls = cfg.encoder_layer_scale.then_some(0.1);
        Self {
            patch_embed: PatchEmbedConfig::new(e.width, cfg.enc_patch).init(device),
            cls_token: normal([1, 1, e.width], 0.02, device),
            pos_embed: normal([1, 1 + n, e.width], 0.02, device),
            blocks: (0..e.depth)
                .map(|_| BlockConfig::new(e.width, e.heads, e.mlp_hidden).with_layer_scale(ls).with_eps(cfg.ln_eps).init(device))
                .collect(),
            norm: LayerNormConfig::new(e.width).with_eps(cfg.ln_eps).init(device),
            latent_tokens: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            latent_pos_embed: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            mask_token: cfg.enc_mask_token.then(|| normal([1, 1, e.width], 0.02, device)),
            rope,
            grid,
        }
    }

    /// `x`: `[B, 3, H, W]` in [-1, 1], H = W = image_size → latent-token features `[B, T, D]`
    /// (after the final LayerNorm, before `quant_conv`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let device = x.device();
        let mut h = self.tokens(self.patch_embed.forward(x)); // [B, 1+N+T, D]
        for i in 0..self.blocks.len() {
            h = self.block(i, h, self.table(i, &device).as_ref());
        }
        self.latent_rows(self.norm.forward(h)) // [B, T, D]
    }

    /// The training forward (spec §4.1): the patches where `mask` `[B, N]` is 1 are replaced by
    /// `mask_token` right after the patch embedding, so they still receive APE and RoPE; nothing
    /// is dropped. `None` without a mask token.
    pub fn forward_masked(&self, x: Tensor<B, 4>, mask: Tensor<B, 2>) -> Option<Tensor<B, 3>> {
        let device = x.device();
        let mut h = self.tokens(self.mask_patches(self.patch_embed.forward(x), mask)?);
        for i in 0..self.blocks.len() {
            h = self.block(i, h, self.table(i, &device).as_ref());
        }
        Some(self.latent_rows(self.norm.forward(h)))
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
        let patch_embed = self.patch_embed.forward(x);
        let patches = match mask {
            Some(m) => self.mask_patches(patch_embed.clone(), m)?,
            None => patch_embed.clone(),
        };
        let tokens_in = self.tokens(patches);
        let (mut h, mut rope, mut blocks) = (tokens_in.clone(), Vec::new(), Vec::new());
        for i in 0..self.blocks.len() {
            let table = self.table(i, &device);
            h = self.block(i, h, table.as_ref());
            rope.extend(table);
            blocks.push(h.clone());
        }
        let norm_out = self.norm.forward(h);
        let out = self.latent_rows(norm_out.clone());
        Some((out, EncoderIntermediates { patch_embed, tokens_in, rope, blocks, norm_out }))
    }

    /// `[cls | patches] + pos_embed` followed by `latent_tokens + latent_pos_embed`:
    /// `[B, N, D]` patch tokens → `[B, 1+N+T, D]`.
    fn tokens(&self, patches: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, d] = patches.dims();
        let t = self.latent_tokens.dims()[1];
        let cls = self.cls_token.val().expand([b, 1, d]);
        let image = Tensor::cat(vec![cls, patches], 1) + self.pos_embed.val();
        let latent = (self.latent_tokens.val() + self.latent_pos_embed.val()).expand([b, t, d]);
        Tensor::cat(vec![image, latent], 1)
    }

    /// Block `i`'s RoPE table, if the encoder has RoPE.
    fn table(&self, i: usize, device: &B::Device) -> Option<RopeTable<B>> {
        self.rope.as_ref().map(|r| r.table(i, self.grid, self.grid, device))
    }

    /// Block `i`, with RoPE on the image tokens (after the cls token) when `table` is given.
    fn block(&self, i: usize, h: Tensor<B, 3>, table: Option<&RopeTable<B>>) -> Tensor<B, 3> {
        let blk = &self.blocks[i];
        let [_, n, d] = h.dims();
        match table {
            Some(t) => blk.forward(h, Some(&RopeFull::new(t, n, 1, blk.attn.scale(d)))),
            None => blk.forward(h, None),
        }
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
