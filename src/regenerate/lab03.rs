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
        Artifact {
            name: "lab03_cpu_orders.md",
            contents: cpu_order_table(files),
        },
        Artifact {
            name: "lab03_cpu_blocks.md",
            contents: cpu_block_table(files),
        },
        Artifact {
            name: "lab03_gpu_decode.md",
            contents: gpu_decode_table(files),
        },
        Artifact {
            name: "lab03_gpu_sweep.md",
            contents: gpu_sweep_table(files),
        },
        Artifact {
            name: "lab03_gpu_rounds.md",
            contents: gpu_rounds_table(files),
        },
        Artifact {
            name: "lab03_scatter.md",
            contents: scatter_table(),
        },
        Artifact {
            name: "lab03_gpu_launch.md",
            contents: gpu_launch_table(files),
        },
        Artifact {
            name: "lab03_gpu_decode.svg",
            contents: gpu_decode_figure(files),
        },
    ]
}

/// Figure 03.1: every card's decode rate against the context, ours (paged) beside PyTorch's default
/// dispatch on the contiguous copy, each card's read roof as a flat line (log-log).
fn gpu_decode_figure(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    use super::figures::{semilog2x, Series};
    let blank =
        |e: String| format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{e}</text></svg>");
    let cards = match gpu_cards(files, "paged_decode", "no GPU decode committed") {
        Ok(c) => c,
        Err(e) => return blank(e),
    };
    // One hue a card: ours dark, PyTorch light, the roof grey-tinted.
    let hues = [
        ((20, 70, 170), (110, 160, 230), (150, 170, 200)),
        ((190, 80, 10), (240, 160, 90), (210, 180, 150)),
        ((20, 130, 70), (110, 200, 140), (160, 200, 170)),
    ];
    let mut series = Vec::new();
    let mut whens = Vec::new();
    for ((_, f, recs, _), (dark, light, roof)) in cards.iter().zip(hues.iter().cycle()) {
        let card = f.machine.name.trim_start_matches("NVIDIA ");
        let card = card.split_whitespace().next().unwrap_or(card);
        // From 2k tokens: at 64 every kernel is a launch and no rate means much.
        let line = |imp: &str| -> Vec<(f64, f64)> {
            recs.iter()
                .filter(|r| r.implementation == imp && r.nk >= 2048)
                .map(|r| (r.nk as f64, r.gbps * 1e9))
                .collect()
        };
        let ours = line("ours/gpu-paged");
        if let (Some(first), Some(last)) = (ours.first(), ours.last()) {
            let rd = read_roof(f) * 1e9;
            series.push(Series {
                name: format!("{card} read roof"),
                rgb: *roof,
                points: vec![(first.0, rd), (last.0, rd)],
                markers: false,
            });
            whens.push(format!("{card} {}", f.when(recs[0])));
        }
        series.push(Series {
            name: format!("{card} ours, paged"),
            rgb: *dark,
            points: ours,
            markers: true,
        });
        series.push(Series {
            name: format!("{card} PyTorch SDPA, contiguous"),
            rgb: *light,
            points: line("torch/sdpa"),
            markers: true,
        });
    }
    series.retain(|s| !s.points.is_empty());
    semilog2x(
        &format!(
            "Decode step, GQA 32/8, D = 128, fp16 ({})",
            whens.join("; ")
        ),
        "context N (tokens)",
        "K/V bytes read per second",
        "B/s",
        &series,
    )
    .unwrap_or_else(blank)
}

type Gpu<'a> = (
    &'a str,
    &'a crate::measure::MeasurementFile,
    Vec<&'a crate::measure::Record>,
    Vec<usize>,
);

/// Every committed GPU file's checked records of `variant` and their contexts (sorted), card by card
/// in file order; the note a table shows instead when no file has any (`missing`).
fn gpu_cards<'a>(
    files: &'a [(String, crate::measure::MeasurementFile)],
    variant: &str,
    missing: &str,
) -> Result<Vec<Gpu<'a>>, String> {
    let gpus: Vec<_> = files
        .iter()
        .filter(|(_, f)| f.machine.kind == "gpu")
        .collect();
    if gpus.is_empty() {
        return Err("*No GPU measurements are committed yet.*\n".into());
    }
    let cards: Vec<Gpu<'a>> = gpus
        .into_iter()
        .filter_map(|(name, f)| {
            let recs: Vec<_> = f
                .records
                .iter()
                .filter(|r| r.variant == variant && r.checked)
                .collect();
            let mut ns: Vec<usize> = recs.iter().map(|r| r.nk).collect();
            ns.sort_unstable();
            ns.dedup();
            (!recs.is_empty()).then_some((name.as_str(), f, recs, ns))
        })
        .collect();
    if cards.is_empty() {
        return Err(missing.into());
    }
    Ok(cards)
}

/// Each card's table of `variant` drawn by `card`, one after another, or the note [`gpu_cards`] gives.
fn per_card(
    files: &[(String, crate::measure::MeasurementFile)],
    variant: &str,
    missing: &str,
    card: fn(&Gpu) -> String,
) -> String {
    match gpu_cards(files, variant, missing) {
        Ok(cards) => cards.iter().map(card).collect::<Vec<_>>().join("\n"),
        Err(note) => note,
    }
}

/// The implementations of `recs`, each once, in the order they first appear (the harness's order).
fn implementations<'a>(recs: &[&'a crate::measure::Record]) -> Vec<&'a str> {
    let mut imps: Vec<&str> = Vec::new();
    for r in recs {
        if !imps.contains(&r.implementation.as_str()) {
            imps.push(&r.implementation);
        }
    }
    imps
}

