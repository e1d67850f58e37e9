//! Work split over several devices in batches, merged in order: `sample_sit`/`sample_dit` and
//! `cache_latents` with `--devices`. Each device has a worker thread with its own state (its
//! models); batch `b` goes to whichever worker is free, and the results are handed to the
//! caller's `consume` in batch order, so the output (one `samples.npz`, one latent cache) is the
//! same file a single device writes. At most one batch per device is in flight, so memory stays
//! at a few batches whatever the total.

use std::collections::BTreeMap;
use std::sync::mpsc;

use anyhow::{anyhow, Result};

/// Runs `work(&mut state, b)` for `b` in `0..batches` on one thread per state, and
/// `consume(b, result)` on the calling thread in increasing `b`. The first error stops the run
/// (batches in flight finish and are dropped). One state: everything runs on this thread.
pub fn run_in_order<S, T, W, C>(states: Vec<S>, batches: usize, work: W, mut consume: C) -> Result<()>
where
    S: Send,
    T: Send,
    W: Fn(&mut S, usize) -> Result<T> + Sync,
    C: FnMut(usize, T) -> Result<()>,
{
    if states.len() <= 1 {
        let mut states = states;
        let Some(s) = states.first_mut() else { return Err(anyhow!("no device to run on")) };
        for b in 0..batches {
            consume(b, work(s, b)?)?;
        }
        return Ok(());
    }
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, usize, Result<T>)>();
        let mut jobs = Vec::new();
        for (k, mut s) in states.into_iter().enumerate() {
            let (job_tx, job_rx) = mpsc::channel::<usize>();
            let (done_tx, work) = (done_tx.clone(), &work);
            std::thread::Builder::new()
                .name(format!("device-{k}"))
                .spawn_scoped(scope, move || {
                    for b in job_rx {
                        if done_tx.send((k, b, work(&mut s, b))).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| anyhow!("cannot start a worker thread: {e}"))?;
            jobs.push(job_tx);
        }
        drop(done_tx);
        let mut next = 0;
        for job in &jobs {
            if next < batches {
                job.send(next).map_err(|_| anyhow!("a device worker stopped"))?;
                next += 1;
            }
        }
        let mut ready = BTreeMap::new();
        let mut written = 0;
        while written < batches {
            let (k, b, r) = done_rx.recv().map_err(|_| anyhow!("a device worker stopped"))?;
            ready.insert(b, r?);
            if next < batches {
                jobs[k].send(next).map_err(|_| anyhow!("a device worker stopped"))?;
                next += 1;
            }
            while let Some(t) = ready.remove(&written) {
                consume(written, t)?;
                written += 1;
            }
        }
        drop(jobs);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_batch_order_whatever_the_worker() {
        let mut seen = Vec::new();
        // Worker 0 is slow: later batches finish first on worker 1.
        run_in_order(
            vec![0usize, 1],
            7,
            |k, b| {
                if *k == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Ok(b * 10)
            },
            |b, v| {
                seen.push((b, v));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..7).map(|b| (b, b * 10)).collect::<Vec<_>>());
        let e = run_in_order(vec![(), ()], 5, |_, b| if b == 3 { Err(anyhow!("batch 3 failed")) } else { Ok(b) }, |_, _| Ok(()));
        assert_eq!(e.unwrap_err().to_string(), "batch 3 failed");
    }
}
