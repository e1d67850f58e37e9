//! The project's datasets behind burn-dataset's [`Dataset`] trait, so that they compose with
//! Burn's transforms (`ShuffledDataset`, `PartialDataset`, `MapperDataset`, `ComposedDataset`,
//! ...) and with any loader built on the trait:
//!
//! * [`ImageFolderDataset`]: an image folder with the evaluation transform (ADM centre crop)
//!   and class labels;
//! * [`ProceduralDataset`]: a finite window of the procedural shapes;
//! * [`LatentCache`]: cached latents (a [`LatentRecord`] per image).
//!
//! The training batches of the tokenizer trainer ([`super::TrainImages`]) draw random crops per
//! step, which a per-index `get` cannot express; they stay a sampler of their own.

use burn_dataset::Dataset;
use image::RgbImage;

use super::image::{load_rgb, preprocess_center_crop};
use super::{ImageFolder, LatentCache, LatentRecord, ProceduralShapes};

/// An image and its class index.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledImage {
    pub image: RgbImage,
    pub label: usize,
}

/// An image folder, every image centre-cropped to `size × size` (the reference's evaluation and
/// caching transform). An unreadable file is `None`, with a warning naming it.
#[derive(Debug, Clone)]
pub struct ImageFolderDataset {
    pub folder: ImageFolder,
    pub size: usize,
}

impl Dataset<LabeledImage> for ImageFolderDataset {
    fn get(&self, index: usize) -> Option<LabeledImage> {
        let (path, label) = self.folder.samples.get(index)?;
        match load_rgb(path) {
            Ok(img) => Some(LabeledImage { image: preprocess_center_crop(&img, self.size), label: *label }),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    fn len(&self) -> usize {
        self.folder.len()
    }
}

/// Procedural images `offset .. offset + len`.
#[derive(Debug, Clone)]
pub struct ProceduralDataset {
    pub shapes: ProceduralShapes,
    pub offset: u64,
    pub len: usize,
}

impl Dataset<LabeledImage> for ProceduralDataset {
    fn get(&self, index: usize) -> Option<LabeledImage> {
        (index < self.len).then(|| {
            let (image, label) = self.shapes.get(self.offset + index as u64);
            LabeledImage { image, label }
        })
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Dataset<LatentRecord> for LatentCache {
    fn get(&self, index: usize) -> Option<LatentRecord> {
        (index < LatentCache::len(self)).then(|| LatentCache::get(self, index))
    }

    fn len(&self) -> usize {
        LatentCache::len(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_dataset::transform::{PartialDataset, ShuffledDataset};

    #[test]
    fn compose_with_burn_transforms() {
        let d = ProceduralDataset { shapes: ProceduralShapes::new(16, 0), offset: 10, len: 12 };
        assert_eq!(
            d.get(3).unwrap(),
            LabeledImage { image: ProceduralShapes::new(16, 0).get(13).0, label: ProceduralShapes::new(16, 0).get(13).1 }
        );
        assert!(d.get(12).is_none());
        let shuffled = ShuffledDataset::<_, LabeledImage>::new(d.clone(), 3);
        let part = PartialDataset::new(shuffled, 2, 7);
        assert_eq!(part.len(), 5);
        let mut labels: Vec<usize> = part.iter().map(|i| i.label).collect();
        labels.sort_unstable();
        assert_eq!(labels.len(), 5);

        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("cat")).unwrap();
        RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3])).save(t.path().join("cat/a.png")).unwrap();
        std::fs::write(t.path().join("cat/b.png"), b"broken").unwrap();
        let f = ImageFolderDataset { folder: ImageFolder::scan(t.path()).unwrap(), size: 16 };
        assert_eq!(Dataset::len(&f), 2);
        assert_eq!(f.get(0).unwrap().image.dimensions(), (16, 16));
        assert!(f.get(1).is_none() && f.get(2).is_none());
    }
}
