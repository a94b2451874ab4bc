//! Lab 00's tables: batched, online and blocked softmax on attention score rows at the two anchor
//! lengths, and what happens without the max at growing score magnitudes. Computed, not timed.

use super::{md_table, Artifact};
use crate::minimodel::config::{MiniGptConfig, STRESS_SEQ_LEN, VERB_SEQ_LEN};
use crate::minimodel::corpus::{decode, verb_sequence, VERB_CORPUS};
use crate::minimodel::rng::Rng;
use crate::minimodel::shape::Mask;
use crate::minimodel::softmax::{blocked_softmax, online_softmax, softmax, unsafe_softmax};

/// The seed of every lab 00 input.
pub const SEED: u64 = 2700;

/// Lab 00's three tables.
pub fn render() -> Vec<Artifact> {
    vec![
        Artifact {
            name: "minigpt.md",
            contents: minigpt_table(),
        },
        Artifact {
            name: "lab00_softmax.md",
            contents: softmax_table(),
        },
        Artifact {
            name: "lab00_overflow.md",
            contents: overflow_table(),
        },
    ]
}

/// Causal score rows `S = Q K^T / sqrt(D)` of one head with seeded unit-normal `Q` and `K` (masked
/// entries are `-inf`), scaled by `scale`.
pub fn score_rows(n: usize, d: usize, scale: f64, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let q: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
    let k: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
    let inv = scale / (d as f64).sqrt();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if Mask::CAUSAL.visible(i, j, n, n) {
                        q[i * d..][..d]
                            .iter()
                            .zip(&k[j * d..][..d])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            * inv
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect()
        })
        .collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.1e}")
    }
}

fn minigpt_table() -> String {
    let c = MiniGptConfig::MINIGPT;
    let rows = vec![
        vec!["vocabulary (bytes)".into(), c.vocab_size.to_string()],
        vec!["d_model".into(), c.d_model.to_string()],
        vec!["query heads Hq".into(), c.n_heads.to_string()],
        vec!["kv heads Hkv (MHA)".into(), c.n_kv_heads.to_string()],
        vec!["head size D".into(), c.head_size.to_string()],
        vec!["layers".into(), c.n_layers.to_string()],
        vec!["verb sequence length".into(), VERB_SEQ_LEN.to_string()],
        vec!["stress length".into(), STRESS_SEQ_LEN.to_string()],
        vec!["corpus size (tokens)".into(), VERB_CORPUS.len().to_string()],
    ];
    let text = decode(&verb_sequence()).unwrap_or_else(|e| format!("(not UTF-8: {e})"));
    let mut s = md_table(&["MiniGPT", "value"], &rows);
    s += &format!(
        "\n*Table M.1. MiniGPT's shapes (`src/minimodel/config.rs`). The verb sequence is the corpus's first \
         {VERB_SEQ_LEN} byte tokens:* `{text}`\n"
    );
    s
}

fn softmax_table() -> String {
    let d = MiniGptConfig::MINIGPT.head_size;
    let mut rows = Vec::new();
    for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
        let srows = score_rows(n, d, 1.0, SEED);
        let mut rng = Rng::new(SEED + 1);
        // (method, passes, max |p - p_batched|, max |sum p - 1|)
        let mut stats = [
            ("batched", 3, 0.0f64, 0.0f64),
            ("online", 2, 0.0, 0.0),
            ("blocked, 16, reversed", 2, 0.0, 0.0),
            ("blocked, 16, shuffled", 2, 0.0, 0.0),
        ];
        for x in &srows {
            let base = softmax(x).expect("causal rows see at least their own key");
            let nb = x.len().div_ceil(16);
            let rev: Vec<usize> = (0..nb).rev().collect();
            let mut shuf: Vec<usize> = (0..nb).collect();
            rng.shuffle(&mut shuf);
            let outs = [
                base.clone(),
                online_softmax(x).expect("valid row"),
                blocked_softmax(x, 16, &rev).expect("valid row"),
                blocked_softmax(x, 16, &shuf).expect("valid row"),
            ];
            for (st, p) in stats.iter_mut().zip(&outs) {
                st.2 = st.2.max(max_abs_diff(p, &base));
                st.3 = st.3.max((p.iter().sum::<f64>() - 1.0).abs());
            }
        }
        for (method, passes, dp, ds) in stats {
            rows.push(vec![
                format!("N={n}"),
                method.into(),
                passes.to_string(),
                sci(dp),
                sci(ds),
            ]);
        }
    }
    let mut s = md_table(
        &[
            "rows",
            "method",
            "passes over the row",
            "max \\|p − p_batched\\|",
            "max \\|Σp − 1\\|",
        ],
        &rows,
    );
    s += &format!(
        "\n*Table 00.L1. Causal score rows of one MiniGPT head (D = {d}) with seeded unit-normal Q and K \
         (seed {SEED}), in f64. \"Blocked\" splits each row into blocks of 16 scores and merges their (m, l) \
         states in reversed or shuffled order. Computed by `src/regenerate/lab00.rs`.*\n"
    );
    s
}

fn overflow_table() -> String {
    let d = MiniGptConfig::MINIGPT.head_size;
    let mut rows = Vec::new();
    for scale in [1.0, 1e2, 1e3, 1e4] {
        let srows = score_rows(VERB_SEQ_LEN, d, scale, SEED);
        let bad = |p: &[f64]| p.iter().any(|v| !v.is_finite());
        let (mut unsafe_bad, mut online_bad, mut diff) = (0, 0, 0.0f64);
        for x in &srows {
            let u = unsafe_softmax(x);
            let o = online_softmax(x).expect("valid row");
            unsafe_bad += usize::from(bad(&u));
            online_bad += usize::from(bad(&o));
            diff = diff.max(max_abs_diff(&o, &softmax(x).expect("valid row")));
        }
        let max_score = srows
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        rows.push(vec![
            format!("{scale:e}"),
            format!("{max_score:.3e}"),
            format!("{unsafe_bad} of {}", srows.len()),
            format!("{online_bad} of {}", srows.len()),
            sci(diff),
        ]);
    }
    let mut s = md_table(
        &[
            "score scale",
            "largest score",
            "rows with inf/NaN, no max subtracted",
            "rows with inf/NaN, online",
            "max \\|p_online − p_batched\\|",
        ],
        &rows,
    );
    s += &format!(
        "\n*Table 00.L2. The verb-sequence rows of Table 00.L1 multiplied by a scale, in f64 (exp overflows \
         past about 709). Seed {SEED}. Computed by `src/regenerate/lab00.rs`.*\n"
    );
    s
}
