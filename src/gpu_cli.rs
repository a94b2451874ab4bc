//! The GPU subcommands of the main binary: `measure-gpu` (lab 02's harness) and `gpu-probe` (small runs
//! for compute-sanitizer and Nsight Compute).

use half::{bf16, f16};
use modern_attention::gpu::flash::{self, lse_max_err, lse_ref64, Buffers, GpuElement, Version};
use modern_attention::gpu::paged::PoolOrder;
use modern_attention::gpu::Device;
use modern_attention::measure::{gpu, gpu_paged, slug, Generated, MeasurementFile, Record};
use modern_attention::minimodel::check::{attn_close, FP16_BAR};
use modern_attention::minimodel::numeric::{convert, DType};
use modern_attention::minimodel::paged::replay::{served_tables, ServedConfig};
use modern_attention::minimodel::reference::{attention_lowp, attention_ref64};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
}

fn open() -> Result<Device, String> {
    Device::open()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no CUDA device".to_string())
}

#[derive(Deserialize)]
struct PeerMachine {
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    peak_tflops: f64,
    #[serde(default)]
    copy_gbps: f64,
}

#[derive(Deserialize)]
struct PeerFile {
    machine: PeerMachine,
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct DramRow {
    #[serde(rename = "impl")]
    implementation: String,
    n: usize,
    d: usize,
    mask: String,
    dram_bytes: f64,
}

/// ncu's DRAM counts onto the lab 02 grid's records (variants `naive` and `flash`, fp16) of the same
/// kernel, N, D and mask.
fn merge_dram(records: &mut [Record], rows: &[DramRow]) {
    for row in rows {
        let hit = records.iter_mut().find(|r| {
            (r.variant == "naive" || r.variant == "flash")
                && r.dtype == "f16"
                && r.implementation == row.implementation
                && r.nq == row.n
                && r.d == row.d
                && r.mask == row.mask
        });
        match hit {
            Some(r) => r.dram_bytes = Some(row.dram_bytes),
            None => println!(
                "[measure-gpu] no record for ncu row {} N={} D={}",
                row.implementation, row.n, row.d
            ),
        }
    }
}

fn read_peer(p: &str) -> Result<PeerFile, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{p}: {e}"))
}

/// `measure-gpu [--quick] [--only flash|paged|race|dram] [--peer FILE] [--peer-decode FILE] [--peer-check FILE]
/// [--race FILE] [--dram FILE] [--out DIR] [--commit C] [--date D] [--rustc R]`
///
/// Without `--only`, measures lab 02's flash grid and lab 03's paged decode and writes a whole file.
/// With `--only paged` (or `flash`), re-measures that part alone and merges it into the committed file
/// for this card (`measurements/gpu-<card>.json`), replacing that file's records of every variant
/// measured now (e.g. `paged_decode`, `paged_decode_sweep`, and `crosscheck` from `--peer-check FILE`)
/// and marking the new ones with their own commit and date (`measured`). `--only race` measures no
/// attention itself and merges the interleaved comparison of `--race FILE` (variant `race`, from
/// `bench/peers/torch_race.py`) the same way, and `--only dram` ncu's DRAM counts of `--dram FILE`
/// (bench/gpu.sh's `ncu` phase) onto the committed grid's records.
pub fn measure_gpu(
    root: &Path,
    args: &[String],
    commit: String,
    rustc: String,
) -> Result<(), String> {
    let dev = open()?;
    let quick = args.iter().any(|a| a == "--quick");
    let only = flag(args, "--only").map(String::as_str);
    if only.is_some_and(|o| !["flash", "paged", "race", "dram"].contains(&o)) {
        return Err(format!(
            "--only takes flash, paged, race or dram, not {only:?}"
        ));
    }
    if only == Some("race") && flag(args, "--race").is_none() {
        return Err("--only race merges a --race FILE and measures nothing itself".into());
    }
    if only == Some("dram") && flag(args, "--dram").is_none() {
        return Err("--only dram merges a --dram FILE and measures nothing itself".into());
    }
    let date = flag(args, "--date").cloned().unwrap_or_default();
    let commit = flag(args, "--commit").cloned().unwrap_or(commit);
    let t = Instant::now();
    let mut log = |line: &str| println!("[measure-gpu] {line}");
    let mut records = Vec::new();
    if only.is_none() || only == Some("flash") {
        records.extend(gpu::measure(&dev, quick, &mut log).map_err(|e| e.to_string())?);
    }
    let (mut read_gbps, mut read_by_order) = (None, None);
    if only.is_none() || only == Some("paged") {
        let (r, reads) = gpu_paged::measure(&dev, quick, &mut log).map_err(|e| e.to_string())?;
        records.extend(r);
        read_gbps = reads.values().copied().reduce(f64::max);
        read_by_order = Some(reads);
    }
    let (mut peak, mut bw, mut driver) = (0.0, 0.0, None);
    if let Some(p) = flag(args, "--peer") {
        let peer = read_peer(p)?;
        println!(
            "[measure-gpu] merged {} peer records from {p}",
            peer.records.len()
        );
        peak = peer.machine.peak_tflops * 1e3;
        bw = peer.machine.copy_gbps;
        driver = peer.machine.driver;
        records.extend(peer.records);
    }
    for p in args
        .windows(2)
        .filter(|w| w[0] == "--peer-check" || w[0] == "--race")
        .map(|w| &w[1])
    {
        let peer = read_peer(p)?;
        println!(
            "[measure-gpu] merged {} cross-check or race records from {p}",
            peer.records.len()
        );
        records.extend(peer.records);
    }
    if let Some(p) = flag(args, "--peer-decode") {
        let peer = read_peer(p)?;
        println!(
            "[measure-gpu] merged {} decode peer records from {p}",
            peer.records.len()
        );
        driver = driver.or(peer.machine.driver);
        records.extend(peer.records);
    }
    let dram = match flag(args, "--dram") {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
            serde_json::from_str::<Vec<DramRow>>(&text).map_err(|e| format!("{p}: {e}"))?
        }
        None => Vec::new(),
    };
    if only != Some("dram") {
        merge_dram(&mut records, &dram);
    }
    let generated = Generated {
        date: date.clone(),
        commit: commit.clone(),
        rustc: flag(args, "--rustc").cloned().unwrap_or(rustc),
        threads: 1,
    };
    let mut file =
        gpu::file(&dev, records, peak, bw, driver, generated).map_err(|e| e.to_string())?;
    file.machine.read_gbps = read_gbps;
    file.machine.read_gbps_by_order = read_by_order.clone();
    let name = format!("gpu-{}.json", slug(&file.machine.name));
    if only.is_some() {
        // Merge into the committed file: its other records and provenance stay, ours replace its
        // records of every variant measured now; ceilings measured now replace the file's.
        // The checkout it runs in (a GPU machine's copy), else the one it was built in.
        let committed = [
            Path::new("measurements").join(&name),
            root.join("measurements").join(&name),
        ]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_default();
        if let Ok(text) = std::fs::read_to_string(&committed) {
            let mut base: MeasurementFile =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", committed.display()))?;
            let fresh: std::collections::HashSet<String> =
                file.records.iter().map(|r| r.variant.clone()).collect();
            base.records.retain(|r| !fresh.contains(&r.variant));
            // Records kept keep their own provenance once the file's header moves on.
            let old = format!("commit {}, {}", base.generated.commit, base.generated.date);
            for r in &mut base.records {
                r.measured.get_or_insert_with(|| old.clone());
            }
            for mut r in file.records {
                r.measured = Some(format!("commit {commit}, {date}"));
                base.records.push(r);
            }
            if read_gbps.is_some() {
                base.machine.read_gbps = read_gbps;
                base.machine.read_gbps_by_order = read_by_order;
            }
            if peak > 0.0 {
                // The ceilings were measured now: the header says when.
                base.machine.peak_gflops = peak;
                base.machine.bandwidth_gbps = bw;
                base.generated = file.generated;
            }
            if only == Some("race") || only == Some("dram") {
                // The race's ratios need no ceiling: the committed ones stay with the records they
                // were measured beside. ncu's counts join the committed grid's records of the same
                // kernel and shape (the grid and the counts then come from two calls: the caller
                // runs both on one build).
                merge_dram(&mut base.records, &dram);
                file = base;
                let dir = flag(args, "--out")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| root.join("measurements"));
                return write_file(&dir.join(&name), &file, t);
            }
            base.machine.driver = file.machine.driver.or(base.machine.driver);
            // The exponential rate, clock and L2 are measured (read) on every run.
            base.machine.exp_per_s = file.machine.exp_per_s.or(base.machine.exp_per_s);
            base.machine.mma_sync_gflops = file
                .machine
                .mma_sync_gflops
                .or(base.machine.mma_sync_gflops);
            base.machine.clock_mhz = file.machine.clock_mhz.or(base.machine.clock_mhz);
            base.machine.l2_bytes = file.machine.l2_bytes.or(base.machine.l2_bytes);
            file = base;
        }
    }
    if !quick && (file.machine.peak_gflops <= 0.0 || file.machine.bandwidth_gbps <= 0.0) {
        // The roofs come from the peer's run (PyTorch's matrix product and device copy): a file without
        // them would draw a roof of zero as if it had been measured. (`--quick`, the smoke run of
        // bench/gpu.sh's `quick` phase, writes its file anyway: it is never committed.)
        return Err("no measured peak or copy bandwidth for this card: pass --peer FILE \
                    (bench/peers/torch_sdpa.py's output from the same run), or merge with --only into a \
                    committed file that has them"
            .into());
    }
    let dir = flag(args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("measurements"));
    write_file(&dir.join(name), &file, t)
}

