//! The mixed blocks of Inception-v3 in pytorch-fid's FID variant (`FIDInceptionA/C/E_1/E_2`):
//! the branch-pool average pools exclude padding (`count_include_pad=False`, as the TF graph
//! does), and the last block (`Mixed_7c`) max-pools in its pool branch (a quirk of the TF graph).
//! All blocks map `[N, Cin, H, W]` to `[N, Cout, H', W']` by concatenating branches on channels.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use maetok_nn::fused::{avg_pool2d, max_pool2d};
use maetok_nn::io::{join, ParamVisitor, VisitParams};

use super::conv::BasicConv2d;

fn avg3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [3, 3], [1, 1], [1, 1], false)
}

fn max3s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0])
}

/// `Mixed_5b/5c/5d` (35×35): output `224 + pool_features` channels.
#[derive(Module, Debug)]
pub struct InceptionA<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch5x5_1: BasicConv2d<B>,
    branch5x5_2: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionA<B> {
    pub fn new(cin: usize, pool_features: usize, d: &B::Device) -> Self {
        Self {
            branch1x1: BasicConv2d::square(cin, 64, 1, 1, 0, d),
            branch5x5_1: BasicConv2d::square(cin, 48, 1, 1, 0, d),
            branch5x5_2: BasicConv2d::square(48, 64, 5, 1, 2, d),
            branch3x3dbl_1: BasicConv2d::square(cin, 64, 1, 1, 0, d),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, d),
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 1, 1, d),
            branch_pool: BasicConv2d::square(cin, pool_features, 1, 1, 0, d),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self.branch5x5_2.forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone())));
        let bp = self.branch_pool.forward(avg3(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

impl<B: Backend> VisitParams<B> for InceptionA<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, p: &str, v: &mut V) {
        self.branch1x1.visit_params(&join(p, "branch1x1"), v);
        self.branch5x5_1.visit_params(&join(p, "branch5x5_1"), v);
        self.branch5x5_2.visit_params(&join(p, "branch5x5_2"), v);
        self.branch3x3dbl_1.visit_params(&join(p, "branch3x3dbl_1"), v);
        self.branch3x3dbl_2.visit_params(&join(p, "branch3x3dbl_2"), v);
        self.branch3x3dbl_3.visit_params(&join(p, "branch3x3dbl_3"), v);
        self.branch_pool.visit_params(&join(p, "branch_pool"), v);
    }
}

/// `Mixed_6a`: 35×35 → 17×17, output `384 + 96 + Cin` channels.
#[derive(Module, Debug)]
pub struct InceptionB<B: Backend> {
    branch3x3: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
}

impl<B: Backend> InceptionB<B> {
    pub fn new(cin: usize, d: &B::Device) -> Self {
        Self {
            branch3x3: BasicConv2d::square(cin, 384, 3, 2, 0, d),
            branch3x3dbl_1: BasicConv2d::square(cin, 64, 1, 1, 0, d),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, d),
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 2, 0, d),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone())));
        Tensor::cat(vec![b3, bd, max3s2(x)], 1)
    }
}

impl<B: Backend> VisitParams<B> for InceptionB<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, p: &str, v: &mut V) {
        self.branch3x3.visit_params(&join(p, "branch3x3"), v);
        self.branch3x3dbl_1.visit_params(&join(p, "branch3x3dbl_1"), v);
        self.branch3x3dbl_2.visit_params(&join(p, "branch3x3dbl_2"), v);
        self.branch3x3dbl_3.visit_params(&join(p, "branch3x3dbl_3"), v);
    }
}

