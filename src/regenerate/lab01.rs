//! Lab 01's tables: the bytes FlashAttention saves (model, counted, hardware) at both anchors, and the
//! CPU timings of every version beside PyTorch's, from the committed measurements.

use super::{md_table, Artifact};
use crate::measure::{MeasurementFile, Record};
use crate::minimodel::attention_flash::{kernels::Isa, tiled, Counter, Tiles};
use crate::minimodel::config::{STRESS_SEQ_LEN, VERB_SEQ_LEN};
use crate::minimodel::numeric::DType;
use crate::minimodel::rng::Rng;
use crate::minimodel::shape::{AttnShape, Mask};
use crate::roofline::traffic::{bytes_fused, bytes_naive, flash_theta_elements, flash_traffic};
use crate::roofline::{si, sig3};
use half::f16;

/// The tilings the bytes table shows (fixed, so the table does not depend on the reader's cache): square
/// 64 x 64 tiles, and the taller query tiles this machine's cache rule picks for D = 64.
pub const TABLE_TILES: [Tiles; 2] = [Tiles { br: 64, bc: 64 }, Tiles { br: 256, bc: 64 }];

/// Lab 01's tables, from the code and the measurement files.
pub fn render(files: &[(String, MeasurementFile)]) -> Vec<Artifact> {
    vec![
        Artifact {
            name: "lab01_bytes.md",
            contents: bytes_table(files),
        },
        Artifact {
            name: "lab01_cpu.md",
            contents: cpu_table(files),
        },
        Artifact {
            name: "lab01_sweep.svg",
            contents: sweep_figure(),
        },
        Artifact {
            name: "lab01_rss.md",
            contents: rss_table(files),
        },
    ]
}

/// Table 01.3: peak resident memory of naive and tiled, each alone in a fresh process.
fn rss_table(files: &[(String, MeasurementFile)]) -> String {
    let mut rows = Vec::new();
    let mut sources = Vec::new();
    for (name, f) in files.iter().filter(|(_, f)| f.machine.kind == "cpu") {
        // A run whose output failed its check measured the memory of a wrong program: not shown.
        let memory = || {
            f.records
                .iter()
                .filter(|r| r.variant == "memory" && r.checked)
        };
        let before = rows.len();
        for r in memory() {
            let Some(rss) = r.peak_rss_bytes else {
                continue;
            };
            let io = 4.0 * (r.b * r.hq * r.nq * r.d) as f64 * 4.0; // q, k, v, o in f32
            let s_bytes = 4.0 * (r.nq * r.nk) as f64; // one head's score matrix
            let workers = f.generated.threads.min(r.b * r.hq) as f64;
            let predicted = if r.implementation.contains("naive") {
                io + workers * s_bytes
            } else {
                io
            };
            rows.push(vec![
                format!("{} ({} threads)", f.machine.name, f.generated.threads),
                format!("`{}`", r.implementation),
                format!("B={}, H={}, N={}, D={}", r.b, r.hq, r.nq, r.d),
                si(rss) + "B",
                si(predicted) + "B",
            ]);
        }
        if rows.len() > before {
            sources.push(format!(
                "{}: {}, `measurements/{name}`",
                f.machine.name,
                provenance(f, memory())
            ));
        }
    }
    if rows.is_empty() {
        return "*No memory measurements are committed yet: run `cargo run --release -- measure-cpu`.*\n".into();
    }
    let mut out = md_table(
        &[
            "machine",
            "implementation",
            "shape (f32)",
            "peak resident memory",
            "inputs, outputs and live score matrices",
        ],
        &rows,
    );
    out += &format!(
        "\n*Table 01.3. Each version run once in a fresh child process (`modern-attention rss-probe`), its peak \
         resident set read from the kernel (`VmHWM`). The prediction counts Q, K, V and O, plus one N×N f32 \
         score matrix per worker for naive; the rest is the program itself. Each run's output is checked against the \
         f64 reference after its peak is read (head 0's last 64 rows, under the rule). {}.*\n",
        sources.join("; ")
    );
    out
}

