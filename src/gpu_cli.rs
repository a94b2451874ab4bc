//! The GPU subcommands of the main binary: `measure-gpu` (lab 02's harness) and `gpu-probe` (small runs
//! for compute-sanitizer and Nsight Compute).

use half::{bf16, f16};
use modern_attention::gpu::flash::{self, lse_max_err, lse_ref64, Buffers, GpuElement, Version};
use modern_attention::gpu::Device;
use modern_attention::measure::{gpu, slug, Generated, Record};
use modern_attention::minimodel::check::{attn_close, FP16_BAR};
use modern_attention::minimodel::numeric::{convert, DType};
use modern_attention::minimodel::reference::{attention_lowp, attention_ref64};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
}

fn open() -> Result<Device, String> {
    Device::open()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no CUDA device".to_string())
}

#[derive(Deserialize)]
struct PeerMachine {
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    peak_tflops: f64,
    #[serde(default)]
    copy_gbps: f64,
}

#[derive(Deserialize)]
struct PeerFile {
    machine: PeerMachine,
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct DramRow {
    #[serde(rename = "impl")]
    implementation: String,
    n: usize,
    d: usize,
    mask: String,
    dram_bytes: f64,
}

/// `measure-gpu [--quick] [--peer FILE] [--dram FILE] [--out DIR] [--commit C] [--rustc R]`
pub fn measure_gpu(
    root: &Path,
    args: &[String],
    commit: String,
    rustc: String,
) -> Result<(), String> {
    let dev = open()?;
    let quick = args.iter().any(|a| a == "--quick");
    let t = Instant::now();
    let mut records = gpu::measure(&dev, quick, &mut |line| println!("[measure-gpu] {line}"))
        .map_err(|e| e.to_string())?;
    let (mut peak, mut bw, mut driver) = (0.0, 0.0, None);
    if let Some(p) = flag(args, "--peer") {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
        let peer: PeerFile = serde_json::from_str(&text).map_err(|e| format!("{p}: {e}"))?;
        println!(
            "[measure-gpu] merged {} peer records from {p}",
            peer.records.len()
        );
        peak = peer.machine.peak_tflops * 1e3;
        bw = peer.machine.copy_gbps;
        driver = peer.machine.driver;
        records.extend(peer.records);
    }
    if let Some(p) = flag(args, "--dram") {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
        let rows: Vec<DramRow> = serde_json::from_str(&text).map_err(|e| format!("{p}: {e}"))?;
        for row in rows {
            let hit = records.iter_mut().find(|r| {
                r.implementation == row.implementation
                    && r.nq == row.n
                    && r.d == row.d
                    && r.mask == row.mask
            });
            match hit {
                Some(r) => r.dram_bytes = Some(row.dram_bytes),
                None => println!(
                    "[measure-gpu] no record for ncu row {} N={} D={}",
                    row.implementation, row.n, row.d
                ),
            }
        }
    }
    let date = flag(args, "--date").cloned().unwrap_or_default();
    let generated = Generated {
        date,
        commit: flag(args, "--commit").cloned().unwrap_or(commit),
        rustc: flag(args, "--rustc").cloned().unwrap_or(rustc),
        threads: 1,
    };
    let file = gpu::file(&dev, records, peak, bw, driver, generated).map_err(|e| e.to_string())?;
    let dir = flag(args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("measurements"));
    let path = dir.join(format!("gpu-{}.json", slug(&file.machine.name)));
    let json = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "[measure-gpu] {} records in {:.1?} -> {}",
        file.records.len(),
        t.elapsed(),
        path.display()
    );
    Ok(())
}

/// Small edge cases for the sanitizers: (B, Hq, Hkv, Nq, Nk, D, mask).
fn probe_cases() -> Vec<(AttnShape, Mask)> {
    let w = |n, c| Mask::sliding(n, c).expect("non-zero window");
    [
        ((2, 4, 2, 17, 17, 64), Mask::CAUSAL),
        ((1, 4, 1, 113, 64, 32), w(16, false)),
        ((1, 2, 2, 1, 113, 128), Mask::NONE),
        ((1, 4, 4, 64, 17, 64), w(8, true)),
        ((1, 2, 1, 200, 200, 64), Mask::NONE),
        ((1, 2, 2, 130, 257, 128), Mask::CAUSAL),
        ((1, 2, 1, 257, 130, 128), w(40, true)),
    ]
    .into_iter()
    .map(|((b, hq, hkv, nq, nk, d), m)| (AttnShape::new(b, hq, hkv, nq, nk, d).expect("case"), m))
    .collect()
}

