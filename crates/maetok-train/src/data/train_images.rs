//! The tokenizer's training images (spec §6.1): an image folder with the reference transform
//! (ADM random crop, horizontal flip with probability ½) or the built-in procedural shapes (at
//! the model size, flipped likewise), served in batches that depend only on `(seed, step)`:
//! step `s` takes positions `[j·B, (j+1)·B)` of epoch `e = s / E`'s permutation (`E = ⌊N/B⌋`
//! steps per epoch, the reference's `drop_last`), and each example's crop and flip come from its
//! own generator seeded by `(seed, step, slot)`. A resumed run therefore reads exactly the batches
//! an uninterrupted one would, with nothing but the step stored.
//!
//! A batch is decoded on worker threads. A file that cannot be decoded is reported once (a
//! warning naming it) and replaced by the next readable one in index order.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::image::{flip_horizontal, load_rgb, random_crop_arr, ImageError};
use super::{ImageFolder, ProceduralShapes};

/// Where the training images come from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// `len` procedural images starting at dataset index `offset` (indices below it are left for
    /// evaluation).
    Procedural { shapes: ProceduralShapes, len: usize, offset: u64 },
    /// Every image of an image folder, cropped to `size`.
    Folder { folder: ImageFolder, size: usize },
}

/// Why a batch could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("the dataset has {len} images, fewer than one batch of {batch}")]
    TooSmall { len: usize, batch: usize },
    #[error("no image of the dataset could be read (the last error: {0})")]
    NothingReadable(ImageError),
}

/// Training batches from an [`ImageSource`].
pub struct TrainImages {
    pub source: ImageSource,
    pub seed: u64,
    /// Decoding threads (at least 1).
    pub threads: usize,
    permutation: Mutex<Option<(u64, Vec<usize>)>>,
    reported: Mutex<HashSet<usize>>,
}

fn mix(a: u64, b: u64) -> u64 {
    a.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ b.wrapping_add(0xD1B5_4A32_D192_ED03)
}

