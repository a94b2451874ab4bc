//! Paged attention on the CPU: attention whose K and V are read through a block table.
//!
//! Shapes: the cache is a pool of blocks, `k_cache, v_cache: (num_blocks, Hkv, B, D)` row-major (vLLM's V
//! layout without its `x`-interleaving of K); sequence `s` has `seq_lens[s]` tokens, token `t` in block
//! `tables[s][t / B]` at row `t % B`. Queries are `q: (S, Hq, Nq, D)` (`Nq = 1` for decode), output the same;
//! query row `i` sits at position `i + len - Nq` (the last `Nq` tokens, as in [`crate::minimodel::shape`]),
//! and masks apply as there. Query head `h` reads kv head `h / (Hq / Hkv)`; the `G = Hq / Hkv` heads of a
//! group are computed together, so each K and V block is read once per group, not once per head.
//!
//! The structure is vLLM's kernel (`csrc/attention/attention_kernels.cuh` at v0.11.0, see the research
//! note section 4), where the GPU has a thread block per (sequence, kv head): a CPU task walks one
//! sequence's blocks in logical order, `physical = table[i]`, and keeps the online-softmax state
//! `(m, l, o)` of Theory 01 per query head, updated once per block. A decode task takes all of its
//! sequence's kv heads (fewer when sequences are scarcer than threads) and reads each block's heads back
//! to back, one run of the pool; prefill and the partitioned decode keep a task per kv head. Only the first
//! `ceil(len / B)` table entries are read, and only the `len % B` valid rows of the last block, so
//! whatever sits in the rest of the pool (even NaN) never reaches the output.
//!
//! [`paged_decode_partitioned`] is PagedAttention V2: the keys are split into partitions of `P` tokens
//! (a multiple of `B`; vLLM uses 512), each partition is an independent task that writes its normalised
//! output with its `max_logit` and `exp_sum`, and a reduce merges them by the log-sum-exp, exactly
//! [`crate::minimodel::softmax::AttentionRow::merge`]: `M = max_p m_p`, `w_p = l_p e^(m_p - M)`,
//! `out = sum_p w_p out_p / sum_p w_p`.

use super::block_manager::BlockId;
use crate::minimodel::attention_flash::kernels::{self, Isa};
use crate::minimodel::numeric::Element;
use crate::minimodel::shape::{AttnShape, Mask, ShapeError};
use crate::roofline::traffic::visible_keys;
use rayon::prelude::*;
use std::sync::{Mutex, PoisonError};
use thiserror::Error;

/// `Some($run!(E))` with `E` the element type `$t` is among those the in-place loop reads (f32, f16, bf16),
/// `None` for any other: the one place where generic code picks the loop written per element type.
#[cfg(target_arch = "x86_64")]
macro_rules! with_lanes {
    ($t:ty, $run:ident) => {{
        let t = std::any::TypeId::of::<$t>();
        if t == std::any::TypeId::of::<f32>() {
            Some($run!(f32))
        } else if t == std::any::TypeId::of::<half::f16>() {
            Some($run!(half::f16))
        } else if t == std::any::TypeId::of::<half::bf16>() {
            Some($run!(half::bf16))
        } else {
            None
        }
    }};
}

/// Why a paged attention call was refused. Nothing was written to the output when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PagedError {
    /// Heads or head size are invalid.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The pool's slices do not match `(num_blocks, Hkv, B, D)`.
    #[error("{tensor} cache has {got} elements, (num_blocks={num_blocks}, Hkv={hkv}, B={block_size}, D={d}) needs {expected}")]
    PoolLength {
        /// `"k"` or `"v"`.
        tensor: &'static str,
        /// Blocks in the pool.
        num_blocks: usize,
        /// Key/value heads.
        hkv: usize,
        /// Tokens per block.
        block_size: usize,
        /// Head size.
        d: usize,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A block size of zero.
    #[error("the block size must be at least 1")]
    ZeroBlockSize,
    /// There must be one block table and one length per sequence, and at least one sequence.
    #[error("{tables} block tables, {lens} sequence lengths: need the same number, at least one")]
    BatchMismatch {
        /// Tables given.
        tables: usize,
        /// Lengths given.
        lens: usize,
    },
    /// A sequence with no tokens has nothing to attend to.
    #[error("sequence {seq} has length 0")]
    EmptySequence {
        /// The sequence's index in the batch.
        seq: usize,
    },
    /// A table with fewer entries than its sequence's length needs.
    #[error("sequence {seq} has {len} tokens, needing {need} table entries; its table has {have}")]
    TableTooShort {
        /// The sequence's index.
        seq: usize,
        /// Its length.
        len: usize,
        /// Entries needed, `ceil(len / B)`.
        need: usize,
        /// Entries given.
        have: usize,
    },
    /// A table entry past the end of the pool.
    #[error("sequence {seq}'s table entry {index} names block {block}, the pool has {num_blocks}")]
    BlockOutOfRange {
        /// The sequence's index.
        seq: usize,
        /// The logical block.
        index: usize,
        /// The physical block named.
        block: BlockId,
        /// Blocks in the pool.
        num_blocks: usize,
    },
    /// `q` or `o` does not have `S * Hq * Nq * D` elements.
    #[error("{tensor} has {got} elements, (S, Hq, Nq, D) needs {expected}")]
    QueryLength {
        /// `"q"` or `"o"`.
        tensor: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A partition must hold a whole number of blocks (at least one).
    #[error(
        "partition size {partition} is not a positive multiple of the block size {block_size}"
    )]
    BadPartition {
        /// Tokens per partition.
        partition: usize,
        /// Tokens per block.
        block_size: usize,
    },
}

/// A paged K/V pool: `k, v: (num_blocks, Hkv, B, D)`.
#[derive(Debug, Clone, Copy)]
pub struct PagedKv<'a, T> {
    k: &'a [T],
    v: &'a [T],
    num_blocks: usize,
    hkv: usize,
    block_size: usize,
    d: usize,
}

