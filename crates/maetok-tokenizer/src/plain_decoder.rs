//! SoftVQ-VAE's plain ViT pixel decoder (`TimmViTDecoder` on a non-MoVQ timm preset): learned mask
//! tokens at every image position with the absolute position embedding, followed by the projected
//! latents; plain timm blocks (LayerScale on DINOv2 presets) and an affine final LayerNorm. The
//! latents reach the image positions through attention only (no modulation).
//!
//! Sequence `[cls | N mask tokens] + pos_embed`, then `post_quant_conv(z_q) + latent_pos_embed`:
//! `[B, 1+N+T, D]`; the output is rows `1..1+N` after the norm.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::io::{join, ParamVisitor, VisitParams};
use maetok_nn::{Block, BlockConfig, LayerNorm, LayerNormConfig, PatchEmbed, PatchEmbedConfig};

use crate::config::TokenizerConfig;
use crate::encoder::normal;

#[derive(Module, Debug)]
pub struct PlainDecoder<B: Backend> {
    /// `[1, 1, D]`, the query token at every image position.
    pub mask_token: Param<Tensor<B, 3>>,
    /// `[1, T, D]`
    pub latent_pos_embed: Param<Tensor<B, 3>>,
    /// `[1, 1, D]`
    pub cls_token: Option<Param<Tensor<B, 3>>>,
    /// `[1, 1+N, D]` (index 0 = cls), added when `ape`.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Present in checkpoints, never used (the decoder embeds no image).
    pub patch_embed: PatchEmbed<B>,
    pub blocks: Vec<Block<B>>,
    pub norm: LayerNorm<B>,
    pub ape: bool,
    pub grid: usize,
}

impl<B: Backend> PlainDecoder<B> {
    /// A randomly initialised decoder of `cfg.decoder`'s size on `cfg`'s decoder grid.
    pub fn new(cfg: &TokenizerConfig, device: &B::Device) -> Self {
        let e = cfg.decoder;
        let grid = cfg.dec_grid();
        let n = grid * grid;
        let ls = cfg.decoder_layer_scale.then_some(0.1);
        Self {
            mask_token: normal([1, 1, e.width], 0.02, device),
            latent_pos_embed: normal([1, cfg.latent_tokens, e.width], 0.02, device),
            cls_token: cfg.dec_cls_token.then(|| normal([1, 1, e.width], 0.02, device)),
            pos_embed: normal([1, 1 + n, e.width], 0.02, device),
            patch_embed: PatchEmbedConfig::new(e.width, cfg.dec_patch).init(device),
            blocks: (0..e.depth)
                .map(|_| BlockConfig::new(e.width, e.heads, e.mlp_hidden).with_layer_scale(ls).with_eps(cfg.ln_eps).init(device))
                .collect(),
            norm: LayerNormConfig::new(e.width).with_eps(cfg.ln_eps).init(device),
            ape: cfg.decoder_ape,
            grid,
        }
    }

    /// `zq`: `post_quant_conv(z_q)` `[B, T, D]` → the image-position rows after the final
    /// LayerNorm `[B, N, D]`.
    pub fn forward(&self, zq: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut h = self.tokens(zq);
        let Some((last, blocks)) = self.blocks.split_last() else { return self.image_rows(self.norm.forward(h)) };
        for blk in blocks {
            h = blk.forward(h, None);
        }
        // The last block keeps the image rows only (nothing reads the others).
        let start = self.prefix();
        self.norm.forward(last.forward_rows(h, None, start..start + self.grid * self.grid))
    }

    /// [`PlainDecoder::forward`] with every intermediate (for parity tests and inspection).
    pub fn forward_intermediates(&self, zq: Tensor<B, 3>) -> (Tensor<B, 3>, PlainDecoderIntermediates<B>) {
        let post_quant = zq.clone();
        let tokens_in = self.tokens(zq);
        let (mut h, mut blocks) = (tokens_in.clone(), Vec::with_capacity(self.blocks.len()));
        for blk in &self.blocks {
            h = blk.forward(h, None);
            blocks.push(h.clone());
        }
        let norm_out = self.norm.forward(h);
        (self.image_rows(norm_out.clone()), PlainDecoderIntermediates { post_quant, tokens_in, blocks, norm_out })
    }

    fn prefix(&self) -> usize {
        usize::from(self.cls_token.is_some())
    }

    /// `[cls? | mask_token × N] (+ pos_embed)`, then `zq + latent_pos_embed`: `[B, T, D]` →
    /// `[B, cls? + N + T, D]`.
    fn tokens(&self, zq: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, d] = zq.dims();
        let n = self.grid * self.grid;
        let mut image = self.mask_token.val().expand([b, n, d]);
        if let Some(cls) = &self.cls_token {
            image = Tensor::cat(vec![cls.val().expand([b, 1, d]), image], 1);
        }
        if self.ape {
            image = image + self.pos_embed.val();
        }
        Tensor::cat(vec![image, zq + self.latent_pos_embed.val()], 1)
    }

    /// Rows `cls?..cls?+N`: `[B, cls? + N + T, D]` → `[B, N, D]`.
    fn image_rows(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, d] = h.dims();
        let (p, n) = (self.prefix(), self.grid * self.grid);
        h.slice([0..b, p..p + n, 0..d])
    }
}

/// What [`PlainDecoder::forward_intermediates`] returns besides the image rows.
pub struct PlainDecoderIntermediates<B: Backend> {
    /// `[B, T, D]` the decoder's input `post_quant_conv(z_q)`.
    pub post_quant: Tensor<B, 3>,
    /// `[B, cls? + N + T, D]` the sequence entering block 0.
    pub tokens_in: Tensor<B, 3>,
    /// `[B, cls? + N + T, D]` after each block.
    pub blocks: Vec<Tensor<B, 3>>,
    /// `[B, cls? + N + T, D]` after the final LayerNorm.
    pub norm_out: Tensor<B, 3>,
}

impl<B: Backend> VisitParams<B> for PlainDecoder<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.param(&join(prefix, "mask_token"), &mut self.mask_token);
        v.param(&join(prefix, "latent_pos_embed"), &mut self.latent_pos_embed);
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
    }
}
