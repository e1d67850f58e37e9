//! Generation and reconstruction metrics over image sets; the `evaluate` example is a CLI over
//! [`evaluate_generation`] and [`evaluate_reconstruction`].
//!
//! * Generation (the ADM evaluator's protocol): Inception Score (splits of 5000), FID and sFID
//!   against a reference batch or its precomputed `mu/sigma/mu_s/sigma_s`, improved
//!   precision/recall (k = 3) against the reference images.
//! * Reconstruction (`inference/reconstruct_vq.py`): PSNR, SSIM (standard and the reference's
//!   data_range = 2 variant), rFID and sFID of reconstructions against their inputs, and LPIPS
//!   (an addition) when its weights are given.
//!
//! Image sets are ADM `.npz` batches (`arr_0`, uint8 NHWC; streamed, never loaded whole) or
//! folders of PNG/JPEG files of one size, taken in sorted path order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use maetok_eval::inception::{load_inception, FeatureSet, InceptionV3, Preprocess, NUM_LOGITS, POOL_DIM, SPATIAL_DIM};
use maetok_eval::ndarray::{self, Array4, ArrayD, IxDyn};
use maetok_eval::npz::{read_f64_array, write_f64_arrays, SampleStream};
use maetok_eval::{frechet_distance, inception_score, precision_recall, psnr, ssim, FeatureStats, SsimOptions};
use maetok_train::data::{collect_inputs, load_rgb};
use serde::Serialize;

/// A set of uint8 RGB images of one size.
pub enum ImageSource {
    Npz { path: PathBuf, stream: SampleStream },
    Files { paths: Vec<PathBuf>, shape: [usize; 3] },
}

impl ImageSource {
    /// An ADM `.npz` (by extension) or a folder / file list of images.
    pub fn open(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "npz") {
            let stream = SampleStream::open(path)?;
            return Ok(Self::Npz { path: path.to_path_buf(), stream });
        }
        let paths = collect_inputs(&[path.to_path_buf()])?;
        let first = load_rgb(&paths[0])?;
        let shape = [first.height() as usize, first.width() as usize, 3];
        Ok(Self::Files { paths, shape })
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Npz { stream, .. } => stream.len(),
            Self::Files { paths, .. } => paths.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[H, W, 3]`.
    pub fn image_shape(&self) -> [usize; 3] {
        match self {
            Self::Npz { stream, .. } => stream.image_shape(),
            Self::Files { shape, .. } => *shape,
        }
    }

    /// What to call this set in messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Npz { path, .. } => path.display().to_string(),
            Self::Files { paths, .. } => format!("{} image files", paths.len()),
        }
    }

    /// Images `start .. start + n` as `[n, H, W, 3]`; a file of another size is an error naming it.
    pub fn read(&mut self, start: usize, n: usize) -> Result<Array4<u8>> {
        match self {
            Self::Npz { stream, .. } => Ok(stream.read(start, n)?),
            Self::Files { paths, shape } => {
                let end = (start + n).min(paths.len());
                let [h, w, _] = *shape;
                let mut out = Array4::<u8>::zeros((end - start, h, w, 3));
                for (i, p) in paths[start..end].iter().enumerate() {
                    let img = load_rgb(p)?;
                    if (img.height() as usize, img.width() as usize) != (h, w) {
                        bail!(
                            "{} is {}x{}, but the set's first image is {w}x{h}; all images must have one size",
                            p.display(),
                            img.width(),
                            img.height()
                        );
                    }
                    out.slice_mut(ndarray::s![i, .., .., ..]).as_slice_mut().expect("contiguous").copy_from_slice(img.as_raw());
                }
                Ok(out)
            }
        }
    }
}

/// The Inception network and how to run it.
#[derive(Debug, Clone)]
pub struct InceptionOptions {
    /// pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, torch-fidelity's weights, or a
    /// safetensors copy.
    pub weights: PathBuf,
    pub preprocess: Preprocess,
    pub batch_size: usize,
    pub progress: bool,
    /// Device indices on the backend, one Inception copy each (`evaluate generation
    /// --devices`; `evaluate reconstruction` takes [`ReconstructionArgs::devices`]); empty: the
    /// default device. The features are the same for any device count.
    pub devices: Vec<u16>,
}