impl<'a, T: Element> PagedKv<'a, T> {
    /// Check the slices against `(num_blocks, Hkv, B, D)`.
    pub fn new(
        k: &'a [T],
        v: &'a [T],
        num_blocks: usize,
        hkv: usize,
        block_size: usize,
        d: usize,
    ) -> Result<Self, PagedError> {
        if block_size == 0 {
            return Err(PagedError::ZeroBlockSize);
        }
        for (dim, x) in [("Hkv", hkv), ("D", d)] {
            if x == 0 {
                return Err(ShapeError::ZeroDim { dim }.into());
            }
        }
        // A product past usize (which no slice can hold) is refused as a length no slice has.
        let expected = [hkv, block_size, d]
            .iter()
            .try_fold(num_blocks, |n, &x| n.checked_mul(x));
        for (tensor, got) in [("k", k.len()), ("v", v.len())] {
            if Some(got) != expected {
                let expected = expected.unwrap_or(usize::MAX);
                return Err(PagedError::PoolLength {
                    tensor,
                    num_blocks,
                    hkv,
                    block_size,
                    d,
                    expected,
                    got,
                });
            }
        }
        Ok(Self {
            k,
            v,
            num_blocks,
            hkv,
            block_size,
            d,
        })
    }

    /// The K pool, `(num_blocks, Hkv, B, D)`.
    pub fn k(&self) -> &'a [T] {
        self.k
    }

    /// The V pool, `(num_blocks, Hkv, B, D)`.
    pub fn v(&self) -> &'a [T] {
        self.v
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Key/value heads.
    pub fn hkv(&self) -> usize {
        self.hkv
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Head size.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Offset of row `row` of kv head `h` of physical block `block`.
    pub fn offset(&self, block: BlockId, h: usize, row: usize) -> usize {
        ((block * self.hkv + h) * self.block_size + row) * self.d
    }
}

/// The sequences of a batch: one block table and one length each.
#[derive(Debug, Clone, Copy)]
pub struct PagedBatch<'a> {
    /// Physical block of each logical block, per sequence.
    pub tables: &'a [Vec<BlockId>],
    /// Tokens per sequence.
    pub seq_lens: &'a [usize],
}

/// Validate a call; returns the group size `G`.
fn validate<T: Element>(
    q: usize,
    o: usize,
    hq: usize,
    nq: usize,
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
) -> Result<usize, PagedError> {
    let (tables, lens) = (batch.tables, batch.seq_lens);
    if tables.len() != lens.len() || tables.is_empty() {
        return Err(PagedError::BatchMismatch {
            tables: tables.len(),
            lens: lens.len(),
        });
    }
    // Reuse the shape checks (Hq, Hkv, Nq, D at least 1; Hkv divides Hq) with a stand-in Nk.
    let s = AttnShape::new(lens.len(), hq, kv.hkv, nq, 1, kv.d)?;
    for (tensor, got) in [("q", q), ("o", o)] {
        if got != s.q_len() {
            return Err(PagedError::QueryLength {
                tensor,
                expected: s.q_len(),
                got,
            });
        }
    }
    check_tables(kv.num_blocks, kv.block_size, batch)?;
    Ok(s.group())
}

/// Check a batch's tables against a pool of `num_blocks` blocks of `block_size` tokens: one table and
/// one non-zero length per sequence, at least `ceil(len / B)` entries each, every entry read in range.
/// The GPU wrappers call it before uploading a table, so a kernel never follows a bad entry.
pub fn check_tables(
    num_blocks: usize,
    block_size: usize,
    batch: &PagedBatch<'_>,
) -> Result<(), PagedError> {
    let (tables, lens) = (batch.tables, batch.seq_lens);
    if block_size == 0 {
        return Err(PagedError::ZeroBlockSize);
    }
    if tables.len() != lens.len() || tables.is_empty() {
        return Err(PagedError::BatchMismatch {
            tables: tables.len(),
            lens: lens.len(),
        });
    }
    for (seq, (table, &len)) in tables.iter().zip(lens).enumerate() {
        if len == 0 {
            return Err(PagedError::EmptySequence { seq });
        }
        let need = len.div_ceil(block_size);
        if table.len() < need {
            return Err(PagedError::TableTooShort {
                seq,
                len,
                need,
                have: table.len(),
            });
        }
        if let Some(index) = table[..need].iter().position(|&b| b >= num_blocks) {
            return Err(PagedError::BlockOutOfRange {
                seq,
                index,
                block: table[index],
                num_blocks,
            });
        }
    }
    Ok(())
}

/// Keys gathered into one tile before a tile step of the portable path: whole blocks, up to 64 rows (the
/// tiled kernel's `Bc`) and 16 KB of f32 a tile (K, V and K transposed then fit a 48 KB L1), or one block
/// where a block is longer.
fn tile_rows(bs: usize, d: usize) -> usize {
    ((4096 / d).min(64) / bs).max(1) * bs
}

/// The running state of `G` query rows (one per head of a group) against the keys seen so far: the
/// rows of a tile of the tiled kernel ([`kernels::Tile`]), with scores in base 2.
struct GroupState {
    isa: Isa,
    /// The in-place loop reads each block where it lies ([`super::decode_simd`]); otherwise blocks are gathered
    /// into f32 tiles for the tiled kernel's step.
    direct: bool,
    /// The in-place loop 16 lanes at a time (AVX-512F, `D` a multiple of 16) rather than 8.
    wide: bool,
    /// Queries widened to f32: `(G, D)` (times `log2(e) / sqrt(D)` when `direct`).
    q: Vec<f32>,
    /// Running max per row, in log2 units.
    m: Vec<f32>,
    /// Running normaliser per row, `kernels::L` partial sums a row.
    l: Vec<f32>,
    /// Un-normalised output per row: `(G, D)`.
    acc: Vec<f32>,
    /// Scores of one tile (or block): `(G, rows)`.
    s: Vec<f32>,
    /// Portable path: one tile of K and V widened to f32, `(rows, D)` each, the rows gathered so far,
    /// and K transposed and scaled, `(D, rows)`.
    kf: Vec<f32>,
    vf: Vec<f32>,
    filled: usize,
    kt: Vec<f32>,
}

impl GroupState {
    fn new<T: Element>(q: &[T], g: usize, d: usize, bs: usize) -> Self {
        let isa = Isa::detect();
        Self::on_path(q, g, d, bs, isa, direct_for::<T>(isa, d))
    }

