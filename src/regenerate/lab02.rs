//! Lab 02's tables: every GPU version and PyTorch's SDPA backends on the benchmark grid, and the DRAM
//! bytes the hardware counted beside the model's, from the committed GPU measurements.

use super::{md_table, Artifact};
use crate::measure::trace::{self, TraceFile, TraceRun};
use crate::measure::{MeasurementFile, Record};
use crate::roofline::{si, sig3};

/// The column order of the speed tables: our progression, then PyTorch's backends.
pub const IMPLS: [&str; 18] = [
    "ours/v1_naive",
    "ours/v1b_naive_mma",
    "ours/v2_online",
    "ours/v3_tiled",
    "ours/v4_tensor_cores",
    "ours/v5_cp_async",
    "ours/v5_cp_async_w8",
    "ours/v6_wgmma",
    "ours/v7_overlap",
    "ours/v7_overlap_w4",
    "ours/v7_overlap_w8",
    "ours/v8_tma",
    "ours/v8_tma_s2",
    "ours/v8_tma_s3",
    "torch/flash",
    "torch/cudnn",
    "torch/efficient",
    "torch/math",
];

/// Lab 02's tables and speed figure.
pub fn render(files: &[(String, MeasurementFile)]) -> Vec<Artifact> {
    let gpu = files.iter().find(|(_, f)| f.machine.kind == "gpu");
    // The speed table, the figure and the DRAM bytes show the card on which the most of our versions
    // were timed (the newest kernels first ran on whichever card was available); the cross-check comes from the
    // first card. Table 02.4 puts every card's ratios side by side.
    let versions = |f: &MeasurementFile| {
        let mut v: Vec<&str> = f
            .records
            .iter()
            .filter(|r| r.variant == "flash" && r.implementation.starts_with("ours/"))
            .map(|r| r.implementation.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let speed_card = files.iter().filter(|(_, f)| f.machine.kind == "gpu").fold(
        None,
        |best: Option<&(String, MeasurementFile)>, c| match best {
            Some(b) if versions(&b.1) >= versions(&c.1) => Some(b),
            _ => Some(c),
        },
    );
    let flash_only = |(name, f): &(String, MeasurementFile)| {
        let mut f = f.clone();
        f.records
            .retain(|r| r.variant == "flash" || r.variant == "naive");
        (name.clone(), f)
    };
    // The flash grid only: the same file also holds lab 03's decode records.
    let speed = speed_card.map(flash_only);
    let race = files
        .iter()
        .find(|(_, f)| f.machine.kind == "gpu" && f.records.iter().any(|r| r.variant == "race"))
        .map_or_else(
            || {
                "*No interleaved race is committed yet (`bench/gpu.sh DIR OUT race`).*\n"
                    .to_string()
            },
            |(name, f)| race_table(name, f),
        );
    let check = gpu.map_or_else(
        || "*No GPU measurements are committed yet.*\n".to_string(),
        |(name, f)| crosscheck_table(name, f),
    );
    let (speed, bytes, figure) = match &speed {
        Some((sname, sf)) => (
            speed_tables(sname, sf) + &cards_table(files),
            bytes_table(sname, sf),
            speed_figure(sf),
        ),
        _ => {
            let none =
                "*No GPU measurements are committed yet: run the GPU harness on a machine with an \
                        NVIDIA GPU (see this chapter's last section).*\n"
                    .to_string();
            let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"40\"><text x=\"4\" \
                       y=\"24\">no GPU measurements committed</text></svg>\n"
                .to_string();
            (none.clone(), none, svg)
        }
    };
    vec![
        Artifact {
            name: "lab02_gpu.md",
            contents: speed,
        },
        Artifact {
            name: "lab02_bytes.md",
            contents: bytes,
        },
        Artifact {
            name: "lab02_speed.svg",
            contents: figure,
        },
        Artifact {
            name: "lab02_crosscheck.md",
            contents: check,
        },
        Artifact {
            name: "lab02_race.md",
            contents: race,
        },
    ]
}

/// The median of `v` (the mean of the middle two for an even count); `None` for none.
pub(super) fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A race shape: (D, mask, N).
pub(super) type RaceShape = (usize, String, usize);

/// The race's checked records (variant `race`), its shapes in order and its rounds in order.
fn race_records(f: &MeasurementFile) -> (Vec<&Record>, Vec<RaceShape>, Vec<usize>) {
    let recs: Vec<&Record> = f
        .records
        .iter()
        .filter(|r| r.variant == "race" && r.checked)
        .collect();
    let mut shapes: Vec<RaceShape> = recs.iter().map(|r| (r.d, r.mask.clone(), r.nq)).collect();
    shapes.sort();
    shapes.dedup();
    let mut rounds: Vec<usize> = recs.iter().filter_map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    (recs, shapes, rounds)
}

/// The race's shapes (D, mask, N), in order, each with ours over `peer` taken within each round
/// (variant `race`, checked records only; a round missing either side is left out).
pub(super) fn race_ratios(f: &MeasurementFile, peer: &str) -> Vec<(RaceShape, Vec<f64>)> {
    let (recs, shapes, rounds) = race_records(f);
    let at = |(d, mask, n): &RaceShape, ours: bool, round: usize| {
        recs.iter().find(|r| {
            r.d == *d
                && r.mask == *mask
                && r.nq == *n
                && r.round == Some(round)
                && (if ours {
                    r.implementation.starts_with("ours/")
                } else {
                    r.implementation == peer
                })
        })
    };
    shapes
        .into_iter()
        .map(|shape| {
            let v = rounds
                .iter()
                .filter_map(|&k| Some(at(&shape, true, k)?.tflops / at(&shape, false, k)?.tflops))
                .collect();
            (shape, v)
        })
        .collect()
}

/// Table 02.7: our default kernel against cuDNN and FA2 with each shape timed back to back, in rounds
/// (`bench/peers/torch_race.py`): per shape, each side's median rate over the rounds and the ratios
/// taken within each round (median, and the lowest and highest round).
fn race_table(name: &str, f: &MeasurementFile) -> String {
    let (recs, shapes, rounds) = race_records(f);
    let ours_name = recs
        .iter()
        .find(|r| r.implementation.starts_with("ours/"))
        .map_or("ours", |r| r.implementation.as_str());
    let peers: Vec<(&str, _)> = ["torch/cudnn", "torch/flash"]
        .into_iter()
        .map(|peer| (peer, race_ratios(f, peer)))
        .collect();
    let mut rows = Vec::new();
    // Against cuDNN, each shape by where its rounds' ratios lie: all above 1, on both sides, all below.
    let (mut ahead, mut level, mut behind) = (Vec::new(), Vec::new(), Vec::new());
    for (d, mask, n) in &shapes {
        let at = |imp: &str, round: usize| {
            recs.iter().find(|r| {
                r.d == *d
                    && r.mask == *mask
                    && r.nq == *n
                    && r.round == Some(round)
                    && r.implementation == imp
            })
        };
        let rates = |imp: &str| -> Vec<f64> {
            rounds
                .iter()
                .filter_map(|&k| at(imp, k).map(|r| r.tflops))
                .collect()
        };
        // Ours over `peer`, each round's ratio within that round.
        let within = |peer: &str| -> Vec<f64> {
            let shape = (*d, mask.clone(), *n);
            peers
                .iter()
                .find(|(p, _)| *p == peer)
                .and_then(|(_, all)| all.iter().find(|(s, _)| *s == shape))
                .map_or_else(Vec::new, |(_, v)| v.clone())
        };
        let ratio = |peer: &str| -> String {
            let v = within(peer);
            match median(&v) {
                Some(m) => {
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(0.0, f64::max);
                    format!("{m:.3}x ({lo:.3}-{hi:.3})")
                }
                None => "—".into(),
            }
        };
        let cudnn = within("torch/cudnn");
        let name = format!("D = {d} {mask} N = {n}");
        if cudnn.is_empty() {
        } else if cudnn.iter().all(|&r| r > 1.0) {
            ahead.push(name);
        } else if cudnn.iter().all(|&r| r < 1.0) {
            behind.push(name);
        } else {
            level.push(name);
        }
        let cell = |imp: &str| median(&rates(imp)).map_or("—".into(), sig3);
        rows.push(vec![
            d.to_string(),
            mask.clone(),
            n.to_string(),
            cell(ours_name),
            cell("torch/cudnn"),
            cell("torch/flash"),
            ratio("torch/cudnn"),
            ratio("torch/flash"),
            rates(ours_name).len().to_string(),
        ]);
    }
    let ours_col = format!("`{ours_name}`");
    let mut out = md_table(
        &[
            "D",
            "mask",
            "N",
            &ours_col,
            "`torch/cudnn`",
            "`torch/flash`",
            "ours / cuDNN (rounds' range)",
            "ours / FA2 (rounds' range)",
            "rounds",
        ],
        &rows,
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    out += &format!(
        "\nAgainst cuDNN, every round: ours ahead at {} of {} shapes; behind at {}; on both sides \
         of 1 (level on this card) at {}.\n",
        ahead.len(),
        ahead.len() + level.len() + behind.len(),
        list(&behind),
        list(&level)
    );
    let when = recs.first().map_or_else(|| flash_when(f), |r| f.when(r));
    out += &format!(
        "\n*Table 02.7. Interleaved: our default v8 configuration and PyTorch's cuDNN and FA2 backends \
         timed back to back at each shape, in {} rounds whose first side alternates \
         (`bench/peers/torch_race.py`); TFLOP/s are medians over the rounds, each ratio is taken within a \
         round and the median is shown with the lowest and highest round's. Same method on both sides: \
         independent unit-normal inputs larger than the L2, rotated; 5 warm-ups, then 40 launches each \
         between its own CUDA events, the 21st fastest; each side checked in the first round against \
         a float64 reference (ours on the harness's rows, PyTorch's backends on 128 rows), under the same \
         rule and fp16 bar.{} {} ({}); from \
         `measurements/{name}`.*\n",
        rounds.len(),
        super::failed_in(f, "race"),
        f.machine.name,
        when,
    );
    out
}

/// Table 02.3: our fastest kernel's output against PyTorch's math backend on the same saved inputs.
fn crosscheck_table(name: &str, f: &MeasurementFile) -> String {
    let recs: Vec<&Record> = f
        .records
        .iter()
        .filter(|r| r.variant == "crosscheck")
        .collect();
    if recs.is_empty() {
        return "*No cross-check against PyTorch is committed yet (`bench/gpu.sh ... xcheck`).*\n"
            .into();
    }
    let e = |x: Option<f64>| x.map_or("—".into(), |v| format!("{v:.2e}"));
    let rows: Vec<Vec<String>> = recs
        .iter()
        .map(|r| {
            vec![
                format!("`{}`", r.implementation),
                format!(
                    "B={}, Hq={}, Hkv={}, N={}, D={}",
                    r.b, r.hq, r.hkv, r.nq, r.d
                ),
                r.mask.clone(),
                format!("{:.2e}", r.max_err),
                e(r.err_vs_f64),
                e(r.torch_math_err_vs_f64),
                if r.checked { "yes" } else { "NO" }.into(),
            ]
        })
        .collect();
    let when = f.when(recs[0]);
    let mut out = md_table(
        &[
            "ours",
            "inputs (fp16, unit normal)",
            "mask",
            "max error, ours vs PyTorch math",
            "ours vs f64",
            "PyTorch math vs f64",
            "<= 1e-3",
        ],
        &rows,
    );
    out += &format!(
        "\n*Table 02.3. The phase's \"matches PyTorch reference attention\": our kernel ran on saved \
         inputs (`gpu-probe save-check`), and `bench/peers/torch_check.py` ran `scaled_dot_product_attention` \
         with the math backend (`enable_gqa`, `is_causal`) on the very same q, k, v, plus a float64 reference. \
         {} ({}); from `measurements/{name}`.*\n",
        f.machine.name, when
    );
    out
}

/// TFLOP/s against N for every implementation at D = 128, no mask (log-log).
fn speed_figure(f: &MeasurementFile) -> String {
    use super::figures::{loglog, Series};
    let colours: [(u8, u8, u8); IMPLS.len()] = [
        (200, 40, 40),
        (240, 120, 120),
        (230, 140, 30),
        (180, 160, 20),
        (120, 60, 170),
        (40, 90, 200),
        (90, 150, 230),
        (60, 60, 60),
        (20, 150, 90),
        (90, 200, 140),
        (10, 100, 60),
        (0, 190, 200),
        (120, 220, 230),
        (0, 120, 130),
        (150, 150, 150),
        (200, 120, 170),
        (120, 120, 200),
        (100, 100, 100),
    ];
    let series: Vec<Series> = IMPLS
        .iter()
        .zip(colours)
        .filter_map(|(imp, rgb)| {
            let mut points: Vec<(f64, f64)> = f
                .records
                .iter()
                .filter(|r| r.implementation == *imp && r.d == 128 && r.mask == "none" && r.checked)
                .map(|r| (r.nq as f64, r.tflops * 1e12))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then(|| Series {
                name: imp.to_string(),
                rgb,
                points,
                markers: true,
            })
        })
        .collect();
    let caption = format!(
        "{}: fp16 forward, D = 128, no mask ({})",
        f.machine.name,
        flash_when(f)
    );
    loglog(
        &caption,
        "sequence length N",
        "attained FLOP/s",
        "FLOP/s",
        &series,
        &[],
    )
    .unwrap_or_else(|e| format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{e}</text></svg>"))
}

/// The commit and date of the flash grid's run (one run measures the whole grid; a file re-measured
/// in part marks its newer records with their own).
fn flash_when(f: &MeasurementFile) -> String {
    f.records.first().map_or_else(
        || format!("commit {}, {}", f.generated.commit, f.generated.date),
        |r| f.when(r),
    )
}

fn provenance(name: &str, f: &MeasurementFile) -> String {
    format!(
        "{} (driver {}, CUDA {}), measured peak {} TFLOP/s (fp16 matrix product) and copy {} GB/s; {}; \
         from `measurements/{name}`",
        f.machine.name,
        f.machine.driver.as_deref().unwrap_or("?"),
        f.machine.cuda.as_deref().unwrap_or("?"),
        sig3(f.machine.peak_gflops / 1e3),
        sig3(f.machine.bandwidth_gbps),
        flash_when(f)
    )
}

fn speed_tables(name: &str, f: &MeasurementFile) -> String {
    let present: Vec<&str> = IMPLS
        .iter()
        .copied()
        .filter(|i| f.records.iter().any(|r| r.implementation == *i))
        .collect();
    let mut out = String::new();
    let mut groups: Vec<(usize, String)> = Vec::new();
    for r in &f.records {
        let key = (r.d, r.mask.clone());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    groups.sort();
    for (d, mask) in groups {
        let mut ns: Vec<usize> = f
            .records
            .iter()
            .filter(|r| r.d == d && r.mask == mask)
            .map(|r| r.nq)
            .collect();
        ns.sort_unstable();
        ns.dedup();
        let find = |n: usize, imp: &str| -> Option<&Record> {
            f.records.iter().find(|r| {
                r.d == d && r.mask == mask && r.nq == n && r.implementation == imp && r.checked
            })
        };
        let mut rows = Vec::new();
        for n in ns {
            let mut row = vec![format!("N={n}")];
            for imp in &present {
                row.push(find(n, imp).map_or("—".into(), |r| sig3(r.tflops)));
            }
            let best_ours = present
                .iter()
                .filter(|i| i.starts_with("ours/"))
                .filter_map(|i| find(n, i))
                .map(|r| r.tflops)
                .fold(0.0f64, f64::max);
            for peer in ["torch/flash", "torch/cudnn"] {
                row.push(match find(n, peer) {
                    Some(p) if best_ours > 0.0 => format!("{}x", sig3(best_ours / p.tflops)),
                    _ => "—".into(),
                });
            }
            rows.push(row);
        }
        let mut header: Vec<String> = vec!["length".into()];
        header.extend(present.iter().map(|i| format!("`{i}`")));
        header.push("best ours / FA2".into());
        header.push("best ours / cuDNN".into());
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out += &format!("**D = {d}, mask {mask}** (TFLOP/s)\n\n");
        out += &md_table(&header, &rows);
        out += "\n";
    }
    out += &format!(
        "*Table 02.1. fp16 forward TFLOP/s (FLOPs = 4·B·H·N²·D, halved for causal) at FlashAttention's \
         benchmark sizing (B·N = 16k tokens, H·D = 2048); every configuration checked against the f64 \
         reference before timing, CUDA events, median of repeated runs with rotated inputs; a dash where a \
         version was not timed at that size. `torch/flash` is FlashAttention-2 inside PyTorch.{} {}.*\n",
        super::failed_checks(f.records.iter().filter(|r| {
            (r.variant == "flash" || r.variant == "naive")
                && present.contains(&r.implementation.as_str())
        })),
        provenance(name, f)
    );
    out
}

/// Best of ours (the fastest version at each configuration) over FA2 and over cuDNN at one
/// configuration of a file, when all three were timed.
pub(super) fn best_ratios(
    f: &MeasurementFile,
    d: usize,
    mask: &str,
    n: usize,
) -> Option<(f64, f64)> {
    let at = |pred: &dyn Fn(&Record) -> bool| {
        f.records
            .iter()
            .filter(|r| {
                r.variant == "flash"
                    && r.d == d
                    && r.mask == mask
                    && r.nq == n
                    && r.checked
                    && pred(r)
            })
            .map(|r| r.tflops)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
    };
    let ours = at(&|r| r.implementation.starts_with("ours/"))?;
    let fa2 = at(&|r| r.implementation == "torch/flash")?;
    let cudnn = at(&|r| r.implementation == "torch/cudnn")?;
    Some((ours / fa2, ours / cudnn))
}

/// Table 02.4: the two ratios of Table 02.1 on every card whose flash grid is committed (only when
/// there are two or more), each card's ours and peers timed in its own run.
fn cards_table(files: &[(String, MeasurementFile)]) -> String {
    let cards: Vec<&(String, MeasurementFile)> = files
        .iter()
        .filter(|(_, f)| f.machine.kind == "gpu" && f.records.iter().any(|r| r.variant == "flash"))
        .collect();
    if cards.len() < 2 {
        return String::new();
    }
    let mut keys: Vec<(usize, String, usize)> = Vec::new();
    for (_, f) in &cards {
        for r in f.records.iter().filter(|r| r.variant == "flash") {
            let k = (r.d, r.mask.clone(), r.nq);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys.sort();
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|(d, mask, n)| {
            let mut row = vec![format!("D={d}, {mask}, N={n}")];
            for (_, f) in &cards {
                row.push(best_ratios(f, *d, mask, *n).map_or("—".into(), |(a, b)| {
                    format!("{}x / {}x", sig3(a), sig3(b))
                }));
            }
            row
        })
        .collect();
    let mut header = vec!["configuration".to_string()];
    header.extend(
        cards
            .iter()
            .map(|(_, f)| format!("{}: best ours / FA2 / cuDNN", f.machine.name)),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut out = String::from("\n");
    out += &md_table(&header, &rows);
    out += &format!(
        "\n*Table 02.4. Table 02.1's last two columns on every card measured, the same code and grid, each \
         card's peers timed in the same run as ours: {}.*\n",
        cards
            .iter()
            .map(|(name, f)| {
                let when = f
                    .records
                    .iter()
                    .find(|r| r.variant == "flash")
                    .map_or_else(String::new, |r| f.when(r));
                format!("{} ({when}; `measurements/{name}`)", f.machine.name)
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    out
}

fn bytes_table(name: &str, f: &MeasurementFile) -> String {
    let mut rows = Vec::new();
    for r in f
        .records
        .iter()
        .filter(|r| r.dram_bytes.is_some() && r.checked)
    {
        let dram = r.dram_bytes.unwrap_or_default();
        rows.push(vec![
            format!("`{}`", r.implementation),
            format!("B={}, H={}, N={}, D={}", r.b, r.hq, r.nq, r.d),
            si(r.bytes_model) + "B",
            si(dram) + "B",
            format!("{}x", sig3(dram / r.bytes_model)),
        ]);
    }
    if rows.is_empty() {
        return "*No DRAM counters are committed yet.*\n".into();
    }
    let mut out = md_table(
        &[
            "kernel",
            "problem (fp16, no mask)",
            "model bytes",
            "DRAM bytes (ncu, read + write)",
            "DRAM / model",
        ],
        &rows,
    );
    out += &format!(
        "\n*Table 02.2. `ncu --metrics dram__bytes_read.sum,dram__bytes_write.sum` over the whole launch(es), \
         beside the traffic model's slow-memory bytes for the same problem. The model charges every re-read of \
         K and V to slow memory; the {} L2 serves many of them, so the counter can fall far below the model. \
         {}.*\n",
        f.machine
            .l2_bytes
            .map_or("card's".to_string(), |b| format!("{} MiB", b / 1048576.0)),
        provenance(name, f)
    );
    out
}

/// A consumer state's colour in Figure 02.1 (codes of `trace::CONSUMER_STATES`).
const STATE_RGB: [(u8, u8, u8); 9] = [
    (140, 60, 170),  // next item (wait for Q, decode)
    (210, 40, 40),   // wait for K
    (240, 140, 40),  // wait for V
    (30, 60, 160),   // issue products
    (110, 160, 230), // wait for S
    (40, 150, 70),   // softmax
    (80, 200, 200),  // wait for P V
    (190, 200, 60),  // rescale O, round P
    (220, 80, 170),  // store O
];

/// The producer's states in three groups, for the figure: taking an item, waiting for a free tile or
/// stage, asking for a box.
fn producer_group(code: u32) -> (&'static str, (u8, u8, u8)) {
    if code == 16 {
        ("producer: take an item", (120, 120, 120))
    } else if trace::PRODUCER_WAITS.contains(&code) {
        ("producer: wait for a free tile", (215, 215, 215))
    } else {
        ("producer: ask for a box", (40, 40, 40))
    }
}

fn shape_name(r: &TraceRun) -> String {
    format!(
        "D = {}, N = {}, {}",
        r.d,
        r.n,
        if r.causal { "causal" } else { "no mask" }
    )
}

/// Cycles an item for a run: each consumer's span over its items, averaged over the traced blocks.
fn cycles_per_item(r: &TraceRun) -> f64 {
    let per: Vec<f64> = r
        .blocks
        .iter()
        .filter_map(|b| b.first())
        .filter(|w| !w.is_empty())
        .map(|w| trace::span(w) as f64 / (w.iter().map(|e| e[2]).max().unwrap_or(0) + 1) as f64)
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

/// Table 02.8: what ptxas made of every flash kernel in f16 for Hopper, from the committed report
/// (`measurements/ptxas/sm_90a.json`, written by `modern-attention kernels --json`): registers a thread,
/// spills, static shared memory and machine code, kernel by kernel (MiniGPT's head size 32 and v8's trace
/// build left out).
pub fn render_ptxas(files: &[crate::measure::ptxas::PtxasFile]) -> Artifact {
    let name = "lab02_ptxas.md";
    let Some(f) = files.iter().find(|f| f.arch == "sm_90a") else {
        return Artifact {
            name,
            contents: "*No ptxas report is committed yet (`modern-attention kernels --json \
                       measurements/ptxas/sm_90a.json flash_fwd FA_BF16=0`).*\n"
                .into(),
        };
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in f.modules.iter().filter(|m| {
        m.module.starts_with("flash_fwd.cu")
            && m.module.contains("-DFA_BF16=0")
            && !m.module.contains("FA_TRACE")
    }) {
        for k in &m.kernels {
            if k.name.ends_with("_32") || k.name.contains("_32_") || !seen.insert(k.name.clone()) {
                continue;
            }
            // flash_v1b_scores_128 -> v1b
            let version = k
                .name
                .strip_prefix("flash_")
                .and_then(|r| r.split('_').next())
                .unwrap_or("?");
            rows.push(vec![
                version.to_string(),
                format!("`{}`", k.name),
                k.registers.to_string(),
                format!("{} / {}", k.spill_stores, k.spill_loads),
                if k.smem == 0 {
                    "—".into()
                } else {
                    format!("{:.1}", k.smem as f64 / 1024.0)
                },
                format!("{:.1}", k.code as f64 / 1024.0),
            ]);
        }
    }
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
    let mut out = md_table(
        &[
            "version",
            "kernel",
            "registers a thread",
            "spills, bytes (stores / loads)",
            "static shared memory, KB",
            "machine code, KB",
        ],
        &rows,
    );
    out += &format!(
        "\n*Table 02.8. What ptxas made of each flash kernel in f16 for Hopper (`{}`): registers a thread at \
         launch (v8's warpgroups then move theirs with `setmaxnreg`: the producer gives some up, the consumers \
         take them), bytes spilled to local memory, static shared memory (a dash: none; the tiles of v4 and later \
         are dynamic, sized at launch) and the kernel's machine code (its `.text` section). A kernel's name \
         gives its head size, then for v4 to v7 its warps (`w`), for v8 its K/V stages (`s`), consumer \
         warpgroups (`c`), whether O leaves through a shared tile (`_o`) and, for the default kernels, the \
         masks one is compiled for (`_u`: none and whole key tiles; `_c`: causal without a window; neither: \
         any). Compiled, not measured: NVRTC {} \
         at commit {}, {}, with no GPU (`modern-attention kernels --json measurements/ptxas/sm_90a.json \
         flash_fwd FA_BF16=0`); from `measurements/ptxas/sm_90a.json`.*\n",
        f.arch, f.nvrtc, f.commit, f.date
    );
    Artifact {
        name,
        contents: out,
    }
}

/// Table 02.5 (where a consumer warpgroup's cycles go, per traced shape) and Figure 02.1 (a stretch
/// of block 0's timeline at the short and the long rows), from `measurements/traces/`.
pub fn render_trace(traces: &[TraceFile]) -> Vec<Artifact> {
    let Some(f) = traces.first() else {
        let none = "*No trace is committed yet (`gpu-probe trace`).*\n".to_string();
        return vec![
            Artifact {
                name: "lab02_trace.md",
                contents: none.clone(),
            },
            Artifact {
                name: "lab02_boundary.md",
                contents: none,
            },
            Artifact {
                name: "lab02_trace.svg",
                contents: "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"40\"><text x=\"4\" y=\"24\">no trace committed</text></svg>\n".into(),
            },
        ];
    };
    let mut header = vec!["shape".to_string(), "cycles an item".to_string()];
    header.extend(trace::CONSUMER_STATES.iter().map(|s| s.1.to_string()));
    header.push("producer waiting for a free tile".into());
    header.push("untraced time".into());
    let rows: Vec<Vec<String>> = f
        .runs
        .iter()
        .map(|r| {
            let nc = r.consumers;
            let (mut states, mut total) = (std::collections::BTreeMap::new(), 0u64);
            let (mut pwait, mut ptotal) = (0u64, 0u64);
            for b in &r.blocks {
                for (w, ev) in b.iter().enumerate() {
                    let c = trace::state_cycles(ev);
                    if w < nc {
                        for (k, v) in c {
                            *states.entry(k).or_insert(0u64) += v;
                        }
                        total += trace::span(ev);
                    } else {
                        pwait += trace::PRODUCER_WAITS
                            .iter()
                            .filter_map(|k| c.get(k))
                            .sum::<u64>();
                        ptotal += trace::span(ev);
                    }
                }
            }
            let pct = |x: u64, of: u64| format!("{:.1}%", 100.0 * x as f64 / of.max(1) as f64);
            let mut row = vec![shape_name(r), format!("{:.0}", cycles_per_item(r))];
            row.extend(
                trace::CONSUMER_STATES
                    .iter()
                    .map(|(code, _)| pct(*states.get(code).unwrap_or(&0), total)),
            );
            row.push(pct(pwait, ptotal));
            // A time is shown only for a kernel checked against the reference before it was timed.
            row.push(if r.checked {
                format!("{:.4} ms", r.ms)
            } else {
                "— (not checked)".into()
            });
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = md_table(&header, &rows);
    table += &format!(
        "\n*Table 02.5, {}. v8's trace build (`gpu-probe trace`): the share of a consumer warpgroup's \
         cycles in each state (thread 0 of every consumer warpgroup of the first {} blocks, from its \
         first event to its last; a state lasts from its event to the writer's next), the cycles an \
         item takes (one block's span over the items it took), the producer's share of cycles spent \
         waiting for a free Q tile, K stage or V stage, and the untraced kernel's median time on the \
         same inputs (fp16, B N = 16k tokens, H = 2048 / D). {} Commit {}, {}; from \
         `measurements/traces/`.*\n",
        f.card,
        f.runs.first().map_or(0, |r| r.blocks.len()),
        if f.runs.iter().all(|r| r.same_output) {
            "Every traced launch wrote the untraced one's output bit for bit."
        } else {
            "NOT every traced launch wrote the untraced one's output: the trace build is suspect."
        },
        f.commit,
        f.date
    );
    vec![
        Artifact {
            name: "lab02_trace.md",
            contents: table,
        },
        Artifact {
            name: "lab02_boundary.md",
            contents: boundary_table(f),
        },
        Artifact {
            name: "lab02_trace.svg",
            contents: trace_figure(f).unwrap_or_else(|e| {
                format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{e}</text></svg>\n")
            }),
        },
    ]
}

/// Table 02.6: an item boundary against a step of the loop, per traced shape (medians over the
/// consumer warpgroups of the traced blocks).
fn boundary_table(f: &TraceFile) -> String {
    let mut header = vec![
        "shape".to_string(),
        "a step of the loop".to_string(),
        "an item boundary".to_string(),
    ];
    header.extend(trace::CONSUMER_STATES.iter().map(|s| s.1.to_string()));
    let rows: Vec<Vec<String>> = f
        .runs
        .iter()
        .map(|r| {
            let writers: Vec<&[[u64; 4]]> = r
                .blocks
                .iter()
                .flat_map(|b| b.iter().take(r.consumers).map(Vec::as_slice))
                .collect();
            let b = trace::boundaries(&writers);
            let mut row = vec![
                shape_name(r),
                format!("{:.0}", b.step),
                format!("{:.0}", b.boundary),
            ];
            row.extend(
                trace::CONSUMER_STATES
                    .iter()
                    .map(|(code, _)| format!("{:.0}", b.states.get(code).copied().unwrap_or(0.0))),
            );
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = md_table(&header, &rows);
    table += &format!(
        "\n*Table 02.6, {}. An item's boundary in v8's trace (Table 02.5's events), in cycles: the median \
         step of the loop (from the first event of an item's key tile to the first of its next, the \
         last P V included), the median boundary (from the first event of an item's last P V to the \
         first of the next item's second key tile), and the median cycles of each state within a \
         boundary. A state that runs under a product (Step 8, entry p) still counts here: compare the \
         boundary with the step, not the states with zero. Commit {}, {}; from `measurements/traces/`.*\n",
        f.card, f.commit, f.date
    );
    table
}

/// Figure 02.1: block 0's timeline at D = 128 without a mask, N = 512 and N = 4096, over the same
/// number of cycles (three short items), from the start of its third item.
fn trace_figure(f: &TraceFile) -> Result<String, String> {
    use super::figures::{gantt, GanttPanel};
    let pick = |n: usize| {
        f.runs
            .iter()
            .find(|r| r.d == 128 && r.n == n && !r.causal)
            .ok_or(format!("no D = 128 N = {n} trace"))
    };
    let (short, long) = (pick(512)?, pick(4096)?);
    let width = 3.0 * cycles_per_item(short);
    let panel = |r: &TraceRun| -> Result<GanttPanel, String> {
        let b = r.blocks.first().ok_or("no block")?;
        let start = b
            .first()
            .and_then(|w| w.iter().find(|e| e[1] == 1 && e[2] == 2))
            .map_or(0.0, |e| e[0] as f64);
        let rows = b
            .iter()
            .enumerate()
            .map(|(w, ev)| {
                let name = if w < r.consumers {
                    format!("warpgroup {w}")
                } else {
                    "producer".to_string()
                };
                let bars = ev
                    .windows(2)
                    .filter_map(|p| {
                        let code = p[0][1] as u32;
                        let rgb = if w < r.consumers {
                            let i = trace::CONSUMER_STATES.iter().position(|s| s.0 == code)?;
                            STATE_RGB[i]
                        } else {
                            producer_group(code).1
                        };
                        Some((
                            (p[0][0] as f64 - start) / 1e3,
                            (p[1][0] as f64 - start) / 1e3,
                            rgb,
                        ))
                    })
                    .collect();
                (name, bars)
            })
            .collect();
        Ok(GanttPanel {
            title: shape_name(r),
            rows,
            x: (0.0, width / 1e3),
        })
    };
    let mut legend: Vec<(String, (u8, u8, u8))> = trace::CONSUMER_STATES
        .iter()
        .zip(STATE_RGB)
        .map(|(s, c)| (s.1.to_string(), c))
        .collect();
    for code in [16, 19, 20] {
        let (name, c) = producer_group(code);
        legend.push((name.to_string(), c));
    }
    gantt(
        &format!(
            "{}: v8, one block from its third item ({}, {})",
            f.card, f.commit, f.date
        ),
        "thousands of SM cycles",
        &[panel(short)?, panel(long)?],
        &legend,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Generated, Machine};
    use crate::minimodel::shape::AttnShape;

    fn race(imp: &str, round: usize, tflops: f64) -> Record {
        let s = AttnShape::self_attention(32, 32, 512, 64).expect("shape");
        let mut r = Record::new("race", imp, "f16", &s, "causal");
        r.tflops = tflops;
        r.checked = true;
        r.round = Some(round);
        r
    }

    /// Table 02.7 takes each ratio within a round: ours twice as fast as cuDNN in every round reads
    /// 2.000x even though both sides' rates moved between rounds, and the medians of the rates are the
    /// middle rounds'.
    #[test]
    fn race_ratios_are_taken_within_rounds() {
        let records = vec![
            race("ours/v8_tma", 1, 200.0),
            race("torch/cudnn", 1, 100.0),
            race("torch/flash", 1, 50.0),
            race("ours/v8_tma", 2, 400.0),
            race("torch/cudnn", 2, 200.0),
            race("torch/flash", 2, 400.0),
            race("ours/v8_tma", 3, 300.0),
            race("torch/cudnn", 3, 150.0),
            race("torch/flash", 3, 150.0),
        ];
        let f = MeasurementFile {
            machine: Machine {
                kind: "gpu".into(),
                name: "Test Card".into(),
                cores: 1,
                driver: None,
                cuda: None,
                peak_gflops: 0.0,
                bandwidth_gbps: 0.0,
                peak_gflops_1t: None,
                bandwidth_gbps_1t: None,
                read_gbps: None,
                read_gbps_by_order: None,
                exp_per_s: None,
                mma_sync_gflops: None,
                clock_mhz: None,
                l2_bytes: None,
            },
            generated: Generated {
                date: "2026-11-29".into(),
                commit: "abc".into(),
                rustc: "r".into(),
                threads: 1,
            },
            records,
        };
        let t = race_table("gpu-test.json", &f);
        let row = t
            .lines()
            .find(|l| l.starts_with("| 64 | causal | 512 |"))
            .expect("a row");
        assert_eq!(
            row,
            "| 64 | causal | 512 | 300 | 150 | 150 | 2.000x (2.000-2.000) | 2.000x (1.000-4.000) | 3 |"
        );
        assert!(t.contains("in 3 rounds"), "{t}");
        assert!(
            t.contains(
                "ours ahead at 1 of 1 shapes; behind at none; on both sides of 1 (level on this \
                 card) at none."
            ),
            "{t}"
        );
        assert!(t.contains("Test Card (commit abc, 2026-11-29)"), "{t}");
    }
}
