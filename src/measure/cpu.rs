//! The CPU harness: for every configuration of the grid, check each version against the f64 reference
//! (the tolerance rule, on the first batch's first heads and the last batch's last), then time it (one
//! warm-up, then the median of at least five runs, outputs poisoned between runs), and write the
//! measurement records. With a [`TorchPeer`], PyTorch's CPU SDPA is timed on the same configurations in
//! windows that alternate with ours.

use super::{ceilings, fa_flops, Generated, Machine, MeasurementFile, Record};
use crate::minimodel::attention_flash::{
    kernels::Isa, last_level_cache_bytes, tiled, Counter, Tiles, Version,
};
use crate::minimodel::check::{attn_close, LeadingHeads, FP16_BAR};
use crate::minimodel::numeric::{convert, DType, Element};
use crate::minimodel::paged::paged_attention::{
    contiguous_decode, contiguous_decode_on, paged_decode, paged_decode_partitioned,
    paged_decode_pool_order, read_pass, read_pass_contiguous, read_pass_pool_order, PagedBatch,
    PagedError, PagedKv,
};
use crate::minimodel::paged::replay::{served_tables, ServedConfig};
use crate::minimodel::reference::{attention_lowp, attention_ref64};
use crate::minimodel::rng::Rng;
use crate::minimodel::shape::{AttnShape, Mask};
use crate::roofline::traffic::{bytes_naive, flash_traffic};
use half::f16;
use rayon::prelude::*;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

// ANCHOR: torch_peer
/// PyTorch's CPU `scaled_dot_product_attention` in a child process that times a configuration when
/// asked (`bench/peers/torch_cpu_sdpa.py --serve`). Our timing windows and its windows alternate, a
/// fraction of a second each, so that a slow phase of a shared machine (another tenant on the same
/// cores) falls on both sides alike: timed one after the other, two medians of the same kernel
/// differed on the book's machine by more than a ratio near 1.0 can survive.
pub struct TorchPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// One timing window's reply.
#[derive(Debug, Deserialize)]
struct PeerWindow {
    times_ms: Vec<f64>,
    #[serde(with = "super::nan_as_null")]
    max_err: f64,
    checked: bool,
}

impl TorchPeer {
    /// Start the server with `python` (which must import torch) on `threads` threads.
    pub fn start(python: &str, script: &Path, threads: usize) -> Result<TorchPeer, String> {
        let mut child = Command::new(python)
            .arg(script)
            .args(["--serve", "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{python}: {e}"))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err("no pipes to the PyTorch peer".into());
        };
        let mut peer = TorchPeer {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        // Wait until it has imported torch and run once: importing takes seconds of CPU, which would
        // otherwise fall on the ceilings and the first configurations timed here.
        let mut line = String::new();
        peer.stdout
            .read_line(&mut line)
            .map_err(|e| format!("PyTorch peer: {e}"))?;
        if !line.contains("\"ready\"") {
            return Err(format!(
                "PyTorch peer did not report ready: {}",
                line.trim()
            ));
        }
        Ok(peer)
    }

    /// Time configuration `c` for about `seconds` (at least one run).
    fn window(&mut self, c: &Config, seconds: f64) -> Result<PeerWindow, String> {
        let s = c.shape;
        let request = serde_json::json!({
            "b": s.b, "h": s.hq, "n": s.nq, "d": s.d, "dtype": c.dtype.name(),
            "causal": c.mask == Mask::CAUSAL, "seconds": seconds,
        });
        writeln!(self.stdin, "{request}").map_err(|e| format!("PyTorch peer: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("PyTorch peer: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("PyTorch peer: {e}"))?;
        serde_json::from_str(&line).map_err(|e| format!("PyTorch peer replied {line:?}: {e}"))
    }
}

impl Drop for TorchPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alternating windows per compared configuration (half as many with `--quick`), and each window's
/// length in seconds.
const ROUNDS: usize = 4;
const WINDOW_S: f64 = 0.25;
// ANCHOR_END: torch_peer

/// One configuration of the grid.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Shape (B * N = 2048 tokens, 4 heads).
    pub shape: AttnShape,
    /// Mask.
    pub mask: Mask,
    /// Storage type.
    pub dtype: DType,
}

/// The grid: N in {64, 512, 2048} (the anchors and one between), D in {64, 128}, f32 and f16, causal
/// and not; `quick` keeps N in {64, 2048}, D = 64, f32.
pub fn grid(quick: bool) -> Vec<Config> {
    let mut out = Vec::new();
    let ns: &[usize] = if quick { &[64, 2048] } else { &[64, 512, 2048] };
    let ds: &[usize] = if quick { &[64] } else { &[64, 128] };
    let dts: &[DType] = if quick {
        &[DType::F32]
    } else {
        &[DType::F32, DType::F16]
    };
    for &dtype in dts {
        for &d in ds {
            for &n in ns {
                for mask in [Mask::NONE, Mask::CAUSAL] {
                    let shape =
                        AttnShape::self_attention((2048 / n).max(1), 4, n, d).expect("grid shape");
                    out.push(Config { shape, mask, dtype });
                }
            }
        }
    }
    out
}

fn variant(v: Version) -> &'static str {
    match v {
        Version::V1Naive | Version::V1bNaiveBlocked => "naive",
        Version::V2Online => "online",
        Version::V3Tiled => "flash",
    }
}

/// FLOPs of attention under `mask`: FlashAttention's convention (`4 B H N^2 D`, halved for causal), and
/// for a sliding window the pairs it keeps, `4 B H D` per visible (query, key) pair.
pub fn mask_flops(s: &AttnShape, mask: Mask) -> f64 {
    if mask.window.is_none() {
        return fa_flops(s.b, s.hq, s.nq, s.nk, s.d, mask.causal);
    }
    let pairs: i64 = (0..s.nq)
        .map(|i| {
            let (lo, hi) = crate::roofline::traffic::visible_keys(mask, i, s.nq, s.nk);
            (hi - lo).max(0)
        })
        .sum();
    4.0 * (s.b * s.hq * s.d) as f64 * pairs as f64
}

