//! The checkpoint folders of every trainer: `<run>/checkpoints/step-NNNNNNN/`, filled in a hidden
//! temporary folder `.step-NNNNNNN.tmp` and renamed when complete, with `checkpoints/latest`
//! (written atomically) naming the newest complete one. A run killed while writing leaves the
//! previous checkpoint and `latest` as they were; the next save removes the stale temporary
//! folder. Each folder holds a `state.json` (the trainer's resumable state) beside the files the
//! trainer writes.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use maetok_nn::io::write_atomic;

/// A checkpoint folder that could not be written or read: the path and what went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("checkpoint {path}: {msg}")]
pub struct CheckpointIoError {
    pub path: PathBuf,
    pub msg: String,
}

impl CheckpointIoError {
    fn new(path: &Path, msg: impl ToString) -> Self {
        Self { path: path.to_path_buf(), msg: msg.to_string() }
    }
}

/// The folder name of the checkpoint after `step` steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:07}")
}

/// Writes the checkpoint after `step` steps of the run in `dir`: `fill` writes the trainer's files
/// into the temporary folder it is given, then `state` goes to `state.json`, the folder is renamed
/// to `dir/checkpoints/step-NNNNNNN`, `latest` is pointed at it and, with `keep`, all but the
/// newest `keep` checkpoints are removed. Returns the checkpoint folder.
pub fn write_checkpoint<E: From<CheckpointIoError>>(
    dir: &Path,
    step: u64,
    state: &impl Serialize,
    keep: Option<usize>,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PathBuf, E> {
    let root = dir.join("checkpoints");
    let name = checkpoint_name(step);
    let fin = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| CheckpointIoError::new(&tmp, e))?;
    fill(&tmp)?;
    let json = serde_json::to_string_pretty(state).map_err(|e| CheckpointIoError::new(&tmp.join("state.json"), e))?;
    write_atomic(&tmp.join("state.json"), json.as_bytes()).map_err(|e| CheckpointIoError::new(&tmp.join("state.json"), e))?;
    // Saving the same step again: the old folder steps aside first, so that a crash between the
    // renames still leaves a complete copy on disk.
    let old = root.join(format!(".{name}.old"));
    let replaced = fin.exists();
    if replaced {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&fin, &old).map_err(|e| CheckpointIoError::new(&fin, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| CheckpointIoError::new(&fin, e))?;
    if replaced {
        let _ = std::fs::remove_dir_all(&old);
    }
    write_atomic(&root.join("latest"), name.as_bytes()).map_err(|e| CheckpointIoError::new(&root.join("latest"), e))?;
    if let Some(keep) = keep {
        prune(&root, &fin, keep.max(1)).map_err(|e| CheckpointIoError::new(&root, e))?;
    }
    Ok(fin)
}

/// Removes all `step-*` folders of `root` but the newest `keep` (never `current`).
fn prune(root: &Path, current: &Path, keep: usize) -> std::io::Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")))
        .collect();
    steps.sort();
    for p in steps.iter().take(steps.len().saturating_sub(keep)) {
        if p != current {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    Ok(())
}

/// The newest complete checkpoint of the run in `dir` and its `state.json`; `None` when the run
/// has none yet (no `checkpoints/latest`). A `latest` that exists but cannot be read is an error,
/// not a fresh start (which would train from scratch over the run's checkpoints).
pub fn latest_checkpoint<S: DeserializeOwned>(dir: &Path) -> Result<Option<(PathBuf, S)>, CheckpointIoError> {
    let root = dir.join("checkpoints");
    let latest = root.join("latest");
    let name = match std::fs::read_to_string(&latest) {
        Ok(name) => name,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CheckpointIoError::new(&latest, e)),
    };
    let ck = root.join(name.trim());
    let path = ck.join("state.json");
    let text = maetok_nn::limits::read_text(&path).map_err(|e| CheckpointIoError::new(&ck, format!("state.json: {e}")))?;
    let state = serde_json::from_str(&text).map_err(|e| CheckpointIoError::new(&ck, format!("state.json: {e}")))?;
    Ok(Some((ck, state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("maetok-ckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn save(dir: &Path, step: u64, keep: Option<usize>) -> Result<PathBuf, CheckpointIoError> {
        write_checkpoint(dir, step, &step, keep, |tmp| {
            std::fs::write(tmp.join("weights"), step.to_le_bytes()).map_err(|e| CheckpointIoError::new(tmp, e))
        })
    }

    #[test]
    fn latest_names_the_newest_and_old_ones_are_pruned() {
        let dir = tmpdir("prune");
        assert_eq!(latest_checkpoint::<u64>(&dir).unwrap(), None);
        for s in [10, 20, 30] {
            save(&dir, s, Some(2)).unwrap();
        }
        let (ck, state) = latest_checkpoint::<u64>(&dir).unwrap().unwrap();
        assert_eq!((ck.file_name().unwrap().to_str().unwrap(), state), ("step-0000030", 30));
        let mut left: Vec<_> = std::fs::read_dir(dir.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["latest", "step-0000020", "step-0000030"]);
        // Saving the same step again replaces it in place.
        save(&dir, 30, None).unwrap();
        assert_eq!(latest_checkpoint::<u64>(&dir).unwrap().unwrap().1, 30);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_fill_leaves_the_previous_checkpoint_current() {
        let dir = tmpdir("fail");
        save(&dir, 1, None).unwrap();
        let failed: Result<PathBuf, CheckpointIoError> =
            write_checkpoint(&dir, 2, &2u64, None, |tmp| Err(CheckpointIoError::new(tmp, "disk full")));
        assert!(failed.unwrap_err().msg.contains("disk full"));
        let (ck, state) = latest_checkpoint::<u64>(&dir).unwrap().unwrap();
        assert_eq!((ck.file_name().unwrap().to_str().unwrap(), state), ("step-0000001", 1));
        assert!(!dir.join("checkpoints/step-0000002").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_state_names_the_checkpoint() {
        let dir = tmpdir("corrupt");
        let ck = save(&dir, 5, None).unwrap();
        std::fs::write(ck.join("state.json"), b"{ not json").unwrap();
        let e = latest_checkpoint::<u64>(&dir).unwrap_err();
        assert!(e.path == ck && e.msg.starts_with("state.json:"), "{e}");
        // A `latest` that is not text is an error naming it, not "no checkpoint yet".
        std::fs::write(dir.join("checkpoints/latest"), [0xff, 0xfe, 0x00]).unwrap();
        let e = latest_checkpoint::<u64>(&dir).unwrap_err();
        assert_eq!(e.path, dir.join("checkpoints/latest"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