/// The read roof decode is held against on a machine: the fastest memory read measured on it, by the
/// read ceiling (`read_gbps`: the fastest order of a GPU's `read_bandwidth`, a CPU's threads summing
/// 256 MB) or by the decode walks' own read passes (variant `paged_read`), whichever is faster. Only
/// read passes from the stress scale up count: at the verb corpus's 64 tokens the whole cache fits in
/// the CPU's caches (and the GPU's step is a launch), so that rate is not memory's.
pub fn read_roof(f: &crate::measure::MeasurementFile) -> f64 {
    f.records
        .iter()
        .filter(|r| r.variant == "paged_read" && r.nk >= crate::minimodel::config::STRESS_SEQ_LEN)
        .map(|r| r.gbps)
        .fold(
            f.machine.read_gbps.unwrap_or(f.machine.bandwidth_gbps),
            f64::max,
        )
}

/// A run's price against its twin: the median over interleaved rounds of its time over the twin's in
/// the same round, with the rounds' interquartile range, where the record carries them; otherwise the
/// ratio of the two medians (`twin_ms`).
fn twin_price(r: &crate::measure::Record, twin_ms: Option<f64>) -> String {
    let pct = |x: f64| 100.0 * (x - 1.0);
    match r.ratio_to_twin {
        Some([lo, mid, hi]) => format!("{:+.1}% ({:+.1}..{:+.1})", pct(mid), pct(lo), pct(hi)),
        None => twin_ms.map_or("—".into(), |b| format!("{:+.1}%", pct(r.ms / b))),
    }
}

/// Table 03.5: GPU decode per context: our paged and contiguous kernels against PyTorch's SDPA backends
/// on the same shapes, in the same run.
fn gpu_decode_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    per_card(
        files,
        "paged_decode",
        "*No GPU paged-decode measurements are committed yet (`bench/gpu.sh ... dpeer paged`).*\n",
        gpu_decode_card,
    )
}

