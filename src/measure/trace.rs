//! v8's trace build, recorded: the file `gpu-probe trace` writes (`measurements/traces/<card>.json`)
//! and the summaries Lab 02 draws from it. Each writer (thread 0 of a consumer warpgroup, or the
//! producer's thread) records the SM clock at every change of state; a state lasts until the writer's
//! next event (`trace_codes` in `kernels/flash_fwd.cu`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The shapes `gpu-probe trace` records, as (D, N, causal): the short and the long unmasked rows at
/// D = 128, the short causal ones, and the short rows at D = 64.
pub const RUNS: [(usize, usize, bool); 4] = [
    (128, 512, false),
    (128, 4096, false),
    (128, 512, true),
    (64, 512, false),
];

/// One traced launch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceRun {
    /// Head size.
    pub d: usize,
    /// Sequence length (queries and keys).
    pub n: usize,
    /// Causal mask.
    pub causal: bool,
    /// Batch.
    pub b: usize,
    /// Heads.
    pub hq: usize,
    /// K/V stages.
    pub stages: usize,
    /// Consumer warpgroups.
    pub consumers: usize,
    /// The untraced kernel's median time on the same buffers, ms.
    pub ms: f64,
    /// The traced launch's output equals the untraced one's, bit for bit.
    pub same_output: bool,
    /// Per block, per writer (consumers, then the producer): `[cycle, code, item, tile]`, cycles counted
    /// from the block's first event.
    pub blocks: Vec<Vec<Vec<[u64; 4]>>>,
}

/// A trace file: the card and every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceFile {
    /// The card's name.
    pub card: String,
    /// The commit the bundle was built from.
    pub commit: String,
    /// The date of the run (UTC).
    pub date: String,
    /// The runs, in [`RUNS`] order.
    pub runs: Vec<TraceRun>,
}

/// A consumer's states in the order the figure's legend lists them, with their codes.
pub const CONSUMER_STATES: [(u32, &str); 9] = [
    (1, "next item (wait for Q, decode)"),
    (2, "wait for K"),
    (3, "wait for V"),
    (4, "issue products"),
    (5, "wait for S"),
    (6, "softmax"),
    (7, "wait for P V"),
    (8, "rescale O, round P"),
    (9, "store O"),
];

/// The producer's states, likewise.
pub const PRODUCER_STATES: [(u32, &str); 7] = [
    (16, "take an item"),
    (17, "wait for a free Q tile"),
    (18, "ask for Q"),
    (19, "wait for a free K stage"),
    (20, "ask for K"),
    (21, "wait for a free V stage"),
    (22, "ask for V"),
];

/// Cycles a writer spent in each state, from its first event to its last.
pub fn state_cycles(events: &[[u64; 4]]) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for w in events.windows(2) {
        *out.entry(w[0][1] as u32).or_insert(0) += w[1][0].saturating_sub(w[0][0]);
    }
    out
}

/// The cycles from a writer's first event to its last.
pub fn span(events: &[[u64; 4]]) -> u64 {
    match (events.first(), events.last()) {
        (Some(a), Some(b)) => b[0].saturating_sub(a[0]),
        _ => 0,
    }
}

/// Every trace file under `dir` (`measurements/traces/*.json`), sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<TraceFile>, String> {
    super::json_files(dir)
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_last_until_the_next_event() {
        // wait for K 0..40, issue 40..50, wait for S 50..130, wait for K again 130..200, done at 200.
        let ev = [
            [0, 2, 0, 0],
            [40, 4, 0, 0],
            [50, 5, 0, 0],
            [130, 2, 0, 1],
            [200, 10, 1, 0],
        ];
        let c = state_cycles(&ev);
        assert_eq!(c.get(&2), Some(&110));
        assert_eq!(c.get(&4), Some(&10));
        assert_eq!(c.get(&5), Some(&80));
        assert_eq!(c.get(&10), None, "the last state has no length");
        assert_eq!(c.values().sum::<u64>(), span(&ev));
        assert_eq!(span(&[]), 0);
    }
}
