//! The phase's bar: a roofline per machine with naive, Flash and decode (MHA and MQA)
//! dots at both anchors, N = 64 (the verb sequence, filled circles) and N = 2048 (hollow triangles),
//! from the committed measurements, with a table of predicted against measured for every dot.

use super::figures::{roofline, Dot};
use super::{md_table, Artifact};
use crate::measure::{MeasurementFile, Record};
use crate::minimodel::config::{STRESS_SEQ_LEN, VERB_SEQ_LEN};
use crate::roofline::{si, sig3};

/// What the "with exponentials" columns are, and where this machine's exponential rate came from.
fn exp_note(f: &MeasurementFile, rate: f64) -> String {
    let source = match (f.machine.kind.as_str(), f.machine.exp_per_s.is_some()) {
        ("gpu", true) => "measured on the special function units with `ex2_rate` (`kernels/ceilings.cu`, \
                          Theory 00), which a kernel that overlaps them with the products (v7, v8, cuDNN) may pass",
        ("gpu", false) => "the programming guide's 16 exponentials per clock per SM at the card's maximum clock \
                           (`src/roofline/spec.rs`), which a kernel that overlaps them (v7, v8, cuDNN) may pass",
        _ => "measured with the crate's own `2^x`, which shares the vector units with the products",
    };
    format!(
        "\n*With exponentials: the bound lowered by the softmax's one exponential per score (4 D FLOPs a \
         score) when they do not run under the products, FLOPs / (FLOPs / peak + exponentials / rate); the \
         rate, {} exponentials/s, {source}.*\n",
        si(rate)
    )
}

/// Whether a record's kernel is built on the warp-level `mma.sync` (our v1b, v4 and v5,
/// FlashAttention-2).
fn uses_mma_sync(r: &Record) -> bool {
    r.implementation.starts_with("ours/v1b")
        || r.implementation.starts_with("ours/v4")
        || r.implementation.starts_with("ours/v5")
        || r.implementation == "torch/flash"
}

