//! FlashAttention forward on the CPU, as a numbered progression.
//!
//! Shapes: `q: (B, Hq, Nq, D)`, `k, v: (B, Hkv, Nk, D)`, `o: (B, Hq, Nq, D)`, row-major; inputs of any
//! [`Element`] type (f32, f16, bf16), arithmetic in f32, output in the input's type. Query head `h` reads
//! kv head `h / (Hq / Hkv)` by index: K and V are never copied per query head.
//!
//! Changelog (each version stays, and the benches time every one of them):
//! * `v1_naive`: three passes with `S = Q K^T` materialised, `(B, Hq, Nq, Nk)` floats: the naive dot on
//!   the roofline. Allocates O(N^2).
//! * `v1b_naive_blocked`: the same three passes with v3's inner loops: the tiled kernel with one tile,
//!   `Br = Nq` and `Bc = Nk`, so its step's three passes run over the whole score matrix in memory.
//!   Naive's bytes at v3's instruction quality: the roofline's naive dot.
//! * `v2_online`: one pass per query row with the online-softmax state `(m, l, o)`; no `S`, but every
//!   query row re-reads all of K and V, one dot product at a time.
//! * `v3_tiled`: FlashAttention proper. A tile of `Br` query rows against tiles of `Bc` keys: the two
//!   products become small matrix products whose operands sit in cache, K and V are read once per query
//!   tile (not per row), fully masked tiles are skipped, `O` is divided by `l` once at the end. The inner
//!   loops (`kernels.rs`) are register-blocked and compiled for AVX-512, AVX2+FMA or portable code.
//!   Parallel over (batch, head, query tile) with rayon.
//!
//! The timings of each version, and PyTorch's CPU SDPA beside them, are in the book's Lab 01 tables.

pub mod kernels;

use super::numeric::Element;
use super::shape::{AttnShape, Mask, ShapeError};
use crate::roofline::traffic::visible_keys;
use kernels::Isa;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use thiserror::Error;

/// Why a forward pass was refused. Nothing was written to the output when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlashError {
    /// The inputs do not describe a valid attention call.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The output slice does not have `B * Hq * Nq * D` elements.
    #[error("output has {got} elements, the shape needs {expected}")]
    OutputLength {
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// An input holds a NaN or an infinity (checked before any work; the output is not touched).
    #[error("input {tensor} holds a non-finite value at element {index}")]
    NonFinite {
        /// Which input (`"q"`, `"k"`, `"v"`).
        tensor: &'static str,
        /// Index of the first non-finite element.
        index: usize,
    },
    /// A tile size of zero.
    #[error("tile sizes must be at least 1 (got Br = {br}, Bc = {bc})")]
    ZeroTile {
        /// Query rows per tile.
        br: usize,
        /// Key rows per tile.
        bc: usize,
    },
}

// ANCHOR: tiles
/// Tile sizes: `Br` query rows by `Bc` key rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    /// Query rows per tile.
    pub br: usize,
    /// Key/value rows per tile.
    pub bc: usize,
}

/// The query tile's Q, S and O take up to `L2 / L2_SHARE` bytes. Half: a taller query tile re-reads K
/// and V fewer times and transposes each K tile once for more rows. An eighth (the first rule, chosen on
/// a Xeon whose 2 MB L2 makes both the same 256 rows at `D = 64`) gave a 512 KB L2 (AMD EPYC) 64 rows at
/// `D = 64` and 32 at `D = 128`; half gives it 256 and 192, which in interleaved rounds on that machine
/// (2 threads, f32, `N = 2048`) were faster at both head sizes without a mask. Under a causal mask
/// [`Tiles::for_call`] caps the rows at 128.
pub const L2_SHARE: usize = 2;

