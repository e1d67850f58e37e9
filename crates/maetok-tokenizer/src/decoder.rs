//! MAETok's MoVQ decoder trunk (`TimmViTDecoder`): learned mask tokens at every image position,
//! followed by the projected latent tokens; MoVQ blocks modulated by the raw latents. The pixel
//! decoder and the three auxiliary decoders of MaskAE training are this trunk with different
//! sizes and output heads (the heads live with the model: `Tokenizer::to_pixel`, `AuxDecoder::head`).
//!
//! Sequence `[cls? | N mask tokens | T latents]`; no absolute position embedding (its tensor
//! exists in checkpoints and is loaded but unused); RoPE rotates the N image positions.

use std::ops::Range;

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::silu, backend::Backend, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::{MovqBlock, MovqBlockConfig, MovqNorm, MovqNormConfig, PatchEmbed, PatchEmbedConfig, Rope, RopeFull, RopeTable};
use rand::Rng;

use crate::config::{RopeKind, TokenizerConfig, VitDims};
use crate::encoder::{build_rope, normal};

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
    /// `model.head`: the timm classifier head that the auxiliary decoders' preset carries
    /// (Linear(D → 1000)); loaded and saved for key compatibility, never used.
    pub head: Option<Linear<B>>,
    pub rope: Rope<B>,
    pub grid: usize,
}

impl<B: Backend> Decoder<B> {
    /// A randomly initialised trunk of size `e` on `cfg`'s decoder grid: the pixel decoder is
    /// `new(cfg, cfg.decoder, cfg.dec_cls_token, None, ..)`; an auxiliary decoder has its own
    /// size, a cls token and the unused 1000-class head.
    pub fn new(
        cfg: &TokenizerConfig,
        e: VitDims,
        cls_token: bool,
        head_classes: Option<usize>,
        rng: &mut impl Rng,
        device: &B::Device,
    ) -> Self {
        let grid = cfg.dec_grid();
        let n = grid * grid;
        let hd = e.width / e.heads;
        let base_grid = cfg.base_image_size / cfg.dec_patch;
        // `resolve` refuses a MoVQ decoder without RoPE, `resolve_aux` auxiliary decoders without it.
        let kind = cfg.rope.unwrap_or(RopeKind::Axial);
        let rope = build_rope(kind, e.depth, e.heads, hd, cfg.rope_theta, base_grid, rng, device);
        let z = cfg.latent_dim;
        Self {
            mask_token: normal([1, 1, e.width], 0.02, device),
            latent_pos_embed: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            cls_token: cls_token.then(|| normal([1, 1, e.width], 0.02, device)),
            pos_embed: normal([1, 1 + n, e.width], 0.02, device),
            patch_embed: PatchEmbedConfig::new(e.width, cfg.dec_patch).init(device),
            blocks: (0..e.depth)
                .map(|_| MovqBlockConfig::new(e.width, e.heads, e.mlp_hidden, z).with_eps(cfg.ln_eps).init(device))
                .collect(),
            norm: MovqNormConfig::new(e.width, z).with_eps(cfg.ln_eps).init(device),
            head: head_classes.map(|c| LinearConfig::new(e.width, c).init(device)),
            rope,
            grid,
        }
    }

    /// `zq`: `post_quant_conv(z)` `[B, T, D]`, `z`: raw latents `[B, T, C]` → the image-position
    /// tokens after the final MoVQNorm `[B, N, D]`, which the output head maps to pixels or
    /// features.
    pub fn forward(&self, zq: Tensor<B, 3>, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let device = zq.device();
        let mut h = self.tokens(zq); // [B, cls? + N + T, D]
        let blocks = self.blocks.len();
        for i in 0..blocks.saturating_sub(1) {
            h = self.block(i, h, z.clone(), &self.rope.table(i, self.grid, self.grid, &device));
        }
        let (start, n) = (self.prefix(), self.grid * self.grid);
        let Some(last) = blocks.checked_sub(1) else { return self.image_rows(h) };
        // The last block keeps the image rows only (nothing reads the others): its projection
        // and MLP run on N of the cls? + N + T rows. Those rows carry no latent modulation, so
        // the final MoVQNorm is a plain LayerNorm of them.
        let table = self.rope.table(last, self.grid, self.grid, &device);
        let h = self.block_rows(last, h, z, &table, start..start + n);
        self.norm.forward_prefix(h, 0, n) // [B, N, D]
    }