/// `base`'s time over `ours`' in each round of the decode race (variant `decode_race`, context `n`),
/// sorted.
pub(super) fn race_ratios(
    f: &crate::measure::MeasurementFile,
    n: usize,
    base: &str,
    ours: &str,
) -> Vec<f64> {
    let race: Vec<&crate::measure::Record> = f
        .records
        .iter()
        .filter(|r| r.variant == "decode_race" && r.nk == n && r.checked)
        .collect();
    let mut ratios: Vec<f64> = race
        .iter()
        .filter(|o| o.implementation == ours)
        .filter_map(|o| {
            race.iter()
                .find(|b| b.implementation == base && b.round == o.round)
                .map(|b| b.ms / o.ms)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios
}

/// [`race_ratios`] as `"0.97x (0.96-0.98)"`: the median over the rounds and the lowest and highest
/// round's.
fn race_ratio(f: &crate::measure::MeasurementFile, n: usize, base: &str, ours: &str) -> String {
    let ratios = race_ratios(f, n, base, ours);
    if ratios.is_empty() {
        return "—".into();
    }
    let mid = ratios[ratios.len() / 2];
    format!(
        "{mid:.2}x ({:.2}-{:.2})",
        ratios[0],
        ratios[ratios.len() - 1]
    )
}

fn gpu_decode_card((name, f, recs, ns): &Gpu) -> String {
    let read = read_roof(f);
    let pass = |n: usize, imp: &str| {
        f.records
            .iter()
            .find(|r| r.variant == "paged_read" && r.nk == n && r.implementation == imp)
    };
    // The fresh pool's column only where a card measured it.
    let fresh = recs
        .iter()
        .any(|r| r.implementation == "ours/gpu-paged-fresh");
    let served = recs
        .iter()
        .any(|r| r.implementation == "ours/gpu-paged-served");
    let cols: Vec<&str> = [
        "ours/gpu-paged",
        "ours/gpu-paged-fresh",
        "ours/gpu-paged-served",
        "ours/gpu-contiguous",
        "torch/sdpa",
        "torch/cudnn",
        "torch/flash",
        "torch/efficient-repeat-kv",
        "torch/math",
    ]
    .into_iter()
    .filter(|&c| fresh || c != "ours/gpu-paged-fresh")
    .filter(|&c| served || c != "ours/gpu-paged-served")
    .collect();
    let at = |n: usize, imp: &str| recs.iter().find(|r| r.nk == n && r.implementation == imp);
    let mut rows = Vec::new();
    let passes = ns
        .iter()
        .any(|&n| pass(n, "ours/read-pass-paged").is_some());
    let raced = f.records.iter().any(|r| r.variant == "decode_race");
    // Our sides of the race that this card has, in the column's order.
    let racers: Vec<(&str, &str)> = [
        ("ours/gpu-paged", "paged"),
        ("ours/gpu-paged-chunked", "chunked"),
        ("ours/gpu-paged-chunked-hm", "chunked-hm"),
        ("ours/gpu-paged-chunked64-hm", "chunked64-hm"),
        ("ours/gpu-paged-chunked512-hm", "chunked512-hm"),
        ("ours/gpu-contiguous", "contiguous"),
    ]
    .into_iter()
    .filter(|(imp, _)| {
        f.records
            .iter()
            .any(|r| r.variant == "decode_race" && r.implementation == *imp)
    })
    .collect();
    for &n in ns {
        let mut row = vec![format!("N={n}")];
        for &imp in &cols {
            row.push(at(n, imp).map_or("—".into(), |r| {
                format!("{:.4} ms, {} GB/s", r.ms, sig3(r.gbps))
            }));
        }
        if passes {
            let gb = |imp| pass(n, imp).map_or("—".into(), |r| sig3(r.gbps));
            row.push(format!(
                "{} / {}",
                gb("ours/read-pass-paged"),
                gb("ours/read-pass-contiguous")
            ));
        }
        let ours = at(n, "ours/gpu-paged");
        row.push(ours.map_or("—".into(), |r| format!("{:.1}%", 100.0 * r.gbps / read)));
        let best_torch = recs
            .iter()
            .filter(|r| r.nk == n && r.implementation.starts_with("torch/"))
            .min_by(|a, b| a.ms.total_cmp(&b.ms));
        row.push(match (ours, at(n, "torch/sdpa"), best_torch) {
            (Some(o), Some(d), Some(b)) => format!("{:.2}x / {:.2}x", d.ms / o.ms, b.ms / o.ms),
            _ => "—".into(),
        });
        if raced {
            let cells: Vec<String> = racers
                .iter()
                .map(|(imp, _)| race_ratio(f, n, "torch/sdpa", imp))
                .collect();
            row.push(cells.join(" / "));
        }
        rows.push(row);
    }
    let mut header: Vec<String> = vec!["context".into()];
    header.extend(cols.iter().map(|c| format!("`{c}`")));
    if passes {
        header.push("read pass alone, GB/s: paged / contiguous".into());
    }
    header.push("paged / read roof".into());
    header.push("speed-up over SDPA default / best PyTorch".into());
    if raced {
        let names: Vec<&str> = racers.iter().map(|(_, short)| *short).collect();
        header.push(format!(
            "interleaved: speed-up over SDPA default, {} (rounds' range)",
            names.join(" / ")
        ));
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let r0 = recs[0];
    let failed = super::failed_in(f, "paged_decode");
    let mut out = md_table(&header, &rows);
    out += &format!(
        "\n*Table 03.5, {}. One decode step on the GPU: {} sequences, GQA {}/{} heads, D = {}, fp16, every sequence N \
         tokens long, blocks of 16 in a shuffled pool (ours/gpu-paged){}{} or the same kernel on a contiguous copy \
         (ours/gpu-contiguous); PyTorch's `scaled_dot_product_attention(..., enable_gqa=True)` on contiguous K/V of \
         the same shape, each backend forced (`torch/sdpa`: the default dispatcher; `-repeat-kv`: a backend without \
         GQA, fed K/V repeated to {} heads). Each checked against the f64 reference first.{failed} CUDA-event \
         medians. \
         GB/s = K/V rows + q + o bytes over the median. {}{}Read roof: {} GB/s, the fastest HBM read measured on \
         this card (`read_bandwidth`'s readers{}, or the read pass where it is faster). {} (driver {}), {}; from \
         `measurements/{name}`.*\n",
        f.machine.name,
        r0.b,
        r0.hq,
        r0.hkv,
        r0.d,
        if fresh {
            ", in the tables the block manager hands out on a fresh pool (ours/gpu-paged-fresh: each \
             sequence a run of consecutive blocks),"
        } else {
            ""
        },
        if served {
            " or in the tables the block manager leaves a busy server (ours/gpu-paged-served: Table 03.8's \
             scenario, in a pool of twice the batch's blocks),"
        } else {
            ""
        },
        r0.hq,
        if raced {
            "Interleaved: our paged kernel and PyTorch's default dispatch timed back to back at each context \
             in rounds whose first side alternates (`bench/peers/torch_decode_race.py`; each side 5 warm-ups, \
             then the 21st fastest of 40 launches, checked in the first round), SDPA's time over ours (the paged \
             kernel on the shuffled pool; where measured, on the served tables under `Placement::Chunked`, \
             Table 03.8's `served-chunked`, in the block-major pool and, `chunked-hm`, in a head-major one; \
             `chunked64-hm`, `chunked512-hm`: chunks of 64 and of 512 blocks, Table 03.8's `served-chunked64` and \
             `served-chunked512`, in a head-major pool; and its \
             contiguous twin) within a round, the median over the rounds with the lowest and \
             highest. "
        } else {
            ""
        },
        if passes {
            "Read pass: the register path's loads alone (its warps, chunks and loads, the table \
             entries read through L1 instead of shared memory, no arithmetic), K/V bytes over its median. "
        } else {
            ""
        },
        sig3(read),
        read_orders(&f.machine),
        f.machine.name,
        f.machine.driver.as_deref().unwrap_or("?"),
        f.when(r0),
    );
    // The race merged from a later run (`measure-gpu --only race`) says when it was measured.
    let race_when = f
        .records
        .iter()
        .find(|r| r.variant == "decode_race")
        .map(|r| f.when(r));
    if let Some(w) = race_when.filter(|w| *w != f.when(r0)) {
        out = out.trim_end().trim_end_matches('*').to_string();
        out += &format!(" The interleaved column: {w}.*\n");
    }
    out
}

/// The GPU readers' rates by order, as `": grid-stride 4350, chunks 4498 ... GB/s"` (with the L2 hint
/// after a slash), where the file has them; empty for files measured before the orders were.
fn read_orders(m: &crate::measure::Machine) -> String {
    let Some(by) = &m.read_gbps_by_order else {
        return String::new();
    };
    use crate::gpu::paged::{read_order_key, READ_ORDERS};
    let parts: Vec<String> = READ_ORDERS
        .iter()
        .filter_map(|o| {
            let plain = by.get(&read_order_key(o, false))?;
            Some(match by.get(&read_order_key(o, true)) {
                Some(h) => format!("{o} {} / {}", sig3(*plain), sig3(*h)),
                None => format!("{o} {}", sig3(*plain)),
            })
        })
        .collect();
    format!(
        ": {} GB/s without / with the 256-byte L2 hint",
        parts.join(", ")
    )
}

/// Table 03.7: the contiguous copy and the paged kernel through every kind of table, timed in interleaved
/// rounds, each price taken within a round.
fn gpu_rounds_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    per_card(
        files,
        "paged_decode_rounds",
        "*No interleaved GPU decode rounds are committed yet (`bench/gpu.sh ... paged`).*\n",
        gpu_rounds_card,
    )
}

fn gpu_rounds_card((name, f, recs, ns): &Gpu) -> String {
    let imps = implementations(recs);
    let rows: Vec<Vec<String>> = imps
        .iter()
        .map(|imp| {
            let short = imp
                .trim_start_matches("ours/gpu-paged-")
                .trim_start_matches("ours/gpu-");
            let mut row = vec![format!("`{short}`")];
            for &n in ns {
                row.push(
                    recs.iter()
                        .find(|r| r.nk == n && r.implementation == *imp)
                        .map_or("—".into(), |r| {
                            format!("{:.4}, {}", r.ms, twin_price(r, None))
                        }),
                );
            }
            row
        })
        .collect();
    let mut header = vec!["tables".to_string()];
    header.extend(
        ns.iter()
            .map(|n| format!("N={n}: ms, vs contiguous (rounds)")),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut out = md_table(&header, &rows);
    out += &format!(
        "\n*Table 03.7, {}. Table 03.5's batch read by its default kernel through every kind of table, all \
         resident on the card at once, each checked against the f64 reference first, then timed back to back \
         in {} rounds, each round starting one entry further on (each time the median of 20 launches after 3 \
         warm-ups); a cell is the median over the rounds and the time over the contiguous copy's in the same \
         round, as the median over the rounds with their interquartile range. `contiguous`: the contiguous \
         copy; `paged`, `fresh`, `served`: the shuffled pool, the fresh tables and the served ones of \
         Table 03.5; `hm`, `fresh-hm`: the pool stored head-major, through the shuffled and the fresh tables; \
         `localW`: the fresh tables with the pool's blocks shuffled within aligned windows of W blocks (at W = 8, \
         64, 512: 256 KB, 2 MB and 16 MB of K); `sorted`: the shuffled tables with each sequence's entries in \
         increasing block order (its keys in another order, which an unmasked decode does not see); \
         `served-after`: Table 03.8's served tables under `Placement::AfterLast`; `served-hm`: the served tables \
         on the head-major pool; `served-chunked`, `served-chunked-hm`: the served tables under \
         `Placement::Chunked` (Table 03.8) on the block-major and the head-major pool; \
         `served-chunked64-hm`, `served-chunked512-hm`: under chunks of 64 and of 512 blocks (Table 03.8's \
         `served-chunked64`, `served-chunked512`) on the head-major pool.{} {}, {}; from \
         `measurements/{name}`.*\n",
        f.machine.name,
        crate::measure::gpu_paged::ROUNDS,
        super::failed_in(f, "paged_decode_rounds"),
        f.machine.name,
        f.when(recs[0]),
    );
    out
}

/// Table 03.9: one decode step at the anchor contexts timed as launched, with the GPU's time alone, with
/// the launch plan worked out every call, and as a CUDA graph (variant `decode_launch`).
fn gpu_launch_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    per_card(
        files,
        "decode_launch",
        "*No split of a decode step's time between host and GPU is committed yet (`bench/gpu.sh ... dpeer paged`).*\n",
        gpu_launch_card,
    )
}

fn gpu_launch_card((name, f, recs, ns): &Gpu) -> String {
    let find = |imp: &str, n: usize, timing: &str| {
        recs.iter()
            .find(|r| r.implementation == imp && r.nk == n && r.timing.as_deref() == Some(timing))
    };
    let us = |r: Option<&&crate::measure::Record>| {
        r.map_or("—".into(), |r| format!("{:.1}", r.ms * 1e3))
    };
    let host = |r: Option<&&crate::measure::Record>| {
        r.and_then(|r| r.host_us)
            .map_or("—".into(), |h| format!("{h:.1}"))
    };
    let with_host = |r: Option<&&crate::measure::Record>| match r {
        Some(_) => format!("{} ({})", us(r), host(r)),
        None => "—".into(),
    };
    let label = |imp: &str| match imp {
        "ours/gpu-paged" => "ours, paged (shuffled pool)".to_string(),
        "ours/gpu-contiguous" => "ours, contiguous twin".to_string(),
        "torch/sdpa" => "PyTorch SDPA, default dispatch".to_string(),
        other => format!("`{other}`"),
    };
    let mut rows = Vec::new();
    for &n in ns {
        for imp in implementations(recs) {
            let l = find(imp, n, "launched");
            let q = find(imp, n, "queued");
            let gpu_share = match (l, q) {
                (Some(l), Some(q)) => format!("{:.0}%", 100.0 * (q.ms / l.ms).min(1.0)),
                _ => "—".into(),
            };
            rows.push(vec![
                format!("N={n}"),
                label(imp),
                us(l),
                host(l),
                us(q),
                gpu_share,
                with_host(find(imp, n, "replanned")),
                with_host(find(imp, n, "graph")),
                us(find(imp, n, "graph-queued")),
            ]);
        }
    }
    let idle = recs.iter().filter_map(|r| r.idle_ms).fold(0.0f64, f64::max);
    let mut out = md_table(
        &[
            "context",
            "implementation",
            "as launched: µs",
            "host: µs a call",
            "GPU alone: µs",
            "GPU's share",
            "plan worked out each call: µs (host µs)",
            "CUDA graph: µs (host µs)",
            "graph, GPU alone: µs",
        ],
        &rows,
    );
    out += &format!(
        "\n*Table 03.9, {}. One decode step of Table 03.5's batch at the two anchor contexts, timed four ways, \
         each after its output was checked against the f64 reference: *as launched*, as every other table times \
         (one host call between each pair of CUDA events; the median of 100); *GPU alone*, the same calls issued \
         while the stream was held by a kernel that waits, so that they then run back to back and each pair of \
         events times the GPU's work only (`Device::time_each_queued`; between runs the stream spent at most \
         {:.1} µs a run outside the timed pairs, recording the events: a run that had waited for the host would \
         add about the host's time a call less the GPU's); *plan worked out each call*, our decode with its launch plan dropped before \
         every call (the checks, the module lookup and the occupancy query that a kept plan skips); *CUDA \
         graph*, the step captured once and replayed by one host call, as launched and with the GPU alone. \
         Host: the host's time to issue one call, the mean of 100 calls issued while the stream was held. GPU's share: \
         GPU alone over as launched. {}{}, {}; from `measurements/{name}`.*\n",
        f.machine.name,
        idle * 1e3 / crate::measure::gpu_paged::LAUNCH_RUNS as f64,
        super::failed_in(f, "decode_launch"),
        f.machine.name,
        f.when(recs[0]),
    );
    out
}

/// Table 03.6: the tunings and partition sizes behind the paged kernel's defaults.
fn gpu_sweep_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    per_card(
        files,
        "paged_decode_sweep",
        "*No GPU tuning sweep is committed yet.*\n",
        gpu_sweep_card,
    )
}

fn gpu_sweep_card((name, f, recs, ns): &Gpu) -> String {
    let imps = implementations(recs);
    let read = read_roof(f);
    let rows: Vec<Vec<String>> = imps
        .iter()
        .map(|imp| {
            let mut row = vec![format!("`{}`", imp.trim_start_matches("ours/gpu-paged-"))];
            for &n in ns {
                row.push(
                    recs.iter()
                        .find(|r| r.nk == n && r.implementation == *imp)
                        .map_or("—".into(), |r| {
                            format!("{:.4} ({:.0}%)", r.ms, 100.0 * r.gbps / read)
                        }),
                );
            }
            row
        })
        .collect();
    let mut header = vec!["tuning".to_string()];
    header.extend(ns.iter().map(|n| format!("N={n}: ms (% of read roof)")));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut out = md_table(&header, &rows);
    out += &format!(
        "\n*Table 03.6, {}. The paged kernel's choices, each run on the paged batch of Table 03.5 (checked first). \
         `wW-pP-xX`: W warps per block, P token passes per warp chunk (2P loads of 16 bytes in flight per lane), \
         partitions sized for X waves of resident blocks; `-hint`: loads that skip L1 and ask L2 for 256-byte \
         lines (with `-tcS`: the ring's copies ask L2 for them); `-pfN`: each warp also asks L2 for the block of its \
         chunk N chunks past the ring's; `hm` and `fresh-hm`: the default tuning (or the one named after) on the \
         pool stored head-major (each kv head its own pool of blocks) through the shuffled and the fresh tables \
         of Table 03.5; `-fused`: the last block of a row merges the partitions instead of a second launch; `-bulkS`: \
         chunks arrive in shared memory by Hopper's bulk asynchronous copies, S per warp in flight; `-asyncS`: each \
         lane's own 16-byte asynchronous copies (`cp.async`) into a ring of S chunks per warp, S - 1 in flight while \
         one is computed; `-tcS`: scores and P V on the tensor cores (`mma.sync`, the block's query heads as the rows of \
         a 16-row tile), chunks of 16 tokens through a ring of S per warp; `-split`: one even share of all rows' keys per resident block; `-hN`: N head chunks \
         of a sequence in one block, warp w on chunk w mod N (at N = 8 the block's warps read one pool block's 8 kv \
         heads side by side), and `fresh-...-hN` the same on the fresh tables; `-cN`: a sequence's thread blocks \
         launched N at a time as one cluster (Hopper places a cluster's blocks on one GPC), and `fresh-...-cN` the \
         same on the fresh tables; `-e`: the early start (a block's first table entries and chunks asked for \
         before its sequence's length arrives); the kinds of table and pool layouts are timed in Table 03.7's rounds; `...-PN`: a fixed \
         partition of N keys with the tuning named before it. Read roof as in Table 03.5.{} {}, {}; from \
         `measurements/{name}`.*\n",
        f.machine.name,
        super::failed_in(f, "paged_decode_sweep"),
        f.machine.name,
        f.when(recs[0]),
    );
    out
}

/// Table 03.2: the CPU decode step on every CPU file that has one (the most recent first): contiguous,
/// paged (V1, V2), and the same two walks with the arithmetic taken out (the read passes), each against
/// its contiguous twin. The price of a scattered pool is a property of the machine, so each is shown.
fn decode_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    use crate::roofline::si;
    let mut out = String::new();
    for (name, f) in files.iter().filter(|(_, f)| f.machine.kind == "cpu") {
        let recs: Vec<_> = f
            .records
            .iter()
            .filter(|r| (r.variant == "paged_decode" && r.checked) || r.variant == "paged_read")
            .collect();
        if !recs.iter().any(|r| r.variant == "paged_decode") {
            continue;
        }
        let mut rows = Vec::new();
        let mut ns: Vec<usize> = recs.iter().map(|r| r.nk).collect();
        ns.sort_unstable_by(|a, b| b.cmp(a));
        ns.dedup();
        for (dtype, n) in ["f32", "f16"]
            .into_iter()
            .flat_map(|t| ns.iter().map(move |&n| (t, n)))
        {
            let find = |imp: &str| {
                recs.iter()
                    .find(|r| r.dtype == dtype && r.nk == n && r.implementation == imp)
            };
            // Each against its contiguous twin on the same pages: the decodes against the contiguous
            // decode, the read passes against the contiguous read pass; the `-2m` runs beside their
            // 4 KB-page rows.
            let price = |r: &crate::measure::Record, pages: &str| {
                let twin = if r.variant == "paged_read" {
                    find(&format!("ours/read-pass-contiguous{pages}"))
                } else {
                    find(&format!("ours/contiguous{pages}"))
                };
                twin_price(r, twin.map(|b| b.ms))
            };
            for r in recs
                .iter()
                .filter(|r| r.dtype == dtype && r.nk == n && !r.implementation.ends_with("-2m"))
            {
                let huge = find(&format!("{}-2m", r.implementation));
                rows.push(vec![
                    dtype.to_string(),
                    n.to_string(),
                    format!("`{}`", r.implementation),
                    format!("{:.3}", r.ms),
                    sig3(r.gbps),
                    si(r.bytes_model) + "B",
                    price(r, ""),
                    huge.map_or("—".into(), |h| format!("{:.3}", h.ms)),
                    huge.map_or("—".into(), |h| price(h, "-2m")),
                ]);
            }
        }
        let r0 = recs[0];
        if !out.is_empty() {
            out += "\n";
        }
        out += &md_table(
            &[
                "dtype",
                "N",
                "kernel",
                "ms (median)",
                "GB/s",
                "bytes per step",
                "vs contiguous",
                "2 MB pages: ms",
                "vs contiguous (2 MB)",
            ],
            &rows,
        );
        let failed = super::failed_in(f, "paged_decode");
        out += &format!(
            "\n*Table 03.2, {}. One decode step of {} sequences of N tokens ({}), GQA {}/{} heads, D = {}, block size 16, on \
             the same data for all (paged tables shuffled, as in a pool churned by many requests; `-fresh`: the tables the \
             block manager hands out on a fresh pool, each sequence one run of blocks; `-served`: the tables it leaves \
             a busy server, Table 03.8's scenario, in a pool of twice the batch's blocks; `-chunked`: the same scenario's \
             tables under `Placement::Chunked`, Table 03.8's `served-chunked`; `paged-pool`: the shuffled \
             tables walked in the pool's address order, `paged-pool-served` the served ones; `contiguous-8lanes`, on a CPU \
             with AVX-512F: the contiguous decode with the in-place loop 8 lanes at a time, against the 16-lane \
             default); each decode checked against the f64 reference first; \
             the `read-pass` rows are the same walks reading the same rows with no arithmetic (K and V \
             bytes only), against the contiguous read pass; the last two columns: the same runs on copies of the \
             data on 2 MB pages, against the contiguous twin on 2 MB pages (at the stress scale only); all timed in \
             interleaved rounds, at the stress scale each run after a read of twice the last-level cache (every \
             run starts cold), at 64 tokens without (the batch stays in cache from run to run); a price is the \
             median over the rounds of the run's time over its twin's in the same round, the rounds' \
             interquartile range in brackets.{failed} {} ({} threads), \
             read roof {} GB/s (the fastest read measured on it, Table R.1); {}; from `measurements/{name}`.*\n",
            f.machine.name,
            r0.b,
            ns.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" and "),
            r0.hq,
            r0.hkv,
            r0.d,
            f.machine.name,
            f.generated.threads,
            sig3(read_roof(f)),
            f.when(r0),
        );
    }
    if out.is_empty() {
        out = "*No paged decode measurements are committed yet: run `cargo run --release -- measure-cpu`.*\n".into();
    }
    out
}

