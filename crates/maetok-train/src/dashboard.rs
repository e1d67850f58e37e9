//! What a trainer shows and records while it runs, through burn-train's metric renderers and
//! its file metric logger.
//!
//! - **Display** ([`DashboardMode`]): burn-train's terminal dashboard (plots of every metric,
//!   progress, ETA; `q` asks to stop) when stdout is a terminal; otherwise one plain line at most
//!   every [`LINE_EVERY`] (and at the first and last step) through `tracing`; nothing when the
//!   caller asked for no progress output.
//! - **Files**: burn-train's [`FileMetricLogger`] under `<out>/metrics/train/epoch-<e>/<metric>.log`,
//!   one value per step (burn-train's layout; epochs are passes over the training data,
//!   `steps_per_epoch` steps each). The trainers' `log.jsonl` stays the exact record (it is what a
//!   resume reads); on a resume the dashboard rewrites the current epoch's files from it
//!   ([`Dashboard::replay`]) because the file logger truncates a file when it first opens it.
//! - **Metrics**: whatever the trainer reports each step (loss terms, learning rate, ...), plus
//!   throughput (images per second, wall time between two steps), CPU use and system memory
//!   (burn-train's `CpuUse`, `CpuMemory`), and, on CUDA runs, every GPU's memory and use
//!   (burn-train's `CudaMetric`, through NVML).
//!
//! Only the leader of a parallel run (peer 0) has a dashboard: its numbers are the global batch's
//! (the trainers all-reduce them).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::data::dataloader::Progress;
use burn_train::logger::{FileMetricLogger, MetricLogger};
use burn_train::metric::store::{MetricsUpdate, NumericMetricUpdate, Split};
use burn_train::metric::{
    CpuMemory, CpuUse, CudaMetric, Metric, MetricAttributes, MetricDefinition, MetricEntry, MetricId, MetricMetadata, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};
use burn_train::renderer::tui::TuiMetricsRendererWrapper;
use burn_train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation, MetricsRendererTraining, ProgressType,
    TrainingProgress,
};
use burn_train::Interrupter;

/// Plain mode prints at most one line per this interval.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// The name of the throughput metric (images or latents per second; metric names are file names).
pub const THROUGHPUT: &str = "throughput";

/// How a dashboard shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DashboardMode {
    /// burn-train's terminal dashboard (stdout must be a terminal).
    Tui,
    /// A plain line at most every [`LINE_EVERY`], through `tracing`.
    Lines,
    /// Nothing on screen (the metric files are still written).
    Quiet,
}

impl DashboardMode {
    /// [`Tui`](Self::Tui) when `progress` is asked for and stdout is a terminal,
    /// [`Lines`](Self::Lines) when it is asked for otherwise, [`Quiet`](Self::Quiet) without.
    pub fn detect(progress: bool) -> Self {
        match (progress, std::io::stdout().is_terminal()) {
            (false, _) => Self::Quiet,
            (true, true) => Self::Tui,
            (true, false) => Self::Lines,
        }
    }
}

/// What a dashboard is told once.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The run's directory: the metric files go to `<out>/metrics`.
    pub out: PathBuf,
    /// Steps the run is asked to reach.
    pub total_steps: u64,
    /// Steps per pass over the training data (≥ 1): burn-train's epochs.
    pub steps_per_epoch: u64,
    /// Images (or latents) per step over all peers, for the throughput.
    pub items_per_step: usize,
    /// Report the GPUs' memory and use (CUDA runs: NVML).
    pub gpu: bool,
}

/// Errors of a dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot write the metric files under {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("dashboard: {0}")]
    Invalid(String),
}

/// One trainer's dashboard: renderer, file logger and system metrics.
pub struct Dashboard {
    mode: DashboardMode,
    renderer: Option<Box<dyn MetricsRenderer>>,
    logger: FileMetricLogger,
    /// Definitions by metric name.
    metrics: HashMap<String, MetricDefinition>,
    cpu: CpuUse,
    memory: CpuMemory,
    gpu: Option<CudaMetric>,
    interrupter: Interrupter,
    config: DashboardConfig,
    /// When the previous step was reported (throughput).
    last_step: Option<(u64, Instant)>,
}

