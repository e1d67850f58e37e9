//! Train a SiT or a DiT on a latent cache; the `train_sit` and `train_dit` examples are CLIs
//! over [`train_sit`]. Resumes from `out/checkpoints/latest` when present. Writes checkpoints
//! (the EMA model in `checkpoints/step-N/ema/` is directly usable by `sample_sit`/`sample_dit`),
//! periodic EMA sample grids (with a tokenizer), `losses.json` and `loss.svg`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use maetok_dit::{Dit, DitConfig, GaussianDiffusion, Schedule};
use maetok_nn::io::VisitParams;
use maetok_sampler::{euler_sampler, Guidance};
use maetok_sit::Sit;
use maetok_sit::SitConfig;
use maetok_tokenizer::load_pretrained;
use maetok_train::data::LatentCache;
use maetok_train::viz::{grid, line_plot_svg};
use maetok_train::{LatentTrainer, SitTrainConfig, TrainableGenerator};
use rand::SeedableRng;
use serde::Serialize;

/// Options of a training run.
#[derive(Debug, Clone)]
pub struct TrainSitArgs {
    pub cache: PathBuf,
    pub out: PathBuf,
    /// Architecture for a new run (ignored when resuming).
    pub model: GeneratorSpec,
    pub train: SitTrainConfig,
    /// Total steps (a resumed run continues up to this count).
    pub steps: usize,
    pub checkpoint_every: usize,
    /// Sample grids every this many steps (needs `tokenizer`).
    pub sample_every: usize,
    pub tokenizer: Option<PathBuf>,
    /// Where the latent normalisation comes from.
    pub normalisation: Normalisation,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSitSummary {
    pub resumed_from_step: usize,
    pub steps: usize,
    pub first_loss: f32,
    pub last_loss_mean_of_10: f32,
    pub checkpoint: String,
    pub seconds: f64,
}

/// How latents are normalised before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalisation {
    /// `train.latent_mean` / `train.latent_std` as given.
    Given,
    /// The tokenizer config's `vq_mean` / `vq_std` recorded in the cache (the reference).
    TokenizerConfig,
    /// The cached latents' own mean and standard deviation.
    Data,
}

/// Which generator to train.
#[derive(Debug, Clone)]
pub enum GeneratorSpec {
    Sit(SitConfig),
    Dit(DitConfig),
}

struct TrainTask(TrainSitArgs);

impl crate::backend::TrainTask for TrainTask {
    type Output = TrainSitSummary;
    fn run<B: AutodiffBackend>(self, device: B::Device, _name: &str) -> Result<TrainSitSummary> {
        match self.0.model.clone() {
            GeneratorSpec::Sit(cfg) => {
                run_with::<B, Sit<B>>(self.0, cfg, &device, |ema, labels, device| {
                    let [l, c] = ema.latent_shape();
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                    let x = crate::generate::normal_draws(&mut rng, labels.len() * l * c);
                    Ok(euler_sampler(
                        ema,
                        &x,
                        [labels.len(), l, c],
                        labels,
                        50,
                        false,
                        Guidance {
                            scale: 4.0,
                            low: 0.0,
                            high: 1.0,
                        },
                        device,
                    ))
                })
            }
            GeneratorSpec::Dit(cfg) => {
                run_with::<B, Dit<B>>(self.0, cfg, &device, |ema, labels, device| {
                    let [l, c] = ema.net.latent_shape();
                    let n = labels.len();
                    let diffusion = GaussianDiffusion::new(Schedule::Cosine, 1000, "100")
                        .map_err(anyhow::Error::msg)?;
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                    let mut draw = |k: usize| {
                        Tensor::<B::InnerBackend, 3>::from_data(
                            TensorData::new(
                                crate::generate::normal_draws(&mut rng, k)
                                    .into_iter()
                                    .map(|v| v as f32)
                                    .collect::<Vec<_>>(),
                                [n, l, c],
                            ),
                            device,
                        )
                    };
                    let x = draw(n * l * c);
                    let y = Tensor::<B::InnerBackend, 1, Int>::from_data(
                        TensorData::new(labels.to_vec(), [n]),
                        device,
                    );
                    let out = diffusion.p_sample_loop(
                        x,
                        |x, t| ema.forward(x, t, y.clone()),
                        |_| draw(n * l * c),
                        |_| {},
                    );
                    Ok(out
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?
                        .into_iter()
                        .map(f64::from)
                        .collect())
                })
            }
        }
    }
}