/// Table 03.3: the read pass through tables that place the same blocks in several orders, on every
/// file that has them (CPU first): why a scattered pool reads slower, machine by machine.
fn cpu_order_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    let mut rows = Vec::new();
    let mut sources = Vec::new();
    let mut ordered: Vec<_> = files.iter().collect();
    ordered.sort_by_key(|(_, f)| f.machine.kind != "cpu");
    for (name, f) in ordered {
        let recs: Vec<_> = f
            .records
            .iter()
            .filter(|r| r.variant == "paged_read_order")
            .collect();
        let Some(r0) = recs.first() else { continue };
        let mut keys: Vec<(&str, usize)> = recs.iter().map(|r| (r.dtype.as_str(), r.nk)).collect();
        keys.dedup();
        for (dtype, n) in keys {
            let group: Vec<_> = recs
                .iter()
                .filter(|r| r.dtype == dtype && r.nk == n)
                .collect();
            let base = group
                .iter()
                .find(|r| r.implementation.ends_with("read-run"))
                .map(|r| r.ms);
            for r in group {
                rows.push(vec![
                    f.machine.name.clone(),
                    dtype.to_string(),
                    n.to_string(),
                    format!("`{}`", r.implementation),
                    if f.machine.kind == "gpu" {
                        format!("{:.4}", r.ms)
                    } else {
                        format!("{:.3}", r.ms)
                    },
                    sig3(r.gbps),
                    twin_price(r, base),
                ]);
            }
        }
        sources.push(format!(
            "{}: {}, `measurements/{name}`",
            f.machine.name,
            f.when(r0)
        ));
    }
    if rows.is_empty() {
        return "*No read-order measurements are committed yet: run `cargo run --release -- measure-cpu`.*\n"
            .into();
    }
    md_table(
        &["machine", "dtype", "N", "order", "ms (median)", "GB/s", "vs one run"],
        &rows,
    ) + &format!(
        "\n*Table 03.3. The read pass of a decode batch through several placements of the same blocks: \
         `run`, each sequence one run of blocks; `pairs`, the same runs with every two neighbours swapped \
         (1, 0, 3, 2, ...); `gaps`, each sequence every other block of a run, in a pool twice as large; \
         `shuffled`, anywhere; `pool` (CPU), the shuffled tables read in the pool's address order. CPU: \
         Table 03.2's batch, each pool on 2 MB pages, timed in interleaved rounds, each run after a read of \
         twice the last-level cache, prices against `run` as in Table 03.2. GPU: Table 03.5's batch (fp16), the read pass of its paged kernel, \
         CUDA-event medians. {}.*\n",
        sources.join("; ")
    )
}

