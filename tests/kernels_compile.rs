//! Every kernel module the book builds, compiled by NVRTC for a Hopper card (`sm_90a`) with no GPU
//! needed: a kernel source that does not compile fails here, on any machine that has NVRTC (the CUDA
//! toolkit, or the `nvidia-cuda-nvrtc` and `nvidia-cuda-runtime` wheels that `.ci/run` fetches), instead
//! of on the GPU machine. Skipped with a printed reason where NVRTC cannot be loaded; with
//! `REQUIRE_NVRTC=1` that is a failure.

use modern_attention::gpu::{
    compile_module, compile_module_cached, cuda_include_dir, module_configs, module_key,
    nvrtc_present,
};
use rayon::prelude::*;

/// Whether NVRTC and the toolkit's headers are here; without them a printed reason (a failure with
/// `REQUIRE_NVRTC=1`).
fn nvrtc_ready() -> bool {
    if !nvrtc_present() {
        assert!(
            std::env::var_os("REQUIRE_NVRTC").is_none(),
            "REQUIRE_NVRTC is set, but NVRTC (libnvrtc) cannot be loaded"
        );
        eprintln!("skipped: NVRTC (libnvrtc) cannot be loaded here, so no kernel was compiled");
        return false;
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
        return false;
    }
    true
}

#[test]
fn every_kernel_module_compiles_for_hopper() {
    if !nvrtc_ready() {
        return;
    }
    let configs = module_configs();
    let started = std::time::Instant::now();
    let failures: Vec<String> = configs
        .par_iter()
        .filter_map(|(file, defines)| {
            let key = module_key(file, defines);
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

/// Table 02.8 renders `measurements/ptxas/sm_90a.json`; where this machine's NVRTC is the version that
/// wrote it, every module in it is compiled again and ptxas must report the same registers, spills,
/// shared memory and code, so a kernel changed without regenerating the report fails here (regenerate
/// with `modern-attention kernels --json measurements/ptxas/sm_90a.json flash_fwd FA_BF16=0`).
#[test]
fn the_committed_ptxas_report_is_what_ptxas_says_now() {
    use modern_attention::gpu::{nvrtc_version, ptxas_report};
    use modern_attention::measure::ptxas::load_all;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements/ptxas");
    let files = load_all(&dir).expect("the committed reports parse");
    let Some(file) = files.iter().find(|f| f.arch == "sm_90a") else {
        eprintln!("skipped: no sm_90a report is committed");
        return;
    };
    let here = nvrtc_version();
    if here.as_deref() != Some(file.nvrtc.as_str())
        || !modern_attention::gpu::cuda_include_dir()
            .join("cuda_fp16.h")
            .exists()
    {
        eprintln!(
            "skipped: the report was written by NVRTC {}, this machine has {} (or no CUDA headers)",
            file.nvrtc,
            here.as_deref().unwrap_or("none")
        );
        return;
    }
    let stale: Vec<String> = file
        .modules
        .par_iter()
        .filter_map(|m| {
            let mut words = m.module.split_whitespace();
            let src = words.next().expect("a module names its file");
            let defines: Vec<(&str, i64)> = words
                .map(|w| {
                    let (name, value) = w
                        .strip_prefix("-D")
                        .and_then(|d| d.split_once('='))
                        .expect("-DNAME=VALUE");
                    (name, value.parse().expect("an integer define"))
                })
                .collect();
            match ptxas_report(src, &defines, "sm_90a") {
                Ok(r) if r.kernels == m.kernels && r.warnings == m.warnings => None,
                Ok(_) => Some(format!("{}: ptxas now reports otherwise", m.module)),
                Err(e) => Some(format!("{}: {e}", m.module)),
            }
        })
        .collect();
    assert!(
        stale.is_empty(),
        "measurements/ptxas/sm_90a.json is stale (regenerate it with `modern-attention kernels \
         --json measurements/ptxas/sm_90a.json flash_fwd FA_BF16=0`):\n{}",
        stale.join("\n")
    );
}

/// A module compiled through a PTX cache directory is written there once, read back the next time
/// (the same PTX, no compile), and another module's defines make another file.
#[test]
fn a_ptx_cache_keeps_one_file_per_module_and_gives_back_the_same_ptx() {
    if !nvrtc_ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ma-ptx-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (file, defines) = module_configs()
        .into_iter()
        .find(|(f, _)| *f == "tma.cu")
        .expect("the TMA check is a module of the book");
    let key = module_key(file, &defines);
    let first = compile_module_cached(file, &defines, "sm_90a", &key, Some(&dir)).unwrap();
    let files = || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files(), 1, "the first compile writes one file");
    // The file, not NVRTC, answers the second call: overwrite it and the marker comes back.
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let marked = format!("{}\n// read from the cache\n", first.to_src());
    std::fs::write(&path, &marked).unwrap();
    let second = compile_module_cached(file, &defines, "sm_90a", &key, Some(&dir)).unwrap();
    assert_eq!(second.to_src(), marked);
    let mut other = defines.clone();
    other.push(("MA_CACHE_TEST", 1));
    let key2 = module_key(file, &other);
    compile_module_cached(file, &other, "sm_90a", &key2, Some(&dir)).unwrap();
    assert_eq!(files(), 2, "other defines, another file");
    let _ = std::fs::remove_dir_all(&dir);
}