/// The variants beside the progression (section `variants`): sliding-window flash (a causal window of
/// `N / 8` keys) and GQA flash (8 query heads over 2 kv heads), f32, D = 64, at both anchors, B N = 2048
/// tokens. Each pair is (record variant, configuration).
pub fn variant_configs() -> Vec<(&'static str, Config)> {
    let mut out = Vec::new();
    for n in [
        crate::minimodel::config::VERB_SEQ_LEN,
        crate::minimodel::config::STRESS_SEQ_LEN,
    ] {
        let b = (2048 / n).max(1);
        let window = Mask::sliding(n / 8, true).expect("non-zero window");
        out.push((
            "flash_window",
            Config {
                shape: AttnShape::self_attention(b, 4, n, 64).expect("shape"),
                mask: window,
                dtype: DType::F32,
            },
        ));
        out.push((
            "flash_gqa",
            Config {
                shape: AttnShape::new(b, 8, 2, n, n, 64).expect("shape"),
                mask: Mask::NONE,
                dtype: DType::F32,
            },
        ));
    }
    out
}

/// Bytes of the row-at-a-time version: Q, O once, K and V once per query row.
fn bytes_rowwise(s: &AttnShape, dt: DType) -> f64 {
    let e = dt.bytes() as f64;
    (s.b * s.hq) as f64 * e * (2.0 * (s.nq * s.d) as f64 + 2.0 * (s.nq * s.nk * s.d) as f64)
}