/// Figure 01.1: bytes against N for naive, flash (two tilings) and the ideal, one head, D = 64, fp16.
fn sweep_figure() -> String {
    let d = 64;
    let ns: Vec<usize> = (4..=14).map(|p| 1usize << p).collect();
    let shape = |n| AttnShape::self_attention(1, 1, n, d).expect("sweep shape");
    let mut series = vec![super::figures::Series {
        name: "naive (S and P through slow memory)".into(),
        rgb: (200, 40, 40),
        points: ns
            .iter()
            .map(|&n| (n as f64, bytes_naive(&shape(n), DType::F16)))
            .collect(),
        markers: true,
    }];
    for (t, rgb) in TABLE_TILES.iter().zip([(40, 90, 200), (20, 150, 90)]) {
        series.push(super::figures::Series {
            name: format!("flash, {}x{} tiles", t.br, t.bc),
            rgb,
            points: ns
                .iter()
                .map(|&n| {
                    let m = flash_traffic(&shape(n), DType::F16, t.br, t.bc, Mask::NONE);
                    (n as f64, (m.loaded + m.stored) as f64)
                })
                .collect(),
            markers: true,
        });
    }
    series.push(super::figures::Series {
        name: "ideal (each tensor once)".into(),
        rgb: (90, 90, 90),
        points: ns
            .iter()
            .map(|&n| (n as f64, bytes_fused(&shape(n), DType::F16)))
            .collect(),
        markers: false,
    });
    super::figures::loglog(
        "Bytes through slow memory, one head, D = 64, fp16",
        "sequence length N",
        "bytes through slow memory",
        "B",
        &series,
        &[
            ("N=64 (verb sequence)", VERB_SEQ_LEN as f64),
            ("N=2048 (stress)", STRESS_SEQ_LEN as f64),
        ],
    )
    .unwrap_or_else(|e| format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{e}</text></svg>"))
}

fn hardware_bytes(
    files: &[(String, MeasurementFile)],
    variant: &str,
    n: usize,
    d: usize,
) -> Option<(f64, String)> {
    files.iter().find_map(|(_, f)| {
        f.records
            .iter()
            .find(|r| {
                r.variant == variant && r.nq == n && r.d == d && r.dram_bytes.is_some() && r.checked
            })
            .map(|r| {
                (
                    r.dram_bytes.unwrap_or_default() / (r.b * r.hq) as f64,
                    f.machine.name.clone(),
                )
            })
    })
}

fn bytes_table(files: &[(String, MeasurementFile)]) -> String {
    let d = 64;
    let mut rows = Vec::new();
    for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
        let s = AttnShape::self_attention(1, 1, n, d).expect("table shape");
        let mut rng = Rng::new(1);
        let q: Vec<f16> = crate::minimodel::numeric::convert(&rng.normal_vec_f32(s.q_len()));
        let naive = bytes_naive(&s, DType::F16);
        let hw = |v: &str| match hardware_bytes(files, v, n, d) {
            Some((b, m)) => format!("{} ({m})", si(b) + "B"),
            None => "not measured on this machine".into(),
        };
        rows.push(vec![
            format!("N={n}"),
            "naive".into(),
            si(naive) + "B",
            "—".into(),
            hw("naive"),
            "—".into(),
            "1x".into(),
        ]);
        for t in TABLE_TILES {
            let Tiles { br, bc } = t;
            // Counted: run the tiled kernel once with the counting view over slow memory.
            let mut o = vec![f16::ZERO; s.q_len()];
            let counter = Counter::default();
            tiled(
                &q,
                &q,
                &q,
                &s,
                Mask::NONE,
                &mut o,
                t,
                Isa::Portable,
                &counter,
            )
            .expect("valid call");
            let model = flash_traffic(&s, DType::F16, br, bc, Mask::NONE);
            let total = (model.loaded + model.stored) as f64;
            // SRAM of M elements holding the Q, K, V and O tiles: M = (2 Br + 2 Bc) D.
            let theta =
                flash_theta_elements(n, n, d, (2 * br + 2 * bc) * d) * DType::F16.bytes() as f64;
            rows.push(vec![
                format!("N={n}"),
                format!("flash, {br}x{bc} tiles"),
                si(total) + "B",
                si(counter.bytes() as f64) + "B",
                hw("flash"),
                si(theta) + "B",
                format!("{}x", sig3(naive / total)),
            ]);
        }
        rows.push(vec![
            format!("N={n}"),
            "ideal (each tensor once)".into(),
            si(bytes_fused(&s, DType::F16)) + "B",
            "—".into(),
            "—".into(),
            "—".into(),
            format!("{}x", sig3(naive / bytes_fused(&s, DType::F16))),
        ]);
    }
    let mut s = md_table(
        &[
            "length",
            "algorithm",
            "model bytes",
            "counted bytes",
            "hardware bytes",
            "N²D²/M bytes",
            "naive / this",
        ],
        &rows,
    );
    s += &format!(
        "\n*Table 01.1. One head, D = {d}, fp16, no mask. Model: `src/roofline/traffic.rs`; counted: the tiled \
         kernel run once through a counting view of slow memory (every tile load and store adds its bytes); \
         hardware: GPU DRAM counters from `measurements/`, per head, when a GPU run recorded them; the last \
         column but one is FlashAttention's asymptotic count with on-chip memory M = (2·Br + 2·Bc)·D elements, \
         the last the saving over naive.*\n"
    );
    s
}

