//! A timm `VisionTransformer` trunk (no head): `patch_embed → [cls] ⊕ tokens + pos_embed →
//! blocks → norm` (`forward_features`). One trunk for every ViT of the project:
//!
//! * MAETok's encoder (`TimmViTEncoder`) wraps it under the key prefix `model.` and adds its
//!   latent tokens, RoPE and mask token around it (`maetok-tokenizer`'s `Encoder`).
//! * The frozen teachers of the auxiliary decoders, DINOv2-L and SigLIP so400m, and the DINO
//!   ViT-S trunk of the discriminator (`maetok-targets`), with the presets below.
//!
//! Keys: `cls_token`, `pos_embed`, `patch_embed.proj.{weight,bias}`, `blocks.{i}.…` (timm `Block`),
//! `norm.{weight,bias}`.

use crate::block::{Block, BlockConfig};
use crate::io::{join, ParamVisitor, VisitParams};
use crate::layer_norm::{LayerNorm, LayerNormConfig};
use crate::patch::{PatchEmbed, PatchEmbedConfig};
use crate::resample::{bicubic_aa_matrix, resize_with};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor};

/// Shape of a timm ViT.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VitConfig {
    /// Input side the position embedding is built for.
    pub img_size: usize,
    pub patch_size: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    /// A `cls_token` prefix (DINOv2, DINO); none for SigLIP.
    pub class_token: bool,
    /// LayerScale `ls1`/`ls2` in every block (DINOv2).
    pub layer_scale: bool,
    /// `GELU(approximate='tanh')` in the MLPs (the DINO discriminator trunk); exact GELU otherwise.
    pub tanh_gelu: bool,
    /// Accept other input sizes by resampling the position embedding on the fly (timm
    /// `dynamic_img_size`, bicubic with antialias). Off: other sizes are an error.
    pub dynamic_img_size: bool,
    /// The eps of every LayerNorm (timm's `partial(nn.LayerNorm, eps=1e-6)`).
    #[serde(default = "default_ln_eps")]
    pub ln_eps: f64,
}

fn default_ln_eps() -> f64 {
    1e-6
}

impl VitConfig {
    /// DINOv2 ViT-L/14 as MAETok builds it: `img_size=256, patch_size=16`.
    pub fn dinov2_large() -> Self {
        Self {
            img_size: 256,
            patch_size: 16,
            dim: 1024,
            depth: 24,
            heads: 16,
            mlp_hidden: 4096,
            class_token: true,
            layer_scale: true,
            tanh_gelu: false,
            dynamic_img_size: false,
            ln_eps: 1e-6,
        }
    }

    /// SigLIP so400m/14 (GAP) as MAETok builds it: `img_size=256, patch_size=16`,
    /// `dynamic_img_size` on. MLP width `int(1152 · 3.7362) = 4304`.
    pub fn siglip_so400m() -> Self {
        Self {
            img_size: 256,
            patch_size: 16,
            dim: 1152,
            depth: 27,
            heads: 16,
            mlp_hidden: 4304,
            class_token: false,
            layer_scale: false,
            tanh_gelu: false,
            dynamic_img_size: true,
            ln_eps: 1e-6,
        }
    }

    /// The DINO ViT-S/16 trunk of the discriminator (`FrozenDINOSmallNoDrop`), 224 px.
    pub fn dino_small() -> Self {
        Self {
            img_size: 224,
            patch_size: 16,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp_hidden: 1536,
            class_token: true,
            layer_scale: false,
            tanh_gelu: true,
            dynamic_img_size: false,
            ln_eps: 1e-6,
        }
    }

    /// A preset by name: `dinov2-l`, `siglip-so400m`, `dino-s`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "dinov2-l" | "dinov2-large" | "vit_large_patch14_dinov2" => Some(Self::dinov2_large()),
            "siglip-so400m" | "vit_so400m_patch14_siglip_gap_224" => Some(Self::siglip_so400m()),
            "dino-s" | "dino-small" => Some(Self::dino_small()),
            _ => None,
        }
    }

    /// Patch grid side at `img_size`.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Prefix tokens (0 or 1).
    pub fn prefix_tokens(&self) -> usize {
        usize::from(self.class_token)
    }

    /// Checks the numbers fit together; the error names the field.
    pub fn validate(&self) -> Result<(), VitConfigError> {
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            return Err(VitConfigError::PatchGrid { img_size: self.img_size, patch_size: self.patch_size });
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(VitConfigError::Heads { dim: self.dim, heads: self.heads });
        }
        Ok(())
    }
}