fn probe_one<T: GpuElement>(
    dev: &Device,
    ver: Version,
    s: AttnShape,
    mask: Mask,
    seed: u64,
) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    let q: Vec<T> = convert(&rng.normal_vec_f32(s.q_len()));
    let k: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let v: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let mut bufs = Buffers::upload(dev, s, &q, &k, &v).map_err(|e| e.to_string())?;
    flash::forward(dev, ver, &mut bufs, mask).map_err(|e| e.to_string())?;
    let (o, lse) = bufs.download(dev).map_err(|e| e.to_string())?;
    let r64 = attention_ref64(&q, &k, &v, &s, mask).map_err(|e| e.to_string())?;
    let lowp = attention_lowp(&q, &k, &v, &s, mask, T::DTYPE).map_err(|e| e.to_string())?;
    let got: Vec<f64> = o.iter().map(|x| x.to_f64()).collect();
    let bar = (T::DTYPE == DType::F16).then_some(FP16_BAR);
    let name = format!("{} {:?} {}", ver.name(), s, mask.name());
    let lse_err = lse_max_err(&lse, &lse_ref64(&q, &k, &s, mask));
    match attn_close(&name, &got, &lowp, &r64, T::DTYPE, s.nk, bar) {
        Ok(r) if lse_err <= 1e-3 => {
            println!("ok   {r} | lse err {lse_err:.2e}");
            Ok(true)
        }
        Ok(r) => {
            println!("FAIL {r} | lse err {lse_err:.2e}");
            Ok(false)
        }
        Err(e) => {
            println!("FAIL {e}");
            Ok(false)
        }
    }
}

/// `gpu-probe sanitize` (every version on small edge cases, checked; for compute-sanitizer) or
/// `gpu-probe one VERSION N D [causal]` (one launch on the harness's shape for N and D; for ncu).
pub fn probe(args: &[String]) -> Result<(), String> {
    let dev = open()?;
    match args.first().map(String::as_str) {
        Some("sanitize") => {
            let mut ok = true;
            for (i, (s, mask)) in probe_cases().into_iter().enumerate() {
                for ver in Version::ALL {
                    ok &= probe_one::<f16>(&dev, ver, s, mask, 100 + i as u64)?;
                }
                for ver in [Version::V4TensorCores, Version::V5CpAsync] {
                    ok &= probe_one::<bf16>(&dev, ver, s, mask, 200 + i as u64)?;
                }
            }
            if ok {
                println!("All results match");
                Ok(())
            } else {
                Err("some probe failed its check".into())
            }
        }
        Some("one") => {
            let ver = args
                .get(1)
                .and_then(|v| Version::parse(v))
                .ok_or("gpu-probe one VERSION N D [causal]")?;
            let n: usize = args.get(2).and_then(|x| x.parse().ok()).ok_or("N")?;
            let d: usize = args.get(3).and_then(|x| x.parse().ok()).ok_or("D")?;
            let mask = if args.get(4).is_some_and(|a| a == "causal") {
                Mask::CAUSAL
            } else {
                Mask::NONE
            };
            let s = AttnShape::self_attention((16384 / n).max(1), 2048 / d, n, d)
                .map_err(|e| e.to_string())?;
            let mut rng = Rng::new(7);
            let q: Vec<f16> = convert(&rng.normal_vec_f32(s.q_len()));
            let mut bufs = Buffers::upload(&dev, s, &q, &q[..s.kv_len()], &q[..s.kv_len()])
                .map_err(|e| e.to_string())?;
            flash::forward(&dev, ver, &mut bufs, mask).map_err(|e| e.to_string())?;
            dev.synchronize().map_err(|e| e.to_string())?;
            println!("ran {} on {s:?} {}", ver.name(), mask.name());
            Ok(())
        }
        _ => Err("usage: gpu-probe sanitize | gpu-probe one VERSION N D [causal]".into()),
    }
}