    /// [`GroupState::new`] on the path asked for (`direct` only where [`direct_for`] allows it).
    fn on_path<T: Element>(q: &[T], g: usize, d: usize, bs: usize, isa: Isa, direct: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        let chunk = super::decode_simd::CHUNK;
        #[cfg(not(target_arch = "x86_64"))]
        let chunk = bs;
        let rows = if direct {
            bs.min(chunk).next_multiple_of(8)
        } else {
            tile_rows(bs, d)
        };
        let tile = if direct { 0 } else { rows * d };
        let scale = if direct {
            std::f32::consts::LOG2_E / (d as f32).sqrt()
        } else {
            1.0
        };
        Self {
            isa,
            direct,
            wide: direct && wide_for(isa, d),
            q: {
                let mut qf = vec![0.0; g * d];
                T::widen_into(&q[..g * d], &mut qf);
                qf.iter_mut().for_each(|x| *x *= scale);
                qf
            },
            m: vec![f32::NEG_INFINITY; g],
            l: vec![0.0; g * kernels::L],
            acc: vec![0.0; g * d],
            s: vec![0.0; g * rows],
            kf: vec![0.0; tile],
            vf: vec![0.0; tile],
            filled: 0,
            kt: vec![0.0; tile],
        }
    }

    // ANCHOR: block_update
    /// Absorb `n` keys (rows of one block: `k`, `v` hold `n D` elements each) for every row of the
    /// group; `ahead` holds the next block's rows, for the in-place loop to ask for early. The portable
    /// path gathers whole blocks into a tile and steps once the next block would not fit
    /// ([`GroupState::flush`] steps on the rest).
    fn absorb<T: Element>(&mut self, k: &[T], v: &[T], n: usize, ahead: Option<(&[T], &[T])>) {
        if self.direct {
            return self.absorb_in_place(k, v, n, ahead); // the rows read where they lie
        }
        let d = self.acc.len() / self.m.len();
        if (self.filled + n) * d > self.kf.len() {
            self.flush(); // no room for this block: one tile step on those gathered
        }
        let rows = self.filled * d..(self.filled + n) * d;
        T::widen_into(&k[..n * d], &mut self.kf[rows.clone()]);
        T::widen_into(&v[..n * d], &mut self.vf[rows]);
        self.filled += n;
    }

    /// Portable path: the tiled kernel's step on the rows gathered: K transposed and scaled by
    /// `log2(e) / sqrt(D)`, then `S = q K^T`; `m' = max(m, rowmax S)`;
    /// `l = 2^(m - m') l + sum 2^(S - m')`; `o = 2^(m - m') o + P V`.
    fn flush(&mut self) {
        let (g, n) = (self.m.len(), self.filled);
        if n == 0 {
            return;
        }
        let d = self.acc.len() / g;
        let scale = std::f32::consts::LOG2_E / (d as f32).sqrt();
        kernels::transpose(self.isa, &self.kf, n, d, &mut self.kt[..d * n], scale);
        let mut tile = kernels::Tile {
            q: &self.q,
            kt: &self.kt[..d * n],
            v: &self.vf[..n * d],
            s: &mut self.s[..g * n],
            m: &mut self.m,
            l: &mut self.l,
            o: &mut self.acc,
            br: g,
            bc: n,
            d,
        };
        kernels::step(self.isa, &mut tile, None);
        self.filled = 0;
    }
    // ANCHOR_END: block_update

    /// [`super::decode_simd::absorb`] on this group's state, for the element type `T` is.
    fn absorb_in_place<T: Element>(
        &mut self,
        k: &[T],
        v: &[T],
        n: usize,
        ahead: Option<(&[T], &[T])>,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            use super::decode_simd::{absorb, Ahead};
            let d = self.acc.len() / self.m.len();
            let st = self;
            macro_rules! run {
                ($e:ty) => {{
                    let ahead = ahead.map(|(ka, va)| Ahead::<$e> {
                        k: cast::<T, $e>(ka).as_ptr(),
                        v: cast::<T, $e>(va).as_ptr(),
                        rows: ka.len().min(va.len()) / d,
                    });
                    // SAFETY: `direct` only where `decode_simd::available()` and D % 8 == 0; the
                    // slices hold `n D` elements (the walks cut them so), `ahead` its rows.
                    unsafe {
                        absorb::<$e>(
                            st.wide,
                            &st.q,
                            cast::<T, $e>(k),
                            cast::<T, $e>(v),
                            n,
                            d,
                            &mut st.m,
                            &mut st.l,
                            &mut st.acc,
                            &mut st.s,
                            ahead,
                        )
                    }
                }};
            }
            with_lanes!(T, run).expect("`direct` only for f32, f16 and bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (k, v, n, ahead);
            unreachable!("`direct` is false off x86-64");
        }
    }

    /// Row `r`'s softmax denominator, `sum_j 2^(s_j - m)` over the keys seen.
    fn sum(&self, r: usize) -> f32 {
        kernels::row_sum(&self.l[r * kernels::L..][..kernels::L])
    }
}

/// `x` as a slice of `E`, where `T` is `E` (the same `TypeId`; anything else panics): how the generic
/// walk hands its rows to the in-place loop, which is written per element type.
fn cast<T: 'static, E: 'static>(x: &[T]) -> &[E] {
    assert_eq!(std::any::TypeId::of::<T>(), std::any::TypeId::of::<E>());
    // SAFETY: T and E are the same type.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

/// Whether the in-place loop runs 16 lanes at a time for instruction set `isa` at head size `d`: AVX-512F
/// present and asked for, `D` a multiple of 16.
fn wide_for(isa: Isa, d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa == Isa::Avx512 && d.is_multiple_of(16) && super::decode_simd::wide_available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, d);
        false
    }
}

/// Whether decode of element `T` at head size `d` takes the in-place loop on this CPU.
fn direct_for<T: Element>(isa: Isa, d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! unit {
            ($e:ty) => {
                ()
            };
        }
        let typed = with_lanes!(T, unit).is_some();
        isa != Isa::Portable && typed && d.is_multiple_of(8) && super::decode_simd::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, d);
        false
    }
}

/// Kv head `h`'s rows `[lo, hi)` of a walk's current block, `n` of them in each of K and V, and the same
/// head's rows of the next block (if the walk goes on), whose address the walk knows before any hardware
/// could guess it.
type Visit<'a, T> = (usize, &'a [T], &'a [T], usize, Option<(&'a [T], &'a [T])>);

