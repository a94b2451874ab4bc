//! Lab 03's GPU harness: paged decode against the same kernel on contiguous K/V, each checked against
//! the f64 reference, then timed with CUDA events; PyTorch's SDPA on the same shapes comes from
//! `bench/peers/torch_decode.py` in the same run.
//!
//! Shape (the target's): 16 sequences, 32 query heads over 8 kv heads (GQA), D = 128, fp16, blocks of 16
//! tokens, every sequence `N` tokens long for `N` in [`CONTEXTS`] (N = 64 and 2048 are the book's anchor
//! sizes; 4k to 64k the serving range). The pool holds exactly the batch's blocks, in a shuffled order
//! (a pool after many requests have come and gone); `ours/gpu-paged-fresh` reads the same tokens through
//! the tables the block manager hands out on a fresh pool ([`fresh_tables`]), `ours/gpu-paged-served`
//! through those it leaves a busy server ([`served_tables`]: a pool of twice the batch's blocks, the
//! other half other requests'). Every kind of table and both pool layouts are also timed in interleaved
//! rounds against the contiguous copy (`rounds_records`, variant `paged_decode_rounds`).
//! At N = 64 the whole cache (4 MB) sits in L2 for every implementation alike.
//!
//! Bytes: the K and V rows read, `q`, `o`, `lse` and the table entries ([`DecodeBuffers::bytes`]); the
//! attained GB/s is compared with the card's HBM read bandwidth measured by [`read_bandwidths`] (the
//! fastest of its orders).

use super::{fa_flops, Record};
use crate::gpu::paged::{
    decode_tuned, read_bandwidths, read_order_key, read_pass_ms, registers, time_ms, DecodeBuffers,
    PoolOrder, Tuning,
};
use crate::gpu::{Device, GpuError};
use crate::minimodel::check::{attn_close, verdict, CloseError, CloseReport, FP16_BAR};
use crate::minimodel::numeric::DType;
use crate::minimodel::paged::block_manager::Placement;
use crate::minimodel::paged::paged_attention::{PagedBatch, PagedKv};
use crate::minimodel::paged::replay::{served_tables, ServedConfig};
use crate::minimodel::reference::{attention_lowp, attention_ref64};
use crate::minimodel::rng::Rng;
use crate::minimodel::shape::{AttnShape, Mask};
use half::f16;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// `(S, Hq, Hkv, D, block size)` of the experiment.
pub const SHAPE: (usize, usize, usize, usize, usize) = (16, 32, 8, 128, 16);
/// Context lengths timed.
pub const CONTEXTS: [usize; 5] = [64, 2048, 4096, 16384, 65536];
/// Partition sizes of the sweep (at [`SWEEP_CONTEXTS`]), beside the heuristic's choice.
pub const SWEEP: [usize; 4] = [256, 512, 1024, 2048];
/// The contexts of the tuning and partition sweeps.
pub const SWEEP_CONTEXTS: [usize; 4] = [2048, 4096, 16384, 65536];

/// The contexts at which a decode step's time is split between the host and the GPU (variant
/// `decode_launch`): the small-model anchor, where the step is short, and the stress anchor.
pub const LAUNCH_CONTEXTS: [usize; 2] = [64, 2048];
/// The chunked placement measured beside the served tables (`served-chunked`): chunks of 8 blocks,
/// 256 KB of K at this shape, within which the fresh tables' blocks can lie in any order at about the
/// fresh tables' cost (Lab 03's Table 03.7, `local8`).
pub const CHUNKED: Placement = Placement::Chunked { blocks: 8 };

/// A wider chunked placement for the head-major pool (the decode race's `chunked64-hm`, Table 03.7's
/// `served-chunked64-hm`): 64 blocks, so that
/// each kv head reads a run of 64 blocks (256 KB) before it jumps, nearer the fresh tables' one run a
/// sequence on that pool (Table 03.7's `fresh-hm`).
pub const CHUNKED_WIDE: Placement = Placement::Chunked { blocks: 64 };

/// The widest chunked placement (the decode race's `chunked512-hm`, Table 03.7's `served-chunked512-hm`):
/// 512 blocks, in a head-major pool 2 MB of each kv head's K (one translation page of the GPU's), each
/// sequence's run as long as the fresh tables' up to 8k tokens.
pub const CHUNKED_2M: Placement = Placement::Chunked { blocks: 512 };

/// Timed runs of each way of [`launch_records`] (`LAUNCH_RUNS` in bench/peers/torch_decode.py).
pub const LAUNCH_RUNS: usize = 100;