fn bar(len: usize, label: &str, on: bool) -> ProgressBar {
    if !on {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(ProgressStyle::with_template("{msg:>12} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]").expect("template"));
    pb.set_message(label.to_string());
    pb
}

/// Inception features of every image of `src`, in order, with the batches split over `models`
/// (one copy per device; see [`crate::sharded`]).
pub fn extract_features<B: Backend>(
    models: &[(InceptionV3<B>, B::Device)],
    src: &mut ImageSource,
    opts: &InceptionOptions,
    label: &str,
) -> Result<FeatureSet> {
    let pb = bar(src.len(), label, opts.progress);
    let bs = opts.batch_size.max(1);
    let batches = src.len().div_ceil(bs);
    let describe = src.describe();
    let src = std::sync::Mutex::new(src);
    let mut all = FeatureSet::default();
    crate::sharded::run_in_order(
        models.to_vec(),
        batches,
        |(model, device), b| {
            let imgs = src.lock().expect("reader").read(b * bs, bs).with_context(|| format!("reading {describe}"))?;
            Ok(model.features_u8(imgs.view(), device))
        },
        |_, f| {
            pb.inc(f.n as u64);
            all.extend(f);
            Ok(())
        },
    )?;
    pb.finish_and_clear();
    Ok(all)
}

fn stats_from(path: &Path, mu: &str, sigma: &str, d: usize) -> Result<Option<FeatureStats>> {
    let (Some(m), Some(s)) = (read_f64_array(path, mu)?, read_f64_array(path, sigma)?) else { return Ok(None) };
    if m.shape() != [d] || s.shape() != [d, d] {
        bail!("{}: '{mu}' {:?} / '{sigma}' {:?} do not have the expected shapes [{d}] / [{d}, {d}]", path.display(), m.shape(), s.shape());
    }
    Ok(Some(FeatureStats::new(m.into_raw_vec_and_offset().0, s.into_raw_vec_and_offset().0)))
}

fn stats_arrays(pool: &FeatureStats, spatial: &FeatureStats) -> Vec<(&'static str, ArrayD<f64>)> {
    let arr = |shape: &[usize], v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape");
    let row_major = |m: &maetok_eval::nalgebra::DMatrix<f64>| m.transpose().as_slice().to_vec();
    vec![
        ("mu", arr(&[POOL_DIM], pool.mu.as_slice().to_vec())),
        ("sigma", arr(&[POOL_DIM, POOL_DIM], row_major(&pool.sigma))),
        ("mu_s", arr(&[SPATIAL_DIM], spatial.mu.as_slice().to_vec())),
        ("sigma_s", arr(&[SPATIAL_DIM, SPATIAL_DIM], row_major(&spatial.sigma))),
    ]
}

/// Inputs of a generation evaluation.
#[derive(Debug, Clone)]
pub struct GenerationArgs {
    /// Generated images (ADM `.npz` or a folder).
    pub samples: PathBuf,
    /// Reference batch: ADM `.npz` (its `mu/sigma/mu_s/sigma_s` are used when present) or a folder.
    pub reference: PathBuf,
    pub inception: InceptionOptions,
    /// Also write the sample set's statistics (`mu, sigma, mu_s, sigma_s`) as `.npz`.
    pub save_sample_stats: Option<PathBuf>,
}

/// Generation metrics (ADM evaluator order).
#[derive(Debug, Clone, Serialize)]
pub struct GenerationReport {
    pub samples: String,
    pub reference: String,
    pub n_samples: usize,
    pub n_reference_images: usize,
    /// Whether FID/sFID used the reference file's precomputed statistics.
    pub reference_stats_from_file: bool,
    pub preprocess: Preprocess,
    /// Mean over splits of 5000 (ADM); `None` without the network's classification head.
    pub inception_score: Option<f64>,
    /// Standard deviation over those splits (not reported by ADM).
    pub inception_score_std: Option<f64>,
    pub fid: f64,
    pub sfid: f64,
    /// `None` when the reference holds no images (statistics only).
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

struct GenerationTask(GenerationArgs);

impl crate::backend::Task for GenerationTask {
    type Output = GenerationReport;
    fn run<B: Backend>(self, device: B::Device, name: &str) -> Result<GenerationReport> {
        let a = self.0;
        let devices = match a.inception.devices.is_empty() {
            true => vec![device],
            false => crate::parallel_cli::devices::<B>(name, &a.inception.devices)?,
        };
        let mut models = Vec::new();
        for d in devices {
            let (mut model, _) = load_inception::<B>(&a.inception.weights, &d)?;
            model.preprocess = a.inception.preprocess;
            models.push((model, d));
        }
        let mut samples = ImageSource::open(&a.samples)?;
        if samples.len() < 2 {
            bail!("{}: need at least 2 sample images for a covariance, found {}", a.samples.display(), samples.len());
        }
        let sf = extract_features(&models, &mut samples, &a.inception, "samples")?;
        let s_pool = FeatureStats::from_features(&sf.pool, sf.n, POOL_DIM);
        let s_spatial = FeatureStats::from_features(&sf.spatial, sf.n, SPATIAL_DIM);
        if let Some(p) = &a.save_sample_stats {
            write_f64_arrays(p, &stats_arrays(&s_pool, &s_spatial))?;
        }
        let is_npz = a.reference.extension().is_some_and(|e| e == "npz");
        let file_stats = if is_npz {
            stats_from(&a.reference, "mu", "sigma", POOL_DIM)?.zip(stats_from(&a.reference, "mu_s", "sigma_s", SPATIAL_DIM)?)
        } else {
            None
        };
        let has_images = !is_npz || SampleStream::open(&a.reference).is_ok();
        let ref_feats = if has_images {
            let mut r = ImageSource::open(&a.reference)?;
            Some(extract_features(&models, &mut r, &a.inception, "reference")?)
        } else {
            None
        };
        let from_file = file_stats.is_some();
        let (r_pool, r_spatial) = match (file_stats, &ref_feats) {
            (Some(s), _) => s,
            (None, Some(rf)) if rf.n >= 2 => {
                (FeatureStats::from_features(&rf.pool, rf.n, POOL_DIM), FeatureStats::from_features(&rf.spatial, rf.n, SPATIAL_DIM))
            }
            _ => bail!(
                "{}: holds neither reference images (arr_0, at least 2) nor statistics (mu, sigma, mu_s, sigma_s)",
                a.reference.display()
            ),
        };
        let (is, is_std) = match &sf.logits {
            Some(l) => {
                let (m, s) = inception_score(l, sf.n, NUM_LOGITS, 5000);
                (Some(m), Some(s))
            }
            None => (None, None),
        };
        let (precision, recall) = match &ref_feats {
            Some(rf) if rf.n > 3 && sf.n > 3 => {
                let (p, r) = precision_recall(&rf.pool, &sf.pool, POOL_DIM, 3);
                (Some(p), Some(r))
            }
            _ => (None, None),
        };
        Ok(GenerationReport {
            samples: a.samples.display().to_string(),
            reference: a.reference.display().to_string(),
            n_samples: sf.n,
            n_reference_images: ref_feats.as_ref().map_or(0, |r| r.n),
            reference_stats_from_file: from_file,
            preprocess: a.inception.preprocess,
            inception_score: is,
            inception_score_std: is_std,
            fid: frechet_distance(&s_pool, &r_pool),
            sfid: frechet_distance(&s_spatial, &r_spatial),
            precision,
            recall,
        })
    }
}

/// Evaluates generated samples against a reference on the backend called `backend`.
pub fn evaluate_generation(args: GenerationArgs, backend: &str) -> Result<GenerationReport> {
    crate::backend::run(backend, GenerationTask(args))
}

/// Inputs of a reconstruction evaluation.
#[derive(Debug, Clone)]
pub struct ReconstructionArgs {
    /// The tokenizer's inputs (centre crops) as `.npz` or a folder.
    pub inputs: PathBuf,
    /// Their reconstructions, same count, order and size.
    pub reconstructions: PathBuf,
    /// Inception options; `None` skips rFID/sFID (PSNR/SSIM only).
    pub inception: Option<InceptionOptions>,
    /// LPIPS weights `(torchvision VGG16, LPIPS linear layers)`; `None` skips LPIPS.
    pub lpips: Option<(PathBuf, PathBuf)>,
    pub progress: bool,
    /// Images per batch (per device).
    pub batch_size: usize,
    /// Device indices on the backend, one copy of the networks each (`--devices`); empty: the
    /// default device. The report is the same for any device count.
    pub devices: Vec<u16>,
}

/// What one batch of `evaluate reconstruction` gives, per image in order.
struct PairMetrics {
    psnr: Vec<f64>,
    ssim: Vec<f64>,
    ssim_reference: Vec<f64>,
    lpips: Vec<f64>,
    inputs: Option<FeatureSet>,
    reconstructions: Option<FeatureSet>,
}

/// Reconstruction metrics (means over images).
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructionReport {
    pub inputs: String,
    pub reconstructions: String,
    pub n: usize,
    /// PSNR in dB (data range 1), mean of per-image values.
    pub psnr: f64,
    /// SSIM with the standard data range 1.
    pub ssim: f64,
    /// SSIM as `reconstruct_vq.py` computes it (data_range = 2).
    pub ssim_reference: f64,
    pub rfid: Option<f64>,
    pub rsfid: Option<f64>,
    /// Mean LPIPS (VGG16, v0.1; an addition: the reference script does not report it).
    pub lpips: Option<f64>,
}

struct ReconstructionTask(ReconstructionArgs);

impl crate::backend::Task for ReconstructionTask {
    type Output = ReconstructionReport;
    fn run<B: Backend>(self, device: B::Device, name: &str) -> Result<ReconstructionReport> {
        let a = self.0;
        let devices = match a.devices.is_empty() {
            true => vec![device],
            false => crate::parallel_cli::devices::<B>(name, &a.devices)?,
        };
        let mut inputs = ImageSource::open(&a.inputs)?;
        let mut recs = ImageSource::open(&a.reconstructions)?;
        if inputs.len() != recs.len() || inputs.image_shape() != recs.image_shape() {
            bail!(
                "inputs ({}: {} images of {:?}) and reconstructions ({}: {} images of {:?}) must match in count and size",
                a.inputs.display(),
                inputs.len(),
                inputs.image_shape(),
                a.reconstructions.display(),
                recs.len(),
                recs.image_shape()
            );
        }
        let [h, w, c] = inputs.image_shape();
        // One copy of the networks per device.
        let mut states = Vec::with_capacity(devices.len());
        for device in devices {
            let model = match &a.inception {
                Some(o) => {
                    let (mut m, _) = load_inception::<B>(&o.weights, &device)?;
                    m.preprocess = o.preprocess;
                    Some(m)
                }
                None => None,
            };
            let lpips = match &a.lpips {
                Some((vgg, lin)) => Some(maetok_targets::load_lpips::<B>(vgg, lin, &device)?.0),
                None => None,
            };
            states.push((model, lpips, device));
        }
        let has_inception = a.inception.is_some();
        let n = inputs.len();
        let batch = a.batch_size.max(1);
        let pb = bar(n, "images", a.progress);
        let sources = std::sync::Mutex::new((&mut inputs, &mut recs));
        let work = |(model, lpips, device): &mut (Option<InceptionV3<B>>, Option<maetok_targets::Lpips<B>>, B::Device),
                    b: usize|
         -> Result<PairMetrics> {
            let (x, y) = {
                let mut src = sources.lock().expect("image readers");
                (src.0.read(b * batch, batch)?, src.1.read(b * batch, batch)?)
            };
            let mut m = PairMetrics {
                psnr: Vec::new(),
                ssim: Vec::new(),
                ssim_reference: Vec::new(),
                lpips: Vec::new(),
                inputs: None,
                reconstructions: None,
            };
            for (xi, yi) in x.outer_iter().zip(y.outer_iter()) {
                let gt: Vec<f32> = xi.iter().map(|&v| v as f32 / 255.0).collect();
                let rec: Vec<f32> = yi.iter().map(|&v| v as f32 / 255.0).collect();
                m.psnr.push(psnr(&rec, &gt, 1.0)?);
                m.ssim.push(ssim(&rec, &gt, h, w, c, SsimOptions::standard())?);
                m.ssim_reference.push(ssim(&rec, &gt, h, w, c, SsimOptions::reference())?);
            }
            if let Some(model) = model {
                m.inputs = Some(model.features_u8(x.view(), device));
                m.reconstructions = Some(model.features_u8(y.view(), device));
            }
            if let Some(l) = lpips {
                let to_pm1 = |a: &Array4<u8>| {
                    let (n, h, w, c) = a.dim();
                    let v: Vec<f32> = a.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
                    burn::tensor::Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(v, [n, h, w, c]), &*device).permute([0, 3, 1, 2])
                };
                let d: Vec<f32> = l
                    .forward(to_pm1(&x), to_pm1(&y))
                    .total
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                m.lpips = d.into_iter().map(f64::from).collect();
            }
            Ok(m)
        };
        // Sums in image order, whichever device computed the batch.
        let (mut sum_psnr, mut sum_ssim, mut sum_ssim_ref, mut sum_lpips) = (0.0, 0.0, 0.0, 0.0);
        let (mut fi, mut fr) = (FeatureSet::default(), FeatureSet::default());
        crate::sharded::run_in_order(states, n.div_ceil(batch), work, |_, m| {
            for k in 0..m.psnr.len() {
                sum_psnr += m.psnr[k];
                sum_ssim += m.ssim[k];
                sum_ssim_ref += m.ssim_reference[k];
            }
            for v in &m.lpips {
                sum_lpips += v;
            }
            if let (Some(a), Some(b)) = (m.inputs, m.reconstructions) {
                fi.extend(a);
                fr.extend(b);
            }
            pb.inc(m.psnr.len() as u64);
            Ok(())
        })?;
        pb.finish_and_clear();
        let model = has_inception.then_some(());
        let fids = (model.is_some() && n >= 2).then(|| {
            let fid =
                frechet_distance(&FeatureStats::from_features(&fi.pool, n, POOL_DIM), &FeatureStats::from_features(&fr.pool, n, POOL_DIM));
            let sfid = frechet_distance(
                &FeatureStats::from_features(&fi.spatial, n, SPATIAL_DIM),
                &FeatureStats::from_features(&fr.spatial, n, SPATIAL_DIM),
            );
            (fid, sfid)
        });
        Ok(ReconstructionReport {
            inputs: a.inputs.display().to_string(),
            reconstructions: a.reconstructions.display().to_string(),
            n,
            psnr: sum_psnr / n as f64,
            ssim: sum_ssim / n as f64,
            ssim_reference: sum_ssim_ref / n as f64,
            rfid: fids.map(|f| f.0),
            rsfid: fids.map(|f| f.1),
            lpips: a.lpips.is_some().then(|| sum_lpips / n as f64),
        })
    }
}

/// Evaluates reconstructions against their inputs on the backend called `backend`.
pub fn evaluate_reconstruction(args: ReconstructionArgs, backend: &str) -> Result<ReconstructionReport> {
    crate::backend::run(backend, ReconstructionTask(args))
}