// ANCHOR: paged_walk
/// Walk keys `[lo, hi)` of one sequence through its block table, block by block, and in each block the
/// kv heads `heads` back to back: logical block `i` is physical block `table[i]`, whose kv head `h` has
/// its rows at `kv.offset(table[i], h, 0)`, right after head `h - 1`'s. `visit` receives each head's
/// rows of the block inside the range with that head's rows of the next block.
fn walk_table<'a, T: Element>(
    kv: &PagedKv<'a, T>,
    table: &[BlockId],
    heads: std::ops::Range<usize>,
    (lo, hi): (usize, usize),
    mut visit: impl FnMut(Visit<'a, T>),
) {
    let (bs, d) = (kv.block_size, kv.d);
    let (k, v) = (kv.k, kv.v);
    let rows = |i: usize, h: usize, r0: usize, n: usize| {
        let at = kv.offset(table[i], h, r0);
        (&k[at..at + n * d], &v[at..at + n * d])
    };
    let mut t = lo;
    while t < hi {
        let (i, r0) = (t / bs, t % bs);
        let n = (bs - r0).min(hi - t); // rows of this block inside [lo, hi)
        let next = t + n;
        for h in heads.clone() {
            let ahead = (next < hi).then(|| rows(i + 1, h, 0, bs.min(hi - next)));
            let (kb, vb) = rows(i, h, r0, n);
            visit((h, kb, vb, n, ahead));
        }
        t = next;
    }
}
// ANCHOR_END: paged_walk

/// The same walk over a contiguous `(Nk, D)` K and V of one (sequence, kv head), in blocks of `bs`
/// rows: the baseline paged decoding is timed against (the same calls, the same prefetches).
fn walk_contiguous<'a, T: Element>(
    k: &'a [T],
    v: &'a [T],
    bs: usize,
    d: usize,
    (lo, hi): (usize, usize),
    mut visit: impl FnMut(Visit<'a, T>),
) {
    let rows = |t: usize, n: usize| (&k[t * d..(t + n) * d], &v[t * d..(t + n) * d]);
    let mut t = lo;
    while t < hi {
        let n = (bs - t % bs).min(hi - t);
        let next = t + n;
        let ahead = (next < hi).then(|| rows(next, bs.min(hi - next)));
        let (kb, vb) = rows(t, n);
        visit((0, kb, vb, n, ahead)); // one head: its index is the caller's
        t = next;
    }
}

impl GroupState {
    /// Attend to keys `[lo, hi)` of one sequence through its block table (kv head `h`).
    fn attend_table<T: Element>(
        &mut self,
        kv: &PagedKv<'_, T>,
        table: &[BlockId],
        h: usize,
        (lo, hi): (usize, usize),
    ) {
        walk_table(kv, table, h..h + 1, (lo, hi), |(_, k, v, n, ahead)| {
            self.absorb(k, v, n, ahead)
        });
        self.flush();
    }
}

/// Read every K and V row a decode of `batch` would read, through the tables, with the decode's
/// prefetches but none of its arithmetic (a sum of the rows, so the reads cannot be dropped): what
/// the access pattern alone costs. The tasks of [`paged_decode`].
pub fn read_pass<T: Element>(
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
) -> Result<f32, PagedError> {
    check_tables(kv.num_blocks, kv.block_size, batch)?;
    let seqs = batch.tables.len();
    let per = heads_per_task(seqs, kv.hkv);
    Ok((0..seqs * kv.hkv / per)
        .into_par_iter()
        .map(|task| {
            let (seq, h0) = (task * per / kv.hkv, task * per % kv.hkv);
            let mut sum = 0.0;
            let range = (0, batch.seq_lens[seq]);
            walk_table(
                kv,
                &batch.tables[seq],
                h0..h0 + per,
                range,
                |(_, k, v, _, ahead)| sum += read_rows(k, v, ahead),
            );
            sum
        })
        .sum())
}

/// [`read_pass`] over contiguous `k, v: (S, Hkv, Nk, D)` (shape `s`), in blocks of `bs` rows.
pub fn read_pass_contiguous<T: Element>(
    k: &[T],
    v: &[T],
    s: &AttnShape,
    bs: usize,
) -> Result<f32, PagedError> {
    if bs == 0 {
        return Err(PagedError::ZeroBlockSize);
    }
    s.check_inputs(s.q_len(), k.len(), v.len())?;
    let (d, n) = (s.d, s.nk);
    Ok((0..s.b * s.hkv)
        .into_par_iter()
        .map(|task| {
            let at = s.kv_row(task / s.hkv, task % s.hkv, 0);
            let (k, v) = (&k[at..at + n * d], &v[at..at + n * d]);
            let mut sum = 0.0;
            walk_contiguous(k, v, bs.max(1), d, (0, n), |(_, k, v, _, ahead)| {
                sum += read_rows(k, v, ahead)
            });
            sum
        })
        .sum())
}

/// [`read_pass`] in the order of [`paged_decode_pool_order`]: the same runs of the pool, each read in
/// address order with the same prefetches, summing the rows.
pub fn read_pass_pool_order<T: Element>(
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
) -> Result<f32, PagedError> {
    check_tables(kv.num_blocks, kv.block_size, batch)?;
    let (start, uses, cuts) = pool_plan(kv, batch, Mask::NONE);
    Ok(cuts
        .par_windows(2)
        .map(|run| {
            let mut sum = 0.0;
            walk_pool(
                kv,
                (&start, &uses),
                (run[0], run[1]),
                |(_, _, k, v, ahead)| sum += read_rows(k, v, ahead),
            );
            sum
        })
        .sum())
}

/// The sum of one block's K and V rows (AVX2 with the decode's prefetches where the decode uses them).
fn read_rows<T: Element>(k: &[T], v: &[T], ahead: Option<(&[T], &[T])>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::decode_simd::available() {
        use super::decode_simd::sum_rows;
        macro_rules! run {
            ($e:ty) => {
                // SAFETY: AVX2 and F16C are present (`available`); `cast` checked the type.
                unsafe { sum_rows::<$e>(cast(k), cast(v), ahead.map(|(a, b)| (cast(a), cast(b)))) }
            };
        }
        if let Some(sum) = with_lanes!(T, run) {
            return sum;
        }
    }
    let _ = ahead;
    k.iter().chain(v).map(|x| x.to_f32()).sum()
}