/// `Mixed_6b..6e` (17×17, factorised 7×7): output 768 channels.
#[derive(Module, Debug)]
pub struct InceptionC<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch7x7_1: BasicConv2d<B>,
    branch7x7_2: BasicConv2d<B>,
    branch7x7_3: BasicConv2d<B>,
    branch7x7dbl_1: BasicConv2d<B>,
    branch7x7dbl_2: BasicConv2d<B>,
    branch7x7dbl_3: BasicConv2d<B>,
    branch7x7dbl_4: BasicConv2d<B>,
    branch7x7dbl_5: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionC<B> {
    pub fn new(cin: usize, c7: usize, d: &B::Device) -> Self {
        let row = |i, o| BasicConv2d::new(i, o, [1, 7], 1, [0, 3], d);
        let col = |i, o| BasicConv2d::new(i, o, [7, 1], 1, [3, 0], d);
        Self {
            branch1x1: BasicConv2d::square(cin, 192, 1, 1, 0, d),
            branch7x7_1: BasicConv2d::square(cin, c7, 1, 1, 0, d),
            branch7x7_2: row(c7, c7),
            branch7x7_3: col(c7, 192),
            branch7x7dbl_1: BasicConv2d::square(cin, c7, 1, 1, 0, d),
            branch7x7dbl_2: col(c7, c7),
            branch7x7dbl_3: row(c7, c7),
            branch7x7dbl_4: col(c7, c7),
            branch7x7dbl_5: row(c7, 192),
            branch_pool: BasicConv2d::square(cin, 192, 1, 1, 0, d),
        }
    }

    /// Returns the block output and the `branch1x1` activation (after BN and ReLU), which for
    /// `Mixed_6d` is TF's `mixed_6/conv`, the source of the sFID spatial features.
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = self.branch7x7_3.forward(self.branch7x7_2.forward(self.branch7x7_1.forward(x.clone())));
        let mut bd = self.branch7x7dbl_1.forward(x.clone());
        for c in [&self.branch7x7dbl_2, &self.branch7x7dbl_3, &self.branch7x7dbl_4, &self.branch7x7dbl_5] {
            bd = c.forward(bd);
        }
        let bp = self.branch_pool.forward(avg3(x));
        (Tensor::cat(vec![b1.clone(), b7, bd, bp], 1), b1)
    }
}

impl<B: Backend> VisitParams<B> for InceptionC<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, p: &str, v: &mut V) {
        self.branch1x1.visit_params(&join(p, "branch1x1"), v);
        self.branch7x7_1.visit_params(&join(p, "branch7x7_1"), v);
        self.branch7x7_2.visit_params(&join(p, "branch7x7_2"), v);
        self.branch7x7_3.visit_params(&join(p, "branch7x7_3"), v);
        self.branch7x7dbl_1.visit_params(&join(p, "branch7x7dbl_1"), v);
        self.branch7x7dbl_2.visit_params(&join(p, "branch7x7dbl_2"), v);
        self.branch7x7dbl_3.visit_params(&join(p, "branch7x7dbl_3"), v);
        self.branch7x7dbl_4.visit_params(&join(p, "branch7x7dbl_4"), v);
        self.branch7x7dbl_5.visit_params(&join(p, "branch7x7dbl_5"), v);
        self.branch_pool.visit_params(&join(p, "branch_pool"), v);
    }
}

/// `Mixed_7a`: 17×17 → 8×8, output `320 + 192 + Cin` channels.
#[derive(Module, Debug)]
pub struct InceptionD<B: Backend> {
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2: BasicConv2d<B>,
    branch7x7x3_1: BasicConv2d<B>,
    branch7x7x3_2: BasicConv2d<B>,
    branch7x7x3_3: BasicConv2d<B>,
    branch7x7x3_4: BasicConv2d<B>,
}

