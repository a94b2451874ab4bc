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
//! every K/V load). Every table entry is checked on the host before the table is uploaded
//! ([`check_tables`]), and the device buffers cannot be swapped afterwards, so a kernel never follows an
//! entry past the pool.

use super::flash::GpuElement;
use super::{Device, GpuError};
use crate::minimodel::paged::paged_attention::{check_tables, PagedBatch, PagedError, PagedKv};
use crate::minimodel::shape::{AttnShape, Mask};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

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
}

// SAFETY: `PagedParams` is `repr(C)`, plain data, and matches the kernels' struct field for field.
unsafe impl DeviceRepr for PagedParams {}

/// Head sizes the kernel is compiled for (`TPT = D / 8` lanes per token must divide a warp).
pub const HEAD_DIMS: &[usize] = &[32, 64, 128, 256];
/// Table entries of one partition the kernel holds in shared memory (`MAX_TABLE`).
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
    },
    /// `(S, Hkv, nk, D)`, sequence `s`'s token `t` at row `t`.
    Contiguous {
        /// Rows per (sequence, kv head).
        nk: usize,
    },
}

/// Device buffers of one decode batch.
pub struct DecodeBuffers<T: GpuElement> {
    /// Where K and V live.
    pub layout: Layout,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads.
    pub hkv: usize,
    /// Head size.
    pub d: usize,
    seq_lens: Vec<usize>,
    table_stride: usize,
    q: CudaSlice<T>,
    k: CudaSlice<T>,
    v: CudaSlice<T>,
    tables: CudaSlice<i32>,
    lens: CudaSlice<i32>,
    /// `(S, Hq, D)`.
    pub o: CudaSlice<T>,
    /// `(S, Hq)`, natural log.
    pub lse: CudaSlice<f32>,
    part_out: Option<CudaSlice<f32>>,
    part_ml: Option<CudaSlice<f32>>,
    /// One arrival counter per (sequence, head chunk) for the fused merge; zero between launches.
    counters: Option<CudaSlice<i32>>,
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
        };
        Self::upload(
            dev,
            q,
            hq,
            kv.hkv(),
            kv.d(),
            layout,
            kv.k(),
            kv.v(),
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
        };
        b.poison(dev)?;
        Ok(b)
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
    /// K/V loads skip L1 and ask L2 for 256-byte lines.
    pub hint: bool,
    /// Thread blocks per resident slot the partitions aim for ([`partition_for`]).
    pub waves: usize,
    /// K/V chunks arrive in shared memory by bulk asynchronous copies (Hopper's copy engine), with
    /// `stages` chunks in flight per warp; `false`: 16-byte loads into registers.
    pub bulk: bool,
    /// Chunks in flight per warp when `bulk`.
    pub stages: usize,
}

impl Tuning {
    /// What [`decode`] uses.
    pub const DEFAULT: Tuning = Tuning {
        warps: 16,
        passes: 4,
        fused: false,
        hint: false,
        waves: 1,
        bulk: false,
        stages: 3,
    };

