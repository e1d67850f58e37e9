//! Keeping freed activation memory for the next forward pass (glibc's `malloc`, Linux).
//!
//! A forward pass allocates and frees the same large buffers every call (activations of
//! `[B·N, 4·D]`, attention weights `[B, H, N, N]`). With glibc's defaults a freed buffer goes back
//! to the kernel (an `munmap`, or a trim of the heap's top), so the next pass takes a page fault
//! per 4 KiB and the kernel clears every page again: 2.1 M faults and ~10 % of a MAETok-B-128
//! encode at batch 4 on 2 cores (BENCHMARKS.md, session 17). [`retain_freed_memory`] makes
//! `malloc` serve buffers up to 32 MiB (glibc's ceiling for the setting) from its heap and never
//! trim it, so freed pages stay mapped and are reused. Peak resident memory does not change (the
//! same buffers are live at the peak); memory is not handed back to the system between passes.

/// Tells glibc's `malloc` to keep freed memory (see the module docs). Call it once at start-up,
/// before any model work; elsewhere than Linux/glibc it does nothing. Returns whether the
/// allocator took the settings.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc refuses thresholds above `HEAP_MAX_SIZE / 2` (32 MiB on 64-bit targets).
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        // SAFETY: `mallopt` only changes the allocator's tuning parameters; both values are in
        // the ranges glibc documents (it returns 0 and changes nothing otherwise).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    /// glibc takes both settings; allocating, freeing and allocating again still works.
    #[test]
    fn glibc_takes_the_settings() {
        let took = super::retain_freed_memory();
        assert_eq!(took, cfg!(all(target_os = "linux", target_env = "gnu")));
        let big = vec![1.0f32; 4 << 20];
        let sum: f32 = big.iter().sum();
        drop(big);
        let again = vec![0.0f32; 4 << 20];
        assert_eq!((sum, again.iter().sum::<f32>()), ((4 << 20) as f32, 0.0));
    }
}
