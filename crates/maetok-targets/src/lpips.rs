//! LPIPS (v0.1, VGG16) as the reference trains with it (`modelling/lpips/lpips.py`, taming
//! copy): inputs in [-1, 1] shifted/scaled per channel, torchvision VGG16 features at relu1_2,
//! relu2_2, relu3_3, relu4_3 and relu5_3, each channel-normalised, squared difference, a learned
//! non-negative 1×1 projection to one channel, spatial mean, summed over the five layers.
//! [`Lpips::forward`] is evaluation mode; [`Lpips::forward_train`] applies the `Dropout(0.5)` that
//! precedes each projection, active in the reference's tokenizer training (spec §5.2: the loss
//! module is put in train mode), with masks drawn on the host from one seed per sample (so a
//! sample's masks do not depend on the batch it is in, or on the device that computes it).
//! Loaded networks are frozen (gradients still reach the images).

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{activation::relu, backend::Backend, ops::PadMode, Bool, Tensor, TensorData};
use maetok_nn::io::{CheckpointError, LoadReport, Loader, ParamVisitor, VisitParams};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// `(output channels, convolutions)` of the five VGG16 slices; torchvision `features` indices.
const SLICES: [&[usize]; 5] = [&[0, 2], &[5, 7], &[10, 12, 14], &[17, 19, 21], &[24, 26, 28]];
const WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

#[derive(Module, Debug)]
struct Conv<B: Backend> {
    weight: Param<Tensor<B, 4>>,
    bias: Param<Tensor<B, 1>>,
}

/// LPIPS with its VGG16 backbone.
#[derive(Module, Debug)]
pub struct Lpips<B: Backend> {
    /// The 13 convolutions of VGG16 `features`, in order.
    convs: Vec<Conv<B>>,
    /// `lin{k}.model.1.weight` `[1, C_k, 1, 1]`.
    lins: Vec<Param<Tensor<B, 4>>>,
}

/// Per-layer and total distances.
pub struct LpipsOutput<B: Backend> {
    /// `[B]` LPIPS distance.
    pub total: Tensor<B, 1>,
    /// `[B, 5]` the five layer terms.
    pub per_layer: Tensor<B, 2>,
}

impl<B: Backend> Lpips<B> {
    /// The architecture with zero placeholders (load weights with [`load_lpips`]).
    pub fn new(device: &B::Device) -> Self {
        let mut convs = Vec::new();
        let mut cin = 3;
        for (s, idx) in SLICES.iter().enumerate() {
            for _ in idx.iter() {
                let cout = WIDTHS[s];
                convs.push(Conv {
                    weight: Param::from_tensor(Tensor::zeros([cout, cin, 3, 3], device)),
                    bias: Param::from_tensor(Tensor::zeros([cout], device)),
                });
                cin = cout;
            }
        }
        let lins = WIDTHS.iter().map(|&c| Param::from_tensor(Tensor::zeros([1, c, 1, 1], device))).collect();
        Self { convs, lins }
    }

