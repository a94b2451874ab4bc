//! Theory 00's tables: attention's FLOPs, bytes and intensity at the two anchor lengths, the H100's
//! datasheet roofline, and the worked example on it. Computed from [`crate::roofline`], not measured.

use super::{md_table, Artifact};
use crate::minimodel::config::{MiniGptConfig, STRESS_SEQ_LEN, VERB_SEQ_LEN};
use crate::minimodel::numeric::DType;
use crate::minimodel::shape::AttnShape;
use crate::roofline::spec::H100_SXM_DATASHEET;
use crate::roofline::traffic::{bytes_fused, bytes_naive, flops, intensity};
use crate::roofline::{lower_bound_seconds, si, sig3};

/// The three tables.
pub fn render() -> Vec<Artifact> {
    vec![
        Artifact {
            name: "t00_intensity.md",
            contents: intensity_table(),
        },
        Artifact {
            name: "t00_machine.md",
            contents: machine_table(),
        },
        Artifact {
            name: "t00_worked.md",
            contents: worked_table(),
        },
        Artifact {
            name: "t00_predict.md",
            contents: predict_examples(),
        },
    ]
}

/// The output of `modern-attention predict` for two one-line descriptions, on the H100's datasheet.
fn predict_examples() -> String {
    use crate::roofline::predict::{parse, report};
    let mut out = String::new();
    for line in [
        "kind=decode b=16 hq=32 hkv=8 n=65536 d=128 dtype=f16",
        "kind=flash b=8 hq=16 n=2048 d=128 dtype=f16 mask=causal br=128 bc=64",
    ] {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        let text = match parse(&words) {
            Ok((v, _)) => report(&v, &H100_SXM_DATASHEET),
            Err(e) => e.to_string(),
        };
        out += &format!("```text\n$ cargo run --release -- predict {line}\n{text}```\n\n");
    }
    out
}

fn intensity_table() -> String {
    let head = MiniGptConfig::MINIGPT.head_size;
    let (v, st) = (VERB_SEQ_LEN, STRESS_SEQ_LEN);
    // (case, Hq, Hkv, S, T, D): one (batch, kv-head) unit; GQA puts G query heads on one kv head.
    let cases = [
        ("prefill, verb sequence", 1, 1, v, v, head),
        ("prefill, verb sequence", 1, 1, v, v, 64),
        ("prefill, stress", 1, 1, st, st, 64),
        ("prefill, stress", 1, 1, st, st, 128),
        ("decode, verb sequence", 1, 1, 1, v, 64),
        ("decode, stress", 1, 1, 1, st, 64),
        ("GQA decode, G=8", 8, 1, 1, st, 128),
    ];
    let m = H100_SXM_DATASHEET;
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|&(case, hq, hkv, s, t, d)| {
            let sh = AttnShape::new(1, hq, hkv, s, t, d).expect("valid table shape");
            let f = flops(&sh);
            let (bf, bn) = (bytes_fused(&sh, DType::F16), bytes_naive(&sh, DType::F16));
            let (i_f, i_n) = (intensity(f, bf), intensity(f, bn));
            let bound = if i_f < m.ridge() { "memory" } else { "compute" };
            vec![
                case.to_string(),
                (s * hq).to_string(),
                t.to_string(),
                d.to_string(),
                si(f) + "FLOP",
                si(bf) + "B",
                sig3(i_f),
                si(bn) + "B",
                sig3(i_n),
                bound.to_string(),
            ]
        })
        .collect();
    let mut s = md_table(
        &[
            "case",
            "S (query rows)",
            "T (keys)",
            "D",
            "FLOPs",
            "bytes, fused",
            "FLOP/byte, fused",
            "bytes, naive",
            "FLOP/byte, naive",
            "bound on H100 (fused)",
        ],
        &rows,
    );
    s += &format!(
        "\n*Table 00.1. One (batch, kv head) pair at fp16 (2 bytes per element), no mask; the GQA row puts \
         its G query heads' rows together on one kv head. FLOPs = 4·S·T·D; fused bytes move Q, K, V and O \
         once; naive bytes add S and P written and read back. The bound compares the fused intensity with \
         the H100's datasheet ridge point ({} FLOP/byte, Table 00.2). Computed by `src/roofline/traffic.rs`.*\n",
        sig3(m.ridge())
    );
    s
}

fn machine_table() -> String {
    let m = H100_SXM_DATASHEET;
    let mut s = md_table(
        &[
            "machine",
            "peak FLOP/s",
            "bandwidth",
            "ridge point (FLOP/byte)",
            "source",
        ],
        &[vec![
            m.name.to_string(),
            si(m.peak_flops) + "FLOP/s",
            si(m.bandwidth) + "B/s",
            sig3(m.ridge()),
            m.source.to_string(),
        ]],
    );
    s += "\n*Table 00.2. Vendor ceilings, not measurements; the regenerate job adds the measured ceilings \
          of the machine it runs on. From `src/roofline/spec.rs`.*\n";
    s
}

fn worked_table() -> String {
    let m = H100_SXM_DATASHEET;
    let d = 64;
    let heads = 2048 / d; // FlashAttention's benchmark sizing: H * D = 2048
    let mut rows = Vec::new();
    for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
        let b = 16 * 1024 / n; // B * N = 16k tokens
        let sh = AttnShape::self_attention(b, heads, n, d).expect("valid worked-example shape");
        let f = flops(&sh);
        for (variant, bytes) in [
            ("naive", bytes_naive(&sh, DType::F16)),
            ("fused", bytes_fused(&sh, DType::F16)),
        ] {
            let (t, bound) = lower_bound_seconds(f, bytes, &m);
            rows.push(vec![
                format!("B={b}, H={heads}, N={n}, D={d}"),
                variant.to_string(),
                si(f) + "FLOP",
                si(bytes) + "B",
                sig3(intensity(f, bytes)),
                si(f / m.peak_flops) + "s",
                si(bytes / m.bandwidth) + "s",
                si(t) + "s",
                bound.name().to_string(),
            ]);
        }
    }
    let mut s = md_table(
        &[
            "problem",
            "algorithm",
            "FLOPs",
            "bytes",
            "FLOP/byte",
            "T_math",
            "T_comms",
            "lower bound",
            "bound",
        ],
        &rows,
    );
    s += "\n*Table 00.3. FlashAttention's benchmark sizing (B·N = 16k tokens, H·D = 2048), fp16, no mask, \
          on the H100's datasheet roofline (Table 00.2). The lower bound is max(T_math, T_comms); a real \
          kernel lands between it and T_math + T_comms. Computed by `src/roofline/`.*\n";
    s
}