/// A ViT configuration whose numbers do not fit together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VitConfigError {
    #[error("img_size {img_size} is not a multiple of patch_size {patch_size}")]
    PatchGrid { img_size: usize, patch_size: usize },
    #[error("dim {dim} is not divisible by heads {heads}")]
    Heads { dim: usize, heads: usize },
}

/// Input images the model cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VitInputError {
    #[error("ViT input must be [B, 3, H, W], got {0:?}")]
    Channels(Vec<usize>),
    #[error("ViT input {h}x{w} does not match the model's {expected}x{expected} (built without dynamic_img_size; resize the images or rebuild the teacher at this size)")]
    Size { h: usize, w: usize, expected: usize },
    #[error("ViT input {h}x{w}: height and width must be multiples of the patch size {patch}")]
    NotMultiple { h: usize, w: usize, patch: usize },
}

/// A timm ViT trunk (no head).
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    /// `[1, 1, D]`, absent without a class token.
    pub cls_token: Option<Param<Tensor<B, 3>>>,
    /// `[1, prefix + grid², D]`.
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks: Vec<Block<B>>,
    pub norm: LayerNorm<B>,
    pub img_size: usize,
    pub dynamic_img_size: bool,
}

impl<B: Backend> Vit<B> {
    /// The architecture with placeholder weights (load real ones with `maetok_targets::load_vit`):
    /// zero tokens and position embedding, LayerScale at timm's 1e-5.
    pub fn new(c: &VitConfig, device: &B::Device) -> Self {
        Self::build(c, 1e-5, |shape| Param::from_tensor(Tensor::zeros(shape, device)), device)
    }

