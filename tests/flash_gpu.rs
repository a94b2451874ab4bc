//! Lab 02's checks: every GPU kernel version against the f64 reference on the edge grid.
//!
//! Skipped (with `skipped: no CUDA device` printed) where there is no CUDA driver or device; with
//! `REQUIRE_GPU=1` a missing device fails instead. Outputs are poisoned with NaN before every launch, so
//! an element a kernel forgets to write fails the check. The reference is computed from the f16 (or bf16)
//! inputs themselves; f16 outputs on unit-normal inputs must also pass the absolute bar `1e-3`.

use half::{bf16, f16};
use modern_attention::gpu::flash::{
    self, forward_with, lse_max_err, lse_ref64, v5_warps, v8_stage_choices, Buffers, GpuElement,
    Version,
};
use modern_attention::gpu::{Device, GpuError};
use modern_attention::minimodel::check::{attn_close, FP16_BAR};
use modern_attention::minimodel::numeric::{convert, DType};
use modern_attention::minimodel::reference::{attention_lowp, attention_ref64};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use rayon::prelude::*;

mod common;
use common::device;

/// The edge grid: lengths 1, 17, 64, 113, 1023, 2048 (square and Nq != Nk), and 4352 query rows over
/// 256 keys (long enough that v8 drops the O tile, whole key tiles: its `_u` and `_c` kernels), D in {32, 64, 128},
/// Hkv in {Hq, Hq/2, 1} and the four masks, combined so that every pair of (lengths, D) meets every mask
/// and the kv-head counts rotate.
fn edge_grid() -> Vec<(AttnShape, Mask)> {
    let lengths = [
        (1, 1),
        (17, 17),
        (64, 64),
        (113, 113),
        (1023, 1023),
        (2048, 2048),
        (17, 113),
        (113, 17),
        (1, 1023),
        (1023, 64),
        (4352, 256),
    ];
    let masks = [
        Mask::NONE,
        Mask::CAUSAL,
        Mask::sliding(48, false).unwrap(),
        Mask::sliding(100, true).unwrap(),
    ];
    let mut out = Vec::new();
    let mut rot = 0usize;
    for &(nq, nk) in &lengths {
        for d in [32, 64, 128] {
            for mask in masks {
                let hq = 4;
                let hkv = [4, 2, 1][rot % 3];
                rot += 1;
                let b = if nq.max(nk) >= 1023 { 1 } else { 2 };
                out.push((AttnShape::new(b, hq, hkv, nq, nk, d).unwrap(), mask));
            }
        }
    }
    out
}

struct Case<T> {
    shape: AttnShape,
    mask: Mask,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    ref64: Vec<f64>,
    lowp: Vec<f64>,
    lse64: Vec<f64>,
}

fn make_case<T: GpuElement>(shape: AttnShape, mask: Mask, seed: u64) -> Case<T> {
    make_case_stepped(shape, mask, seed, 0.0)
}

/// As `make_case`, with every query's first component set to 4 and key j's first component raised by
/// `step` once every 128 keys (the last full 128 keys and the rest share a level): each row's scores,
/// and so its running maximum, jump from one 128-key tile to the next, while the keys of one level
/// stay as spread as unit-normal ones (the softmax is not one-hot).
fn make_case_stepped<T: GpuElement>(shape: AttnShape, mask: Mask, seed: u64, step: f32) -> Case<T> {
    let mut rng = Rng::new(seed);
    let mut q32 = rng.normal_vec_f32(shape.q_len());
    let mut k32 = rng.normal_vec_f32(shape.kv_len());
    if step != 0.0 {
        let levels = (shape.nk / 128).max(1);
        for row in q32.chunks_mut(shape.d) {
            row[0] = 4.0;
        }
        for (i, row) in k32.chunks_mut(shape.d).enumerate() {
            let j = i % shape.nk; // (B, Hkv, Nk, D), row-major
            row[0] += step * (j / 128).min(levels - 1) as f32;
        }
    }
    let q: Vec<T> = convert(&q32);
    let k: Vec<T> = convert(&k32);
    let v: Vec<T> = convert(&rng.normal_vec_f32(shape.kv_len()));
    let ref64 = attention_ref64(&q, &k, &v, &shape, mask).unwrap();
    let lowp = attention_lowp(&q, &k, &v, &shape, mask, T::DTYPE).unwrap();
    let lse64 = lse_ref64(&q, &k, &shape, mask);
    Case {
        shape,
        mask,
        q,
        k,
        v,
        ref64,
        lowp,
        lse64,
    }
}