fn write_file(path: &Path, file: &MeasurementFile, t: Instant) -> Result<(), String> {
    let json = serde_json::to_string_pretty(file).map_err(|e| e.to_string())? + "\n";
    std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "[measure-gpu] {} records in {:.1?} -> {}",
        file.records.len(),
        t.elapsed(),
        path.display()
    );
    Ok(())
}

/// Small edge cases for the sanitizers: (B, Hq, Hkv, Nq, Nk, D, mask).
fn probe_cases() -> Vec<(AttnShape, Mask)> {
    let w = |n, c| Mask::sliding(n, c).expect("non-zero window");
    [
        ((2, 4, 2, 17, 17, 64), Mask::CAUSAL),
        ((1, 4, 1, 113, 64, 32), w(16, false)),
        ((1, 2, 2, 1, 113, 128), Mask::NONE),
        ((1, 4, 4, 64, 17, 64), w(8, true)),
        ((1, 2, 1, 200, 200, 64), Mask::NONE),
        ((1, 2, 2, 130, 257, 128), Mask::CAUSAL),
        ((1, 2, 1, 257, 130, 128), w(40, true)),
        // Several key tiles under a causal mask at D = 64 (v8's two-consumer kernel: Nq = Nk, Nq < Nk
        // with a window, Nq > Nk with rows that see no key).
        ((1, 2, 1, 300, 300, 64), Mask::CAUSAL),
        ((1, 2, 2, 200, 330, 64), w(100, true)),
        ((1, 1, 1, 330, 200, 64), Mask::CAUSAL),
        // No mask over whole key tiles: v8's `_u` kernels (no masked tile's code), with the O tile.
        ((1, 2, 1, 200, 256, 64), Mask::NONE),
        ((1, 2, 2, 130, 384, 128), Mask::NONE),
    ]
    .into_iter()
    .map(|((b, hq, hkv, nq, nk, d), m)| (AttnShape::new(b, hq, hkv, nq, nk, d).expect("case"), m))
    .collect()
}

fn probe_one<T: GpuElement>(
    dev: &Device,
    ver: Version,
    s: AttnShape,
    mask: Mask,
    seed: u64,
) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    let q: Vec<T> = convert(&rng.normal_vec_f32(s.q_len()));
    let k: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let v: Vec<T> = convert(&rng.normal_vec_f32(s.kv_len()));
    let mut bufs = Buffers::upload(dev, s, &q, &k, &v).map_err(|e| e.to_string())?;
    flash::forward(dev, ver, &mut bufs, mask).map_err(|e| e.to_string())?;
    let (o, lse) = bufs.download(dev).map_err(|e| e.to_string())?;
    let r64 = attention_ref64(&q, &k, &v, &s, mask).map_err(|e| e.to_string())?;
    let lowp = attention_lowp(&q, &k, &v, &s, mask, T::DTYPE).map_err(|e| e.to_string())?;
    let got: Vec<f64> = o.iter().map(|x| x.to_f64()).collect();
    let bar = (T::DTYPE == DType::F16).then_some(FP16_BAR);
    let name = format!("{} {:?} {}", ver.name(), s, mask.name());
    let lse_err = lse_max_err(&lse, &lse_ref64(&q, &k, &s, mask));
    match attn_close(&name, &got, &lowp, &r64, T::DTYPE, s.nk, bar) {
        Ok(r) if lse_err <= 1e-3 => {
            println!("ok   {r} | lse err {lse_err:.2e}");
            Ok(true)
        }
        Ok(r) => {
            println!("FAIL {r} | lse err {lse_err:.2e}");
            Ok(false)
        }
        Err(e) => {
            println!("FAIL {e}");
            Ok(false)
        }
    }
}