/// Write the finished rows `acc / l` (zeros where a row saw no key) into `o`, one row per head, at stride
/// `stride`: each row normalised in place, then rounded into `o` in one vectorised conversion (the state
/// is spent).
fn finish<T: Element>(st: &mut GroupState, o: &mut [T], d: usize, stride: usize) {
    for r in 0..st.m.len() {
        let l = st.sum(r);
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        let row = &mut st.acc[r * d..][..d];
        row.iter_mut().for_each(|a| *a *= inv);
        T::narrow_from(row, &mut o[r * stride..][..d]);
    }
}

/// The keys query row `i` of `nq` may see in a sequence of `len` tokens, as `[lo, hi)`.
fn key_range(mask: Mask, i: usize, nq: usize, len: usize) -> (usize, usize) {
    let (lo, hi) = visible_keys(mask, i, nq, len);
    (lo.max(0) as usize, (hi.max(lo)) as usize)
}

// ANCHOR: paged_prefill
/// Paged attention for `Nq` query rows per sequence (prefill, or chunked prefill): `q, o: (S, Hq, Nq, D)`.
pub fn paged_attention<T: Element>(
    q: &[T],
    hq: usize,
    nq: usize,
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
    mask: Mask,
    o: &mut [T],
) -> Result<(), PagedError> {
    let g = validate(q.len(), o.len(), hq, nq, kv, batch)?;
    let (d, bs, hkv) = (kv.d, kv.block_size, kv.hkv);
    let head = nq * d; // one query head's rows

    // One task per (sequence, kv head): its G query heads are contiguous in q and o.
    o.par_chunks_mut(g * head)
        .zip(q.par_chunks(g * head))
        .enumerate()
        .for_each(|(task, (o, q))| {
            let (seq, h) = (task / hkv, task % hkv);
            let len = batch.seq_lens[seq];
            let table = &batch.tables[seq];
            let mut rows: Vec<T> = Vec::with_capacity(g * d);
            for i in 0..nq {
                rows.clear();
                for r in 0..g {
                    rows.extend_from_slice(&q[r * head + i * d..][..d]);
                }
                let mut st = GroupState::new(&rows, g, d, bs);
                let (lo, hi) = key_range(mask, i, nq, len);
                st.attend_table(kv, table, h, (lo, hi));
                finish(&mut st, &mut o[i * d..], d, head);
            }
        });
    Ok(())
}
// ANCHOR_END: paged_prefill

/// Kv heads per decode task over `seqs` sequences of `hkv` kv heads: all of a sequence's (its walk then
/// reads each block whole, one run of the pool), halved while that leaves fewer than two tasks per
/// worker thread (a batch of one sequence still spreads over the machine).
fn heads_per_task(seqs: usize, hkv: usize) -> usize {
    let want = 2 * rayon::current_num_threads();
    let mut per = hkv.max(1);
    while per.is_multiple_of(2) && seqs * (hkv / per) < want {
        per /= 2;
    }
    per
}

// ANCHOR: paged_decode
/// Paged decode (vLLM's PagedAttention V1): one query token per sequence, `q, o: (S, Hq, D)`, attending
/// to every stored key of its sequence (or the last `W` under a window mask). Shapes, tables and lengths
/// are checked before anything runs; values are not: unlike the flash kernels' inputs, the pool is read
/// once per step and a scan for NaN would read it twice, so a non-finite key or value reaches (only) the
/// rows of the sequences that read it, as in vLLM.
pub fn paged_decode<T: Element>(
    q: &[T],
    hq: usize,
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
    mask: Mask,
    o: &mut [T],
) -> Result<(), PagedError> {
    let g = validate(q.len(), o.len(), hq, 1, kv, batch)?;
    let (d, bs, hkv) = (kv.d, kv.block_size, kv.hkv);
    // One task per sequence (or per few of its kv heads, when sequences are fewer than the threads):
    // its walk reads each block's kv heads back to back, one run of the pool.
    let per = heads_per_task(batch.seq_lens.len(), hkv);
    o.par_chunks_mut(per * g * d)
        .zip(q.par_chunks(per * g * d))
        .enumerate()
        .for_each(|(task, (o, q))| {
            let (seq, h0) = (task * per / hkv, task * per % hkv);
            let range = key_range(mask, 0, 1, batch.seq_lens[seq]);
            let mut groups: Vec<GroupState> = q
                .chunks(g * d)
                .map(|q| GroupState::new(q, g, d, bs))
                .collect();
            walk_table(
                kv,
                &batch.tables[seq],
                h0..h0 + per,
                range,
                |(h, k, v, n, ahead)| groups[h - h0].absorb(k, v, n, ahead),
            );
            for (st, o) in groups.iter_mut().zip(o.chunks_mut(g * d)) {
                st.flush();
                finish(st, o, d, d);
            }
        });
    Ok(())
}
// ANCHOR_END: paged_decode

/// One sequence's rows of a physical block, for the walk in pool order: `n` rows from row `r0`.
#[derive(Debug, Clone, Copy)]
struct BlockUse {
    seq: usize,
    r0: usize,
    n: usize,
}

/// Every physical block's uses by `batch` (the rows of it each sequence sees under `mask`), indexed by
/// block: `uses[start[b]..start[b + 1]]`. A block shared by several sequences (a forked prefix) has a
/// use for each; a block no sequence reads has none.
fn block_uses(
    num_blocks: usize,
    bs: usize,
    batch: &PagedBatch<'_>,
    mask: Mask,
) -> (Vec<usize>, Vec<BlockUse>) {
    // Each sequence's visible rows, block by block: counted per block, then placed (a counting sort).
    let each = |visit: &mut dyn FnMut(usize, BlockUse)| {
        for (seq, (table, &len)) in batch.tables.iter().zip(batch.seq_lens).enumerate() {
            let (lo, hi) = key_range(mask, 0, 1, len);
            let mut t = lo;
            while t < hi {
                let (i, r0) = (t / bs, t % bs);
                let n = (bs - r0).min(hi - t);
                visit(table[i], BlockUse { seq, r0, n });
                t += n;
            }
        }
    };
    let mut start = vec![0; num_blocks + 1];
    each(&mut |b, _| start[b + 1] += 1);
    for b in 0..num_blocks {
        start[b + 1] += start[b];
    }
    let mut fill = start.clone();
    let mut uses = vec![
        BlockUse {
            seq: 0,
            r0: 0,
            n: 0
        };
        start[num_blocks]
    ];
    each(&mut |b, u| {
        uses[fill[b]] = u;
        fill[b] += 1;
    });
    (start, uses)
}

