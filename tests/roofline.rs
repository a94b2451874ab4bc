//! Every committed dot sits under its machine's measured roofline: with the fewest bytes attention can
//! move (each tensor once), no correct timing can beat `min(peak, intensity * bandwidth)`. A dot above
//! it means the timing or the FLOP count is wrong (the tile model's bytes may legitimately be *above*
//! what the hardware moves, because caches serve re-reads, so the physical bound uses the ideal bytes).

use modern_attention::gpu::flash::v7_warps;
use modern_attention::measure::load_all;
use modern_attention::minimodel::numeric::DType;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use modern_attention::roofline::spec::H100_SXM_DATASHEET;
use modern_attention::roofline::traffic::{bytes_fused, flash_bytes_cached};
use std::path::Path;

#[test]
fn every_dot_is_under_the_physical_roof() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
    let files = load_all(&dir).expect("readable measurements");
    let mut checked = 0;
    let mut problems = Vec::new();
    for (name, f) in &files {
        // The memory roof is the fastest transfer measured on the machine: a kernel that only reads
        // (decode) may pass the copy's rate, which reads and writes, but not the read rate; and one
        // whose working set sits in cache (a one-layer decode at 64 tokens, timed again and again) may
        // pass DRAM's rates, but not Lab 03's read pass over a cache-resident batch (variant
        // `paged_read` at 64 tokens, a rate of the caches).
        let fastest = f
            .records
            .iter()
            .filter(|r| r.variant == "paged_read")
            .map(|r| r.gbps)
            .fold(
                f.machine
                    .bandwidth_gbps
                    .max(f.machine.read_gbps.unwrap_or(0.0)),
                f64::max,
            );
        let (peak, bw) = (f.machine.peak_gflops * 1e9, fastest * 1e9);
        for r in f
            .records
            .iter()
            .filter(|r| r.checked && r.ms > 0.0 && r.flops > 0.0)
        {
            if ![
                "naive",
                "online",
                "flash",
                "flash_window",
                "flash_gqa",
                "decode",
                "paged_decode",
                "paged_decode_sweep",
                "decode_heads",
            ]
            .contains(&r.variant.as_str())
            {
                continue;
            }
            let dt = match r.dtype.as_str() {
                "f16" => DType::F16,
                "bf16" => DType::BF16,
                _ => DType::F32,
            };
            let Ok(s) = AttnShape::new(r.b, r.hq, r.hkv, r.nq, r.nk, r.d) else {
                continue;
            };
            let bound = (r.flops / bytes_fused(&s, dt) * bw).min(peak);
            let attained = r.flops / (r.ms * 1e-3);
            checked += 1;
            // Where the hardware counted the DRAM bytes, the roof at that intensity bounds it too.
            if let Some(dram) = r.dram_bytes.filter(|b| *b > 0.0) {
                let counted_bound = (r.flops / dram * bw).min(peak);
                if attained > 1.1 * counted_bound {
                    problems.push(format!(
                        "{name}: {} {:?}: {:.3e} FLOP/s above the roof at its counted intensity {:.3e}",
                        r.implementation,
                        (r.b, r.hq, r.nq, r.d),
                        attained,
                        counted_bound
                    ));
                }
            }
            // 10% slack: the ceilings are themselves measurements on a shared machine.
            if attained > 1.1 * bound {
                problems.push(format!(
                    "{name}: {} {} {:?} {}: {:.3e} FLOP/s above the roof {:.3e}",
                    r.implementation,
                    r.dtype,
                    (r.b, r.hq, r.hkv, r.nq, r.d),
                    r.mask,
                    attained,
                    bound
                ));
            }
        }
    }
    println!("{checked} dots checked against their roofline");
    // Every committed file has timed, checked records: none may pass by matching nothing.
    assert!(
        checked >= files.len(),
        "{checked} dots checked in {} files",
        files.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cache_aware_model_matches_the_dram_counters() {
    // The tiled GPU versions' DRAM bytes as `ncu` counted them (Lab 02's DRAM table) against
    // `flash_bytes_cached` with the H100's L2: the heads in flight fit, so the model says the fused
    // ideal reaches DRAM, while the plain tile model charges every K/V re-read to it.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
    let files = load_all(&dir).expect("readable measurements");
    let (cache, resident) = H100_SXM_DATASHEET.cache.expect("the H100's L2");
    let mut checked = 0;
    for (name, f) in files
        .iter()
        .filter(|(_, f)| f.machine.name.contains("H100"))
    {
        for r in &f.records {
            let tiles = match r.implementation.as_str() {
                "ours/v5_cp_async" => (64, 64),
                "ours/v6_wgmma" => (128, 128),
                "ours/v7_overlap" => (16 * v7_warps(r.d, r.nq), 128),
                _ => continue,
            };
            let (Some(counted), Ok(s)) = (
                r.dram_bytes,
                AttnShape::new(r.b, r.hq, r.hkv, r.nq, r.nk, r.d),
            ) else {
                continue;
            };
            let mask = if r.mask == "causal" {
                Mask::CAUSAL
            } else {
                Mask::NONE
            };
            let (model, fits, _) = flash_bytes_cached(&s, DType::F16, tiles, mask, cache, resident);
            assert!(
                fits,
                "{name}: {} N={}: working set should fit",
                r.implementation, r.nq
            );
            let err = (model - counted).abs() / counted;
            assert!(
                err < 0.1,
                "{name}: {} N={} D={}: model {model:.3e} B, counted {counted:.3e} B",
                r.implementation,
                r.nq,
                r.d
            );
            checked += 1;
        }
    }
    println!("{checked} counted records match the cache-aware model");
    assert!(checked >= 4 || files.iter().all(|(_, f)| !f.machine.name.contains("H100")));
}