    /// [`Decoder::forward`] with every intermediate (for parity tests and inspection).
    pub fn forward_intermediates(&self, zq: Tensor<B, 3>, z: Tensor<B, 3>) -> (Tensor<B, 3>, DecoderIntermediates<B>) {
        let device = zq.device();
        let post_quant = zq.clone();
        let tokens_in = self.tokens(zq);
        let (mut h, mut rope, mut modulation, mut blocks) = (tokens_in.clone(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.blocks.len() {
            let table = self.rope.table(i, self.grid, self.grid, &device);
            modulation.push(maetok_nn::ops::linear3(&self.blocks[i].ada_ln, silu(z.clone())));
            h = self.block(i, h, z.clone(), &table);
            rope.push(table);
            blocks.push(h.clone());
        }
        let norm_out = self.norm.forward(h.clone(), z);
        (self.image_rows(h), DecoderIntermediates { post_quant, tokens_in, rope, modulation, blocks, norm_out })
    }

    /// Prefix tokens before the image positions (the optional cls token).
    fn prefix(&self) -> usize {
        usize::from(self.cls_token.is_some())
    }

    /// `[cls? | mask_token × N | zq + latent_pos_embed]`: `[B, T, D]` → `[B, cls? + N + T, D]`.
    fn tokens(&self, zq: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, d] = zq.dims();
        let n = self.grid * self.grid;
        let mut parts = Vec::with_capacity(3);
        if let Some(cls) = &self.cls_token {
            parts.push(cls.val().expand([b, 1, d]));
        }
        parts.push(self.mask_token.val().expand([b, n, d]));
        parts.push(zq + self.latent_pos_embed.val());
        Tensor::cat(parts, 1)
    }

    /// MoVQ block `i` modulated by the raw latents `z`, RoPE on the image positions.
    fn block(&self, i: usize, h: Tensor<B, 3>, z: Tensor<B, 3>, table: &RopeTable<B>) -> Tensor<B, 3> {
        let n = h.dims()[1];
        self.block_rows(i, h, z, table, 0..n)
    }

    /// [`Decoder::block`]'s output rows `rows` only: `[B, cls? + N + T, D]` →
    /// `[B, rows.len(), D]`.
    fn block_rows(&self, i: usize, h: Tensor<B, 3>, z: Tensor<B, 3>, table: &RopeTable<B>, rows: Range<usize>) -> Tensor<B, 3> {
        let blk = &self.blocks[i];
        let [_, n, d] = h.dims();
        blk.forward_rows(h, z, Some(&RopeFull::new(table, n, self.prefix(), blk.attn.scale(d))), rows)
    }

    /// Final MoVQNorm on the image rows → `[B, N, D]`. (The MoVQNorm modulation touches only
    /// the latent rows, which are discarded here.)
    fn image_rows(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.norm.forward_prefix(h, self.prefix(), self.grid * self.grid)
    }
}

/// What [`Decoder::forward_intermediates`] returns besides the image.
pub struct DecoderIntermediates<B: Backend> {
    /// `[B, T, D]` the decoder's input `post_quant_conv(z)`.
    pub post_quant: Tensor<B, 3>,
    /// `[B, cls? + N + T, D]` the sequence entering block 0.
    pub tokens_in: Tensor<B, 3>,
    /// The RoPE table of each block.
    pub rope: Vec<RopeTable<B>>,
    /// `[B, T, 4D]` each block's `adaLN_modulation(SiLU(z))`.
    pub modulation: Vec<Tensor<B, 3>>,
    /// `[B, cls? + N + T, D]` after each block.
    pub blocks: Vec<Tensor<B, 3>>,
    /// `[B, cls? + N + T, D]` the final MoVQNorm over every row (latent rows modulated).
    pub norm_out: Tensor<B, 3>,
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
        if let Some(head) = self.head.as_mut() {
            v.linear(&join(&model, "head"), head);
        }
    }
}
