//! Image data: files and folders (`image`), and a built-in procedural dataset (`procedural`).

pub mod image;
pub mod procedural;

pub use self::image::{collect_inputs, images_to_tensor, load_rgb, preprocess_center_crop, tensor_to_images, ImageError};
pub use procedural::ProceduralShapes;