impl Dashboard {
    /// A dashboard for a run that starts (or resumes) after step `start_step`.
    pub fn new(mode: DashboardMode, config: DashboardConfig, start_step: u64) -> Result<Self, DashboardError> {
        if config.steps_per_epoch == 0 || config.items_per_step == 0 {
            return Err(DashboardError::Invalid(format!(
                "{} steps per epoch and {} items per step: both must be at least 1",
                config.steps_per_epoch, config.items_per_step
            )));
        }
        let dir = config.out.join("metrics");
        // burn-train's file logger panics on I/O errors: find an unwritable directory here, with
        // its path in the message.
        let probe = dir.join(".writable");
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&probe, b""))
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|source| DashboardError::Io { path: dir.clone(), source })?;
        let interrupter = Interrupter::new();
        let renderer: Option<Box<dyn MetricsRenderer>> = match mode {
            // The dashboard's ETA counts from the epoch the run resumes in.
            DashboardMode::Tui => {
                let start_epoch = (start_step / config.steps_per_epoch) as usize;
                Some(Box::new(TuiMetricsRendererWrapper::new(interrupter.clone(), Some(start_epoch))))
            }
            DashboardMode::Lines => Some(Box::new(LineRenderer::new(config.total_steps))),
            DashboardMode::Quiet => None,
        };
        Ok(Self {
            mode,
            renderer,
            logger: FileMetricLogger::new(&dir),
            metrics: HashMap::new(),
            cpu: CpuUse::new(),
            memory: CpuMemory::new(),
            gpu: config.gpu.then(CudaMetric::new),
            interrupter,
            config,
            last_step: None,
        })
    }

    /// How this dashboard shows itself.
    pub fn mode(&self) -> DashboardMode {
        self.mode
    }

    /// Whether someone asked the run to stop (the terminal dashboard's `q`, then `s`): the
    /// trainer writes a checkpoint and returns, and the same command resumes it.
    pub fn should_stop(&self) -> bool {
        self.interrupter.should_stop()
    }

    /// A handle that asks the run to stop from elsewhere (another thread, a signal handler):
    /// `stop_handle().stop(None)` does what `q`, `s` does on the terminal dashboard.
    pub fn stop_handle(&self) -> Interrupter {
        self.interrupter.clone()
    }

    /// The epoch (1-based, burn-train's numbering) that step `step` (1-based) belongs to.
    pub fn epoch_of(&self, step: u64) -> usize {
        (step.saturating_sub(1) / self.config.steps_per_epoch + 1) as usize
    }

    /// Rewrites the metric files of the epoch the run resumes in, from the steps `history` (the
    /// trainer's exact log: `(step, values)`, steps up to the resume point) that belong to it, and
    /// removes the files of later epochs (a killed run may have written them past its last
    /// checkpoint). Call once, before the first [`step`](Self::step) of a resumed run.
    pub fn replay<S: AsRef<str>>(
        &mut self,
        resume_step: u64,
        history: impl IntoIterator<Item = (u64, Vec<(S, f64)>)>,
    ) -> Result<(), DashboardError> {
        let dir = self.config.out.join("metrics").join("train");
        let current = self.epoch_of(resume_step + 1);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let later = name.strip_prefix("epoch-").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n > current);
                if later {
                    std::fs::remove_dir_all(e.path()).map_err(|source| DashboardError::Io { path: e.path(), source })?;
                }
            }
        }
        if resume_step == 0 {
            return Ok(());
        }
        for (step, values) in history {
            if step <= resume_step && self.epoch_of(step) == current {
                let values: Vec<(&str, f64)> = values.iter().map(|(n, v)| (n.as_ref(), *v)).collect();
                let update = self.numeric_update(&values);
                self.logger.log(update, current, &Split::Train);
            }
        }
        Ok(())
    }

    /// Reports step `step` (1-based, the steps done): `values` are the trainer's metrics (name,
    /// value); throughput and device use are added here.
    pub fn step<S: AsRef<str>>(&mut self, step: u64, values: &[(S, f64)]) {
        let now = Instant::now();
        let mut all: Vec<(&str, f64)> = values.iter().map(|(n, v)| (n.as_ref(), *v)).collect();
        if let Some((prev, at)) = self.last_step {
            let secs = now.duration_since(at).as_secs_f64();
            if step > prev && secs > 0.0 {
                all.push((THROUGHPUT, (step - prev) as f64 * self.config.items_per_step as f64 / secs));
            }
        }
        self.last_step = Some((step, now));
        let epoch = self.epoch_of(step);
        let steps_per_epoch = self.config.steps_per_epoch as usize;
        let progress = Progress { items_processed: ((step - 1) % self.config.steps_per_epoch + 1) as usize, items_total: steps_per_epoch };
        let epochs = self.config.total_steps.div_ceil(self.config.steps_per_epoch).max(1) as usize;
        let global = Progress { items_processed: epoch, items_total: epochs.max(epoch) };
        let metadata =
            MetricMetadata { progress: progress.clone(), global_progress: global.clone(), iteration: Some(step as usize), lr: None };

        let mut update = self.numeric_update(&all);
        for (name, serialized, attributes, value) in self.system_metrics(&metadata) {
            self.define(&name, attributes);
            let entry = MetricEntry::new(self.metrics[&name].metric_id.clone(), serialized);
            match value {
                Some(v) => update.entries_numeric.push(NumericMetricUpdate::new(entry, v.clone(), v)),
                None => update.entries.push(entry),
            }
        }
        if let Some(r) = self.renderer.as_mut() {
            for e in &update.entries {
                r.update_train(MetricState::Generic(e.clone()));
            }
            for n in &update.entries_numeric {
                r.update_train(MetricState::Numeric(n.entry.clone(), n.numeric_entry.clone()));
            }
            let indicators = vec![
                ProgressType::Value { tag: "Step".into(), value: step as usize },
                ProgressType::Detailed { tag: "Epoch".into(), progress: global.clone() },
            ];
            r.render_train(
                TrainingProgress { progress: Some(progress), global_progress: global, iteration: Some(step as usize) },
                indicators,
            );
        }
        self.logger.log(update, epoch, &Split::Train);
    }

    /// Closes the display (the terminal returns to its normal screen) and flushes the files.
    pub fn finish(mut self) {
        self.renderer.take();
    }

    /// Registers `name` with the renderer and the logger (once).
    fn define(&mut self, name: &str, attributes: MetricAttributes) {
        if self.metrics.contains_key(name) {
            return;
        }
        let def = MetricDefinition {
            metric_id: MetricId::new(Arc::new(name.to_string())),
            name: name.to_string(),
            description: None,
            attributes,
        };
        if let Some(r) = self.renderer.as_mut() {
            r.register_metric(def.clone());
        }
        self.logger.log_metric_definition(def.clone());
        self.metrics.insert(name.to_string(), def);
    }

    /// The entries of the trainer's numeric `values` (registering new names).
    fn numeric_update(&mut self, values: &[(&str, f64)]) -> MetricsUpdate {
        let mut numeric = Vec::with_capacity(values.len());
        for &(name, v) in values {
            let attributes =
                NumericAttributes { unit: (name == THROUGHPUT).then(|| "img/s".to_string()), higher_is_better: name == THROUGHPUT };
            self.define(name, attributes.into());
            let id = self.metrics[name].metric_id.clone();
            let value = NumericEntry::Value(v);
            let unit = if name == THROUGHPUT { " img/s" } else { "" };
            let entry = MetricEntry::new(id, SerializedEntry::new(format!("{name}: {}{unit}", format_value(v)), value.serialize()));
            numeric.push(NumericMetricUpdate::new(entry, value.clone(), value));
        }
        MetricsUpdate::new(Vec::new(), numeric)
    }

    /// CPU use, system memory and (CUDA) the GPUs: name, entry, attributes, numeric value (the
    /// GPU entry is text: memory and use of every device).
    fn system_metrics(&mut self, metadata: &MetricMetadata) -> Vec<(String, SerializedEntry, MetricAttributes, Option<NumericEntry>)> {
        let mut out = Vec::new();
        let e = self.cpu.update(&(), metadata);
        out.push((self.cpu.name().to_string(), e, self.cpu.attributes(), Some(self.cpu.value())));
        let e = self.memory.update(&(), metadata);
        out.push((self.memory.name().to_string(), e, self.memory.attributes(), Some(self.memory.value())));
        if let Some(gpu) = self.gpu.as_mut() {
            let e = gpu.update(&(), metadata);
            out.push((gpu.name().to_string(), e, gpu.attributes(), None));
        }
        out
    }
}

