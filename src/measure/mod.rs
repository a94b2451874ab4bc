//! Measurements: the records every harness writes (`measurements/<machine>.json`, one schema), the
//! machine's measured ceilings, and the CPU and GPU harnesses that check, then time, every version.

pub mod ceilings;
pub mod cpu;
pub mod decode;
pub mod gpu;
pub mod gpu_paged;
pub mod ptxas;
pub mod trace;

use crate::minimodel::paged::block_manager::{BlockError, BlockManager, ManagerConfig};
use crate::minimodel::shape::AttnShape;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The machine a file was measured on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// `cpu` or `gpu`.
    pub kind: String,
    /// Model name, e.g. the CPU's `model name` or the GPU's name.
    pub name: String,
    /// Cores (threads) used.
    pub cores: usize,
    /// GPU driver version, when a GPU.
    #[serde(default)]
    pub driver: Option<String>,
    /// CUDA version, when a GPU.
    #[serde(default)]
    pub cuda: Option<String>,
    /// Measured peak arithmetic rate, GFLOP/s.
    pub peak_gflops: f64,
    /// Measured memory bandwidth (read plus write), GB/s.
    pub bandwidth_gbps: f64,
    /// Peak arithmetic rate of one thread, GFLOP/s (the roof of a single-threaded kernel), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_gflops_1t: Option<f64>,
    /// Copy bandwidth one thread draws, GB/s, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_gbps_1t: Option<f64>,
    /// Measured read-only memory bandwidth, GB/s (the roof of decode), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_gbps: Option<f64>,
    /// A GPU's read-only bandwidth by reader order (`gpu::paged::READ_ORDERS`, `+hint` with the L2
    /// line hint), GB/s, when measured: `read_gbps` is the fastest of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_gbps_by_order: Option<std::collections::BTreeMap<String, f64>>,
    /// Exponentials per second over all threads (the softmax's one per score), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_per_s: Option<f64>,
    /// GPU: FLOP/s of the tensor cores through `mma.sync` (`gpu::ceilings::mma_sync_rate`), the roof
    /// of kernels built on that instruction (v4, v5, FlashAttention-2) below the matrix product's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mma_sync_gflops: Option<f64>,
    /// A GPU's maximum SM clock in MHz, as its driver reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_mhz: Option<f64>,
    /// A GPU's L2 size in bytes, as its driver reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_bytes: Option<f64>,
}

/// When and from what a file was generated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Generated {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The crate's git commit.
    pub commit: String,
    /// `rustc --version`.
    pub rustc: String,
    /// Worker threads.
    pub threads: usize,
}

/// One timed configuration of one implementation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// `naive`, `flash`, ...
    pub variant: String,
    /// `ours/<version>` or `torch/<backend>`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Storage type.
    pub dtype: String,
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads.
    pub hkv: usize,
    /// Query rows.
    pub nq: usize,
    /// Key rows.
    pub nk: usize,
    /// Head size.
    pub d: usize,
    /// `none`, `causal`, `window:W`, ...
    pub mask: String,
    /// Median time, ms.
    pub ms: f64,
    /// Fastest run, ms.
    pub ms_min: f64,
    /// Slowest run, ms.
    pub ms_max: f64,
    /// Attained rate with FlashAttention's FLOP count (halved for causal), TFLOP/s.
    pub tflops: f64,
    /// Model bytes over median time, GB/s.
    pub gbps: f64,
    /// FLOPs counted.
    pub flops: f64,
    /// Bytes of the traffic model.
    pub bytes_model: f64,
    /// Bytes counted by an instrumented run, when there is one.
    #[serde(default)]
    pub bytes_counted: Option<f64>,
    /// Bytes the hardware counted (GPU DRAM counters), when measured.
    #[serde(default)]
    pub dram_bytes: Option<f64>,
    /// Max error against the f64 reference (NaN where the check failed, `null` in the file).
    #[serde(with = "nan_as_null")]
    pub max_err: f64,
    /// Whether the configuration passed the correctness rule before it was timed.
    pub checked: bool,
    /// Peak resident memory of a process that ran only this configuration once (variant `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<f64>,
    /// Bytes a KV cache actually allocated (variant `kv_cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_bytes: Option<f64>,
    /// The formula's bytes for the same cache (variant `kv_cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_bytes_formula: Option<f64>,
    /// Threads the timed kernel ran on, when it is not the file's (e.g. 1 for the decode experiment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Variant `crosscheck`: our output's max error against the f64 reference (`max_err` is against
    /// PyTorch's math backend on the same inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err_vs_f64: Option<f64>,
    /// Variant `crosscheck`: PyTorch's math backend's max error against the f64 reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_math_err_vs_f64: Option<f64>,
    /// `commit C, date D` for a record measured in a later run than the file's `generated` says
    /// (a section re-measured alone, e.g. `measure-gpu --only paged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
    /// Variant `race`: the round of an interleaved comparison (`bench/peers/torch_race.py`: our kernel
    /// and PyTorch's timed shape by shape, alternating) in which this record was timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<usize>,
    /// Runs timed in interleaved rounds beside a twin (the CPU paged decode against its contiguous
    /// twin, ...): this run's time over the twin's within each round, as its lower quartile, median
    /// and upper quartile over the rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_to_twin: Option<[f64; 3]>,
    /// Variant `decode_launch`: how the step was timed (`launched`, `replanned`, `queued`, `graph`,
    /// `graph-queued`; `src/measure/gpu_paged.rs`, `launch_records`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<String>,
    /// Variant `decode_launch`: the host's time to issue one call, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_us: Option<f64>,
    /// Variant `decode_launch`, queued timings: the stream's time outside the timed pairs while the
    /// runs ran, ms (`Queued::idle_ms`: the events between runs, and any wait for the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<f64>,
}

