//! Every kernel module the book builds, compiled by NVRTC for a Hopper card (`sm_90a`) with no GPU
//! needed: a kernel source that does not compile fails here, on any machine that has NVRTC (the CUDA
//! toolkit, or the `nvidia-cuda-nvrtc` and `nvidia-cuda-runtime` wheels that `.ci/run` fetches), instead
//! of on the GPU machine. Skipped with a printed reason where NVRTC cannot be loaded; with
//! `REQUIRE_NVRTC=1` that is a failure.

use modern_attention::gpu::{compile_module, cuda_include_dir, module_configs, nvrtc_present};
use rayon::prelude::*;

#[test]
fn every_kernel_module_compiles_for_hopper() {
    if !nvrtc_present() {
        assert!(
            std::env::var_os("REQUIRE_NVRTC").is_none(),
            "REQUIRE_NVRTC is set, but NVRTC (libnvrtc) cannot be loaded"
        );
        eprintln!("skipped: NVRTC (libnvrtc) cannot be loaded here, so no kernel was compiled");
        return;
    }
    let headers = cuda_include_dir();
    if !headers.join("cuda_fp16.h").exists() {
        assert!(
            std::env::var_os("REQUIRE_NVRTC").is_none(),
            "REQUIRE_NVRTC is set, but no cuda_fp16.h in {} (set CUDA_HOME)",
            headers.display()
        );
        eprintln!(
            "skipped: NVRTC loads, but {} has no cuda_fp16.h (set CUDA_HOME to a CUDA toolkit)",
            headers.display()
        );
        return;
    }
    let configs = module_configs();
    let started = std::time::Instant::now();
    let failures: Vec<String> = configs
        .par_iter()
        .filter_map(|(file, defines)| {
            let key = defines
                .iter()
                .fold(file.to_string(), |k, (n, v)| format!("{k} -D{n}={v}"));
            compile_module(file, defines, "sm_90a", &key)
                .err()
                .map(|e| format!("{key}:\n{e}"))
        })
        .collect();
    eprintln!(
        "{} kernel modules compiled for sm_90a in {:.1} s, {} failed",
        configs.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