fn cpu_table(files: &[(String, MeasurementFile)]) -> String {
    let cpu: Vec<&(String, MeasurementFile)> = files
        .iter()
        .filter(|(_, f)| f.machine.kind == "cpu")
        .collect();
    if cpu.is_empty() {
        return "*No CPU measurements are committed yet: run `bench/cpu.sh` (or `cargo run --release -- \
                measure-cpu`) to produce them.*\n"
            .into();
    }
    let mut out = String::new();
    for (name, f) in cpu {
        let peak = f.machine.peak_gflops;
        let mut configs: Vec<(String, usize, usize, String)> = Vec::new();
        // This table is the flash progression's (and PyTorch's beside it); the other variants have their own.
        let progression = |r: &&Record| ["naive", "online", "flash"].contains(&r.variant.as_str());
        for r in f.records.iter().filter(progression) {
            let key = (r.dtype.clone(), r.nq, r.d, r.mask.clone());
            if !configs.contains(&key) {
                configs.push(key);
            }
        }
        let mut rows = Vec::new();
        for (dtype, n, d, mask) in &configs {
            let mut recs: Vec<_> = f
                .records
                .iter()
                .filter(progression)
                .filter(|r| {
                    &r.dtype == dtype && r.nq == *n && r.d == *d && &r.mask == mask && r.checked
                })
                .collect();
            recs.sort_by(|a, b| a.ms.total_cmp(&b.ms));
            let torch = recs
                .iter()
                .find(|r| r.implementation.starts_with("torch/"))
                .map(|r| r.ms);
            for r in recs {
                let gflops = r.tflops * 1e3;
                rows.push(vec![
                    format!("{dtype} N={n} D={d} {mask}"),
                    format!("`{}`", r.implementation),
                    format!("{:.3}", r.ms),
                    sig3(gflops),
                    format!("{}%", sig3(100.0 * gflops / peak)),
                    torch.map_or("—".into(), |t| format!("{}x", sig3(t / r.ms))),
                ]);
            }
        }
        out += &md_table(
            &[
                "configuration",
                "implementation",
                "ms (median)",
                "GFLOP/s",
                "% of FMA peak",
                "speed vs PyTorch",
            ],
            &rows,
        );
        let when = provenance(f, f.records.iter().filter(progression));
        let failed = super::failed_checks(f.records.iter().filter(progression));
        out += &format!(
            "\n*Table 01.2. {} ({} threads), measured peak {} GFLOP/s and copy bandwidth {} GB/s; {}; \
             {when}. B·N = 2048 tokens, 4 heads; FLOPs = 4·B·H·N²·D, halved for causal. Every row was \
             checked against the f64 reference before it was timed (FlashAttention's rule, and at fp16 a \
             max error of at most 1e-3), PyTorch's on its own first heads; rows sorted by time within a \
             configuration.{failed} From `measurements/{name}`.*\n\n",
            f.machine.name,
            f.generated.threads,
            sig3(peak),
            sig3(f.machine.bandwidth_gbps),
            f.generated.rustc,
        );
    }
    out
}

/// When the rows were measured: each distinct commit and date among `records` (a section re-measured
/// alone carries its own), in order of first appearance.
fn provenance<'a>(f: &MeasurementFile, records: impl Iterator<Item = &'a Record>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for r in records {
        let w = f.when(r);
        if !seen.contains(&w) {
            seen.push(w);
        }
    }
    if seen.is_empty() {
        format!("commit {}, {}", f.generated.commit, f.generated.date)
    } else {
        seen.join("; ")
    }
}
