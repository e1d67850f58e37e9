//! The tokenizer of the release: MAETok's autoencoder (`AEModel`) or SoftVQ-VAE (`SoftVQModel`).
//! `encode` images to latents `[B, T, C]`, `decode` back. One type for both: the encoder is the
//! same ViT with latent tokens (RoPE on for MAETok, APE only for SoftVQ), SoftVQ adds its soft
//! quantiser after `quant_conv`, and the pixel decoder is MoVQ (MAETok) or plain (SoftVQ).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::io::{ParamVisitor, ShapeLister, VisitParams};
use maetok_nn::ops::linear3;
use maetok_nn::unpatchify;
use rand::Rng;

use crate::config::TokenizerConfig;
use crate::encoder::{Encoder, EncoderIntermediates};
use crate::masking::TokenMask;
use crate::pixel_decoder::{PixelDecoder, PixelDecoderIntermediates};
use crate::soft_vq::{SoftVq, SoftVqOutput};

/// Wrong input to [`Tokenizer::encode`] / [`Tokenizer::decode`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("image batch has shape {got:?}; this model takes [B, 3, {size}, {size}] images in [-1, 1]")]
    ImageShape { got: Vec<usize>, size: usize },
    #[error("latent batch has shape {got:?}; this model takes [B, {tokens}, {channels}] latents")]
    LatentShape { got: Vec<usize>, tokens: usize, channels: usize },
    #[error("token mask is for {got:?} (batch, patches); the images need {want:?}")]
    MaskShape { got: [usize; 2], want: [usize; 2] },
    #[error("this encoder has no mask_token (its config has enc_token_drop = 0): it cannot encode with token masking")]
    NoMaskToken,
}

#[derive(Module, Debug)]
pub struct Tokenizer<B: Backend> {
    pub encoder: Encoder<B>,
    /// Linear(D_enc → C)
    pub quant_conv: Linear<B>,
    /// SoftVQ-VAE's soft vector quantiser (`quantize.*`); `None` for MAETok.
    pub quantizer: Option<SoftVq<B>>,
    /// Linear(C → D_dec)
    pub post_quant_conv: Linear<B>,
    pub decoder: PixelDecoder<B>,
    /// `decoder.to_pixel.model`: Linear(D_dec → p·p·3), the decoder's last layer (the adaptive
    /// GAN weight of training is measured on its weight).
    pub to_pixel: Linear<B>,
    pub config: TokenizerConfig,
}

impl<B: Backend> Tokenizer<B> {
    /// A randomly initialised model (for training from scratch, or to be loaded into).
    /// Parameters are lazily initialised: loading a checkpoint never materialises the random values.
    pub fn new(config: &TokenizerConfig, rng: &mut impl Rng, device: &B::Device) -> Self {
        Self {
            encoder: Encoder::new(config, rng, device),
            quant_conv: LinearConfig::new(config.encoder.width, config.latent_dim).init(device),
            quantizer: config.quantizer.map(|q| SoftVq::new(q, config.latent_dim, device)),
            post_quant_conv: LinearConfig::new(config.latent_dim, config.decoder.width).init(device),
            decoder: PixelDecoder::new(config, rng, device),
            to_pixel: LinearConfig::new(config.decoder.width, config.dec_patch * config.dec_patch * 3).init(device),
            config: config.clone(),
        }
    }

    /// Selects the backend's fused attention op (flash attention on CUDA/wgpu) or the explicit
    /// matmul–softmax–matmul (default; fastest on NdArray and the reference's op order).
    pub fn set_fused_attention(&mut self, fused: bool) {
        self.encoder.model.set_fused_attention(fused);
        self.decoder.set_fused_attention(fused);
    }

    /// Images `[B, 3, S, S]` in [-1, 1] (S = `image_size`) → latents `[B, T, C]` (for SoftVQ the
    /// quantised `z_q`, what `SoftVQModel.encode` returns).
    pub fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 3>, InputError> {
        Ok(self.encode_with_codes(images)?.0)
    }

    /// [`encode`](Self::encode) with, for SoftVQ, the quantiser's logits, weights and code
    /// indices (`None` for MAETok).
    pub fn encode_with_codes(&self, images: Tensor<B, 4>) -> Result<(Tensor<B, 3>, Option<SoftVqOutput<B>>), InputError> {
        self.check_images(&images)?;
        Ok(self.quantize(linear3(&self.quant_conv, self.encoder.forward(images))))
    }

    /// `quant_conv`'s output `h` `[B, T, C]` → the latent: `h` itself (MAETok) or the soft
    /// quantiser's `z_q` with its output (SoftVQ).
    pub fn quantize(&self, h: Tensor<B, 3>) -> (Tensor<B, 3>, Option<SoftVqOutput<B>>) {
        match &self.quantizer {
            None => (h, None),
            Some(q) => {
                let out = q.forward(h);
                (out.z_q.clone(), Some(out))
            }
        }
    }

    /// The training encode (MAETok's token masking, spec §4.1): images `[B, 3, S, S]` with the
    /// patches where `mask` `[B, N]` is 1 replaced by the encoder's mask token → latents
    /// `[B, T, C]`. Draw masks with [`crate::TokenMask::draw`].
    pub fn encode_masked(&self, images: Tensor<B, 4>, mask: &TokenMask) -> Result<Tensor<B, 3>, InputError> {
        Ok(self.encode_train(images, Some(mask))?.0)
    }