/// Which records make dots, and how they are drawn: (label, colour, selector).
type Pick = (&'static str, (u8, u8, u8), fn(&Record) -> bool);

/// The checked record that makes `pick`'s dot at length `n` (any length for `None`). Where several
/// match (naive: the textbook v1 and v1b, the same passes with the Flash kernels' loops), v1b's.
fn dot_record(f: &MeasurementFile, pick: fn(&Record) -> bool, n: Option<usize>) -> Option<&Record> {
    let matching = || {
        f.records
            .iter()
            .filter(move |r| pick(r) && r.checked && n.is_none_or(|n| r.nk == n))
    };
    matching()
        .find(|r| r.implementation.starts_with("ours/v1b"))
        .or_else(|| matching().next())
}

const CPU_PICKS: [Pick; 10] = [
    // The naive algorithm with v3's loops (v1b), so that the dot differs from Flash's by the bytes;
    // a file from before v1b has the textbook loops (v1) only.
    ("naive", (200, 40, 40), |r| {
        r.variant == "naive" && r.dtype == "f32" && r.d == 64 && r.mask == "none"
    }),
    ("flash", (40, 90, 200), |r| {
        r.variant == "flash"
            && r.implementation == "ours/v3_tiled"
            && r.dtype == "f32"
            && r.d == 64
            && r.mask == "none"
    }),
    ("sliding-window flash", (90, 160, 220), |r| {
        r.variant == "flash_window"
    }),
    ("GQA flash", (20, 40, 120), |r| r.variant == "flash_gqa"),
    ("PyTorch SDPA", (120, 120, 120), |r| {
        r.variant == "flash"
            && r.implementation == "torch/cpu"
            && r.dtype == "f32"
            && r.d == 64
            && r.mask == "none"
    }),
    ("MHA decode", (200, 120, 20), |r| {
        r.variant == "decode" && r.hkv == r.hq
    }),
    ("MQA decode", (20, 150, 90), |r| {
        r.variant == "decode" && r.hkv == 1
    }),
    ("paged decode", (140, 60, 170), |r| {
        r.implementation == "ours/paged-v1" && r.dtype == "f32"
    }),
    ("contiguous decode", (230, 150, 210), |r| {
        r.variant == "paged_decode" && r.implementation == "ours/contiguous" && r.dtype == "f32"
    }),
    ("paged decode, pool order", (90, 30, 110), |r| {
        r.variant == "paged_decode" && r.implementation == "ours/paged-pool" && r.dtype == "f32"
    }),
];

const GPU_PICKS: [Pick; 9] = [
    // The naive algorithm on the tensor cores (v1b) where measured, else v1.
    ("naive", (200, 40, 40), |r| {
        r.variant == "naive" && r.d == 64 && r.mask == "none"
    }),
    ("flash v5 (ours)", (40, 90, 200), |r| {
        r.variant == "flash"
            && r.implementation == "ours/v5_cp_async"
            && r.d == 64
            && r.mask == "none"
    }),
    ("flash v7 (ours)", (0, 160, 200), |r| {
        r.variant == "flash"
            && r.implementation == "ours/v7_overlap"
            && r.d == 64
            && r.mask == "none"
    }),
    ("flash v8 (ours)", (230, 0, 130), |r| {
        r.variant == "flash" && r.implementation == "ours/v8_tma" && r.d == 64 && r.mask == "none"
    }),
    ("FA2 in PyTorch", (120, 120, 120), |r| {
        r.variant == "flash" && r.implementation == "torch/flash" && r.d == 64 && r.mask == "none"
    }),
    ("cuDNN", (20, 150, 90), |r| {
        r.variant == "flash" && r.implementation == "torch/cudnn" && r.d == 64 && r.mask == "none"
    }),
    ("paged decode (ours)", (140, 60, 170), |r| {
        r.variant == "paged_decode" && r.implementation == "ours/gpu-paged"
    }),
    ("contiguous decode (ours)", (230, 150, 210), |r| {
        r.variant == "paged_decode" && r.implementation == "ours/gpu-contiguous"
    }),
    ("cuDNN decode", (200, 120, 20), |r| {
        r.variant == "paged_decode" && r.implementation == "torch/cudnn"
    }),
];

/// The CPU and GPU roofline figures and their tables (from the first file of each kind).
pub fn render(files: &[(String, MeasurementFile)]) -> Vec<Artifact> {
    let mut out = render_kind(
        files,
        "cpu",
        &CPU_PICKS,
        "roofline_cpu.svg",
        "roofline_cpu.md",
    );
    out.extend(render_kind(
        files,
        "gpu",
        &GPU_PICKS,
        "roofline_gpu.svg",
        "roofline_gpu.md",
    ));
    // A second card's own roofline, where one is committed (its tables tagged `b`).
    let (svg, md) = match files.iter().filter(|(_, f)| f.machine.kind == "gpu").nth(1) {
        Some((name, f)) => machine_roofline(name, f, &GPU_PICKS, "b"),
        None => (
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"40\"><text x=\"4\" y=\"24\">no second GPU card committed</text></svg>\n".to_string(),
            "*Only one GPU card's measurements are committed.*\n".to_string(),
        ),
    };
    out.push(Artifact {
        name: "roofline_gpu2.svg",
        contents: svg,
    });
    out.push(Artifact {
        name: "roofline_gpu2.md",
        contents: md,
    });
    out.push(Artifact {
        name: "roofline_cards.md",
        contents: cards_table(files),
    });
    out
}

// ANCHOR: cards_table
/// Table G.3: the same dots on two GPU cards. For each, the speed-up the roofs predict when the code
/// moves from the first committed card to another (the ratio of the two cards' bounds at the dot's
/// intensity: their bandwidths' ratio for a memory-bound dot, their peaks' for a compute-bound one)
/// beside the speed-up measured.
fn cards_table(files: &[(String, MeasurementFile)]) -> String {
    let gpus: Vec<_> = files
        .iter()
        .filter(|(_, f)| f.machine.kind == "gpu")
        .collect();
    let [(name_a, a), rest @ ..] = gpus.as_slice() else {
        return "*No GPU measurements are committed yet.*\n".into();
    };
    if rest.is_empty() {
        return "*Only one GPU card's measurements are committed: no second card to predict.*\n"
            .into();
    }
    let bound = |f: &MeasurementFile, intensity: f64| {
        (intensity * f.machine.bandwidth_gbps * 1e9).min(f.machine.peak_gflops * 1e9)
    };
    let mut out = String::new();
    for (name_b, b) in rest {
        let mut rows = Vec::new();
        for &(label, _, pick) in GPU_PICKS.iter() {
            // N = 2048, and decode also where its fixed costs are small next to its reads. (At N = 64
            // every GPU dot is a launch: no roof applies, and both cards take the same time.)
            for n in [STRESS_SEQ_LEN, 16384, 65536] {
                let (Some(ra), Some(rb)) =
                    (dot_record(a, pick, Some(n)), dot_record(b, pick, Some(n)))
                else {
                    continue;
                };
                if ra.implementation != rb.implementation {
                    continue; // one card has the naive dot's v1b, the other only v1: not the same kernel
                }
                if n != STRESS_SEQ_LEN && ra.variant != "paged_decode" {
                    continue;
                }
                let intensity = ra.flops / ra.bytes_model;
                let (ba, bb) = (bound(a, intensity), bound(b, intensity));
                let by = if intensity * a.machine.bandwidth_gbps < a.machine.peak_gflops {
                    "memory"
                } else {
                    "compute"
                };
                let attained = |r: &Record| r.flops / (r.ms * 1e-3);
                rows.push(vec![
                    format!("{label}, N={n}"),
                    sig3(intensity),
                    by.into(),
                    format!("{}x", sig3(bb / ba)),
                    format!("{}x", sig3(ra.ms / rb.ms)),
                    format!("{}%", sig3(100.0 * attained(ra) / ba)),
                    format!("{}%", sig3(100.0 * attained(rb) / bb)),
                    format!("{} / {}", commit_of(a, ra), commit_of(b, rb)),
                ]);
            }
        }
        let (short_a, short_b) = (short(&a.machine.name), short(&b.machine.name));
        let of_a = format!("{short_a}: of its bound");
        let of_b = format!("{short_b}: of its bound");
        out += &md_table(
            &[
                "dot",
                "FLOP/byte",
                "bound by",
                "predicted speed-up (ratio of the bounds)",
                "measured speed-up",
                &of_a,
                &of_b,
                "commits",
            ],
            &rows,
        );
        out += &format!(
            "\n*Table G.3. The dots of Table G.1 measured on two cards: the speed-up on the {} \
             over the {} that the two rooflines predict (each card's min(peak, intensity x copy bandwidth) at the \
             dot's intensity), the speed-up measured (time on the {short_a} over time on the {short_b}), and each \
             card's share of its own bound. Intensity and bound as in Table G.1: from the model's bytes, which for our \
             tiled kernels (v5, v7) charge every re-read of K and V to DRAM where the L2 serves most of them \
             (Table G.2), so those two are compute bound in fact although the model's bytes say memory. Commits: \
             the code each card's dot was measured at ({short_a} / {short_b}); where they differ, the kernel \
             may have changed between the two runs, and the measured speed-up is then not the card's alone. Roofs: {short_a} {} TFLOP/s and {} GB/s, {short_b} {} TFLOP/s and {} \
             GB/s (PyTorch's fp16 matrix product and device copy, measured in each card's run). From \
             `measurements/{name_a}` ({}) and `measurements/{name_b}` ({}).*\n",
            b.machine.name,
            a.machine.name,
            sig3(a.machine.peak_gflops / 1e3),
            sig3(a.machine.bandwidth_gbps),
            sig3(b.machine.peak_gflops / 1e3),
            sig3(b.machine.bandwidth_gbps),
            a.generated.date,
            b.generated.date,
        );
    }
    out
}
// ANCHOR_END: cards_table

/// The commit a record was measured at (`commit C, date` -> `C`).
fn commit_of(f: &MeasurementFile, r: &Record) -> String {
    let when = f.when(r);
    when.strip_prefix("commit ")
        .and_then(|x| x.split(',').next())
        .unwrap_or(&when)
        .to_string()
}

/// The letter of a machine's roofline tables: `R` for a CPU, `G` for a GPU card.
fn series(f: &MeasurementFile) -> char {
    if f.machine.kind == "gpu" {
        'G'
    } else {
        'R'
    }
}

/// A card's short name for column heads: `NVIDIA H100 80GB HBM3` -> `H100`.
fn short(name: &str) -> &str {
    name.split_whitespace()
        .find(|w| {
            w.chars().any(|c| c.is_ascii_digit()) && w.chars().any(|c| c.is_ascii_alphabetic())
        })
        .unwrap_or(name)
}

fn render_kind(
    files: &[(String, MeasurementFile)],
    kind: &str,
    picks: &[Pick],
    svg_name: &'static str,
    md_name: &'static str,
) -> Vec<Artifact> {
    let (svg, md) = match files.iter().find(|(_, f)| f.machine.kind == kind) {
        Some((name, f)) => machine_roofline(name, f, picks, ""),
        None => (
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"40\"><text x=\"4\" y=\"24\">no {kind} measurements committed</text></svg>\n"
            ),
            format!("*No {kind} measurements are committed yet.*\n"),
        ),
    };
    vec![
        Artifact {
            name: svg_name,
            contents: svg,
        },
        Artifact {
            name: md_name,
            contents: md,
        },
    ]
}

