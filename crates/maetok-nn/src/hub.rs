//! Model folders by Hugging Face id (`MAETok/maetok-b-128`, `SoftVQVAE/softvq-l-64`), resolved
//! through the standard Hugging Face cache that Python users already fill (`hf-hub`:
//! `$HF_HOME/hub/models--<owner>--<name>/snapshots/<commit>/`), as the reference's
//! `from_pretrained` does. `HF_HOME`, `HF_ENDPOINT` and `HF_TOKEN` (or the token file of
//! `huggingface-cli login`) are honoured; a filled cache works offline: files already there are
//! used without asking the hub (delete the `models--<owner>--<name>` folder to fetch anew).

use std::path::{Path, PathBuf};

/// The files a model folder needs.
pub const MODEL_FILES: [&str; 2] = ["config.json", "model.safetensors"];

/// A folder argument that is neither a folder nor a model on the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0} is neither a model folder nor a Hugging Face model id (owner/name)")]
    NotAModel(String),
    #[error("cannot fetch {file} of Hugging Face model {id} from {endpoint} (cache {cache}): {msg}")]
    Download { id: String, file: String, endpoint: String, cache: PathBuf, msg: String },
}

/// Where hub ids are fetched from and cached.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The hub's base URL (`https://huggingface.co`, or `$HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache folder (`$HF_HOME/hub`, by default `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    /// Show download progress bars.
    pub progress: bool,
}

impl Hub {
    /// The endpoint and cache Python's `huggingface_hub` would use (`HF_ENDPOINT`, `HF_HOME`).
    pub fn from_env() -> Self {
        let cache = hf_hub::Cache::from_env().path().clone();
        let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
        Self { endpoint, cache, progress: true }
    }

    /// A model folder for `spec`: `spec` itself when it is a folder; else, when it looks like a
    /// hub id, the cached snapshot holding [`MODEL_FILES`] (fetched first if missing).
    pub fn resolve(&self, spec: &Path) -> Result<PathBuf, HubError> {
        if spec.is_dir() {
            return Ok(spec.to_path_buf());
        }
        let id = spec.to_str().filter(|s| is_model_id(s)).ok_or_else(|| HubError::NotAModel(spec.display().to_string()))?;
        let cached = hf_hub::Cache::new(self.cache.clone()).model(id.to_string());
        let mut files = Vec::new();
        let mut api = None;
        for file in MODEL_FILES {
            let path = match cached.get(file) {
                Some(p) => p,
                None => {
                    let err = |msg: String| HubError::Download {
                        id: id.to_string(),
                        file: file.to_string(),
                        endpoint: self.endpoint.clone(),
                        cache: self.cache.clone(),
                        msg,
                    };
                    if api.is_none() {
                        // The token of `huggingface-cli login` (next to the cache), or `HF_TOKEN`.
                        let builder = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(self.cache.clone()));
                        let builder = match std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
                            Some(t) => builder.with_token(Some(t)),
                            None => builder,
                        };
                        let built = builder
                            .with_endpoint(self.endpoint.clone())
                            .with_progress(self.progress)
                            .build()
                            .map_err(|e| err(e.to_string()))?;
                        api = Some(built.model(id.to_string()));
                    }
                    api.as_ref().expect("built above").get(file).map_err(|e| err(e.to_string()))?
                }
            };
            files.push(path);
        }
        // Both files of one snapshot folder (a config fetched later than the weights sits in the
        // newest snapshot; use the weights' folder and its config when they differ).
        let dir = files[1].parent().map(Path::to_path_buf).ok_or_else(|| HubError::NotAModel(spec.display().to_string()))?;
        if !dir.join(MODEL_FILES[0]).is_file() {
            std::fs::copy(&files[0], dir.join(MODEL_FILES[0])).map_err(|e| HubError::Download {
                id: id.to_string(),
                file: MODEL_FILES[0].to_string(),
                endpoint: self.endpoint.clone(),
                cache: self.cache.clone(),
                msg: e.to_string(),
            })?;
        }
        Ok(dir)
    }
}

/// `owner/name` with the characters the hub allows (letters, digits, `-`, `_`, `.`), not a
/// relative path such as `./x` or `../x`.
pub fn is_model_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// [`Hub::from_env`]`.resolve(spec)`: what every loader calls on its folder argument.
pub fn resolve_model_dir(spec: &Path) -> Result<PathBuf, HubError> {
    Hub::from_env().resolve(spec)
}

#[cfg(test)]
mod tests {
    use super::is_model_id;

    #[test]
    fn model_ids_are_owner_slash_name() {
        for ok in ["MAETok/maetok-b-128", "SoftVQVAE/softvq-l-64", "a_b/c.d"] {
            assert!(is_model_id(ok), "{ok}");
        }
        for bad in ["maetok-b-128", "./x", "../x/y", "a/b/c", "/abs/path", "a/", "a b/c", "./models/x"] {
            assert!(!is_model_id(bad), "{bad}");
        }
    }
}
