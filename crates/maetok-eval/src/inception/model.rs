//! FID Inception-v3 (the TF 2015-12-05 network in torchvision layout with pytorch-fid's
//! patches). Gives the three feature kinds the metrics need:
//! pool3 (2048-d: FID, precision/recall), spatial (2023-d: sFID) and the 1008-class logits (IS).

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::fused::max_pool2d;
use maetok_nn::io::{ParamVisitor, VisitParams};

use super::blocks::{InceptionA, InceptionB, InceptionC, InceptionD, InceptionE};
use super::conv::BasicConv2d;
use super::resize::Preprocess;

/// Number of classes of the TF Inception head (1000 ImageNet classes + 8 unused).
pub const NUM_LOGITS: usize = 1008;
/// Width of the sFID features: 7 channels of the 17×17 `mixed_6/conv` map.
pub const SPATIAL_DIM: usize = 17 * 17 * 7;
/// Width of the pool3 features.
pub const POOL_DIM: usize = 2048;

/// Features of a batch.
#[derive(Debug, Clone)]
pub struct InceptionFeatures<B: Backend> {
    /// `[N, 2048]` global average pool after `Mixed_7c` (TF `pool_3`).
    pub pool: Tensor<B, 2>,
    /// `[N, 2023]`: `Mixed_6d.branch1x1` (TF `mixed_6/conv`), channels 0..7, flattened NHWC
    /// (`(h·17 + w)·7 + c`) as the ADM evaluator does.
    pub spatial: Tensor<B, 2>,
    /// `[N, 1008]` `pool · fcᵀ` without the bias (ADM's and torch-fidelity's unbiased logits);
    /// `None` when the checkpoint has no `fc` layer (pytorch-fid's FID-only state dict).
    pub logits: Option<Tensor<B, 2>>,
}

/// Inception-v3, torchvision module names (`Conv2d_1a_3x3`, `Mixed_5b`, …, `fc`).
#[derive(Module, Debug)]
pub struct InceptionV3<B: Backend> {
    conv2d_1a_3x3: BasicConv2d<B>,
    conv2d_2a_3x3: BasicConv2d<B>,
    conv2d_2b_3x3: BasicConv2d<B>,
    conv2d_3b_1x1: BasicConv2d<B>,
    conv2d_4a_3x3: BasicConv2d<B>,
    mixed_5b: InceptionA<B>,
    mixed_5c: InceptionA<B>,
    mixed_5d: InceptionA<B>,
    mixed_6a: InceptionB<B>,
    mixed_6b: InceptionC<B>,
    mixed_6c: InceptionC<B>,
    mixed_6d: InceptionC<B>,
    mixed_6e: InceptionC<B>,
    mixed_7a: InceptionD<B>,
    mixed_7b: InceptionE<B>,
    mixed_7c: InceptionE<B>,
    /// `fc.weight` `[1008, 2048]` (PyTorch layout; only the weight is used).
    fc: Option<Param<Tensor<B, 2>>>,
    pub preprocess: Preprocess,
}

/// Outputs of the four pytorch-fid blocks, for tests and analysis.
pub struct BlockOutputs<B: Backend> {
    /// `[N, 64, 73, 73]`, `[N, 192, 35, 35]`, `[N, 768, 17, 17]`, `[N, 2048, 1, 1]` at 299.
    pub blocks: [Tensor<B, 4>; 4],
    /// `[N, 192, 17, 17]`, the `Mixed_6d.branch1x1` activation.
    pub mixed_6d_branch1x1: Tensor<B, 4>,
}

fn maxpool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0])
}

impl<B: Backend> InceptionV3<B> {
    /// The architecture with placeholder weights (load real ones with [`super::load_inception`]).
    /// `with_fc`: whether the model has the 1008-class head (needed for the Inception Score).
    pub fn new(with_fc: bool, device: &B::Device) -> Self {
        let d = device;
        Self {
            conv2d_1a_3x3: BasicConv2d::square(3, 32, 3, 2, 0, d),
            conv2d_2a_3x3: BasicConv2d::square(32, 32, 3, 1, 0, d),
            conv2d_2b_3x3: BasicConv2d::square(32, 64, 3, 1, 1, d),
            conv2d_3b_1x1: BasicConv2d::square(64, 80, 1, 1, 0, d),
            conv2d_4a_3x3: BasicConv2d::square(80, 192, 3, 1, 0, d),
            mixed_5b: InceptionA::new(192, 32, d),
            mixed_5c: InceptionA::new(256, 64, d),
            mixed_5d: InceptionA::new(288, 64, d),
            mixed_6a: InceptionB::new(288, d),
            mixed_6b: InceptionC::new(768, 128, d),
            mixed_6c: InceptionC::new(768, 160, d),
            mixed_6d: InceptionC::new(768, 160, d),
            mixed_6e: InceptionC::new(768, 192, d),
            mixed_7a: InceptionD::new(768, d),
            mixed_7b: InceptionE::new(1280, false, d),
            mixed_7c: InceptionE::new(2048, true, d),
            fc: with_fc.then(|| Param::from_tensor(Tensor::zeros([NUM_LOGITS, POOL_DIM], d))),
            preprocess: Preprocess::default(),
        }
    }