/// The training loop for one generator type; `preview(ema, labels)` samples normalised latents.
fn run_with<B: AutodiffBackend, G: TrainableGenerator<B>>(
    mut a: TrainSitArgs,
    model_cfg: G::Config,
    device: &B::Device,
    preview: impl Fn(&G::InnerModule, &[i64], &B::Device) -> Result<Vec<f64>>,
) -> Result<TrainSitSummary>
where
    G::InnerModule: VisitParams<B::InnerBackend>,
{
    let device = device.clone();
    {
        let start = std::time::Instant::now();
        let cache = LatentCache::open(&a.cache)?;
        if cache.is_empty() {
            bail!("{}: the latent cache is empty", a.cache.display());
        }
        let m = cache.manifest();
        let stats = match a.normalisation {
            Normalisation::Given => None,
            Normalisation::TokenizerConfig => Some((m.latent_mean.unwrap_or(0.0), m.latent_std.unwrap_or(1.0))),
            Normalisation::Data => match (m.data_mean, m.data_std) {
                (Some(mu), Some(sd)) if sd > 0.0 => Some((mu, sd)),
                _ => bail!("{} records no latent statistics (cached before they were kept); re-cache or give the normalisation", a.cache.display()),
            },
        };
        if let Some((mu, sd)) = stats {
            tracing::info!("normalising latents with mean {mu:.5}, std {sd:.5}");
            a.train.latent_mean = mu;
            a.train.latent_std = sd;
        }
        let mut t = match LatentTrainer::<B, G>::resume(&a.out, &device)? {
            Some(t) => {
                tracing::info!("resuming {} at step {}", a.out.display(), t.step);
                t
            }
            None => {
                let t = LatentTrainer::<B, G>::new(model_cfg, a.train.clone(), &device);
                let [l, c] = cache.latent_shape();
                if t.model.latent_shape() != [l, c] {
                    bail!(
                        "the model is configured for {:?} latents but {} holds [{l}, {c}]",
                        t.model.latent_shape(),
                        a.cache.display()
                    );
                }
                if cache.classes().len() > t.model.num_classes() {
                    bail!(
                        "{} has {} classes but the model only {}",
                        a.cache.display(),
                        cache.classes().len(),
                        t.model.num_classes()
                    );
                }
                t
            }
        };
        let tok = match &a.tokenizer {
            Some(p) => Some(load_pretrained::<B::InnerBackend>(p, &device)?.0),
            None => None,
        };
        let resumed = t.step;
        std::fs::create_dir_all(a.out.join("samples"))
            .with_context(|| format!("cannot create {}", a.out.display()))?;
        let pb = if a.progress {
            ProgressBar::new(a.steps as u64)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template(
                "training {bar:40} {pos}/{len} steps loss {msg} eta {eta}",
            )
            .expect("template"),
        );
        pb.set_position(t.step as u64);
        let mut last_ckpt = String::new();
        while t.step < a.steps {
            let loss = t.step(&cache)?;
            pb.set_message(format!("{loss:.4}"));
            pb.inc(1);
            if t.step % 50 == 0 {
                tracing::info!("step {} loss {loss:.5}", t.step);
            }
            if a.checkpoint_every > 0 && (t.step % a.checkpoint_every == 0 || t.step == a.steps) {
                last_ckpt = t.save_checkpoint(&a.out)?.display().to_string();
            }
            if let (Some(tok), true) = (
                &tok,
                a.sample_every > 0 && (t.step % a.sample_every == 0 || t.step == a.steps),
            ) {
                let k = cache.classes().len().min(8);
                let labels: Vec<i64> = (0..8).map(|i| (i % k) as i64).collect();
                let z = preview(&t.ema, &labels, &device)?;
                let imgs = crate::generate::decode_latents(tok, &z, 8, (t.config.latent_mean, t.config.latent_std), &device)?;
                let p = a.out.join(format!("samples/step-{:07}.png", t.step));
                grid(&imgs, 8)
                    .save(&p)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
        }
        pb.finish_and_clear();
        if last_ckpt.is_empty() {
            last_ckpt = t.save_checkpoint(&a.out)?.display().to_string();
        }
        let pts: Vec<(f64, f64)> = t
            .losses
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as f64 + 1.0, l as f64))
            .collect();
        line_plot_svg(
            &a.out.join("loss.svg"),
            "SiT training loss",
            "step",
            "loss",
            &[("loss", pts)],
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        maetok_nn::io::write_atomic(
            &a.out.join("losses.json"),
            serde_json::to_string(&t.losses)?.as_bytes(),
        )?;
        let n = t.losses.len();
        Ok(TrainSitSummary {
            resumed_from_step: resumed,
            steps: t.step,
            first_loss: t.losses.first().copied().unwrap_or(f32::NAN),
            last_loss_mean_of_10: t.losses[n.saturating_sub(10)..].iter().sum::<f32>()
                / n.clamp(1, 10) as f32,
            checkpoint: last_ckpt,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Trains on the backend called `backend` (with autodiff).
pub fn train_sit(args: TrainSitArgs, backend: &str) -> Result<TrainSitSummary> {
    crate::backend::run_train(backend, TrainTask(args))
}
