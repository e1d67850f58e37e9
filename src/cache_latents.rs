//! Cache MAETok latents of a labelled image dataset (centre crop and its mirror image), the
//! input of the SiT/DiT trainers and the GMM analysis. The `cache_latents` example is a CLI over
//! [`cache_latents`]; the format is [`maetok_train::data::latent_cache`].
//!
//! Unreadable images are reported (in the manifest and the summary) and skipped; the run goes
//! on. Re-running with the same output folder resumes after the last complete shard.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::{backend::Backend, Tensor};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use maetok_tokenizer::{load_pretrained, Tokenizer};
use maetok_train::data::latent_cache::{CacheManifest, FailedImage};
use maetok_train::data::procedural::CLASSES;
use maetok_train::data::{
    images_to_tensor, load_rgb, preprocess_center_crop, ImageFolder, LatentCacheWriter, LatentRecord, Layout, ProceduralShapes,
};
use serde::Serialize;

/// A labelled image dataset in a fixed order.
pub enum Dataset {
    Folder {
        folder: ImageFolder,
        layout: Layout,
    },
    /// `count` images of the built-in procedural shapes (seeded; any size).
    Procedural {
        shapes: ProceduralShapes,
        count: usize,
        seed: u64,
    },
}

impl Dataset {
    /// Scans a folder dataset.
    pub fn folder(path: &Path, layout: Layout) -> Result<Self> {
        let folder = ImageFolder::open(path, layout)?;
        Ok(Self::Folder { folder, layout })
    }