/// Fold `other`'s keys into `st` (two states of the same query rows over disjoint keys): the larger
/// maximum wins and each side's sums and output are rescaled to it, as the partitions' reduce does.
fn merge_states(st: &mut GroupState, other: &mut GroupState) {
    st.flush();
    other.flush();
    let d = st.acc.len() / st.m.len();
    for r in 0..st.m.len() {
        let (ma, mb) = (st.m[r], other.m[r]);
        let m = ma.max(mb);
        if m == f32::NEG_INFINITY {
            continue; // neither side saw a key for this row
        }
        let (a, b) = ((ma - m).exp2(), (mb - m).exp2());
        let l = a * st.sum(r) + b * other.sum(r);
        let lanes = &mut st.l[r * kernels::L..][..kernels::L];
        lanes.fill(0.0);
        lanes[0] = l;
        for (x, y) in st.acc[r * d..][..d]
            .iter_mut()
            .zip(&other.acc[r * d..][..d])
        {
            *x = a * *x + b * y;
        }
        st.m[r] = m;
    }
}

/// Runs of the pool per worker thread in the pool-order walks: enough that a worker the machine slows
/// down leaves part of its share to the others (one run a worker was markedly slower in f16 at the stress
/// scale, Lab 03), few enough that each run is long.
const POOL_RUNS_PER_THREAD: usize = 8;

/// Cut physical blocks `[0, num_blocks)` into `runs` runs with about equal rows to read (uses indexed
/// as [`block_uses`] returns them): the runs' bounds, `runs + 1` of them.
fn pool_runs(start: &[usize], uses: &[BlockUse], runs: usize) -> Vec<usize> {
    let num_blocks = start.len() - 1;
    let total: usize = uses.iter().map(|u| u.n).sum();
    let mut cuts = vec![0];
    let mut acc = 0;
    for b in 0..num_blocks {
        acc += uses[start[b]..start[b + 1]]
            .iter()
            .map(|u| u.n)
            .sum::<usize>();
        if acc * runs >= total * cuts.len() && cuts.len() < runs {
            cuts.push(b + 1);
        }
    }
    cuts.push(num_blocks);
    cuts
}

/// The pool-order walks' plan: every block's uses ([`block_uses`]) and the bounds of the runs the pool
/// is cut into ([`pool_runs`], [`POOL_RUNS_PER_THREAD`] for each worker thread).
fn pool_plan<T: Element>(
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
    mask: Mask,
) -> (Vec<usize>, Vec<BlockUse>, Vec<usize>) {
    let (start, uses) = block_uses(kv.num_blocks, kv.block_size, batch, mask);
    let runs = POOL_RUNS_PER_THREAD * rayon::current_num_threads().max(1);
    let cuts = pool_runs(&start, &uses, runs);
    (start, uses, cuts)
}

/// A pool walk's visit: the use (whose rows), the kv head, its K and V rows, and the same head's rows
/// of the next block the walk reads.
type PoolVisit<'a, T> = (
    BlockUse,
    usize,
    &'a [T],
    &'a [T],
    Option<(&'a [T], &'a [T])>,
);

/// Walk physical blocks `[lo, hi)` in address order, skipping those no sequence reads: in each block
/// the kv heads back to back, and for each head every use of the block (a shared block is read once,
/// then served from cache to its other owners).
fn walk_pool<'a, T: Element>(
    kv: &PagedKv<'a, T>,
    (start, uses): (&[usize], &[BlockUse]),
    (lo, hi): (usize, usize),
    mut visit: impl FnMut(PoolVisit<'a, T>),
) {
    let (bs, d) = (kv.block_size, kv.d);
    let (k, v) = (kv.k, kv.v);
    let rows = |b: usize, h: usize, r0: usize, n: usize| {
        let at = kv.offset(b, h, r0);
        (&k[at..at + n * d], &v[at..at + n * d])
    };
    let mut next_owned = (lo..hi).filter(|&b| start[b] < start[b + 1]).peekable();
    while let Some(b) = next_owned.next() {
        let next = next_owned.peek().copied();
        for h in 0..kv.hkv {
            let ahead = next.map(|nb| rows(nb, h, 0, bs));
            for &u in &uses[start[b]..start[b + 1]] {
                let (kb, vb) = rows(b, h, u.r0, u.n);
                visit((u, h, kb, vb, ahead));
            }
        }
    }
}

// ANCHOR: pool_decode
/// Paged decode walking the pool instead of the tables: a decode's keys may be absorbed in any order
/// (the online softmax does not care), so the pool is cut into runs of physical blocks (several per
/// worker, taken as workers free up), each read in address order, each block's rows added to the
/// worker's state for whichever sequence owns them; then each sequence's partial states (one per
/// worker that met its blocks) merge as the partitions of [`paged_decode_partitioned`] do. The reads
/// are ascending sweeps of long runs of the pool whatever the tables say; a block shared by several
/// sequences is read once for all of them. Same arguments, same errors, and the same result as
/// [`paged_decode`] up to f32 rounding.
pub fn paged_decode_pool_order<T: Element>(
    q: &[T],
    hq: usize,
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
    mask: Mask,
    o: &mut [T],
) -> Result<(), PagedError> {
    let g = validate(q.len(), o.len(), hq, 1, kv, batch)?;
    let (d, bs, hkv, seqs) = (kv.d, kv.block_size, kv.hkv, batch.seq_lens.len());
    // Runs of the pool, several per worker thread, and a set of states per worker thread (a state per
    // (sequence, kv head) it meets), whichever runs that worker takes.
    let (start, uses, cuts) = pool_plan(kv, batch, mask);
    let threads = rayon::current_num_threads().max(1);
    let slots: Vec<Mutex<Vec<Option<GroupState>>>> = (0..threads)
        .map(|_| Mutex::new((0..seqs * hkv).map(|_| None).collect()))
        .collect();
    cuts.par_windows(2).for_each(|run| {
        // A worker locks only its own set, and holds it while it walks: never contended, as long as
        // the walk does not call into rayon (a run stolen meanwhile would wait on this same lock).
        let mine = rayon::current_thread_index().unwrap_or(0) % threads;
        let mut states = slots[mine].lock().unwrap_or_else(PoisonError::into_inner);
        walk_pool(
            kv,
            (&start, &uses),
            (run[0], run[1]),
            |(u, h, k, v, ahead)| {
                let st = states[u.seq * hkv + h].get_or_insert_with(|| {
                    GroupState::new(&q[(u.seq * hq + h * g) * d..][..g * d], g, d, bs)
                });
                st.absorb(k, v, u.n, ahead);
            },
        );
    });
    // Each (sequence, kv head): the partial states the workers hold for it, merged, then normalised
    // into its G rows of o. This is O(workers G D) a group against the walk's O(N G D): done here,
    // without a second parallel phase (which cost more than it saved at 64 tokens).
    let mut merged: Vec<Option<GroupState>> = (0..seqs * hkv).map(|_| None).collect();
    for set in slots {
        let set = set.into_inner().unwrap_or_else(PoisonError::into_inner);
        for (into, st) in merged.iter_mut().zip(set) {
            match (into.as_mut(), st) {
                (Some(into), Some(mut st)) => merge_states(into, &mut st),
                (None, st) => *into = st,
                (Some(_), None) => {}
            }
        }
    }
    for (st, o) in merged.iter_mut().zip(o.chunks_mut(g * d)) {
        match st {
            Some(st) => {
                st.flush();
                finish(st, o, d, d);
            }
            None => o.fill(T::from_f32(0.0)), // no key visible (cannot happen for len > 0)
        }
    }
    Ok(())
}
// ANCHOR_END: pool_decode

