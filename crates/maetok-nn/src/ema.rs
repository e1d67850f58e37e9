//! Exponential moving average of a module's parameters: `ema ← decay·ema + (1 − decay)·param`,
//! matched by state-dict key (so the online model may live on an autodiff backend and the EMA
//! copy on the inner backend). One pass per parameter, no copies ([`fused::ema_mix`]).

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

use crate::fused;
use crate::io::{ParamVisitor, VisitParams};

/// Collects every parameter by key, as it is (no copy: the primitive shares the buffer).
struct Collect<B: Backend> {
    tensors: HashMap<String, TensorPrimitive<B>>,
}

impl<B: Backend> ParamVisitor<B> for Collect<B> {
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
        self.tensors.insert(key.to_string(), param.val().into_primitive());
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _key: &str, _shape: &[usize], _values: &[f32]) {}
}

struct Update<'a, B: Backend> {
    src: &'a HashMap<String, TensorPrimitive<B>>,
    decay: f64,
    skip: &'a [&'a str],
}

impl<B: Backend> ParamVisitor<B> for Update<'_, B> {
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
        if self.skip.contains(&key) {
            return;
        }
        let src = self.src.get(key).unwrap_or_else(|| panic!("EMA: the online model has no parameter '{key}'"));
        let ema = param.val();
        // The same module type on both sides: same key, same rank and shape.
        let src = Tensor::<B, D>::from_primitive(src.clone());
        assert_eq!(src.shape(), ema.shape(), "EMA: parameter '{key}' differs in shape between the online model and the EMA");
        let new = fused::ema_mix(ema, src, self.decay);
        *param = Param::initialized(param.id, new.detach());
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _key: &str, _shape: &[usize], _values: &[f32]) {}
}

/// Moves `ema` towards `online`: `ema ← decay·ema + (1 − decay)·online` for every parameter
/// except the keys in `skip` (e.g. frozen tables that must stay exact). `decay = 0` copies.
pub fn ema_update<B: Backend, M: VisitParams<B>>(ema: &mut M, online: &mut M, decay: f64, skip: &[&str]) {
    let mut c = Collect { tensors: HashMap::new() };
    online.visit_params("", &mut c);
    ema.visit_params("", &mut Update { src: &c.tensors, decay, skip });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_norm::LayerNorm;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn norm(w: [f32; 3], b: [f32; 3]) -> LayerNorm<B> {
        let d = Default::default();
        let mut m: LayerNorm<B> = crate::layer_norm::LayerNormConfig::new(3).init(&d);
        m.weight = Some(Param::from_tensor(Tensor::from_data(TensorData::new(w.to_vec(), [3]), &d)));
        m.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(b.to_vec(), [3]), &d)));
        m
    }

    fn values(p: &Option<Param<Tensor<B, 1>>>) -> Vec<f32> {
        p.as_ref().unwrap().val().into_data().to_vec().unwrap()
    }

    #[test]
    fn ema_moves_every_parameter_by_the_decay_and_skips_what_it_is_told() {
        let mut online = norm([3.0, 2.0, -1.0], [10.0, 20.0, 30.0]);
        let mut ema = norm([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]);
        ema_update(&mut ema, &mut online, 0.75, &[]);
        assert_eq!(values(&ema.weight), vec![0.75 * 1.0 + 0.25 * 3.0, 2.0, 0.75 * 3.0 - 0.25]);
        assert_eq!(values(&ema.bias), vec![2.5, 5.0, 7.5]);
        // A skipped key (a LayerNorm walked with an empty prefix names its bias ".bias") stays.
        let mut ema2 = norm([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]);
        ema_update(&mut ema2, &mut online, 0.5, &[".bias"]);
        assert_eq!(values(&ema2.bias), vec![0.0, 0.0, 0.0]);
        assert_eq!(values(&ema2.weight), vec![2.0, 2.0, 1.0]);
        // decay 0 copies.
        ema_update(&mut ema2, &mut online, 0.0, &[]);
        assert_eq!((values(&ema2.weight), values(&ema2.bias)), (vec![3.0, 2.0, -1.0], vec![10.0, 20.0, 30.0]));
    }
}