/// Table 03.4: the paged decode's price against the block size, on the first CPU file with the
/// sweep: block size 16 from the main comparison, the rest from `paged_decode_sweep`.
fn cpu_block_table(files: &[(String, crate::measure::MeasurementFile)]) -> String {
    for (name, f) in files.iter().filter(|(_, f)| f.machine.kind == "cpu") {
        let recs: Vec<_> = f.records.iter().filter(|r| r.checked).collect();
        if !recs.iter().any(|r| r.variant == "paged_decode_sweep") {
            continue;
        }
        let mut rows = Vec::new();
        for dtype in ["f32", "f16"] {
            let rec = |variant: &str, imp: &str| {
                recs.iter()
                    .find(|r| r.dtype == dtype && r.variant == variant && r.implementation == imp)
                    .copied()
            };
            let mut sizes: Vec<usize> = vec![16];
            sizes.extend(crate::measure::cpu::PAGED_SWEEP_BLOCKS);
            for bs in sizes {
                let (c, p, w) = if bs == 16 {
                    (
                        rec("paged_decode", "ours/contiguous"),
                        rec("paged_decode", "ours/paged-v1"),
                        rec("paged_decode", "ours/paged-pool"),
                    )
                } else {
                    let at = |kind: &str| rec("paged_decode_sweep", &format!("ours/{kind}-bs{bs}"));
                    (at("contiguous"), at("paged-v1"), at("paged-pool"))
                };
                if let (Some(c), Some(p)) = (c, p) {
                    rows.push(vec![
                        dtype.to_string(),
                        bs.to_string(),
                        format!("{:.3}", c.ms),
                        format!("{:.3}", p.ms),
                        twin_price(p, Some(c.ms)),
                        w.map_or("—".into(), |w| format!("{:.3}", w.ms)),
                        w.map_or("—".into(), |w| twin_price(w, Some(c.ms))),
                    ]);
                }
            }
        }
        let r0 = recs
            .iter()
            .find(|r| r.variant == "paged_decode_sweep")
            .expect("checked above");
        return md_table(
            &[
                "dtype",
                "block size",
                "contiguous ms",
                "paged ms",
                "price of the table",
                "pool order ms",
                "price in pool order",
            ],
            &rows,
        ) + &format!(
            "\n*Table 03.4. The decode step of Table 03.2 at four block sizes (the same data scattered \
             anew for each, tables shuffled; the contiguous walk cut into blocks of the same size), through \
             the tables and in pool order; each checked, then timed in interleaved rounds (block size 16: \
             Table 03.2's rounds); prices as in Table 03.2, against the contiguous walk in the same rounds.{} \
             {} ({} threads); {}; from `measurements/{name}`.*\n",
            super::failed_in(f, "paged_decode_sweep"),
            f.machine.name,
            f.generated.threads,
            f.when(r0),
        );
    }
    "*No CPU block-size sweep is committed yet: run `cargo run --release -- measure-cpu`.*\n".into()
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
        let st =
            replay(&reqs, layout, CAPACITY, cfg.max_len).expect("the book's trace fits its pool");
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

/// Table 03.8: how far apart the neighbouring entries of a block table lie, in the three kinds of tables the
/// decode experiments read (16 sequences, blocks of 16), at the CPU's stress context and the GPU's.
fn scatter_table() -> String {
    use crate::measure::fresh_tables;
    use crate::minimodel::paged::block_manager::Placement;
    use crate::minimodel::paged::replay::{served_tables, Scatter, ServedConfig};
    use crate::minimodel::rng::Rng;
    let (b, bs) = (16, 16);
    let mut rows = Vec::new();
    for n in [2048, 4096, 16384, 65536] {
        let per_seq = n / bs;
        let mut ids: Vec<usize> = (0..b * per_seq).collect();
        Rng::new(0x9a9e + n as u64 + 3).shuffle(&mut ids);
        let served = ServedConfig::book(b, n, bs);
        let kinds = [
            (
                "fresh",
                fresh_tables(b, n, bs).expect("a pool of exactly the batch's blocks"),
                b * per_seq,
            ),
            (
                "served",
                served_tables(&served).expect("the book's scenario fits"),
                served.pool_blocks,
            ),
            (
                "served-after",
                served_tables(&ServedConfig {
                    placement: Placement::AfterLast,
                    ..served
                })
                .expect("the book's scenario fits"),
                served.pool_blocks,
            ),
            (
                "served-chunked",
                served_tables(&ServedConfig {
                    placement: crate::measure::gpu_paged::CHUNKED,
                    ..served
                })
                .expect("the book's scenario fits"),
                served.pool_blocks,
            ),
            (
                "served-chunked64",
                served_tables(&ServedConfig {
                    placement: crate::measure::gpu_paged::CHUNKED_WIDE,
                    ..served
                })
                .expect("the book's scenario fits"),
                served.pool_blocks,
            ),
            (
                "served-chunked512",
                served_tables(&ServedConfig {
                    placement: crate::measure::gpu_paged::CHUNKED_2M,
                    ..served
                })
                .expect("the book's scenario fits"),
                served.pool_blocks,
            ),
            (
                "shuffled",
                ids.chunks(per_seq).map(<[usize]>::to_vec).collect(),
                b * per_seq,
            ),
        ];
        for (name, tables, pool) in kinds {
            let st = Scatter::of(&tables);
            let pct = |x: usize| format!("{}%", sig3(100.0 * x as f64 / st.pairs as f64));
            let mut row = vec![n.to_string(), format!("`{name}`"), pool.to_string()];
            row.push(pct(st.next));
            row.extend(st.within.iter().map(|&w| pct(w)));
            row.push(st.median.to_string());
            rows.push(row);
        }
    }
    let w = Scatter::WINDOWS;
    let header: Vec<String> = ["N", "tables", "pool, blocks", "next block"]
        .iter()
        .map(|x| x.to_string())
        .chain(w.iter().map(|w| format!("within {w} blocks")))
        .chain(["median distance, blocks".to_string()])
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let cfg = ServedConfig::book(b, 2048, bs);
    let mut out = md_table(&header, &rows);
    out += &format!(
        "\n*Table 03.8. How far apart a block table's neighbouring entries lie, over every pair of neighbours in \
         the tables of {b} sequences of N tokens in blocks of {bs}: the share one block on (the table continues a \
         run), within {}, {} and {} blocks (at Lab 03's GPU shape, 8 kv heads by 16 rows of 256 bytes, a block holds \
         32 KB of K: 256 KB, 2 MB and 16 MB), and the median distance. `fresh`: the block manager's tables on a \
         fresh pool of exactly the batch's blocks; `served`: the tables it leaves a busy server \
         (`replay::served_tables`: a pool of twice the batch's blocks; other requests, prompt and output lengths \
         log-normal with medians of N/8 tokens, free {} pools' worth of blocks first; then each of the {b} \
         sequences arrives with a prompt of {}% of N and is decoded to N tokens, one a step, beside other \
         requests arriving and leaving); `served-after`: the same with `Placement::AfterLast` (each new \
         block the one after the sequence's last where that one is free); `served-chunked`: the same with \
         `Placement::Chunked` of {} blocks (a sequence continues in its own aligned chunk, and starts a new one in \
         a wholly free chunk while there is one), `served-chunked64` and `served-chunked512` with chunks of 64 and of 512; `shuffled`: a seeded shuffle of the pool, the GPU harness's at that N \
         (the CPU's is another of the same kind). Computed, not measured, by `src/minimodel/paged/replay.rs`.*\n",
        w[0],
        w[1],
        w[2],
        cfg.turnovers,
        100 * cfg.prompt / cfg.len,
        match crate::measure::gpu_paged::CHUNKED {
            Placement::Chunked { blocks } => blocks,
            _ => 0,
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Machine;

    /// The readers' rates print in `READ_ORDERS`' order, each with its hinted twin after a slash, and
    /// nothing at all for a file measured before the orders were recorded.
    #[test]
    fn read_orders_print_every_order_with_its_hinted_twin() {
        let mut m: Machine = serde_json::from_str(
            r#"{"kind": "gpu", "name": "Card", "cores": 1, "peak_gflops": 1.0, "bandwidth_gbps": 1.0}"#,
        )
        .expect("a minimal machine");
        assert_eq!(read_orders(&m), "");
        m.read_gbps_by_order = Some(
            [
                ("slabs", 4453.0),
                ("grid-stride", 4350.0),
                ("chunks+hint", 4233.0),
                ("chunks", 4498.0),
                ("grid-stride+hint", 4011.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        assert_eq!(
            read_orders(&m),
            ": grid-stride 4350 / 4011, chunks 4498 / 4233, slabs 4453 GB/s without / with the \
             256-byte L2 hint"
        );
    }

    /// Table 03.9's row: times in microseconds, the host's time beside the launched and graph columns,
    /// the GPU's share capped at 100% (a queued run can be a hair slower than a launched one), a dash
    /// where an implementation has no such timing (PyTorch has no plan to drop), and the stream's time
    /// outside the timed pairs given a run.
    #[test]
    fn the_launch_table_splits_host_and_gpu() {
        use crate::measure::{MeasurementFile, Record};
        use crate::minimodel::shape::AttnShape;
        let s = AttnShape::new(16, 32, 8, 1, 64, 128).expect("shape");
        let rec = |imp: &str, timing: &str, ms: f64, host: Option<f64>, idle: Option<f64>| Record {
            timing: Some(timing.into()),
            host_us: host,
            idle_ms: idle,
            ..Record::new("decode_launch", imp, "f16", &s, "none")
                .timed(&[ms], 1.0, 1.0)
                .checked(true, 1e-4)
        };
        let f: MeasurementFile = serde_json::from_value(serde_json::json!({
            "machine": {"kind": "gpu", "name": "Card", "cores": 1, "peak_gflops": 1.0, "bandwidth_gbps": 1.0},
            "generated": {"date": "2026-11-29", "commit": "c", "rustc": "r", "threads": 1},
            "records": []
        }))
        .expect("a minimal file");
        let f = MeasurementFile {
            records: vec![
                rec("ours/gpu-paged", "launched", 0.0070, Some(3.5), None),
                rec("ours/gpu-paged", "queued", 0.0071, None, Some(0.15)),
                rec("ours/gpu-paged", "replanned", 0.0150, Some(11.0), None),
                rec("ours/gpu-paged", "graph", 0.0063, Some(1.1), None),
                rec("ours/gpu-paged", "graph-queued", 0.0062, None, Some(0.13)),
                rec("torch/sdpa", "launched", 0.0440, Some(24.5), None),
                rec("torch/sdpa", "queued", 0.0066, None, Some(0.14)),
            ],
            ..f
        };
        let out = gpu_launch_table(&[("gpu-card.json".into(), f)]);
        assert!(
            out.contains("| N=64 | ours, paged (shuffled pool) | 7.0 | 3.5 | 7.1 | 100% | 15.0 (11.0) | 6.3 (1.1) | 6.2 |"),
            "{out}"
        );
        assert!(
            out.contains(
                "| N=64 | PyTorch SDPA, default dispatch | 44.0 | 24.5 | 6.6 | 15% | — | — | — |"
            ),
            "{out}"
        );
        assert!(out.contains("at most 1.5 µs a run"), "{out}");
    }
}
