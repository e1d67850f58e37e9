//! Exponential moving average of a module's parameters: `ema ← decay·ema + (1 − decay)·param`,
//! matched by state-dict key (so the online model may live on an autodiff backend and the EMA
//! copy on the inner backend).

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor};

use crate::io::{ParamVisitor, VisitParams};

/// Collects every parameter, flattened, by key.
struct Collect<B: Backend> {
    tensors: HashMap<String, Tensor<B, 1>>,
}

impl<B: Backend> ParamVisitor<B> for Collect<B> {
    fn param<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>) {
        let v = param.val();
        let n = v.shape().num_elements();
        self.tensors.insert(key.to_string(), v.reshape([n]));
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _key: &str, _shape: &[usize], _values: &[f32]) {}
}

struct Update<'a, B: Backend> {
    src: &'a HashMap<String, Tensor<B, 1>>,
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
        let new = ema.clone() * self.decay + src.clone().reshape(ema.shape()) * (1.0 - self.decay);
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