/// A parallel run's peers agree on a stop asked on the leader's dashboard every this many steps
/// (one all-reduce of one number); a one-peer run checks every step.
pub const STOP_POLL: u64 = 10;

/// Whether the run stops after step `step`: someone asked the leader's dashboard (`dash`, peer
/// 0's; `None` on the other peers). Every peer calls it after every step; on a parallel run they
/// agree every [`STOP_POLL`] steps, so all of them stop after the same step.
pub fn stop_requested<B: burn::tensor::backend::Backend>(
    peer: crate::parallel::Peer,
    dash: Option<&Dashboard>,
    step: u64,
    device: &B::Device,
) -> Result<bool, crate::parallel::ParallelError> {
    let asked = dash.is_some_and(Dashboard::should_stop);
    if peer.world == 1 {
        return Ok(asked);
    }
    if !step.is_multiple_of(STOP_POLL) {
        return Ok(false);
    }
    Ok(!crate::parallel::all_ok::<B>(peer, !asked, device)?)
}

/// A value with 4 significant digits (scientific notation outside [1e-3, 1e5)).
fn format_value(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0.000".to_string()
    } else if (1e-3..1e5).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    } else {
        format!("{v:.3e}")
    }
}

/// burn-train's renderer trait, printing one plain line (all metrics of the latest step) at most
/// every [`LINE_EVERY`], and at the first and last step.
struct LineRenderer {
    total_steps: u64,
    latest: Vec<(MetricId, String)>,
    last_line: Option<Instant>,
}

