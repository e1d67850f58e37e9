//! The reference's training initialisation (DiT `initialize_weights`, spec §2.6), set field by
//! field: Xavier-uniform Linear weights with zero biases; `N(0, 0.02²)` label table and
//! timestep-MLP weights; zero adaLN modulations and final linear, so the untrained network
//! outputs exactly 0. `pos_embed` keeps its sin-cos values; q/k norms keep weight 1, bias 0.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Distribution, Tensor};

use crate::model::LatentTransformer;

fn replace<B: Backend, const D: usize>(param: &mut Param<Tensor<B, D>>, value: Tensor<B, D>) {
    let grad = param.is_require_grad();
    *param = Param::initialized(param.id, value).set_require_grad(grad);
}

fn zero_bias<B: Backend>(layer: &mut Linear<B>, device: &B::Device) {
    if let Some(bias) = layer.bias.as_mut() {
        let shape = bias.shape();
        replace(bias, Tensor::zeros(shape, device));
    }
}

/// `xavier_uniform_` on the weight (bound `√(6 / (fan_in + fan_out))`), zero bias.
fn xavier<B: Backend>(layer: &mut Linear<B>, device: &B::Device) {
    let [fan_in, fan_out] = layer.weight.dims();
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let shape = layer.weight.shape();
    replace(&mut layer.weight, Tensor::random(shape, Distribution::Uniform(-bound, bound), device));
    zero_bias(layer, device);
}

/// `N(0, 0.02²)` weight, zero bias.
fn normal_002<B: Backend>(layer: &mut Linear<B>, device: &B::Device) {
    let shape = layer.weight.shape();
    replace(&mut layer.weight, Tensor::random(shape, Distribution::Normal(0.0, 0.02), device));
    zero_bias(layer, device);
}

fn zeros<B: Backend>(layer: &mut Linear<B>, device: &B::Device) {
    let shape = layer.weight.shape();
    replace(&mut layer.weight, Tensor::zeros(shape, device));
    zero_bias(layer, device);
}

impl<B: Backend> LatentTransformer<B> {
    /// Sets the reference's training initialisation (draws from the backend's generator).
    pub fn init_for_training(&mut self, device: &B::Device) {
        xavier(&mut self.x_embedder, device);
        let shape = self.y_embedder.table.shape();
        replace(&mut self.y_embedder.table, Tensor::random(shape, Distribution::Normal(0.0, 0.02), device));
        normal_002(&mut self.t_embedder.mlp0, device);
        normal_002(&mut self.t_embedder.mlp2, device);
        for block in &mut self.blocks {
            xavier(&mut block.attn.qkv, device);
            xavier(&mut block.attn.proj, device);
            xavier(&mut block.mlp.fc1, device);
            xavier(&mut block.mlp.fc2, device);
            zeros(&mut block.modulation, device);
        }
        zeros(&mut self.final_layer.modulation, device);
        zeros(&mut self.final_layer.linear, device);
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Int, Tensor};
    use maetok_nn::io::{ParamVisitor, VisitParams};

    use crate::LatentTransformerConfig;

    type B = NdArray<f32>;

    /// Counts parameter values and remembers which keys hold only zeros.
    #[derive(Default)]
    struct Census {
        values: usize,
        zero_keys: Vec<String>,
    }
    impl ParamVisitor<B> for Census {
        fn param<const D: usize>(&mut self, key: &str, param: &mut burn::module::Param<Tensor<B, D>>) {
            let v = param.val();
            self.values += v.shape().num_elements();
            if v.abs().max().into_scalar() == 0.0 {
                self.zero_keys.push(key.to_string());
            }
        }
        fn param_transposed(&mut self, key: &str, param: &mut burn::module::Param<Tensor<B, 2>>) {
            self.param(key, param);
        }
        fn buffer(&mut self, _key: &str, _shape: &[usize], _values: &[f32]) {}
    }

    #[test]
    fn every_parameter_is_visited_and_the_untrained_output_is_zero() {
        use burn::module::Module;
        let d = Default::default();
        for (learn_sigma, qk_norm) in [(None, Some(true)), (Some(true), None)] {
            let mut cfg = LatentTransformerConfig::new(2, 32, 4, 6, 4);
            (cfg.learn_sigma, cfg.qk_norm, cfg.num_classes) = (learn_sigma, qk_norm, 5);
            let mut m = cfg.init::<B>(&d);
            m.init_for_training(&d);
            let mut census = Census::default();
            m.visit_params("", &mut census);
            // The walk that export, EMA and clipping use covers every parameter of the module.
            assert_eq!(census.values, m.num_params(), "visited values vs num_params");
            for key in [
                "final_layer.linear.weight",
                "final_layer.adaLN_modulation.1.weight",
                "blocks.1.adaLN_modulation.1.bias",
                "x_embedder.bias",
            ] {
                assert!(census.zero_keys.iter().any(|k| k == key), "{key} should start at zero");
            }
            for key in ["x_embedder.weight", "y_embedder.embedding_table.weight", "t_embedder.mlp.0.weight", "blocks.0.attn.qkv.weight"] {
                assert!(!census.zero_keys.iter().any(|k| k == key), "{key} should be random");
            }
            let x = Tensor::<B, 3>::ones([2, 6, 4], &d);
            let out = m.forward(x, Tensor::ones([2], &d), Tensor::<B, 1, Int>::zeros([2], &d));
            assert_eq!(out.dims(), [2, 6, cfg.out_channels()]);
            assert_eq!(out.abs().max().into_scalar(), 0.0);
        }
    }
}
