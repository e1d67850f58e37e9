//! What every CLI does at start-up, done before a bench's first group so that the numbers are
//! the CLIs': glibc keeps freed activation memory (`maetok_nn::fused::retain_freed_memory`).

use criterion::Criterion;

/// A criterion target that measures nothing: the process set-up, as the first target of a group.
pub fn setup(_: &mut Criterion) {
    maetok::nn::fused::retain_freed_memory();
}