    /// A trunk to train from scratch: cls token and position embedding drawn from
    /// N(0, `token_std`²), LayerScale (where the config has it) starting at `layer_scale_init`.
    pub fn random(c: &VitConfig, token_std: f64, layer_scale_init: f64, device: &B::Device) -> Self {
        Self::build(
            c,
            layer_scale_init,
            |shape| Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, token_std), device)),
            device,
        )
    }

    /// Builds the modules in checkpoint order (patch embedding, cls, position, blocks, norm), the
    /// `[1, ·, D]` token parameters from `token`.
    fn build(c: &VitConfig, layer_scale_init: f64, token: impl Fn([usize; 3]) -> Param<Tensor<B, 3>>, device: &B::Device) -> Self {
        let g = c.grid();
        let block = BlockConfig::new(c.dim, c.heads, c.mlp_hidden)
            .with_layer_scale(c.layer_scale.then_some(layer_scale_init))
            .with_tanh_gelu(c.tanh_gelu)
            .with_eps(c.ln_eps);
        let patch_embed = PatchEmbedConfig::new(c.dim, c.patch_size).init(device);
        let cls_token = c.class_token.then(|| token([1, 1, c.dim]));
        let pos_embed = token([1, c.prefix_tokens() + g * g, c.dim]);
        Self {
            patch_embed,
            cls_token,
            pos_embed,
            blocks: (0..c.depth).map(|_| block.init(device)).collect(),
            norm: LayerNormConfig::new(c.dim).with_eps(c.ln_eps).init(device),
            img_size: c.img_size,
            dynamic_img_size: c.dynamic_img_size,
        }
    }

    /// Uses the backend's fused attention op (flash attention on CUDA/wgpu) in every block; the
    /// default explicit matmul–softmax–matmul is faster on NdArray.
    pub fn set_fused_attention(&mut self, fused: bool) {
        for blk in self.blocks.iter_mut() {
            blk.attn.fused = fused;
        }
    }

    /// Number of prefix (class) tokens.
    pub fn prefix_tokens(&self) -> usize {
        usize::from(self.cls_token.is_some())
    }

    /// Side of the patch grid the position embedding is built for.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_embed.patch
    }

    /// Checks an input shape; returns the patch grid `(gh, gw)`.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<(usize, usize), VitInputError> {
        let [_, c, h, w] = dims;
        let p = self.patch_embed.patch;
        if c != 3 {
            return Err(VitInputError::Channels(dims.to_vec()));
        }
        if !self.dynamic_img_size && (h != self.img_size || w != self.img_size) {
            return Err(VitInputError::Size { h, w, expected: self.img_size });
        }
        if h % p != 0 || w % p != 0 {
            return Err(VitInputError::NotMultiple { h, w, patch: p });
        }
        Ok((h / p, w / p))
    }

    /// Position embedding for a `gh × gw` grid `[1, prefix + gh·gw, D]` (resampled bicubic with
    /// antialias when the grid differs, as timm's `dynamic_img_size`).
    fn pos_embed_for(&self, gh: usize, gw: usize) -> Tensor<B, 3> {
        let pos = self.pos_embed.val();
        let [_, n, d] = pos.dims();
        let prefix = self.prefix_tokens();
        let g = self.grid();
        if (gh, gw) == (g, g) {
            return pos;
        }
        let grid = pos.clone().slice([0..1, prefix..n, 0..d]).reshape([1, g, g, d]).permute([0, 3, 1, 2]);
        let grid = resize_with(grid, &bicubic_aa_matrix(g, gh), gh, &bicubic_aa_matrix(g, gw), gw);
        let grid = grid.permute([0, 2, 3, 1]).reshape([1, gh * gw, d]);
        if prefix == 0 {
            grid
        } else {
            Tensor::cat(vec![pos.slice([0..1, 0..prefix, 0..d]), grid], 1)
        }
    }

    /// Tokens after the position embedding, before the blocks: `[B, prefix + N, D]`.
    pub fn embed(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 3>, VitInputError> {
        let (gh, gw) = self.check_input(x.dims())?;
        Ok(self.embed_patches(self.patch_embed.forward(x), gh, gw))
    }

    /// The patch tokens `[B, gh·gw, D]` (after `patch_embed`, e.g. with some replaced by a mask
    /// token) with the cls token prepended and the position embedding added: `[B, prefix + N, D]`.
    pub fn embed_patches(&self, tokens: Tensor<B, 3>, gh: usize, gw: usize) -> Tensor<B, 3> {
        let tokens = match &self.cls_token {
            Some(cls) => {
                let [b, _, d] = tokens.dims();
                Tensor::cat(vec![cls.val().expand([b, 1, d]), tokens], 1)
            }
            None => tokens,
        };
        tokens + self.pos_embed_for(gh, gw)
    }

    /// timm `forward_features`: `x` `[B, 3, H, W]` (already normalised for the network) →
    /// `[B, prefix + N, D]`, final LayerNorm applied.
    pub fn forward_features(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 3>, VitInputError> {
        let mut h = self.embed(x)?;
        for blk in &self.blocks {
            h = blk.forward(h, None);
        }
        Ok(self.norm.forward(h))
    }
}

impl<B: Backend> VisitParams<B> for Vit<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        if let Some(cls) = self.cls_token.as_mut() {
            v.param(&join(prefix, "cls_token"), cls);
        }
        v.param(&join(prefix, "pos_embed"), &mut self.pos_embed);
        self.patch_embed.visit_params(&join(prefix, "patch_embed"), v);
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            blk.visit_params(&join(prefix, &format!("blocks.{i}")), v);
        }
        self.norm.visit_params(&join(prefix, "norm"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_walk_covers_every_parameter() {
        type B = burn::backend::NdArray<f32>;
        for preset in [VitConfig::dinov2_large(), VitConfig::siglip_so400m(), VitConfig::dino_small()] {
            let cfg = VitConfig { img_size: 64, dim: 32, depth: 2, heads: 4, mlp_hidden: 50, ..preset };
            crate::testing::assert_walk_covers_module("ViT", &mut Vit::<B>::new(&cfg, &Default::default()));
            crate::testing::assert_walk_covers_module("ViT", &mut Vit::<B>::random(&cfg, 0.02, 0.1, &Default::default()));
        }
    }

    #[test]
    fn embed_is_patch_embed_then_embed_patches() {
        type B = burn::backend::NdArray<f32>;
        let device = Default::default();
        let cfg = VitConfig { img_size: 32, dim: 16, depth: 1, heads: 2, mlp_hidden: 24, ..VitConfig::dino_small() };
        let vit = Vit::<B>::random(&cfg, 0.02, 0.1, &device);
        let x = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let whole = vit.embed(x.clone()).unwrap();
        let parts = vit.embed_patches(vit.patch_embed.forward(x), 2, 2);
        assert_eq!(whole.dims(), [2, 1 + 4, 16]);
        whole.into_data().assert_eq(&parts.into_data(), true);
    }
}