    /// Whether logits (and so the Inception Score) are available.
    pub fn has_logits(&self) -> bool {
        self.fc.is_some()
    }

    /// The four blocks on a network input `x` `[N, 3, 299, 299]` in [-1, 1].
    pub fn forward_blocks(&self, x: Tensor<B, 4>) -> BlockOutputs<B> {
        let x = self.conv2d_2b_3x3.forward(self.conv2d_2a_3x3.forward(self.conv2d_1a_3x3.forward(x)));
        let b0 = maxpool(x);
        let b1 = maxpool(self.conv2d_4a_3x3.forward(self.conv2d_3b_1x1.forward(b0.clone())));
        let x = self.mixed_6a.forward(self.mixed_5d.forward(self.mixed_5c.forward(self.mixed_5b.forward(b1.clone()))));
        let (x, _) = self.mixed_6b.forward(x);
        let (x, _) = self.mixed_6c.forward(x);
        let (x, spatial) = self.mixed_6d.forward(x);
        let (b2, _) = self.mixed_6e.forward(x);
        let x = self.mixed_7c.forward(self.mixed_7b.forward(self.mixed_7a.forward(b2.clone())));
        let [n, c, h, w] = x.dims();
        let b3 = x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c, 1, 1]);
        BlockOutputs { blocks: [b0, b1, b2, b3], mixed_6d_branch1x1: spatial }
    }

    /// Features of images `[N, 3, H, W]` with values in [0, 255] (any size; resized to 299 as
    /// [`InceptionV3::preprocess`] says).
    pub fn features(&self, images: Tensor<B, 4>) -> InceptionFeatures<B> {
        let BlockOutputs { blocks: [_, _, _, b3], mixed_6d_branch1x1: b1x1 } = self.forward_blocks(self.preprocess.apply(images));
        let n = b3.dims()[0];
        let pool = b3.reshape([n, POOL_DIM]);
        let [_, _, h, w] = b1x1.dims();
        let spatial = b1x1.narrow(1, 0, 7).permute([0, 2, 3, 1]).reshape([n, h * w * 7]);
        let logits = self.fc.as_ref().map(|fc| pool.clone().matmul(fc.val().transpose()));
        InceptionFeatures { pool, spatial, logits }
    }
}

impl<B: Backend> VisitParams<B> for InceptionV3<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, _prefix: &str, v: &mut V) {
        self.conv2d_1a_3x3.visit_params("Conv2d_1a_3x3", v);
        self.conv2d_2a_3x3.visit_params("Conv2d_2a_3x3", v);
        self.conv2d_2b_3x3.visit_params("Conv2d_2b_3x3", v);
        self.conv2d_3b_1x1.visit_params("Conv2d_3b_1x1", v);
        self.conv2d_4a_3x3.visit_params("Conv2d_4a_3x3", v);
        self.mixed_5b.visit_params("Mixed_5b", v);
        self.mixed_5c.visit_params("Mixed_5c", v);
        self.mixed_5d.visit_params("Mixed_5d", v);
        self.mixed_6a.visit_params("Mixed_6a", v);
        self.mixed_6b.visit_params("Mixed_6b", v);
        self.mixed_6c.visit_params("Mixed_6c", v);
        self.mixed_6d.visit_params("Mixed_6d", v);
        self.mixed_6e.visit_params("Mixed_6e", v);
        self.mixed_7a.visit_params("Mixed_7a", v);
        self.mixed_7b.visit_params("Mixed_7b", v);
        self.mixed_7c.visit_params("Mixed_7c", v);
        if let Some(fc) = self.fc.as_mut() {
            v.param("fc.weight", fc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_walk_covers_every_parameter() {
        type B = burn::backend::NdArray<f32>;
        maetok_nn::testing::assert_walk_covers_module("Inception-v3", &mut InceptionV3::<B>::new(true, &Default::default()));
    }
}