fn run_config<T: Element>(
    c: &Config,
    versions: &[Version],
    mut peer: Option<&mut TorchPeer>,
    rounds: usize,
    log: &mut dyn FnMut(&str),
) -> Vec<Record> {
    let s = c.shape;
    let mut rng = Rng::new(27 + s.nq as u64 + s.d as u64);
    let q: Vec<T> = convert(&rng.normal_vec_f32(s.q_len()));
    let k: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let v: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    // The check covers batch 0's first kv heads (up to 2) and the last batch's last, with their query heads.
    let check = LeadingHeads::new(&q, &k, &v, &s, c.mask);
    let mut out = Vec::new();
    let mut o = vec![T::from_f32(f32::NAN); s.q_len()];
    let flops = mask_flops(&s, c.mask);
    for &ver in versions {
        o.fill(T::from_f32(f32::NAN)); // poisoned
        ver.run(&q, &k, &v, &s, c.mask, &mut o).expect("valid call");
        let name = format!("{} {:?}", ver.name(), (s.b, s.hq, s.nq, s.d));
        let verdict = check.check(&name, &o);
        let (checked, max_err) = crate::minimodel::check::verdict(&verdict, log);
        let mut times = Vec::new();
        let mut ours = |times: &mut Vec<f64>, seconds: f64, min_runs: usize, max_runs: usize| {
            let budget = Instant::now();
            let start = times.len();
            while times.len() - start < min_runs
                || (budget.elapsed().as_secs_f64() < seconds && times.len() - start < max_runs)
            {
                o.fill(T::from_f32(f32::NAN));
                let t = Instant::now();
                ver.run(&q, &k, &v, &s, c.mask, &mut o).expect("valid call");
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        };
        // The version PyTorch is compared with: alternating windows, each round opened by the other side.
        let (mut peer_times, mut peer_check) = (Vec::new(), None);
        match peer.as_deref_mut().filter(|_| ver == Version::V3Tiled) {
            Some(p) => {
                for round in 0..rounds {
                    for side in [round % 2, 1 - round % 2] {
                        if side == 0 {
                            ours(&mut times, WINDOW_S, 1, 1000);
                            continue;
                        }
                        match p.window(c, WINDOW_S) {
                            Ok(w) => {
                                peer_times.extend(w.times_ms);
                                peer_check = Some((w.max_err, w.checked));
                            }
                            Err(e) => log(&format!("PyTorch peer failed: {e}")),
                        }
                    }
                }
            }
            // The others alone: at least five runs (three in `--quick`, which runs half the rounds;
            // the naive versions take half a second a run at N = 2048).
            None => ours(&mut times, 0.5, if rounds < ROUNDS { 3 } else { 5 }, 30),
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let (bytes_model, bytes_counted) = match ver {
            Version::V1Naive | Version::V1bNaiveBlocked => (bytes_naive(&s, T::DTYPE), None),
            Version::V2Online => (bytes_rowwise(&s, T::DTYPE), None),
            Version::V3Tiled => {
                let t = Tiles::for_call(s.d, c.mask);
                let m = flash_traffic(&s, T::DTYPE, t.br, t.bc, c.mask);
                let counter = Counter::default();
                tiled(&q, &k, &v, &s, c.mask, &mut o, t, Isa::detect(), &counter)
                    .expect("valid call");
                ((m.loaded + m.stored) as f64, Some(counter.bytes() as f64))
            }
        };
        log(&format!(
            "{:9} {:4} N={:5} D={:3} {:6}: {:9.3} ms {:7.1} GFLOP/s {}",
            ver.name(),
            T::DTYPE.name(),
            s.nq,
            s.d,
            c.mask.name(),
            ms,
            flops / ms / 1e6,
            if checked { "checked" } else { "NOT CHECKED" }
        ));
        let rec = Record::new(
            variant(ver),
            &format!("ours/{}", ver.name()),
            T::DTYPE.name(),
            &s,
            &c.mask.name(),
        );
        out.push(Record {
            bytes_counted,
            ..rec
                .timed(&times, flops, bytes_model)
                .checked(checked, max_err)
        });
        if let Some((max_err, checked)) = peer_check {
            let e = T::DTYPE.bytes() as f64;
            let ideal = e * (s.b * s.hq) as f64 * 4.0 * (s.nq * s.d) as f64; // Q, K, V, O once
            let r = Record::new("flash", "torch/cpu", T::DTYPE.name(), &s, &c.mask.name())
                .timed(&peer_times, flops, ideal)
                .checked(checked, max_err);
            log(&format!(
                "{:9} {:4} N={:5} D={:3} {:6}: {:9.3} ms {:7.1} GFLOP/s {} (its windows alternating with ours)",
                "torch/cpu",
                T::DTYPE.name(),
                s.nq,
                s.d,
                c.mask.name(),
                r.ms,
                flops / r.ms / 1e6,
                if checked { "checked" } else { "NOT CHECKED" },
            ));
            out.push(r);
        }
    }
    out
}

/// The sections `--only` can pick, and the record variants each one writes.
pub const SECTIONS: [(&str, &[&str]); 5] = [
    ("flash", &["naive", "online", "flash"]),
    ("variants", &["flash_window", "flash_gqa"]),
    ("decode", &["kv_cache", "decode"]),
    (
        "paged",
        &["paged_decode", "paged_read", "paged_decode_sweep"],
    ),
    ("memory", &["memory"]),
];

/// The steps [`measure`] reports through its `step` callback: the ceilings, one per flash configuration
/// of [`grid`], then one per other section picked.
pub fn planned_steps(quick: bool, only: Option<&str>) -> usize {
    let wanted = |section: &str| only.is_none_or(|o| o == section);
    1 + if wanted("flash") {
        grid(quick).len()
    } else {
        0
    } + if wanted("variants") {
        variant_configs().len()
    } else {
        0
    } + usize::from(wanted("decode"))
        + 2 * usize::from(wanted("paged"))
        + usize::from(wanted("memory"))
}

/// Measure this machine: ceilings, then the grid (or only one section of [`SECTIONS`]). `log` receives
/// one line per timed configuration; `step` is called once per step of [`planned_steps`], with a label.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    quick: bool,
    only: Option<&str>,
    commit: &str,
    date: &str,
    rustc: &str,
    mut peer: Option<&mut TorchPeer>,
    log: &mut dyn FnMut(&str),
    step: &mut dyn FnMut(&str),
) -> MeasurementFile {
    let threads = rayon::current_num_threads();
    log(&format!(
        "ceilings: FMA peak and copy bandwidth over {threads} threads"
    ));
    let peak = ceilings::peak_flops(threads);
    let bw = ceilings::copy_bandwidth(threads, 256 << 20);
    // One thread's roof, for the kernels timed on one thread (the decode experiment).
    let (peak1, bw1) = (
        ceilings::peak_flops(1),
        ceilings::copy_bandwidth(1, 256 << 20),
    );
    // The read-only roof (decode only reads its cache).
    let rd = ceilings::read_bandwidth(threads, 256 << 20);
    let exps = ceilings::exp_rate(threads);
    log(&format!(
        "  peak {:.1} GFLOP/s, copy {:.1} GB/s, read {:.1} GB/s ({}); one thread: {:.1} GFLOP/s, {:.1} GB/s; {:.2} G exponentials/s",
        peak / 1e9,
        bw / 1e9,
        rd / 1e9,
        Isa::detect().name(),
        peak1 / 1e9,
        bw1 / 1e9,
        exps / 1e9
    ));
    step("ceilings");
    let mut records = Vec::new();
    let wanted = |section: &str| only.is_none_or(|o| o == section);
    let rounds = if quick { ROUNDS / 2 } else { ROUNDS };
    for c in grid(quick).into_iter().filter(|_| wanted("flash")) {
        // The naive and row-at-a-time versions take seconds at N = 2048 with f16 loads; time them in f32.
        let versions: &[Version] = if c.dtype == DType::F16 {
            &[Version::V3Tiled]
        } else {
            &Version::ALL
        };
        records.extend(match c.dtype {
            DType::F16 => run_config::<f16>(&c, versions, peer.as_deref_mut(), rounds, log),
            _ => run_config::<f32>(&c, versions, peer.as_deref_mut(), rounds, log),
        });
        step(&format!(
            "flash N={} D={} {} {}",
            c.shape.nq,
            c.shape.d,
            c.dtype.name(),
            c.mask.name()
        ));
    }
    for (name, c) in variant_configs().into_iter().filter(|_| wanted("variants")) {
        for mut r in run_config::<f32>(&c, &[Version::V3Tiled], None, ROUNDS, log) {
            r.variant = name.into();
            records.push(r);
        }
        step(&format!("{name} N={}", c.shape.nq));
    }
    if wanted("decode") {
        records.extend(super::decode::kv_cache_records());
        records.extend(super::decode::decode_records(quick, log));
        step("decode");
    }
    if wanted("paged") {
        records.extend(paged_decode_records::<f32>(quick, log));
        step("paged decode f32");
        records.extend(paged_decode_records::<f16>(quick, log));
        step("paged decode f16");
    }
    if wanted("memory") {
        if let Ok(exe) = std::env::current_exe() {
            records.extend(rss_records(&exe, 8192, log));
        }
        step("peak memory");
    }
    MeasurementFile {
        machine: Machine {
            kind: "cpu".into(),
            name: cpu_name(),
            cores: threads,
            driver: None,
            cuda: None,
            peak_gflops: peak / 1e9,
            bandwidth_gbps: bw / 1e9,
            read_gbps: Some(rd / 1e9),
            read_gbps_by_order: None,
            peak_gflops_1t: Some(peak1 / 1e9),
            bandwidth_gbps_1t: Some(bw1 / 1e9),
            exp_per_s: Some(exps),
            mma_sync_gflops: None,
            clock_mhz: None,
            l2_bytes: None,
        },
        generated: Generated {
            date: date.into(),
            commit: commit.into(),
            rustc: rustc.into(),
            threads,
        },
        records,
    }
}

/// The paged-decode experiment's shape: 16 sequences of 2048 tokens, GQA 8/2, D = 128, blocks of 16.
pub const PAGED_DECODE: (usize, usize, usize, usize, usize, usize) = (16, 8, 2, 2048, 128, 16);

/// Block sizes of the CPU sweep beside [`PAGED_DECODE`]'s 16: the price of the table is paid per block,
/// and vLLM's CPU backend takes 128-token blocks where its optimised kernels run.
pub const PAGED_SWEEP_BLOCKS: [usize; 3] = [32, 64, 128];

/// Shuffled block tables for `s`'s sequences over a pool of exactly their blocks (every block used): a
/// pool churned by many requests, where a sequence's blocks lie anywhere.
fn shuffled_tables(s: &AttnShape, bs: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let per_seq = s.nk.div_ceil(bs);
    let mut ids: Vec<usize> = (0..s.b * per_seq).collect();
    rng.shuffle(&mut ids);
    ids.chunks(per_seq).map(<[usize]>::to_vec).collect()
}

/// Every sequence's K and V (`s`: `(S, Hkv, Nk, D)`) scattered into a pool of blocks of `bs` rows
/// through `tables`: the two pools.
fn scatter_pool<T: Element>(
    k: &[T],
    v: &[T],
    s: &AttnShape,
    bs: usize,
    tables: &[Vec<usize>],
) -> (Vec<T>, Vec<T>) {
    let blocks = tables.iter().flatten().max().map_or(0, |&m| m + 1);
    let pool = blocks * s.hkv * bs * s.d;
    let (mut kc, mut vc) = (vec![T::from_f32(0.0); pool], vec![T::from_f32(0.0); pool]);
    for (seq, table) in tables.iter().enumerate() {
        for h in 0..s.hkv {
            for t in 0..s.nk {
                let at = ((table[t / bs] * s.hkv + h) * bs + t % bs) * s.d;
                let src = s.kv_row(seq, h, t);
                kc[at..at + s.d].copy_from_slice(&k[src..src + s.d]);
                vc[at..at + s.d].copy_from_slice(&v[src..src + s.d]);
            }
        }
    }
    (kc, vc)
}

type Run<'a, T> = Box<dyn Fn(&mut [T]) + 'a>;

/// Each run's times against its twin's, round by round ([`super::round_ratios`]): `twin_of` names a
/// run's twin among `names` (`None`: no twin, or the run is its own).
fn twin_ratios(
    names: &[&str],
    times: &[Vec<f64>],
    ok: &[bool],
    twin_of: impl Fn(&str) -> Option<String>,
) -> Vec<Option<[f64; 3]>> {
    names
        .iter()
        .zip(times)
        .zip(ok)
        .map(|((name, ts), &ok_i)| {
            let twin = twin_of(name).filter(|t| t != name)?;
            let j = names.iter().position(|n| *n == twin)?;
            // A price needs both sides correct: a run that failed its check is priced against nothing.
            (ok_i && ok[j]).then(|| super::round_ratios(ts, &times[j]))?
        })
        .collect()
}

/// The contiguous twin of a paged decode or read pass of [`paged_decode_records`], on the same pages.
fn paged_twin(name: &str) -> Option<String> {
    let pages = if name.ends_with("-2m") { "-2m" } else { "" };
    if let Some(bs) = name.rsplit_once("-bs").map(|x| x.1) {
        return Some(format!("contiguous-bs{bs}"));
    }
    Some(if name.starts_with("read-pass") {
        format!("read-pass-contiguous{pages}")
    } else {
        format!("contiguous{pages}")
    })
}

/// Time `runs` in interleaved rounds (one run of each per round, each round starting with a different
/// one, so that neither a slow phase of the machine nor a place in the round favours one), at least 10
/// rounds and then until `seconds` or 150 rounds: each run's times in ms. With `cold`, before each
/// run all threads read a buffer of twice the last-level cache, untimed: every run starts with its data
/// out of cache, as a long context's step does, and none finds lines that the run before it left
/// behind (two runs over the same pool would otherwise share them). Without, a batch small enough
/// stays in cache from run to run, as a small model's does from step to step.
fn interleaved<T: Element>(
    runs: &[(String, Run<T>)],
    o: &mut [T],
    seconds: f64,
    cold: bool,
) -> Vec<Vec<f64>> {
    // The flush is a parallel read, which also leaves every worker thread awake; without it, a small
    // read on every worker does that alone, so that no run pays for waking the threads the run before
    // it let fall asleep (at 64 tokens a run is a tenth of a millisecond, a wake-up a good part of it).
    let threads = rayon::current_num_threads().max(1);
    let len = if cold {
        2 * last_level_cache_bytes().unwrap_or(32 << 20) / 4
    } else {
        threads << 14
    };
    let flush = vec![1.0f32; len];
    let evict = || {
        let sum: f32 = flush
            .par_chunks((len / threads).clamp(1, 1 << 16))
            .map(|c| c.iter().step_by(16).sum::<f32>())
            .sum();
        std::hint::black_box(sum);
    };
    let mut times = vec![Vec::new(); runs.len()];
    let budget = Instant::now();
    let mut round = 0;
    while times[0].len() < 10 || (budget.elapsed().as_secs_f64() < seconds && times[0].len() < 150)
    {
        for j in 0..runs.len() {
            let i = (round + j) % runs.len();
            o.fill(T::from_f32(f32::NAN));
            evict();
            let t = Instant::now();
            (runs[i].1)(o);
            times[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
        round += 1;
    }
    times
}

/// Decode through a shuffled block table (V1, and V2 with partitions of 512), through the tables the
/// block manager hands out on a fresh pool (V1), and through those it leaves a busy server
/// ([`served_tables`], V1 and in pool order, and V1 under [`super::gpu_paged::CHUNKED`]), against the same kernel on contiguous K and V holding
/// the same data, and the same walks with the arithmetic taken out (the
/// read passes); each decode checked on sequence 0 against the f64 reference, then all timed in
/// interleaved rounds for 5 s (2 s with `quick`); at the stress scale ([`PAGED_DECODE`]'s 2048 tokens a
/// sequence, every run starting cold) and at the verb corpus's 64 (a cache-resident step, the batch
/// left in cache from run to run: the table's cost without the memory system's). At 2048 the
/// contiguous, shuffled and pool-order decodes and read passes run twice in those rounds, on the
/// ordinary 4 KB pages of the heap and on 2 MB pages ([`HugePageBuf`], suffix `-2m`; left out where
/// the kernel grants less than 90% of them). Then, at 2048, the block-size sweep: contiguous, V1 and
/// the pool-order walk at each of [`PAGED_SWEEP_BLOCKS`], checked, then timed in interleaved rounds
/// for 1.5 s (0.5 s).
/// Records: variant `paged_decode` (`ours/contiguous`, `ours/paged-v1`, `ours/paged-v2`,
/// `ours/paged-pool`, `ours/paged-v1-fresh`, `ours/paged-v1-served`, `ours/paged-pool-served`,
/// `ours/paged-v1-chunked`, and `-2m` of the contiguous, V1 and pool-order ones; where the in-place
/// loop runs 16 lanes at a time, `ours/contiguous-8lanes`: the contiguous decode on the 8-lane loop),
/// `paged_read` (`ours/read-pass-contiguous`, `ours/read-pass-paged`, `ours/read-pass-pool`, and
/// their `-2m`), `paged_decode_sweep`
/// (`ours/contiguous-bs<B>`, `ours/paged-v1-bs<B>`, `ours/paged-pool-bs<B>`); and, between the two
/// scales, `read_order_records`.
///
/// [`HugePageBuf`]: crate::minimodel::paged::pages::HugePageBuf
pub fn paged_decode_records<T: Element>(quick: bool, log: &mut dyn FnMut(&str)) -> Vec<Record> {
    use crate::minimodel::config::{STRESS_SEQ_LEN, VERB_SEQ_LEN};
    let mut out = paged_decode_at::<T>(STRESS_SEQ_LEN, true, quick, log);
    out.extend(read_order_records::<T>(STRESS_SEQ_LEN, quick, log));
    out.extend(paged_decode_at::<T>(VERB_SEQ_LEN, false, quick, log));
    out
}

/// Why a scattered pool reads slower: the read pass of [`PAGED_DECODE`]'s batch at `n` tokens a
/// sequence through tables that place each sequence's blocks in five ways, every pool on 2 MB pages
/// (address translation out of the way), timed in interleaved rounds for 2 s (1 s with `quick`):
/// `run` (each sequence one run of blocks), `pairs` (the same runs with each pair of neighbours
/// swapped: 1, 0, 3, 2, ...), `gaps` (each sequence every other block of a run, in a pool twice as
/// large), `shuffled` (anywhere), and `pool` (the shuffled tables read in the pool's address order).
/// Every jump in `pairs` lands next to a block read just before or just after; in `gaps` and
/// `shuffled`, on lines nobody reads soon. Records: variant `paged_read_order`, `ours/read-<order>`.
fn read_order_records<T: Element>(n: usize, quick: bool, log: &mut dyn FnMut(&str)) -> Vec<Record> {
    use crate::minimodel::paged::pages::HugePageBuf;
    let (b, hq, hkv, _, d, bs) = PAGED_DECODE;
    let s = AttnShape::new(b, hq, hkv, 1, n, d).expect("decode shape");
    let mut rng = Rng::new(4101);
    let k: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let v: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let shuffled = shuffled_tables(&s, bs, &mut rng);
    let lens = vec![n; b];
    let placements = super::read_order_tables(b, n.div_ceil(bs), &shuffled);
    // Each placement read through its tables, then the shuffled one in the pool's address order.
    let pools: Vec<(&str, &Vec<Vec<usize>>, bool)> = placements
        .iter()
        .map(|(name, t)| (*name, t, false))
        .chain([("pool", &shuffled, true)])
        .collect();
    let built: Vec<_> = pools
        .iter()
        .map(|&(name, tables, by_pool)| {
            let (kc, vc) = scatter_pool(&k, &v, &s, bs, tables);
            let num_blocks = kc.len() / (hkv * bs * d);
            (
                name,
                tables,
                by_pool,
                HugePageBuf::from_slice(&kc),
                HugePageBuf::from_slice(&vc),
                num_blocks,
            )
        })
        .collect();
    let granted = built
        .iter()
        .flat_map(|x| [x.3.huge_fraction(), x.4.huge_fraction()])
        .map(|f| f.unwrap_or(0.0))
        .fold(1.0, f64::min);
    if granted < 0.9 {
        log(&format!(
            "read orders: 2 MB pages {:.0}% granted, not timed",
            100.0 * granted
        ));
        return Vec::new();
    }
    let runs: Vec<(String, Run<T>)> = built
        .iter()
        .map(|(name, tables, by_pool, kc, vc, num_blocks)| {
            let kv = PagedKv::new(kc, vc, *num_blocks, hkv, bs, d).expect("pool shape");
            let batch = PagedBatch {
                tables,
                seq_lens: &lens,
            };
            let by_pool = *by_pool;
            let run: Run<T> = Box::new(move |o: &mut [T]| {
                let sum = if by_pool {
                    read_pass_pool_order(&kv, &batch)
                } else {
                    read_pass(&kv, &batch)
                };
                o[0] = T::from_f32(sum.expect("valid tables"));
            });
            (format!("read-{name}"), run)
        })
        .collect();
    let mut o = vec![T::from_f32(0.0); 1];
    let mut times = interleaved(&runs, &mut o, if quick { 1.0 } else { 2.0 }, true);
    let kv_bytes = T::DTYPE.bytes() as f64 * 2.0 * s.kv_len() as f64;
    let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    let ratios = twin_ratios(&names, &times, &vec![true; names.len()], |_| {
        Some("read-run".to_string())
    });
    runs.iter()
        .zip(times.iter_mut())
        .zip(ratios)
        .map(|(((name, _), ts), ratio)| {
            let rec = Record::new(
                "paged_read_order",
                &format!("ours/{name}"),
                T::DTYPE.name(),
                &s,
                "none",
            )
            .timed(ts, 0.0, kv_bytes);
            let rec = Record {
                ratio_to_twin: ratio,
                ..rec
            };
            log(&format!(
                "paged_read_order {name:14} {:4} N={n}: {:8.3} ms {:6.1} GB/s (2 MB pages)",
                T::DTYPE.name(),
                rec.ms,
                rec.gbps
            ));
            rec
        })
        .collect()
}

/// A timed run of [`paged_decode_at`]: its name, the run, and whether it decodes (checked, recorded as
/// `paged_decode`) or only reads (a read pass, `paged_read`).
type Timed<'a, T> = (String, Run<'a, T>, bool);

/// The runs of [`paged_decode_at`] on one copy of the data (`suffix`: its pages): the contiguous,
/// table-walk and pool-order decodes, then the same three walks as read passes.
#[allow(clippy::too_many_arguments)]
fn walk_runs<'a, T: Element>(
    suffix: &str,
    q: &'a [T],
    hq: usize,
    s: &'a AttnShape,
    bs: usize,
    (k, v): (&'a [T], &'a [T]),
    kv: PagedKv<'a, T>,
    batch: PagedBatch<'a>,
) -> Vec<Timed<'a, T>> {
    let read = |sum: Result<f32, PagedError>, o: &mut [T]| {
        o[0] = T::from_f32(sum.expect("valid call"));
    };
    vec![
        (
            format!("contiguous{suffix}"),
            Box::new(move |o: &mut [T]| contiguous_decode(q, k, v, s, bs, o).expect("valid call")),
            true,
        ),
        (
            format!("paged-v1{suffix}"),
            Box::new(move |o: &mut [T]| {
                paged_decode(q, hq, &kv, &batch, Mask::NONE, o).expect("valid call")
            }),
            true,
        ),
        (
            format!("paged-pool{suffix}"),
            Box::new(move |o: &mut [T]| {
                paged_decode_pool_order(q, hq, &kv, &batch, Mask::NONE, o).expect("valid call")
            }),
            true,
        ),
        (
            format!("read-pass-contiguous{suffix}"),
            Box::new(move |o: &mut [T]| read(read_pass_contiguous(k, v, s, bs), o)),
            false,
        ),
        (
            format!("read-pass-paged{suffix}"),
            Box::new(move |o: &mut [T]| read(read_pass(&kv, &batch), o)),
            false,
        ),
        (
            format!("read-pass-pool{suffix}"),
            Box::new(move |o: &mut [T]| read(read_pass_pool_order(&kv, &batch), o)),
            false,
        ),
    ]
}

