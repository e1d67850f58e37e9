//! The reference's tokenizer training yaml (`configs/maetok-b-64.yaml` style, the arguments of
//! `train/train_tokenizer.py`) read as it is: the model keys become [`ModelArgs`], the loss,
//! optimiser and schedule keys a [`TokenizerTrainConfig`]. Keys the reference script never
//! forwards to the model (`use_rope`, `rope_mixed`, `rope_theta`, `decoder_cls_token`, spec §8.3
//! item 17) are applied as the yaml says, except `*_drop_path_rate` (no stochastic depth, as the
//! recipe actually ran); `optim` is honoured
//! (the script's own `--optimizer` default, plain Adam, is `optim: adam`). A key the trainer does
//! not know is an error naming it, so a typo never falls back to a default silently; keys about
//! the Python run itself (logging, cloud saving, `compile`, ...) are accepted and listed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use maetok_targets::disc::GanWeights;
use maetok_tokenizer::ModelArgs;
use maetok_train::tokenizer::{scaled_lr, CosineWarmup, TokenizerTrainConfig};
use serde_norway::Value;

/// A tokenizer training recipe.
#[derive(Debug, Clone)]
pub struct TokenizerRecipe {
    /// The file it came from (named in messages).
    pub origin: String,
    pub model: ModelArgs,
    /// Everything but the schedule, which needs the dataset size ([`TokenizerRecipe::train_config`]).
    pub train: TokenizerTrainConfig,
    pub data_path: Option<PathBuf>,
    pub epochs: u64,
    /// The yaml learning rate (per 256 images; scaled by `global_batch_size / 256`).
    pub lr: f64,
    pub warmup_epochs: u64,
    pub global_batch_size: usize,
    pub ckpt_every: u64,
    pub vis_every: u64,
    /// Keys accepted without effect (about the Python run itself).
    pub ignored: Vec<String>,
}

/// Keys about the Python run that have no meaning here.
const RUN_KEYS: &[&str] = &[
    "results_dir",
    "cloud_save_path",
    "compile",
    "log_every",
    "save_best",
    "no_local_save",
    "dataset",
    "mixed_precision",
    "encoder_tuning_method",
    "decoder_tuning_method",
    "lr_scheduler",
    "vq_ckpt",
    "finetune",
    "num_workers",
];

fn num(v: &Value, key: &str, origin: &str) -> Result<f64> {
    match v {
        Value::Number(n) => n.as_f64().with_context(|| format!("{origin}: {key} is not a number")),
        // YAML 1.1 readers take `1e-4` (no dot) as a string; PyYAML does too, but the reference
        // files write `1.0e-4`. Accept both.
        Value::String(s) => s.trim().parse::<f64>().with_context(|| format!("{origin}: {key}: '{s}' is not a number")),
        other => bail!("{origin}: {key} must be a number, got {other:?}"),
    }
}

fn int(v: &Value, key: &str, origin: &str) -> Result<u64> {
    let x = num(v, key, origin)?;
    if x < 0.0 || x.fract() != 0.0 || x > 1e15 {
        bail!("{origin}: {key} must be a non-negative integer, got {x}");
    }
    Ok(x as u64)
}

fn boolean(v: &Value, key: &str, origin: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => bail!("{origin}: {key} must be true or false, got {other:?}"),
    }
}

fn string(v: &Value, key: &str, origin: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => bail!("{origin}: {key} must be a string, got {other:?}"),
    }
}

