//! The GPU harness (lab 02): for every configuration of the grid, check each kernel version against the
//! f64 reference, then time it with CUDA events, and write the measurement records.
//!
//! Grid: fp16; D in {64, 128}; N in {64, 512, 1024, 2048, 4096, 8192, 16384} with `B N = 16k` tokens
//! and `H = 2048 / D` heads (FlashAttention's benchmark sizing); causal and not. v1, v1b and v2 are timed only
//! for N <= 2048 and v3 for N <= 4096 (they take seconds beyond, and v1's `S` alone is 4 GB at N = 2048).
//!
//! Check: batch 0's first head and the last batch's last, the last `min(Nq, 128)` query rows (every key visible to them)
//! and, under a causal mask, the first 64 rows too (the fewest keys), against the f64 reference under
//! [`attn_close`] with the fp16 bar. A version that fails is still timed, recorded with `checked: false`.
//!
//! Timing: 3 warm-up launches, then the median of at least 20 (more while under 0.3 s), each bracketed
//! by CUDA events; inputs rotated over enough sets that one set's bytes times the number of sets
//! exceeds twice the L2 (the timed data is not L2-resident). FLOPs `4 B H N^2 D`, halved for causal.

use super::{fa_flops, Generated, Machine, MeasurementFile, Record};
use crate::gpu::flash::{self, time_ms, Buffers, Version};
use crate::gpu::{Device, GpuError};
use crate::minimodel::check::{attn_close, CloseReport, FP16_BAR};
use crate::minimodel::numeric::{convert, DType};
use crate::minimodel::reference::{attention_lowp, attention_ref64};
use crate::minimodel::rng::Rng;
use crate::minimodel::shape::{AttnShape, Mask};
use crate::roofline::traffic::{bytes_naive_scores, flash_traffic};
use cudarc::driver::sys::CUdevice_attribute;
use half::f16;
use rayon::prelude::*;
use std::time::Instant;

/// One timed implementation: a version, and for v5 and v7 optionally their warps per block.
#[derive(Debug, Clone, Copy)]
pub struct Impl {
    /// The kernel version.
    pub version: Version,
    /// Warps per block (`None`: the version's default).
    pub warps: Option<usize>,
}

impl Impl {
    /// `ours/v5_cp_async`, or `ours/v5_cp_async_w8` for a non-default warp count (v5 and v7).
    pub fn name(&self, d: usize, n: usize) -> String {
        let alternative = matches!(self.version, Version::V5CpAsync | Version::V7Overlap);
        match self.warps {
            Some(w) if alternative && w != flash::default_warps(self.version, d, n) => {
                format!("ours/{}_w{w}", self.version.name())
            }
            // v8's knob is its K/V stages.
            Some(w)
                if self.version == Version::V8Tma
                    && w != flash::default_warps(self.version, d, n) =>
            {
                format!("ours/{}_s{w}", self.version.name())
            }
            _ => format!("ours/{}", self.version.name()),
        }
    }
}

/// The sequence lengths of the grid.
pub const NS: [usize; 7] = [64, 512, 1024, 2048, 4096, 8192, 16384];

/// The implementations timed at length `n` (slow versions only on the shorter lengths).
pub fn impls_for(n: usize, d: usize) -> Vec<Impl> {
    let mut out = Vec::new();
    for version in Version::ALL {
        let limit = match version {
            Version::V1Naive | Version::V1bNaiveMma | Version::V2Online => 2048,
            Version::V3Tiled => 4096,
            _ => usize::MAX,
        };
        if n <= limit {
            out.push(Impl {
                version,
                warps: None,
            });
        }
    }
    if d >= 64 {
        // The other block sizes of v5 and v7, kept in the table so the choices are visible.
        for version in [Version::V5CpAsync, Version::V7Overlap] {
            out.push(Impl {
                version,
                warps: Some(12 - flash::default_warps(version, d, n)),
            });
        }
        // v8's other stage count.
        out.push(Impl {
            version: Version::V8Tma,
            warps: Some(flash::v8_stage_choices(d)[1]),
        });
    }
    out
}

