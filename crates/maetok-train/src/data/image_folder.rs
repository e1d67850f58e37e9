//! torchvision `ImageFolder` discovery: classes are the sorted sub-folders of the root, files
//! are found recursively (so tiny-imagenet's `train/<wnid>/images/*.JPEG` belong to `<wnid>`),
//! visited in sorted `(folder, file name)` order, and accepted by extension. The class index is
//! the position in the sorted class list, as in every reference tool.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::image::ImageError;

/// Extensions torchvision accepts (lower-cased comparison).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// Where the class folders are, relative to the path the user gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The path itself holds the class folders.
    ImageFolder,
    /// ImageNet / an ImageNet subset: `<root>/train/<wnid>/*.JPEG`.
    ImageNet,
    /// tiny-imagenet-200: `<root>/train/<wnid>/images/*.JPEG` (labels from `<wnid>`).
    TinyImageNet,
}

/// A layout name that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown layout '{0}'; choose imagefolder, imagenet or tiny-imagenet")]
pub struct UnknownLayout(pub String);

impl std::str::FromStr for Layout {
    type Err = UnknownLayout;
    fn from_str(s: &str) -> Result<Self, UnknownLayout> {
        match s {
            "imagefolder" | "image-folder" => Ok(Self::ImageFolder),
            "imagenet" => Ok(Self::ImageNet),
            "tiny-imagenet" | "tinyimagenet" => Ok(Self::TinyImageNet),
            other => Err(UnknownLayout(other.to_string())),
        }
    }
}

/// An image folder dataset: `samples[i] = (path, class index)`.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<(PathBuf, usize)>,
}

fn has_image_extension(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir_sorted(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), ImageError> {
    let io = |source| ImageError::Io { path: dir.to_path_buf(), source };
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        // `is_dir` follows symbolic links, as torchvision's walk does.
        if path.is_dir() {
            dirs.push(path);
        } else {
            files.push(path);
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// All accepted files under `dir`, ordered like `sorted(os.walk(dir))` with sorted names.
fn walk_class(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut folders = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < folders.len() {
        let (sub, _) = read_dir_sorted(&folders[i])?;
        folders.extend(sub);
        i += 1;
    }
    folders.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
    let mut out = Vec::new();
    for f in folders {
        let (_, files) = read_dir_sorted(&f)?;
        let mut files: Vec<PathBuf> = files.into_iter().filter(|p| has_image_extension(p)).collect();
        files.sort_by(|a, b| match (a.file_name(), b.file_name()) {
            (Some(x), Some(y)) => x.as_encoded_bytes().cmp(y.as_encoded_bytes()),
            _ => Ordering::Equal,
        });
        out.extend(files);
    }
    Ok(out)
}

impl ImageFolder {
    /// Scans `root` (the folder holding the class folders). No class folder, or a class
    /// without images, is an error naming the folder.
    pub fn scan(root: impl AsRef<Path>) -> Result<Self, ImageError> {
        let root = root.as_ref().to_path_buf();
        let (dirs, _) = read_dir_sorted(&root)?;
        if dirs.is_empty() {
            return Err(ImageError::NoClasses(root));
        }
        let mut dirs = dirs;
        dirs.sort_by(|a, b| {
            a.file_name().map(|n| n.as_encoded_bytes().to_vec()).cmp(&b.file_name().map(|n| n.as_encoded_bytes().to_vec()))
        });
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        for (c, d) in dirs.iter().enumerate() {
            let files = walk_class(d)?;
            if files.is_empty() {
                return Err(ImageError::Empty(d.clone()));
            }
            classes.push(d.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
            samples.extend(files.into_iter().map(|p| (p, c)));
        }
        Ok(Self { root, classes, samples })
    }

    /// Scans the class folders of `path` under the given layout.
    pub fn open(path: impl AsRef<Path>, layout: Layout) -> Result<Self, ImageError> {
        let path = path.as_ref();
        match layout {
            Layout::ImageFolder => Self::scan(path),
            Layout::ImageNet | Layout::TinyImageNet => {
                let train = path.join("train");
                if !train.is_dir() {
                    return Err(ImageError::Io {
                        path: train,
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "expected the dataset's train/ folder"),
                    });
                }
                Self::scan(train)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// `<class>/<file name>`: the cache's relative path of sample `i` (the reference used the
    /// last two path components, which collapses tiny-imagenet's classes into `images/`).
    pub fn relpath(&self, i: usize) -> String {
        let (p, c) = &self.samples[i];
        format!("{}/{}", self.classes[*c], p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
    }
}