impl Tiles {
    /// Tiles sized from the cache, the CPU's analogue of FlashAttention's SRAM argument:
    /// * `Bc` is a multiple of the micro-kernel's 32 register columns; it trades the per-tile cost of the
    ///   softmax rescale (smaller `Bc`, more rescales) against the K and V tiles (`2 Bc D` floats, re-read
    ///   for every block of six query rows) leaving L1. `Bc = 64` when they fit in L1 for `D <= 64` and in
    ///   two L1s for `D = 128` (measured best on the book's machine: at `D = 128` 32-key tiles, which fit
    ///   its 48 KB L1, were slightly faster on a quiet machine but clearly slower on a loaded one); `32`
    ///   on a smaller L1.
    /// * `Br` sets how often K and V are re-read (once per query tile: `Tr = Nq / Br` times), so it is as
    ///   large as lets the Q tile, the S tile and the O accumulators (`Br (2 D + Bc)` floats) sit in
    ///   half of L2 ([`L2_SHARE`]): the largest multiple of 32 with `Br (2 D + Bc) * 4 <= L2 / 2`,
    ///   between 32 and 256.
    pub fn for_cache(d: usize, l1_bytes: usize, l2_bytes: usize) -> Tiles {
        let d = d.max(1);
        let bc = if 2 * 64 * d * 4 <= 2 * l1_bytes.max(1) {
            64
        } else {
            32
        };
        let br = (l2_bytes / L2_SHARE / ((2 * d + bc) * 4) / 32 * 32).clamp(32, 256);
        Tiles { br, bc }
    }

    /// [`Tiles::for_cache`] with this machine's per-core L1d and L2 sizes (Linux sysfs), or 32 KiB and
    /// 1 MiB where they cannot be read.
    pub fn for_this_machine(d: usize) -> Tiles {
        let (l1, l2) = cache_sizes().unwrap_or((32 << 10, 1 << 20));
        Self::for_cache(d, l1, l2)
    }

    /// The tiles of one call: [`Tiles::for_this_machine`], with the query tiles cut to about `W / 4`
    /// rows (a multiple of 32) under a sliding window of `W` keys. A query tile's keys span `W + Br`
    /// of which each row sees `W`: with `Br = 256` under a 256-key window, half the scores computed
    /// were masked (and the window's K and V, `W` rows a head, stay cached however often they are read).
    /// Under a causal mask at most 128 rows: a query tile's cost grows with its place along the
    /// diagonal, and fewer, taller tiles share the threads' work less evenly (on the AMD EPYC, 256 rows
    /// were slower than 128 at `D = 64`, and 192 at `D = 128`, in interleaved rounds).
    pub fn for_call(d: usize, mask: Mask) -> Tiles {
        let t = Self::for_this_machine(d);
        let br = if mask.causal { t.br.min(128) } else { t.br };
        match mask.window {
            Some(w) => Tiles {
                br: br.min((w.get() / 4 / 32 * 32).max(32)),
                ..t
            },
            None => Tiles { br, ..t },
        }
    }
}
// ANCHOR_END: tiles

/// The caches cpu0 reports in `/sys/devices/system/cpu/cpu0/cache`: each index's level, type and size
/// in bytes (`None` where the size does not parse), for the indices whose three files read.
fn sysfs_caches() -> Vec<(String, String, Option<usize>)> {
    (0..8)
        .filter_map(|i| {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
            let (level, kind, size) = (read("level")?, read("type")?, read("size")?);
            let size = size.trim();
            let bytes = match size.strip_suffix('K') {
                Some(k) => k.parse::<usize>().ok().map(|k| k << 10),
                None => match size.strip_suffix('M') {
                    Some(m) => m.parse::<usize>().ok().map(|m| m << 20),
                    None => size.parse().ok(),
                },
            };
            Some((level.trim().to_string(), kind.trim().to_string(), bytes))
        })
        .collect()
}

/// Per-core L1 data and L2 cache sizes from `/sys/devices/system/cpu/cpu0/cache`.
pub fn cache_sizes() -> Option<(usize, usize)> {
    let mut l1 = None;
    let mut l2 = None;
    for (level, kind, bytes) in sysfs_caches() {
        let bytes = bytes?;
        match (level.as_str(), kind.as_str()) {
            ("1", "Data") => l1 = Some(bytes),
            ("2", _) => l2 = Some(bytes),
            _ => {}
        }
    }
    Some((l1?, l2?))
}

/// The largest cache cpu0 reports in `/sys/devices/system/cpu/cpu0/cache`, in bytes.
pub fn last_level_cache_bytes() -> Option<usize> {
    sysfs_caches().into_iter().filter_map(|(_, _, b)| b).max()
}

/// Where the slow-memory traffic of a run is tallied. [`NoCount`] compiles to nothing; [`Counter`]
/// adds up every tile load and store, so tests can compare the run with the traffic model.
pub trait Traffic: Sync {
    /// `bytes` read from slow memory.
    fn load(&self, bytes: usize);
    /// `bytes` written to slow memory.
    fn store(&self, bytes: usize);
    /// One (Q tile, K/V tile) pair computed, or skipped because the mask hides all of it.
    fn tile(&self, computed: bool);
}

