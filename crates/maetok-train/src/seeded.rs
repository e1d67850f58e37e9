//! Burn's backends draw random initialisations from one process-wide generator per backend
//! (`Backend::seed`, then every lazily initialised parameter). Two models seeded and built on
//! different threads at the same time would interleave their draws, and each would get values
//! that depend on the other's timing. The trainers seed and materialise their models under
//! [`seeded`], so a run's initialisation depends only on its seed, whatever else the process
//! builds concurrently (tests run in parallel, several trainers in one program).

use std::sync::Mutex;

static BACKEND_RNG: Mutex<()> = Mutex::new(());

/// Runs `f` (which seeds the backend and draws from it) while no other caller of `seeded` in this
/// process does.
pub fn seeded<R>(f: impl FnOnce() -> R) -> R {
    // A panic in another initialisation leaves nothing to repair: the generator is re-seeded by
    // the next caller.
    let _guard = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{backend::Backend, Distribution, Tensor};

    type B = burn::backend::NdArray<f32>;

    /// Seeded draws on many threads at once give each thread the values of a lone run.
    #[test]
    fn concurrent_seeded_draws_are_those_of_a_lone_run() {
        let device = Default::default();
        let draw = |seed: u64| {
            seeded(|| {
                B::seed(&device, seed);
                (0..8)
                    .map(|_| Tensor::<B, 1>::random([64], Distribution::Default, &device).into_data().to_vec::<f32>().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let alone: Vec<_> = (0..4).map(draw).collect();
        let together: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u64).map(|seed| s.spawn(move || draw(seed))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(alone, together);
    }
}