/// A decode batch of shape `s` (one query token a sequence, `s.nk` keys at most) with `lens` keys
/// a sequence: unit-normal q, K and V, K and V scattered into a shuffled pool of blocks of `bs`, and
/// uploaded both paged and as the contiguous twin. Returns (q, K, V, paged, contiguous).
#[allow(clippy::type_complexity)]
fn decode_batch(
    dev: &Device,
    s: AttnShape,
    bs: usize,
    lens: &[usize],
) -> Result<
    (
        Vec<f16>,
        Vec<f16>,
        Vec<f16>,
        modern_attention::gpu::paged::DecodeBuffers<f16>,
        modern_attention::gpu::paged::DecodeBuffers<f16>,
    ),
    String,
> {
    use modern_attention::gpu::paged::DecodeBuffers;
    let q = gpu_paged::normal_f16(s.q_len(), 1);
    let k = gpu_paged::normal_f16(s.kv_len(), 2);
    let v = gpu_paged::normal_f16(s.kv_len(), 3);
    let per = s.nk.div_ceil(bs);
    let mut ids: Vec<usize> = (0..s.b * per).collect();
    Rng::new(4).shuffle(&mut ids);
    let tables: Vec<Vec<usize>> = ids.chunks(per).map(<[usize]>::to_vec).collect();
    let paged = upload_through(
        dev,
        s,
        bs,
        (&q, &k, &v),
        &tables,
        lens,
        PoolOrder::BlockMajor,
    )?;
    let flat =
        DecodeBuffers::upload_contiguous(dev, &s, &q, &k, &v, lens).map_err(|e| e.to_string())?;
    Ok((q, k, v, paged, flat))
}

/// Decode `bufs` once with `tuning` into a poisoned output and check its first and last sequences
/// against the f64 reference under the rule and the fp16 bar (K and V of sequence `i` contiguous in
/// `k`, `v` as [`decode_batch`] makes them): the max error, or why it failed.
fn check_decode(
    dev: &Device,
    bufs: &mut modern_attention::gpu::paged::DecodeBuffers<f16>,
    (q, k, v): (&[f16], &[f16], &[f16]),
    s: AttnShape,
    tuning: modern_attention::gpu::paged::Tuning,
) -> Result<f64, String> {
    let (results, _) = gpu_paged::DecodeCheck::new(q, k, v, s)
        .decode_and_check(dev, bufs, None, tuning, &tuning.name())
        .map_err(|e| e.to_string())?;
    let mut worst = 0.0f64;
    for (_, result) in results {
        let rep = result.map_err(|e| format!("check failed, not timed: {e}"))?;
        worst = worst.max(rep.candidate.max);
    }
    Ok(worst)
}

/// K and V of shape `s` scattered into a pool of blocks of `bs` through `tables` (every block of the
/// pool in some table), uploaded with `q` as a paged decode batch of `lens` keys a sequence, the pool
/// stored in `order`.
fn upload_through(
    dev: &Device,
    s: AttnShape,
    bs: usize,
    (q, k, v): (&[f16], &[f16], &[f16]),
    tables: &[Vec<usize>],
    lens: &[usize],
    order: PoolOrder,
) -> Result<modern_attention::gpu::paged::DecodeBuffers<f16>, String> {
    use modern_attention::minimodel::paged::paged_attention::{PagedBatch, PagedKv};
    let (kp, vp) = (
        gpu_paged::scatter(k, &s, tables, bs),
        gpu_paged::scatter(v, &s, tables, bs),
    );
    let blocks = kp.len() / (s.hkv * bs * s.d); // the pool's, which may hold other blocks too
    let kv = PagedKv::new(&kp, &vp, blocks, s.hkv, bs, s.d).map_err(|e| e.to_string())?;
    let batch = PagedBatch {
        tables,
        seq_lens: lens,
    };
    modern_attention::gpu::paged::DecodeBuffers::upload_paged_in(dev, q, s.hq, &kv, &batch, order)
        .map_err(|e| e.to_string())
}

/// Paged decode on small batches (partial last blocks, a window, one and several partitions, and the
/// contiguous twin), each checked against the f64 reference.
fn probe_paged(dev: &Device) -> Result<bool, String> {
    use modern_attention::gpu::paged::{decode_tuned, Tuning};
    let (b, hq, hkv, d, bs, nk) = (3, 8, 2, 64, 16, 320);
    let s = AttnShape::new(b, hq, hkv, 1, nk, d).map_err(|e| e.to_string())?;
    let lens = [1, 200, 317];
    let (q, k, v, mut paged, mut flat) = decode_batch(dev, s, bs, &lens)?;
    let err = |e: modern_attention::gpu::GpuError| e.to_string();
    // The read passes (no output to check: the sanitizers watch their loads).
    for bufs in [&paged, &flat] {
        modern_attention::gpu::paged::read_pass_ms(dev, bufs, 0, 1).map_err(err)?;
    }
    let mut ok = true;
    for mask in [
        Mask::NONE,
        Mask::sliding(50, true).map_err(|e| e.to_string())?,
    ] {
        let bulk = Tuning {
            warps: 4, // the bulk path's per-warp rings fit in shared memory with 4 warps
            bulk: true,
            ..Tuning::REGISTERS
        };
        let split = Tuning {
            split: true,
            ..Tuning::REGISTERS
        };
        let lanes = Tuning {
            cp_async: true,
            stages: 2,
            ..Tuning::REGISTERS
        };
        let tc = Tuning::TENSOR_CORES;
        let tc_split = Tuning { split: true, ..tc };
        // Both head chunks of a sequence in one block (4 warps each), merged by the last block or split.
        let heads = Tuning {
            heads: 2,
            fused: true,
            ..tc
        };
        let heads_split = Tuning {
            heads: 2,
            split: true,
            ..tc
        };
        let mut tunings = vec![
            Tuning::REGISTERS,
            split,
            lanes,
            tc,
            tc_split,
            heads,
            heads_split,
        ];
        if dev.arch().starts_with("sm_9") {
            tunings.push(bulk); // Hopper's bulk copies
            tunings.push(Tuning { cluster: 2, ..tc }); // a sequence's two blocks as one cluster
        }
        tunings.push(Tuning { early: true, ..tc }); // rows past a sequence's end read before it is known
        for (partition, &t) in [None, Some(64)]
            .into_iter()
            .flat_map(|p| tunings.iter().map(move |t| (p, t)))
        {
            for (name, bufs) in [("paged", &mut paged), ("contiguous", &mut flat)] {
                bufs.poison(dev).map_err(err)?;
                decode_tuned(dev, bufs, mask, partition, t).map_err(err)?;
                let (o, _) = bufs.download(dev).map_err(err)?;
                for (seq, &len) in lens.iter().enumerate() {
                    let sub = AttnShape::new(1, hq, hkv, 1, len, d).map_err(|e| e.to_string())?;
                    let (mut ks, mut vs) = (Vec::new(), Vec::new());
                    for h in 0..hkv {
                        let at = s.kv_row(seq, h, 0);
                        ks.extend_from_slice(&k[at..at + len * d]);
                        vs.extend_from_slice(&v[at..at + len * d]);
                    }
                    let qs = &q[seq * hq * d..][..hq * d];
                    let r64 =
                        attention_ref64(qs, &ks, &vs, &sub, mask).map_err(|e| e.to_string())?;
                    let lowp = attention_lowp(qs, &ks, &vs, &sub, mask, DType::F16)
                        .map_err(|e| e.to_string())?;
                    let got: Vec<f64> = o[seq * hq * d..][..hq * d]
                        .iter()
                        .map(|x| x.to_f64())
                        .collect();
                    let label = format!(
                        "{name} decode {} {partition:?} {} seq {seq}",
                        t.name(),
                        mask.name()
                    );
                    match attn_close(&label, &got, &lowp, &r64, DType::F16, len, Some(FP16_BAR)) {
                        Ok(r) => println!("ok   {r}"),
                        Err(e) => {
                            println!("FAIL {e}");
                            ok = false;
                        }
                    }
                }
            }
        }
    }
    Ok(ok)
}