    /// VGG16 features at the five taps for `x` `[B, 3, H, W]` in [-1, 1] (after LPIPS's input
    /// scaling).
    pub fn features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let device = x.device();
        let shift = Tensor::<B, 1>::from_data(TensorData::new(SHIFT.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
        let scale = Tensor::<B, 1>::from_data(TensorData::new(SCALE.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
        let mut h = maetok_nn::ops::divide(x - shift, scale);
        let mut taps = Vec::new();
        let mut k = 0;
        for (s, idx) in SLICES.iter().enumerate() {
            if s > 0 {
                h = maetok_nn::fused::max_pool2d(h, [2, 2], [2, 2], [0, 0]);
            }
            for _ in idx.iter() {
                let c = &self.convs[k];
                h = conv3x3_relu(h, c.weight.val(), c.bias.val());
                k += 1;
            }
            taps.push(h.clone());
        }
        taps
    }

    /// LPIPS between `a` and `b` (`[B, 3, H, W]` in [-1, 1]), evaluation mode.
    pub fn forward(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> LpipsOutput<B> {
        self.distance(a, b, None)
    }

    /// LPIPS in training mode: each squared feature difference goes through `Dropout(p = 0.5)`
    /// (kept values scaled by 2) before its projection, as in the reference's training loss.
    /// `seeds` `[B]`: sample `i`'s masks come from `seeds[i]` ([`dropout_half`]).
    pub fn forward_train(&self, a: Tensor<B, 4>, b: Tensor<B, 4>, seeds: &[u64]) -> LpipsOutput<B> {
        assert_eq!(seeds.len(), a.dims()[0], "one dropout seed per sample");
        self.distance(a, b, Some(seeds))
    }

    fn distance(&self, a: Tensor<B, 4>, b: Tensor<B, 4>, dropout: Option<&[u64]>) -> LpipsOutput<B> {
        let n = a.dims()[0];
        let fa = self.features(a);
        let fb = self.features(b);
        let unit = |f: Tensor<B, 4>| maetok_nn::ops::divide(f.clone(), f.powi_scalar(2).sum_dim(1).sqrt() + 1e-10);
        let terms: Vec<Tensor<B, 2>> = fa
            .into_iter()
            .zip(fb)
            .zip(&self.lins)
            .enumerate()
            .map(|(layer, ((x, y), lin))| {
                let d = (unit(x) - unit(y)).powi_scalar(2);
                let d = match dropout {
                    Some(seeds) => dropout_half(d, seeds, layer as u64),
                    None => d,
                };
                let proj = maetok_nn::fused::conv2d(d, lin.val(), None, [1, 1], [0, 0]);
                let [_, _, h, w] = proj.dims();
                proj.reshape([n, h * w]).mean_dim(1)
            })
            .collect();
        let per_layer = Tensor::cat(terms, 1);
        LpipsOutput { total: per_layer.clone().sum_dim(1).reshape([n]), per_layer }
    }
}

/// A 3×3 convolution, stride 1, padding 1, then a ReLU: `x` `[B, C, H, W]`, `w` `[O, C, 3, 3]`
/// → `[B, O, H, W]`.
///
/// On NdArray (with or without autodiff) the convolution is `maetok_nn::fused::conv2d`: im2col +
/// GEMM, with its own backward as a training loss (the metric: the ReLU in place). On other
/// autodiff backends it runs as im2col + one GEMM in Burn ops (the backward of slices and a
/// matmul), whose cost is the `[B, 9C, HW]` column tensor kept for the backward pass; other
/// backends (the metric) use the backend's convolution.
fn conv3x3_relu<B: Backend>(x: Tensor<B, 4>, w: Tensor<B, 4>, bias: Tensor<B, 1>) -> Tensor<B, 4> {
    if !B::ad_enabled(&x.device()) {
        return maetok_nn::fused::conv2d_relu(x, w, Some(bias), [1, 1], [1, 1]);
    }
    if maetok_nn::fused::cpu_fast_path::<B>() {
        return relu(maetok_nn::fused::conv2d(x, w, Some(bias), [1, 1], [1, 1]));
    }
    let [b, c, h, wd] = x.dims();
    let o = w.dims()[0];
    let xp = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let taps: Vec<Tensor<B, 4>> = (0..3)
        .flat_map(|ky| (0..3).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| xp.clone().slice([0..b, 0..c, ky..ky + h, kx..kx + wd]))
        .collect();
    // [B, C, 9, H, W] → [B, 9C, HW], rows in the weight's (c, ky, kx) order.
    let cols = Tensor::stack::<5>(taps, 2).reshape([b, c * 9, h * wd]);
    let out = w.reshape([1, o, c * 9]).matmul(cols) + bias.reshape([1, o, 1]);
    relu(out.reshape([b, o, h, wd]))
}

/// `nn.Dropout(0.5)` in training mode on `x` `[B, ...]`: each value kept with probability ½ and
/// doubled. Sample `i`'s mask is drawn on the host, one bit per value, from ChaCha8 seeded with
/// `seeds[i]` on stream `stream` (one stream per call site), then uploaded as a boolean tensor:
/// the same sample gets the same mask in any batch and on any device, unlike the backend's
/// process-wide generator (which peers on several threads would share).
pub fn dropout_half<B: Backend, const D: usize>(x: Tensor<B, D>, seeds: &[u64], stream: u64) -> Tensor<B, D> {
    let shape = x.shape();
    let b = x.dims()[0];
    assert_eq!(seeds.len(), b, "one dropout seed per sample");
    let per = shape.num_elements() / b.max(1);
    let mut drop = vec![false; b * per];
    // One sample per task: each sample's mask comes from its own stream, so the order of the
    // tasks does not matter (at 256 px a sample has ~8·10⁶ values per LPIPS call).
    drop.par_chunks_mut(per.max(1)).zip(seeds.par_iter()).for_each(|(out, &seed)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        for chunk in out.chunks_mut(64) {
            let word: u64 = rng.next_u64();
            for (k, v) in chunk.iter_mut().enumerate() {
                *v = word >> k & 1 == 0;
            }
        }
    });
    let drop = Tensor::<B, D, Bool>::from_data(TensorData::new(drop, shape), &x.device());
    x.mask_fill(drop, 0.0) * 2.0
}

struct VggKeys<'a, B: Backend>(&'a mut Lpips<B>);

impl<B: Backend> VisitParams<B> for VggKeys<'_, B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, _prefix: &str, v: &mut V) {
        let mut k = 0;
        for idx in SLICES {
            for &j in idx {
                v.param(&format!("features.{j}.weight"), &mut self.0.convs[k].weight);
                v.param(&format!("features.{j}.bias"), &mut self.0.convs[k].bias);
                k += 1;
            }
        }
    }
}

