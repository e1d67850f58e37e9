//! Optional recording of intermediate tensors (for parity tests and debugging).

use burn::tensor::{backend::Backend, Tensor};

/// Named intermediates recorded during a forward pass when enabled. All are rank 3
/// (`[B, N, D]` token tensors, or `[heads, N, hd/2]` RoPE tables).
pub struct Trace<B: Backend> {
    enabled: bool,
    pub tensors: Vec<(String, Tensor<B, 3>)>,
}

impl<B: Backend> Trace<B> {
    /// A trace that records nothing.
    pub fn off() -> Self {
        Self { enabled: false, tensors: Vec::new() }
    }
    /// A trace that records every intermediate.
    pub fn on() -> Self {
        Self { enabled: true, tensors: Vec::new() }
    }
    /// Records `name` (the closure runs only when enabled).
    pub fn record(&mut self, name: &str, f: impl FnOnce() -> Tensor<B, 3>) {
        if self.enabled {
            self.tensors.push((name.to_string(), f()));
        }
    }
    /// The tensor recorded under `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor<B, 3>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}
