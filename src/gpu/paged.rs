//! Paged decode on the GPU: the launch wrappers of `kernels/paged_attention.cu`.
//!
//! One query token per sequence, `q, o: (S, Hq, D)`; the K/V pool is the CPU module's
//! `(num_blocks, Hkv, B, D)` ([`crate::minimodel::paged::paged_attention`]) and sequence `s` reads its
//! token `t` from block `tables[s][t / B]`, row `t % B`. The same kernel also reads a contiguous
//! `(S, Hkv, Nk, D)` twin of the data ([`Layout::Contiguous`]), so the table's cost is measured against
//! the identical kernel without it.
//!
//! The keys of each sequence are split into partitions of `P` tokens ([`partition_for`]); one thread
//! block attends a chunk of a kv head's query heads to one partition, and a reduce kernel merges the
//! partitions of each row by the log-sum-exp (PagedAttention V2's structure, with GQA heads sharing
//! every K/V load). [`Tuning::split`] instead cuts all rows' keys into one equal share per resident
//! block ([`split_plan`]); measured slower, it is kept as a switch. Every table entry is checked on the
//! host before the table is uploaded ([`check_tables`]), and the device buffers cannot be swapped
//! afterwards, so a kernel never follows an entry past the pool.

use super::flash::GpuElement;
use super::{Device, GpuError};
use crate::minimodel::paged::paged_attention::{check_tables, PagedBatch, PagedError, PagedKv};
use crate::minimodel::shape::{AttnShape, Mask};
use cudarc::driver::{CudaFunction, CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

/// The kernels' parameter block (mirrors `struct PagedParams` in `kernels/paged_attention.cu`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PagedParams {
    /// Sequences.
    pub num_seqs: i32,
    /// Query heads.
    pub hq: i32,
    /// Key/value heads.
    pub hkv: i32,
    /// Blocks in the pool.
    pub num_blocks: i32,
    /// Entries per sequence in the flattened table.
    pub table_stride: i32,
    /// Rows per (sequence, kv head) of the contiguous twin.
    pub nk_stride: i32,
    /// Keys per partition.
    pub partition: i32,
    /// Partitions of the longest sequence.
    pub num_parts: i32,
    /// Window `W`, 0 for none.
    pub window: i32,
    /// `log2(e) / sqrt(D)`.
    pub scale_log2: f32,
    /// Even split: the visible keys of every row of thread-block work, end to end.
    pub work: i64,
}

// SAFETY: `PagedParams` is `repr(C)`, plain data, and matches the kernels' struct field for field.
unsafe impl DeviceRepr for PagedParams {}

/// Head sizes the kernel is compiled for (`TPT = D / 8` lanes per token must divide a warp).
pub const HEAD_DIMS: &[usize] = &[32, 64, 128, 256];
/// Table entries of one partition the kernel holds in shared memory (`MAX_TABLE`) unless the block's
/// other static shared memory leaves room for twice as many ([`Tuning::table_entries`]).
pub const MAX_TABLE: usize = 2048;
/// Tokens one warp loads per step (`CHUNK = passes * 32 / (D / 8)`): a partition shorter than the
/// block's warps' chunks leaves warps idle, so [`partition_for`] never goes below it.
pub fn chunk(d: usize, passes: usize) -> usize {
    passes * 32 / (d / 8)
}

/// Where K and V live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A pool of blocks read through the tables.
    Paged {
        /// Tokens per block.
        block_size: usize,
        /// Blocks in the pool.
        num_blocks: usize,
        /// How the device pool is ordered.
        order: PoolOrder,
    },
    /// `(S, Hkv, nk, D)`, sequence `s`'s token `t` at row `t`.
    Contiguous {
        /// Rows per (sequence, kv head).
        nk: usize,
    },
}

/// The order of the device pool's dimensions. The block tables and the block manager are the same for
/// both: a block id names one slot of the pool, whichever way its heads are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolOrder {
    /// `(num_blocks, Hkv, B, D)`: the CPU module's layout, a block's kv heads side by side (vLLM's
    /// cache tensors put the block first too).
    #[default]
    BlockMajor,
    /// `(Hkv, num_blocks, B, D)`: every kv head its own pool of blocks, so the blocks of a run of
    /// consecutive ids are one contiguous run of each head's rows.
    HeadMajor,
}

/// `pool`, `(num_blocks, Hkv, bs, D)` with `bs * D = piece`, reordered into `(Hkv, num_blocks, bs, D)`.
pub fn head_major<T: Copy + Send + Sync>(
    pool: &[T],
    num_blocks: usize,
    hkv: usize,
    piece: usize,
) -> Vec<T> {
    use rayon::prelude::*;
    assert_eq!(pool.len(), num_blocks * hkv * piece, "pool shape");
    (0..hkv * num_blocks)
        .into_par_iter()
        .flat_map_iter(|i| {
            let (h, blk) = (i / num_blocks, i % num_blocks);
            pool[(blk * hkv + h) * piece..][..piece].iter().copied()
        })
        .collect()
}

/// Device buffers of one decode batch. Its fields are private: the shapes, the layout and the tables were
/// checked against each other at upload, and every launch trusts that check (a kernel never follows an
/// entry past the pool), so nothing may change one without the others.
pub struct DecodeBuffers<T: GpuElement> {
    /// Where K and V live.
    layout: Layout,
    /// Query heads.
    hq: usize,
    /// Key/value heads.
    hkv: usize,
    /// Head size.
    d: usize,
    seq_lens: Vec<usize>,
    table_stride: usize,
    q: CudaSlice<T>,
    k: CudaSlice<T>,
    v: CudaSlice<T>,
    tables: CudaSlice<i32>,
    lens: CudaSlice<i32>,
    /// `(S, Hq, D)`.
    o: CudaSlice<T>,
    /// `(S, Hq)`, natural log.
    lse: CudaSlice<f32>,
    part_out: Option<CudaSlice<f32>>,
    part_ml: Option<CudaSlice<f32>>,
    /// One arrival counter per (sequence, head chunk) for the fused merge; zero between launches.
    counters: Option<CudaSlice<i32>>,
    /// Even split: each sequence's first key in the sequences' visible keys laid end to end (`S + 1`
    /// entries), for the window it was computed for.
    prefix: Option<(i32, CudaSlice<i64>)>,
    /// The last decode's launch plan, reused while a call asks for the same mask, partition and tuning
    /// (the buffers' shapes, tables and lengths never change after the upload).
    plan: Option<Plan>,
}

/// What a decode call works out before it launches (the checks of its tuning, the module and its
/// functions, the occupancy query, the partition, the parameter block), kept with the buffers so that
/// the next step with the same request only launches ([`DecodeBuffers::forget_plan`] drops it).
#[derive(Debug, Clone)]
struct Plan {
    key: (Mask, Option<usize>, Tuning),
    partition: CudaFunction,
    cfg: LaunchConfig,
    params: PagedParams,
    /// The merge launch, where the partitions need one.
    reduce: Option<(CudaFunction, LaunchConfig)>,
    /// What `decode_tuned` returns: the keys a block takes.
    keys_per_block: usize,
}

fn fits(what: &'static str, value: usize) -> Result<i32, GpuError> {
    i32::try_from(value).map_err(|_| GpuError::TooLarge {
        what,
        value,
        limit: i32::MAX as usize,
    })
}

