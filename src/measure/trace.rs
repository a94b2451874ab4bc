//! v8's trace build, recorded: the file `gpu-probe trace` writes (`measurements/traces/<card>.json`)
//! and the summaries Lab 02 draws from it. Each writer (thread 0 of a consumer warpgroup, or the
//! producer's thread) records the SM clock at every change of state; a state lasts until the writer's
//! next event (`trace_codes` in `kernels/flash_fwd.cu`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The shapes `gpu-probe trace` records, as (D, N, causal): the short and the long unmasked rows at
/// D = 128, the short causal ones, and the short rows at D = 64, unmasked and causal.
pub const RUNS: [(usize, usize, bool); 5] = [
    (128, 512, false),
    (128, 4096, false),
    (128, 512, true),
    (64, 512, false),
    (64, 512, true),
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
    /// The untraced kernel's output passed the rule against the f64 reference before it was timed
    /// (false in files written before the check existed: their times are not shown).
    #[serde(default)]
    pub checked: bool,
    /// Its max error (NaN, `null` in the file, where the check failed or did not run).
    #[serde(default = "nan", with = "super::nan_as_null")]
    pub max_err: f64,
    /// The traced launch's output equals the untraced one's, bit for bit.
    pub same_output: bool,
    /// Per block, per writer (consumers, then the producer): `[cycle, code, item, tile]`, cycles counted
    /// from the block's first event.
    pub blocks: Vec<Vec<Vec<[u64; 4]>>>,
}

fn nan() -> f64 {
    f64::NAN
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

/// The producer's waits for a free Q tile, K stage or V stage (codes of [`PRODUCER_STATES`]).
pub const PRODUCER_WAITS: [u32; 3] = [17, 19, 21];

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

/// An item boundary against a step of the loop, over consumer writers' events (medians in cycles).
#[derive(Debug, Clone, PartialEq)]
pub struct Boundaries {
    /// One step of the loop: from the first event of an item's key tile t >= 1 to the first of tile t + 1
    /// (or of the item's last P V, which the kernel tags with the item's tile count).
    pub step: f64,
    /// One boundary: from the first event of an item's last P V to the first event of the next item's
    /// tile 1 (its second key tile, or its own last P V when it has one tile).
    pub boundary: f64,
    /// Within a boundary, the cycles in each state (by code; 0 where a boundary has none).
    pub states: BTreeMap<u32, f64>,
    /// Boundaries counted.
    pub count: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// [`Boundaries`] over the given writers' events (each `[cycle, code, item, tile]`, in order). An item's
/// last tile is the largest tile its events carry; the state codes are those of [`CONSUMER_STATES`].
pub fn boundaries(writers: &[&[[u64; 4]]]) -> Boundaries {
    let (mut steps, mut spans) = (Vec::new(), Vec::new());
    let mut per_state: BTreeMap<u32, Vec<f64>> =
        CONSUMER_STATES.iter().map(|s| (s.0, Vec::new())).collect();
    for ev in writers {
        // The first event carrying each (item, tile), and each item's last tile.
        let mut first: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        let mut last_tile: BTreeMap<u64, u64> = BTreeMap::new();
        for (i, e) in ev.iter().enumerate() {
            first.entry((e[2], e[3])).or_insert(i);
            let t = last_tile.entry(e[2]).or_insert(0);
            *t = (*t).max(e[3]);
        }
        for (&n, &tn) in &last_tile {
            for t in 1..tn {
                if let (Some(&a), Some(&b)) = (first.get(&(n, t)), first.get(&(n, t + 1))) {
                    steps.push(ev[b][0].saturating_sub(ev[a][0]) as f64);
                }
            }
            let (Some(&a), Some(&b)) = (first.get(&(n, tn)), first.get(&(n + 1, 1))) else {
                continue;
            };
            if tn == 0 || b <= a {
                continue;
            }
            spans.push(ev[b][0].saturating_sub(ev[a][0]) as f64);
            let sums = state_cycles(&ev[a..=b]);
            for (code, v) in per_state.iter_mut() {
                v.push(*sums.get(code).unwrap_or(&0) as f64);
            }
        }
    }
    let count = spans.len();
    Boundaries {
        step: median(steps),
        boundary: median(spans),
        states: per_state.into_iter().map(|(k, v)| (k, median(v))).collect(),
        count,
    }
}

/// Every trace file under `dir` (`measurements/traces/*.json`), sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<TraceFile>, String> {
    super::load_json_dir(dir)
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

    #[test]
    fn a_boundary_runs_from_the_last_p_v_to_the_next_items_second_tile() {
        // Item 0 has two key tiles (its last P V tagged tile 2), item 1 three. Tile 1 of item 0 is one
        // step (100..200); the boundary runs from the last P V's first event (200) to item 1's tile 1
        // (500), with the next item read 210..260, its S issued and O stored 260..400, its softmax
        // 400..500. Item 1's steps: 500..620 and 620..760. No boundary follows item 1.
        let ev = [
            [0, 2, 0, 0],
            [100, 2, 0, 1],
            [200, 3, 0, 2],
            [210, 1, 1, 0],
            [260, 4, 1, 0],
            [300, 9, 0, 2],
            [400, 6, 1, 0],
            [500, 2, 1, 1],
            [620, 2, 1, 2],
            [760, 3, 1, 3],
            [800, 10, 2, 0],
        ];
        let b = boundaries(&[&ev]);
        assert_eq!(b.count, 1);
        assert_eq!(b.boundary, 300.0);
        assert_eq!(b.step, 120.0, "median of 100, 120 and 140");
        assert_eq!(b.states[&3], 10.0);
        assert_eq!(b.states[&1], 50.0);
        assert_eq!(b.states[&4], 40.0);
        assert_eq!(b.states[&9], 100.0);
        assert_eq!(b.states[&6], 100.0);
        assert_eq!(b.states[&5], 0.0, "no wait for S in this boundary");
        assert_eq!(b.states.values().sum::<f64>(), b.boundary);
        let none = boundaries(&[]);
        assert_eq!((none.count, none.step, none.boundary), (0, 0.0, 0.0));
    }
}