struct LinKeys<'a, B: Backend>(&'a mut Lpips<B>);

impl<B: Backend> VisitParams<B> for LinKeys<'_, B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, _prefix: &str, v: &mut V) {
        for (k, lin) in self.0.lins.iter_mut().enumerate() {
            v.param(&format!("lin{k}.model.1.weight"), lin);
        }
    }
}

/// Builds LPIPS from already-open loaders: the torchvision VGG16 state dict (`features.*`; the
/// classifier is ignored) and the LPIPS linear layers (`lin{k}.model.1.weight`).
pub fn load_lpips_from<B: Backend>(
    mut vgg: Loader<B>,
    mut lin: Loader<B>,
    device: &B::Device,
) -> Result<(Lpips<B>, LoadReport), CheckpointError> {
    let mut m = Lpips::new(device);
    VggKeys(&mut m).visit_params("", &mut vgg);
    let report = vgg.finish(&["classifier."])?;
    LinKeys(&mut m).visit_params("", &mut lin);
    lin.finish(&[])?;
    Ok((m.no_grad(), report))
}

/// Loads LPIPS from torchvision's `vgg16-397923af.pth` (or a safetensors copy) and LPIPS's
/// `vgg.pth` linear layers (or a safetensors copy).
pub fn load_lpips<B: Backend>(
    vgg16: impl AsRef<Path>,
    lin: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Lpips<B>, LoadReport), CheckpointError> {
    load_lpips_from(Loader::from_any(vgg16, device)?, Loader::from_any(lin, device)?, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maetok_nn::testing::ParamCensus;

    #[test]
    fn the_two_checkpoint_walks_cover_every_parameter() {
        type B = burn::backend::NdArray<f32>;
        let mut m = Lpips::<B>::new(&Default::default());
        let mut census = ParamCensus::default();
        VggKeys(&mut m).visit_params("", &mut census);
        LinKeys(&mut m).visit_params("", &mut census);
        assert_eq!(census.values, m.num_params());
    }
}