/// [`paged_decode_records`] at `n` tokens a sequence; with `sweep` (the stress scale) every run starts
/// cold, the runs on 2 MB pages join, and the block-size sweep follows.
fn paged_decode_at<T: Element>(
    n: usize,
    sweep: bool,
    quick: bool,
    log: &mut dyn FnMut(&str),
) -> Vec<Record> {
    use crate::minimodel::paged::pages::HugePageBuf;
    let (b, hq, hkv, _, d, bs) = PAGED_DECODE;
    let s = AttnShape::new(b, hq, hkv, 1, n, d).expect("decode shape");
    let mut rng = Rng::new(2309);
    let q: Vec<T> = convert(&rng.normal_vec_f32(s.q_len()));
    let k: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let v: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let lens = vec![n; b];
    let sub = AttnShape::new(1, hq, hkv, 1, n, d).expect("sub shape");
    let (q0, k0, v0) = (&q[..sub.q_len()], &k[..sub.kv_len()], &v[..sub.kv_len()]);
    let reference = attention_ref64(q0, k0, v0, &sub, Mask::NONE).expect("valid shape");
    let lowp = attention_lowp(q0, k0, v0, &sub, Mask::NONE, T::DTYPE).expect("valid shape");
    let mut o = vec![T::from_f32(f32::NAN); s.q_len()];
    // Run once into a poisoned output and check sequence 0 against the reference.
    let check = |name: &str, run: &Run<T>, o: &mut [T], log: &mut dyn FnMut(&str)| {
        o.fill(T::from_f32(f32::NAN));
        run(o);
        let got: Vec<f64> = o[..sub.q_len()].iter().map(|x| x.to_f64()).collect();
        let bar = (T::DTYPE == DType::F16).then_some(FP16_BAR);
        let result = attn_close(name, &got, &lowp, &reference, T::DTYPE, n, bar);
        crate::minimodel::check::verdict(&result, log)
    };
    let flops = fa_flops(b, hq, 1, n, d, false);
    // Bytes: K and V once per kv head (the G query heads share each block), q and o once.
    let e = T::DTYPE.bytes() as f64;
    let bytes_model = e * (2.0 * s.kv_len() as f64 + 2.0 * s.q_len() as f64);
    let kv_bytes = e * 2.0 * s.kv_len() as f64;
    let mut out = Vec::new();
    let mut record = |variant: &str,
                      name: &str,
                      ts: &mut Vec<f64>,
                      ok: Option<(bool, f64)>,
                      ratio: Option<[f64; 3]>,
                      log: &mut dyn FnMut(&str)| {
        ts.sort_by(f64::total_cmp);
        let ms = ts[ts.len() / 2];
        let (f, by) = if ok.is_some() {
            (flops, bytes_model)
        } else {
            (0.0, kv_bytes)
        };
        let rec = Record::new(
            variant,
            &format!("ours/{name}"),
            T::DTYPE.name(),
            &s,
            "none",
        )
        .timed(ts, f, by);
        let rec = Record {
            ratio_to_twin: ratio,
            ..rec
        };
        // A read pass computes nothing to check: it stays unchecked, and no table takes it for attention.
        out.push(match ok {
            Some((ok, err)) => rec.checked(ok, err),
            None => rec,
        });
        log(&format!(
            "{variant} {name:24} {:4} B={b} Hq={hq} Hkv={hkv} N={n} D={d}: {ms:8.3} ms {:6.1} GB/s {}",
            T::DTYPE.name(),
            by / ms / 1e6,
            match ok {
                Some((true, _)) => "checked",
                Some((false, _)) => "NOT CHECKED",
                None => "(reads only)",
            }
        ));
    };

    let tables = shuffled_tables(&s, bs, &mut rng);
    let (kc, vc) = scatter_pool(&k, &v, &s, bs, &tables);
    let kv = PagedKv::new(&kc, &vc, tables.len() * n.div_ceil(bs), hkv, bs, d).expect("pool shape");
    let batch = PagedBatch {
        tables: &tables,
        seq_lens: &lens,
    };
    // The tables the block manager hands out on a fresh pool: each sequence's blocks in one run.
    let fresh =
        super::fresh_tables(b, n, bs).expect("a pool of exactly the batch's blocks admits it");
    let (kf, vf) = scatter_pool(&k, &v, &s, bs, &fresh);
    let kv_fresh = PagedKv::new(&kf, &vf, fresh.len() * n.div_ceil(bs), hkv, bs, d).expect("pool");
    let batch_fresh = PagedBatch {
        tables: &fresh,
        seq_lens: &lens,
    };
    // The tables a busy server leaves (`replay::served_tables`: the block manager's free list churned
    // by other requests, then half of each sequence decoded beside them), in a pool of twice the
    // batch's blocks whose other blocks belong to those requests.
    let served = served_tables(&ServedConfig::book(b, n, bs)).expect("the book's scenario fits");
    let (ks, vs) = scatter_pool(&k, &v, &s, bs, &served);
    let kv_served = PagedKv::new(&ks, &vs, ks.len() / (hkv * bs * d), hkv, bs, d).expect("pool");
    let batch_served = PagedBatch {
        tables: &served,
        seq_lens: &lens,
    };
    // The same scenario under the chunked placement (Lab 03's `served-chunked`): each sequence's blocks in
    // aligned chunks of its own.
    let chunked = served_tables(&ServedConfig {
        placement: super::gpu_paged::CHUNKED,
        ..ServedConfig::book(b, n, bs)
    })
    .expect("the book's scenario fits");
    let (kch, vch) = scatter_pool(&k, &v, &s, bs, &chunked);
    let kv_chunked =
        PagedKv::new(&kch, &vch, kch.len() / (hkv * bs * d), hkv, bs, d).expect("pool");
    let batch_chunked = PagedBatch {
        tables: &chunked,
        seq_lens: &lens,
    };
    // At the stress scale, the same contiguous K/V and shuffled pool on 2 MB pages (where the kernel
    // grants them): the table's price with the translation cache out of the way. (At 64 tokens the batch
    // sits in cache, where pages matter little.)
    let (k2, v2) = (HugePageBuf::from_slice(&k), HugePageBuf::from_slice(&v));
    let (kc2, vc2) = (HugePageBuf::from_slice(&kc), HugePageBuf::from_slice(&vc));
    let kv2 = PagedKv::new(&kc2, &vc2, kv.num_blocks(), hkv, bs, d).expect("pool shape");
    let granted = [&k2, &v2, &kc2, &vc2]
        .iter()
        .map(|b| b.huge_fraction().unwrap_or(0.0))
        .fold(1.0, f64::min);
    let huge = sweep && granted >= 0.9;
    if sweep {
        log(&format!(
            "2 MB pages: {:.0}% of the copies granted{}",
            100.0 * granted,
            if huge { "" } else { ": no -2m runs" }
        ));
    }
    // The runs both page sizes share, with V2 and the fresh tables (4 KB pages only) in their places.
    let mut runs = walk_runs("", &q, hq, &s, bs, (&k, &v), kv, batch);
    runs.insert(
        2,
        (
            "paged-v2".into(),
            Box::new(|o: &mut [T]| {
                paged_decode_partitioned(&q, hq, &kv, &batch, Mask::NONE, 512, o)
                    .expect("valid call")
            }),
            true,
        ),
    );
    runs.insert(
        4,
        (
            "paged-v1-fresh".into(),
            Box::new(|o: &mut [T]| {
                paged_decode(&q, hq, &kv_fresh, &batch_fresh, Mask::NONE, o).expect("valid call")
            }),
            true,
        ),
    );
    runs.insert(
        5,
        (
            "paged-v1-served".into(),
            Box::new(|o: &mut [T]| {
                paged_decode(&q, hq, &kv_served, &batch_served, Mask::NONE, o).expect("valid call")
            }),
            true,
        ),
    );
    runs.insert(
        6,
        (
            "paged-pool-served".into(),
            Box::new(|o: &mut [T]| {
                paged_decode_pool_order(&q, hq, &kv_served, &batch_served, Mask::NONE, o)
                    .expect("valid call")
            }),
            true,
        ),
    );
    runs.insert(
        7,
        (
            "paged-v1-chunked".into(),
            Box::new(|o: &mut [T]| {
                paged_decode(&q, hq, &kv_chunked, &batch_chunked, Mask::NONE, o)
                    .expect("valid call")
            }),
            true,
        ),
    );
    // Where the in-place loop runs 16 lanes at a time (AVX-512F), the contiguous decode with the 8-lane
    // loop too: what the wider vectors buy, against the contiguous run.
    if crate::minimodel::paged::decode_lanes() == 16 {
        runs.insert(
            8,
            (
                "contiguous-8lanes".into(),
                Box::new(|o: &mut [T]| {
                    contiguous_decode_on(Isa::Avx2Fma, &q, &k, &v, &s, bs, o).expect("valid call")
                }),
                true,
            ),
        );
    }
    if huge {
        runs.extend(walk_runs("-2m", &q, hq, &s, bs, (&k2, &v2), kv2, batch));
    }
    let checked: Vec<_> = runs
        .iter()
        .map(|(name, run, decode)| decode.then(|| check(name, run, &mut o, log)))
        .collect();
    let timed: Vec<(String, Run<T>)> = runs.into_iter().map(|(n, r, _)| (n, r)).collect();
    let mut times = interleaved(&timed, &mut o, if quick { 2.0 } else { 5.0 }, sweep);
    let names: Vec<&str> = timed.iter().map(|(n, _)| n.as_str()).collect();
    let passed: Vec<bool> = checked.iter().map(|c| c.is_none_or(|(ok, _)| ok)).collect();
    let ratios = twin_ratios(&names, &times, &passed, paged_twin);
    for ((((name, _), ts), ok), ratio) in
        timed.iter().zip(times.iter_mut()).zip(checked).zip(ratios)
    {
        let variant = if ok.is_some() {
            "paged_decode"
        } else {
            "paged_read"
        };
        record(variant, name, ts, ok, ratio, log);
    }
    drop(timed);

    for sweep_bs in PAGED_SWEEP_BLOCKS.into_iter().filter(|_| sweep) {
        let tables = shuffled_tables(&s, sweep_bs, &mut rng);
        let (kc, vc) = scatter_pool(&k, &v, &s, sweep_bs, &tables);
        let kv = PagedKv::new(
            &kc,
            &vc,
            tables.len() * n.div_ceil(sweep_bs),
            hkv,
            sweep_bs,
            d,
        )
        .expect("pool shape");
        let batch = PagedBatch {
            tables: &tables,
            seq_lens: &lens,
        };
        let runs: Vec<(String, Run<T>)> = vec![
            (
                format!("contiguous-bs{sweep_bs}"),
                Box::new(|o: &mut [T]| {
                    contiguous_decode(&q, &k, &v, &s, sweep_bs, o).expect("valid call")
                }),
            ),
            (
                format!("paged-v1-bs{sweep_bs}"),
                Box::new(|o: &mut [T]| {
                    paged_decode(&q, hq, &kv, &batch, Mask::NONE, o).expect("valid call")
                }),
            ),
            (
                format!("paged-pool-bs{sweep_bs}"),
                Box::new(|o: &mut [T]| {
                    paged_decode_pool_order(&q, hq, &kv, &batch, Mask::NONE, o).expect("valid call")
                }),
            ),
        ];
        let checked: Vec<_> = runs
            .iter()
            .map(|(name, run)| check(name, run, &mut o, log))
            .collect();
        let mut times = interleaved(&runs, &mut o, if quick { 0.5 } else { 1.5 }, true);
        let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
        let passed: Vec<bool> = checked.iter().map(|&(ok, _)| ok).collect();
        let ratios = twin_ratios(&names, &times, &passed, paged_twin);
        for ((((name, _), ts), ok), ratio) in
            runs.iter().zip(times.iter_mut()).zip(checked).zip(ratios)
        {
            record("paged_decode_sweep", name, ts, Some(ok), ratio, log);
        }
    }
    out
}