impl<B: Backend> InceptionD<B> {
    pub fn new(cin: usize, d: &B::Device) -> Self {
        Self {
            branch3x3_1: BasicConv2d::square(cin, 192, 1, 1, 0, d),
            branch3x3_2: BasicConv2d::square(192, 320, 3, 2, 0, d),
            branch7x7x3_1: BasicConv2d::square(cin, 192, 1, 1, 0, d),
            branch7x7x3_2: BasicConv2d::new(192, 192, [1, 7], 1, [0, 3], d),
            branch7x7x3_3: BasicConv2d::new(192, 192, [7, 1], 1, [3, 0], d),
            branch7x7x3_4: BasicConv2d::square(192, 192, 3, 2, 0, d),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3_2.forward(self.branch3x3_1.forward(x.clone()));
        let mut b7 = self.branch7x7x3_1.forward(x.clone());
        for c in [&self.branch7x7x3_2, &self.branch7x7x3_3, &self.branch7x7x3_4] {
            b7 = c.forward(b7);
        }
        Tensor::cat(vec![b3, b7, max3s2(x)], 1)
    }
}

impl<B: Backend> VisitParams<B> for InceptionD<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, p: &str, v: &mut V) {
        self.branch3x3_1.visit_params(&join(p, "branch3x3_1"), v);
        self.branch3x3_2.visit_params(&join(p, "branch3x3_2"), v);
        self.branch7x7x3_1.visit_params(&join(p, "branch7x7x3_1"), v);
        self.branch7x7x3_2.visit_params(&join(p, "branch7x7x3_2"), v);
        self.branch7x7x3_3.visit_params(&join(p, "branch7x7x3_3"), v);
        self.branch7x7x3_4.visit_params(&join(p, "branch7x7x3_4"), v);
    }
}

/// `Mixed_7b` (`max_pool = false`, FIDInceptionE_1) and `Mixed_7c` (`max_pool = true`,
/// FIDInceptionE_2), 8×8: output 2048 channels.
#[derive(Module, Debug)]
pub struct InceptionE<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2a: BasicConv2d<B>,
    branch3x3_2b: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3a: BasicConv2d<B>,
    branch3x3dbl_3b: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
    max_pool: bool,
}

impl<B: Backend> InceptionE<B> {
    pub fn new(cin: usize, max_pool: bool, d: &B::Device) -> Self {
        Self {
            branch1x1: BasicConv2d::square(cin, 320, 1, 1, 0, d),
            branch3x3_1: BasicConv2d::square(cin, 384, 1, 1, 0, d),
            branch3x3_2a: BasicConv2d::new(384, 384, [1, 3], 1, [0, 1], d),
            branch3x3_2b: BasicConv2d::new(384, 384, [3, 1], 1, [1, 0], d),
            branch3x3dbl_1: BasicConv2d::square(cin, 448, 1, 1, 0, d),
            branch3x3dbl_2: BasicConv2d::square(448, 384, 3, 1, 1, d),
            branch3x3dbl_3a: BasicConv2d::new(384, 384, [1, 3], 1, [0, 1], d),
            branch3x3dbl_3b: BasicConv2d::new(384, 384, [3, 1], 1, [1, 0], d),
            branch_pool: BasicConv2d::square(cin, 192, 1, 1, 0, d),
            max_pool,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let t = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(vec![self.branch3x3_2a.forward(t.clone()), self.branch3x3_2b.forward(t)], 1);
        let t = self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(vec![self.branch3x3dbl_3a.forward(t.clone()), self.branch3x3dbl_3b.forward(t)], 1);
        let pooled = if self.max_pool { max_pool2d(x, [3, 3], [1, 1], [1, 1]) } else { avg3(x) };
        let bp = self.branch_pool.forward(pooled);
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }
}

impl<B: Backend> VisitParams<B> for InceptionE<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, p: &str, v: &mut V) {
        self.branch1x1.visit_params(&join(p, "branch1x1"), v);
        self.branch3x3_1.visit_params(&join(p, "branch3x3_1"), v);
        self.branch3x3_2a.visit_params(&join(p, "branch3x3_2a"), v);
        self.branch3x3_2b.visit_params(&join(p, "branch3x3_2b"), v);
        self.branch3x3dbl_1.visit_params(&join(p, "branch3x3dbl_1"), v);
        self.branch3x3dbl_2.visit_params(&join(p, "branch3x3dbl_2"), v);
        self.branch3x3dbl_3a.visit_params(&join(p, "branch3x3dbl_3a"), v);
        self.branch3x3dbl_3b.visit_params(&join(p, "branch3x3dbl_3b"), v);
        self.branch_pool.visit_params(&join(p, "branch_pool"), v);
    }
}