/// Run `(version, warps)` on every case; print every verdict, return the failures.
fn run_cases<T: GpuElement>(
    dev: &Device,
    cases: &[Case<T>],
    impls: &[(Version, usize)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let mut bufs = Buffers::upload(dev, c.shape, &c.q, &c.k, &c.v).unwrap();
        for &(ver, warps) in impls {
            bufs.poison(dev).unwrap(); // every launch starts from NaN
            forward_with(dev, ver, &mut bufs, c.mask, warps).unwrap();
            let (o, lse) = bufs.download(dev).unwrap();
            let got: Vec<f64> = o.iter().map(|x| x.to_f64()).collect();
            let name = format!(
                "{}/w{warps} {} B={} Hq={} Hkv={} Nq={} Nk={} D={} {}",
                ver.name(),
                T::DTYPE.name(),
                c.shape.b,
                c.shape.hq,
                c.shape.hkv,
                c.shape.nq,
                c.shape.nk,
                c.shape.d,
                c.mask.name()
            );
            let bar = (T::DTYPE == DType::F16).then_some(FP16_BAR);
            let lse_err = lse_max_err(&lse, &c.lse64);
            match attn_close(&name, &got, &c.lowp, &c.ref64, T::DTYPE, c.shape.nk, bar) {
                Ok(r) if lse_err <= 1e-3 => println!("ok   {r} | lse err {lse_err:.2e}"),
                Ok(r) => {
                    println!("FAIL {r} | lse err {lse_err:.2e}");
                    failures.push(format!("{name}: lse err {lse_err:.2e}"));
                }
                Err(e) => {
                    println!("FAIL {e}");
                    failures.push(e.to_string());
                }
            }
        }
    }
    failures
}