fn head_rows(
    x: &[f16],
    s: &AttnShape,
    h: usize,
    rows: std::ops::Range<usize>,
    kv: bool,
) -> Vec<f16> {
    let (n, start) = if kv {
        (s.nk, s.kv_row(0, h, 0))
    } else {
        (s.nq, s.q_row(0, h, 0))
    };
    debug_assert!(rows.end <= n);
    x[start + rows.start * s.d..start + rows.end * s.d].to_vec()
}

/// The check's sub-problems: (query head counted across the batch, query rows, key count), each an exact
/// copy of what those rows see (positions preserved: a prefix of rows under a causal mask sees a prefix
/// of keys).
fn check_slices(s: &AttnShape, mask: Mask) -> Vec<(usize, std::ops::Range<usize>, usize)> {
    let mut out = Vec::new();
    // Heads counted across the batch (`q`, `o`: `(B Hq, Nq, D)`): batch 0's first, the last batch's last.
    for h in [0, s.b * s.hq - 1] {
        let r = s.nq.min(128);
        out.push((h, s.nq - r..s.nq, s.nk));
        if mask.causal && s.nq > 128 && s.nk >= s.nq {
            let r = 64;
            out.push((h, 0..r, s.nk - (s.nq - r)));
        }
    }
    out
}

/// What the check of a grid configuration needs of the reference: the f64 and the fp16-storage
/// answers of a few query rows (the last 128 rows of batch 0's first head and of the last batch's last
/// head, and under a causal mask their first 64 rows too), computed once per inputs and mask.
pub struct Checker {
    slices: Vec<(usize, std::ops::Range<usize>, usize)>,
    refs: Vec<(Vec<f64>, Vec<f64>)>, // (ref64, lowp) per slice
}

impl Checker {
    /// The reference answers for `s`'s inputs under `mask`.
    pub fn new(q: &[f16], k: &[f16], v: &[f16], s: &AttnShape, mask: Mask) -> Checker {
        let slices = check_slices(s, mask);
        let refs = slices
            .par_iter()
            .map(|(h, rows, nk)| {
                let sub = AttnShape::new(1, 1, 1, rows.len(), *nk, s.d).expect("sub shape");
                let hk = h / s.group();
                let qs = head_rows(q, s, *h, rows.clone(), false);
                let ks = head_rows(k, s, hk, 0..*nk, true);
                let vs = head_rows(v, s, hk, 0..*nk, true);
                let r64 = attention_ref64(&qs, &ks, &vs, &sub, mask).expect("sub shape");
                let lowp =
                    attention_lowp(&qs, &ks, &vs, &sub, mask, DType::F16).expect("sub shape");
                (r64, lowp)
            })
            .collect();
        Checker { slices, refs }
    }

    /// Apply the rule to each slice of `o`; the report with the largest error, or the first failure.
    pub fn check(&self, name: &str, o: &[f16], s: &AttnShape) -> Result<CloseReport, String> {
        let mut worst: Option<CloseReport> = None;
        for ((h, rows, nk), (r64, lowp)) in self.slices.iter().zip(&self.refs) {
            let got: Vec<f64> = head_rows(o, s, *h, rows.clone(), false)
                .iter()
                .map(|x| x.to_f64())
                .collect();
            let label = format!("{name} head {h} rows {rows:?}");
            let r = attn_close(&label, &got, lowp, r64, DType::F16, *nk, Some(FP16_BAR))
                .map_err(|e| e.to_string())?;
            if worst
                .as_ref()
                .is_none_or(|w| r.candidate.max > w.candidate.max)
            {
                worst = Some(r);
            }
        }
        worst.ok_or_else(|| "nothing checked".into())
    }
}

/// Slow-memory bytes of the one-thread-per-row version: Q and O once, K and V once per query row.
fn bytes_rowwise(s: &AttnShape, dt: DType) -> f64 {
    let e = dt.bytes() as f64;
    (s.b * s.hq) as f64 * e * (2.0 * (s.nq * s.d) as f64 + 2.0 * (s.nq * s.nk * s.d) as f64)
}