/// The shape of the memory experiment: two heads (one per worker) at the stress scale's big brother.
pub fn rss_shape(n: usize) -> AttnShape {
    AttnShape::self_attention(1, 2, n, 64).expect("rss shape")
}

/// Run `version` once on [`rss_shape`] in this process and return (milliseconds, peak resident bytes
/// from `/proc/self/status` `VmHWM`, the max error of the check or NaN if it failed). Meant for a fresh
/// child process, so the peak is this run's. The check comes after the peak is read (its reference must
/// not count): head 0's last 64 query rows against the f64 reference, under the rule.
pub fn rss_probe(version: Version, n: usize) -> Result<(f64, f64, f64), String> {
    let s = rss_shape(n);
    let mut rng = Rng::new(8192);
    let (q, k, v) = (
        rng.normal_vec_f32(s.q_len()),
        rng.normal_vec_f32(s.kv_len()),
        rng.normal_vec_f32(s.kv_len()),
    );
    let mut o = vec![0.0f32; s.q_len()];
    let t = Instant::now();
    version
        .run(&q, &k, &v, &s, Mask::NONE, &mut o)
        .map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    std::hint::black_box(&o);
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .ok_or("no VmHWM in /proc/self/status")?;
    let rows = n.min(64);
    let sub = AttnShape::new(1, 1, 1, rows, n, s.d).map_err(|e| e.to_string())?;
    let head = |x: &[f32]| x[..n * s.d].to_vec(); // head 0 of batch 0
    let (q0, k0, v0) = (&head(&q)[(n - rows) * s.d..], head(&k), head(&v));
    let reference = attention_ref64(q0, &k0, &v0, &sub, Mask::NONE).map_err(|e| e.to_string())?;
    let lowp =
        attention_lowp(q0, &k0, &v0, &sub, Mask::NONE, DType::F32).map_err(|e| e.to_string())?;
    let got: Vec<f64> = o[(n - rows) * s.d..n * s.d]
        .iter()
        .map(|&x| x.into())
        .collect();
    let err = attn_close(version.name(), &got, &lowp, &reference, DType::F32, n, None)
        .map_or(f64::NAN, |r| r.candidate.max);
    Ok((ms, kb * 1024.0, err))
}

