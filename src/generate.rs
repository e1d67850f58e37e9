//! Class-conditional generation with a latent generator (SiT or DiT) and a MAETok tokenizer;
//! the `sample_sit` and `sample_dit` examples and the trainers' previews use [`sample_latents`].
//! Writes `{index:06}.png`, `grid.png`, an ADM batch `samples.npz` (uint8 NHWC `arr_0`) and
//! `generation.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use maetok_generator::LatentTransformer;
use maetok_sampler::{Denoiser, Guidance, Sampler};
use maetok_tokenizer::{load_pretrained, Tokenizer};
use maetok_train::viz::grid;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Which classes to sample.
#[derive(Debug, Clone)]
pub enum Classes {
    /// `per_class` samples of each listed class.
    List { classes: Vec<usize>, per_class: usize },
    /// `n` samples with classes `i mod num_classes` (class-balanced: 50 per class for 50k).
    Balanced { n: usize },
}

/// Options of a generation run.
#[derive(Debug, Clone)]
pub struct GenerateArgs {
    /// The generator folder: a SiT (velocity) for the ODE/SDE samplers, a DiT (learned
    /// variance) for DDPM/DDIM.
    pub generator: PathBuf,
    pub tokenizer: PathBuf,
    pub out: PathBuf,
    pub classes: Classes,
    pub sampler: Sampler,
    pub guidance: Guidance,
    pub batch_size: usize,
    pub seed: u64,
    /// Latent normalisation `(mean, std)` to undo before decoding; default: what the generator
    /// folder records, else the tokenizer's `vq_mean`/`vq_std`.
    pub latent_stats: Option<(f64, f64)>,
    pub progress: bool,
    /// Device indices on the backend, one worker each (`--devices`); empty: the default device.
    /// Batch `b`'s noise is seeded by `(seed, b)` whichever device draws it, so the samples are
    /// the same for any device count.
    pub devices: Vec<u16>,
}

/// The latent normalisation a generator folder records (`latent_mean`, `latent_std` in its
/// `config.json`, written by our trainer), if any.
pub fn training_stats(dir: &Path) -> Option<(f64, f64)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    Some((v.get("latent_mean")?.as_f64()?, v.get("latent_std")?.as_f64()?))
}

/// What a run wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateSummary {
    pub images: usize,
    pub npz: String,
    pub grid: String,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// `n` standard normal draws (f64).
pub fn normal_draws(rng: &mut impl Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.sample(rand_distr::StandardNormal)).collect()
}

/// Loads the generator folder that `sampler` needs: a SiT for the flow samplers, a DiT for the
/// diffusion ones.
pub fn load_generator<B: Backend>(dir: &Path, sampler: Sampler, device: &B::Device) -> Result<LatentTransformer<B>> {
    Ok(match sampler {
        Sampler::Ode { .. } | Sampler::Sde { .. } => {
            maetok_sit::load_sit::<B>(dir, device).with_context(|| format!("the {sampler:?} sampler needs a SiT folder"))?.0
        }
        Sampler::Ddpm { .. } | Sampler::Ddim { .. } => {
            maetok_dit::load_dit::<B>(dir, device).with_context(|| format!("the {sampler:?} sampler needs a DiT folder"))?.0
        }
    })
}

/// Samples normalised latents `[n·L·C]` (f64) of shape `latent` for `labels`; the noise of
/// batch `batch_index` comes from a generator seeded with `(seed, batch_index)`, so any batch
/// can be regenerated alone.
#[allow(clippy::too_many_arguments)]
pub fn sample_latents<B: Backend, M: Denoiser<B> + ?Sized>(
    model: &M,
    latent: [usize; 2],
    labels: &[i64],
    batch_index: u64,
    sampler: Sampler,
    guidance: Guidance,
    seed: u64,
    device: &B::Device,
) -> Result<Vec<f64>> {
    let [l, c] = latent;
    let n = labels.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ batch_index);
    let x = normal_draws(&mut rng, n * l * c);
    let mut noise = |k: usize| normal_draws(&mut rng, k);
    Ok(maetok_sampler::sample(model, &x, [n, l, c], labels, sampler, guidance, &mut noise, device)?)
}

/// Decodes normalised latents to uint8 images the reference's way: `decode(z·std + mean)`,
/// clamp to [−1, 1], `trunc(255·(x+1)/2)`. `(mean, std)`: the normalisation the generator was
/// trained with.
pub fn decode_latents<B: Backend>(
    tok: &Tokenizer<B>,
    z: &[f64],
    n: usize,
    (mean, std): (f64, f64),
    device: &B::Device,
) -> Result<Vec<RgbImage>> {
    let (l, c) = (tok.config.latent_tokens, tok.config.latent_dim);
    let zt = Tensor::<B, 3>::from_data(TensorData::new(z.iter().map(|&v| v as f32).collect::<Vec<_>>(), [n, l, c]), device);
    let img = tok.decode(zt * std + mean)?.clamp(-1.0, 1.0);
    let [_, _, h, w] = img.dims();
    let v: Vec<f32> = img.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((0..n)
        .map(|i| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let px = |ch: usize| (255.0 * (v[((i * 3 + ch) * h + y as usize) * w + x as usize] + 1.0) / 2.0).clamp(0.0, 255.0) as u8;
                image::Rgb([px(0), px(1), px(2)])
            })
        })
        .collect())
}