impl TrainImages {
    /// Batches from `source`, shuffled with `seed`, decoded on as many threads as the machine has.
    pub fn new(source: ImageSource, seed: u64) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { source, seed, threads, permutation: Mutex::new(None), reported: Mutex::new(HashSet::new()) }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match &self.source {
            ImageSource::Procedural { len, .. } => *len,
            ImageSource::Folder { folder, .. } => folder.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Side of the square images served.
    pub fn image_size(&self) -> usize {
        match &self.source {
            ImageSource::Procedural { shapes, .. } => shapes.size,
            ImageSource::Folder { size, .. } => *size,
        }
    }

    /// Full batches per epoch (`drop_last`).
    pub fn steps_per_epoch(&self, batch: usize) -> u64 {
        (self.len() / batch.max(1)) as u64
    }

    /// Image `index` after the training transform, with the crop and flip drawn from `rng`.
    pub fn example(&self, index: usize, rng: &mut impl Rng) -> Result<RgbImage, ImageError> {
        let img = match &self.source {
            ImageSource::Procedural { shapes, offset, .. } => shapes.get(offset + index as u64).0,
            ImageSource::Folder { folder, size } => random_crop_arr(&load_rgb(&folder.samples[index].0)?, *size, rng),
        };
        Ok(if rng.random_bool(0.5) { flip_horizontal(&img) } else { img })
    }

    /// Dataset indices of step `step`'s batch.
    pub fn indices(&self, step: u64, batch: usize) -> Result<Vec<usize>, DataError> {
        let per_epoch = self.steps_per_epoch(batch);
        if per_epoch == 0 {
            return Err(DataError::TooSmall { len: self.len(), batch });
        }
        let (epoch, j) = (step / per_epoch, (step % per_epoch) as usize);
        let mut cached = self.permutation.lock().expect("permutation lock");
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut p: Vec<usize> = (0..self.len()).collect();
            p.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, epoch)));
            *cached = Some((epoch, p));
        }
        let p = &cached.as_ref().expect("just set").1;
        Ok(p[j * batch..(j + 1) * batch].to_vec())
    }

    /// Step `step`'s batch of `batch` transformed images, decoded on [`TrainImages::threads`]
    /// threads.
    pub fn batch(&self, step: u64, batch: usize) -> Result<Vec<RgbImage>, DataError> {
        self.batch_rows(step, batch, 0..batch)
    }

    /// Rows `rows` of step `step`'s batch of `batch` (one peer's share): the same images, crops
    /// and flips as those rows of [`TrainImages::batch`] (each image's draws are seeded by its
    /// position in the whole batch).
    pub fn batch_rows(&self, step: u64, batch: usize, rows: std::ops::Range<usize>) -> Result<Vec<RgbImage>, DataError> {
        assert!(rows.end <= batch, "rows {rows:?} of a batch of {batch}");
        let all = self.indices(step, batch)?;
        let first = rows.start;
        let indices = &all[rows];
        let threads = self.threads.clamp(1, indices.len().max(1));
        let per = indices.len().div_ceil(threads);
        let step_seed = mix(self.seed ^ 0x5DEE_CE66, step);
        let results: Vec<Result<RgbImage, DataError>> = std::thread::scope(|s| {
            let handles: Vec<_> = indices
                .chunks(per.max(1))
                .enumerate()
                .map(|(c, chunk)| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(k, &i)| {
                                let mut rng = ChaCha8Rng::seed_from_u64(mix(step_seed, (first + c * per + k) as u64));
                                self.readable_example(i, &mut rng)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("decoding thread panicked")).collect()
        });
        results.into_iter().collect()
    }

    /// [`TrainImages::example`], moving on to the next index past unreadable files.
    pub fn readable_example(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<RgbImage, DataError> {
        let n = self.len();
        let mut last = None;
        for k in 0..n {
            let i = (index + k) % n;
            match self.example(i, rng) {
                Ok(img) => return Ok(img),
                Err(e) => {
                    if self.reported.lock().expect("report lock").insert(i) {
                        tracing::warn!("skipping an unreadable training image: {e}");
                    }
                    last = Some(e);
                }
            }
        }
        Err(DataError::NothingReadable(last.unwrap_or_else(|| ImageError::Empty(self.root()))))
    }

    fn root(&self) -> PathBuf {
        match &self.source {
            ImageSource::Folder { folder, .. } => folder.root.clone(),
            ImageSource::Procedural { .. } => PathBuf::from("<procedural>"),
        }
    }

    /// Indices reported as unreadable so far.
    pub fn skipped(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.reported.lock().expect("report lock").iter().copied().collect();
        v.sort_unstable();
        v
    }
}

/// Batches of consecutive steps decoded ahead on a background thread, so the model never waits
/// on image decoding (up to `depth` batches are kept ready). Dropping it stops the thread.
pub struct Prefetcher {
    rx: std::sync::mpsc::Receiver<(u64, Result<Vec<RgbImage>, DataError>)>,
    next_step: u64,
}

impl Prefetcher {
    /// Starts decoding the batches of steps `first`, `first + 1`, ... of `data`.
    pub fn new(data: std::sync::Arc<TrainImages>, first: u64, batch: usize, depth: usize) -> Self {
        Self::rows(data, first, batch, 0..batch, depth)
    }

    /// [`Prefetcher::new`] for rows `rows` of every batch (one peer's share).
    pub fn rows(data: std::sync::Arc<TrainImages>, first: u64, batch: usize, rows: std::ops::Range<usize>, depth: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
        std::thread::spawn(move || {
            for step in first.. {
                if tx.send((step, data.batch_rows(step, batch, rows.clone()))).is_err() {
                    break;
                }
            }
        });
        Self { rx, next_step: first }
    }

    /// The batch of the next step.
    pub fn next_batch(&mut self) -> Result<Vec<RgbImage>, DataError> {
        let (step, batch) = self.rx.recv().expect("the prefetch thread runs until the prefetcher is dropped");
        debug_assert_eq!(step, self.next_step);
        self.next_step += 1;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with(dir: &std::path::Path, good: usize, corrupt: usize) -> ImageFolder {
        for c in ["a", "b"] {
            std::fs::create_dir_all(dir.join(c)).unwrap();
        }
        for i in 0..good {
            let img = RgbImage::from_fn(40 + i as u32, 36, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, i as u8 * 30]));
            img.save(dir.join(["a", "b"][i % 2]).join(format!("img{i}.png"))).unwrap();
        }
        for i in 0..corrupt {
            std::fs::write(dir.join(["a", "b"][i % 2]).join(format!("zz_bad{i}.jpg")), b"not a jpeg at all").unwrap();
        }
        ImageFolder::scan(dir).unwrap()
    }

    #[test]
    fn batches_depend_only_on_seed_and_step() {
        let t = tempfile::tempdir().unwrap();
        let folder = folder_with(t.path(), 6, 0);
        let a = TrainImages::new(ImageSource::Folder { folder: folder.clone(), size: 32 }, 7);
        let mut b = TrainImages::new(ImageSource::Folder { folder, size: 32 }, 7);
        b.threads = 1;
        // Same batches whatever the thread count and whatever was asked before (resume).
        let x = a.batch(4, 3).unwrap();
        let _ = b.batch(0, 3).unwrap();
        assert_eq!(x, b.batch(4, 3).unwrap());
        assert!(x.iter().all(|i| i.dimensions() == (32, 32)));
        // One epoch (drop_last: 2 steps of 3) visits every image once.
        let mut seen: Vec<usize> = (0..2).flat_map(|s| a.indices(s, 3).unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
        assert_ne!(a.indices(0, 3).unwrap(), a.indices(2, 3).unwrap(), "each epoch has its own order");
        assert!(matches!(a.batch(0, 7), Err(DataError::TooSmall { len: 6, batch: 7 })));
        // A peer's rows are those rows of the whole batch (crops and flips included).
        assert_eq!(b.batch_rows(4, 3, 1..3).unwrap(), x[1..3]);
        let mut p = Prefetcher::rows(std::sync::Arc::new(b), 4, 3, 2..3, 1);
        assert_eq!(p.next_batch().unwrap(), x[2..3]);
    }

    #[test]
    fn prefetched_batches_are_the_steps_batches() {
        let data =
            std::sync::Arc::new(TrainImages::new(ImageSource::Procedural { shapes: ProceduralShapes::new(16, 0), len: 20, offset: 0 }, 3));
        let mut p = Prefetcher::new(data.clone(), 5, 4, 2);
        for step in 5..9 {
            assert_eq!(p.next_batch().unwrap(), data.batch(step, 4).unwrap());
        }
    }

    #[test]
    fn corrupt_files_are_reported_once_and_skipped() {
        let t = tempfile::tempdir().unwrap();
        let folder = folder_with(t.path(), 2, 2);
        let n = folder.len();
        let data = TrainImages::new(ImageSource::Folder { folder, size: 32 }, 0);
        for step in 0..4 {
            assert_eq!(data.batch(step, n).unwrap().len(), n);
        }
        assert_eq!(data.skipped().len(), 2);

        let t = tempfile::tempdir().unwrap();
        let folder = folder_with(t.path(), 0, 2);
        let data = TrainImages::new(ImageSource::Folder { folder, size: 32 }, 0);
        let err = data.batch(0, 1).unwrap_err().to_string();
        assert!(err.contains("zz_bad") && err.contains("no image"), "{err}");
    }

    #[test]
    fn random_crop_keeps_the_reference_scale_range() {
        let img = RgbImage::from_fn(100, 60, |x, _| image::Rgb([x as u8, 0, 0]));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let c = random_crop_arr(&img, 32, &mut rng);
            assert_eq!(c.dimensions(), (32, 32));
            // Short side 60 → s ∈ [32, 40]: the horizontal gradient spans ≥ 32·60/40 source columns.
            let span = c.get_pixel(31, 0)[0] as i32 - c.get_pixel(0, 0)[0] as i32;
            assert!((44..=62).contains(&span), "span {span}");
        }
    }
}