/// No counting: the production path.
pub struct NoCount;

impl Traffic for NoCount {
    #[inline(always)]
    fn load(&self, _: usize) {}
    #[inline(always)]
    fn store(&self, _: usize) {}
    #[inline(always)]
    fn tile(&self, _: bool) {}
}

/// Counts bytes and tiles (atomically: workers run in parallel).
#[derive(Debug, Default)]
pub struct Counter {
    /// Bytes read from slow memory (Q, K, V tiles).
    pub loaded: AtomicU64,
    /// Bytes written to slow memory (O tiles).
    pub stored: AtomicU64,
    /// Tile pairs computed.
    pub computed: AtomicU64,
    /// Tile pairs skipped as fully masked.
    pub skipped: AtomicU64,
}

impl Traffic for Counter {
    fn load(&self, bytes: usize) {
        self.loaded.fetch_add(bytes as u64, Relaxed);
    }
    fn store(&self, bytes: usize) {
        self.stored.fetch_add(bytes as u64, Relaxed);
    }
    fn tile(&self, computed: bool) {
        if computed {
            self.computed.fetch_add(1, Relaxed);
        } else {
            self.skipped.fetch_add(1, Relaxed);
        }
    }
}

impl Counter {
    /// Total bytes moved, read plus written.
    pub fn bytes(&self) -> u64 {
        self.loaded.load(Relaxed) + self.stored.load(Relaxed)
    }
}

/// Validate a call before any work: shapes, the output's length, and finite inputs (one cheap pass:
/// `(Nq + 2 Nk) D` reads against `4 Nq Nk D` FLOPs).
fn check<T: Element>(s: &AttnShape, q: &[T], k: &[T], v: &[T], o: usize) -> Result<(), FlashError> {
    s.check_inputs(q.len(), k.len(), v.len())?;
    if o != s.q_len() {
        return Err(FlashError::OutputLength {
            expected: s.q_len(),
            got: o,
        });
    }
    for (tensor, x) in [("q", q), ("k", k), ("v", v)] {
        // A branch-free pass first (vectorised, split over the threads: at N = 64 one thread alone
        // spent a tenth of the call here); the position only when something is wrong.
        if !x.par_chunks(1 << 15).all(T::all_finite) {
            let index = x.iter().position(|e| !e.finite()).unwrap_or(0);
            return Err(FlashError::NonFinite { tensor, index });
        }
    }
    Ok(())
}

/// `sum_i a_i b_i` in f32 with 16 independent partial sums, so the compiler may vectorise it (a single
/// running sum is a chain of dependent additions it must not reorder).
#[inline]
fn dot<T: Element>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y.to_f32())
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += x * y.to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

// ANCHOR: v1_naive
/// Version 1, naive: `S = Q K^T / sqrt(D)` for all rows at once (allocated, `Nq * Nk` floats per head),
/// then a softmax pass over `S` in place (it becomes `P`), then `O = P V`.
pub fn v1_naive<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
    o: &mut [T],
) -> Result<(), FlashError> {
    check(s, q, k, v, o.len())?;
    let scale = 1.0 / (s.d as f32).sqrt();
    let f = |x: &T| x.to_f32();
    o.par_chunks_mut(s.nq * s.d)
        .enumerate()
        .for_each(|(bh, o_head)| {
            let (b, h) = (bh / s.hq, bh % s.hq);
            let hk = h / s.group();
            let mut sm = vec![0.0f32; s.nq * s.nk]; // S, then P: the O(N^2) buffer
            for i in 0..s.nq {
                let qi: Vec<f32> = q[s.q_row(b, h, i)..][..s.d].iter().map(f).collect();
                for j in 0..s.nk {
                    let kj = &k[s.kv_row(b, hk, j)..][..s.d];
                    sm[i * s.nk + j] = if mask.visible(i, j, s.nq, s.nk) {
                        dot(&qi, kj) * scale
                    } else {
                        f32::NEG_INFINITY
                    };
                }
            }
            for row in sm.chunks_mut(s.nk) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                if m == f32::NEG_INFINITY {
                    row.fill(0.0); // fully masked row: zeros
                    continue;
                }
                let mut l = 0.0;
                for x in row.iter_mut() {
                    *x = (*x - m).exp();
                    l += *x;
                }
                row.iter_mut().for_each(|x| *x /= l);
            }
            let mut acc = vec![0.0f32; s.d];
            for (i, oi) in o_head.chunks_mut(s.d).enumerate() {
                acc.fill(0.0);
                for j in 0..s.nk {
                    let p = sm[i * s.nk + j];
                    let vj = &v[s.kv_row(b, hk, j)..][..s.d];
                    acc.iter_mut().zip(vj).for_each(|(a, x)| *a += p * f(x));
                }
                oi.iter_mut()
                    .zip(&acc)
                    .for_each(|(x, a)| *x = T::from_f32(*a));
            }
        });
    Ok(())
}
// ANCHOR_END: v1_naive