/// Every version (and v5's other block size) on the whole edge grid in f16.
#[test]
fn every_version_matches_the_reference_on_the_edge_grid() {
    let Some(dev) = device() else { return };
    let grid = edge_grid();
    let mut failures = Vec::new();
    // References in parallel, a chunk at a time (they are the slow part), kernels one after another.
    for (ci, chunk) in grid.chunks(24).enumerate() {
        let cases: Vec<Case<f16>> = chunk
            .par_iter()
            .enumerate()
            .map(|(i, &(s, m))| make_case(s, m, 1000 + (ci * 24 + i) as u64))
            .collect();
        for c in &cases {
            let mut impls: Vec<(Version, usize)> = Version::ALL.iter().map(|&v| (v, 4)).collect();
            let w = v5_warps(c.shape.d, c.shape.nq);
            impls.retain(|&(v, _)| v != Version::V5CpAsync);
            impls.push((Version::V5CpAsync, w));
            if c.shape.d >= 64 {
                impls.push((Version::V5CpAsync, 12 - w)); // the other block size too
            }
            impls.push((Version::V7Overlap, 8)); // v7's two-warpgroup block (4 above: one)
                                                 // v8 (D = 64 and 128 only): its default stages above, its other stage count here.
            impls.retain(|&(v, _)| v.head_dims().is_empty() || v.head_dims().contains(&c.shape.d));
            if Version::V8Tma.head_dims().contains(&c.shape.d) {
                impls.retain(|&(v, _)| v != Version::V8Tma);
                for &st in v8_stage_choices(c.shape.d) {
                    impls.push((Version::V8Tma, st));
                }
            }
            failures.extend(run_cases(&dev, std::slice::from_ref(c), &impls));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("All results match");
}

/// Scores that jump from one 128-key tile to the next (by 2^12 or more in P, above the 2^8 within
/// which v8 keeps a row's running maximum, changelog entry x): the path that moves the maximum and
/// rescales O, which unit-normal inputs hardly take after a row's first tile. v7 (which always
/// rescales) and v8 at both stage counts, f16 and bf16, D = 64 and 128, Nq = Nk and not, unmasked
/// (a causal row would see only a few keys of its last level).
#[test]
fn a_growing_maximum_is_rescaled() {
    let Some(dev) = device() else { return };
    let mut failures = Vec::new();
    for d in [64, 128] {
        for (nq, nk) in [(1024, 1024), (300, 700)] {
            let shape = AttnShape::new(1, 2, 1, nq, nk, d).unwrap();
            let seed = 7000 + (d + nq + nk) as u64;
            let mut impls = vec![(Version::V7Overlap, 8)];
            impls.extend(v8_stage_choices(d).iter().map(|&st| (Version::V8Tma, st)));
            let c16: Case<f16> = make_case_stepped(shape, Mask::NONE, seed, 24.0);
            failures.extend(run_cases(&dev, std::slice::from_ref(&c16), &impls));
            let cb: Case<bf16> = make_case_stepped(shape, Mask::NONE, seed, 24.0);
            failures.extend(run_cases(&dev, std::slice::from_ref(&cb), &impls));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The tensor-core versions in bf16 on part of the grid (every length pair, D and mask; fewer sizes).
#[test]
fn bf16_tensor_core_versions_match() {
    let Some(dev) = device() else { return };
    let grid: Vec<_> = edge_grid()
        .into_iter()
        .filter(|(s, _)| s.nq.max(s.nk) <= 1023)
        .collect();
    let cases: Vec<Case<bf16>> = grid
        .par_iter()
        .enumerate()
        .map(|(i, &(s, m))| make_case(s, m, 5000 + i as u64))
        .collect();
    let mut failures = Vec::new();
    for c in &cases {
        let w = v5_warps(c.shape.d, c.shape.nq);
        let mut impls = vec![
            (Version::V4TensorCores, 4),
            (Version::V5CpAsync, w),
            (Version::V6Wgmma, 8),
            (Version::V7Overlap, 8),
            (Version::V7Overlap, 4),
        ];
        if Version::V8Tma.head_dims().contains(&c.shape.d) {
            impls.push((Version::V8Tma, v8_stage_choices(c.shape.d)[0]));
        }
        failures.extend(run_cases(&dev, std::slice::from_ref(c), &impls));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// MiniGPT's own attention (8 heads of 32, the verb sequence and the stress length, every kv-head
/// grouping it has) through the crate's fastest path: v7 there, since v8's boxes need D = 64 or 128.
#[test]
fn minigpt_runs_on_the_fastest_path() {
    use modern_attention::minimodel::config::{MiniGptConfig, STRESS_SEQ_LEN, VERB_SEQ_LEN};
    let Some(dev) = device() else { return };
    let mut shapes = Vec::new();
    for kv in [8, 4, 2, 1] {
        let cfg = MiniGptConfig::MINIGPT.with_kv_heads(kv).unwrap();
        for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
            for mask in [Mask::NONE, Mask::CAUSAL] {
                shapes.push((cfg.attn_shape(2, n).unwrap(), mask));
            }
        }
    }
    // The f64 references are the slow part (seconds each at N = 2048): built in parallel.
    let cases: Vec<Case<f16>> = shapes
        .par_iter()
        .enumerate()
        .map(|(i, &(s, m))| make_case(s, m, 7000 + i as u64))
        .collect();
    let mut failures = Vec::new();
    for c in &cases {
        let mut bufs = Buffers::upload(&dev, c.shape, &c.q, &c.k, &c.v).unwrap();
        bufs.poison(&dev).unwrap();
        let ver = flash::forward_fastest(&dev, &mut bufs, c.mask).unwrap();
        assert_eq!(
            ver,
            Version::V7Overlap,
            "D = {}: v7, v8 needs 64 or 128",
            c.shape.d
        );
        let (o, lse) = bufs.download(&dev).unwrap();
        let got: Vec<f64> = o.iter().map(|x| x.to_f64()).collect();
        let (s, mask) = (c.shape, c.mask);
        let name = format!(
            "{} MiniGPT Hkv={} N={} {}",
            ver.name(),
            s.hkv,
            s.nq,
            mask.name()
        );
        let lse_err = lse_max_err(&lse, &c.lse64);
        let bar = Some(FP16_BAR);
        match attn_close(&name, &got, &c.lowp, &c.ref64, DType::F16, s.nk, bar) {
            Ok(r) if lse_err <= 1e-3 => println!("ok   {r} | lse err {lse_err:.2e}"),
            Ok(r) => failures.push(format!("{r}: lse err {lse_err:.2e}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Invalid calls come back as typed errors before anything is launched.
#[test]
fn refuses_invalid_calls() {
    let Some(dev) = device() else { return };
    let s = AttnShape::new(1, 2, 1, 8, 8, 48).unwrap();
    let x = vec![f16::from_f32(0.5); s.q_len()];
    let mut bufs = Buffers::upload(&dev, s, &x, &x[..s.kv_len()], &x[..s.kv_len()]).unwrap();
    let err = flash::forward(&dev, Version::V4TensorCores, &mut bufs, Mask::NONE).unwrap_err();
    assert!(matches!(err, GpuError::HeadDim { d: 48, .. }), "{err}");
    // v8's tensor maps take whole 64-column boxes: D = 32 is refused before anything is built.
    let s32 = AttnShape::new(1, 2, 1, 8, 8, 32).unwrap();
    let y = vec![f16::from_f32(0.5); s32.q_len()];
    let mut b32 = Buffers::upload(&dev, s32, &y, &y[..s32.kv_len()], &y[..s32.kv_len()]).unwrap();
    b32.poison(&dev).unwrap();
    let err = flash::forward(&dev, Version::V8Tma, &mut b32, Mask::NONE).unwrap_err();
    assert!(matches!(err, GpuError::HeadDim { d: 32, .. }), "{err}");
    // A shape changed by hand (the fields are public) to one `AttnShape::new` refuses: refused again.
    b32.shape = AttnShape { hkv: 0, ..s32 };
    let err = flash::forward(&dev, Version::V7Overlap, &mut b32, Mask::NONE).unwrap_err();
    assert!(matches!(err, GpuError::Shape(_)), "{err}");
    let (o, lse) = b32.download(&dev).unwrap();
    assert!(
        o.iter().all(|x| x.is_nan()) && lse.iter().all(|x| x.is_nan()),
        "a refused launch writes nothing"
    );
    // v1 takes any head size; v1b, built on v4's fragments, only v4's.
    flash::forward(&dev, Version::V1Naive, &mut bufs, Mask::NONE).unwrap();
    let err = flash::forward(&dev, Version::V1bNaiveMma, &mut bufs, Mask::NONE).unwrap_err();
    assert!(matches!(err, GpuError::HeadDim { d: 48, .. }), "{err}");
    // Buffers that do not hold the shape they claim.
    bufs.shape = AttnShape::new(1, 2, 2, 8, 8, 48).unwrap();
    let err = flash::forward(&dev, Version::V3Tiled, &mut bufs, Mask::NONE).unwrap_err();
    assert!(matches!(err, GpuError::Length { tensor: "k", .. }), "{err}");
    // Host slices that do not match the shape.
    let err = Buffers::upload(&dev, s, &x[1..], &x[..s.kv_len()], &x[..s.kv_len()]).err();
    assert!(matches!(err, Some(GpuError::Shape(_))));
}

/// v8 through a kernel named by the caller (`gpu-probe time v8@NAME`): a name that can run the call
/// gives what the host's pick gives, to the bar; one that cannot is refused with the reason before
/// anything is launched, and the output is left as it was.
#[test]
fn a_named_v8_kernel_runs_or_is_refused() {
    let Some(dev) = device() else { return };
    let s = AttnShape::new(1, 2, 1, 300, 384, 64).unwrap();
    let mut rng = Rng::new(7);
    let q: Vec<f16> = convert(&rng.normal_vec_f32(s.q_len()));
    let k: Vec<f16> = convert(&rng.normal_vec_f32(s.kv_len()));
    let v: Vec<f16> = convert(&rng.normal_vec_f32(s.kv_len()));
    let mut bufs = Buffers::upload(&dev, s, &q, &k, &v).unwrap();
    match flash::forward(&dev, Version::V8Tma, &mut bufs, Mask::CAUSAL) {
        Err(GpuError::NotSupported { arch, .. }) => {
            eprintln!("skipped: v8 needs sm_90a, this device is {arch}");
            return;
        }
        other => other.unwrap(),
    }
    let (picked, _) = bufs.download(&dev).unwrap();
    // Three consumer warpgroups where the host's rule takes two (causal, N <= 1024).
    bufs.poison(&dev).unwrap();
    flash::forward_v8_named(&dev, &mut bufs, Mask::CAUSAL, "flash_v8_64_s4_c3_c").unwrap();
    let (named, _) = bufs.download(&dev).unwrap();
    let worst = picked
        .iter()
        .zip(&named)
        .map(|(a, b)| (a.to_f32() - b.to_f32()).abs())
        .fold(0.0f32, f32::max);
    // Each is within the bar of the reference (the edge grid checks both kernels), so within twice it
    // of each other; the two tile the rows differently, so they need not agree bit for bit.
    assert!(
        worst <= 2.0 * FP16_BAR as f32,
        "named kernel differs from the host's pick by {worst}"
    );
    // Refused: a `_u` kernel under a mask, another head size, a name not compiled.
    bufs.poison(&dev).unwrap();
    for name in [
        "flash_v8_64_s4_c3_o_u",
        "flash_v8_128_s2_c2_c",
        "flash_v8_64_s9_c3",
    ] {
        let err = flash::forward_v8_named(&dev, &mut bufs, Mask::CAUSAL, name).unwrap_err();
        assert!(
            matches!(err, GpuError::KernelChoice { .. }),
            "{name}: {err}"
        );
    }
    let (o, lse) = bufs.download(&dev).unwrap();
    assert!(
        o.iter().all(|x| x.is_nan()) && lse.iter().all(|x| x.is_nan()),
        "a refused launch writes nothing"
    );
}

/// Without a driver `open` answers `Ok(None)` (never a panic); with one, it opens.
#[test]
fn open_never_panics() {
    match Device::open().expect("open") {
        Some(d) => {
            let name = d.name().unwrap();
            println!("device: {name} ({})", d.arch());
            assert!(
                !name.is_empty() && d.arch().starts_with("sm_"),
                "{name} {}",
                d.arch()
            );
        }
        None => assert!(
            std::env::var("REQUIRE_GPU").map_or(true, |v| v != "1"),
            "REQUIRE_GPU=1 but open found no device"
        ),
    }
}

/// The measured exponential rate (the softmax's second roof) is the special function units' rate:
/// within [0.5, 1.05] of 16 a clock per SM (the programming guide's rate for `ex2` on compute
/// capability 8.x and 9.0) at the SM clock the driver reports as the maximum.
#[test]
fn the_exponential_rate_is_the_special_function_units() {
    use cudarc::driver::sys::CUdevice_attribute;
    use modern_attention::gpu::ceilings::{clock_and_l2, exp_rate};
    let Some(dev) = device() else { return };
    let sms = dev
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .unwrap() as f64;
    let (mhz, l2) = clock_and_l2(&dev).unwrap();
    assert!(
        mhz > 100.0 && l2 >= (1 << 20) as f64,
        "clock {mhz} MHz, L2 {l2} B"
    );
    let rate = exp_rate(&dev).unwrap();
    let guide = 16.0 * sms * mhz * 1e6;
    println!(
        "ex2: {rate:.4e}/s, {:.3} of 16 a clock per SM at {mhz} MHz",
        rate / guide
    );
    assert!(
        rate > 0.5 * guide && rate < 1.05 * guide,
        "{rate:e} vs {guide:e}"
    );
}

/// The measured `mma.sync` rate (the roof of v4, v5 and FlashAttention-2) is a tensor-core rate, and no
/// more than the dense fp16 peak of Hopper's tensor cores: 4096 FLOPs a clock per SM (the datasheet's
/// 989 TFLOP/s for the H100 SXM over its 132 SMs at 1830 MHz) at the driver's maximum SM clock; at
/// least a fifth of it (CUDA cores alone could not come near).
#[test]
fn the_mma_sync_rate_is_a_tensor_core_rate() {
    use cudarc::driver::sys::CUdevice_attribute;
    use modern_attention::gpu::ceilings::{clock_and_l2, mma_sync_rate};
    let Some(dev) = device() else { return };
    if !dev.arch().starts_with("sm_9") {
        println!("skipped: the bound is Hopper's ({})", dev.arch());
        return;
    }
    let sms = dev
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .unwrap() as f64;
    let (mhz, _) = clock_and_l2(&dev).unwrap();
    let rate = mma_sync_rate(&dev).unwrap();
    let dense = 4096.0 * sms * mhz * 1e6;
    println!(
        "mma.sync: {:.1} TFLOP/s, {:.3} of the dense fp16 peak at {mhz} MHz",
        rate / 1e12,
        rate / dense
    );
    assert!(
        rate > 0.2 * dense && rate < 1.05 * dense,
        "{rate:e} vs {dense:e}"
    );
}
