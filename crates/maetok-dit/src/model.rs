//! The DiT network: the SiT trunk fed with the DDPM step index (as a float) and a `[ε̂ | v]`
//! head. `forward_with_cfg` is the reference's guided forward on a doubled batch.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor};
use maetok_nn::io::{LoadReport, VisitParams};
use maetok_sit::{load_folder_weights, save_folder, Sit, SitLoadError};

use crate::config::DitConfig;

#[derive(Module, Debug)]
pub struct Dit<B: Backend> {
    pub net: Sit<B>,
    /// Latent channels `C` (the head outputs `2C` with learned variance).
    pub channels: usize,
}

impl<B: Backend> Dit<B> {
    pub fn new(cfg: &DitConfig, device: &B::Device) -> Self {
        Self { net: Sit::with_out_channels(&cfg.trunk(), cfg.out_channels(), device), channels: cfg.in_channels }
    }

    /// `x` `[B, L, C]`, integer steps `t` `[B]` (0..T−1), labels `y` `[B]` → `[B, L, 2C]`.
    pub fn forward(&self, x: Tensor<B, 3>, t: Tensor<B, 1, Int>, y: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        self.net.forward(x, t.float(), y)
    }

    /// The reference `forward_with_cfg`: the first half of `x` is run twice with labels `y`
    /// (`[y; null]`); the ε channels of both halves become `u + s·(c − u)`, the variance channels
    /// stay per half.
    pub fn forward_with_cfg(&self, x: Tensor<B, 3>, t: Tensor<B, 1, Int>, y: Tensor<B, 1, Int>, scale: f64) -> Tensor<B, 3> {
        let b = x.dims()[0];
        let half = x.narrow(0, 0, b / 2);
        let out = self.forward(Tensor::cat(vec![half.clone(), half], 0), t, y);
        let c = self.channels;
        let eps = out.clone().narrow(2, 0, c);
        let rest = out.narrow(2, c, out_width(&self.net) - c);
        let (cond, uncond) = (eps.clone().narrow(0, 0, b / 2), eps.narrow(0, b / 2, b / 2));
        let guided = uncond.clone() + (cond - uncond) * scale;
        Tensor::cat(vec![Tensor::cat(vec![guided.clone(), guided], 0), rest], 2)
    }
}

fn out_width<B: Backend>(net: &Sit<B>) -> usize {
    net.final_layer.linear.weight.dims()[1]
}

impl<B: Backend> VisitParams<B> for Dit<B> {
    fn visit_params<V: maetok_nn::io::ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.net.visit_params(prefix, v);
    }
}

/// Loads a DiT folder (`config.json` + `model.safetensors`), strictly.
pub fn load_dit<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<(Dit<B>, DitConfig, LoadReport), SitLoadError> {
    let dir = dir.as_ref();
    let cfg = DitConfig::from_file(maetok_sit::pretrained::folder_config(dir)?)?;
    let mut model = Dit::new(&cfg, device);
    let report = load_folder_weights(&mut model, dir, device)?;
    Ok((model, cfg, report))
}

/// Writes `config.json` and `model.safetensors` atomically.
pub fn save_dit<B: Backend>(model: &mut Dit<B>, cfg: &DitConfig, dir: impl AsRef<Path>) -> Result<(), SitLoadError> {
    save_folder(model, &cfg.to_json(), dir.as_ref())
}