/// The traffic model's bytes for `version` (v3..v6 through the tile model with their own tiles).
pub fn bytes_model(version: Version, warps: usize, s: &AttnShape, mask: Mask) -> f64 {
    let dt = DType::F16;
    let tiled = |br: usize, bc: usize| {
        let t = flash_traffic(s, dt, br, bc, mask);
        (t.loaded + t.stored) as f64
    };
    match version {
        // S and P in f32 (both naive kernels).
        Version::V1Naive | Version::V1bNaiveMma => bytes_naive_scores(s, dt, 4),
        Version::V2Online => bytes_rowwise(s, dt),
        Version::V3Tiled => tiled(64, 64),
        Version::V4TensorCores => tiled(64, 64),
        Version::V5CpAsync => tiled(16 * warps, 64),
        Version::V6Wgmma => tiled(128, 128),
        Version::V7Overlap => tiled(16 * warps, 128),
        Version::V8Tma => tiled(64 * flash::v8_consumers(s.d, s.nq, mask.causal), 128),
    }
}

/// Measure the grid on `dev`. `log` receives one line per timed configuration.
pub fn measure(
    dev: &Device,
    quick: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Record>, GpuError> {
    let l2 = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as usize;
    let ns: &[usize] = if quick { &[64, 2048] } else { &NS };
    let mut records = Vec::new();
    for d in [64usize, 128] {
        for &n in ns {
            let shape = AttnShape::self_attention((16384 / n).max(1), 2048 / d, n, d)?;
            let mut rng = Rng::new(0x6a11 + n as u64 * 131 + d as u64);
            let q: Vec<f16> = convert(&rng.normal_vec_f32(shape.q_len()));
            let k: Vec<f16> = convert(&rng.normal_vec_f32(shape.kv_len()));
            let v: Vec<f16> = convert(&rng.normal_vec_f32(shape.kv_len()));
            let first = Buffers::upload(dev, shape, &q, &k, &v)?;
            // Enough sets that the bytes cycled through are at least twice the L2.
            let sets_needed = (2 * l2).div_ceil(first.bytes()).max(1) + 1;
            let mut sets = vec![first];
            while sets.len() < sets_needed {
                // Same data in fresh buffers: the point is the addresses, not the values.
                sets.push(Buffers::upload(dev, shape, &q, &k, &v)?);
            }
            for mask in [Mask::NONE, Mask::CAUSAL] {
                let t = Instant::now();
                let checker = Checker::new(&q, &k, &v, &shape, mask);
                log(&format!(
                    "reference for D={d} N={n} {} in {:.1?}",
                    mask.name(),
                    t.elapsed()
                ));
                for imp in impls_for(n, d) {
                    let warps = imp.warps.unwrap_or(flash::default_warps(imp.version, d, n));
                    let name = imp.name(d, n);
                    sets[0].poison(dev)?;
                    flash::forward_with(dev, imp.version, &mut sets[0], mask, warps)?;
                    let (o, _) = sets[0].download(dev)?;
                    let (checked, max_err) =
                        crate::minimodel::check::verdict(&checker.check(&name, &o, &shape), log);
                    // At least 20 timed runs; more while the total stays under 0.3 s.
                    let probe = time_ms(dev, imp.version, Some(warps), &mut sets, mask, 3, 1)?[0];
                    let runs = ((300.0 / probe.max(1e-3)) as usize).clamp(20, 200);
                    let mut times =
                        time_ms(dev, imp.version, Some(warps), &mut sets, mask, 0, runs)?;
                    times.sort_by(f64::total_cmp);
                    let ms = times[times.len() / 2];
                    let flops = fa_flops(shape.b, shape.hq, n, n, d, mask.causal);
                    let bytes = bytes_model(imp.version, warps, &shape, mask);
                    log(&format!(
                        "{:22} D={d:3} N={n:5} {:6}: {:9.4} ms {:7.1} TFLOP/s {}",
                        name,
                        mask.name(),
                        ms,
                        flops / ms / 1e9,
                        if checked { "checked" } else { "NOT CHECKED" }
                    ));
                    let naive = [Version::V1Naive, Version::V1bNaiveMma];
                    let variant = if naive.contains(&imp.version) {
                        "naive"
                    } else {
                        "flash"
                    };
                    let rec = Record::new(variant, &name, "f16", &shape, &mask.name());
                    records.push(rec.timed(&times, flops, bytes).checked(checked, max_err));
                }
            }
        }
    }
    Ok(records)
}

/// The machine and provenance for a GPU measurement file (`peak` and `bandwidth` in GFLOP/s and GB/s,
/// measured by the peer script; `driver` from `nvidia-smi`); the exponential rate is measured here
/// ([`crate::gpu::ceilings::exp_rate`]), the SM clock and the L2 size read from the driver.
pub fn file(
    dev: &Device,
    records: Vec<Record>,
    peak_gflops: f64,
    bandwidth_gbps: f64,
    driver: Option<String>,
    generated: Generated,
) -> Result<MeasurementFile, GpuError> {
    let sms = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
    let (clock_mhz, l2_bytes) = crate::gpu::ceilings::clock_and_l2(dev)?;
    let exps = crate::gpu::ceilings::exp_rate(dev)?;
    let mma = crate::gpu::ceilings::mma_sync_rate(dev)?;
    Ok(MeasurementFile {
        machine: Machine {
            kind: "gpu".into(),
            name: dev.name()?,
            cores: sms,
            driver,
            cuda: Some(dev.driver_cuda_version()?),
            peak_gflops,
            bandwidth_gbps,
            read_gbps: None,
            read_gbps_by_order: None,
            peak_gflops_1t: None,
            bandwidth_gbps_1t: None,
            exp_per_s: Some(exps),
            mma_sync_gflops: Some(mma / 1e9),
            clock_mhz: Some(clock_mhz),
            l2_bytes: Some(l2_bytes),
        },
        generated,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_covers_the_first_and_the_last_head_of_the_batch() {
        let s = AttnShape::new(4, 8, 2, 256, 256, 64).unwrap();
        let slices = check_slices(&s, Mask::CAUSAL);
        let heads: Vec<usize> = slices.iter().map(|x| x.0).collect();
        assert_eq!(
            heads,
            [0, 0, 31, 31],
            "batch 0's first head, the last batch's last, twice each"
        );
        // The last head's rows are the last of q: its kv head is the last of k.
        let (h, rows, _) = &slices[2];
        assert_eq!(s.q_row(0, *h, rows.end), s.q_len());
        assert_eq!(s.kv_row(0, h / s.group(), s.nk), s.kv_len());
    }

    /// Every version parses from its name, its short form and its number (v1b by its name and short
    /// form: it shares v1's number, which means v1); v8 takes only the head sizes its 64-column boxes
    /// fit.
    #[test]
    fn versions_parse_and_v8_takes_whole_boxes() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.name()), Some(v));
            let by_number = if v == Version::V1bNaiveMma {
                Version::V1Naive
            } else {
                v
            };
            assert_eq!(Version::parse(&v.number().to_string()), Some(by_number));
        }
        assert_eq!(Version::parse("v1b"), Some(Version::V1bNaiveMma));
        // The fastest path for every head size: v8 where it is compiled, v7 at MiniGPT's 32, v1 else.
        assert_eq!(Version::fastest_for(64), Version::V8Tma);
        assert_eq!(Version::fastest_for(128), Version::V8Tma);
        assert_eq!(Version::fastest_for(32), Version::V7Overlap);
        assert_eq!(Version::fastest_for(48), Version::V1Naive);
        assert_eq!(Version::parse("v8"), Some(Version::V8Tma));
        assert_eq!(Version::FASTEST, Version::V8Tma);
        assert_eq!(Version::V8Tma.head_dims(), &[64, 128]);
        assert!(Version::V7Overlap.head_dims().contains(&32));
    }

    /// v8's knob is its stage count: the default is the first compiled choice, the other one is timed
    /// under its own name, and the harness times it at both head sizes.
    #[test]
    fn v8_stages_are_named_and_timed() {
        for d in [64, 128] {
            let choices = flash::v8_stage_choices(d);
            assert_eq!(flash::default_warps(Version::V8Tma, d, 2048), choices[0]);
            let default = Impl {
                version: Version::V8Tma,
                warps: Some(choices[0]),
            };
            let other = Impl {
                version: Version::V8Tma,
                warps: Some(choices[1]),
            };
            assert_eq!(default.name(d, 2048), "ours/v8_tma");
            assert_eq!(other.name(d, 2048), format!("ours/v8_tma_s{}", choices[1]));
            let timed: Vec<String> = impls_for(2048, d).iter().map(|i| i.name(d, 2048)).collect();
            assert!(timed.contains(&"ours/v8_tma".to_string()), "{timed:?}");
            assert!(timed.contains(&other.name(d, 2048)), "{timed:?}");
        }
        // The stage counts fit an SM's 227 KB with the consumer counts each head size uses: Q (64 rows a
        // consumer warpgroup) and the stages of K and V at 128 rows each.
        for d in [64, 128] {
            for &st in flash::v8_stage_choices(d) {
                for c in [
                    flash::v8_consumers(d, 512, true),
                    flash::v8_consumers(d, 4096, false),
                ] {
                    let bytes = flash::v8_smem_bytes(d, st, c);
                    assert!(
                        bytes <= 227 * 1024,
                        "D={d} stages={st} c={c}: {bytes} bytes"
                    );
                }
            }
        }
        // Two Q tiles (the next item's first S under this one's end) wherever they fit: every D = 64
        // kernel and D = 128 with two stages; one at D = 128 with three.
        for c in [2, 3] {
            for st in [2, 4] {
                assert_eq!(flash::v8_q_buffers(64, st, c), 2, "D=64 stages={st} c={c}");
            }
        }
        assert_eq!(flash::v8_q_buffers(128, 2, 2), 2);
        assert_eq!(flash::v8_q_buffers(128, 3, 2), 1);
        // The `_o` kernel (O through a shared-memory tile and the copy engine): D = 128, two stages,
        // rows of at most 4096 keys on average (N / 2 when causal); D = 64's two-consumer kernel and
        // rows of at most 512 keys; and it fits beside everything else.
        assert!(
            flash::v8_o_tile(128, 512, false, 2, 2) && flash::v8_o_tile(128, 4096, false, 2, 2)
        );
        assert!(
            !flash::v8_o_tile(128, 8192, false, 2, 2) && flash::v8_o_tile(128, 8192, true, 2, 2)
        );
        assert!(
            !flash::v8_o_tile(128, 16384, true, 2, 2) && !flash::v8_o_tile(128, 512, false, 3, 2)
        );
        assert!(flash::v8_o_tile(64, 512, false, 4, 3) && flash::v8_o_tile(64, 1024, true, 4, 2));
        assert!(
            !flash::v8_o_tile(64, 1024, false, 4, 3) && !flash::v8_o_tile(64, 2048, true, 4, 3)
        );
        assert!(!flash::v8_o_tile(32, 512, false, 2, 2));
        for (d, st, c) in [(128, 2, 2), (64, 4, 2), (64, 4, 3), (64, 2, 3)] {
            assert!(
                flash::v8_smem_bytes_o(d, st, c) <= 227 * 1024,
                "D={d} stages={st} c={c}"
            );
        }
        // Three consumers at D = 64 but for short causal calls; two at D = 128.
        assert_eq!(flash::v8_consumers(64, 2048, false), 3);
        assert_eq!(flash::v8_consumers(64, 512, true), 2);
        assert_eq!(flash::v8_consumers(64, 4096, true), 3);
        assert_eq!(flash::v8_consumers(128, 16384, false), 2);
    }
}