impl Record {
    /// A record of `shape` with every measured field zero or absent and `checked` false.
    pub fn new(
        variant: &str,
        implementation: &str,
        dtype: &str,
        shape: &AttnShape,
        mask: &str,
    ) -> Self {
        Self {
            variant: variant.into(),
            implementation: implementation.into(),
            dtype: dtype.into(),
            b: shape.b,
            hq: shape.hq,
            hkv: shape.hkv,
            nq: shape.nq,
            nk: shape.nk,
            d: shape.d,
            mask: mask.into(),
            ms: 0.0,
            ms_min: 0.0,
            ms_max: 0.0,
            tflops: 0.0,
            gbps: 0.0,
            flops: 0.0,
            bytes_model: 0.0,
            bytes_counted: None,
            dram_bytes: None,
            max_err: 0.0,
            checked: false,
            peak_rss_bytes: None,
            kv_cache_bytes: None,
            kv_cache_bytes_formula: None,
            threads: None,
            err_vs_f64: None,
            torch_math_err_vs_f64: None,
            measured: None,
            round: None,
            ratio_to_twin: None,
            timing: None,
            host_us: None,
            idle_ms: None,
        }
    }

    /// Fill the timing fields from run times in ms (any order, at least one), the FLOPs and the model's
    /// bytes: the median, the fastest and slowest runs, and the rates at the median.
    pub fn timed(mut self, times_ms: &[f64], flops: f64, bytes_model: f64) -> Self {
        let mut t = times_ms.to_vec();
        t.sort_by(f64::total_cmp);
        if let (Some(&lo), Some(&hi)) = (t.first(), t.last()) {
            self.ms = t[t.len() / 2];
            self.ms_min = lo;
            self.ms_max = hi;
            self.tflops = flops / self.ms / 1e9;
            self.gbps = bytes_model / self.ms / 1e6;
        }
        self.flops = flops;
        self.bytes_model = bytes_model;
        self
    }

    /// Set the correctness verdict.
    pub fn checked(mut self, checked: bool, max_err: f64) -> Self {
        self.checked = checked;
        self.max_err = max_err;
        self
    }
}

/// A whole measurement file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeasurementFile {
    /// The machine.
    pub machine: Machine,
    /// Provenance.
    pub generated: Generated,
    /// The records.
    pub records: Vec<Record>,
}

impl MeasurementFile {
    /// `commit C, date` a record was measured at: its own `measured` when a later run re-measured it,
    /// else the file's.
    pub fn when(&self, r: &Record) -> String {
        r.measured
            .clone()
            .unwrap_or_else(|| format!("commit {}, {}", self.generated.commit, self.generated.date))
    }
}

/// Read every `*.json` measurement file in `dir`, sorted by file name. Unreadable files are errors.
pub fn load_all(dir: &Path) -> Result<Vec<(String, MeasurementFile)>, String> {
    let mut out = Vec::new();
    for p in json_files(dir) {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let f: MeasurementFile =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push((
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            f,
        ));
    }
    Ok(out)
}

/// Every `*.json` file in `dir` (none if it does not exist), sorted by name, parsed as `T`; an error names
/// the file.
pub fn load_json_dir<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>, String> {
    json_files(dir)
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

/// The `.json` files directly in `dir`, sorted by name (none if `dir` cannot be read).
pub fn json_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<_> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
}

/// FlashAttention's FLOP count: `4 B Hq Nq Nk D`, halved for a causal mask (FA's benchmark convention).
pub fn fa_flops(b: usize, hq: usize, nq: usize, nk: usize, d: usize, causal: bool) -> f64 {
    4.0 * (b * hq) as f64 * nq as f64 * nk as f64 * d as f64 / if causal { 2.0 } else { 1.0 }
}

/// A lower-case slug of a machine name, for file names: `Intel(R) Xeon(R) Processor` -> `intel-xeon-processor`.
pub fn slug(name: &str) -> String {
    let cleaned = name.replace("(R)", "").replace("(TM)", "");
    let mut s = String::new();
    for c in cleaned.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').to_string()
}