impl<T: GpuElement> DecodeBuffers<T> {
    /// Upload a paged batch: `q: (S, Hq, D)`, the pool and the tables (checked first: a refused batch
    /// uploads nothing). `o` and `lse` start poisoned with NaN.
    pub fn upload_paged(
        dev: &Device,
        q: &[T],
        hq: usize,
        kv: &PagedKv<'_, T>,
        batch: &PagedBatch<'_>,
    ) -> Result<Self, GpuError> {
        Self::upload_paged_in(dev, q, hq, kv, batch, PoolOrder::BlockMajor)
    }

    /// [`DecodeBuffers::upload_paged`] with the device pool in `order` (the host pool `kv` is the CPU
    /// module's block-major one, reordered on the way up).
    pub fn upload_paged_in(
        dev: &Device,
        q: &[T],
        hq: usize,
        kv: &PagedKv<'_, T>,
        batch: &PagedBatch<'_>,
        order: PoolOrder,
    ) -> Result<Self, GpuError> {
        let (bs, nb) = (kv.block_size(), kv.num_blocks());
        check_tables(nb, bs, batch)?;
        fits("blocks in the pool", nb)?;
        let stride = batch.tables.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = vec![0i32; batch.tables.len() * stride];
        for (row, t) in flat.chunks_mut(stride).zip(batch.tables) {
            for (x, &b) in row.iter_mut().zip(t) {
                *x = b as i32; // < num_blocks <= i32::MAX, checked above
            }
        }
        let layout = Layout::Paged {
            block_size: bs,
            num_blocks: nb,
            order,
        };
        let reorder = |x: &[T]| match order {
            PoolOrder::BlockMajor => None,
            PoolOrder::HeadMajor => Some(head_major(x, nb, kv.hkv(), bs * kv.d())),
        };
        let (k, v) = (reorder(kv.k()), reorder(kv.v()));
        Self::upload(
            dev,
            q,
            hq,
            kv.hkv(),
            kv.d(),
            layout,
            k.as_deref().unwrap_or(kv.k()),
            v.as_deref().unwrap_or(kv.v()),
            batch.seq_lens,
            &flat,
            stride,
        )
    }

    /// Upload a contiguous batch: `q: (S, Hq, D)`, `k, v: (S, Hkv, Nk, D)` of `shape` (`Nq = 1`), every
    /// sequence using its first `seq_lens[s] <= Nk` rows.
    pub fn upload_contiguous(
        dev: &Device,
        shape: &AttnShape,
        q: &[T],
        k: &[T],
        v: &[T],
        seq_lens: &[usize],
    ) -> Result<Self, GpuError> {
        shape.check_inputs(q.len(), k.len(), v.len())?;
        if shape.nq != 1 {
            return Err(PagedError::QueryLength {
                tensor: "q",
                expected: shape.b * shape.hq * shape.d,
                got: q.len(),
            }
            .into());
        }
        if seq_lens.len() != shape.b {
            return Err(PagedError::BatchMismatch {
                tables: shape.b,
                lens: seq_lens.len(),
            }
            .into());
        }
        for (seq, &len) in seq_lens.iter().enumerate() {
            if len == 0 {
                return Err(PagedError::EmptySequence { seq }.into());
            }
            if len > shape.nk {
                return Err(PagedError::TableTooShort {
                    seq,
                    len,
                    need: len,
                    have: shape.nk,
                }
                .into());
            }
        }
        Self::upload(
            dev,
            q,
            shape.hq,
            shape.hkv,
            shape.d,
            Layout::Contiguous { nk: shape.nk },
            k,
            v,
            seq_lens,
            &[0],
            1,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn upload(
        dev: &Device,
        q: &[T],
        hq: usize,
        hkv: usize,
        d: usize,
        layout: Layout,
        k: &[T],
        v: &[T],
        seq_lens: &[usize],
        tables: &[i32],
        table_stride: usize,
    ) -> Result<Self, GpuError> {
        let s = seq_lens.len();
        // Heads and head size through the crate's shape checks (Hkv divides Hq, nothing zero).
        let shape = AttnShape::new(s, hq, hkv, 1, 1, d)?;
        if q.len() != shape.q_len() {
            return Err(PagedError::QueryLength {
                tensor: "q",
                expected: shape.q_len(),
                got: q.len(),
            }
            .into());
        }
        if !HEAD_DIMS.contains(&d) {
            return Err(GpuError::HeadDim {
                version: "paged_decode",
                d,
                supported: HEAD_DIMS,
            });
        }
        let lens = seq_lens
            .iter()
            .map(|&l| fits("sequence length", l))
            .collect::<Result<Vec<i32>, _>>()?;
        fits("S * Hq * D", shape.q_len())?;
        fits("pool rows", k.len() / d)?;
        let st = dev.stream();
        let mut b = DecodeBuffers {
            layout,
            hq,
            hkv,
            d,
            seq_lens: seq_lens.to_vec(),
            table_stride,
            q: st.clone_htod(q)?,
            k: st.clone_htod(k)?,
            v: st.clone_htod(v)?,
            tables: st.clone_htod(tables)?,
            lens: st.clone_htod(&lens)?,
            o: st.alloc_zeros::<T>(shape.q_len())?,
            lse: st.alloc_zeros::<f32>(s * hq)?,
            part_out: None,
            part_ml: None,
            counters: None,
            prefix: None,
            plan: None,
        };
        b.poison(dev)?;
        Ok(b)
    }

    /// Where K and V live.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Query heads.
    pub fn hq(&self) -> usize {
        self.hq
    }

    /// Key/value heads.
    pub fn hkv(&self) -> usize {
        self.hkv
    }

    /// Head size.
    pub fn d(&self) -> usize {
        self.d
    }

    /// The output, `(S, Hq, D)`, as the last launch left it (NaN before the first).
    pub fn o(&self) -> &CudaSlice<T> {
        &self.o
    }

    /// The output's log-sum-exp per (sequence, query head), `(S, Hq)`, natural log.
    pub fn lse(&self) -> &CudaSlice<f32> {
        &self.lse
    }

    /// Sequences in the batch.
    pub fn num_seqs(&self) -> usize {
        self.seq_lens.len()
    }

    /// Each sequence's length.
    pub fn seq_lens(&self) -> &[usize] {
        &self.seq_lens
    }

    /// Fill `o` and `lse` with NaN, so that an element a kernel leaves unwritten fails the check.
    pub fn poison(&mut self, dev: &Device) -> Result<(), GpuError> {
        super::poison_outputs(dev, &mut self.o, &mut self.lse)
    }

    /// Drop the cached launch plan: the next decode works everything out again, as every call did
    /// before plans were kept (the harness times both: the host's share of a short step).
    pub fn forget_plan(&mut self) {
        self.plan = None;
    }

    /// Copy `o` and `lse` back.
    pub fn download(&self, dev: &Device) -> Result<(Vec<T>, Vec<f32>), GpuError> {
        super::download_outputs(dev, &self.o, &self.lse)
    }

    /// Bytes a decode step must read or write at least: the K and V rows it attends to, `q`, `o`, `lse`
    /// and (paged) the table entries it follows.
    pub fn bytes(&self, mask: Mask) -> f64 {
        let e = std::mem::size_of::<T>() as f64;
        let keys: usize = self.seq_lens.iter().map(|&l| visible(mask, l)).sum();
        let kv = 2.0 * (keys * self.hkv * self.d) as f64 * e;
        let io = (2 * self.num_seqs() * self.hq * self.d) as f64 * e
            + (self.num_seqs() * self.hq) as f64 * 4.0;
        let table = match self.layout {
            Layout::Paged { block_size, .. } => {
                self.seq_lens
                    .iter()
                    .map(|&l| l.div_ceil(block_size))
                    .sum::<usize>() as f64
                    * 4.0
            }
            Layout::Contiguous { .. } => 0.0,
        };
        kv + io + table
    }
}

/// Keys a decode query sees in a sequence of `len` tokens.
fn visible(mask: Mask, len: usize) -> usize {
    mask.window.map_or(len, |w| w.get().min(len))
}

/// The kernel's compile-time choices, swept by the harness (`paged_decode_sweep` records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Warps per thread block (4, 8 or 16).
    pub warps: usize,
    /// Token passes per warp chunk (4 or 8): `2 * passes` 16-byte loads in flight per lane.
    pub passes: usize,
    /// The last thread block of a row merges the partitions (no second launch).
    pub fused: bool,
    /// K/V loads skip L1 and ask L2 for 256-byte lines (with `tc`: the ring's copies ask for them).
    pub hint: bool,
    /// Thread blocks per resident slot the partitions aim for ([`partition_for`]).
    pub waves: usize,
    /// K/V chunks arrive in shared memory by bulk asynchronous copies (Hopper's copy engine), with
    /// `stages` chunks in flight per warp; `false`: 16-byte loads into registers.
    pub bulk: bool,
    /// K/V chunks arrive in shared memory by each lane's own 16-byte asynchronous copies
    /// (`cp.async`), `stages` chunks a warp in a ring, the next `stages - 1` in flight while one is
    /// computed; `false` (and not `bulk`): 16-byte loads into registers, none in flight while the
    /// warp computes.
    pub cp_async: bool,
    /// Scores and `P V` on the tensor cores (`mma.sync` m16n8k16, the block's query heads as the
    /// rows of a 16-row tile), each warp taking chunks of 16 tokens through a ring of `stages` chunks
    /// filled by `cp.async`; `passes` is then unused.
    pub tc: bool,
    /// Chunks in the ring per warp when `bulk`, `cp_async` or `tc`.
    pub stages: usize,
    /// An even split of all rows' keys over one wave of thread blocks, instead of partitions
    /// (`paged_split` in the kernel); the partials are merged by the last block of each row. A
    /// partition given to [`decode_tuned`] overrides it.
    pub split: bool,
    /// `tc` only: each warp asks L2 for the K/V block of its chunk this many chunks ahead (`prefetch`
    /// hints, no registers held), so that the table entry, the address translation and the DRAM read
    /// of a scattered block start before the ring needs it; 0 for none.
    pub prefetch: usize,
    /// `tc` only: head chunks (`group_chunk` query heads of one kv head each) a thread block takes, warp
    /// `w` the chunk `w % heads`, so that the block's warps read the kv heads of one table block side by
    /// side (in the block-major pool, one contiguous run of `Hkv` heads' rows) instead of one head's
    /// rows of `warps` blocks scattered over the pool. 1: one head chunk a block.
    pub heads: usize,
    /// `tc` only: lane 0 of each warp asks L2 for one line of K and one of V of the chunk this many
    /// ahead (`prefetch` hints for two lines where the ring's copies make 64 requests), so that a
    /// scattered block's pages are translated before its copies are issued; 0 for none.
    pub touch: usize,
    /// Thread blocks of one sequence launched as a cluster (Hopper's `__cluster_dims__(1, N, 1)`), so
    /// that the hardware places them on one GPC: the `N` rows of blocks reading one sequence's pool
    /// blocks share that GPC's caches and address translations, instead of spreading over the GPU
    /// with other sequences' rows beside them. 1: no cluster.
    pub cluster: usize,
    /// `tc` only, partitions without a window: the early start (`paged_early` in the kernel). A
    /// block's keys then begin where its partition does whatever the sequence's length, so its first
    /// table entries and the ring's first chunks are asked for before the length has arrived, instead
    /// of after it (the length, the table and the first copies were three memory round trips one
    /// after the other on a paged pool, two on the contiguous twin).
    pub early: bool,
}

impl Tuning {
    /// The CUDA-core path: 16 warps a block, 4 passes of 16-byte loads into registers a chunk, the
    /// scores and `P V` as FMAs and shuffles. What [`decode`] uses where the tensor cores cannot
    /// ([`Tuning::for_head`]), and the base the sweep changes one choice at a time.
    pub const REGISTERS: Tuning = Tuning {
        warps: 16,
        passes: 4,
        fused: false,
        hint: false,
        waves: 1,
        bulk: false,
        cp_async: false,
        tc: false,
        stages: 3,
        split: false,
        prefetch: 0,
        heads: 1,
        touch: 0,
        cluster: 1,
        early: false,
    };