impl TokenizerRecipe {
    /// Reads a yaml file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = maetok_nn::limits::read_text(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses yaml text; `origin` names it in messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        let doc: Value = serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: not valid YAML: {e}"))?;
        let Value::Mapping(map) = doc else { bail!("{origin}: expected a mapping of keys to values at the top level") };
        let mut m = ModelArgs::default();
        let mut gan = GanWeights::default();
        let mut t = TokenizerTrainConfig::default();
        let mut r = TokenizerRecipe {
            origin: origin.to_string(),
            model: ModelArgs::default(),
            train: TokenizerTrainConfig::default(),
            data_path: None,
            epochs: 200,
            lr: 1e-4,
            warmup_epochs: 2,
            global_batch_size: 256,
            ckpt_every: 10_000,
            vis_every: 5_000,
            ignored: Vec::new(),
        };
        let (mut use_diff_aug, mut ema) = (true, true);
        for (k, v) in &map {
            let Value::String(key) = k else { bail!("{origin}: key {k:?} is not a string") };
            let key = key.as_str();
            if v.is_null() {
                continue;
            }
            let o = origin;
            match key {
                "vq_model" => {
                    let name = string(v, key, o)?;
                    match name.as_str() {
                        "MaskAE-16" => {}
                        "AE-16" => (m.aux_hog_dec, m.aux_dino_dec, m.aux_clip_dec) = (false, false, false),
                        "SoftVQ" => m.quantizer = Some("softvq".into()),
                        other => bail!(
                            "{origin}: vq_model '{other}' is not a model this trainer builds (MaskAE-16: MAETok with its auxiliary decoders; AE-16: the plain autoencoder; SoftVQ: SoftVQ-VAE)"
                        ),
                    }
                }
                "image_size" => m.image_size = int(v, key, o)? as usize,
                "base_image_size" => m.base_image_size = int(v, key, o)? as usize,
                "num_latent_tokens" => m.num_latent_tokens = int(v, key, o)? as usize,
                "codebook_embed_dim" => m.codebook_embed_dim = int(v, key, o)? as usize,
                "enc_type" => m.enc_type = string(v, key, o)?,
                "dec_type" => m.dec_type = string(v, key, o)?,
                "encoder_model" => m.encoder_model = string(v, key, o)?,
                "decoder_model" => m.decoder_model = string(v, key, o)?,
                "encoder_patch_size" => m.enc_patch_size = int(v, key, o)? as usize,
                "decoder_patch_size" => m.dec_patch_size = int(v, key, o)? as usize,
                "decoder_cls_token" => m.dec_cls_token = boolean(v, key, o)?,
                // Not forwarded by the reference script either (spec §8.3 item 29): the recipe
                // as run trains without stochastic depth, and so does this trainer.
                "encoder_drop_path_rate" | "decoder_drop_path_rate" => {
                    num(v, key, o)?;
                    r.ignored.push(key.to_string());
                }
                "use_ape" => m.use_ape = boolean(v, key, o)?,
                "use_rope" => m.use_rope = boolean(v, key, o)?,
                "rope_mixed" => m.rope_mixed = boolean(v, key, o)?,
                "rope_theta" => m.rope_theta = num(v, key, o)?,
                "enc_token_drop" => m.enc_token_drop = num(v, key, o)?,
                "enc_token_drop_max" => m.enc_token_drop_max = num(v, key, o)?,
                "aux_decoder_model" => m.aux_dec_model = string(v, key, o)?,
                "aux_loss_mask" => m.aux_loss_mask = boolean(v, key, o)?,
                "aux_hog_decoder" => m.aux_hog_dec = boolean(v, key, o)?,
                "aux_dino_decoder" => m.aux_dino_dec = boolean(v, key, o)?,
                "aux_clip_decoder" => m.aux_clip_dec = boolean(v, key, o)?,
                "aux_decoder_cls_token" => m.aux_dec_cls_token = boolean(v, key, o)?,
                "repa_model" => m.repa_model = string(v, key, o)?,
                // SoftVQ-VAE (vq_model: SoftVQ): the quantiser and its losses. The MaskAE model
                // reads none of them (its REPA projection never runs, spec §4.6).
                "codebook_size" => m.codebook_size = int(v, key, o)? as usize,
                "num_codebooks" => m.num_codebooks = int(v, key, o)? as usize,
                "tau" => m.tau = num(v, key, o)?,
                "codebook_l2_norm" => m.codebook_l2_norm = boolean(v, key, o)?,
                "codebook_show_usage" => m.codebook_show_usage = boolean(v, key, o)?,
                "entropy_loss_ratio" => m.entropy_loss_ratio = num(v, key, o)?,
                "repa" => m.repa = boolean(v, key, o)?,
                "repa_patch_size" => m.repa_patch_size = int(v, key, o)? as usize,
                "repa_proj_dim" => m.repa_proj_dim = int(v, key, o)? as usize,
                "repa_loss_weight" => m.repa_loss_weight = num(v, key, o)?,
                "repa_align" => m.repa_align = string(v, key, o)?,
                // Extension keys (sizes of custom and tiny models, as in config.json).
                "enc_embed_dim" => m.enc_embed_dim = Some(int(v, key, o)? as usize),
                "enc_depth" => m.enc_depth = Some(int(v, key, o)? as usize),
                "enc_num_heads" => m.enc_num_heads = Some(int(v, key, o)? as usize),
                "dec_embed_dim" => m.dec_embed_dim = Some(int(v, key, o)? as usize),
                "dec_depth" => m.dec_depth = Some(int(v, key, o)? as usize),
                "dec_num_heads" => m.dec_num_heads = Some(int(v, key, o)? as usize),
                "aux_dec_embed_dim" => m.aux_dec_embed_dim = Some(int(v, key, o)? as usize),
                "aux_dec_depth" => m.aux_dec_depth = Some(int(v, key, o)? as usize),
                "aux_dec_num_heads" => m.aux_dec_num_heads = Some(int(v, key, o)? as usize),
                "encoder_pretrained" | "decoder_pretrained" => {
                    if boolean(v, key, o)? {
                        bail!("{origin}: {key} true is not supported: MAETok trains its encoder and decoder from scratch");
                    }
                }
                "reconstruction_weight" => {
                    let w = num(v, key, o)?;
                    if w != 1.0 {
                        bail!("{origin}: reconstruction_weight {w}: only 1.0 (the recipe's) is supported");
                    }
                }
                "perceptual_weight" => gan.perceptual_weight = num(v, key, o)?,
                "perceptual_warmup" => gan.perceptual_warmup = int(v, key, o)?,
                "disc_weight" => gan.disc_weight = num(v, key, o)?,
                "disc_start" => gan.disc_start = int(v, key, o)?,
                "disc_cr_loss_weight" => gan.cr_weight = num(v, key, o)?,
                "lecam_loss_weight" => gan.lecam_weight = num(v, key, o)?,
                "use_diff_aug" => use_diff_aug = boolean(v, key, o)?,
                "disc_adaptive_weight" => gan.adaptive = boolean(v, key, o)?,
                "disc_type" | "disc_loss" | "gen_loss" => {
                    let s = string(v, key, o)?;
                    let want = if key == "disc_type" { "dino" } else { "hinge" };
                    if s != want {
                        bail!("{origin}: {key} '{s}' is not supported (only '{want}', the MAETok recipe's)");
                    }
                }
                "ema" => ema = boolean(v, key, o)?,
                // Our extension: the reference hard-codes 0.9999, far too slow for a short run.
                "ema_decay" => {
                    let d = num(v, key, o)?;
                    if !(0.0..1.0).contains(&d) {
                        bail!("{origin}: ema_decay {d} must lie in [0, 1)");
                    }
                    t.ema_decay = d;
                }
                "optim" => {
                    let s = string(v, key, o)?;
                    match s.as_str() {
                        "adamw" => {}
                        "adam" => t.weight_decay = 0.0,
                        other => bail!("{origin}: optim '{other}' is not supported (adamw or adam)"),
                    }
                }
                "weight_decay" => t.weight_decay = num(v, key, o)?,
                "beta1" => t.betas[0] = num(v, key, o)?,
                "beta2" => t.betas[1] = num(v, key, o)?,
                "max_grad_norm" => {
                    let c = num(v, key, o)?;
                    t.grad_clip = (c > 0.0).then_some(c);
                }
                "global_seed" => t.seed = int(v, key, o)?,
                "global_batch_size" => r.global_batch_size = int(v, key, o)? as usize,
                "epochs" => r.epochs = int(v, key, o)?,
                "lr" => r.lr = num(v, key, o)?,
                "lr_warmup_epochs" => r.warmup_epochs = int(v, key, o)?,
                "data_path" => r.data_path = Some(PathBuf::from(string(v, key, o)?)),
                "ckpt_every" => r.ckpt_every = int(v, key, o)?,
                "vis_every" => r.vis_every = int(v, key, o)?,
                other if RUN_KEYS.contains(&other) => r.ignored.push(other.to_string()),
                other => bail!("{origin}: unknown key '{other}' (not a key of the reference tokenizer trainer)"),
            }
        }
        if use_diff_aug != t.diff_aug.is_some() {
            t.diff_aug = use_diff_aug.then(|| "color,translation,cutout_0.2".to_string());
        }
        if !ema {
            t.ema_decay = 0.0;
        }
        maetok_nn::limits::check_positive_at_most("global_batch_size", r.global_batch_size, maetok_nn::limits::MAX_BATCH)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        m.resolve(origin)?;
        m.resolve_aux(origin)?;
        t.gan = gan;
        t.batch_size = r.global_batch_size;
        r.model = m;
        r.train = t;
        Ok(r)
    }

    /// The training config for a dataset of `images` (the schedule counts `images / batch`
    /// steps per epoch, `drop_last`) and the total steps (`epochs` of them).
    pub fn train_config(&self, images: usize) -> Result<(TokenizerTrainConfig, u64)> {
        let per_epoch = (images / self.global_batch_size) as u64;
        if per_epoch == 0 {
            bail!("{}: {} images make no batch of global_batch_size {}", self.origin, images, self.global_batch_size);
        }
        let mut t = self.train.clone();
        t.schedule = CosineWarmup::reference(scaled_lr(self.lr, self.global_batch_size), per_epoch, self.epochs, self.warmup_epochs);
        let steps = per_epoch
            .checked_mul(self.epochs)
            .with_context(|| format!("{}: {} epochs of {per_epoch} steps overflow the step counter", self.origin, self.epochs))?;
        Ok((t, steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_yaml() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/maetok-b-64.yaml");
        let r = TokenizerRecipe::from_file(&path).unwrap();
        assert_eq!((r.model.num_latent_tokens, r.model.codebook_embed_dim, r.model.image_size), (128, 32, 256));
        assert_eq!((r.model.enc_patch_size, r.model.dec_patch_size), (16, 16));
        assert!(r.model.aux_hog_dec && r.model.aux_dino_dec && r.model.aux_clip_dec && r.model.aux_loss_mask);
        assert_eq!((r.model.enc_token_drop, r.model.enc_token_drop_max), (0.4, 0.6));
        assert!(r.ignored.contains(&"decoder_drop_path_rate".to_string()));
        assert!(r.model.use_rope && r.model.rope_mixed && !r.model.use_ape);
        assert_eq!(r.train.gan, GanWeights::default());
        assert_eq!((r.train.weight_decay, r.train.betas, r.train.grad_clip), (1e-4, [0.9, 0.95], Some(1.0)));
        assert_eq!(r.global_batch_size, 512);
        // ImageNet at 512: 2,502 steps per epoch; lr 1e-4 · 512/256.
        let (t, steps) = r.train_config(1_281_167).unwrap();
        assert_eq!(steps, 2502 * 200);
        assert_eq!((t.schedule.lr, t.schedule.warmup_steps), (2e-4, 2 * 2502));
        assert!(r.ignored.contains(&"mixed_precision".to_string()));
    }

    #[test]
    fn reads_a_softvq_recipe() {
        let y = "vq_model: SoftVQ\nnum_codebooks: 4\ncodebook_size: 8192\ntau: 0.07\nentropy_loss_ratio: 0.01\nrepa: True\n\
                 repa_align: repeat\nrepa_proj_dim: 1024\nuse_rope: False\nuse_ape: True\ndecoder_cls_token: True\n\
                 num_latent_tokens: 64\ndecoder_model: vit_large_patch14_dinov2.lvd142m\nencoder_model: vit_large_patch14_dinov2.lvd142m\n\
                 disc_weight: 0.2\ndisc_start: 20000\ndisc_adaptive_weight: False\n";
        let r = TokenizerRecipe::from_yaml(y, "s.yaml").unwrap();
        assert_eq!(r.model.quantizer.as_deref(), Some("softvq"));
        assert_eq!((r.train.gan.disc_weight, r.train.gan.disc_start, r.train.gan.adaptive), (0.2, 20000, false));
        let r = TokenizerRecipe::from_yaml(&format!("{y}ema_decay: 0.99\n"), "s.yaml").unwrap();
        assert_eq!(r.train.ema_decay, 0.99);
        assert!(TokenizerRecipe::from_yaml("ema_decay: 1.5\n", "s.yaml").unwrap_err().to_string().contains("ema_decay"));
        let aux = r.model.resolve_aux("s.yaml").unwrap();
        assert!(aux.is_empty(), "SoftVQModel has no auxiliary decoders, whatever aux_*_dec say");
        let s = aux.softvq.unwrap();
        assert_eq!((s.entropy_weight, s.repa.unwrap().proj_dim, s.repa.unwrap().teacher_dim), (0.01, 1024, 1024));
        let e = TokenizerRecipe::from_yaml(&y.replace("num_codebooks: 4", "num_codebooks: 5"), "s.yaml").unwrap_err().to_string();
        assert!(e.contains("num_codebooks") && e.contains("s.yaml"), "{e}");
        let e = TokenizerRecipe::from_yaml(&y.replace("repa_align: repeat", "repa_align: avg_1d_shuffle"), "s.yaml").unwrap_err();
        assert!(e.to_string().contains("repa_align"), "{e}");
    }

    #[test]
    fn bad_recipes_name_the_key() {
        let e = |y: &str| TokenizerRecipe::from_yaml(y, "r.yaml").unwrap_err().to_string();
        assert!(e("vq_model: VQ-16\n").contains("'VQ-16'"));
        assert!(e("enc_token_dropp: 0.4\n").contains("unknown key 'enc_token_dropp'"));
        assert!(e("lr: fast\n").contains("lr"));
        assert!(e("disc_type: patchgan\n").contains("patchgan"));
        assert!(e("aux_decoder_model: vit_gigantic_x\n").contains("vit_gigantic_x"));
        assert!(e("- a\n- b\n").contains("mapping"));
        assert!(e("image_size: -3\n").contains("image_size"));
        let r = TokenizerRecipe::from_yaml("optim: adam\nema: false\nuse_diff_aug: false\n", "r.yaml").unwrap();
        assert_eq!((r.train.weight_decay, r.train.ema_decay, r.train.diff_aug.clone()), (0.0, 0.0, None));
        assert!(r.train_config(10).unwrap_err().to_string().contains("no batch"));
    }
}