/// Contiguous decode with the same kernel: `q, o: (S, Hq, D)`, `k, v: (S, Hkv, Nk, D)` with `s.nq = 1`,
/// every sequence `Nk` long. The baseline for the cost of the block table's indirection.
pub fn contiguous_decode<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    bs: usize,
    o: &mut [T],
) -> Result<(), PagedError> {
    contiguous_decode_on(Isa::detect(), q, k, v, s, bs, o)
}

/// [`contiguous_decode`] as it runs on instruction set `isa` (`Isa::Avx2Fma` on an AVX-512 CPU: the 8-lane
/// loop), so that the two widths of the in-place loop can be timed side by side. An instruction set this
/// CPU lacks falls back to what it has.
pub fn contiguous_decode_on<T: Element>(
    isa: Isa,
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    bs: usize,
    o: &mut [T],
) -> Result<(), PagedError> {
    s.check_inputs(q.len(), k.len(), v.len())?;
    if s.nq != 1 || o.len() != s.q_len() {
        return Err(PagedError::QueryLength {
            tensor: if s.nq != 1 { "q" } else { "o" },
            expected: s.b * s.hq * s.d,
            got: if s.nq != 1 { q.len() } else { o.len() },
        });
    }
    if bs == 0 {
        return Err(PagedError::ZeroBlockSize);
    }
    let (g, d, n) = (s.group(), s.d, s.nk);
    o.par_chunks_mut(g * d)
        .zip(q.par_chunks(g * d))
        .enumerate()
        .for_each(|(task, (o, q))| {
            let (b, h) = (task / s.hkv, task % s.hkv);
            let at = s.kv_row(b, h, 0);
            let mut st = GroupState::on_path(q, g, d, bs, isa, direct_for::<T>(isa, d));
            let (k, v) = (&k[at..at + n * d], &v[at..at + n * d]);
            walk_contiguous(k, v, bs, d, (0, n), |(_, k, v, n, ahead)| {
                st.absorb(k, v, n, ahead)
            });
            st.flush();
            finish(&mut st, o, d, d);
        });
    Ok(())
}

/// One partition's result for one query head, as vLLM V2 stores it: the normalised partial output with
/// its `max_logit` and `exp_sum` (an empty partition has `exp_sum = 0`).
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// `m_p`: the largest score in the partition.
    pub max_logit: f32,
    /// `l_p = sum_j e^(s_j - m_p)` over the partition.
    pub exp_sum: f32,
    /// `sum_j e^(s_j - m_p) v_j / l_p`: `(D,)`.
    pub out: Vec<f32>,
}

// ANCHOR: v2_reduce
/// vLLM's `paged_attention_v2_reduce_kernel`: merge the partitions of one row by the log-sum-exp,
/// `M = max m_p`, `w_p = l_p e^(m_p - M)`, `out = sum_p w_p out_p / sum_p w_p` (zeros if all are empty).
/// Every partition's `out` has the row's width, `out.len()` (asserted: the partitions come from this
/// module's own decode, never from a caller's guess).
pub fn reduce_partitions(parts: &[Partial], out: &mut [f32]) {
    assert!(
        parts.iter().all(|p| p.out.len() == out.len()),
        "every partition's output has the row's width"
    );
    out.fill(0.0);
    let m = parts
        .iter()
        .filter(|p| p.exp_sum > 0.0)
        .fold(f32::NEG_INFINITY, |a, p| a.max(p.max_logit));
    if m == f32::NEG_INFINITY {
        return; // no partition saw a key
    }
    let mut total = 0.0;
    for p in parts.iter().filter(|p| p.exp_sum > 0.0) {
        let w = p.exp_sum * (p.max_logit - m).exp(); // rescaled exp_sum
        total += w;
        for (x, y) in out.iter_mut().zip(&p.out) {
            *x += w * y;
        }
    }
    out.iter_mut().for_each(|x| *x /= total);
}
// ANCHOR_END: v2_reduce