/// Kv heads of the MHA/GQA/MQA decode comparison (32 query heads: MHA, GQA-8, GQA-4, MQA), variant
/// `decode_heads`, at [`HEADS_CONTEXT`] tokens: lab 04's claim (bytes, hence time, scale with Hkv) on the GPU.
pub const HEADS: [usize; 4] = [32, 8, 4, 1];
/// The context of the kv-heads comparison.
pub const HEADS_CONTEXT: usize = 16384;

/// Unit-normal f16 values, `n` of them, generated in parallel chunks each seeded from `seed` and its index.
pub fn normal_f16(n: usize, seed: u64) -> Vec<f16> {
    const CHUNK: usize = 1 << 16;
    let mut out = vec![f16::ZERO; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
        let mut r = Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        c.iter_mut()
            .for_each(|x| *x = f16::from_f32(r.normal() as f32));
    });
    out
}

/// The contiguous `(S, Hkv, N, D)` K or V (`N` a multiple of `bs`) scattered into a pool
/// `(num_blocks, Hkv, B, D)` by `tables` (`N / bs` distinct blocks per sequence; the pool as large as
/// the largest entry needs, blocks no table names left zero).
pub fn scatter(x: &[f16], s: &AttnShape, tables: &[Vec<usize>], bs: usize) -> Vec<f16> {
    let num_blocks = tables.iter().flatten().max().map_or(0, |&m| m + 1);
    // Which (sequence, logical block) each physical block holds.
    let mut owner = vec![None; num_blocks];
    for (seq, t) in tables.iter().enumerate() {
        for (i, &b) in t.iter().enumerate() {
            owner[b] = Some((seq, i));
        }
    }
    let block = s.hkv * bs * s.d;
    let mut pool = vec![f16::ZERO; num_blocks * block];
    pool.par_chunks_mut(block)
        .zip(&owner)
        .for_each(|(dst, owner)| {
            if let &Some((seq, i)) = owner {
                for h in 0..s.hkv {
                    let src = s.kv_row(seq, h, i * bs);
                    dst[h * bs * s.d..][..bs * s.d].copy_from_slice(&x[src..src + bs * s.d]);
                }
            }
        });
    pool
}

/// Contexts at which the GPU read pass also runs through [`read_order_tables`]'s placements.
pub const ORDER_CONTEXTS: [usize; 2] = [4096, 16384];

pub use super::{fresh_tables, read_order_tables};

/// Windows of the pool (in blocks) that [`window_shuffled`] tables stay within, for the sweep: at the
/// experiment's shape a block-major pool block holds 8 kv heads x 16 rows x 256 bytes = 32 KB of K (and as
/// much of V), so these windows are 256 KB, 2 MB (a GPU's large page) and 16 MB of K.
pub const WINDOWS: [usize; 3] = [8, 64, 512];

/// `tables` with the pool's block ids permuted within aligned windows of `w` ids (a seeded shuffle of
/// each window): a sequence of fresh tables keeps its blocks in the same windows of the pool, in a
/// random order inside each. Between the fresh tables (`w` = 1) and a whole-pool shuffle, it says at
/// what distance a block's scatter starts to cost.
pub fn window_shuffled(tables: &[Vec<usize>], w: usize, seed: u64) -> Vec<Vec<usize>> {
    let total = tables.iter().flatten().max().map_or(0, |&m| m + 1);
    let mut perm: Vec<usize> = (0..total).collect();
    let mut rng = Rng::new(seed);
    for window in perm.chunks_mut(w.max(1)) {
        rng.shuffle(window);
    }
    tables
        .iter()
        .map(|t| t.iter().map(|&b| perm[b]).collect())
        .collect()
}

/// [`DecodeCheck::decode_and_check`], folded: whether every checked sequence passed and the worst max error (NaN once one failed), and the partition size used.
fn check_decode(
    dev: &Device,
    bufs: &mut DecodeBuffers<f16>,
    partition: Option<usize>,
    tuning: Tuning,
    checks: &DecodeCheck,
    name: &str,
    log: &mut dyn FnMut(&str),
) -> Result<((bool, f64), usize), GpuError> {
    let label = format!("{name} N={}", checks.s.nk);
    let (results, p) = checks.decode_and_check(dev, bufs, partition, tuning, &label)?;
    let mut worst = (true, 0.0f64);
    for (_, result) in results {
        worst = both(worst, verdict(&result, log));
    }
    Ok((worst, p))
}