struct GenerateTask(GenerateArgs);

impl crate::backend::Task for GenerateTask {
    type Output = GenerateSummary;
    fn run<B: Backend>(self, device: B::Device, name: &str) -> Result<GenerateSummary> {
        let a = self.0;
        let start = std::time::Instant::now();
        let devices = match a.devices.is_empty() {
            true => vec![device],
            false => crate::parallel_cli::devices::<B>(name, &a.devices)?,
        };
        let device = devices[0].clone();
        let generator = load_generator::<B>(&a.generator, a.sampler, &device)?;
        let (tok, _) = load_pretrained::<B>(&a.tokenizer, &device)?;
        let want = [tok.config.latent_tokens, tok.config.latent_dim];
        let latent = generator.latent_shape();
        if latent != want {
            bail!(
                "the generator {} takes [{}, {}] latents but the tokenizer {} produces {:?}",
                a.generator.display(),
                latent[0],
                latent[1],
                a.tokenizer.display(),
                want
            );
        }
        let stats = match a.latent_stats {
            Some(s) => s,
            None => training_stats(&a.generator).unwrap_or((tok.config.vq_mean, tok.config.vq_std)),
        };
        let k = generator.num_classes();
        let labels: Vec<i64> = match &a.classes {
            Classes::List { classes, per_class } => {
                if let Some(bad) = classes.iter().find(|&&c| c >= k) {
                    bail!("class id {bad} is out of range: the generator has {k} classes (0..{})", k - 1);
                }
                classes.iter().flat_map(|&c| std::iter::repeat_n(c as i64, *per_class)).collect()
            }
            Classes::Balanced { n } => (0..*n).map(|i| (i % k) as i64).collect(),
        };
        if labels.is_empty() {
            bail!("nothing to sample: give classes and a positive count");
        }
        std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
        let pb = if a.progress { ProgressBar::new(labels.len() as u64) } else { ProgressBar::hidden() };
        pb.set_style(ProgressStyle::with_template("sampling {bar:40} {pos}/{len} images {per_sec} eta {eta}").expect("template"));
        let size = tok.config.image_size;
        // Streamed: a batch of images per device in memory at a time, whatever the sample count.
        let npz = a.out.join("samples.npz");
        let mut samples = maetok_eval::npz::SampleWriter::create(&npz, labels.len(), size, size)?;
        let mut preview = Vec::new();
        let bs = a.batch_size.max(1);
        let chunks: Vec<&[i64]> = labels.chunks(bs).collect();
        // One (generator, tokenizer, device) per device; the first device's are already loaded.
        let mut workers = vec![(generator, tok, device)];
        for d in &devices[1..] {
            let g = load_generator::<B>(&a.generator, a.sampler, d)?;
            let (t, _) = load_pretrained::<B>(&a.tokenizer, d)?;
            workers.push((g, t, d.clone()));
        }
        crate::sharded::run_in_order(
            workers,
            chunks.len(),
            |(generator, tok, device), b| {
                let z = sample_latents(&*generator, latent, chunks[b], b as u64, a.sampler, a.guidance, a.seed, device)?;
                decode_latents(tok, &z, chunks[b].len(), stats, device)
            },
            |b, imgs| {
                for (j, img) in imgs.into_iter().enumerate() {
                    let idx = b * bs + j;
                    let p = a.out.join(format!("{idx:06}.png"));
                    maetok_train::viz::save_png(&img, &p).with_context(|| format!("cannot write {}", p.display()))?;
                    samples.write(img.as_raw())?;
                    if preview.len() < 64 {
                        preview.push(img);
                    }
                    pb.inc(1);
                }
                Ok(())
            },
        )?;
        pb.finish_and_clear();
        let grid_path = a.out.join("grid.png");
        maetok_train::viz::save_png(&grid(&preview, 8), &grid_path).with_context(|| format!("cannot write {}", grid_path.display()))?;
        samples.finish()?;
        let secs = start.elapsed().as_secs_f64();
        let summary = GenerateSummary {
            images: labels.len(),
            npz: npz.display().to_string(),
            grid: grid_path.display().to_string(),
            seconds: secs,
            images_per_second: labels.len() as f64 / secs,
        };
        maetok_nn::io::write_atomic(&a.out.join("generation.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
        Ok(summary)
    }
}

/// Generates images on the backend called `backend`.
pub fn generate(args: GenerateArgs, backend: &str) -> Result<GenerateSummary> {
    crate::backend::run(backend, GenerateTask(args))
}
