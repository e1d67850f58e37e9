//! Peak resident memory of one run of a benchmark's workload, printed beside criterion's timings
//! (criterion measures time only).
//!
//! [`once`] resets the process's high-water mark (`/proc/self/clear_refs` ← `5`), runs the
//! workload once, and reads `VmHWM` from `/proc/self/status`: the peak of everything resident
//! during that run (the model's weights, the inputs, the activations and gradients), not of the
//! bench binary's setup of other groups. `benches/peak_rss.py` measures the PyTorch anchors the
//! same way (reset before the first timed iteration). Linux only; elsewhere nothing is printed.

use std::collections::HashSet;
use std::sync::Mutex;

static DONE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Runs `work` once and prints `peak RSS <name>: <MiB>` on stderr, the first time it is called for
/// `name` (criterion calls a benchmark's routine several times); later calls do nothing.
pub fn once<R>(name: &str, work: impl FnOnce() -> R) {
    {
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if !done.get_or_insert_with(HashSet::new).insert(name.to_string()) {
            return;
        }
    }
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        return;
    }
    drop(work());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    if let Some(kib) = kib {
        eprintln!("peak RSS {name}: {:.0} MiB", kib as f64 / 1024.0);
    }
}
