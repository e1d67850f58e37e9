//! The tokenizer's optimiser (spec §5.6): AdamW (the reference: β = (0.9, 0.95)), ε = 1e-8, on two parameter
//! groups as the reference yaml intends — weight decay on every tensor of two or more dimensions
//! that is not a bias, none on vectors and biases — after clipping the global gradient norm.
//! `weight_decay = 0` is the plain Adam that the public script actually runs (its `optim: adamw`
//! key is never read, spec §8.3 item 18).
//!
//! Burn's optimiser adaptor takes one weight decay, so each group has its own AdamW ([`FusedAdamW`]) and each steps the
//! parameters whose gradients it is given (the others are left untouched).

use burn::module::{AutodiffModule, Param};
use burn::optim::{adaptor::OptimizerAdaptor, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use maetok_nn::io::{ParamVisitor, VisitParams};
use std::path::Path;

use crate::adamw::FusedAdamW;
use crate::grad_clip::{clip_gradients, module_gradients};

/// Moves the gradients of vectors and biases from `all` into `no_decay`.
struct Split<'a> {
    all: &'a mut GradientsParams,
    no_decay: GradientsParams,
}

impl<B: AutodiffBackend> ParamVisitor<B> for Split<'_> {
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
        if D <= 1 || key.ends_with("bias") {
            if let Some(g) = self.all.remove::<B::InnerBackend, D>(param.id) {
                self.no_decay.register(param.id, g);
            }
        }
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        ParamVisitor::<B>::param(self, key, param);
    }
    fn buffer(&mut self, _: &str, _: &[usize], _: &[f32]) {}
}

/// AdamW over the two weight-decay groups of a module `M`.
pub struct GroupedAdamW<B: AutodiffBackend, M: AutodiffModule<B>> {
    decay: OptimizerAdaptor<FusedAdamW, M, B>,
    no_decay: OptimizerAdaptor<FusedAdamW, M, B>,
    /// Global gradient-norm clip (the reference: 1.0).
    pub clip: Option<f64>,
}

fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(weight_decay: f64, betas: [f64; 2]) -> OptimizerAdaptor<FusedAdamW, M, B> {
    FusedAdamW { beta_1: betas[0] as f32, beta_2: betas[1] as f32, epsilon: 1e-8, weight_decay: weight_decay as f32 }.init()
}

impl<B: AutodiffBackend, M: AutodiffModule<B> + VisitParams<B>> GroupedAdamW<B, M> {
    /// AdamW with `betas` (the reference: 0.9, 0.95) and ε = 1e-8.
    pub fn new(weight_decay: f64, betas: [f64; 2], clip: Option<f64>) -> Self {
        Self { decay: adamw(weight_decay, betas), no_decay: adamw(0.0, betas), clip }
    }

    /// Clips `grads` (the module's parameters only) to the global norm and steps both groups at
    /// rate `lr`; returns the module and the gradient norm before clipping.
    pub fn step(&mut self, lr: f64, mut module: M, grads: &mut B::Gradients) -> (M, f64) {
        let grads = module_gradients(&mut module, grads);
        self.step_gradients(lr, module, grads)
    }

    /// [`GroupedAdamW::step`] on the module's gradients already collected (e.g. averaged over the
    /// peers of a data-parallel run, [`crate::parallel::all_reduce_grads`]).
    pub fn step_gradients(&mut self, lr: f64, mut module: M, grads: GradientsParams) -> (M, f64) {
        let (mut all, norm) = clip_gradients(&mut module, grads, self.clip);
        let mut split = Split { all: &mut all, no_decay: GradientsParams::new() };
        module.visit_params("", &mut split);
        let no_decay = split.no_decay;
        let module = self.decay.step(lr, module, all);
        (self.no_decay.step(lr, module, no_decay), norm)
    }

    /// A copy with the same state (the moments move to the parameters' device at their next
    /// update).
    pub fn fork(&self) -> Self {
        Self { decay: self.decay.clone(), no_decay: self.no_decay.clone(), clip: self.clip }
    }

    /// Writes the two optimiser states as `<stem>_decay.mpk` and `<stem>_no_decay.mpk`.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(), RecorderError> {
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        rec.record(self.decay.to_record(), dir.join(format!("{stem}_decay")))?;
        rec.record(self.no_decay.to_record(), dir.join(format!("{stem}_no_decay")))
    }

    /// Loads what [`GroupedAdamW::save`] wrote (the module's parameter ids must be the saved ones,
    /// as when the module itself is loaded from its Burn record).
    pub fn load(mut self, dir: &Path, stem: &str, device: &B::Device) -> Result<Self, RecorderError> {
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        self.decay = self.decay.load_record(rec.load(dir.join(format!("{stem}_decay")), device)?);
        self.no_decay = self.no_decay.load_record(rec.load(dir.join(format!("{stem}_no_decay")), device)?);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;
    use maetok_nn::io::join;

    type A = Autodiff<NdArray<f32>>;

    #[derive(burn::module::Module, Debug)]
    struct Net<B: burn::tensor::backend::Backend> {
        fc: Linear<B>,
    }

    impl<B: burn::tensor::backend::Backend> VisitParams<B> for Net<B> {
        fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
            v.linear(&join(prefix, "fc"), &mut self.fc);
        }
    }

    /// With zero gradients AdamW only decays: the weight shrinks by `1 − lr·wd`, the bias (no
    /// decay group) stays put.
    #[test]
    fn decays_weights_but_not_biases() {
        let d = Default::default();
        let net = Net::<A> { fc: LinearConfig::new(2, 2).init(&d) };
        let w0: Vec<f32> = net.fc.weight.val().into_data().to_vec().unwrap();
        let b0: Vec<f32> = net.fc.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
        let x = Tensor::<A, 2>::from_data(TensorData::new(vec![0f32; 2], [1, 2]), &d);
        let loss = net.fc.forward(x).sum() * 0.0;
        let mut grads = loss.backward();
        let mut opt = GroupedAdamW::<A, Net<A>>::new(0.1, [0.9, 0.95], Some(1.0));
        let (net, norm) = opt.step(0.5, net, &mut grads);
        assert_eq!(norm, 0.0);
        let w1: Vec<f32> = net.fc.weight.val().into_data().to_vec().unwrap();
        let b1: Vec<f32> = net.fc.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
        for (a, b) in w0.iter().zip(&w1) {
            assert!((a * 0.95 - b).abs() < 1e-7, "{a} → {b}");
        }
        assert_eq!(b0, b1);
    }
}
