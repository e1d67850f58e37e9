//! Image data: burn-dataset `Dataset`s over all of it (`datasets`), files and folders (`image`), torchvision-style class folders (`image_folder`),
//! a built-in procedural dataset (`procedural`), the tokenizer's training batches
//! (`train_images`), and cached tokenizer latents (`latent_cache`).

pub mod datasets;
pub mod image;
pub mod image_folder;
pub mod latent_cache;
pub mod procedural;
pub mod train_images;

pub use self::image::{collect_inputs, images_to_tensor, load_rgb, preprocess_center_crop, tensor_to_images, ImageError};
pub use datasets::{ImageFolderDataset, LabeledImage, ProceduralDataset};
pub use image_folder::{ImageFolder, Layout};
pub use latent_cache::{LatentCache, LatentCacheWriter, LatentRecord};
pub use procedural::ProceduralShapes;
pub use train_images::{DataError, ImageSource, Prefetcher, TrainImages};