// ANCHOR: paged_decode_v2
/// Partitioned paged decode (PagedAttention V2): the keys `[p P, (p + 1) P)` of each sequence form
/// partition `p`, an independent task per (sequence, kv head, partition); then [`reduce_partitions`]
/// merges them. `P` must be a positive multiple of the block size, so a partition owns whole blocks.
pub fn paged_decode_partitioned<T: Element>(
    q: &[T],
    hq: usize,
    kv: &PagedKv<'_, T>,
    batch: &PagedBatch<'_>,
    mask: Mask,
    partition: usize,
    o: &mut [T],
) -> Result<(), PagedError> {
    let g = validate(q.len(), o.len(), hq, 1, kv, batch)?;
    let (d, bs, hkv) = (kv.d, kv.block_size, kv.hkv);
    if partition == 0 || !partition.is_multiple_of(bs) {
        return Err(PagedError::BadPartition {
            partition,
            block_size: bs,
        });
    }
    let max_parts = batch
        .seq_lens
        .iter()
        .map(|l| l.div_ceil(partition))
        .max()
        .unwrap_or(0);
    // Phase 1 (vLLM's grid (heads, seqs, partitions)): each task writes G partials.
    let tasks: Vec<(usize, usize, usize)> = (0..batch.seq_lens.len())
        .flat_map(|s| (0..hkv).flat_map(move |h| (0..max_parts).map(move |p| (s, h, p))))
        .collect();
    let partials: Vec<Vec<Partial>> = tasks
        .par_iter()
        .map(|&(seq, h, p)| {
            let len = batch.seq_lens[seq];
            let (lo, hi) = key_range(mask, 0, 1, len);
            let (lo, hi) = (lo.max(p * partition), hi.min((p + 1) * partition));
            let q0 = (seq * hkv + h) * g * d;
            let mut st = GroupState::new(&q[q0..q0 + g * d], g, d, bs);
            if lo < hi {
                st.attend_table(kv, &batch.tables[seq], h, (lo, hi)); // else: exit early, empty
            }
            (0..g)
                .map(|r| {
                    let l = st.sum(r);
                    let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                    Partial {
                        max_logit: st.m[r] * std::f32::consts::LN_2, // back to natural units
                        exp_sum: l,
                        out: st.acc[r * d..][..d].iter().map(|a| a * inv).collect(),
                    }
                })
                .collect()
        })
        .collect();
    // Phase 2 (the reduce kernel): per (sequence, query head), merge its partitions.
    o.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let (seq, hq_idx) = (row / hq, row % hq);
        let (h, r) = (hq_idx / g, hq_idx % g);
        let parts: Vec<Partial> = (0..max_parts)
            .map(|p| partials[(seq * hkv + h) * max_parts + p][r].clone())
            .collect();
        let mut out = vec![0.0f32; d];
        reduce_partitions(&parts, &mut out);
        for (x, y) in o.iter_mut().zip(out) {
            *x = T::from_f32(y);
        }
    });
    Ok(())
}
// ANCHOR_END: paged_decode_v2

/// Gather one sequence's K and V from the pool into contiguous `(Hkv, len, D)` tensors: the "paged by
/// gathering" path the tests compare against the f64 reference.
pub fn gather<T: Element>(
    kv: &PagedKv<'_, T>,
    table: &[BlockId],
    len: usize,
) -> Result<(Vec<T>, Vec<T>), PagedError> {
    let tables = [table.to_vec()];
    let batch = PagedBatch {
        tables: &tables,
        seq_lens: &[len],
    };
    let row = kv.hkv * kv.d; // a stand-in query of one head per kv head
    validate::<T>(row, row, kv.hkv, 1, kv, &batch)?;
    let d = kv.d;
    let (mut k, mut v) = (
        Vec::with_capacity(kv.hkv * len * d),
        Vec::with_capacity(kv.hkv * len * d),
    );
    for h in 0..kv.hkv {
        for t in 0..len {
            let at = kv.offset(table[t / kv.block_size], h, t % kv.block_size);
            k.extend_from_slice(&kv.k[at..at + d]);
            v.extend_from_slice(&kv.v[at..at + d]);
        }
    }
    Ok((k, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minimodel::rng::Rng;
    use half::{bf16, f16};

    /// The paths over the same contiguous keys, the normalised outputs: the in-place loop at 8 lanes,
    /// at 16 (where this CPU has AVX-512F: else 8 again), and the portable path.
    fn paths<T: Element>(g: usize, d: usize, n: usize, bs: usize, seed: u64) -> [Vec<f32>; 3] {
        let mut rng = Rng::new(seed);
        let q: Vec<T> = crate::minimodel::numeric::convert(&rng.normal_vec_f32(g * d));
        let k: Vec<T> = crate::minimodel::numeric::convert(&rng.normal_vec_f32(n * d));
        let v: Vec<T> = crate::minimodel::numeric::convert(&rng.normal_vec_f32(n * d));
        [
            (Isa::Avx2Fma, true),
            (Isa::detect(), true),
            (Isa::detect(), false),
        ]
        .map(|(isa, direct)| {
            let mut st = GroupState::on_path(&q, g, d, bs, isa, direct);
            assert_eq!(st.direct, direct);
            assert_eq!(st.wide, direct && wide_for(isa, d));
            walk_contiguous(&k, &v, bs, d, (0, n), |(_, k, v, n, ahead)| {
                st.absorb(k, v, n, ahead)
            });
            st.flush();
            let mut o = vec![0.0f32; g * d];
            finish(&mut st, &mut o, d, d);
            o
        })
    }

    fn agree<T: Element>() {
        for (i, &(g, d, n, bs)) in [
            (4, 128, 2043, 16), // the measured shape, a partial last block
            (1, 64, 37, 16),
            (3, 8, 100, 5),     // odd blocks: passes of 5 keys, padded scores
            (6, 64, 300, 32),   // 4 + 2 query rows; two passes a block
            (8, 128, 129, 128), // a block longer than a pass
            (5, 24, 1, 16),     // one key; D not a multiple of 16
        ]
        .iter()
        .enumerate()
        {
            let [narrow, wide, portable] = paths::<T>(g, d, n, bs, 40 + i as u64);
            let scale = portable.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            for (lanes, direct) in [(8, &narrow), (16, &wide)] {
                for (j, (a, b)) in direct.iter().zip(&portable).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale + 1e-6,
                        "{} g={g} d={d} n={n} bs={bs} element {j}: {lanes} lanes {a} portable {b}",
                        T::DTYPE.name()
                    );
                }
            }
        }
    }

    /// The in-place loop computes what the portable gather-and-tile path computes (up to f32
    /// rounding: the two sum in different orders), in every element type it reads, at both widths
    /// (16 lanes where the CPU has AVX-512F).
    #[test]
    fn the_in_place_decode_loop_matches_the_portable_path() {
        if !direct_for::<f32>(Isa::detect(), 64) {
            eprintln!(
                "skipped: this CPU lacks AVX2, FMA or F16C, so decode runs the portable path only"
            );
            return;
        }
        agree::<f32>();
        agree::<f16>();
        agree::<bf16>();
    }
}
