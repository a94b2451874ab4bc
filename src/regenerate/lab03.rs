//! Lab 03's table: the fraction of KV memory that holds tokens, and how many sequences fit, when the same
//! seeded request trace is served from contiguous reservations and from the block manager.

use super::{md_table, Artifact};
use crate::minimodel::paged::replay::{replay, trace, Layout, Request, Reserve, TraceConfig};
use crate::roofline::sig3;

/// Token slots in the simulated KV pool: 4096 blocks of 16, room for 32 maximum-length reservations.
pub const CAPACITY: usize = 4096 * 16;

/// Lab 03's generated files.
pub fn render(files: &[(String, crate::measure::MeasurementFile)]) -> Vec<Artifact> {
    vec![
        Artifact {
            name: "lab03_memory.md",
            contents: memory_table(),
        },
        Artifact {
            name: "lab03_decode.md",
            contents: decode_table(files),
        },
    ]
}

/// Table 03.2: paged decode against contiguous decode on the same tokens, from the CPU measurements.
fn decode_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    use crate::roofline::si;
    let mut out = String::new();
    for (name, f) in files.iter().filter(|(_, f)| f.machine.kind == "cpu") {
        let recs: Vec<_> = f
            .records
            .iter()
            .filter(|r| r.variant == "paged_decode" && r.checked)
            .collect();
        if recs.is_empty() {
            continue;
        }
        let mut rows = Vec::new();
        for dtype in ["f32", "f16"] {
            let base = recs
                .iter()
                .find(|r| r.dtype == dtype && r.implementation == "ours/contiguous");
            for r in recs.iter().filter(|r| r.dtype == dtype) {
                rows.push(vec![
                    dtype.to_string(),
                    format!("`{}`", r.implementation),
                    format!("{:.3}", r.ms),
                    sig3(r.gbps),
                    si(r.bytes_model) + "B",
                    base.map_or("—".into(), |b| {
                        format!("{:+.1}%", 100.0 * (r.ms / b.ms - 1.0))
                    }),
                ]);
            }
        }
        let r0 = recs[0];
        out += &md_table(
            &[
                "dtype",
                "kernel",
                "ms (median)",
                "GB/s",
                "bytes per step",
                "vs contiguous",
            ],
            &rows,
        );
        out += &format!(
            "\n*Table 03.2. One decode step of {} sequences of {} tokens, GQA {}/{} heads, D = {}, block size 16, on \
             the same data for all three (paged tables shuffled); each checked against the f64 reference first; \
             timed in interleaved rounds. {} ({} threads), copy bandwidth {} GB/s; commit {}, {}; from \
             `measurements/{name}`.*\n",
            r0.b,
            r0.nk,
            r0.hq,
            r0.hkv,
            r0.d,
            f.machine.name,
            f.generated.threads,
            sig3(f.machine.bandwidth_gbps),
            f.generated.commit,
            f.generated.date
        );
        break;
    }
    if out.is_empty() {
        out = "*No paged decode measurements are committed yet: run `cargo run --release -- measure-cpu`.*\n".into();
    }
    out
}

/// Mean, median and 99th percentile of `xs`.
fn summary(mut xs: Vec<usize>) -> String {
    xs.sort_unstable();
    let mean = xs.iter().sum::<usize>() as f64 / xs.len().max(1) as f64;
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    format!(
        "mean {:.0}, median {}, 99th percentile {}",
        mean,
        at(0.5),
        at(0.99)
    )
}

fn memory_table() -> String {
    let cfg = TraceConfig::BOOK;
    let reqs: Vec<Request> = trace(&cfg);
    let layouts = [
        (
            Layout::Contiguous {
                reserve: Reserve::Max,
            },
            "contiguous, reserve the maximum length",
            format!("{}", cfg.max_len),
        ),
        (
            Layout::Contiguous {
                reserve: Reserve::Oracle,
            },
            "contiguous, reserve the true final length (oracle)",
            "prompt + output".to_string(),
        ),
        (
            Layout::Paged { block_size: 128 },
            "paged, blocks of 128 (block manager)",
            "⌈tokens / 128⌉ · 128".to_string(),
        ),
        (
            Layout::Paged { block_size: 16 },
            "paged, blocks of 16 (block manager)",
            "⌈tokens / 16⌉ · 16".to_string(),
        ),
    ];
    let mut rows = Vec::new();
    let mut baseline = None;
    for (layout, name, held) in layouts {
        let st = replay(&reqs, layout, CAPACITY, cfg.max_len);
        let base = *baseline.get_or_insert(st.mean_running());
        rows.push(vec![
            name.to_string(),
            held,
            format!("{}%", sig3(100.0 * st.used_fraction())),
            sig3(st.mean_running()),
            format!("{}×", sig3(st.mean_running() / base)),
            st.peak_running.to_string(),
            st.steps.to_string(),
            st.preemptions.to_string(),
        ]);
    }
    let mut out = md_table(
        &[
            "KV cache layout",
            "slots held per sequence",
            "held slots holding tokens",
            "mean sequences running",
            "vs. maximum reservation",
            "peak running",
            "steps to serve the trace",
            "preemptions",
        ],
        &rows,
    );
    out += &format!(
        "\n*Table 03.1. The same {} requests served from a pool of {} token slots (room for {} reservations of \
         the maximum length {}), all waiting at step 0, admitted first come first served; each step every \
         running sequence gains one token. Prompt lengths: {}; output lengths: {} (log-normal, medians {} and {}, \
         log-space sigma {} and {}, seed {}, cut so that prompt + output ≤ {}). \"Held slots holding tokens\" sums \
         tokens stored over slots held across all steps. Contiguous rows count slots only (no external \
         fragmentation), so they are upper bounds. Paged rows run the crate's block manager (watermark 1%; a \
         sequence that finds no free block preempts the most recently admitted one, which is recomputed later). \
         From `src/minimodel/paged/replay.rs`.*\n",
        cfg.requests,
        CAPACITY,
        CAPACITY / cfg.max_len,
        cfg.max_len,
        summary(reqs.iter().map(|r| r.prompt).collect()),
        summary(reqs.iter().map(|r| r.output).collect()),
        cfg.prompt_median,
        cfg.output_median,
        cfg.prompt_sigma,
        cfg.output_sigma,
        cfg.seed,
        cfg.max_len,
    );
    out
}