/// Peak memory of naive and tiled at length `n`, each in a child process running `exe rss-probe`.
pub fn rss_records(exe: &std::path::Path, n: usize, log: &mut dyn FnMut(&str)) -> Vec<Record> {
    let s = rss_shape(n);
    let mut out = Vec::new();
    for ver in [Version::V1Naive, Version::V3Tiled] {
        let res = std::process::Command::new(exe)
            .args(["rss-probe", ver.name(), &n.to_string()])
            .output();
        let Ok(res) = res else { continue };
        let text = String::from_utf8_lossy(&res.stdout);
        let nums: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // "NaN" parses as f64: a failed check comes back as NaN and the record stays unchecked.
        let [ms, rss, err] = nums[..] else {
            log(&format!("rss probe of {} failed: {text}", ver.name()));
            continue;
        };
        log(&format!(
            "peak RSS {:9} N={n}: {:.1} MB in {ms:.0} ms, {}",
            ver.name(),
            rss / 1e6,
            if err.is_finite() {
                format!("checked (max error {err:.1e})")
            } else {
                "FAILED CHECK".into()
            }
        ));
        let flops = fa_flops(s.b, s.hq, s.nq, s.nk, s.d, false);
        let rec = Record::new("memory", &format!("ours/{}", ver.name()), "f32", &s, "none");
        out.push(Record {
            peak_rss_bytes: Some(rss),
            ..rec.timed(&[ms], flops, 0.0).checked(err.is_finite(), err)
        });
    }
    out
}

/// The CPU's model name from `/proc/cpuinfo`, or the architecture.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