    /// The tensor-core path: 8 warps a block, each taking chunks of 16 tokens through a ring of three
    /// filled by `cp.async` (two in flight while one is computed), scores and `P V` as `mma.sync`
    /// products: a tenth of the register path's instructions a token (Lab 03's Table 03.6 has the
    /// two side by side, and rings of two).
    pub const TENSOR_CORES: Tuning = Tuning {
        warps: 8,
        tc: true,
        stages: 3,
        ..Tuning::REGISTERS
    };

    /// What [`decode`] uses for head size `d`: the tensor cores where their ring's swizzle takes `d`
    /// (32 or a multiple of 64) and the ring of 8 warps fits a block's shared memory beside the rest
    /// (`d` <= 128), else the registers, with 8 warps above `d` = 128 (16 warps' partial sums would
    /// pass the 48 KB of static shared memory).
    pub fn for_head(d: usize) -> Tuning {
        if (d == 32 || d.is_multiple_of(64)) && d <= 128 {
            Tuning::TENSOR_CORES
        } else if d > 128 {
            Tuning {
                warps: 8,
                ..Tuning::REGISTERS
            }
        } else {
            Tuning::REGISTERS
        }
    }

    /// What [`decode`] runs on `dev` for `bufs`: [`Tuning::for_head`], and on Hopper or newer, where a
    /// sequence's thread blocks pair up, two of them launched as one cluster (the kernel's changelog,
    /// entry 19: in alternating rounds on the H200 never slower, and ahead by up to about a percent on a
    /// shuffled pool and at 64k tokens).
    pub fn for_call<T: GpuElement>(dev: &Device, bufs: &DecodeBuffers<T>) -> Tuning {
        let t = Tuning::for_head(bufs.d);
        let clusters = dev.arch().starts_with("sm_9") || dev.arch().starts_with("sm_1");
        let blocks = bufs.hq / group_chunk(bufs.hq / bufs.hkv.max(1));
        if t.tc && clusters && blocks.is_multiple_of(2) {
            Tuning { cluster: 2, ..t }
        } else {
            t
        }
    }