    /// The procedural dataset at `size` pixels.
    pub fn procedural(count: usize, size: usize, seed: u64) -> Self {
        Self::Procedural { shapes: ProceduralShapes::new(size, seed), count, seed }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Folder { folder, .. } => folder.len(),
            Self::Procedural { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn classes(&self) -> Vec<String> {
        match self {
            Self::Folder { folder, .. } => folder.classes.clone(),
            Self::Procedural { .. } => CLASSES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Identifies the dataset in the manifest (a resumed run must match it).
    pub fn describe(&self) -> String {
        match self {
            Self::Folder { folder, layout } => format!("{:?}:{}", layout, folder.root.display()),
            Self::Procedural { count, seed, .. } => format!("procedural:count={count}:seed={seed}"),
        }
    }

    /// Image `i` centre-cropped to `size`, its label and `<class>/<file>` path.
    pub fn load(&self, i: usize, size: usize) -> (Result<RgbImage, String>, usize, String) {
        match self {
            Self::Folder { folder, .. } => {
                let (path, label) = &folder.samples[i];
                let img = load_rgb(path).map(|im| preprocess_center_crop(&im, size)).map_err(|e| e.to_string());
                (img, *label, folder.relpath(i))
            }
            Self::Procedural { shapes, .. } => {
                let (img, label) = shapes.get(i as u64);
                let img =
                    if img.width() as usize == size && img.height() as usize == size { img } else { preprocess_center_crop(&img, size) };
                (Ok(img), label, format!("{}/{:06}.png", CLASSES[label], i))
            }
        }
    }
}

/// Options of a caching run.
#[derive(Debug, Clone)]
pub struct CacheArgs {
    pub out: PathBuf,
    pub batch_size: usize,
    /// Images per shard.
    pub shard_size: usize,
    /// Also write the reference's per-image `.npz` layout here.
    pub export_npz: Option<PathBuf>,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct CacheSummary {
    pub out: String,
    /// Images cached by this run.
    pub cached_now: usize,
    /// Images found cached from an earlier run.
    pub already_cached: usize,
    pub total_cached: usize,
    pub failed: Vec<FailedImage>,
    pub complete: bool,
    pub latent_shape: [usize; 2],
    pub seconds: f64,
    pub images_per_second: f64,
    pub exported_npz: Option<usize>,
}

fn to_host<B: Backend>(t: Tensor<B, 3>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("reading latents: {e:?}"))
}

/// Caches `data` with `model`; `tokenizer` names the checkpoint in the manifest.
pub fn cache_with_model<B: Backend>(
    model: &Tokenizer<B>,
    tokenizer: &str,
    data: &Dataset,
    args: &CacheArgs,
    device: &B::Device,
) -> Result<CacheSummary> {
    cache_with_models(vec![(model.clone(), device.clone())], tokenizer, data, args)
}

/// What one batch of the cache gives: the encoded images `(index, label, path)` with their
/// latents `[2n·L·C]` (the images, then their mirrors), and the unreadable ones.
struct Encoded {
    meta: Vec<(usize, usize, String)>,
    z: Vec<f32>,
    failed: Vec<(usize, String, String)>,
}

/// Caches `data` with one copy of the tokenizer per device (`--devices`): batches are encoded
/// on whichever device is free and written in dataset order, so the cache is the one a single
/// device writes.
pub fn cache_with_models<B: Backend>(
    models: Vec<(Tokenizer<B>, B::Device)>,
    tokenizer: &str,
    data: &Dataset,
    args: &CacheArgs,
) -> Result<CacheSummary> {
    let start = std::time::Instant::now();
    let cfg = models.first().map(|m| m.0.config.clone()).ok_or_else(|| anyhow::anyhow!("no device to cache on"))?;
    let size = cfg.image_size;
    let shape = [cfg.latent_tokens, cfg.latent_dim];
    let template = CacheManifest::new(tokenizer.to_string(), data.describe(), size, shape, data.classes(), data.len(), args.shard_size);
    let mut writer = LatentCacheWriter::create_or_resume(&args.out, template)?;
    writer.set_latent_stats(Some(cfg.vq_mean), Some(cfg.vq_std));
    let first = writer.next_index();
    let already = writer.manifest().shards.iter().map(|s| s.count).sum::<usize>();
    let pb = if args.progress { ProgressBar::new(data.len() as u64) } else { ProgressBar::hidden() };
    pb.set_style(ProgressStyle::with_template("caching {bar:40} {pos}/{len} images {per_sec} eta {eta}").expect("template"));
    pb.set_position(first as u64);
    if first > 0 {
        tracing::info!("resuming {} at image {first} of {}", args.out.display(), data.len());
    }
    let bs = args.batch_size.max(1);
    let batches = (data.len().saturating_sub(first)).div_ceil(bs);
    let range = |b: usize| first + b * bs..(first + (b + 1) * bs).min(data.len());
    let mut cached_now = 0;
    crate::sharded::run_in_order(
        models,
        batches,
        |(model, device), b| {
            let mut e = Encoded { meta: Vec::new(), z: Vec::new(), failed: Vec::new() };
            let mut imgs = Vec::new();
            for idx in range(b) {
                match data.load(idx, size) {
                    (Ok(img), label, path) => {
                        imgs.push(img);
                        e.meta.push((idx, label, path));
                    }
                    (Err(err), _, path) => e.failed.push((idx, path, err)),
                }
            }
            if !imgs.is_empty() {
                let x = images_to_tensor::<B>(&imgs, device);
                let both = Tensor::cat(vec![x.clone(), x.flip([3])], 0);
                e.z = to_host(model.encode(both)?)?;
            }
            Ok(e)
        },
        |b, e| {
            for (idx, path, err) in e.failed {
                tracing::warn!("skipping {path}: {err}");
                writer.fail(idx, path, err)?;
            }
            let (n, per) = (e.meta.len(), shape[0] * shape[1]);
            for (k, (idx, label, path)) in e.meta.into_iter().enumerate() {
                let zq = e.z[k * per..(k + 1) * per].to_vec();
                let zq_flip = e.z[(n + k) * per..(n + k + 1) * per].to_vec();
                writer.push(LatentRecord { zq, zq_flip, label, index: idx, path })?;
            }
            cached_now += n;
            pb.inc(range(b).len() as u64);
            Ok(())
        },
    )?;
    let manifest = writer.finish()?;
    pb.finish_and_clear();
    let exported = match &args.export_npz {
        Some(dir) => Some(
            maetok_train::data::LatentCache::open(&args.out)?.export_npz(dir).with_context(|| format!("exporting to {}", dir.display()))?,
        ),
        None => None,
    };
    let secs = start.elapsed().as_secs_f64();
    Ok(CacheSummary {
        out: args.out.display().to_string(),
        cached_now,
        already_cached: already,
        total_cached: manifest.shards.iter().map(|s| s.count).sum(),
        failed: manifest.failed.clone(),
        complete: manifest.complete(),
        latent_shape: shape,
        seconds: secs,
        images_per_second: cached_now as f64 / secs.max(1e-9),
        exported_npz: exported,
    })
}

struct CacheTask {
    model: PathBuf,
    data: Dataset,
    args: CacheArgs,
    devices: Vec<u16>,
}

impl crate::backend::Task for CacheTask {
    type Output = CacheSummary;
    fn run<B: Backend>(self, device: B::Device, name: &str) -> Result<CacheSummary> {
        let devices = match self.devices.is_empty() {
            true => vec![device],
            false => crate::parallel_cli::devices::<B>(name, &self.devices)?,
        };
        let models = devices.into_iter().map(|d| Ok((load_pretrained::<B>(&self.model, &d)?.0, d))).collect::<Result<Vec<_>>>()?;
        cache_with_models(models, &self.model.display().to_string(), &self.data, &self.args)
    }
}

/// Caches `data` with the Hugging Face tokenizer folder `model` on the backend called `backend`,
/// on the devices `devices` of it (empty: the default device).
pub fn cache_latents(model: PathBuf, data: Dataset, args: CacheArgs, backend: &str, devices: Vec<u16>) -> Result<CacheSummary> {
    crate::backend::run(backend, CacheTask { model, data, args, devices })
}