/// Two verdicts together: both passed, and the larger error (NaN once either failed: `f64::max` would
/// drop it).
fn both(a: (bool, f64), b: (bool, f64)) -> (bool, f64) {
    let pass = a.0 && b.0;
    (pass, if pass { a.1.max(b.1) } else { f64::NAN })
}

// ANCHOR: launch_records
/// One decode step timed four ways (variant `decode_launch`, field `timing`), after the step, its
/// graph and the re-planned path are each checked: `launched`, as every other record (a host call
/// between each pair of events, the launch plan kept with the buffers); `replanned`, the same with the
/// plan worked out again each call (what every call cost before plans were kept); `queued`, the runs
/// held back until the host has issued them all ([`Device::time_each_queued`]): the GPU's time alone;
/// `graph`, the step captured once as a CUDA graph and replayed by one host call (what a server that
/// captures its decode steps, as vLLM does, pays), and `graph-queued`, its GPU time alone. `host_us`:
/// the host's time to issue one call of each (plan kept, re-planned, graph); `idle_ms`: the stream's
/// time outside the timed pairs during the queued runs (`Queued::idle_ms`).
fn launch_records(
    dev: &Device,
    name: &str,
    bufs: &mut DecodeBuffers<f16>,
    tuning: Tuning,
    checks: &DecodeCheck,
    flops: f64,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Record>, GpuError> {
    let first = check_decode(dev, bufs, None, tuning, checks, name, log)?.0;
    bufs.forget_plan();
    let ok = both(
        first,
        check_decode(dev, bufs, None, tuning, checks, name, log)?.0,
    );
    let graph = dev.capture(|| decode_tuned(dev, bufs, Mask::NONE, None, tuning).map(|_| ()))?;
    bufs.poison(dev)?;
    graph.launch()?;
    let (o, _) = bufs.download(dev)?;
    let mut graphed = (true, 0.0f64);
    for (_, result) in checks.check(&format!("{name} graph N={}", checks.s.nk), &o) {
        graphed = both(graphed, verdict(&result, log));
    }
    let step = |bufs: &mut DecodeBuffers<f16>| {
        decode_tuned(dev, bufs, Mask::NONE, None, tuning).map(|_| ())
    };
    let launched = dev.time_each(3, LAUNCH_RUNS, |_| step(bufs))?;
    let queued = dev.time_each_queued(3, LAUNCH_RUNS, |_| step(bufs))?;
    let replan = |bufs: &mut DecodeBuffers<f16>| {
        bufs.forget_plan();
        step(bufs)
    };
    let replanned_t = dev.time_each(3, LAUNCH_RUNS, |_| replan(bufs))?;
    let replanned_q = dev.time_each_queued(3, LAUNCH_RUNS, |_| replan(bufs))?;
    let graph_t = dev.time_each(3, LAUNCH_RUNS, |_| Ok(graph.launch()?))?;
    let graph_q = dev.time_each_queued(3, LAUNCH_RUNS, |_| Ok(graph.launch()?))?;
    let bytes = bufs.bytes(Mask::NONE);
    let rows = [
        ("launched", &launched[..], Some(queued.host_us), None, ok),
        (
            "replanned",
            &replanned_t,
            Some(replanned_q.host_us),
            None,
            ok,
        ),
        ("queued", &queued.ms, None, Some(queued.idle_ms), ok),
        ("graph", &graph_t, Some(graph_q.host_us), None, graphed),
        (
            "graph-queued",
            &graph_q.ms,
            None,
            Some(graph_q.idle_ms),
            graphed,
        ),
    ];
    let mut out = Vec::new();
    for (timing, times, host_us, idle_ms, (pass, err)) in rows {
        let rec = Record {
            timing: Some(timing.into()),
            host_us,
            idle_ms,
            ..Record::new("decode_launch", name, "f16", &checks.s, "none")
                .timed(times, flops, bytes)
                .checked(pass, err)
        };
        log(&format!(
            "launch {name:24} N={:6} {timing:12}: {:8.4} ms, host {} us, GPU idle {} ms {}",
            checks.s.nk,
            rec.ms,
            host_us.map_or("-".into(), |h| format!("{h:.1}")),
            idle_ms.map_or("-".into(), |i| format!("{i:.4}")),
            if pass { "checked" } else { "NOT CHECKED" }
        ));
        out.push(rec);
    }
    Ok(out)
}
// ANCHOR_END: launch_records

/// Rounds of [`rounds_records`]' interleaved timing.
pub const ROUNDS: usize = 7;

/// Check every entry, then time them back to back in [`ROUNDS`] rounds (each round starting one entry
/// further on; each time the median of 20 launches after 3 warm-ups): records of variant
/// `paged_decode_rounds`, each with its median over the rounds and, in `ratio_to_twin`, its time over
/// the first entry's (the contiguous copy's) within each round, as quartiles over the rounds.
fn rounds_records(
    dev: &Device,
    entries: &mut [(String, &mut DecodeBuffers<f16>)],
    tuning: Tuning,
    checks: &DecodeCheck,
    flops: f64,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Record>, GpuError> {
    let mut worst = Vec::new();
    for (name, bufs) in entries.iter_mut() {
        worst.push(check_decode(dev, bufs, None, tuning, checks, name, log)?.0);
    }
    let mut times = vec![Vec::new(); entries.len()];
    for round in 0..ROUNDS {
        for j in 0..entries.len() {
            let i = (round + j) % entries.len();
            let mut ts = time_ms(dev, entries[i].1, Mask::NONE, None, tuning, 3, 20)?;
            ts.sort_by(f64::total_cmp);
            times[i].push(ts[ts.len() / 2]);
        }
    }
    let mut out = Vec::new();
    for (((name, bufs), ts), (ok, err)) in entries.iter().zip(&times).zip(worst) {
        let rec = Record {
            ratio_to_twin: super::round_ratios(ts, &times[0]),
            ..Record::new("paged_decode_rounds", name, "f16", &checks.s, "none")
                .timed(ts, flops, bufs.bytes(Mask::NONE))
                .checked(ok, err)
        };
        let [lo, mid, hi] = rec.ratio_to_twin.unwrap_or([f64::NAN; 3]);
        log(&format!(
            "rounds {name:32} N={:6}: {:8.4} ms, x{mid:.4} the contiguous copy ({lo:.4}..{hi:.4}) {}",
            checks.s.nk,
            rec.ms,
            if ok { "checked" } else { "NOT CHECKED" }
        ));
        out.push(rec);
    }
    Ok(out)
}

fn median_times(
    dev: &Device,
    bufs: &mut DecodeBuffers<f16>,
    partition: Option<usize>,
    tuning: Tuning,
) -> Result<Vec<f64>, GpuError> {
    let probe = time_ms(dev, bufs, Mask::NONE, partition, tuning, 3, 1)?[0];
    let runs = ((300.0 / probe.max(1e-3)) as usize).clamp(20, 200);
    time_ms(dev, bufs, Mask::NONE, partition, tuning, 0, runs)
}

/// The check of a decode batch's output before it is timed: its first and last sequences, every head,
/// against the f64 reference under the rule and the fp16 bar. `q: (S, Hq, D)`; `k`, `v` of shape `s`
/// (`(S, Hkv, Nk, D)`, each sequence contiguous, as the pools are scattered from).
pub struct DecodeCheck {
    s: AttnShape,
    /// (sequence, f64 reference, low-precision reference), each `(Hq, D)`.
    refs: Vec<(usize, Vec<f64>, Vec<f64>)>,
}

impl DecodeCheck {
    /// The references, computed once.
    pub fn new(q: &[f16], k: &[f16], v: &[f16], s: AttnShape) -> DecodeCheck {
        let (hq, d) = (s.hq, s.d);
        let sub = AttnShape::new(1, hq, s.hkv, 1, s.nk, d).expect("a sub-shape of a valid shape");
        let refs = [0, s.b - 1]
            .par_iter()
            .map(|&seq| {
                let qs = &q[seq * hq * d..][..hq * d];
                let at = s.kv_row(seq, 0, 0);
                let (ks, vs) = (&k[at..][..sub.kv_len()], &v[at..][..sub.kv_len()]);
                let r = attention_ref64(qs, ks, vs, &sub, Mask::NONE).expect("shape");
                let l = attention_lowp(qs, ks, vs, &sub, Mask::NONE, DType::F16).expect("shape");
                (seq, r, l)
            })
            .collect();
        DecodeCheck { s, refs }
    }

    /// The rule applied to each checked sequence of the output `o: (S, Hq, D)`, labelled
    /// `{name} seq {sequence}`.
    pub fn check(&self, name: &str, o: &[f16]) -> Vec<(usize, Result<CloseReport, CloseError>)> {
        let row = self.s.hq * self.s.d;
        self.refs
            .iter()
            .map(|(seq, r, l)| {
                let got: Vec<f64> = o[seq * row..][..row].iter().map(|x| x.to_f64()).collect();
                let label = format!("{name} seq {seq}");
                let nk = self.s.nk;
                (
                    *seq,
                    attn_close(&label, &got, l, r, DType::F16, nk, Some(FP16_BAR)),
                )
            })
            .collect()
    }

    /// Poison `bufs`' output, decode once with `tuning` (and `partition`, if given), and
    /// [`DecodeCheck::check`] the output: each checked sequence's result, and the partition size used.
    pub fn decode_and_check(
        &self,
        dev: &Device,
        bufs: &mut DecodeBuffers<f16>,
        partition: Option<usize>,
        tuning: Tuning,
        name: &str,
    ) -> Result<CheckedDecode, GpuError> {
        bufs.poison(dev)?;
        let p = decode_tuned(dev, bufs, Mask::NONE, partition, tuning)?;
        let (o, _) = bufs.download(dev)?;
        Ok((self.check(name, &o), p))
    }
}

/// What [`DecodeCheck::decode_and_check`] returns: each checked sequence's result, and the partition
/// size the decode used.
pub type CheckedDecode = (Vec<(usize, Result<CloseReport, CloseError>)>, usize);

/// Measure every context of [`CONTEXTS`] (only 64 and 4096 when `quick`); returns the records and the
/// HBM read bandwidth (GB/s) by reader order ([`read_bandwidths`], keyed by [`read_order_key`]).
pub fn measure(
    dev: &Device,
    quick: bool,
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<Record>, BTreeMap<String, f64>), GpuError> {
    let reads = read_bandwidths(dev, 2 << 30)?;
    for (order, hint, gbps) in &reads {
        log(&format!(
            "HBM read, {order}{}: {gbps:.0} GB/s (2 GiB read)",
            if *hint { ", 256-byte L2 hint" } else { "" }
        ));
    }
    let read_gbps = reads.iter().map(|r| r.2).fold(0.0, f64::max);
    for t in Tuning::sweep() {
        log(&format!(
            "partition kernel {}: {} registers per thread",
            t.name(),
            registers(dev, SHAPE.3, SHAPE.1 / SHAPE.2, SHAPE.4, t)?
        ));
    }
    let (b, hq, _, d, bs) = SHAPE;
    let contexts: &[usize] = if quick { &[64, 4096] } else { &CONTEXTS };
    // (kv heads, context, variant): the paged experiment, then MHA/GQA/MQA at one context.
    let mut configs: Vec<(usize, usize, &str)> = contexts
        .iter()
        .map(|&n| (SHAPE.2, n, "paged_decode"))
        .collect();
    if !quick {
        configs.extend(HEADS.iter().map(|&h| (h, HEADS_CONTEXT, "decode_heads")));
    }
    let mut records = Vec::new();
    for (hkv, n, variant) in configs {
        let s = AttnShape::new(b, hq, hkv, 1, n, d)?;
        let seed = 0x9a9e + n as u64;
        let q = normal_f16(s.q_len(), seed);
        let k = normal_f16(s.kv_len(), seed + 1);
        let v = normal_f16(s.kv_len(), seed + 2);
        let per_seq = n.div_ceil(bs);
        let mut ids: Vec<usize> = (0..b * per_seq).collect();
        Rng::new(seed + 3).shuffle(&mut ids);
        let tables: Vec<Vec<usize>> = ids.chunks(per_seq).map(<[usize]>::to_vec).collect();
        let lens = vec![n; b];
        // K and V scattered into a pool by `tables` and uploaded with them (the host pools are
        // dropped once on the device).
        let upload_pool = |tables: &[Vec<usize>], order: PoolOrder| {
            let (kp, vp) = (scatter(&k, &s, tables, bs), scatter(&v, &s, tables, bs));
            let nb = kp.len() / (hkv * bs * d); // the batch's blocks, or more (`gaps` below)
            let kv = PagedKv::new(&kp, &vp, nb, hkv, bs, d).expect("pool shape");
            let batch = PagedBatch {
                tables,
                seq_lens: &lens,
            };
            DecodeBuffers::upload_paged_in(dev, &q, hq, &kv, &batch, order)
        };
        let mut paged = upload_pool(&tables, PoolOrder::BlockMajor)?;
        // The same tokens through a fresh pool's tables, and both pools head-major (the paged
        // experiment only).
        let fresh_t = (variant == "paged_decode").then(|| {
            fresh_tables(b, n, bs).expect("a pool of exactly the batch's blocks admits it")
        });
        let mut fresh = match &fresh_t {
            Some(t) => Some(upload_pool(t, PoolOrder::BlockMajor)?),
            None => None,
        };
        // The tables a busy server leaves (`replay::served_tables`), in a pool of twice the batch's
        // blocks whose other blocks belong to other requests (left zero).
        let served_t = (variant == "paged_decode").then(|| {
            served_tables(&ServedConfig::book(b, n, bs)).expect("the book's scenario fits its pool")
        });
        let mut served = match &served_t {
            Some(t) => Some(upload_pool(t, PoolOrder::BlockMajor)?),
            None => None,
        };
        let mut head_major = match &fresh_t {
            Some(t) => Some((
                upload_pool(&tables, PoolOrder::HeadMajor)?,
                upload_pool(t, PoolOrder::HeadMajor)?,
            )),
            None => None,
        };
        let mut flat = DecodeBuffers::upload_contiguous(dev, &s, &q, &k, &v, &lens)?;
        // The reference for the first and the last sequence, every head.
        let checks = DecodeCheck::new(&q, &k, &v, s);
        let flops = fa_flops(b, hq, 1, n, d, false);
        let run = |variant: &str,
                   name: &str,
                   bufs: &mut DecodeBuffers<f16>,
                   partition: Option<usize>,
                   tuning: Tuning,
                   log: &mut dyn FnMut(&str)|
         -> Result<Record, GpuError> {
            let (worst, p) = check_decode(dev, bufs, partition, tuning, &checks, name, log)?;
            let times = median_times(dev, bufs, partition, tuning)?;
            let bytes = bufs.bytes(Mask::NONE);
            let rec = Record::new(variant, name, "f16", &s, "none")
                .timed(&times, flops, bytes)
                .checked(worst.0, worst.1);
            log(&format!(
                "{name:36} N={n:6} P={p:5}: {:8.4} ms {:6.0} GB/s ({:4.1}% of read) {}",
                rec.ms,
                rec.gbps,
                100.0 * rec.gbps / read_gbps,
                if worst.0 { "checked" } else { "NOT CHECKED" }
            ));
            Ok(rec)
        };
        let def = Tuning::for_call(dev, &flat); // what `decode` runs
        records.push(run(
            variant,
            "ours/gpu-contiguous",
            &mut flat,
            None,
            def,
            log,
        )?);
        if variant == "decode_heads" {
            continue; // only the bytes of K/V change with the heads: the contiguous kernel shows it
        }
        records.push(run(variant, "ours/gpu-paged", &mut paged, None, def, log)?);
        if LAUNCH_CONTEXTS.contains(&n) {
            for (name, bufs) in [
                ("ours/gpu-contiguous", &mut flat),
                ("ours/gpu-paged", &mut paged),
            ] {
                records.extend(launch_records(dev, name, bufs, def, &checks, flops, log)?);
            }
        }
        if let Some(fresh) = fresh.as_mut() {
            records.push(run(variant, "ours/gpu-paged-fresh", fresh, None, def, log)?);
        }
        if let Some(served) = served.as_mut() {
            records.push(run(
                variant,
                "ours/gpu-paged-served",
                served,
                None,
                def,
                log,
            )?);
        }
        // Interleaved rounds (variant `paged_decode_rounds`): the contiguous copy, the paged kernel
        // through every kind of table and both pool layouts, all resident at once, each checked, then
        // timed back to back in rounds, so that each one's price over the contiguous copy is taken
        // within a round (the card's clock drifts by more than the smaller effects between runs minutes
        // apart). The diagnoses among them: the fresh tables shuffled within windows of the pool (how
        // far apart a sequence's blocks must be before their scatter costs); the shuffled tables with
        // each sequence's entries in increasing block order (an unmasked decode step does not see its
        // keys' order: every row then sweeps the pool from its low end to its high end, and the rows'
        // reads at one moment fall near each other); the served scenario with `Placement::AfterLast`.
        if let (Some(fresh_t), Some(fresh), Some(served), Some((hm, hm_fresh)), false) = (
            &fresh_t,
            fresh.as_mut(),
            served.as_mut(),
            head_major.as_mut(),
            quick,
        ) {
            let sorted: Vec<Vec<usize>> = tables
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    t.sort_unstable();
                    t
                })
                .collect();
            // The book's served scenario under another placement.
            let served_under = |placement| {
                served_tables(&ServedConfig {
                    placement,
                    ..ServedConfig::book(b, n, bs)
                })
                .expect("the book's scenario fits its pool")
            };
            let after = served_under(Placement::AfterLast);
            let chunked = served_under(CHUNKED);
            let chunked_wide = served_under(CHUNKED_WIDE);
            let chunked_2m = served_under(CHUNKED_2M);
            // The chunked placement first (on both pool layouts), then the diagnoses; an entry whose pool
            // would leave less than 1 GiB of device memory free is skipped, said so (at 64k tokens every
            // pool at once is more than an 80 GB card holds).
            let mut kinds: Vec<(String, Vec<Vec<usize>>, PoolOrder)> = vec![
                (
                    "served-chunked".into(),
                    chunked.clone(),
                    PoolOrder::BlockMajor,
                ),
                ("served-chunked-hm".into(), chunked, PoolOrder::HeadMajor),
                (
                    "served-chunked64-hm".into(),
                    chunked_wide,
                    PoolOrder::HeadMajor,
                ),
                (
                    "served-chunked512-hm".into(),
                    chunked_2m,
                    PoolOrder::HeadMajor,
                ),
            ];
            if let Some(t) = &served_t {
                kinds.push(("served-hm".into(), t.clone(), PoolOrder::HeadMajor));
            }
            kinds.push(("served-after".into(), after, PoolOrder::BlockMajor));
            kinds.push(("sorted".into(), sorted, PoolOrder::BlockMajor));
            kinds.extend(WINDOWS.iter().map(|&w| {
                (
                    format!("local{w}"),
                    window_shuffled(fresh_t, w, seed + 4),
                    PoolOrder::BlockMajor,
                )
            }));
            let mut extra: Vec<(String, DecodeBuffers<f16>)> = Vec::new();
            for (name, t, order) in kinds {
                let blocks = t.iter().flatten().max().map_or(0, |&m| m + 1);
                let pool_bytes = 2 * blocks * hkv * bs * d * std::mem::size_of::<f16>();
                let (free, _) = dev.memory()?;
                if free < pool_bytes + (1 << 30) {
                    log(&format!(
                        "rounds: {name} at N={n} skipped ({} MB pool, {} MB of device memory free)",
                        pool_bytes >> 20,
                        free >> 20
                    ));
                    continue;
                }
                extra.push((name, upload_pool(&t, order)?));
            }
            let mut entries: Vec<(String, &mut DecodeBuffers<f16>)> = vec![
                ("ours/gpu-contiguous".into(), &mut flat),
                ("ours/gpu-paged".into(), &mut paged),
                ("ours/gpu-paged-fresh".into(), fresh),
                ("ours/gpu-paged-served".into(), served),
                ("ours/gpu-paged-hm".into(), hm),
                ("ours/gpu-paged-fresh-hm".into(), hm_fresh),
            ];
            entries.extend(
                extra
                    .iter_mut()
                    .map(|(name, bufs)| (format!("ours/gpu-paged-{name}"), bufs)),
            );
            records.extend(rounds_records(dev, &mut entries, def, &checks, flops, log)?);
        }
        // The served pool is twice the batch's: its device memory goes back before the sweeps.
        drop(served);
        // Head-major pools (each kv head its own pool of blocks): the shuffled and the fresh tables,
        // with and without L2 prefetches (variant `paged_decode_sweep`).
        if let Some((hm, hm_fresh)) = head_major.as_mut() {
            for t in [def, Tuning { prefetch: 2, ..def }] {
                let tag = if t == def {
                    String::new()
                } else {
                    format!("-{}", t.name())
                };
                for (pool, bufs) in [("hm", &mut *hm), ("fresh-hm", &mut *hm_fresh)] {
                    let name = format!("ours/gpu-paged-{pool}{tag}");
                    records.push(run("paged_decode_sweep", &name, bufs, None, t, log)?);
                }
            }
        }
        // The block-major pool's fresh tables with every head chunk of a sequence in one block: a
        // block's warps read one run of consecutive pool blocks, all heads side by side.
        // And with a sequence's thread blocks in one cluster (one GPC).
        if let Some(fresh) = fresh.as_mut() {
            let eight = [
                Tuning {
                    heads: 8,
                    cluster: 1,
                    ..def
                },
                Tuning { cluster: 8, ..def },
            ];
            for t in eight {
                let name = format!("ours/gpu-paged-fresh-{}", t.name());
                records.push(run("paged_decode_sweep", &name, fresh, None, t, log)?);
            }
        }
        // The reads alone (not attention, so nothing to check): what the access pattern costs without
        // the arithmetic.
        let read_record = |variant: &str,
                           name: &str,
                           bufs: &DecodeBuffers<f16>,
                           log: &mut dyn FnMut(&str)|
         -> Result<Record, GpuError> {
            let probe = read_pass_ms(dev, bufs, 3, 1)?[0];
            let runs = ((300.0 / probe.max(1e-3)) as usize).clamp(20, 200);
            let times = read_pass_ms(dev, bufs, 0, runs)?;
            let kv = (2 * b * hkv * n * d * std::mem::size_of::<f16>()) as f64;
            let rec = Record::new(variant, name, "f16", &s, "none").timed(&times, 0.0, kv);
            log(&format!(
                "{name:36} N={n:6}        : {:8.4} ms {:6.0} GB/s ({:4.1}% of read)",
                rec.ms,
                rec.gbps,
                100.0 * rec.gbps / read_gbps
            ));
            Ok(rec)
        };
        // Through the table and on the contiguous copy (variant `paged_read`).
        for (name, bufs) in [
            ("ours/read-pass-paged", &paged),
            ("ours/read-pass-contiguous", &flat),
        ] {
            records.push(read_record("paged_read", name, bufs, log)?);
        }
        // Through the placements of Lab 03's Table 03.3 (variant `paged_read_order`): where on a GPU
        // the scatter's price comes from.
        if variant == "paged_decode" && ORDER_CONTEXTS.contains(&n) && !quick {
            for (order, t) in read_order_tables(b, per_seq, &tables) {
                let bufs = upload_pool(&t, PoolOrder::BlockMajor)?;
                let name = format!("ours/gpu-read-{order}");
                records.push(read_record("paged_read_order", &name, &bufs, log)?);
            }
        }
        if quick {
            continue;
        }
        // The sweeps behind the defaults: every tuning at the heuristic's partition, and partition
        // sizes with the default tuning (variant `paged_decode_sweep`).
        if SWEEP_CONTEXTS.contains(&n) {
            for t in Tuning::sweep() {
                let name = format!("ours/gpu-paged-{}", t.name());
                records.push(run("paged_decode_sweep", &name, &mut paged, None, t, log)?);
            }
            for p in SWEEP.into_iter().filter(|&p| p <= n) {
                let name = format!("ours/gpu-paged-{}-P{p}", def.name());
                records.push(run(
                    "paged_decode_sweep",
                    &name,
                    &mut paged,
                    Some(p),
                    def,
                    log,
                )?);
            }
        }
    }
    let by_order = reads
        .iter()
        .map(|(order, hint, gbps)| (read_order_key(order, *hint), *gbps))
        .collect();
    Ok((records, by_order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minimodel::paged::block_manager::{BlockManager, ManagerConfig};

    #[test]
    fn a_fresh_pool_gives_each_prompt_the_next_run_of_blocks() {
        // 3 sequences of 40 tokens in blocks of 16: 3 blocks each (the last partial), 9 in the pool.
        let t = fresh_tables(3, 40, 16).expect("fits exactly");
        assert_eq!(t, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]]);
        // One block fewer than the batch needs is refused, not silently short.
        let cfg = ManagerConfig {
            watermark: 0.0,
            ..ManagerConfig::new(16, 8, 0)
        };
        let mut mgr = BlockManager::new(cfg).expect("config");
        for seq in 0..2 {
            assert!(mgr.allocate(&[seq], &[0; 40]).is_ok());
        }
        assert!(mgr.allocate(&[2], &[0; 40]).is_err());
    }

    #[test]
    fn window_shuffles_keep_every_block_in_its_window() {
        let fresh = fresh_tables(4, 16 * 50, 16).expect("fits exactly"); // 200 blocks
        for w in [1, 8, 64] {
            let t = window_shuffled(&fresh, w, 7);
            let mut seen: Vec<usize> = t.iter().flatten().copied().collect();
            // Each logical block's physical block lies in the window of its fresh block.
            for (a, b) in fresh.iter().flatten().zip(t.iter().flatten()) {
                assert_eq!(a / w, b / w, "window {w}: block {a} moved to {b}");
            }
            // A permutation of the pool: no block given twice, none lost.
            seen.sort_unstable();
            assert_eq!(seen, (0..200).collect::<Vec<_>>());
            // Windows of one block are the fresh tables; larger ones do move blocks.
            assert_eq!(t == fresh, w == 1, "window {w}");
        }
    }
}