    /// The tunings the harness sweeps: the register path, then one change at a time.
    pub fn sweep() -> Vec<Tuning> {
        let d = Tuning::REGISTERS;
        vec![
            d,
            Tuning { split: true, ..d },
            // The split with two or four resident blocks an SM: one block's start under another's loads.
            Tuning {
                split: true,
                warps: 8,
                ..d
            },
            Tuning {
                split: true,
                warps: 4,
                ..d
            },
            Tuning { fused: true, ..d },
            Tuning { hint: true, ..d },
            Tuning { passes: 8, ..d },
            Tuning { warps: 4, ..d },
            Tuning { warps: 8, ..d },
            Tuning { waves: 2, ..d },
            Tuning { waves: 4, ..d },
            // Asynchronous copies: the next chunk's loads in flight under this one's arithmetic.
            Tuning {
                cp_async: true,
                stages: 2,
                ..d
            },
            Tuning {
                warps: 8,
                cp_async: true,
                stages: 2,
                ..d
            },
            Tuning {
                warps: 4,
                cp_async: true,
                stages: 3,
                ..d
            },
            // Tensor cores: a chunk of 16 tokens costs a few dozen warp instructions instead of hundreds.
            Tuning {
                warps: 8,
                tc: true,
                stages: 2,
                ..d
            },
            Tuning {
                warps: 4,
                tc: true,
                stages: 2,
                ..d
            },
            Tuning {
                warps: 8,
                tc: true,
                stages: 2,
                split: true,
                ..d
            },
            // Three chunks a warp, two in flight while one is computed: the default, and with the split.
            Tuning::TENSOR_CORES,
            Tuning {
                split: true,
                ..Tuning::TENSOR_CORES
            },
            // L2 prefetches of the block 1, 2 or 4 chunks past the ring's (a warp's chunk is 8 KB of
            // K/V at D = 128: 128 blocks of 8 warps then hold 8, 16 or 32 MB of L2 ahead).
            Tuning {
                prefetch: 1,
                ..Tuning::TENSOR_CORES
            },
            Tuning {
                prefetch: 2,
                ..Tuning::TENSOR_CORES
            },
            Tuning {
                prefetch: 4,
                ..Tuning::TENSOR_CORES
            },
            // The ring's copies asking L2 for 256-byte lines (a K/V row of D = 128 is 256 bytes).
            Tuning {
                hint: true,
                ..Tuning::TENSOR_CORES
            },
            // Every head chunk of a sequence in one block, a warp each (8 kv heads: a block-major
            // pool block's 8 heads read side by side, one run of 32 KB of K and one of V), or two
            // warps each on four; partitions merged by a second launch, by the last block, or an
            // even split over one wave.
            Tuning {
                heads: 8,
                ..Tuning::TENSOR_CORES
            },
            Tuning {
                heads: 8,
                fused: true,
                ..Tuning::TENSOR_CORES
            },
            Tuning {
                heads: 8,
                split: true,
                ..Tuning::TENSOR_CORES
            },
            Tuning {
                heads: 4,
                fused: true,
                ..Tuning::TENSOR_CORES
            },
            // One line of K and of V of the chunk 1, 2 or 4 past the one issued: the pages'
            // translations ahead of the copies (the local-window rows say where a scatter costs).
            Tuning {
                touch: 1,
                ..Tuning::TENSOR_CORES
            },
            Tuning {
                touch: 2,
                ..Tuning::TENSOR_CORES
            },
            Tuning {
                touch: 4,
                ..Tuning::TENSOR_CORES
            },
            // Two of a sequence's rows of blocks as one cluster (one GPC, in practice one pair of
            // SMs). Clusters of 4 and 8 were slower by a third at every context (changelog 19):
            // fewer of them fit the GPU at once than there are rows.
            Tuning {
                cluster: 2,
                ..Tuning::TENSOR_CORES
            },
            // The early start: the first table entries and copies before the sequence's length.
            Tuning {
                early: true,
                ..Tuning::TENSOR_CORES
            },
            // Two resident blocks an SM (4 warps each): one block's start and end under the other's
            // loads; and partitions for two waves.
            Tuning {
                warps: 4,
                tc: true,
                stages: 2,
                split: true,
                ..d
            },
            Tuning {
                warps: 4,
                tc: true,
                stages: 2,
                waves: 2,
                ..d
            },
            Tuning {
                warps: 8,
                tc: true,
                stages: 2,
                waves: 2,
                ..d
            },
            // The bulk path's shared-memory rings are per warp: with 4 warps they fit beside the rest.
            Tuning {
                warps: 4,
                bulk: true,
                stages: 2,
                ..d
            },
            Tuning {
                warps: 4,
                bulk: true,
                ..d
            },
            Tuning {
                warps: 4,
                bulk: true,
                stages: 4,
                ..d
            },
            Tuning {
                warps: 4,
                bulk: true,
                passes: 8,
                stages: 4,
                ..d
            },
        ]
    }

    /// `w4-p8-x1`, `w4-p8-x1-fused-hint`, `w4-p8-x1-bulk3`, `w16-p4-x1-split`, `w8-p4-x1-tc3-h8`, ...
    pub fn name(&self) -> String {
        // `-{tag}{n}` for a count other than its default, nothing for the default.
        let opt = |tag: &str, n: usize, default: usize| {
            if n == default {
                String::new()
            } else {
                format!("-{tag}{n}")
            }
        };
        format!(
            "w{}-p{}-x{}{}{}{}{}{}{}{}{}{}",
            self.warps,
            self.passes,
            self.waves,
            if self.split { "-split" } else { "" },
            if self.fused { "-fused" } else { "" },
            if self.hint { "-hint" } else { "" },
            if self.bulk {
                format!("-bulk{}", self.stages)
            } else if self.cp_async {
                format!("-async{}", self.stages)
            } else if self.tc {
                format!("-tc{}", self.stages)
            } else {
                String::new()
            },
            opt("pf", self.prefetch, 0),
            opt("h", self.heads, 1),
            opt("t", self.touch, 0),
            opt("c", self.cluster, 1),
            if self.early { "-e" } else { "" }
        )
    }