    /// The training encode: with `mask` [`encode_masked`](Self::encode_masked), without it
    /// [`encode`](Self::encode); with the quantiser's output for SoftVQ.
    pub fn encode_train(
        &self,
        images: Tensor<B, 4>,
        mask: Option<&TokenMask>,
    ) -> Result<(Tensor<B, 3>, Option<SoftVqOutput<B>>), InputError> {
        self.check_images(&images)?;
        let h = match mask {
            Some(mask) => {
                let m = self.check_mask(&images, mask)?;
                self.encoder.forward_masked(images, m).ok_or(InputError::NoMaskToken)?
            }
            None => self.encoder.forward(images),
        };
        Ok(self.quantize(linear3(&self.quant_conv, h)))
    }

    /// [`encode`](Self::encode), or with a mask [`encode_masked`](Self::encode_masked), with the
    /// encoder's intermediates.
    pub fn encode_intermediates(
        &self,
        images: Tensor<B, 4>,
        mask: Option<&TokenMask>,
    ) -> Result<(Tensor<B, 3>, EncoderIntermediates<B>), InputError> {
        self.check_images(&images)?;
        let m = mask.map(|m| self.check_mask(&images, m)).transpose()?;
        let (h, inter) = self.encoder.forward_intermediates(images, m).ok_or(InputError::NoMaskToken)?;
        Ok((self.quantize(linear3(&self.quant_conv, h)).0, inter))
    }

    /// `mask` as a `[B, N]` tensor, after checking it fits the batch and the patch grid.
    fn check_mask(&self, images: &Tensor<B, 4>, mask: &TokenMask) -> Result<Tensor<B, 2>, InputError> {
        let (b, n) = (images.dims()[0], self.encoder.grid() * self.encoder.grid());
        if (mask.batch, mask.tokens) != (b, n) {
            return Err(InputError::MaskShape { got: [mask.batch, mask.tokens], want: [b, n] });
        }
        Ok(mask.to_tensor(&images.device()))
    }

    /// Latents `[B, T, C]` → images `[B, 3, S, S]` (not clamped).
    pub fn decode(&self, latents: Tensor<B, 3>) -> Result<Tensor<B, 4>, InputError> {
        self.check_latents(&latents)?;
        let zq = linear3(&self.post_quant_conv, latents.clone()); // [B, T, D]
        Ok(self.to_image(self.decoder.forward(zq, latents)))
    }

    /// `to_pixel` and unpatchify: decoder image rows `[B, N, D]` → image `[B, 3, S, S]`.
    pub fn to_image(&self, rows: Tensor<B, 3>) -> Tensor<B, 4> {
        let g = self.decoder.grid();
        unpatchify(linear3(&self.to_pixel, rows), self.config.dec_patch, g, g, 3)
    }

    /// [`decode`](Self::decode) with the decoder's intermediates.
    pub fn decode_intermediates(&self, latents: Tensor<B, 3>) -> Result<(Tensor<B, 4>, PixelDecoderIntermediates<B>), InputError> {
        self.check_latents(&latents)?;
        let zq = linear3(&self.post_quant_conv, latents.clone());
        let (rows, inter) = self.decoder.forward_intermediates(zq, latents);
        Ok((self.to_image(rows), inter))
    }

    fn check_images(&self, images: &Tensor<B, 4>) -> Result<(), InputError> {
        let s = self.config.image_size;
        let dims = images.dims();
        if dims[1] != 3 || dims[2] != s || dims[3] != s {
            return Err(InputError::ImageShape { got: dims.to_vec(), size: s });
        }
        Ok(())
    }

    fn check_latents(&self, latents: &Tensor<B, 3>) -> Result<(), InputError> {
        let dims = latents.dims();
        let (t, c) = (self.config.latent_tokens, self.config.latent_dim);
        if dims[1] != t || dims[2] != c {
            return Err(InputError::LatentShape { got: dims.to_vec(), tokens: t, channels: c });
        }
        Ok(())
    }

    /// Encode then decode (the reference `AEModel.forward(x)[0]`).
    pub fn reconstruct(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, InputError> {
        let z = self.encode(images)?;
        self.decode(z)
    }

    /// Normalises latents for diffusion training: `(z − vq_mean) / vq_std`.
    pub fn normalize_latents(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        (z - self.config.vq_mean) / self.config.vq_std
    }

    /// Inverse of [`normalize_latents`](Self::normalize_latents).
    pub fn denormalize_latents(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        z * self.config.vq_std + self.config.vq_mean
    }

    /// Every state-dict key with its PyTorch shape, in visiting order (no parameter is materialised).
    pub fn state_dict_shapes(&mut self) -> Vec<(String, Vec<usize>)> {
        let mut lister = ShapeLister::default();
        self.visit_params("", &mut lister);
        lister.entries
    }

    /// Number of parameters (buffers excluded).
    pub fn num_params_lazy(&mut self) -> usize {
        let bufs = ["freqs_t_x", "freqs_t_y"];
        self.state_dict_shapes()
            .iter()
            .filter(|(k, _)| !bufs.iter().any(|b| k.ends_with(b)))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

impl<B: Backend> VisitParams<B> for Tokenizer<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        let p = |n: &str| maetok_nn::io::join(prefix, n);
        self.encoder.visit_params(&p("encoder"), v);
        v.linear(&p("quant_conv"), &mut self.quant_conv);
        if let Some(q) = self.quantizer.as_mut() {
            q.visit_params(&p("quantize"), v);
        }
        self.decoder.visit_params(&p("decoder"), v);
        v.linear(&p("decoder.to_pixel.model"), &mut self.to_pixel);
        v.linear(&p("post_quant_conv"), &mut self.post_quant_conv);
    }
}