/// The shape of the saved cross-check sets: GQA 4/2 heads, 512 rows, as PyTorch would be called on it.
const CHECK_SHAPE: (usize, usize, usize, usize) = (1, 4, 2, 512);

/// `gpu-probe save-check DIR`: for D in {64, 128} and masks none/causal, run the fastest version on
/// unit-normal inputs and write `q, k, v, o` (raw little-endian f16) with a `manifest.json`, for
/// `bench/peers/torch_check.py` to compare against PyTorch's math backend on the same inputs.
fn save_check(dev: &Device, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (b, hq, hkv, n) = CHECK_SHAPE;
    let mut sets = Vec::new();
    for d in [64usize, 128] {
        for mask in [Mask::NONE, Mask::CAUSAL] {
            let s = AttnShape::new(b, hq, hkv, n, n, d).map_err(|e| e.to_string())?;
            let mut rng = Rng::new(0xc4ec + d as u64 + mask.causal as u64);
            let q: Vec<f16> = convert(&rng.normal_vec_f32(s.q_len()));
            let k: Vec<f16> = convert(&rng.normal_vec_f32(s.kv_len()));
            let v: Vec<f16> = convert(&rng.normal_vec_f32(s.kv_len()));
            let mut bufs = Buffers::upload(dev, s, &q, &k, &v).map_err(|e| e.to_string())?;
            flash::forward(dev, Version::FASTEST, &mut bufs, mask).map_err(|e| e.to_string())?;
            let (o, _) = bufs.download(dev).map_err(|e| e.to_string())?;
            let stem = format!("d{d}-{}", mask.name());
            for (t, x) in [("q", &q), ("k", &k), ("v", &v), ("o", &o)] {
                let bytes: Vec<u8> = x.iter().flat_map(|h| h.to_le_bytes()).collect();
                let path = dir.join(format!("{stem}-{t}.f16"));
                std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            sets.push(serde_json::json!({
                "stem": stem, "impl": format!("ours/{}", Version::FASTEST.name()),
                "b": b, "hq": hq, "hkv": hkv, "n": n, "d": d, "causal": mask.causal,
            }));
        }
    }
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::to_string_pretty(&sets).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", manifest.display()))?;
    println!("saved {} cross-check sets in {}", sets.len(), dir.display());
    Ok(())
}

/// `gpu-probe sanitize` (every version on small edge cases, checked; for compute-sanitizer) or
/// `gpu-probe one VERSION N D [causal]` (one launch on the harness's shape for N and D; for ncu),
/// `gpu-probe time VERSION N D [causal]` (its median time over 40 launches, for tuning); both take
/// comma-separated lists of versions (`VERSION:wK` for a knob) and of lengths.
/// The sanitizer's cases for `versions`: each version whose head sizes fit a case, in f16, then the
/// tensor-core versions (v4 on) in bf16, each against the reference; whether every one matched.
fn probe_versions(dev: &Device, versions: &[Version]) -> Result<bool, String> {
    let mut ok = true;
    for (i, (s, mask)) in probe_cases().into_iter().enumerate() {
        let fits = |v: &&Version| v.head_dims().is_empty() || v.head_dims().contains(&s.d);
        for &ver in versions.iter().filter(fits) {
            ok &= probe_one::<f16>(dev, ver, s, mask, 100 + i as u64)?;
        }
        for &ver in versions.iter().filter(fits).filter(|v| v.number() >= 4) {
            ok &= probe_one::<bf16>(dev, ver, s, mask, 200 + i as u64)?;
        }
    }
    Ok(ok)
}

/// A grid configuration's shape, its device buffers and the host's q, k and v.
type GridInputs = (AttnShape, Vec<Buffers<f16>>, [Vec<f16>; 3]);

/// The benchmark grid's shape at length `n` and head size `d` (B N = 16k tokens, H = 2048 / D; `b`
/// sequences instead where given), `copies` uploads of the same seeded inputs, and those inputs: q, k
/// and v independent and unit normal, as the harness's and the peer script's (k = q would put every
/// row's maximum on its own key, which the lazy rescale of changelog entry x would then never have to
/// move).
fn grid_inputs(
    dev: &Device,
    n: usize,
    d: usize,
    copies: usize,
    b: Option<usize>,
) -> Result<GridInputs, String> {
    let b = b.unwrap_or((16384 / n).max(1));
    let s = AttnShape::self_attention(b, 2048 / d, n, d).map_err(|e| e.to_string())?;
    let seed = 7 + 1000 * n as u64 + d as u64;
    let q = gpu_paged::normal_f16(s.q_len(), seed);
    let k = gpu_paged::normal_f16(s.kv_len(), seed + 1);
    let v = gpu_paged::normal_f16(s.kv_len(), seed + 2);
    let sets = (0..copies)
        .map(|_| Buffers::upload(dev, s, &q, &k, &v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((s, sets, [q, k, v]))
}

pub fn probe(args: &[String]) -> Result<(), String> {
    let dev = open()?;
    if args.first().map(String::as_str) == Some("serve") {
        // `gpu-probe serve`: one gpu-probe command a line from stdin, each answered on stdout and
        // ended by a line `done` (or `error: ...` then `done`), in one process, so the modules are
        // compiled once (how bench/peers/torch_race.py interleaves our kernel with PyTorch's).
        use std::io::{BufRead, Write};
        let mut inputs = Session::default();
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| e.to_string())?;
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            if words.is_empty() || words[0] == "serve" {
                continue;
            }
            if let Err(e) = probe_on(&dev, &words, &mut inputs) {
                println!("error: {e}");
            }
            println!("done");
            std::io::stdout().flush().map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    probe_on(&dev, args, &mut Session::default())
}

/// The grid's inputs uploaded so far, by (N, D, copies, batch if not the grid's): a `serve` session times each shape on the
/// same buffers every round, as the peer script does, instead of generating them again.
type Inputs = std::collections::HashMap<(usize, usize, usize, Option<usize>), GridInputs>;

/// Lab 03's decode batch at one context, uploaded once for a `serve` session's rounds: its shape, the
/// host q, k and v (for the checks), the paged batch (shuffled tables) and its contiguous twin.
struct DecodeSet {
    s: AttnShape,
    qkv: [Vec<f16>; 3],
    /// The race's entries, in the order they are timed: the shuffled pool, the served tables under the
    /// chunked placements, the contiguous twin.
    entries: Vec<(
        &'static str,
        modern_attention::gpu::paged::DecodeBuffers<f16>,
    )>,
}

/// What a `serve` session keeps between commands: the flash grid's inputs and the decode batches.
#[derive(Default)]
struct Session {
    grid: Inputs,
    decode: std::collections::HashMap<usize, DecodeSet>,
}

fn probe_on(dev: &Device, args: &[String], session: &mut Session) -> Result<(), String> {
    let inputs = &mut session.grid;
    match args.first().map(String::as_str) {
        Some("sanitize") => {
            // `gpu-probe sanitize [paged]`: every flash version's cases and the paged decode's, or
            // (`paged`) the paged decode's alone, a sanitizer run of a fraction of the time.
            let paged_only = args.get(1).is_some_and(|a| a == "paged");
            let mut ok = paged_only || probe_versions(dev, &Version::ALL)?;
            ok &= probe_paged(dev)?;
            if ok {
                println!("All results match");
                Ok(())
            } else {
                Err("some probe failed its check".into())
            }
        }
        Some("check") => {
            // `gpu-probe check VERSION,...`: the sanitizer's cases for those versions only; no sanitizer.
            let versions = args
                .get(1)
                .ok_or("gpu-probe check VERSION,...")?
                .split(',')
                .map(|name| Version::parse(name).ok_or(format!("unknown version {name}")))
                .collect::<Result<Vec<_>, _>>()?;
            if probe_versions(dev, &versions)? {
                println!("All results match");
                Ok(())
            } else {
                Err("some check failed".into())
            }
        }
        Some(cmd @ ("one" | "time")) => {
            // One configuration of the harness's grid: `one` launches it once (for ncu), `time`
            // checks each version's output as the harness does, then times it over four rotated input
            // sets (`nocheck` skips the check and marks the line UNCHECKED). `time` takes lists, so
            // that one process (one compile of each module) compares several versions and lengths:
            // `time v7,v8,v8:w3 512,2048 128 causal`; `v8@NAME` runs v8 through the kernel NAME
            // instead of the one the host's rules pick (`flash::v8_named` refuses a name that cannot
            // run the call), so that two rules' choices compare in one build:
            // `time v8,v8@flash_v8_64_s4_c3_c 1024 64 causal`.
            let usage =
                format!("gpu-probe {cmd} VERSION[:wK|@KERNEL],... N,... D [causal] [wWARPS] [bBATCH] [nocheck]");
            let n_list: Vec<usize> = args
                .get(2)
                .map(|x| x.split(',').filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_default();
            let d: usize = args.get(3).and_then(|x| x.parse().ok()).ok_or("D")?;
            let causal = args.get(4).is_some_and(|a| a == "causal");
            let nocheck = args.get(4..).unwrap_or_default().iter().any(|a| a == "nocheck");
            let check = cmd == "time" && !nocheck;
            // `w4` / `w8`: the warps per block (v8: its stages), for the versions that have a choice.
            let warps = args
                .get(4..)
                .unwrap_or_default()
                .iter()
                .find_map(|a| a.strip_prefix('w').and_then(|w| w.parse::<usize>().ok()));
            // `b33`: 33 sequences instead of the grid's 16384 / N (how many work items the grid
            // has, against the SM count: the last wave's share).
            let batch = args
                .get(4..)
                .unwrap_or_default()
                .iter()
                .find_map(|a| a.strip_prefix('b').and_then(|b| b.parse::<usize>().ok()))
                .filter(|&b| b > 0);
            let mut versions = Vec::new();
            for item in args.get(1).ok_or(usage.clone())?.split(',') {
                let (item, kernel) = match item.split_once('@') {
                    Some((v, k)) => (v, Some(k.to_string())),
                    None => (item, None),
                };
                let (name, w) = match item.split_once(":w") {
                    Some((name, w)) => (name, Some(w.parse::<usize>().map_err(|e| e.to_string())?)),
                    None => (item, warps),
                };
                let ver = Version::parse(name).ok_or(usage.clone())?;
                if kernel.is_some() && ver != Version::V8Tma {
                    return Err(format!("{item}@KERNEL: only v8 takes a kernel by name"));
                }
                versions.push((ver, w, kernel));
            }
            if n_list.is_empty() {
                return Err("N".into());
            }
            let mask = if causal { Mask::CAUSAL } else { Mask::NONE };
            for &n in &n_list {
                let copies = if cmd == "time" { 4 } else { 1 };
                let (s, sets, [q, k, v]) = match inputs.entry((n, d, copies, batch)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(grid_inputs(dev, n, d, copies, batch)?)
                    }
                };
                let s = *s;
                // `check`: each version's output first checked as the harness checks it.
                let checker = check.then(|| gpu::Checker::new(q, k, v, &s, mask));
                for (ver, w, kernel) in &versions {
                    let (ver, w) = (*ver, *w);
                    // One launch: the host's pick, or the kernel named.
                    let run = |set: &mut flash::Buffers<f16>| match kernel {
                        Some(k) => flash::forward_v8_named(dev, set, mask, k),
                        None => flash::forward_knob(dev, ver, set, mask, w),
                    };
                    if cmd == "one" {
                        run(&mut sets[0]).map_err(|e| e.to_string())?;
                        dev.synchronize().map_err(|e| e.to_string())?;
                        println!("ran {} on {s:?} {}", ver.name(), mask.name());
                        continue;
                    }
                    let label = format!(
                        "{}{}{} N={n} D={d} {}{}",
                        ver.name(),
                        w.map_or(String::new(), |w| format!("_w{w}")),
                        kernel.as_ref().map_or(String::new(), |k| format!("@{k}")),
                        mask.name(),
                        batch.map_or(String::new(), |b| format!(" B={b}"))
                    );
                    if let Some(checker) = &checker {
                        sets[0].poison(dev).map_err(|e| e.to_string())?;
                        run(&mut sets[0]).map_err(|e| e.to_string())?;
                        let (o, _) = sets[0].download(dev).map_err(|e| e.to_string())?;
                        let r = checker
                            .check(&label, &o, &s)
                            .map_err(|e| format!("check failed, not timed: {e}"))?;
                        println!("check {label}: max error {:.2e}", r.candidate.max);
                    }
                    let mut t = match kernel {
                        Some(_) => {
                            let n_sets = sets.len().max(1);
                            dev.time_each(5, 40, |i| run(&mut sets[i % n_sets]))
                        }
                        None => flash::time_ms(dev, ver, w, sets, mask, 5, 40),
                    }
                    .map_err(|e| e.to_string())?;
                    t.sort_by(f64::total_cmp);
                    let flops =
                        4.0 * (s.b * s.hq * n * n * d) as f64 / if causal { 2.0 } else { 1.0 };
                    println!(
                        "time {label}: {:.4} ms {:.1} TFLOP/s (min {:.4} max {:.4} ms, {} runs){}",
                        t[20],
                        flops / t[20] / 1e9,
                        t[0],
                        t[t.len() - 1],
                        t.len(),
                        if check { "" } else { " UNCHECKED" }
                    );
                }
            }
            Ok(())
        }
        Some("decode") => {
            // `gpu-probe decode N [check]`: lab 03's decode batch at N tokens through the default kernel,
            // paged (a shuffled pool, and the served tables under the chunked placement in a block-major
            // and in a head-major pool, and under chunks of 64 and of 512 in a head-major pool) and on the
            // contiguous twin, each timed as the race times (5
            // warm-ups, then 40 launches between their own CUDA events, the 21st fastest); `check`
            // first checks each against the f64 reference. Uploaded once per N in a `serve` session, so
            // that bench/peers/torch_decode_race.py can interleave it with PyTorch's SDPA decode.
            use modern_attention::gpu::paged::{time_ms, Tuning};
            let n: usize = args
                .get(1)
                .and_then(|x| x.parse().ok())
                .ok_or("gpu-probe decode N [check]")?;
            let set = match session.decode.entry(n) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let (_, hq, hkv, d, bs) = gpu_paged::SHAPE;
                    let s = AttnShape::new(gpu_paged::SHAPE.0, hq, hkv, 1, n, d)
                        .map_err(|e| e.to_string())?;
                    let lens = vec![n; s.b];
                    let (q, k, v, paged, flat) = decode_batch(dev, s, bs, &lens)?;
                    let mut entries = vec![("ours/gpu-paged", paged)];
                    // The same tokens through the tables a busy server leaves under the chunked
                    // placements (Lab 03's `served-chunked`, `served-chunked64` and `served-chunked512`), in a block-major
                    // or a head-major pool (each kv head its own pool of blocks).
                    for (name, placement, order) in [
                        ("ours/gpu-paged-chunked", gpu_paged::CHUNKED, PoolOrder::BlockMajor),
                        ("ours/gpu-paged-chunked-hm", gpu_paged::CHUNKED, PoolOrder::HeadMajor),
                        (
                            "ours/gpu-paged-chunked64-hm",
                            gpu_paged::CHUNKED_WIDE,
                            PoolOrder::HeadMajor,
                        ),
                        (
                            "ours/gpu-paged-chunked512-hm",
                            gpu_paged::CHUNKED_2M,
                            PoolOrder::HeadMajor,
                        ),
                    ] {
                        let tables = served_tables(&ServedConfig {
                            placement,
                            ..ServedConfig::book(s.b, n, bs)
                        })
                        .map_err(|e| e.to_string())?;
                        let bufs =
                            upload_through(dev, s, bs, (&q, &k, &v), &tables, &lens, order)?;
                        entries.push((name, bufs));
                    }
                    entries.push(("ours/gpu-contiguous", flat));
                    e.insert(DecodeSet {
                        s,
                        qkv: [q, k, v],
                        entries,
                    })
                }
            };
            let [q, k, v] = &set.qkv;
            for (name, bufs) in set.entries.iter_mut() {
                let tuning = Tuning::for_call(dev, bufs);
                if args.iter().any(|a| a == "check") {
                    let e = check_decode(dev, bufs, (q, k, v), set.s, tuning)?;
                    println!("check {name} N={n}: max error {e:.3e}");
                }
                let mut t = time_ms(dev, bufs, Mask::NONE, None, tuning, 5, 40)
                    .map_err(|e| e.to_string())?;
                t.sort_by(f64::total_cmp);
                println!(
                    "time {name} N={n}: {:.5} ms (min {:.5} max {:.5} ms)",
                    t[20],
                    t[0],
                    t[t.len() - 1]
                );
            }
            Ok(())
        }
        Some("paged") => {
            // One decode step of lab 03's batch at N tokens, paged then contiguous, each launched once
            // after one warm-up (for ncu: `-k regex:decode_partition`); `async` picks the cp.async ring,
            // `tc` the tensor cores, `read` the read passes alone (`-k regex:read_pass`); `fresh` reads
            // the pool through the block manager's tables on a fresh pool instead of shuffled ones, and
            // `served` through those it leaves a busy server (Lab 03's Table 03.8); `ab` times the
            // tuning against two-block clusters in alternating rounds instead (`ab early`: the
            // default against the early start).
            use modern_attention::gpu::paged::{decode_tuned, Tuning};
            let n: usize = args
                .get(1)
                .and_then(|x| x.parse().ok())
                .ok_or("gpu-probe paged N [async|tc|read] [fresh|served] [ab [early]]")?;
            let tuning = match args.get(2).map(String::as_str) {
                Some("async") => Tuning {
                    cp_async: true,
                    stages: 2,
                    ..Tuning::REGISTERS
                },
                Some("tc") => Tuning::TENSOR_CORES,
                _ => Tuning::REGISTERS,
            };
            let (b, hq, hkv, d, bs) = gpu_paged::SHAPE;
            let s = AttnShape::new(b, hq, hkv, 1, n, d).map_err(|e| e.to_string())?;
            let lens = vec![n; b];
            let (q, k, v, mut paged, mut flat) = decode_batch(dev, s, bs, &lens)?;
            let err = |e: modern_attention::gpu::GpuError| e.to_string();
            if args.iter().any(|a| a == "fresh") {
                let tables = gpu_paged::fresh_tables(b, n, bs).map_err(|e| e.to_string())?;
                paged = upload_through(dev, s, bs, (&q, &k, &v), &tables, &lens, PoolOrder::BlockMajor)?;
                println!("paged pool through the fresh tables");
            } else if args.iter().any(|a| a == "served") {
                use modern_attention::minimodel::paged::replay::{served_tables, ServedConfig};
                let tables =
                    served_tables(&ServedConfig::book(b, n, bs)).map_err(|e| e.to_string())?;
                paged = upload_through(dev, s, bs, (&q, &k, &v), &tables, &lens, PoolOrder::BlockMajor)?;
                println!("paged pool through the served tables (a pool of twice the batch's blocks)");
            }
            if args.iter().any(|a| a == "ab") {
                // `gpu-probe paged N tc [fresh|served] ab`: the tuning against the same with a
                // sequence's two blocks as one cluster, on the paged pool; `... ab early`: decode's
                // default (Tuning::for_call) against the same with the early start, on the paged pool
                // and on the contiguous twin. Alternating rounds of 20 timed launches each.
                let early = args.iter().any(|a| a == "early");
                let mut sides = vec![("paged", &mut paged)];
                if early {
                    sides.push(("contiguous", &mut flat));
                }
                for (label, bufs) in sides {
                    let (a, b) = if early {
                        let a = Tuning::for_call(dev, bufs);
                        (a, Tuning { early: true, ..a })
                    } else {
                        (tuning, Tuning { cluster: 2, ..tuning })
                    };
                    for t in [a, b] {
                        let e = check_decode(dev, bufs, (&q, &k, &v), s, t)?;
                        println!("check {label} {} N={n}: max error {e:.2e}", t.name());
                    }
                    let mut ratios = Vec::new();
                    for round in 0..8 {
                        let mut med = [0.0f64; 2];
                        for j in 0..2 {
                            let i = (round + j) % 2;
                            let mut ts = modern_attention::gpu::paged::time_ms(
                                dev,
                                bufs,
                                Mask::NONE,
                                None,
                                [a, b][i],
                                3,
                                20,
                            )
                            .map_err(err)?;
                            ts.sort_by(f64::total_cmp);
                            med[i] = ts[ts.len() / 2];
                        }
                        ratios.push(med[0] / med[1]);
                        println!(
                            "round {round} {label}: {} {:.4} ms, {} {:.4} ms",
                            a.name(),
                            med[0],
                            b.name(),
                            med[1]
                        );
                    }
                    ratios.sort_by(f64::total_cmp);
                    println!(
                        "N={n} {label}: {} / {}, median of rounds {:.4} (range {:.4}-{:.4})",
                        a.name(),
                        b.name(),
                        ratios[ratios.len() / 2],
                        ratios[0],
                        ratios[ratios.len() - 1]
                    );
                }
                return Ok(());
            }
            if args.get(2).map(String::as_str) == Some("read") {
                for bufs in [&paged, &flat] {
                    modern_attention::gpu::paged::read_pass_ms(dev, bufs, 1, 1).map_err(err)?;
                }
                println!("ran the paged and contiguous read passes at N={n}");
                return Ok(());
            }
            for bufs in [&mut paged, &mut flat] {
                for _ in 0..2 {
                    decode_tuned(dev, bufs, Mask::NONE, None, tuning).map_err(err)?;
                }
            }
            dev.synchronize().map_err(|e| e.to_string())?;
            println!("ran paged and contiguous decode {} at N={n}", tuning.name());
            Ok(())
        }
        Some("trace") => {
            // `gpu-probe trace OUT.json COMMIT DATE`: v8's trace build on each of trace::RUNS, after
            // checking the untraced kernel against the f64 reference (as the harness does), timing it
            // on the same buffers, and checking that both builds write the same output.
            use modern_attention::measure::trace::{TraceFile, TraceRun, RUNS};
            let usage = "gpu-probe trace OUT.json COMMIT DATE";
            let out = PathBuf::from(args.get(1).ok_or(usage)?);
            let err = |e: modern_attention::gpu::GpuError| e.to_string();
            let mut runs = Vec::new();
            for (d, n, causal) in RUNS {
                let (s, mut sets, [q, k, v]) = grid_inputs(dev, n, d, 1, None)?;
                let mask = if causal { Mask::CAUSAL } else { Mask::NONE };
                let stages = flash::v8_stage_choices(d)[0];
                // Checked first, into a poisoned output; a failed check is recorded, and its time is not
                // shown.
                sets[0].poison(dev).map_err(err)?;
                flash::forward_with(dev, Version::V8Tma, &mut sets[0], mask, stages).map_err(err)?;
                let (o, _) = sets[0].download(dev).map_err(err)?;
                let label = format!("v8 trace D={d} N={n} {}", mask.name());
                let checked = gpu::Checker::new(&q, &k, &v, &s, mask).check(&label, &o, &s);
                let max_err = match &checked {
                    Ok(r) => r.candidate.max,
                    Err(e) => {
                        println!("FAILED CHECK {e}");
                        f64::NAN
                    }
                };
                let mut t = flash::time_ms(dev, Version::V8Tma, Some(stages), &mut sets, mask, 5, 40)
                    .map_err(err)?;
                t.sort_by(f64::total_cmp);
                let bufs = &mut sets[0];
                flash::forward_with(dev, Version::V8Tma, bufs, mask, stages).map_err(err)?;
                let plain = dev.stream().clone_dtoh(&bufs.o).map_err(|e| e.to_string())?;
                flash::v8_trace(dev, bufs, mask, stages).map_err(err)?; // compiles, warms up
                let traced = flash::v8_trace(dev, bufs, mask, stages).map_err(err)?;
                let same = dev.stream().clone_dtoh(&bufs.o).map_err(|e| e.to_string())? == plain;
                let blocks: Vec<Vec<Vec<[u64; 4]>>> = traced
                    .iter()
                    .map(|writers| {
                        let t0 = writers
                            .iter()
                            .filter_map(|w| w.first().map(|e| e.cycle))
                            .min()
                            .unwrap_or(0);
                        writers
                            .iter()
                            .map(|w| {
                                w.iter()
                                    .map(|e| [e.cycle - t0, e.code as u64, e.item as u64, e.tile as u64])
                                    .collect()
                            })
                            .collect()
                    })
                    .collect();
                let events: usize = blocks.iter().flatten().map(Vec::len).sum();
                println!(
                    "trace D={d} N={n} {}: {:.4} ms untraced, {events} events, output {}",
                    mask.name(),
                    t[20],
                    if same { "identical" } else { "DIFFERS" }
                );
                runs.push(TraceRun {
                    d,
                    n,
                    causal,
                    b: s.b,
                    hq: s.hq,
                    stages,
                    consumers: flash::v8_consumers(d, n, causal),
                    ms: t[20],
                    checked: checked.is_ok(),
                    max_err,
                    same_output: same,
                    blocks,
                });
            }
            let file = TraceFile {
                card: dev.name().map_err(err)?,
                commit: args.get(2).cloned().unwrap_or_default(),
                date: args.get(3).cloned().unwrap_or_default(),
                runs,
            };
            let json = serde_json::to_string(&file).map_err(|e| e.to_string())?;
            std::fs::write(&out, json + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Some("save-check") => {
            let dir = PathBuf::from(args.get(1).ok_or("gpu-probe save-check DIR")?);
            save_check(dev, &dir)
        }
        _ => Err(
            "usage: gpu-probe sanitize | gpu-probe check VERSION,... | gpu-probe one|time VERSION[:wK|@KERNEL],... N,... D [causal] [wWARPS] [bBATCH] [nocheck] | gpu-probe paged N [async|tc|read] | gpu-probe trace OUT.json COMMIT DATE | gpu-probe save-check DIR"
                .into(),
        ),
    }
}

/// `modern-attention kernels [--json FILE] [--cubin DIR] [WORD...]`: ptxas's report (registers, spills,
/// shared memory and code size a kernel, and its warnings) for every module of
/// [`modern_attention::gpu::module_configs`] whose key (file and `-DNAME=VALUE` defines) contains each
/// word, compiled by NVRTC for `sm_90a` with no device. With `--json FILE`, the reports are also written
/// to FILE with `stamp` (commit, date); with `--cubin DIR`, each module's cubin is written into DIR
/// (named after its key), for a disassembler (`nvdisasm -c`, `cuobjdump -sass`) to read.
pub fn kernels(args: &[String], stamp: (String, String)) -> Result<(), String> {
    use modern_attention::gpu::{
        module_configs, module_key, nvrtc_present, nvrtc_version, ptxas_report, ModuleConfig,
    };
    use modern_attention::measure::ptxas::{ModuleRow, PtxasFile};
    use rayon::prelude::*;
    let (mut json, mut cubin_dir) = (None, None);
    let mut words = args;
    loop {
        match words {
            [flag, value, rest @ ..] if flag == "--json" || flag == "--cubin" => {
                *(if flag == "--json" {
                    &mut json
                } else {
                    &mut cubin_dir
                }) = Some(value.clone());
                words = rest;
            }
            [flag, ..] if flag == "--json" || flag == "--cubin" => {
                return Err(format!("{flag} needs a value"))
            }
            _ => break,
        }
    }
    if !nvrtc_present() {
        return Err("NVRTC (libnvrtc) cannot be loaded here: see the README's \
                    `.ci/fetch_nvrtc.py` for a copy that needs no CUDA toolkit"
            .into());
    }
    let chosen: Vec<(String, ModuleConfig)> = module_configs()
        .into_iter()
        .map(|(file, defines)| (module_key(file, &defines), (file, defines)))
        .filter(|(key, _)| words.iter().all(|w| key.contains(w.as_str())))
        .collect();
    if chosen.is_empty() {
        return Err(format!("no kernel module matches {words:?}"));
    }
    let reports: Vec<_> = chosen
        .par_iter()
        .map(|(_, (file, defines))| ptxas_report(file, defines, "sm_90a"))
        .collect();
    let mut failed = 0;
    let mut rows = Vec::new();
    for ((key, _), report) in chosen.iter().zip(reports) {
        println!("{key}");
        match report {
            Ok(report) => {
                if let Some(dir) = &cubin_dir {
                    let name: String = key
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '=' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let path = std::path::Path::new(dir).join(format!("{name}.cubin"));
                    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
                    std::fs::write(&path, &report.cubin)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                rows.push(ModuleRow {
                    module: key.clone(),
                    kernels: report.kernels.clone(),
                    warnings: report.warnings.clone(),
                });
                let (kernels, warnings) = (report.kernels, report.warnings);
                for k in kernels {
                    println!(
                        "  {:32} {:4} registers  spills {} / {} bytes (stores / loads)  \
                         smem {} bytes  code {} KB",
                        k.name,
                        k.registers,
                        k.spill_stores,
                        k.spill_loads,
                        k.smem,
                        k.code / 1024
                    );
                }
                for w in warnings {
                    println!("  {w}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("  {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {} modules did not compile",
            chosen.len()
        ));
    }
    if let Some(path) = json {
        let file = PtxasFile {
            arch: "sm_90a".into(),
            nvrtc: nvrtc_version().unwrap_or_else(|| "unknown".into()),
            commit: stamp.0,
            date: stamp.1,
            modules: rows,
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())? + "\n";
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dram_counts_join_the_grid_record_not_the_race_or_bf16_ones() {
        let shape = AttnShape::new(8, 32, 32, 2048, 2048, 64).unwrap();
        let mut records = vec![
            Record::new("race", "ours/v8_tma", "f16", &shape, "none"),
            Record::new("flash", "ours/v8_tma", "bf16", &shape, "none"),
            Record::new("flash", "ours/v8_tma", "f16", &shape, "causal"),
            Record::new("flash", "ours/v8_tma", "f16", &shape, "none"),
        ];
        let rows = vec![
            DramRow {
                implementation: "ours/v8_tma".into(),
                n: 2048,
                d: 64,
                mask: "none".into(),
                dram_bytes: 2.6e8,
            },
            // No record of this kernel: reported, nothing changed.
            DramRow {
                implementation: "ours/v9".into(),
                n: 2048,
                d: 64,
                mask: "none".into(),
                dram_bytes: 1.0,
            },
        ];
        merge_dram(&mut records, &rows);
        let counts: Vec<Option<f64>> = records.iter().map(|r| r.dram_bytes).collect();
        assert_eq!(counts, vec![None, None, None, Some(2.6e8)]);
    }
}