/// One machine's roofline figure and its tables; `tag` follows the tables' numbers (R.1`tag` for a CPU,
/// G.1`tag` for a GPU card, so that the two chapters that include them never share a number).
fn machine_roofline(
    name: &str,
    f: &MeasurementFile,
    picks: &[Pick],
    tag: &str,
) -> (String, String) {
    let series = series(f);
    let (peak, bw) = (f.machine.peak_gflops * 1e9, f.machine.bandwidth_gbps * 1e9);
    let mut dots = Vec::new();
    let mut rows = Vec::new();
    // One thread's roof, for the dots of kernels that ran on one thread.
    let one = match (f.machine.peak_gflops_1t, f.machine.bandwidth_gbps_1t) {
        (Some(p1), Some(b1)) => Some((p1 * 1e9, b1 * 1e9)),
        _ => None,
    };
    let mut uses_one = false;
    let mut counted_rows = Vec::new();
    // The exponential rate, measured (`exp_per_s`); none measured, no column of it.
    let exp_rate = f.machine.exp_per_s;
    let exp_cols = ["with exponentials", "of that"];
    // The read-only roof, for the dots of kernels that only read their operands (decode: one query
    // token against a cache) on all threads: the fastest read measured on the machine (on a GPU also
    // the decode kernel's own read pass, Lab 03). None is measured for one thread, and the one-thread
    // decode dots read a cache-resident layer anyway (Table R.1's copy roof already shows them above it).
    let read_roof = f
        .machine
        .read_gbps
        .map(|_| super::lab03::read_roof(f) * 1e9);
    for &(label, rgb, pick) in picks {
        for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
            let Some(r) = dot_record(f, pick, Some(n)) else {
                continue;
            };
            let intensity = r.flops / r.bytes_model;
            let attained = r.flops / (r.ms * 1e-3);
            let (peak, bw, roof) = match (r.threads, one) {
                (Some(1), Some((p1, b1))) => {
                    uses_one = true;
                    (p1, b1, "one thread")
                }
                _ => (peak, bw, "all threads"),
            };
            let predicted = (intensity * bw).min(peak);
            // The compute roof lowered by the softmax's exponentials (one per score, 4 D FLOPs a
            // score), when they do not overlap the products: FLOPs / (FLOPs / peak + exps / rate).
            // A one-thread dot gets its share of the all-thread exponential rate.
            let share_of_rate = if roof == "one thread" {
                1.0 / f.generated.threads.max(1) as f64
            } else {
                1.0
            };
            let with_exps = |bound: f64| {
                exp_rate.map(|rate| {
                    let rate = rate * share_of_rate;
                    let exps = r.flops / (4.0 * r.d as f64);
                    bound.min(r.flops / (r.flops / peak + exps / rate))
                })
            };
            let share = |b: f64| format!("{}%", sig3(100.0 * attained / b));
            if let Some(dram) = r.dram_bytes.filter(|b| *b > 0.0) {
                let counted = r.flops / dram;
                let bound = (counted * bw).min(peak);
                let mut row = vec![
                    format!("{label}, N={n}"),
                    sig3(intensity),
                    sig3(counted),
                    si(bound) + "FLOP/s",
                    si(attained) + "FLOP/s",
                    share(bound),
                    if counted * bw < peak {
                        "memory"
                    } else {
                        "compute"
                    }
                    .into(),
                ];
                if let Some(b) = with_exps(bound) {
                    row.extend([si(b) + "FLOP/s", share(b)]);
                }
                counted_rows.push(row);
            }
            dots.push(Dot {
                label: format!("{label}, N={n}"),
                intensity,
                flops: attained,
                rgb,
                filled: n == VERB_SEQ_LEN,
            });
            let mut row = vec![
                format!("{label}, N={n}"),
                format!("`{}`", r.implementation),
                roof.into(),
                sig3(intensity),
                si(predicted) + "FLOP/s",
                si(attained) + "FLOP/s",
                share(predicted),
                if intensity * bw < peak {
                    "memory"
                } else {
                    "compute"
                }
                .into(),
            ];
            if let Some(b) = with_exps(predicted) {
                row.extend([si(b) + "FLOP/s", share(b)]);
            }
            // The roof with nothing overlapped: the products, the model's bytes and the exponentials
            // one after another, FLOPs / (FLOPs / peak + bytes / bandwidth + exponentials / rate). The
            // two-number roof's min() assumes a kernel that overlaps its loads with its arithmetic
            // perfectly; a kernel of separate passes (naive's three) pays closer to this sum.
            let exps_time = exp_rate.map_or(0.0, |rate| {
                r.flops / (4.0 * r.d as f64) / (rate * share_of_rate)
            });
            let serial = r.flops / (r.flops / peak + r.bytes_model / bw + exps_time);
            row.extend([si(serial) + "FLOP/s", share(serial)]);
            if let Some(all) = read_roof {
                if r.nq == 1 && roof == "all threads" {
                    let b = (intensity * all).min(peak);
                    row.extend([si(b) + "FLOP/s", share(b)]);
                } else {
                    row.extend(["—".to_string(), "—".to_string()]);
                }
            }
            // A kernel built on `mma.sync` against that instruction's measured rate.
            if let Some(mma) = f.machine.mma_sync_gflops.map(|g| g * 1e9) {
                if uses_mma_sync(r) {
                    let mut b = (intensity * bw).min(mma);
                    if let Some(rate) = exp_rate {
                        b = b.min(r.flops / (r.flops / mma + r.flops / (4.0 * r.d as f64) / rate));
                    }
                    row.extend([si(b) + "FLOP/s", share(b)]);
                } else {
                    row.extend(["—".to_string(), "—".to_string()]);
                }
            }
            rows.push(row);
        }
    }
    // Records re-measured after the file's main run carry their own commit and date.
    let later: Vec<String> = picks
        .iter()
        .filter_map(|&(label, _, pick)| {
            dot_record(f, pick, None)
                .and_then(|r| r.measured.as_ref().map(|m| format!("{label}: {m}")))
        })
        .collect();
    // The figure's caption stays one line; the table's carries every dot's provenance.
    let units = if f.machine.kind == "gpu" {
        format!("{} SMs", f.machine.cores)
    } else {
        format!("{} threads", f.generated.threads)
    };
    let peak_text = if f.machine.kind == "gpu" {
        format!("{} TFLOP/s", sig3(f.machine.peak_gflops / 1e3))
    } else {
        format!("{} GFLOP/s", sig3(f.machine.peak_gflops))
    };
    let head = format!(
        "{}, {units}: peak {peak_text}, copy {} GB/s ({}, commit {}",
        f.machine.name,
        sig3(f.machine.bandwidth_gbps),
        f.generated.date,
        f.generated.commit,
    );
    let (caption, provenance) = if later.is_empty() {
        (format!("{head})"), format!("{head})"))
    } else {
        (
            format!("{head}; later dots: Table {series}.1{tag})"),
            format!("{head}; {})", later.join("; ")),
        )
    };
    let second = one
        .filter(|_| uses_one)
        .map(|(p1, b1)| ("one thread's roof", p1, b1));
    let svg = roofline(&caption, peak, bw, second, &dots).unwrap_or_else(|e| {
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{e}</text></svg>")
    });
    let mut head_r1 = vec![
        "dot",
        "implementation",
        "roof",
        "FLOP/byte",
        "roofline bound",
        "measured",
        "of the bound",
        "bound by",
    ];
    if exp_rate.is_some() {
        head_r1.extend(exp_cols);
    }
    head_r1.extend(["no overlap", "of that"]);
    if read_roof.is_some() {
        head_r1.extend(["read roof (decode)", "of that"]);
    }
    if f.machine.mma_sync_gflops.is_some() {
        head_r1.extend(["mma.sync roof", "of that"]);
    }
    let mut md = md_table(&head_r1, &rows);
    // A run a dot would have come from that failed its check: named, not silently replaced or dropped.
    let failed = super::failed_checks(picks.iter().flat_map(|&(_, _, pick)| {
        f.records
            .iter()
            .filter(move |r| pick(r) && [VERB_SEQ_LEN, STRESS_SEQ_LEN].contains(&r.nk))
    }));
    md += &format!(
        "\n*Table {series}.1{tag}. Every dot of the roofline figure: intensity from the traffic model (FLOPs over model \
         bytes), the roof's bound at that intensity (min(peak, intensity x bandwidth)), the measured rate, and \
         the share of the bound it reaches. A kernel timed on one thread is judged against one thread's \
         measured peak and copy bandwidth (the grey roof, where drawn), the others against all threads'.{failed} {provenance}; from `measurements/{name}`. {}*\n",
        if f.machine.kind == "gpu" {
            "Naive and flash: fp16, D = 64, B·N = 16k tokens, H = 32; paged and cuDNN decode: one step of 16 \
             sequences of N tokens, GQA 32/8, D = 128, fp16 (Lab 03)."
        } else {
            "Naive and flash: f32, D = 64, B·N = 2048 tokens, 4 heads; sliding-window flash: the same with a causal \
             window of N/8 keys; GQA flash: 8 query heads over 2 kv heads; MHA/MQA decode: one MiniGPT layer, one \
             thread; paged decode: 16 sequences, GQA 8/2, D = 128, block 16 (Lab 03)."
        }
    );
    if let Some(rate) = exp_rate {
        md += &exp_note(f, rate);
    }
    md += &format!(
        "\n*No overlap: the bound of a kernel that overlaps nothing, its products at the peak, its model bytes at the \
         bandwidth and {}one after another: FLOPs / (FLOPs / peak + bytes / bandwidth{}). The roofline bound \
         assumes the opposite, loads fully hidden under arithmetic or the reverse; a kernel of separate passes \
         (naive: scores, softmax, P V) sits near this one, a fused kernel can pass it.*\n",
        if exp_rate.is_some() { "its exponentials at their rate, " } else { "" },
        if exp_rate.is_some() { " + exponentials / rate" } else { "" },
    );
    if let Some(rd) = read_roof {
        md += &format!(
            "\n*Read roof (decode): a kernel on all threads that only reads its cache (one query token) against \
             {}, {} GB/s (the copy's rate counts a read and a write per element, and a machine need not read \
             alone at that rate), with the peak as before.*\n",
            if f.machine.kind == "gpu" {
                "the fastest read-only rate measured on this card (`read_bandwidth`'s readers, or the \
                 decode kernel's read pass where faster)"
            } else {
                "the fastest read-only rate measured on this machine (`read_bandwidth`: every thread sums its \
                 share of 256 MB, nothing written; or Lab 03's read passes, which ask for their next lines \
                 early, where faster)"
            },
            sig3(rd / 1e9),
        );
    }
    if let Some(mma) = f.machine.mma_sync_gflops {
        md += &format!(
            "\n*mma.sync roof: for the kernels built on the warp-level `mma.sync` (v4, v5, FlashAttention-2), \
             the tensor cores' rate through that instruction, {} TFLOP/s measured with `mma_rate` \
             (`kernels/ceilings.cu`), in place of the matrix product's peak (which Hopper's `wgmma` \
             reaches), with the exponentials as in the column before.*\n",
            sig3(mma / 1e3)
        );
    }
    if !counted_rows.is_empty() {
        md += "\n";
        let mut head_r2 = vec![
            "dot",
            "model FLOP/byte",
            "counted FLOP/byte",
            "bound there",
            "measured",
            "of that bound",
            "bound by",
        ];
        if exp_rate.is_some() {
            head_r2.extend(exp_cols);
        }
        md += &md_table(&head_r2, &counted_rows);
        md += &format!(
            "\n*Table {series}.2{tag}. The dots whose DRAM traffic the hardware counted (`ncu`, Lab 02's DRAM table): \
             intensity from the counted bytes instead of the model's, and the roof's bound there. The model \
             charges every re-read of K and V to DRAM; the counters see what the L2 did not serve, so a dot \
             above its model bound (Table {series}.1{tag}) is placed here by the bytes that really moved.*\n"
        );
    }
    (svg, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With an `mma.sync` rate in a GPU file, Table G.1 judges v5 and FlashAttention-2 against it (and
    /// only them), at min(intensity x bandwidth, rate) lowered by the exponentials.
    #[test]
    fn mma_sync_kernels_get_their_instruction_s_roof() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
        let files = crate::measure::load_all(&dir).expect("readable measurements");
        let Some((name, f)) = files.iter().find(|(_, f)| f.machine.kind == "gpu") else {
            return; // no GPU file committed: nothing to render
        };
        let mut f = f.clone();
        f.machine.mma_sync_gflops = Some(500_000.0);
        let (_, md) = machine_roofline(name, &f, &GPU_PICKS, "");
        let head = md.lines().next().expect("a header");
        assert!(head.ends_with("| mma.sync roof | of that |"), "{head}");
        let v5 = md
            .lines()
            .find(|l| l.starts_with("| flash v5 (ours), N=2048"))
            .expect("v5's dot");
        let naive = md
            .lines()
            .find(|l| l.starts_with("| naive, N=2048"))
            .expect("the naive dot");
        assert!(!v5.ends_with("| — | — |"), "{v5}");
        assert!(naive.ends_with("| — | — |"), "{naive}");
        assert!(md.contains("500 TFLOP/s measured with `mma_rate`"), "{md}");
    }

    /// The naive dot is v1b's where a file has it (the naive algorithm with the Flash kernels' loops)
    /// and v1's otherwise; the no-overlap column is in every Table R.1 and G.1.
    #[test]
    fn the_naive_dot_prefers_v1b() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
        let files = crate::measure::load_all(&dir).expect("readable measurements");
        for (name, f) in files.iter().filter(|(_, f)| f.machine.kind == "gpu") {
            let picks = &GPU_PICKS[..1];
            let (_, md) = machine_roofline(name, f, picks, "");
            assert!(md
                .lines()
                .next()
                .is_some_and(|h| h.contains("| no overlap | of that |")));
            let has_v1b = f
                .records
                .iter()
                .any(|r| r.implementation == "ours/v1b_naive_mma" && r.checked);
            let row = md
                .lines()
                .find(|l| l.starts_with("| naive, N=2048"))
                .expect("a naive dot");
            let want = if has_v1b {
                "`ours/v1b_naive_mma`"
            } else {
                "`ours/v1_naive`"
            };
            assert!(row.contains(want), "{name}: {row}");
            // Without v1b's records the same file falls back to v1.
            let mut g = f.clone();
            g.records
                .retain(|r| r.implementation != "ours/v1b_naive_mma");
            let (_, md) = machine_roofline(name, &g, picks, "");
            assert!(md.contains("| naive, N=2048 | `ours/v1_naive`"), "{md}");
        }
    }

    /// With a read rate in a CPU file, Table R.1 judges the all-thread decode dot (paged decode) against
    /// min(peak, intensity x read), and no other dot (the one-thread decode dots and the prefill dots
    /// get a dash).
    #[test]
    fn all_thread_decode_dots_get_the_read_roof() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
        let files = crate::measure::load_all(&dir).expect("readable measurements");
        let Some((name, f)) = files.iter().find(|(_, f)| f.machine.kind == "cpu") else {
            return;
        };
        let mut f = f.clone();
        f.machine.read_gbps = Some(10.0);
        f.records.retain(|r| r.variant != "paged_read"); // else the fastest read pass is the roof
        let (_, md) = machine_roofline(name, &f, &CPU_PICKS, "");
        let head = md.lines().next().expect("a header");
        assert!(head.contains("| read roof (decode) | of that |"), "{head}");
        let row = |start: &str| {
            md.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start}"))
                .to_string()
        };
        let paged = row("| paged decode, N=2048");
        let r = f
            .records
            .iter()
            .find(|r| r.implementation == "ours/paged-v1" && r.nk == 2048 && r.checked)
            .expect("the paged dot");
        // Intensity x 10 GB/s (far below the peak), as the table writes it.
        let bound = r.flops / r.bytes_model * 10e9;
        assert!(
            paged.contains(&format!("| {}FLOP/s |", crate::roofline::si(bound))),
            "{paged}"
        );
        assert!(row("| flash, N=2048").ends_with("| — | — |"));
        assert!(
            row("| MHA decode, N=2048").ends_with("| — | — |"),
            "one thread"
        );
        assert!(md.contains("10.0 GB/s"), "the note names the rate");
    }
}