    fn defines(&self) -> [(&'static str, i64); 13] {
        [
            ("PA_EARLY", self.early as i64),
            ("PA_CLUSTER", self.cluster as i64),
            ("PA_TOUCH", self.touch as i64),
            ("PA_HPB", self.heads as i64),
            ("PA_PREFETCH", self.prefetch as i64),
            ("PA_TC", self.tc as i64),
            ("PA_SPLIT", self.split as i64),
            ("PA_WARPS", self.warps as i64),
            ("PA_PASSES", self.passes as i64),
            ("PA_FUSED", self.fused as i64),
            ("PA_HINT", self.hint as i64),
            (
                "PA_BULK",
                if self.bulk {
                    1
                } else {
                    2 * self.cp_async as i64
                },
            ),
            ("PA_STAGES", self.stages as i64),
        ]
    }

    /// Tokens a warp takes at a time: 16 on the tensor cores, else `passes` passes of `32 / (D / 8)`.
    pub fn chunk_tokens(&self, d: usize) -> usize {
        if self.tc {
            16
        } else {
            chunk(d, self.passes)
        }
    }

    /// Table entries one partition holds in shared memory (the kernel's `MAX_TABLE`): 4096 (64k
    /// tokens of blocks of 16, one partition a row at the harness's longest context) where they fit
    /// beside the block's partial sums in the 48 KB of static shared memory, else [`MAX_TABLE`].
    pub fn table_entries(&self, d: usize, gc: usize) -> usize {
        // s_acc (the tensor-core path keeps it in the warps' rings), s_m, s_l, s_last
        let fixed = self.warps * gc * (if self.tc { 2 } else { d + 2 }) * 4 + 64;
        if fixed + 4 * 2 * MAX_TABLE <= 48 * 1024 {
            2 * MAX_TABLE
        } else {
            MAX_TABLE
        }
    }

    /// Dynamic shared memory of the partition kernel: the warps' rings of chunks when `bulk`,
    /// `cp_async` or `tc`.
    pub fn shared_bytes(&self, d: usize, elem: usize) -> usize {
        if self.tc {
            self.warps * self.stages * 2 * 16 * d * elem
        } else if self.bulk || self.cp_async {
            self.warps * self.stages * 2 * chunk(d, self.passes) * d * elem
        } else {
            0
        }
    }
}

// ANCHOR: partition_for
/// The partition size `P` (keys), from the number of thread blocks the GPU holds at once (`slots` =
/// SMs x resident blocks per SM, from the occupancy calculator): the `groups = S * Hq / heads-per-block`
/// rows of thread blocks get `parts = max(1, waves * slots / groups)` partitions each, so the grid is
/// `waves` full waves and no SM idles through a last, partial one; `P = ceil(max_len / parts)`, rounded
/// up to whole blocks, at least one chunk per warp, and at most the kernel's `table` of block entries.
pub fn partition_for(
    max_len: usize,
    groups: usize,
    slots: usize,
    waves: usize,
    min_tokens: usize,
    block_size: usize,
    table: usize,
) -> usize {
    let parts = (waves * slots / groups.max(1)).max(1);
    let p = max_len.div_ceil(parts).max(min_tokens);
    let p = p.div_ceil(block_size) * block_size;
    p.min(table * block_size)
}
// ANCHOR_END: partition_for

/// An even split of a decode batch ([`Tuning::split`]): the grid's blocks, the keys of all rows end to
/// end, and the most blocks one row's keys can touch (its partials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
    /// Thread blocks: one wave of `slots`, fewer when the rows hold less than a block's warps' chunks
    /// per block.
    pub blocks: usize,
    /// `W`: every row's visible keys (a sequence's keys once per head chunk).
    pub work: usize,
    /// The most blocks a row's keys meet, a bound on its partials.
    pub max_parts: usize,
}

// ANCHOR: split_plan
/// Plan an even split: `rows_per_seq` rows of work (head chunks) for each sequence, each row its
/// sequence's keys visible under `mask`, `slots` blocks
/// held at once, at least `min_tokens` keys a block where the batch allows it. Block `b` takes keys
/// `[b W / G, (b + 1) W / G)`; a row of `L` keys then meets at most `ceil(L / floor(W / G)) + 1` blocks.
pub fn split_plan(
    seq_lens: &[usize],
    mask: Mask,
    rows_per_seq: usize,
    slots: usize,
    min_tokens: usize,
) -> SplitPlan {
    let vis = seq_lens.iter().map(|&l| visible(mask, l));
    let work = vis.clone().sum::<usize>() * rows_per_seq;
    let longest = vis.max().unwrap_or(0);
    let blocks = slots.min(work / min_tokens.max(1)).max(1);
    let max_parts = if work == 0 {
        1
    } else {
        (longest.div_ceil(work / blocks) + 1).min(blocks)
    };
    SplitPlan {
        blocks,
        work,
        max_parts,
    }
}
// ANCHOR_END: split_plan

/// Query heads one thread block computes: the largest of 4, 3, 2, 1 that divides the group `G`
/// (4 heads' queries, scores and accumulators fit in registers beside 16 loads in flight).
pub fn group_chunk(g: usize) -> usize {
    (1..=4).rev().find(|c| g.is_multiple_of(*c)).unwrap_or(1)
}

/// Run the decode on `bufs` with `mask` (causal is no mask for the last token; a window keeps the last
/// `W` keys): with `partition: None` an even split of all keys over one wave of blocks ([`split_plan`]),
/// with `Some(P)` partitions of `P` keys. Asynchronous: download or synchronize to wait. Returns the
/// keys a block takes (the partition size, or the split's share).
pub fn decode<T: GpuElement>(
    dev: &Device,
    bufs: &mut DecodeBuffers<T>,
    mask: Mask,
    partition: Option<usize>,
) -> Result<usize, GpuError> {
    let tuning = Tuning::for_call(dev, bufs);
    decode_tuned(dev, bufs, mask, partition, tuning)
}

/// [`decode`] with the kernel's compile-time choices given. The first call with a given mask, partition
/// and tuning plans the launch (checks, module, occupancy, partition, workspace) and keeps the plan with
/// the buffers; a call that asks the same again only launches.
pub fn decode_tuned<T: GpuElement>(
    dev: &Device,
    bufs: &mut DecodeBuffers<T>,
    mask: Mask,
    partition: Option<usize>,
    tuning: Tuning,
) -> Result<usize, GpuError> {
    let key = (mask, partition, tuning);
    if bufs.plan.as_ref().is_none_or(|p| p.key != key) {
        bufs.plan = None;
        bufs.plan = Some(plan_decode(dev, bufs, mask, partition, tuning)?);
    }
    let plan = bufs.plan.take().expect("planned above");
    let launched = launch_plan(dev, bufs, &plan);
    let keys = plan.keys_per_block;
    bufs.plan = Some(plan);
    launched.map(|()| keys)
}

/// Everything [`decode_tuned`] works out before it launches; refusals are typed, and a refused call
/// launches nothing.
fn plan_decode<T: GpuElement>(
    dev: &Device,
    bufs: &mut DecodeBuffers<T>,
    mask: Mask,
    partition: Option<usize>,
    tuning: Tuning,
) -> Result<Plan, GpuError> {
    // The plan is kept under what was asked for (the tuning and partition below are what it resolves to).
    let (partition_asked, tuning_asked) = (partition, tuning);
    if ![4, 8, 16].contains(&tuning.warps)
        || ![4, 8].contains(&tuning.passes)
        || tuning.waves == 0
        || !(1..=4).contains(&tuning.stages)
    {
        return Err(GpuError::TooLarge {
            what: "tuning (warps 4, 8 or 16, passes 4 or 8, waves at least 1, stages 1 to 4)",
            value: tuning.warps.max(tuning.passes),
            limit: 8,
        });
    }
    if [tuning.bulk, tuning.cp_async, tuning.tc]
        .iter()
        .filter(|&&x| x)
        .count()
        > 1
    {
        return Err(GpuError::NotSupported {
            what: "more than one of bulk copies, per-lane asynchronous copies and tensor cores (one ring)",
            arch: dev.arch(),
        });
    }
    if tuning.tc && !(bufs.d == 32 || bufs.d.is_multiple_of(64)) {
        return Err(GpuError::NotSupported {
            what: "tensor-core decode for a head size other than 32 or a multiple of 64 (the ring's swizzle)",
            arch: dev.arch(),
        });
    }
    if (tuning.prefetch + tuning.touch > 0 && !tuning.tc)
        || tuning.prefetch > 64
        || tuning.touch > 64
    {
        return Err(GpuError::NotSupported {
            what:
                "prefetch or touch other than 0 to 64 chunks ahead, or without the tensor-core path",
            arch: dev.arch(),
        });
    }
    if tuning.heads == 0
        || (tuning.heads > 1 && !tuning.tc)
        || !tuning.warps.is_multiple_of(tuning.heads)
    {
        return Err(GpuError::NotSupported {
            what: "head chunks a block other than 1 without the tensor-core path, or not dividing the warps",
            arch: dev.arch(),
        });
    }
    if ![1, 2, 4, 8].contains(&tuning.cluster)
        || (tuning.cluster > 1 && tuning.split && partition.is_none())
    {
        return Err(GpuError::NotSupported {
            what: "clusters other than 1, 2, 4 or 8 thread blocks, or with the even split (a 1-D grid)",
            arch: dev.arch(),
        });
    }
    if tuning.cluster > 1 && !dev.arch().starts_with("sm_9") && !dev.arch().starts_with("sm_1") {
        return Err(GpuError::NotSupported {
            what: "thread block clusters (sm_90 or newer)",
            arch: dev.arch(),
        });
    }
    if tuning.early && !tuning.tc {
        return Err(GpuError::NotSupported {
            what: "the early start without the tensor-core path",
            arch: dev.arch(),
        });
    }
    if tuning.bulk && tuning.split {
        return Err(GpuError::NotSupported {
            what: "bulk copies with the even split (a warp's copy ring is set up once a range)",
            arch: dev.arch(),
        });
    }
    // A partition given selects the partitioned kernel.
    let tuning = Tuning {
        split: tuning.split && partition.is_none(),
        ..tuning
    };
    if tuning.bulk && !dev.arch().starts_with("sm_9") && !dev.arch().starts_with("sm_1") {
        return Err(GpuError::NotSupported {
            what: "bulk asynchronous copies (sm_90 or newer)",
            arch: dev.arch(),
        });
    }
    let (s, hq, d) = (bufs.num_seqs(), bufs.hq, bufs.d);
    let g = hq / bufs.hkv;
    let gc = group_chunk(g);
    // Thread blocks a sequence's query heads need: `hq / gc` head chunks, `tuning.heads` a block.
    if !(hq / gc).is_multiple_of(tuning.heads) {
        return Err(GpuError::NotSupported {
            what: "head chunks a block that do not divide the sequence's head chunks (Hq / heads per chunk)",
            arch: dev.arch(),
        });
    }
    let grid_y = hq / gc / tuning.heads;
    if !grid_y.is_multiple_of(tuning.cluster) {
        return Err(GpuError::NotSupported {
            what:
                "a cluster that does not divide a sequence's thread blocks (Hq / heads per block)",
            arch: dev.arch(),
        });
    }
    let bs = match bufs.layout {
        Layout::Paged { block_size, .. } => block_size,
        Layout::Contiguous { .. } => 16, // only the partition's granularity
    };
    let max_len = bufs.seq_lens.iter().copied().max().unwrap_or(1);
    let table = tuning.table_entries(d, gc);
    let module = module_for::<T>(dev, d, gc, bs, order_of(bufs.layout), tuning)?;
    let name = match bufs.layout {
        Layout::Paged { .. } => "paged_decode_partition",
        Layout::Contiguous { .. } => "contiguous_decode_partition",
    };
    let f = module.load_function(name)?;
    let threads = 32 * tuning.warps as u32;
    let smem = tuning.shared_bytes(d, std::mem::size_of::<T>());
    if smem > 0 {
        // The warps' rings beside the kernel's own shared memory must fit one block's limit (e.g. the
        // tensor-core ring of 8 warps at D = 256 does not): a typed refusal, not a failed launch.
        let limit = dev.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        )? as usize;
        let fixed = f.get_attribute(
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
        )? as usize;
        if smem + fixed > limit {
            return Err(GpuError::TooLarge {
                what: "shared memory of the tuning's copy rings (fewer warps or stages)",
                value: smem + fixed,
                limit,
            });
        }
        // Dynamic beside the static shared memory may pass the 48 KB a launch gets by default.
        f.set_attribute(
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )?;
    }
    // At least one chunk a warp: a head chunk's warps share its keys.
    let min_tokens = tuning.warps / tuning.heads * tuning.chunk_tokens(d);
    let slots = || -> Result<usize, GpuError> {
        let sms = dev.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )? as usize;
        let per_sm = f.occupancy_max_active_blocks_per_multiprocessor(threads, smem, None)?;
        Ok(sms * per_sm.max(1) as usize)
    };
    let window = mask.window.map_or(0, |w| w.get().min(max_len + 1)) as i32;
    // An even split sizes its own ranges.
    let split = match tuning.split {
        true => Some(split_plan(
            &bufs.seq_lens,
            mask,
            grid_y,
            tuning.waves * slots()?,
            min_tokens,
        )),
        false => None,
    };
    let partition = match (partition, split) {
        (_, Some(_)) => bs,
        (Some(p), None) => p,
        (None, None) => partition_for(
            max_len,
            s * grid_y,
            slots()?,
            tuning.waves,
            min_tokens,
            bs,
            table,
        ),
    };
    if partition == 0 || !partition.is_multiple_of(bs) || partition / bs > table {
        return Err(PagedError::BadPartition {
            partition,
            block_size: bs,
        }
        .into());
    }
    // Partials a row can have: its partitions, or the blocks of an even split its keys touch.
    let num_parts = split.map_or(max_len.div_ceil(partition), |sp| sp.max_parts);
    if s > 65_535 || grid_y > 65_535 {
        return Err(GpuError::TooLarge {
            what: "S or Hq / heads per block (grid)",
            value: s.max(grid_y),
            limit: 65_535,
        });
    }
    let p = PagedParams {
        num_seqs: s as i32,
        hq: hq as i32,
        hkv: bufs.hkv as i32,
        num_blocks: match bufs.layout {
            Layout::Paged { num_blocks, .. } => num_blocks as i32,
            Layout::Contiguous { .. } => 0,
        },
        table_stride: fits("table stride", bufs.table_stride)?,
        nk_stride: match bufs.layout {
            Layout::Paged { .. } => 0,
            Layout::Contiguous { nk } => fits("Nk", nk)?,
        },
        partition: fits("partition", partition)?,
        num_parts: fits("partitions", num_parts)?,
        window,
        scale_log2: std::f32::consts::LOG2_E / (d as f32).sqrt(),
        work: split.map_or(0, |sp| sp.work as i64),
    };
    let st = dev.stream();
    let rows = s * hq;
    // The partials' workspace (one element when a single partition writes `o` directly).
    let need = if num_parts > 1 { rows * num_parts } else { 1 };
    if bufs.part_out.as_ref().is_none_or(|x| x.len() < need * d) {
        bufs.part_out = None;
        bufs.part_ml = None;
        // SAFETY: the reduce reads only partitions the partition kernel wrote in the launch before it
        // (`min(num_parts, ceil(len / P))` of each row, every one written, empty ones included).
        bufs.part_out = Some(unsafe { st.alloc::<f32>(need * d) }?);
        bufs.part_ml = Some(unsafe { st.alloc::<f32>(need * 2) }?);
    }
    if bufs.counters.as_ref().is_none_or(|c| c.len() < s * grid_y) {
        // Zeros, as the last block of each row leaves them.
        bufs.counters = Some(st.alloc_zeros::<i32>(s * grid_y)?);
    }
    // The split's prefix of visible keys, uploaded again only when the window changes.
    if bufs.prefix.as_ref().is_none_or(|(w, _)| *w != window) {
        let mut prefix = vec![0i64; s + 1];
        for (i, &len) in bufs.seq_lens.iter().enumerate() {
            prefix[i + 1] = prefix[i] + visible(mask, len) as i64;
        }
        bufs.prefix = Some((window, st.clone_htod(&prefix)?));
    }
    let cfg = LaunchConfig {
        grid_dim: match split {
            Some(sp) => (sp.blocks as u32, 1, 1),
            None => (num_parts as u32, grid_y as u32, s as u32),
        },
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let reduce = if num_parts > 1 && !tuning.fused && split.is_none() {
        let cfg = LaunchConfig {
            grid_dim: (hq as u32, s as u32, 1),
            block_dim: (d as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        Some((module.load_function("paged_decode_reduce")?, cfg))
    } else {
        None
    };
    Ok(Plan {
        key: (mask, partition_asked, tuning_asked),
        partition: f,
        cfg,
        params: p,
        reduce,
        keys_per_block: split.map_or(partition, |sp| sp.work.div_ceil(sp.blocks.max(1))),
    })
}

/// Launch a planned decode on `bufs` (the buffers it was planned for).
fn launch_plan<T: GpuElement>(
    dev: &Device,
    bufs: &mut DecodeBuffers<T>,
    plan: &Plan,
) -> Result<(), GpuError> {
    let st = dev.stream();
    let (po, pm, counters) = (
        bufs.part_out.as_mut().expect("allocated by the plan"),
        bufs.part_ml.as_mut().expect("allocated by the plan"),
        bufs.counters.as_mut().expect("allocated by the plan"),
    );
    let prefix = &bufs.prefix.as_ref().expect("uploaded by the plan").1;
    // SAFETY: argument types and order match the kernel; every index it forms was validated when the
    // plan was made (table entries < num_blocks, lengths within the tables and the pool, partition <=
    // MAX_TABLE blocks, 32-bit quantities checked), and the buffers have not changed since.
    unsafe {
        st.launch_builder(&plan.partition)
            .arg(&bufs.q)
            .arg(&bufs.k)
            .arg(&bufs.v)
            .arg(&bufs.tables)
            .arg(&bufs.lens)
            .arg(prefix)
            .arg(po)
            .arg(pm)
            .arg(&mut bufs.o)
            .arg(&mut bufs.lse)
            .arg(counters)
            .arg(&plan.params)
            .launch(plan.cfg)
    }?;
    if let Some((f, cfg)) = &plan.reduce {
        let (po, pm) = (
            bufs.part_out.as_ref().expect("allocated by the plan"),
            bufs.part_ml.as_ref().expect("allocated by the plan"),
        );
        // SAFETY: as above; the partials were written by the launch before on the same stream.
        unsafe {
            st.launch_builder(f)
                .arg(po)
                .arg(pm)
                .arg(&bufs.lens)
                .arg(&mut bufs.o)
                .arg(&mut bufs.lse)
                .arg(&plan.params)
                .launch(*cfg)
        }?;
    }
    Ok(())
}

/// Time `runs` decodes after `warmup` untimed ones, each between its own pair of CUDA events (ms).
pub fn time_ms<T: GpuElement>(
    dev: &Device,
    bufs: &mut DecodeBuffers<T>,
    mask: Mask,
    partition: Option<usize>,
    tuning: Tuning,
    warmup: usize,
    runs: usize,
) -> Result<Vec<f64>, GpuError> {
    dev.time_each(warmup, runs, |_| {
        decode_tuned(dev, bufs, mask, partition, tuning).map(|_| ())
    })
}

/// The pool order a layout's kernels are compiled for (the contiguous twin's: either).
fn order_of(layout: Layout) -> PoolOrder {
    match layout {
        Layout::Paged { order, .. } => order,
        Layout::Contiguous { .. } => PoolOrder::BlockMajor,
    }
}

/// The compiled module for head size `d`, `gc` heads per block, block size `bs`, the pool's `order`
/// and `tuning`.
fn module_for<T: GpuElement>(
    dev: &Device,
    d: usize,
    gc: usize,
    bs: usize,
    order: PoolOrder,
    tuning: Tuning,
) -> Result<std::sync::Arc<cudarc::driver::CudaModule>, GpuError> {
    dev.module(
        "paged_attention.cu",
        &module_defines(T::BF16, d, gc, bs, order, tuning),
    )
}

/// The defines of [`module_for`]'s module.
fn module_defines(
    bf16: bool,
    d: usize,
    gc: usize,
    bs: usize,
    order: PoolOrder,
    tuning: Tuning,
) -> Vec<(&'static str, i64)> {
    let mut defines = vec![
        ("PA_HEAD_MAJOR", (order == PoolOrder::HeadMajor) as i64),
        ("PA_D", d as i64),
        ("PA_GC", gc as i64),
        ("PA_BLOCK", bs as i64),
        ("PA_BF16", bf16 as i64),
        ("MAX_TABLE", tuning.table_entries(d, gc) as i64),
    ];
    defines.extend(tuning.defines());
    defines
}

/// The paged decode's modules, every preprocessor path of `paged_attention.cu` at least once: each
/// tuning of [`Tuning::sweep`] at Lab 03's shape (D = 128, four query heads a block, blocks of 16, f16);
/// the default tuning (with and without a cluster of two where it takes the tensor cores) at every head
/// size of [`HEAD_DIMS`], one and four query heads a block, in f16 and bf16 and, in f16, on the
/// head-major pool; blocks of 8 and 32; and the read-bandwidth kernels of [`read_bandwidths`].
pub fn module_configs() -> Vec<super::ModuleConfig> {
    let bm = PoolOrder::BlockMajor;
    let mut out: Vec<Vec<(&'static str, i64)>> = Tuning::sweep()
        .into_iter()
        .map(|t| module_defines(false, 128, 4, 16, bm, t))
        .collect();
    for &d in HEAD_DIMS {
        let t = Tuning::for_head(d);
        let tunings = if t.tc {
            vec![t, Tuning { cluster: 2, ..t }]
        } else {
            vec![t]
        };
        for t in tunings {
            for gc in [1, 4] {
                out.push(module_defines(false, d, gc, 16, bm, t));
                out.push(module_defines(true, d, gc, 16, bm, t));
                out.push(module_defines(false, d, gc, 16, PoolOrder::HeadMajor, t));
            }
        }
    }
    for bs in [8, 32] {
        out.push(module_defines(false, 128, 4, bs, bm, Tuning::for_head(128)));
    }
    for order in 0..READ_ORDERS.len() as i64 {
        for hint in [0, 1] {
            out.push(vec![("PA_HINT", hint), ("PA_READ", order)]);
        }
    }
    out.into_iter().map(|d| ("paged_attention.cu", d)).collect()
}

/// Registers per thread of the partition kernel for head size `d`, group `g`, block size `bs`.
pub fn registers(
    dev: &Device,
    d: usize,
    g: usize,
    bs: usize,
    tuning: Tuning,
) -> Result<i32, GpuError> {
    let module =
        module_for::<half::f16>(dev, d, group_chunk(g), bs, PoolOrder::BlockMajor, tuning)?;
    Ok(module.load_function("paged_decode_partition")?.num_regs()?)
}

/// The decode kernel's reads alone (`paged_read_pass` / `contiguous_read_pass`): every row's K and V
/// read with the default tuning's warps and chunks and no arithmetic, `runs` CUDA-event times (ms)
/// after `warmup`. What the access pattern costs by itself; with [`DecodeBuffers::bytes`] less the
/// query, output and table bytes, a read rate to set beside the decode kernel's.
pub fn read_pass_ms<T: GpuElement>(
    dev: &Device,
    bufs: &DecodeBuffers<T>,
    warmup: usize,
    runs: usize,
) -> Result<Vec<f64>, GpuError> {
    let t = Tuning::REGISTERS;
    let (s, hq, d) = (bufs.num_seqs(), bufs.hq, bufs.d);
    let (bs, num_blocks, nk) = match bufs.layout {
        Layout::Paged {
            block_size,
            num_blocks,
            ..
        } => (block_size, num_blocks, 0),
        Layout::Contiguous { nk } => (16, 0, nk),
    };
    let module = module_for::<T>(
        dev,
        d,
        group_chunk(hq / bufs.hkv),
        bs,
        order_of(bufs.layout),
        t,
    )?;
    let f = module.load_function(match bufs.layout {
        Layout::Paged { .. } => "paged_read_pass",
        Layout::Contiguous { .. } => "contiguous_read_pass",
    })?;
    let rows = s * bufs.hkv;
    let threads = 32 * t.warps;
    let st = dev.stream();
    let mut sink = st.alloc_zeros::<u32>(rows * threads)?;
    let max_len = bufs.seq_lens.iter().copied().max().unwrap_or(1);
    let p = PagedParams {
        num_seqs: s as i32,
        hq: hq as i32,
        hkv: bufs.hkv as i32,
        num_blocks: fits("blocks", num_blocks)?,
        table_stride: fits("table stride", bufs.table_stride)?,
        nk_stride: fits("Nk", nk)?,
        partition: fits("partition", max_len.next_multiple_of(bs))?,
        num_parts: 1,
        window: 0,
        scale_log2: 1.0,
        work: 0,
    };
    let cfg = LaunchConfig {
        grid_dim: (fits("rows", rows)? as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    dev.time_each(warmup, runs, |_| {
        // SAFETY: argument types and order match the kernel; the tables and lengths were validated
        // when the buffers were uploaded, and `sink` holds one word per thread of the grid.
        unsafe {
            st.launch_builder(&f)
                .arg(&bufs.k)
                .arg(&bufs.v)
                .arg(&bufs.tables)
                .arg(&bufs.lens)
                .arg(&mut sink)
                .arg(&p)
                .launch(cfg)
        }?;
        Ok(())
    })
}

/// The orders of the `read_bandwidth` kernel (`PA_READ`): a grid stride, chunks of 32 KB a block, a
/// contiguous slab a block.
pub const READ_ORDERS: [&str; 3] = ["grid-stride", "chunks", "slabs"];

/// The key of a reader's rate in a machine record's `read_gbps_by_order`: its order, `+hint` with the
/// L2 line hint.
pub fn read_order_key(order: &str, hint: bool) -> String {
    format!("{order}{}", if hint { "+hint" } else { "" })
}

/// The `read_bandwidth` kernel over `bytes` bytes in every order of [`READ_ORDERS`], with and without
/// the L2 line hint: (order, hint, GB/s from the median of 20 launches) for each.
pub fn read_bandwidths(
    dev: &Device,
    bytes: usize,
) -> Result<Vec<(&'static str, bool, f64)>, GpuError> {
    let words = bytes / 16;
    let st = dev.stream();
    let x = st.alloc_zeros::<u8>(words * 16)?;
    let sms = dev.attribute(
        cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
    )? as usize;
    let (blocks, threads) = (sms * 8, 256usize);
    let mut sink = st.alloc_zeros::<u8>(blocks * threads * 16)?;
    let mut out = Vec::new();
    for (order, name) in READ_ORDERS.iter().enumerate() {
        for hint in [0, 1] {
            let module = dev.module(
                "paged_attention.cu",
                &[("PA_HINT", hint), ("PA_READ", order as i64)],
            )?;
            let f = module.load_function("read_bandwidth")?;
            let cfg = LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (threads as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let n = words as u64;
            let mut ms = dev.time_each(3, 20, |_| {
                // SAFETY: `x` holds `words` 16-byte words and `sink` one per thread of the grid.
                unsafe {
                    st.launch_builder(&f)
                        .arg(&x)
                        .arg(&n)
                        .arg(&mut sink)
                        .launch(cfg)
                }?;
                Ok(())
            })?;
            ms.sort_by(f64::total_cmp);
            out.push((
                *name,
                hint == 1,
                (words * 16) as f64 / ms[ms.len() / 2] / 1e6,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Head-major order: kv head `h`'s piece of block `b` moves to slot `h * num_blocks + b`, every
    /// piece whole.
    #[test]
    fn head_major_puts_each_heads_blocks_side_by_side() {
        let (nb, hkv, piece) = (3, 2, 4);
        // Element i of block b, head h holds 100 b + 10 h + i.
        let pool: Vec<u32> = (0..nb)
            .flat_map(|b| (0..hkv).flat_map(move |h| (0..piece).map(move |i| 100 * b + 10 * h + i)))
            .map(|x| x as u32)
            .collect();
        let hm = head_major(&pool, nb, hkv, piece);
        let want: Vec<u32> = (0..hkv)
            .flat_map(|h| (0..nb).flat_map(move |b| (0..piece).map(move |i| 100 * b + 10 * h + i)))
            .map(|x| x as u32)
            .collect();
        assert_eq!(hm, want);
        assert_eq!(
            head_major(&hm, hkv, nb, piece),
            pool,
            "the inverse order is the same map"
        );
    }

    /// `decode`'s choice by head size, and the shared memory each choice asks for.
    #[test]
    fn the_default_tuning_fits_every_head_size() {
        for d in [32, 64, 128] {
            assert_eq!(Tuning::for_head(d), Tuning::TENSOR_CORES, "D = {d}");
        }
        let big = Tuning::for_head(256);
        assert!(!big.tc && big.warps == 8, "{big:?}");
        assert_eq!(Tuning::for_head(48), Tuning::REGISTERS);
        // The tensor-core ring: warps x stages x (K, V) x 16 rows of D, unpadded (the swizzle).
        let tc = Tuning::TENSOR_CORES;
        assert_eq!(tc.shared_bytes(128, 2), 8 * 3 * 2 * 16 * 128 * 2);
        // Its table doubles (no partial sums in static shared memory); the 16-warp register path's
        // partial sums leave room for the base table only.
        assert_eq!(tc.table_entries(128, 4), 2 * MAX_TABLE);
        assert_eq!(Tuning::REGISTERS.table_entries(128, 4), MAX_TABLE);
        assert_eq!(big.table_entries(256, 4), MAX_TABLE);
    }

    /// The kernel's walk of an even split (`decode_body` with `PA_SPLIT`), replayed on the host: every
    /// key of every row lands in exactly one block, the blocks a row meets number at most `max_parts`,
    /// and each block's partial slot is one of them.
    #[test]
    fn an_even_split_covers_every_key_once() {
        let window = Mask::sliding(700, true).unwrap();
        let cases: [(&[usize], Mask, usize, usize, usize); 6] = [
            (&[4096; 16], Mask::NONE, 8, 132, 128),
            (&[65536; 16], Mask::NONE, 8, 132, 128),
            (&[1, 300, 5000], Mask::NONE, 2, 132, 128),
            (&[1, 300, 5000], window, 2, 264, 32),
            (&[0, 17, 0, 3000, 1200], Mask::NONE, 4, 10, 8),
            (&[0, 0], Mask::NONE, 3, 132, 128),
        ];
        for (lens, mask, rows_per_seq, slots, min_tokens) in cases {
            let plan = split_plan(lens, mask, rows_per_seq, slots, min_tokens);
            let (w, g) = (plan.work as u64, plan.blocks as u64);
            let block_of = |z: u64| ((z + 1) * g - 1) / w;
            let mut covered = vec![0u32; plan.work];
            let mut start = 0u64;
            for &len in lens {
                let vis = visible(mask, len) as u64;
                for _ in 0..rows_per_seq {
                    if vis > 0 {
                        let (u0, u1) = (start, start + vis);
                        let (first, last) = (block_of(u0), block_of(u1 - 1));
                        assert!((last - first + 1) as usize <= plan.max_parts, "{plan:?}");
                        for b in first..=last {
                            // Block b's range [b W / G, (b + 1) W / G) meets the row here.
                            let (x0, x1) = ((b * w / g).max(u0), ((b + 1) * w / g).min(u1));
                            assert!(x0 < x1, "block {b} has no key of the row");
                            for x in x0..x1 {
                                covered[x as usize] += 1;
                            }
                        }
                    }
                    start += vis;
                }
            }
            assert_eq!(start, w);
            assert!(covered.iter().all(|&c| c == 1), "{plan:?}");
            assert!(plan.blocks <= slots.max(1));
        }
    }
}