/// The block tables of `b` sequences of `n` tokens admitted in turn by the block manager on a fresh pool
/// of exactly their blocks (no watermark): each prompt takes the next run of free blocks, so every table
/// is consecutive blocks, as a server's first requests get them.
pub fn fresh_tables(b: usize, n: usize, bs: usize) -> Result<Vec<Vec<usize>>, BlockError> {
    let cfg = ManagerConfig {
        watermark: 0.0,
        ..ManagerConfig::new(bs, b * n.div_ceil(bs), 0)
    };
    let mut mgr = BlockManager::new(cfg)?;
    let prompt = vec![0; n];
    (0..b as u64)
        .map(|seq| {
            let _ = mgr.allocate(&[seq], &prompt)?;
            mgr.block_table(seq)
        })
        .collect()
}

/// `times[i][r] / times[j][r]` over the rounds `r` both were timed in (runs timed in interleaved
/// rounds, one time each a round): the ratios' lower quartile, median and upper quartile.
pub fn round_ratios(a: &[f64], b: &[f64]) -> Option<[f64; 3]> {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let at = |q: f64| r[((r.len() - 1) as f64 * q).round() as usize];
    Some([at(0.25), at(0.5), at(0.75)])
}

/// The placements of Lab 03's Table 03.3 (the CPU's and the GPU's read passes) for `b` sequences of
/// `per_seq` blocks (`per_seq` even): `run` (each sequence one run of blocks), `pairs` (the runs with
/// every two neighbours swapped),
/// `gaps` (every other block of a run, in a pool twice as large), and `shuffled` as given.
pub fn read_order_tables(
    b: usize,
    per_seq: usize,
    shuffled: &[Vec<usize>],
) -> Vec<(&'static str, Vec<Vec<usize>>)> {
    let run: Vec<Vec<usize>> = (0..b)
        .map(|q| (q * per_seq..(q + 1) * per_seq).collect())
        .collect();
    let map = |f: fn(usize) -> usize| -> Vec<Vec<usize>> {
        run.iter()
            .map(|t| t.iter().map(|&x| f(x)).collect())
            .collect()
    };
    let (pairs, gaps) = (map(|x| x ^ 1), map(|x| 2 * x));
    vec![
        ("run", run),
        ("pairs", pairs),
        ("gaps", gaps),
        ("shuffled", shuffled.to_vec()),
    ]
}

/// JSON has no NaN: a failed check's max error (NaN) is written as `null` and read back as NaN, so that a
/// file holding an unchecked record stays readable.
pub(crate) mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_s_nan_error_survives_a_round_trip() {
        let s = AttnShape::self_attention(1, 1, 4, 4).unwrap();
        let rec = Record::new("flash", "ours/x", "f16", &s, "none")
            .timed(&[1.0], 1.0, 1.0)
            .checked(false, f64::NAN);
        let text = serde_json::to_string(&rec).unwrap();
        let back: Record = serde_json::from_str(&text).unwrap();
        assert!(back.max_err.is_nan() && !back.checked, "{text}");
        let ok = rec.checked(true, 2.5e-4);
        let back: Record = serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(back.max_err, 2.5e-4);
    }

    #[test]
    fn round_ratios_pair_rounds_not_medians() {
        // Run a is twice b in every round, though b's rounds drift: the medians' ratio would not say so.
        let b = [1.0, 2.0, 3.0, 10.0, 20.0];
        let a: Vec<f64> = b.iter().map(|x| 2.0 * x).collect();
        assert_eq!(round_ratios(&a, &b), Some([2.0, 2.0, 2.0]));
        let c = [1.0, 3.0, 2.0, 4.0, 5.0];
        assert_eq!(round_ratios(&c, &[1.0; 5]), Some([2.0, 3.0, 4.0]));
        assert_eq!(round_ratios(&[], &[]), None);
    }

    #[test]
    fn read_orders_place_each_sequence_on_distinct_blocks() {
        let shuffled = vec![vec![5, 2, 7, 0], vec![1, 6, 3, 4]];
        let orders = read_order_tables(2, 4, &shuffled);
        let names: Vec<&str> = orders.iter().map(|o| o.0).collect();
        assert_eq!(names, ["run", "pairs", "gaps", "shuffled"]);
        for (name, t) in &orders {
            let mut all: Vec<usize> = t.iter().flatten().copied().collect();
            let n = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n, "{name}: a block named twice");
            assert!(t.iter().all(|s| s.len() == 4), "{name}");
        }
        assert_eq!(orders[0].1, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(orders[1].1, vec![vec![1, 0, 3, 2], vec![5, 4, 7, 6]]);
        assert_eq!(orders[2].1, vec![vec![0, 2, 4, 6], vec![8, 10, 12, 14]]);
        assert_eq!(orders[3].1, shuffled);
    }

    #[test]
    fn slugs_and_flops() {
        assert_eq!(slug("Intel(R) Xeon(R) Processor"), "intel-xeon-processor");
        assert_eq!(
            slug("AMD EPYC 7B13 64-Core Processor"),
            "amd-epyc-7b13-64-core-processor"
        );
        assert_eq!(fa_flops(1, 1, 2, 2, 4, true), 32.0);
    }
}