impl LineRenderer {
    fn new(total_steps: u64) -> Self {
        Self { total_steps, latest: Vec::new(), last_line: None }
    }

    fn set(&mut self, entry: &MetricEntry) {
        let text = entry.serialized_entry.formatted.clone();
        match self.latest.iter_mut().find(|(id, _)| *id == entry.metric_id) {
            Some(slot) => slot.1 = text,
            None => self.latest.push((entry.metric_id.clone(), text)),
        }
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => self.set(&e),
        }
    }

    fn update_valid(&mut self, _state: MetricState) {}

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let step = item.iteration.unwrap_or_default() as u64;
        let due = self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) || step >= self.total_steps;
        if !due {
            return;
        }
        self.last_line = Some(Instant::now());
        let epoch = item.global_progress.items_processed;
        let metrics: Vec<&str> = self.latest.iter().map(|(_, t)| t.as_str()).collect();
        tracing::info!("step {step}/{} (epoch {epoch}) · {}", self.total_steps, metrics.join(" · "));
    }

    fn render_valid(&mut self, _item: TrainingProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: MetricDefinition) {}
}

/// The metric files written so far for `name` in epoch `epoch` (one value per line), for tests
/// and tools: `<out>/metrics/train/epoch-<epoch>/<name>.log` (spaces in `name` become `_`).
pub fn read_metric(out: &Path, epoch: usize, name: &str) -> Result<Vec<f64>, DashboardError> {
    let path = out.join("metrics/train").join(format!("epoch-{epoch}")).join(format!("{}.log", name.replace(' ', "_")));
    let text = std::fs::read_to_string(&path).map_err(|source| DashboardError::Io { path: path.clone(), source })?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            NumericEntry::deserialize(l)
                .map(|e| e.current())
                .map_err(|e| DashboardError::Invalid(format!("{}: {l:?}: {e}", path.display())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(out: &Path) -> DashboardConfig {
        DashboardConfig { out: out.to_path_buf(), total_steps: 7, steps_per_epoch: 3, items_per_step: 4, gpu: false }
    }

    #[test]
    fn files_hold_one_value_per_step_by_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Dashboard::new(DashboardMode::Lines, config(dir.path()), 0).unwrap();
        for s in 1..=7u64 {
            d.step(s, &[("rec", s as f64 * 0.5), ("lr", 1e-4)]);
        }
        d.finish();
        assert_eq!(read_metric(dir.path(), 1, "rec").unwrap(), vec![0.5, 1.0, 1.5]);
        assert_eq!(read_metric(dir.path(), 2, "rec").unwrap(), vec![2.0, 2.5, 3.0]);
        assert_eq!(read_metric(dir.path(), 3, "rec").unwrap(), vec![3.5]);
        assert_eq!(read_metric(dir.path(), 3, "lr").unwrap(), vec![1e-4]);
        // Throughput from the second step on; system metrics every step.
        assert_eq!(read_metric(dir.path(), 1, THROUGHPUT).unwrap().len(), 2);
        assert!(read_metric(dir.path(), 1, THROUGHPUT).unwrap().iter().all(|v| *v > 0.0));
        assert_eq!(read_metric(dir.path(), 2, "CPU Usage").unwrap().len(), 3);
        assert_eq!(read_metric(dir.path(), 3, "CPU Memory").unwrap().len(), 1);
    }

    #[test]
    fn a_resume_rewrites_its_epoch_from_the_log_and_drops_later_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |s: u64| s as f64 * 0.25;
        // A run killed after step 8 whose last checkpoint is step 4.
        let mut d = Dashboard::new(DashboardMode::Quiet, config(dir.path()), 0).unwrap();
        for s in 1..=8u64 {
            d.step(s, &[("rec", rec(s))]);
        }
        d.finish();
        assert!(dir.path().join("metrics/train/epoch-3").is_dir());
        let mut d = Dashboard::new(DashboardMode::Quiet, config(dir.path()), 4).unwrap();
        d.replay(4, (1..=4u64).map(|s| (s, vec![("rec", rec(s))]))).unwrap();
        assert!(!dir.path().join("metrics/train/epoch-3").exists(), "epochs after the resume point are removed");
        for s in 5..=7u64 {
            d.step(s, &[("rec", rec(s))]);
        }
        d.finish();
        assert_eq!(read_metric(dir.path(), 1, "rec").unwrap(), vec![rec(1), rec(2), rec(3)]);
        assert_eq!(read_metric(dir.path(), 2, "rec").unwrap(), vec![rec(4), rec(5), rec(6)]);
        assert_eq!(read_metric(dir.path(), 3, "rec").unwrap(), vec![rec(7)]);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = Dashboard::new(DashboardMode::Quiet, config(&file), 0).err().expect("a file is not a directory");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
        let err = Dashboard::new(DashboardMode::Quiet, DashboardConfig { steps_per_epoch: 0, ..config(dir.path()) }, 0).err().unwrap();
        assert!(err.to_string().contains("steps per epoch"), "{err}");
    }

    #[test]
    fn peers_agree_to_stop_every_poll_interval() {
        use crate::parallel::{run_peers, Peer, World};
        type B = burn::backend::NdArray<f32>;
        let dir = tempfile::tempdir().unwrap();
        let dash = Dashboard::new(DashboardMode::Quiet, config(dir.path()), 0).unwrap();
        let device = Default::default();
        assert!(!stop_requested::<B>(Peer::SINGLE, Some(&dash), 1, &device).unwrap());
        dash.stop_handle().stop(None);
        assert!(stop_requested::<B>(Peer::SINGLE, Some(&dash), 1, &device).unwrap(), "one peer stops at once");
        assert!(!stop_requested::<B>(Peer::SINGLE, None, 1, &device).unwrap());
        // Two peers: only the leader has the dashboard; both learn of the stop at the next poll.
        let world = World::local(2);
        let states = vec![Some(dash), None];
        let seen = run_peers::<B, _, _, crate::parallel::ParallelError, _>(&world, &[device, device], states, |peer, dash| {
            (1..=STOP_POLL).map(|step| stop_requested::<B>(peer, dash.as_ref(), step, &device)).collect::<Result<Vec<bool>, _>>()
        })
        .unwrap();
        for s in &seen {
            assert!(s[..STOP_POLL as usize - 1].iter().all(|b| !b) && s[STOP_POLL as usize - 1], "{s:?}");
        }
    }

    #[test]
    fn values_print_with_four_significant_digits() {
        assert_eq!(format_value(0.012345), "0.01235");
        assert_eq!(format_value(12.3456), "12.35");
        assert_eq!(format_value(1e-4), "1.000e-4");
        assert_eq!(format_value(0.0), "0.000");
    }
}
