//! Every committed dot sits under its machine's measured roofline: with the fewest bytes attention can
//! move (each tensor once), no correct timing can beat `min(peak, intensity * bandwidth)`. A dot above
//! it means the timing or the FLOP count is wrong (the tile model's bytes may legitimately be *above*
//! what the hardware moves, because caches serve re-reads, so the physical bound uses the ideal bytes).

use modern_attention::measure::load_all;
use modern_attention::minimodel::numeric::DType;
use modern_attention::minimodel::shape::AttnShape;
use modern_attention::roofline::traffic::bytes_fused;
use std::path::Path;

#[test]
fn every_dot_is_under_the_physical_roof() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
    let files = load_all(&dir).expect("readable measurements");
    let mut checked = 0;
    let mut problems = Vec::new();
    for (name, f) in &files {
        let (peak, bw) = (f.machine.peak_gflops * 1e9, f.machine.bandwidth_gbps * 1e9);
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
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