    /// The tunings the harness sweeps: the default, then one change at a time.
    pub fn sweep() -> Vec<Tuning> {
        let d = Tuning::DEFAULT;
        vec![
            d,
            Tuning { hint: true, ..d },
            Tuning { fused: true, ..d },
            Tuning { passes: 8, ..d },
            Tuning { warps: 4, ..d },
            Tuning { warps: 8, ..d },
            Tuning { waves: 2, ..d },
            Tuning { waves: 4, ..d },
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

    /// `w4-p8-x1`, `w4-p8-x1-fused-hint`, `w4-p8-x1-bulk3`, ...
    pub fn name(&self) -> String {
        format!(
            "w{}-p{}-x{}{}{}{}",
            self.warps,
            self.passes,
            self.waves,
            if self.fused { "-fused" } else { "" },
            if self.hint { "-hint" } else { "" },
            if self.bulk {
                format!("-bulk{}", self.stages)
            } else {
                String::new()
            }
        )
    }

    fn defines(&self) -> [(&'static str, i64); 6] {
        [
            ("PA_WARPS", self.warps as i64),
            ("PA_PASSES", self.passes as i64),
            ("PA_FUSED", self.fused as i64),
            ("PA_HINT", self.hint as i64),
            ("PA_BULK", self.bulk as i64),
            ("PA_STAGES", self.stages as i64),
        ]
    }

    /// Dynamic shared memory of the partition kernel: the warps' rings of chunks when `bulk`.
    pub fn shared_bytes(&self, d: usize, elem: usize) -> usize {
        if self.bulk {
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
/// up to whole blocks, at least one chunk per warp, and at most the kernel's table of `MAX_TABLE` blocks.
pub fn partition_for(
    max_len: usize,
    groups: usize,
    slots: usize,
    waves: usize,
    min_tokens: usize,
    block_size: usize,
) -> usize {
    let parts = (waves * slots / groups.max(1)).max(1);
    let p = max_len.div_ceil(parts).max(min_tokens);
    let p = p.div_ceil(block_size) * block_size;
    p.min(MAX_TABLE * block_size)
}
// ANCHOR_END: partition_for

/// Query heads one thread block computes: the largest of 4, 3, 2, 1 that divides the group `G`
/// (4 heads' queries, scores and accumulators fit in registers beside 16 loads in flight).
pub fn group_chunk(g: usize) -> usize {
    (1..=4).rev().find(|c| g.is_multiple_of(*c)).unwrap_or(1)
}

/// Run the decode on `bufs` with `mask` (causal is no mask for the last token; a window keeps the last
/// `W` keys) and partitions of `partition` keys (`None`: [`partition_for`]). Asynchronous: download or
/// synchronize to wait. Returns the partition size used.
pub fn decode<T: GpuElement>(
    dev: &Device,
    bufs: &mut DecodeBuffers<T>,
    mask: Mask,
    partition: Option<usize>,
) -> Result<usize, GpuError> {
    decode_tuned(dev, bufs, mask, partition, Tuning::DEFAULT)
}

/// [`decode`] with the kernel's compile-time choices given.
pub fn decode_tuned<T: GpuElement>(
    dev: &Device,
    bufs: &mut DecodeBuffers<T>,
    mask: Mask,
    partition: Option<usize>,
    tuning: Tuning,
) -> Result<usize, GpuError> {
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
    if tuning.bulk && !dev.arch().starts_with("sm_9") && !dev.arch().starts_with("sm_1") {
        return Err(GpuError::NotSupported {
            what: "bulk asynchronous copies (sm_90 or newer)",
            arch: dev.arch(),
        });
    }
    let (s, hq, d) = (bufs.num_seqs(), bufs.hq, bufs.d);
    let g = hq / bufs.hkv;
    let gc = group_chunk(g);
    let bs = match bufs.layout {
        Layout::Paged { block_size, .. } => block_size,
        Layout::Contiguous { .. } => 16, // only the partition's granularity
    };
    let max_len = bufs.seq_lens.iter().copied().max().unwrap_or(1);
    let module = module_for::<T>(dev, d, gc, bs, tuning)?;
    let name = match bufs.layout {
        Layout::Paged { .. } => "paged_decode_partition",
        Layout::Contiguous { .. } => "contiguous_decode_partition",
    };
    let f = module.load_function(name)?;
    let threads = 32 * tuning.warps as u32;
    let smem = tuning.shared_bytes(d, std::mem::size_of::<T>());
    if smem > 0 {
        // Dynamic beside the static shared memory may pass the 48 KB a launch gets by default.
        f.set_attribute(
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )?;
    }
    let partition = match partition {
        Some(p) => p,
        None => {
            let sms = dev.attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )? as usize;
            let per_sm = f.occupancy_max_active_blocks_per_multiprocessor(threads, smem, None)?;
            let min_tokens = tuning.warps * chunk(d, tuning.passes);
            partition_for(
                max_len,
                s * (hq / gc),
                sms * per_sm.max(1) as usize,
                tuning.waves,
                min_tokens,
                bs,
            )
        }
    };
    if partition == 0 || !partition.is_multiple_of(bs) || partition / bs > MAX_TABLE {
        return Err(PagedError::BadPartition {
            partition,
            block_size: bs,
        }
        .into());
    }
    let num_parts = max_len.div_ceil(partition);
    let grid_y = hq / gc;
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
        window: mask.window.map_or(0, |w| w.get().min(max_len + 1)) as i32,
        scale_log2: std::f32::consts::LOG2_E / (d as f32).sqrt(),
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
    if bufs.counters.is_none() {
        bufs.counters = Some(st.alloc_zeros::<i32>(s * grid_y)?);
    }
    let cfg = LaunchConfig {
        grid_dim: (num_parts as u32, grid_y as u32, s as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let (po, pm, counters) = (
        bufs.part_out.as_mut().expect("allocated above"),
        bufs.part_ml.as_mut().expect("allocated above"),
        bufs.counters.as_mut().expect("allocated above"),
    );
    // SAFETY: argument types and order match the kernel; every index it forms was validated (table
    // entries < num_blocks, lengths within the tables and the pool, partition <= MAX_TABLE blocks,
    // 32-bit quantities checked above).
    unsafe {
        st.launch_builder(&f)
            .arg(&bufs.q)
            .arg(&bufs.k)
            .arg(&bufs.v)
            .arg(&bufs.tables)
            .arg(&bufs.lens)
            .arg(po)
            .arg(pm)
            .arg(&mut bufs.o)
            .arg(&mut bufs.lse)
            .arg(counters)
            .arg(&p)
            .launch(cfg)
    }?;
    if num_parts > 1 && !tuning.fused {
        let f = module.load_function("paged_decode_reduce")?;
        let cfg = LaunchConfig {
            grid_dim: (hq as u32, s as u32, 1),
            block_dim: (d as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (po, pm) = (
            bufs.part_out.as_ref().expect("allocated above"),
            bufs.part_ml.as_ref().expect("allocated above"),
        );
        // SAFETY: as above; the partials were written by the launch before on the same stream.
        unsafe {
            st.launch_builder(&f)
                .arg(po)
                .arg(pm)
                .arg(&bufs.lens)
                .arg(&mut bufs.o)
                .arg(&mut bufs.lse)
                .arg(&p)
                .launch(cfg)
        }?;
    }
    Ok(partition)
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

/// The compiled module for head size `d`, `gc` heads per block, block size `bs` and `tuning`.
fn module_for<T: GpuElement>(
    dev: &Device,
    d: usize,
    gc: usize,
    bs: usize,
    tuning: Tuning,
) -> Result<std::sync::Arc<cudarc::driver::CudaModule>, GpuError> {
    let mut defines = vec![
        ("PA_D", d as i64),
        ("PA_GC", gc as i64),
        ("PA_BLOCK", bs as i64),
        ("PA_BF16", T::BF16 as i64),
    ];
    defines.extend(tuning.defines());
    dev.module("paged_attention.cu", &defines)
}

/// Registers per thread of the partition kernel for head size `d`, group `g`, block size `bs`.
pub fn registers(
    dev: &Device,
    d: usize,
    g: usize,
    bs: usize,
    tuning: Tuning,
) -> Result<i32, GpuError> {
    let module = module_for::<half::f16>(dev, d, group_chunk(g), bs, tuning)?;
    Ok(module.load_function("paged_decode_partition")?.num_regs()?)
}

/// The card's HBM read bandwidth in GB/s: the `read_bandwidth` kernel over `bytes` bytes, with and
/// without the L2 line hint (median of 20 launches each); the faster of the two.
pub fn read_bandwidth_gbps(dev: &Device, bytes: usize) -> Result<f64, GpuError> {
    let words = bytes / 16;
    let st = dev.stream();
    let x = st.alloc_zeros::<u8>(words * 16)?;
    let sms = dev.attribute(
        cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
    )? as usize;
    let (blocks, threads) = (sms * 8, 256usize);
    let mut sink = st.alloc_zeros::<u8>(blocks * threads * 16)?;
    let mut best = 0.0f64;
    for hint in [0, 1] {
        let module = dev.module("paged_attention.cu", &[("PA_HINT", hint)])?;
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
        best = best.max((words * 16) as f64 / ms[ms.len() / 2] / 1e6);
    }
    Ok(best)
}