// ANCHOR: v1b_naive_blocked
/// Version 1b, naive with v3's loops: [`tiled`] with a single tile, `Br = Nq` query rows by `Bc = Nk`
/// keys. Its step then is [`v1_naive`]'s three passes over the whole `Nq x Nk` score matrix in memory
/// (`S = Q K^T` in register blocks, the softmax in place with the vector `2^x`, `O = P V` in register
/// blocks; one scratch of `Nq * Nk` floats per worker): naive's bytes, v3's instructions. (With
/// `Nk` of 32 or 64 on AVX-512 the step fuses its passes per six rows; `S` is then at most 16 KB a
/// head and stays in L1 either way.)
pub fn v1b_naive_blocked<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
    o: &mut [T],
) -> Result<(), FlashError> {
    let one_tile = Tiles {
        br: s.nq.max(1),
        bc: s.nk.max(1),
    };
    tiled(q, k, v, s, mask, o, one_tile, Isa::detect(), &NoCount)
}
// ANCHOR_END: v1b_naive_blocked

// ANCHOR: v2_online
/// Version 2, online: one pass over K and V per query row with the state `(m, l, o)`; no `S` is stored.
pub fn v2_online<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
    o: &mut [T],
) -> Result<(), FlashError> {
    check(s, q, k, v, o.len())?;
    let scale = 1.0 / (s.d as f32).sqrt();
    let f = |x: &T| x.to_f32();
    o.par_chunks_mut(s.d).enumerate().for_each(|(row, oi)| {
        let (bh, i) = (row / s.nq, row % s.nq);
        let (b, h) = (bh / s.hq, bh % s.hq);
        let hk = h / s.group();
        let qi: Vec<f32> = q[s.q_row(b, h, i)..][..s.d].iter().map(f).collect();
        let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
        let mut acc = vec![0.0f32; s.d];
        for j in (0..s.nk).filter(|&j| mask.visible(i, j, s.nq, s.nk)) {
            let kj = &k[s.kv_row(b, hk, j)..][..s.d];
            let sj = dot(&qi, kj) * scale;
            let m_new = m.max(sj); // m' = max(m, s_j)
            let alpha = (m - m_new).exp(); // e^(m - m'), 0 on the first key
            let p = (sj - m_new).exp();
            l = l * alpha + p; // l' = l e^(m - m') + e^(s_j - m')
            let vj = &v[s.kv_row(b, hk, j)..][..s.d];
            acc.iter_mut()
                .zip(vj)
                .for_each(|(a, x)| *a = *a * alpha + p * f(x)); // o' = o alpha + p v_j
            m = m_new;
        }
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 }; // fully masked row: zeros
        oi.iter_mut()
            .zip(&acc)
            .for_each(|(x, a)| *x = T::from_f32(a * inv));
    });
    Ok(())
}
// ANCHOR_END: v2_online

// ANCHOR: tile_range
/// The key tiles `[first, last)` that query rows `[i0, i1)` can see at all under `mask`; every tile
/// outside is fully masked and skipped. Inside, a tile is partially masked (per-element mask needed)
/// unless every row sees every key of it.
pub fn kv_tile_range(
    mask: Mask,
    i0: usize,
    i1: usize,
    nq: usize,
    nk: usize,
    bc: usize,
) -> (usize, usize) {
    let tc = nk.div_ceil(bc);
    let p = |i: usize| i as i64 + nk as i64 - nq as i64; // absolute position of query row i
    let mut last = tc;
    if mask.causal {
        // keys j <= p(i1 - 1) only: the tiles up to the one holding the last row's own position
        let reach = (p(i1 - 1) + 1).max(0) as usize;
        last = last.min(reach.div_ceil(bc));
    }
    let mut first = 0i64;
    if let Some(w) = mask.window_keys() {
        // keys j > p(i0) - W only: the first visible key is p(i0) - W + 1
        first = (p(i0) - w + 1).max(0) / bc as i64;
    }
    let first = (first.max(0) as usize).min(last);
    (first, last)
}

