//! `--threads`: one setting for rayon's pool, matrixmultiply's workers and (with `--features
//! openblas`) OpenBLAS's (its own test binary, as it sets process-wide state once).

#[test]
fn threads_set_every_pool_once() {
    let err = maetok::backend::set_threads(0).unwrap_err().to_string();
    assert!(err.contains("--threads 0"), "{err}");
    maetok::backend::set_threads(1).unwrap();
    assert_eq!(rayon::current_num_threads(), 1);
    assert_eq!(std::env::var("MATMUL_NUM_THREADS").as_deref(), Ok("1"));
    #[cfg(feature = "openblas")]
    {
        extern "C" {
            fn openblas_get_num_threads() -> std::ffi::c_int;
        }
        // SAFETY: OpenBLAS's documented getter.
        assert_eq!(unsafe { openblas_get_num_threads() }, 1);
    }
    let again = maetok::backend::set_threads(2).unwrap_err().to_string();
    assert!(again.contains("already started"), "{again}");
}
