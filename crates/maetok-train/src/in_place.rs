//! Updating a module behind `&mut` with a function that consumes it, as Burn's optimisers do.
//!
//! Handing the optimiser a clone instead (`optim.step(lr, self.model.clone(), grads)`) keeps a
//! second reference to every parameter buffer until the step returns, so the in-place AdamW
//! pass first copies each parameter (a whole model of extra memory, and a single-threaded copy
//! that took ~10 % of a MAETok-B-128 training step on the CPU).

use std::{mem, ptr};

/// Replaces `*slot` with the first value `f(old)` returns and gives back the second.
///
/// If `f` panics the process aborts once the panic message is printed: the slot has no value
/// then, and unwinding past it would drop it twice.
pub fn update<T, R>(slot: &mut T, f: impl FnOnce(T) -> (T, R)) -> R {
    struct AbortOnUnwind;
    impl Drop for AbortOnUnwind {
        fn drop(&mut self) {
            std::process::abort();
        }
    }
    let guard = AbortOnUnwind;
    // SAFETY: the value is moved out and a new one written back before `slot` can be used
    // again; if `f` unwinds instead, `guard` aborts the process before anything sees the
    // moved-from slot.
    unsafe {
        let old = ptr::read(slot);
        let (new, out) = f(old);
        ptr::write(slot, new);
        mem::forget(guard);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The closure receives the only reference (the point of this module) and its result lands
    /// in the slot.
    #[test]
    fn the_update_owns_the_value_alone() {
        let mut slot = Arc::new(vec![1.0f32, 2.0]);
        let n = update(&mut slot, |mut v| {
            Arc::get_mut(&mut v).expect("unique").push(3.0);
            (v, 7)
        });
        assert_eq!((n, slot.as_slice()), (7, &[1.0, 2.0, 3.0][..]));
    }
}