/// Does every row of `[i0, i1)` see every key of `[j0, j1)`? Then the tile needs no mask.
fn tile_fully_visible(
    mask: Mask,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
    nq: usize,
    nk: usize,
) -> bool {
    // Visibility is monotone along rows and keys, so the corners decide.
    mask.visible(i0, j1 - 1, nq, nk) && mask.visible(i1 - 1, j0, nq, nk)
}
// ANCHOR_END: tile_range

/// Version 3, tiled FlashAttention, with this machine's tile sizes and instruction set.
pub fn v3_tiled<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
    o: &mut [T],
) -> Result<(), FlashError> {
    tiled(
        q,
        k,
        v,
        s,
        mask,
        o,
        Tiles::for_call(s.d, mask),
        Isa::detect(),
        &NoCount,
    )
}

// ANCHOR: tiled
/// Tiled FlashAttention forward with explicit tiles, instruction set and traffic counter.
///
/// For each (batch, head, query tile) in parallel:
/// load the Q tile once; for each key tile the mask does not hide entirely, load K (transposed, and
/// scaled by `log2(e) / sqrt(D)` so the kernels can use `2^x`) and V, and run one step of the online
/// softmax (`S = Q K^T`, `m, l, P`, `O = alpha O + P V`); finally `O / l`, stored once. f32 inputs are
/// read in place and f32 outputs accumulated in place: no copy of Q or O.
#[allow(clippy::too_many_arguments)]
pub fn tiled<T: Element, C: Traffic>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
    o: &mut [T],
    tiles: Tiles,
    isa: Isa,
    traffic: &C,
) -> Result<(), FlashError> {
    check(s, q, k, v, o.len())?;
    let Tiles { br, bc } = tiles;
    if br == 0 || bc == 0 {
        return Err(FlashError::ZeroTile { br, bc });
    }
    let (d, e) = (s.d, T::DTYPE.bytes());
    let kscale = std::f32::consts::LOG2_E / (d as f32).sqrt(); // K carries the softmax's scale
    let tr = s.nq.div_ceil(br);
    // Work items: one per (batch, head, query tile); each owns a disjoint slice of `o`.
    let mut items: Vec<(usize, usize, usize, &mut [T])> = Vec::with_capacity(s.b * s.hq * tr);
    for (bh, o_head) in o.chunks_mut(s.nq * d).enumerate() {
        for (t, o_tile) in o_head.chunks_mut(br * d).enumerate() {
            items.push((bh / s.hq, bh % s.hq, t, o_tile));
        }
    }
    // Fast memory, all f32: allocated once per rayon job (`for_each_init`), not per work item (at
    // N = 64 the allocations and their zeroing were a visible share of the time), sized for the rows a
    // tile really has, and jobs of several items each so that rayon's splitting does not undo it. Not
    // too many: about 16 jobs a thread, so that when one core is slowed (a shared machine), the other
    // takes over its queue in small steps (with 4 a thread, a run could end with one core alone on a
    // long job).
    let (rmax, cmax) = (br.min(s.nq), bc.min(s.nk));
    let scratch = || {
        let z = |n: usize| vec![0.0f32; n];
        (
            z(rmax * d),
            z(d * cmax),
            z(cmax * d),
            z(cmax * d),
            z(rmax * cmax),
            z(rmax * d),
            z(rmax),
            z(rmax * kernels::L),
        )
    };
    let per_job = (items.len() / (16 * rayon::current_num_threads())).max(1);
    items
        .into_par_iter()
        .with_min_len(per_job)
        .for_each_init(scratch, |scr, (b, h, t, o_tile)| {
            let hk = h / s.group();
            let (i0, i1) = (t * br, (t * br + br).min(s.nq));
            let rows = i1 - i0;
            // The Q tile, K transposed, V, K widened (half types, before the transpose), scores, the
            // output accumulator (half types only: f32 accumulates in the output itself) and the rows'
            // running state.
            let (qt, kt, vt, kwide, st, acc_buf, m, l) = scr;
            let (m, l) = (&mut m[..rows], &mut l[..rows * kernels::L]);
            m.fill(f32::NEG_INFINITY);
            l.fill(0.0);
            // Load Q tile: rows x D elements, once (f32 is read in place; the half types widened).
            let qtile = T::view_f32(&q[s.q_row(b, h, i0)..][..rows * d], qt);
            traffic.load(rows * d * e);
            let (first, last) = kv_tile_range(mask, i0, i1, s.nq, s.nk, bc);
            let tc = s.nk.div_ceil(bc);
            for _ in (0..first).chain(last..tc) {
                traffic.tile(false);
            }
            let mut run = |acc: &mut [f32]| {
                acc.fill(0.0);
                for jt in first..last {
                    let (j0, j1) = (jt * bc, (jt * bc + bc).min(s.nk));
                    let cols = j1 - j0;
                    // Load K tile transposed (D x cols), scaled by `kscale` on the way, and V tile
                    // (cols x D); f32 inputs are read in place (a copy into a tile cost time even at
                    // N = 2048), the half types widened first.
                    let krows = T::view_f32(&k[s.kv_row(b, hk, j0)..][..cols * d], kwide);
                    kernels::transpose(isa, krows, cols, d, &mut kt[..d * cols], kscale);
                    let vtile = T::view_f32(&v[s.kv_row(b, hk, j0)..][..cols * d], vt);
                    traffic.load(2 * cols * d * e);
                    traffic.tile(true);
                    // Row r's visible keys, as columns of this tile.
                    let range = |r: usize| {
                        let (lo, hi) = visible_keys(mask, i0 + r, s.nq, s.nk);
                        let col = |j: i64| (j - j0 as i64).clamp(0, cols as i64) as usize;
                        (col(lo), col(hi))
                    };
                    let partial = !tile_fully_visible(mask, i0, i1, j0, j1, s.nq, s.nk);
                    let mut tile = kernels::Tile {
                        q: qtile,
                        kt: &kt[..d * cols],
                        v: vtile,
                        s: &mut st[..rows * cols],
                        m: &mut *m,
                        l: &mut *l,
                        o: &mut *acc,
                        br: rows,
                        bc: cols,
                        d,
                    };
                    kernels::step(
                        isa,
                        &mut tile,
                        partial.then_some(&range as kernels::RowRange),
                    );
                }
                // O = acc / l, once; a row that saw no key stays zero.
                kernels::normalise_rows(acc, l, d);
            };
            match T::as_f32_mut(o_tile) {
                Some(o) => run(o),
                None => {
                    let acc = &mut acc_buf[..rows * d];
                    run(acc);
                    T::narrow_from(acc, o_tile); // rounded to T once
                }
            }
            traffic.store(rows * d * e);
        });
    Ok(())
}
// ANCHOR_END: tiled

