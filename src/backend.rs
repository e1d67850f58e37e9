//! Backend selection for the example programs (`--backend ndarray|flex|wgpu|cuda`).
//!
//! Model code is generic over `B: Backend`; a task implements [`Task`] (inference) or
//! [`TrainTask`] (needs autodiff) and [`run`] / [`run_train`] instantiate it on the chosen backend.

use anyhow::{bail, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};

/// Backends this binary was built with.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// The process set-up every CLI makes before any model work: glibc's allocator keeps freed
/// activation memory for the next pass ([`maetok_nn::fused::retain_freed_memory`]: no page
/// faults on every forward) and, when `threads` is given, [`set_threads`].
pub fn configure_cpu(threads: Option<usize>) -> Result<()> {
    maetok_nn::fused::retain_freed_memory();
    match threads {
        Some(n) => set_threads(n),
        None => Ok(()),
    }
}

/// Sets the number of CPU threads that every parallel part of this process uses: rayon's global
/// pool (our fused kernels and their GEMMs, Flex, NdArray's parallel iterators), the
/// `matrixmultiply` workers of Burn's own NdArray matmul (`MATMUL_NUM_THREADS`, read on its first
/// product) and, in a build with `--features openblas`, OpenBLAS's workers. Call it once, before
/// any model work; without it each uses one thread per core.
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 || n > 4096 {
        bail!("--threads {n}: give between 1 and 4096 threads");
    }
    // matrixmultiply sizes its pool from this variable when it first multiplies. Set it before
    // rayon's workers start, so that no other thread of ours exists while the environment changes.
    std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("--threads {n}: the thread pool was already started ({e}); set it before any model work"))?;
    #[cfg(feature = "openblas")]
    {
        extern "C" {
            fn openblas_set_num_threads(n: std::ffi::c_int);
        }
        // SAFETY: OpenBLAS's documented setter; it only resizes its worker pool.
        unsafe { openblas_set_num_threads(n as std::ffi::c_int) };
    }
    Ok(())
}

/// Work that runs on any backend.
pub trait Task {
    type Output;
    fn run<B: Backend>(self, device: B::Device, backend_name: &str) -> Result<Self::Output>;
}

/// Work that needs gradients.
pub trait TrainTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device, backend_name: &str) -> Result<Self::Output>;
}

/// Whether `name` is a backend this binary can run: an error naming it when it is unknown or
/// not compiled in (the messages `run` and `run_train` give).
pub fn check_available(name: &str) -> Result<()> {
    match name {
        "ndarray" | "flex" | "wgpu" | "cuda" if available().contains(&name) => Ok(()),
        "ndarray" | "flex" | "wgpu" | "cuda" => Err(not_built(name)),
        other => bail!("unknown backend '{other}'; choose one of: ndarray, flex, wgpu, cuda"),
    }
}

fn not_built(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "backend '{name}' is not compiled into this binary (available: {}); rebuild with `--features {name}`",
        available().join(", ")
    )
}

#[cfg(feature = "cuda")]
fn check_cuda() -> Result<()> {
    // cubecl-cuda loads the driver at run time and panics without it: check first.
    for lib in ["libcuda.so.1", "libcuda.so", "nvcuda.dll"] {
        // SAFETY: loading the CUDA driver library runs only its initialisers.
        if let Ok(l) = unsafe { libloading::Library::new(lib) } {
            // Keep it loaded: unloading libcuda (dlclose) after its initialisers started driver
            // threads is not something the driver supports, and cubecl loads it again anyway.
            std::mem::forget(l);
            return Ok(());
        }
    }
    bail!("backend 'cuda' selected but no CUDA driver (libcuda.so.1) was found on this machine")
}

/// Runs `task` on the backend called `name`.
pub fn run<T: Task>(name: &str, task: T) -> Result<T::Output> {
    match name {
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            return task.run::<burn::backend::NdArray<f32>>(Default::default(), name);
            #[cfg(not(feature = "ndarray"))]
            return Err(not_built(name));
        }
        "flex" => {
            #[cfg(feature = "flex")]
            return task.run::<burn::backend::Flex>(Default::default(), name);
            #[cfg(not(feature = "flex"))]
            return Err(not_built(name));
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return task.run::<burn::backend::Wgpu>(Default::default(), name);
            #[cfg(not(feature = "wgpu"))]
            return Err(not_built(name));
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                check_cuda()?;
                return task.run::<burn::backend::Cuda>(Default::default(), name);
            }
            #[cfg(not(feature = "cuda"))]
            return Err(not_built(name));
        }
        other => bail!("unknown backend '{other}'; choose one of: ndarray, flex, wgpu, cuda"),
    }
}

/// Runs `task` on the autodiff version of the backend called `name`.
pub fn run_train<T: TrainTask>(name: &str, task: T) -> Result<T::Output> {
    use burn::backend::Autodiff;
    match name {
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            return task.run::<Autodiff<burn::backend::NdArray<f32>>>(Default::default(), name);
            #[cfg(not(feature = "ndarray"))]
            return Err(not_built(name));
        }
        "flex" => {
            #[cfg(feature = "flex")]
            return task.run::<Autodiff<burn::backend::Flex>>(Default::default(), name);
            #[cfg(not(feature = "flex"))]
            return Err(not_built(name));
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return task.run::<Autodiff<burn::backend::Wgpu>>(Default::default(), name);
            #[cfg(not(feature = "wgpu"))]
            return Err(not_built(name));
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                check_cuda()?;
                return task.run::<Autodiff<burn::backend::Cuda>>(Default::default(), name);
            }
            #[cfg(not(feature = "cuda"))]
            return Err(not_built(name));
        }
        other => bail!("unknown backend '{other}'; choose one of: ndarray, flex, wgpu, cuda"),
    }
}

/// Whether `B` runs on CUDA (its name, as Burn reports it, says so): the trainers' dashboards
/// then show the GPUs' memory and use.
pub fn is_cuda<B: burn::tensor::backend::Backend>(device: &B::Device) -> bool {
    B::name(device).to_lowercase().contains("cuda")
}