/// The progression, by name, for benches and harnesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// [`v1_naive`].
    V1Naive,
    /// [`v1b_naive_blocked`].
    V1bNaiveBlocked,
    /// [`v2_online`].
    V2Online,
    /// [`v3_tiled`].
    V3Tiled,
}

impl Version {
    /// Every version, in order.
    pub const ALL: [Version; 4] = [
        Version::V1Naive,
        Version::V1bNaiveBlocked,
        Version::V2Online,
        Version::V3Tiled,
    ];

    /// The record name, `v1_naive` ...
    pub fn name(self) -> &'static str {
        match self {
            Version::V1Naive => "v1_naive",
            Version::V1bNaiveBlocked => "v1b_naive_blocked",
            Version::V2Online => "v2_online",
            Version::V3Tiled => "v3_tiled",
        }
    }

    /// Run this version.
    pub fn run<T: Element>(
        self,
        q: &[T],
        k: &[T],
        v: &[T],
        s: &AttnShape,
        mask: Mask,
        o: &mut [T],
    ) -> Result<(), FlashError> {
        match self {
            Version::V1Naive => v1_naive(q, k, v, s, mask, o),
            Version::V1bNaiveBlocked => v1b_naive_blocked(q, k, v, s, mask, o),
            Version::V2Online => v2_online(q, k, v, s, mask, o),
            Version::V3Tiled => v3_tiled(q, k, v, s, mask, o),
        }
    }
}

/// The fastest version: the entry point the rest of the crate calls.
pub fn flash_forward<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
    o: &mut [T],
) -> Result<(), FlashError> {
    v3_tiled(q, k, v, s, mask, o)
}
