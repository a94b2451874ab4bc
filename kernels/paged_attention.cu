// Paged decode attention on the GPU (lab 03): one query token per sequence, K and V read through a
// block table, GQA by index, split over the keys into partitions merged by their log-sum-exp.
//
// Shapes (row-major, contiguous):
//   q, o:      (S, Hq, D)                   one query token per sequence
//   k, v pool: (num_blocks, Hkv, BLOCK, D)  token t of sequence s: block tables[s * table_stride + t / BLOCK],
//                                           row t % BLOCK (the CPU module's layout, src/minimodel/paged);
//              or (Hkv, num_blocks, BLOCK, D) with PA_HEAD_MAJOR (pool_row)
//   contiguous twin: k, v: (S, Hkv, nk_stride, D), token t of sequence s at row t
//   seq_lens:  (S,) int; lse: (S, Hq) f32, natural log of each row's softmax denominator.
// Query head h reads kv head h / G, G = Hq / Hkv. Sequence s attends to its keys [lo, len) with lo = 0,
// or len - W under a window of W. PyTorch's line for the contiguous twin:
//     o = F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)
//
// The structure is PagedAttention V2 (vLLM, csrc/attention/attention_kernels.cuh): a grid of
// (partition, query-head chunk, sequence) thread blocks, each attending its query heads to one
// partition of P keys and writing a normalised partial output with its running max and sum; a second
// kernel merges a row's partials by the log-sum-exp (Theory 01's merge). What is ours:
//   * GQA: a block computes PA_GC query heads of one kv head together, so each K/V row it loads
//     serves PA_GC heads (vLLM's V1/V2 kernels give each query head its own block; K/V reuse across
//     a group then comes from L2).
//   * No `x`-interleaved K layout: a token's D values are contiguous, and TPT = D / 8 lanes read them as
//     16-byte vectors, so a warp reads 32 consecutive 16-byte words per pass.
//   * Each warp owns chunks of CHUNK = PA_PASSES passes of tokens, issues all their K and V loads before
//     any arithmetic (2 PA_PASSES independent 16-byte loads per lane in flight), then updates its
//     online-softmax state once per chunk.
//   * The partition size is chosen so that the grid is one full wave of resident thread blocks
//     (src/gpu/paged.rs, partition_for): at 4k tokens a last partial wave cost more than any load trick.
//
// Compiled at run time by NVRTC with PA_D (head size), PA_GC (query heads per block), PA_BLOCK (tokens
// per block), PA_BF16, the pool's order (PA_HEAD_MAJOR) and the tuning (PA_WARPS, PA_PASSES, PA_FUSED,
// PA_HINT, PA_BULK, PA_STAGES, PA_SPLIT, PA_TC, PA_PREFETCH, PA_TOUCH, PA_HPB, PA_CLUSTER, PA_EARLY) defined by
// the host (src/gpu/paged.rs).
//
// Changelog (H100, measured with bench/gpu.sh; the numbers are in measurements/gpu-*.json, variants
// paged_decode and paged_decode_sweep, and in Lab 03's tables 03.5 and 03.6):
//   1. Fixed partitions of 256-2048 keys, 8 passes, separate merge launch: near the read roof at 64k
//      tokens, far from it at 2k-4k, where the last partial wave of blocks left SMs idle.
//   2. Partitions sized to one full wave of resident blocks (occupancy calculator): the largest gain at
//      2k-4k tokens.
//   3. Tried and kept as switches, not defaults: the fused last-block merge, L2::256B load hints, 8 warps,
//      Hopper bulk copies into per-warp shared-memory rings. None paid on this shape.
//   4. 4 passes per chunk (128 instead of 168 registers: more resident blocks).
//   5. 16 warps per block, one block per SM: one partition per row up to 16k tokens, so no merge
//      launch; the default.
//   6. An even split (PA_SPLIT: one equal share of all rows' keys per resident block, ranges that cross
//      rows merged by the row's last block): one wave with no idle SM, but 5-21% slower at 2k-16k
//      tokens and 3% at 64k (commit 07286fc): a share that straddles two rows starts twice, and with
//      one block per SM nothing hides a start. Kept as a switch.
//   On an H200 (same SMs and clock, HBM3e; 2026-11-28), the same kernel at 83542f1 reached only 72-79% of
//   the read roof where its contiguous twin reached 86-96%:
//   7. Branch-free loads: a token past the range re-reads the range's last row (masked), so a chunk's
//      table lookups issue together and every load right after; with a branch per pass, each pass's
//      loads waited for its own lookup. H200, w16-p4-x1: 4k 0.0852 -> 0.0814 ms, 16k 0.318 -> 0.3075,
//      64k 1.251 -> 1.227 (commit dd26753; two runs). Kept.
//   8. A per-lane cp.async ring (PA_BULK 2, `-asyncS`): the next chunk's copies issued before this
//      chunk's arithmetic. H200: 2k-4k at the contiguous twin's time (-10%); 16k-64k no faster, and in
//      one run 18% slower at 16k. A switch. Yet under ncu (`gpu-probe paged 16384 [async]`, single
//      launches, 3b0c893+probe) the ring is 10% faster at 16k too: paged 270 vs 300 us, contiguous 245
//      vs 263 us; warps issued per scheduler per cycle 0.80 vs 0.65 (the register path is 35% of cycles
//      with no eligible warp, 65% of issue slots used). Open: why back-to-back timing loses that (power
//      or clocks under sustained load are the first suspects: nvidia-smi is read only at the start).
//   9. The read pass (`paged_read_pass`): this kernel's loads without its arithmetic read the shuffled
//      pool within 1-2% of the contiguous copy and at the card's read roof from 16k tokens (3b0c893), so
//      paging's access pattern is not the gap; the decode kernel's per-chunk work with no load in
//      flight is. Next: the next chunk's lookups and loads issued under this chunk's arithmetic.
//  10. Tensor cores (PA_TC, `-tcS`): the block's query heads are the rows of a 16-row mma.sync tile (4
//      real, 12 zero: the tensor cores idle in decode anyway), each warp takes chunks of 16 tokens
//      through a cp.async ring, S = Q K^T and O += P V are 32 m16n8k16 products a chunk fed by
//      ldmatrix, and the rescale of O is skipped when no row's maximum moved. About 100 warp
//      instructions per 16 tokens where the register path issues about 1000. H200 (commit 9d6bc6c):
//      w8-tc2 4k 0.0739 ms, 16k 0.2688, 64k 1.110 against the register default's 0.0816, 0.3040, 1.336.
//      The default from de90901 on (Tuning::for_head: D a multiple of 16, at most 128).
//  11. 4096 table entries a partition where the block's static shared memory allows (MAX_TABLE from
//      the host): 64k tokens are one partition a row, no merge launch. H200, 64k: 1.110 -> 1.044 ms.
//  12. The warps' partial sums in their own rings (no static s_acc on the tensor-core path), so a ring
//      of three chunks fits 8 warps at D = 128: no faster than two (2992db3: 16k 0.2638 vs 0.2637 ms),
//      kept as the default. H200 against cuDNN's decode at 2992db3: 0.89x / 0.91x / 0.90x at 4k / 16k /
//      64k, paged within 1-3% of the contiguous twin. ncu at 16k (one launch, 263 us, SM clock 1.74
//      GHz): DRAM 85% busy, 0.33 instructions issued per scheduler cycle (register path 0.65), SMs
//      active 88% of the elapsed cycles (128 blocks on 132 SMs, uneven finish). The harness's timing
//      runs at the 700 W power limit with SM clocks of 1.4-1.98 GHz (smi-paged.csv).
//  13. The ring's rows unpadded, their 16-byte pieces swizzled (SWZ, v6's 128-byte swizzle) instead of
//      16 bytes of padding. ncu at 16k beside the read pass (gpu-probe paged 16384 tc|read): the same
//      1.07 GB from DRAM, but 50.3M L2 sectors requested by the copies against 33.6M, 22.8M of them L2
//      hits, and L2 at 92% of its throughput with DRAM at 85%: a padded row starts 16 bytes past a
//      128-byte line, so every global line was split into two overlapping requests. H200 at 709ee7c:
//      paged 0.0382 / 0.0673 / 0.2452 / 0.9469 ms at 2k / 4k / 16k / 64k (before: 0.0406 / 0.0733 /
//      0.2633 / 1.0219), 86-98% of the read roof from 4k; cuDNN 0.96x / 0.97x / 0.97x / 0.97x; the
//      contiguous twin 1.01x / 1.00x at 16k / 64k. GQA-4 (Lab 04) 0.1951 -> 0.1289 ms.
//  14. Not a kernel change: the harness also reads the batch through a fresh pool's tables (the block
//      manager's, each sequence a run of consecutive blocks; `ours/gpu-paged-fresh`). H200 at cade349,
//      PyTorch's default dispatch in the same run: shuffled pool 0.0685 / 0.2501 / 0.9724 ms at 4k /
//      16k / 64k, fresh pool 0.0679 / 0.2467 / 0.9574, contiguous twin 0.0665 / 0.2420 / 0.9413,
//      PyTorch 0.0668 / 0.2443 / 0.9447: the blocks' scatter is about half of paging's cost at
//      16k-64k, the block-by-block layout the rest.
//  15. Tried on the tensor-core path, kept as switches, not defaults (H200, commit 25e219b, one run;
//      shuffled pool, default tc3 at 4k / 16k / 64k: 0.0683 / 0.2500 / 0.9830 ms in the sweep):
//      L2 prefetches of the block 1, 2 or 4 chunks past the ring's (PA_PREFETCH): 0.0750 / 0.2775 /
//      1.110 at one chunk, worse the further ahead (0.0949 / 0.3717 / 1.417 at four): the ring already
//      holds 16 chunks of a block in flight, and each prefetch line is a second request for the
//      same bytes. The 256-byte L2 hint on the ring's copies (PA_HINT): 0.0719 / 0.2757 / 1.033.
//      A head-major pool (PA_HEAD_MAJOR: each kv head its own pool, so the fresh tables' blocks are
//      one contiguous run per head, the contiguous twin's addresses in another order): shuffled
//      0.0690 / 0.2501 / 0.9690 against block-major's 0.0685 / 0.2499 / 0.9729, no change; fresh
//      0.0670 / 0.2435 / 1.0128 against 0.0688 / 0.2503 / 0.9665 and the twin's 0.0666 / 0.2428 /
//      0.9417: the twin's time at 4k-16k, as its addresses promise, and 7% slower at 64k, where the
//      same 128 regions of 16 MB are read as the twin's by other thread blocks (unexplained; the
//      order of a pool's regions, not its blocks' layout, is the suspect). Paging's remaining cost
//      on a shuffled pool is then neither the table's latency nor the layout of a block's heads.
//  16. Every head chunk of a sequence in one block (PA_HPB, `-hN`: warp w on chunk w % N), so that at
//      N = 8 a block's warps read one pool block's eight kv heads side by side: 32 KB runs of K and V
//      instead of scattered 4 KB pieces. H200 at 958b786, 16k / 64k: shuffled 0.2547 / 0.9588 ms
//      against the default's 0.2454 / 0.9566, fresh tables 0.2487 / 0.9326 against 0.2374 / 0.9258:
//      slower (16 rows of blocks need partitions and a merge), and the scatter costs it as much.
//      A switch, not the default.
//  17. A diagnosis (host only): the fresh tables with the pool's blocks shuffled within aligned
//      windows of 8, 64 or 512 blocks (`localW`; 256 KB, 2 MB, 16 MB of K). H200 at 958b786, 16k:
//      fresh 0.2374, local8 0.2375, local64 0.2397, local512 0.2436, shuffled 0.2454 ms (64k: 0.9258,
//      0.9261, 0.9295, 0.9393, 0.9460). A scatter within 256 KB is free; the cost grows with the
//      distance between the blocks read at once (2 MB translation pages, or the DRAM's open rows).
//      The shuffled tables with each row's entries sorted (`sorted`, every row sweeping the pool in
//      address order; H200 at 1d070e4): 16k 0.2487 ms as the shuffled pool's 0.2487, 64k 0.9645
//      against 0.9761 and local512's 0.9666: the rows' places relative to each other do not matter,
//      one row's own spread does (each SM's translations more likely than the shared DRAM rows).
//  18. Translations ahead (PA_TOUCH, `-tN`): lane 0 asks L2 for one line of K and of V of the chunk
//      N ahead. H200 at 958b786, 16k / 64k: 0.2470 / 0.9627 ms at N = 1, 0.2481 / 0.9690 at N = 4,
//      against the default's 0.2454 / 0.9566 in the same sweep: no gain, so not the translations'
//      latency. A switch.
//  19. A sequence's thread blocks as one cluster (PA_CLUSTER, `-cN`, `__cluster_dims__(1, N, 1)`), so
//      that the hardware puts the N rows of blocks reading the same pool blocks on one GPC (at N = 2,
//      in practice one pair of SMs) instead of beside other sequences' rows: if a GPC's or a pair's
//      address translations were what the scatter costs, fewer sequences a GPC would recover it.
//      H200 at b9dfac4, shuffled pool, 2k / 4k / 16k / 64k: N = 2 0.0380 / 0.0686 / 0.2485 / 0.9669 ms
//      against the default's 0.0381 / 0.0687 / 0.2505 / 0.9980 in the same sweep (and 0.0387 / 0.0688 /
//      0.2489 / 0.9740 in Table 03.5's column of the same run): level at 2k-4k, and at 16k / 64k ahead
//      of both measurements of the default by 0.2% / 0.7% against the nearer one, less than the 2.5%
//      between those two at 64k: too little to call from one run. N = 8 and 4: a third slower at every
//      context (16k 0.3589 / 0.3420), on the fresh tables too (N = 8: 0.3403 against 0.2427): fewer
//      clusters fit the GPU at once than there are rows, so the step takes a partial second wave, and
//      the test of the hypothesis drowns in it. N = 2 against the plain kernel in alternating rounds
//      (`gpu-probe paged N tc [fresh] ab`, 8 rounds of 20 launches each, H200, 2026-11-29), median
//      ratio plain / clustered: shuffled 2k 1.008, 4k 1.006, 16k 1.007 (every round 1.005-1.008), 64k
//      1.011 (1.003-1.014); fresh 2k 1.000, 4k 1.001, 16k 1.001, 64k 1.012 (1.004-1.013). Never slower,
//      ahead most on the scattered pool: the default on sm_90 and newer (Tuning::for_call).
//  20. Not a kernel change: the kinds of table in interleaved rounds (Lab 03's Table 03.7: every pool
//      resident at once, 7 rounds, each price against the contiguous twin within a round, interquartile
//      ranges of a few tenths of a percent). H200 at 1ae6b69, 2k / 4k / 16k / 64k, over the twin:
//      shuffled +7.8 / +5.0 / +2.9 / +2.0%; fresh +0.6 / +1.7 / +1.7 / +1.4%; head-major fresh
//      +1.4 / -0.9 / +0.7 / +0.3% (so entry 15's 7% at 64k was a single timing's drift, not the
//      layout); head-major shuffled +3.2 / +2.0 / +3.6 / +2.8%; local8 / local512 +1.1 / +2.3% at 2k,
//      +1.3 / +1.6% at 64k; sorted +3.1 / +1.8 / +2.6 / +1.7% (at 2k-4k the rows' places relative to
//      each other are most of the scatter's price, which revises entry 17's reading there); the
//      block manager's served tables (replay::served_tables) +4.8 / +3.3 / +3.0 / +2.4%, and with
//      Placement::AfterLast +5.1 / +2.7 / +3.7 / +2.4%. Again at 88dfab9: shuffled +6.7 / +4.3 / +2.6 /
//      +2.0%, fresh +1.0 / +1.7 / +0.5 / +0.6% (the fresh tables' price moves between runs by as much
//      as it is), served on the head-major pool +4.9 / +2.9 / +3.0 / +2.2% against block-major's
//      +5.4 / +2.7 / +2.8 / +2.2%. In the decode race of the same call (torch_decode_race.py, 5 rounds)
//      PyTorch's default SDPA over the paged kernel 0.96 / 0.97 / 0.97 at 4k / 16k / 64k, over the
//      contiguous twin 1.00 / 0.99 / 0.99: at long contexts both contiguous kernels read at the HBM
//      roof, and paging's price is the whole distance to the speed target.
//  21. Not a kernel change: the host's share of a step (src/gpu/paged.rs keeps each decode's launch plan,
//      the checks, module, occupancy query and partition, with its buffers; Lab 03's Table 03.9, variant
//      decode_launch). H200 at 819f1f0, N = 64, paged / contiguous: as launched 7.2 / 6.8 us, the GPU
//      alone (queued behind a held stream) 7.2 / 6.8, the host 3.4 / 3.6 us a call; with the plan worked
//      out every call 7.1 / 7.6 us, host 6.2 / 6.7 (in a smoke run on another host that day 15.2 / 15.7
//      us, host 11.6 / 11.5: Table 03.5's 64-token row had read 14.5 / 15.6 us at 88dfab9); a CUDA graph
//      6.3 / 5.9 us, host 1.1. PyTorch's default dispatch in the same call: as launched 44.3 us (host 24.5),
//      GPU alone 6.8, graph 16.0 (host 4.6), graph GPU alone 5.8. At 2048 tokens all of ours agree
//      within 1%.
//  22. Not a kernel change: the block manager's Placement::Chunked (a sequence continues in its own aligned
//      chunk of 8 blocks, new chunks only from wholly free ones; Lab 03's served-chunked). H200 at a7884aa,
//      Table 03.7's rounds, 2k / 4k / 16k / 64k over the contiguous twin: served-chunked +1.1 / +2.3 / +1.7 /
//      +1.2%, against vLLM's placement on the same scenario (served) +4.1 / +4.3 / +3.0 / +2.4%, the fresh
//      tables +0.1 / +2.2 / +1.6 / +1.0%, the shuffled pool +3.1 / +4.4 / +2.9 / +2.0%. Decode race, PyTorch's
//      default SDPA over ours, 5 rounds: chunked 0.97 / 0.99 / 0.98 / 0.99, shuffled 0.95 / 0.96 / 0.98 /
//      0.98, contiguous twin 1.00 / 1.01 / 1.01 / 1.00. About half of paging's price is the allocator's;
//      the rest stays with the block-major layout, as the fresh tables' row says.
//  23. Not a kernel change: the chunked served tables on a head-major pool (served-chunked-hm). H200 at
//      f202bc7, rounds, 2k / 4k / 16k / 64k over the twin: +2.5 / +3.5 / +2.8 / +1.7%, against the block-
//      major pool's +2.1 / +1.3 / +2.5 / +1.4%, fresh-hm +1.8 / +0.7 / +0.6 / +0.3%; race, SDPA over ours
//      at 4k / 16k / 64k: chunked-hm 0.98 / 0.97 / 0.98, chunked 0.99 / 0.99 / 0.99, shuffled 0.98 / 0.98 /
//      0.98, contiguous 1.01 / 1.01 / 1.00 (at 2k PyTorch's time was bimodal again: 1.34-2.12x for every
//      one of ours). A head-major pool needs runs longer than a chunk to pay.
//  24. Not a kernel change: chunks of 64 blocks on the head-major pool (chunked64-hm) in the decode race
//      alone (H200, c87e2be, 5 rounds, SDPA over ours at 2k / 4k / 16k / 64k): chunked64-hm 0.99 / 0.98 /
//      0.98 / 0.98, chunked 0.99 / 0.98 / 0.97 / 0.97, chunked-hm 0.96 / 0.97 / 0.97 / 0.97, shuffled 0.96 /
//      0.95 / 0.97 / 0.97, contiguous twin 1.01 / 1.00 / 0.99 / 0.99 (PyTorch a little faster in this call
//      than in f202bc7's). The closest paged entry stays a percent or two behind.
//  25. The early start (PA_EARLY, `-e`, `paged_early`): with no window, a block's first table entries and
//      its ring's first chunks are asked for before its sequence's length arrives (clamped to the
//      partition's end, V rows past the length zeroed), so that the length's load, the table's and the
//      first copies overlap instead of following one another. If a decode step's fixed cost (about
//      6 us at 64 tokens, Table 03.9) were those round trips, this would take one or two off it. H200 at
//      e9aa35b, the default against the same with the early start in alternating rounds (`gpu-probe
//      paged N tc ab early`, 8 rounds of 20 launches), median ratio default / early, shuffled pool and
//      contiguous twin: 64 tokens 1.03 / 0.99 (rounds 0.95-1.31: 6-7 us either way), 2k 0.997 / 1.002,
//      4k 0.999 / 0.999, 16k 1.000 / 1.000, 64k 0.999 / 1.000; fresh tables 2k 0.997, 16k 0.999. Level:
//      the chain is not where the fixed cost lies (the length and the table are likely L2 hits by the
//      time most blocks ask). A switch. (racecheck at a831f22 found the early copies past a short range
//      still landing while other lanes wrote the partial sums into the ring: a __syncwarp after the
//      last wait, 4e85c84; racecheck and memcheck clean again at ecacdb2, H200, 2026-11-30.)
//  26. Not a kernel change: the chunked served tables with chunks of 64 blocks on the head-major pool in
//      Table 03.7's rounds too (served-chunked64-hm). H200 at a831f22, over the contiguous twin at 2k / 4k /
//      16k / 64k: +3.1 / +2.6 / +1.1 / +1.0%, against served-chunked +1.8 / +2.0 / +2.5 / +2.1%, fresh-hm
//      +1.5 / +0.5 / +0.5 / +0.3%, the shuffled pool +3.3 / +5.1 / +2.2 / +2.4%. Decode race of the same
//      call, SDPA over ours, 5 rounds: chunked64-hm 0.998 / 0.994 / 1.0005 / 0.998, chunked 0.995 / 0.990 /
//      0.998 / 0.991, shuffled 0.977 / 0.965 / 0.984 / 0.982, contiguous twin 1.023 / 1.010 / 1.011 /
//      1.002. The closest paged entry is level with cuDNN's decode within half a percent in this run, on
//      either side of it; not yet a lead.
//  27. Not a kernel change: chunks of 512 blocks (2 MB of a kv head's K) on the head-major pool,
//      served-chunked512-hm in the rounds and chunked512-hm in the race. H200 at c861226, rounds over the
//      twin at 2k / 4k / 16k / 64k: +6.1 / +6.4 / +1.6 / +0.3%, against chunked64-hm's +3.2 / +2.7 / +1.4 /
//      +0.9%, fresh-hm's +0.9 / +0.2 / +0.5 / +0.2% and the shuffled pool's +3.3 / +3.4 / +2.4 / +2.4%. At
//      2k-4k the pool (twice the batch) has no more chunks than sequences, so most sequences share one
//      (Table 03.8: 32% / 57% of neighbours continue a run, 99.8% at 64k). Race, SDPA over ours at 4k / 16k
//      / 64k: chunked512-hm 0.962 / 0.996 / 0.996, chunked64-hm 0.997 / 1.005 / 0.993, shuffled 0.985 /
//      0.969 / 0.978, twin 1.006 / 1.014 / 1.002 (2k: PyTorch slow again, 1.38-1.46x ours for every entry).
//      No chunk width leads at every context; the width that pays grows with the context.
// cuDNN's decode (PyTorch's default dispatch) stays a few percent ahead at 4k-64k tokens on the H100
// (register path, 07286fc) and a few percent ahead of the paged kernel on a shuffled pool on the H200
// (958b786): paging's own cost, since the contiguous twin and the fresh pool's tables match it there.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#ifndef PA_D
#define PA_D 128
#endif
#ifndef PA_GC
#define PA_GC 4
#endif
#ifndef PA_BLOCK
#define PA_BLOCK 16
#endif
#ifndef PA_BF16
#define PA_BF16 0
#endif
#ifndef PA_WARPS
#define PA_WARPS 4  // warps per thread block
#endif
#ifndef PA_PASSES
#define PA_PASSES 8  // token passes per warp chunk: 2 * PA_PASSES loads of 16 bytes in flight per lane
#endif
#ifndef PA_BULK
#define PA_BULK 0    // 1 (Hopper): K/V chunks arrive in shared memory by bulk asynchronous copies;
                     // 2: by each lane's own 16-byte asynchronous copies (cp.async, sm_80 or newer)
#endif
#ifndef PA_STAGES
#define PA_STAGES 3  // PA_BULK: chunks in flight per warp
#endif
#ifndef PA_FUSED
#define PA_FUSED 0  // 1: the last block of a row merges the partitions (no second launch)
#endif
#ifndef PA_SPLIT
#define PA_SPLIT 0  // 1: every block takes an even share of all rows' keys (paged_split)
#endif
#ifndef PA_TC
#define PA_TC 0     // 1: scores and P V on the tensor cores (mma.sync), chunks of 16 tokens in a cp.async ring
#endif
#ifndef PA_HINT
#define PA_HINT 0   // 1: K/V loads skip L1 and ask L2 for whole 256-byte lines
#endif
#ifndef PA_HEAD_MAJOR
#define PA_HEAD_MAJOR 0  // 1: the pool is (Hkv, num_blocks, BLOCK, D): a block id names a slot in each kv
                         // head's own pool, so one head's blocks of a run of ids are one contiguous run
#endif
#ifndef PA_HPB
#define PA_HPB 1  // PA_TC: head chunks a block (warp w takes chunk w % PA_HPB): the block's warps then read
                  // the same table block's kv heads side by side (one block-major pool block at a time)
#endif
#if PA_HPB > 1 && !PA_TC
#error "PA_HPB > 1 needs the tensor-core path (PA_TC)"
#endif
#if PA_WARPS % PA_HPB != 0
#error "PA_WARPS must be a multiple of PA_HPB"
#endif
#ifndef PA_TOUCH
#define PA_TOUCH 0  // PA_TC: > 0, lane 0 of each warp asks L2 for one line of K and one of V of the chunk
                    // this many ahead (the pages' address translations, not the bytes)
#endif
#ifndef PA_PREFETCH
#define PA_PREFETCH 0  // PA_TC: > 0, each warp asks L2 for the K/V block of the chunk this many ahead
#endif
#ifndef PA_EARLY
#define PA_EARLY 0  // PA_TC, partitions, no window: the first piece's table entries and the ring's first
                    // chunks asked for before the sequence's length arrives (paged_early)
#endif
#if PA_EARLY && !PA_TC
#error "PA_EARLY needs the tensor-core path (PA_TC)"
#endif
#ifndef PA_CLUSTER
#define PA_CLUSTER 1  // > 1: a sequence's thread blocks launched as clusters of this many (one GPC each)
#endif
#if PA_CLUSTER > 1
#define PA_CLUSTER_DIMS __cluster_dims__(1, PA_CLUSTER, 1)
#else
#define PA_CLUSTER_DIMS
#endif

#if PA_BF16
typedef __nv_bfloat16 elem_t;
typedef __nv_bfloat162 elem2_t;
__device__ __forceinline__ float2 to_f2(unsigned int u) {
    return __bfloat1622float2(*reinterpret_cast<elem2_t*>(&u));
}
__device__ __forceinline__ elem_t from_f(float x) { return __float2bfloat16_rn(x); }
#else
typedef __half elem_t;
typedef __half2 elem2_t;
__device__ __forceinline__ float2 to_f2(unsigned int u) {
    return __half22float2(*reinterpret_cast<elem2_t*>(&u));
}
__device__ __forceinline__ elem_t from_f(float x) { return __float2half_rn(x); }
#endif

// Eight 16-bit elements (one 16-byte load) widened to f32.
__device__ __forceinline__ void unpack8(const uint4 u, float out[8]) {
    const unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float2 f = to_f2(w[e]);
        out[2 * e] = f.x;
        out[2 * e + 1] = f.y;
    }
}

#define NEG_INF (-__int_as_float(0x7f800000))
#define LN2 0.69314718055994530942f

__device__ __forceinline__ float ex2(float x) {  // 2^x in one MUFU instruction; ex2(-inf) = +0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// A K or V load of 16 bytes that is read once: read-only path, no L1 allocation, and (PA_HINT) an L2
// prefetch of the surrounding 256 bytes, which a block's next rows will want.
__device__ __forceinline__ uint4 load_once(const void* ptr) {
#if PA_HINT
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(ptr));
    return r;
#else
    return __ldg(reinterpret_cast<const uint4*>(ptr));
#endif
}

#if PA_BULK == 2 || PA_TC
// A 16-byte copy global -> shared that leaves the registers free while it flies (L1 bypassed; with
// PA_HINT, L2 asked for the surrounding 256 bytes, which the lanes beside this one want).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
#if PA_HINT
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" ::"r"(
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(
#endif
                     static_cast<unsigned>(__cvta_generic_to_shared(dst))),
                 "l"(src)
                 : "memory");
}
#endif

#if PA_TC
// ANCHOR: tc_helpers
// The tensor-core path (Lab 02's v4/v5 instructions): D = A B + C for a 16x16 A (row major), a 16x8 B
// (column major) and f32 accumulators; ldmatrix loads four 8x8 tiles of 16-bit values from shared
// memory into the fragment layout (`.trans`: transposed, for V).
__device__ __forceinline__ void mma16816(float* c, const unsigned int* a, unsigned int b0, unsigned int b1) {
    asm volatile(
#if PA_BF16
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
#else
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
#endif
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldsm_x4(unsigned int* r, const void* ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(static_cast<unsigned>(__cvta_generic_to_shared(ptr))));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned int* r, const void* ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(static_cast<unsigned>(__cvta_generic_to_shared(ptr))));
}
// Two f32 values rounded into one 32-bit register of the element type (low half first).
__device__ __forceinline__ unsigned int pack2(float a, float b) {
#if PA_BF16
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
#else
    const __half2 h = __floats2half2_rn(a, b);
#endif
    return *reinterpret_cast<const unsigned int*>(&h);
}
// ANCHOR_END: tc_helpers
#endif

#if PA_BULK == 1
// ANCHOR: bulk_helpers
// Hopper's bulk asynchronous copy (the non-tensor form of TMA): one thread asks the copy engine for
// `bytes` contiguous bytes global -> shared; their arrival is counted on an mbarrier in shared memory,
// which the consumers wait on by phase parity.
__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(unsigned long long* bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)));
}
__device__ __forceinline__ void mbar_expect(unsigned long long* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
    unsigned done = 0;
    while (!done) {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            " selp.u32 %0, 1, 0, p;\n}"
            : "=r"(done)
            : "r"(smem_u32(bar)), "r"(parity)
            : "memory");
    }
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
            smem_u32(dst)),
        "l"(src), "r"(bytes), "r"(smem_u32(bar))
        : "memory");
}
// ANCHOR_END: bulk_helpers
#endif

#define WARPS PA_WARPS
#define TPT (PA_D / 8)             // lanes per token: each reads 8 elements (16 bytes)
#define TOK (32 / TPT)             // tokens per warp pass
#define PASSES PA_PASSES
#if PA_TC
#define CHUNK 16                   // tokens per warp chunk: one m16n8k16 key step of P V
#define LDT PA_D                   // a K or V row in the ring: unpadded, its 16-byte pieces swizzled
// Piece s (16 bytes) of ring row r sits at piece SWZ(r, s) of the row: the 128-byte swizzle of Lab 02's
// v6, so that the 8 rows an ldmatrix reads at one piece fall in distinct banks, and every 128-byte line
// of K or V lands in one 128-byte line of shared memory. (Rows padded by 16 bytes instead straddled
// two lines: the copies then asked L2 for half as many sectors again, all hits, and L2's throughput,
// not DRAM's, set the kernel's pace.) Rows of 64 bytes (D = 32) pair up in a line.
#if PA_D >= 64
#define SWZ(r, s) ((s) ^ ((r) & 7))
#else
#define SWZ(r, s) ((s) ^ (((r) >> 1) & 3))
#endif
#else
#define CHUNK (TOK * PASSES)       // tokens per warp chunk
#endif
#ifndef MAX_TABLE
#define MAX_TABLE 2048             // table entries of one partition held in shared memory (host: Tuning::table_entries)
#endif

// Mirrors `gpu::paged::PagedParams` (repr(C)).
struct PagedParams {
    int num_seqs, hq, hkv;
    int num_blocks;     // blocks in the pool (the host checked every table entry against it)
    int table_stride;   // entries per sequence in `tables`
    int nk_stride;      // rows per (sequence, kv head) in the contiguous twin
    int partition;      // keys per partition, a multiple of PA_BLOCK
    int num_parts;      // partitions of the longest sequence
    int window;         // 0: none; W > 0: the last W keys
    float scale_log2;   // log2(e) / sqrt(D): scores in base 2
    long long work;     // PA_SPLIT: the keys of every row of blocks, end to end (W)
};

// ANCHOR: pool_row
// The pool row of kv head `kvh`'s row `r` of block `blk`: block-major (the CPU module's layout, a
// block's heads side by side) or head-major (each kv head its own pool of blocks).
__device__ __forceinline__ size_t pool_row(int blk, int kvh, int r, const PagedParams& p) {
#if PA_HEAD_MAJOR
    return ((size_t)kvh * p.num_blocks + blk) * PA_BLOCK + r;
#else
    return ((size_t)blk * p.hkv + kvh) * PA_BLOCK + r;
#endif
}
// ANCHOR_END: pool_row

// ANCHOR: paged_merge
// Merge the partitions [0, parts) of one row for element e: M = max m_p, w_p = l_p 2^(m_p - M),
// o = sum_p w_p out_p / sum_p w_p; lse = ln 2 (M + log2 sum_p w_p). Loads go through L2 (`__ldcg`):
// the partials were written by other thread blocks, and L1 is not coherent across SMs.
__device__ __forceinline__ float merge_row(const float* part_out, const float* part_ml, size_t row,
                                           int parts, int e, const PagedParams& p, float* lse_out) {
    const float* ml = part_ml + row * p.num_parts * 2;
    float mm = NEG_INF;
    for (int i = 0; i < parts; ++i) mm = fmaxf(mm, __ldcg(ml + 2 * i));
    float ll = 0.f, oo = 0.f;
    if (mm != NEG_INF) {
        for (int i = 0; i < parts; ++i) {
            const float w = __ldcg(ml + 2 * i + 1) * ex2(__ldcg(ml + 2 * i) - mm);  // 0 if empty
            ll += w;
            oo += w * __ldcg(part_out + (row * p.num_parts + i) * PA_D + e);
        }
    }
    *lse_out = ll > 0.f ? (mm + log2f(ll)) * LN2 : NEG_INF;
    return ll > 0.f ? oo / ll : 0.f;
}
// ANCHOR_END: paged_merge

// ANCHOR: paged_partition
// One thread block's work on one range: query heads [h0, h0 + PA_HPB PA_GC) of sequence `seq` attended
// to its keys [t_lo, t_hi) (warp w: the head chunk w % PA_HPB, every (WARPS / PA_HPB)-th chunk of keys). `slot` < 0: the range is the row's every key, and the block writes `o` and `lse`;
// otherwise it writes partial `slot` of each row, and when `arrivals` > 0 the last of the `arrivals`
// blocks writing this row's partials (a ticket on counters[ticket]) merges the first `parts` of them.
template <bool PAGED>
__device__ __forceinline__ void attend_range(const elem_t* __restrict__ q,
                                             const elem_t* __restrict__ k,
                                             const elem_t* __restrict__ v,
                                             const int* __restrict__ tables,
                                             float* __restrict__ part_out,
                                             float* __restrict__ part_ml,
                                             elem_t* __restrict__ o, float* __restrict__ lse,
                                             int* __restrict__ counters, const PagedParams& p, int seq,
                                             int h0, int t_lo, int t_hi, int slot, int arrivals, int parts,
                                             int ticket, int e_lo, int e_hi) {
    __shared__ int s_table[MAX_TABLE];
    __shared__ int s_last;
    __shared__ float s_m[WARPS][PA_GC], s_l[WARPS][PA_GC];
#if PA_TC
    // Each warp's ring of chunks (dynamic shared memory); once the warp has read its last chunk, the
    // start of its own ring holds its partial sums for step 5, so they cost no shared memory of their
    // own and a ring of three chunks fits with 8 warps.
    extern __shared__ __align__(128) unsigned char dyn_smem[];
#define RING_BYTES (PA_STAGES * 2 * CHUNK * LDT * sizeof(elem_t))
#define S_ACC(w, g, e) (reinterpret_cast<float*>(dyn_smem + (size_t)(w) * RING_BYTES)[(g) * PA_D + (e)])
#else
    __shared__ float s_acc[WARPS][PA_GC][PA_D];
#define S_ACC(w, g, e) s_acc[w][g][e]
#endif

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    constexpr int WPH = WARPS / PA_HPB;           // warps on one head chunk
    const int hc = warp % PA_HPB, sub = warp / PA_HPB;  // this warp's head chunk, its place among them
    const int hw = h0 + hc * PA_GC;               // this warp's first query head
    const int kvh = hw / (p.hq / p.hkv);
    const int slice = lane % TPT, tok = lane / TPT;  // which 8 elements, which token of a pass

#if PA_TC
    // The block's query heads as the A operand of S = Q K^T: rows g < PA_GC of the m16 tile are the
    // heads, the rest zeros (padding: the tensor cores have time to spare in decode), columns d.
    const int g = lane >> 2, tg = lane & 3;
    (void)slice;  // the CUDA-core path's lane roles
    (void)tok;
    unsigned int qf[PA_D / 16][4];
#pragma unroll
    for (int kk = 0; kk < PA_D / 16; ++kk) {
        unsigned int lo = 0, hi = 0;
        if (g < PA_GC) {
            const elem_t* qh = q + ((size_t)seq * p.hq + hw + g) * PA_D + kk * 16 + tg * 2;
            lo = *reinterpret_cast<const unsigned int*>(qh);
            hi = *reinterpret_cast<const unsigned int*>(qh + 8);
        }
        qf[kk][0] = lo;
        qf[kk][1] = 0;
        qf[kk][2] = hi;
        qf[kk][3] = 0;
    }
    __syncthreads();  // the shared state of a previous range on this block is free again
    float oacc[PA_D / 8][4];  // O for row g (elements 0, 1) and the padding row g + 8 (2, 3)
#pragma unroll
    for (int dn = 0; dn < PA_D / 8; ++dn) oacc[dn][0] = oacc[dn][1] = oacc[dn][2] = oacc[dn][3] = 0.f;
    float m_r = NEG_INF, l_r = 0.f;  // row g: running max (base 2) and sum, the same in the quad
#else
    // This lane's slice of each query head: loaded now, used after the table is in (the two loads
    // overlap instead of following each other).
    uint4 qraw[PA_GC];
#pragma unroll
    for (int g = 0; g < PA_GC; ++g)
        qraw[g] = *reinterpret_cast<const uint4*>(q + ((size_t)seq * p.hq + hw + g) * PA_D + slice * 8);
    // The shared state of a previous range on this block (its table, its partial sums) is free again.
    __syncthreads();

    // The query slices, pre-scaled into base-2 scores.
    float qr[PA_GC][8];
#pragma unroll
    for (int g = 0; g < PA_GC; ++g) {
        unpack8(qraw[g], qr[g]);
#pragma unroll
        for (int e = 0; e < 8; ++e) qr[g][e] *= p.scale_log2;
    }

    float m[PA_GC], l[PA_GC], acc[PA_GC][8];
#pragma unroll
    for (int g = 0; g < PA_GC; ++g) {
        m[g] = NEG_INF;
        l[g] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
    }
#endif

    // ANCHOR: paged_address
    // Row of token t in k/v (the pool through the table entries in shared memory, or the contiguous twin).
    int first = 0;  // the table entry s_table[0] holds
    auto row_of = [&](int t) -> size_t {
        if (PAGED) return pool_row(s_table[t / PA_BLOCK - first], kvh, t % PA_BLOCK, p);
        return ((size_t)seq * p.hkv + kvh) * p.nk_stride + t;
    };
    // ANCHOR_END: paged_address
    // ANCHOR: paged_ring
#if PA_TC
    // This warp's ring of PA_STAGES chunks of 16 tokens (K then V, pieces swizzled), filled by every
    // lane's 16-byte cp.async copies and read by ldmatrix. copy_chunk(c, t0, hi) asks for chunk c's
    // rows (tokens from t0) into its slot; a token at or past `hi` re-reads row hi - 1 (masked later).
    elem_t* ring = reinterpret_cast<elem_t*>(dyn_smem + (size_t)warp * RING_BYTES);
    auto copy_chunk = [&](int c, int t0, int hi) {
        elem_t* kd = ring + (size_t)(c % PA_STAGES) * 2 * CHUNK * LDT;
        elem_t* vd = kd + CHUNK * LDT;
#pragma unroll
        for (int i = 0; i < CHUNK * (PA_D / 8) / 32; ++i) {
            const int piece = lane + 32 * i, j = piece / (PA_D / 8), seg = piece % (PA_D / 8);
            const size_t row = row_of(min(t0 + j, hi - 1));
            cp_async16(kd + j * LDT + SWZ(j, seg) * 8, k + row * PA_D + seg * 8);
            cp_async16(vd + j * LDT + SWZ(j, seg) * 8, v + row * PA_D + seg * 8);
        }
    };
#endif
    // ANCHOR_END: paged_ring
    // ANCHOR: paged_early
    // The early start (PA_EARLY, e_hi > e_lo): with no window a block's keys begin at e_lo = its
    // partition's start whatever the sequence's length, and end by e_hi, the partition's end as the
    // table row (or the twin's rows) bounds it. So the first piece's table entries, as many as the
    // partition could need, and the ring's first chunks, clamped to e_hi instead of the length, are
    // asked for before the length has arrived: the length's load, the table's and the first copies
    // overlap instead of following one another. Rows past the real end are read, their scores masked
    // and their V rows zeroed (in the chunk loop).
    const bool early = PA_EARLY && e_hi > e_lo;
#if PA_EARLY
    if (early) {
        int e_top = e_hi;
        if (PAGED) {
            first = e_lo / PA_BLOCK;
            e_top = min(e_hi, (first + MAX_TABLE) * PA_BLOCK);
            for (int i = tid; i < (e_top - 1) / PA_BLOCK - first + 1; i += WARPS * 32)
                s_table[i] = tables[(size_t)seq * p.table_stride + first + i];
            __syncthreads();
        }
        for (int c = 0; c + 1 < PA_STAGES; ++c) {
            const int t0 = e_lo + sub * CHUNK + c * WPH * CHUNK;
            if (t0 < e_top) copy_chunk(c, t0, e_top);
            asm volatile("cp.async.commit_group;" ::: "memory");
        }
    }
#endif
    // ANCHOR_END: paged_early
    // ANCHOR: paged_pieces
    // The range in pieces whose table entries fit in shared memory (one piece unless the range passes
    // MAX_TABLE blocks); a piece's entries are copied once, while the q loads are in flight (the first
    // piece's already, with the early start).
    for (int p_lo = t_lo, p_hi; p_lo < t_hi; p_lo = p_hi) {
    const bool started = early && p_lo == t_lo;  // the early start asked for this piece's first chunks
    if (PAGED) {
        first = p_lo / PA_BLOCK;
        p_hi = min(t_hi, (first + MAX_TABLE) * PA_BLOCK);
        if (!started) {
            if (p_lo > t_lo) __syncthreads();  // every warp is done with the previous piece's entries
            const int count = (p_hi - 1) / PA_BLOCK - first + 1;
            for (int i = tid; i < count; i += WARPS * 32)
                s_table[i] = tables[(size_t)seq * p.table_stride + first + i];
            __syncthreads();
        }
    } else {
        p_hi = t_hi;
    }
    // ... the piece's chunks are walked here, still inside the loop over pieces (its brace closes after
    // the walk).
    // ANCHOR_END: paged_pieces
    const int stride = WPH * CHUNK;
    const int n_chunks = p_hi - p_lo > sub * CHUNK ? (p_hi - p_lo - sub * CHUNK + stride - 1) / stride : 0;

#if PA_TC
    // ANCHOR: paged_tc
    // The ring (copy_chunk above): a chunk is read only after the whole warp has waited for it
    // (__syncwarp), and refilled only after the whole warp has read it.
    auto issue = [&](int c) {
        if (c < n_chunks) {
            copy_chunk(c, p_lo + sub * CHUNK + c * stride, p_hi);  // past the range: the last row, masked
        }
#if PA_PREFETCH
        // The chunk PA_PREFETCH ahead, asked of L2 now (a hint: no register, no wait): its table
        // entries are read, its addresses translated and its lines on their way from DRAM while
        // the ring still holds earlier chunks. Each lane takes 128-byte lines of its rows.
        if (c + PA_PREFETCH < n_chunks) {
            const int tp = p_lo + sub * CHUNK + (c + PA_PREFETCH) * stride;
            constexpr int LPR = PA_D * (int)sizeof(elem_t) >= 128 ? PA_D * (int)sizeof(elem_t) / 128 : 1;
#pragma unroll
            for (int i = lane; i < CHUNK * LPR; i += 32) {
                const size_t row = row_of(min(tp + i / LPR, p_hi - 1));
                const elem_t* kp = k + row * PA_D + (i % LPR) * (128 / sizeof(elem_t));
                const elem_t* vp = v + row * PA_D + (i % LPR) * (128 / sizeof(elem_t));
                asm volatile("prefetch.global.L2 [%0];" ::"l"(kp));
                asm volatile("prefetch.global.L2 [%0];" ::"l"(vp));
            }
        }
#endif
#if PA_TOUCH
        // One line of K and one of V of the chunk PA_TOUCH ahead, asked of L2 by lane 0: a scattered
        // block's pages are translated (the TLB filled) before the ring's copies for it go out, at two
        // requests where the copies make 64, and the lines are the copies' own (L2 hits later).
        if (lane == 0 && c + PA_TOUCH < n_chunks) {
            const size_t row = row_of(p_lo + sub * CHUNK + (c + PA_TOUCH) * stride);
            asm volatile("prefetch.global.L2 [%0];" ::"l"(k + row * PA_D));
            asm volatile("prefetch.global.L2 [%0];" ::"l"(v + row * PA_D));
        }
#endif
        asm volatile("cp.async.commit_group;" ::: "memory");
    };
    if (!started)
        for (int c = 0; c + 1 < PA_STAGES; ++c) issue(c);
    for (int c = 0; c < n_chunks; ++c) {
        const int c0 = p_lo + sub * CHUNK + c * stride;
        issue(c + PA_STAGES - 1);
        asm volatile("cp.async.wait_group %0;" ::"n"(PA_STAGES - 1) : "memory");
        __syncwarp();  // every lane's copies of chunk c have landed
        const elem_t* Kt = ring + (size_t)(c % PA_STAGES) * 2 * CHUNK * LDT;
        const elem_t* Vt = Kt + CHUNK * LDT;
#if PA_EARLY
        if (started && c + 1 < PA_STAGES && c0 + CHUNK > p_hi) {
            // An early chunk was clamped to the partition's end, not the length: its rows past the
            // length hold whatever the pool (or the twin) holds there. Their scores are masked below,
            // but 0 times a NaN is a NaN, so their V rows become zeros.
            elem_t* vz = ring + (size_t)(c % PA_STAGES) * 2 * CHUNK * LDT + CHUNK * LDT;  // Vt, writable
            for (int i = lane; i < CHUNK * (PA_D / 8); i += 32) {
                const int j = i / (PA_D / 8), seg = i % (PA_D / 8);
                if (c0 + j >= p_hi)
                    *reinterpret_cast<uint4*>(vz + j * LDT + SWZ(j, seg) * 8) = make_uint4(0, 0, 0, 0);
            }
            __syncwarp();
        }
#endif
        const int mi = lane >> 3;
        // S = Q K^T: the heads (rows) against the chunk's 16 keys, two n8 tiles.
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int kk = 0; kk < PA_D / 16; ++kk) {
            unsigned int kf[4];  // keys 0-7 | d 0-7, keys 0-7 | d 8-15, keys 8-15 | d 0-7, keys 8-15 | d 8-15
            const int kr = (mi >> 1) * 8 + (lane & 7);  // the key row this lane addresses
            ldsm_x4(kf, Kt + kr * LDT + SWZ(kr, kk * 2 + (mi & 1)) * 8);
            mma16816(s[0], qf[kk], kf[0], kf[1]);
            mma16816(s[1], qf[kk], kf[2], kf[3]);
        }
        // Row g's four scores here (keys tg*2, tg*2+1, 8+tg*2, 9+tg*2), base 2, masked past the range.
        float x[4] = {s[0][0] * p.scale_log2, s[0][1] * p.scale_log2, s[1][0] * p.scale_log2,
                      s[1][1] * p.scale_log2};
        if (c0 + CHUNK > p_hi) {
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (c0 + (e >> 1) * 8 + tg * 2 + (e & 1) >= p_hi) x[e] = NEG_INF;
        }
        // Online softmax for row g over the quad's 16 keys; the rescale is skipped when no row's
        // maximum moved (most chunks once the first few are in).
        float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_r, mx);  // finite: the chunk holds a key of the range
        const float alpha = ex2(m_r - m_new);
        m_r = m_new;
        if (__any_sync(0xffffffffu, alpha != 1.f)) {
            l_r *= alpha;
#pragma unroll
            for (int dn = 0; dn < PA_D / 8; ++dn) {
                oacc[dn][0] *= alpha;
                oacc[dn][1] *= alpha;
            }
        }
        float pr[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) pr[e] = ex2(x[e] - m_new);  // 0 past the range
        // P as the A operand of P V (rows g; the padding rows g + 8 are zero), and what rounding P to
        // 16 bits lost, rounded again, for a chunk that carries a large share of its row's weight.
        const unsigned int p01 = pack2(pr[0], pr[1]), p23 = pack2(pr[2], pr[3]);
        const float2 f01 = to_f2(p01), f23 = to_f2(p23);
        const unsigned int pf[4] = {p01, 0u, p23, 0u};
        const unsigned int pl[4] = {pack2(pr[0] - f01.x, pr[1] - f01.y), 0u, pack2(pr[2] - f23.x, pr[3] - f23.y),
                                    0u};
        float lt = (pr[0] + pr[1]) + (pr[2] + pr[3]);
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        l_r += lt;
        const bool heavy = __any_sync(0xffffffffu, g < PA_GC && lt > 0.25f * l_r);
        // O += P V: V's rows read transposed by ldmatrix.trans, two n8 tiles of d per load.
#pragma unroll
        for (int dp = 0; dp < PA_D / 16; ++dp) {
            unsigned int vf[4];  // keys 0-7 | d 0-7, keys 8-15 | d 0-7, keys 0-7 | d 8-15, keys 8-15 | d 8-15
            const int vr = (mi & 1) * 8 + (lane & 7);  // the key row this lane addresses
            ldsm_x4_trans(vf, Vt + vr * LDT + SWZ(vr, dp * 2 + (mi >> 1)) * 8);
            mma16816(oacc[2 * dp], pf, vf[0], vf[1]);
            mma16816(oacc[2 * dp + 1], pf, vf[2], vf[3]);
            if (heavy) {
                mma16816(oacc[2 * dp], pl, vf[0], vf[1]);
                mma16816(oacc[2 * dp + 1], pl, vf[2], vf[3]);
            }
        }
        __syncwarp();  // every lane has read chunk c: its slot may be refilled
    }
    // ANCHOR_END: paged_tc
#else
#if PA_BULK == 2
    // This warp's ring of PA_STAGES chunk buffers (K then V, CHUNK rows each). Each lane copies the
    // 16-byte pieces it will itself read, so its own copy group's completion is all it waits for.
    extern __shared__ __align__(128) unsigned char dyn_smem[];
    elem_t* ring = reinterpret_cast<elem_t*>(dyn_smem) + (size_t)warp * PA_STAGES * 2 * CHUNK * PA_D;
    auto issue = [&](int c) {
        if (c < n_chunks) {
            const int t0 = p_lo + sub * CHUNK + c * stride;
            elem_t* kd = ring + (size_t)(c % PA_STAGES) * 2 * CHUNK * PA_D;
#pragma unroll
            for (int i = 0; i < PASSES; ++i) {
                const int j = i * TOK + tok;
                const size_t row = row_of(min(t0 + j, p_hi - 1));
                cp_async16(kd + j * PA_D + slice * 8, k + row * PA_D + slice * 8);
                cp_async16(kd + (CHUNK + j) * PA_D + slice * 8, v + row * PA_D + slice * 8);
            }
        }
        asm volatile("cp.async.commit_group;" ::: "memory");  // an empty group past the last chunk
    };
    for (int c = 0; c + 1 < PA_STAGES; ++c) issue(c);
#elif PA_BULK == 1
    // This warp's ring of PA_STAGES chunk buffers (K then V, CHUNK rows each) and their barriers.
    extern __shared__ __align__(128) unsigned char dyn_smem[];
    elem_t* ring = reinterpret_cast<elem_t*>(dyn_smem) + (size_t)warp * PA_STAGES * 2 * CHUNK * PA_D;
    __shared__ __align__(8) unsigned long long bars[WARPS][PA_STAGES];
    // Lane 0 asks for chunk c: one bulk copy per run of rows contiguous in memory (a block's rows).
    auto issue = [&](int c) {
        const int t0 = p_lo + sub * CHUNK + c * stride, t1 = min(t0 + CHUNK, p_hi);
        elem_t* kd = ring + (size_t)(c % PA_STAGES) * 2 * CHUNK * PA_D;
        elem_t* vd = kd + CHUNK * PA_D;
        unsigned long long* bar = &bars[warp][c % PA_STAGES];
        mbar_expect(bar, (unsigned)(t1 - t0) * PA_D * 2 * sizeof(elem_t));
        for (int a = t0; a < t1;) {
            const int b = PAGED ? min(t1, (a / PA_BLOCK + 1) * PA_BLOCK) : t1;
            const size_t r = row_of(a);
            const unsigned bytes = (unsigned)(b - a) * PA_D * sizeof(elem_t);
            bulk_copy(kd + (size_t)(a - t0) * PA_D, k + r * PA_D, bytes, bar);
            bulk_copy(vd + (size_t)(a - t0) * PA_D, v + r * PA_D, bytes, bar);
            a = b;
        }
    };
    if (lane == 0) {
        for (int i = 0; i < PA_STAGES; ++i) mbar_init(&bars[warp][i]);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        for (int c = 0; c < min(PA_STAGES, n_chunks); ++c) issue(c);
    }
    __syncwarp();
#endif

    for (int c = 0; c < n_chunks; ++c) {
        const int c0 = p_lo + sub * CHUNK + c * stride;
        // 1. Every load of the chunk first: K and V rows of PASSES tokens, 16 bytes each per lane.
        uint4 kr[PASSES], vr[PASSES];
#if PA_BULK == 2
        // Chunk c + PA_STAGES - 1 goes out before chunk c is waited for: the loads stay in flight
        // through this chunk's arithmetic (the register path has none in flight while it computes).
        issue(c + PA_STAGES - 1);
        asm volatile("cp.async.wait_group %0;" ::"n"(PA_STAGES - 1) : "memory");
        const elem_t* ks = ring + (size_t)(c % PA_STAGES) * 2 * CHUNK * PA_D;
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            const int j = i * TOK + tok;
            kr[i] = *reinterpret_cast<const uint4*>(ks + j * PA_D + slice * 8);
            vr[i] = *reinterpret_cast<const uint4*>(ks + (CHUNK + j) * PA_D + slice * 8);
        }
#elif PA_BULK == 1
        mbar_wait(&bars[warp][c % PA_STAGES], (c / PA_STAGES) & 1);
        const elem_t* ks = ring + (size_t)(c % PA_STAGES) * 2 * CHUNK * PA_D;
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            const int j = i * TOK + tok;  // row within the chunk
            const bool ok = c0 + j < p_hi;
            kr[i] = ok ? *reinterpret_cast<const uint4*>(ks + j * PA_D + slice * 8) : make_uint4(0, 0, 0, 0);
            vr[i] = ok ? *reinterpret_cast<const uint4*>(ks + (CHUNK + j) * PA_D + slice * 8)
                       : make_uint4(0, 0, 0, 0);
        }
        __syncwarp();  // every lane has read this stage: lane 0 may refill it
        if (lane == 0 && c + PA_STAGES < n_chunks) {
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            issue(c + PA_STAGES);
        }
#else
        // No branch around a pass: a token past the range re-reads the range's last row (its score is
        // masked below and its probability is 0), so every table lookup of the chunk can issue before
        // any address is formed and every load right after (a branch per pass made each pass wait for
        // its own table entry before its loads: 20% of the read rate on an H200).
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            const size_t row = row_of(min(c0 + i * TOK + tok, p_hi - 1));
            kr[i] = load_once(k + row * PA_D + slice * 8);
            vr[i] = load_once(v + row * PA_D + slice * 8);
        }
#endif
        // ANCHOR: paged_chunk_math
        // 2. Scores: a partial dot over this lane's 8 elements, summed over the token's TPT lanes.
        float s[PASSES][PA_GC];
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            float kf[8];
            unpack8(kr[i], kf);
#pragma unroll
            for (int g = 0; g < PA_GC; ++g) {
                float d = 0.f;
#pragma unroll
                for (int e = 0; e < 8; ++e) d = fmaf(qr[g][e], kf[e], d);
#pragma unroll
                for (int off = TPT / 2; off > 0; off /= 2) d += __shfl_xor_sync(0xffffffffu, d, off);
                s[i][g] = (c0 + i * TOK + tok < p_hi) ? d : NEG_INF;
            }
        }
        // 3. Online softmax, once per chunk: new max over the chunk's tokens (all lanes of the warp).
#pragma unroll
        for (int g = 0; g < PA_GC; ++g) {
            float cm = s[0][g];
#pragma unroll
            for (int i = 1; i < PASSES; ++i) cm = fmaxf(cm, s[i][g]);
#pragma unroll
            for (int off = TPT; off < 32; off *= 2) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
            const float m_new = fmaxf(m[g], cm);  // finite: the chunk holds at least one key
            const float alpha = ex2(m[g] - m_new);
            l[g] *= alpha;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] *= alpha;
            m[g] = m_new;
        }
        // 4. o += P V with this lane's tokens (the TOK token groups of a warp are summed at the end).
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            float vf[8];
            unpack8(vr[i], vf);
#pragma unroll
            for (int g = 0; g < PA_GC; ++g) {
                const float pr = ex2(s[i][g] - m[g]);  // 0 for a key past the end
                l[g] += pr;
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(pr, vf[e], acc[g][e]);
            }
        }
    }
    // ANCHOR_END: paged_chunk_math
#endif  // PA_TC
    }  // pieces
#if PA_EARLY
    // Early copies past a range shorter than its partition may still be in flight: the ring's start is
    // about to hold the partial sums, written by other lanes than the copies' (racecheck's hazard
    // without the __syncwarp).
    if (early) {
        asm volatile("cp.async.wait_group 0;" ::: "memory");
        __syncwarp();
    }
#endif

    // 5. Sum the token groups of each warp (same m across the warp), then merge the warps.
#if PA_TC
    if (g < PA_GC) {  // row g's quad holds its O elements dn * 8 + tg * 2 + {0, 1}
#pragma unroll
        for (int dn = 0; dn < PA_D / 8; ++dn) {
            S_ACC(warp, g, dn * 8 + tg * 2) = oacc[dn][0];  // own ring: its last chunk is read
            S_ACC(warp, g, dn * 8 + tg * 2 + 1) = oacc[dn][1];
        }
        if (tg == 0) {
            s_m[warp][g] = m_r;
            s_l[warp][g] = l_r;
        }
    }
#else
#pragma unroll
    for (int g = 0; g < PA_GC; ++g) {
#pragma unroll
        for (int off = TPT; off < 32; off *= 2) {
            l[g] += __shfl_xor_sync(0xffffffffu, l[g], off);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], off);
        }
        if (tok == 0) {
#pragma unroll
            for (int e = 0; e < 8; ++e) S_ACC(warp, g, slice * 8 + e) = acc[g][e];
        }
        if (lane == 0) {
            s_m[warp][g] = m[g];
            s_l[warp][g] = l[g];  // every lane now holds the warp's sum over its tokens
        }
    }
#endif
    __syncthreads();
    for (int x = tid; x < PA_HPB * PA_GC * PA_D; x += WARPS * 32) {
        const int j = x / (PA_GC * PA_D), g = x / PA_D % PA_GC, e = x % PA_D;  // head chunk j's warps: j + PA_HPB i
        float mm = NEG_INF;
#pragma unroll
        for (int i = 0; i < WPH; ++i) mm = fmaxf(mm, s_m[j + PA_HPB * i][g]);
        float ll = 0.f, oo = 0.f;
        if (mm != NEG_INF) {
#pragma unroll
            for (int i = 0; i < WPH; ++i) {
                const int w = j + PA_HPB * i;
                const float a = ex2(s_m[w][g] - mm);  // 0 for a warp that saw no key
                ll += a * s_l[w][g];
                oo += a * S_ACC(w, g, e);
            }
        }
        const float out = ll > 0.f ? oo / ll : 0.f;
        const size_t row = (size_t)seq * p.hq + h0 + j * PA_GC + g;
        if (slot < 0) {  // the row's every key: this is the answer
            o[row * PA_D + e] = from_f(out);
            if (e == 0) lse[row] = ll > 0.f ? (mm + log2f(ll)) * LN2 : NEG_INF;
        } else {
            part_out[(row * p.num_parts + slot) * PA_D + e] = out;
            if (e == 0) {
                part_ml[(row * p.num_parts + slot) * 2] = mm;  // base-2 max (-inf: empty partition)
                part_ml[(row * p.num_parts + slot) * 2 + 1] = ll;
            }
        }
    }
    // 6. The last block to write these rows' partials merges them (threadFenceReduction's pattern):
    //    publish the partials, take a ticket, and the holder of the last ticket reduces.
    if (slot >= 0 && arrivals > 0) {
        __threadfence();
        __syncthreads();
        if (tid == 0) {
            s_last = atomicAdd(&counters[ticket], 1) == arrivals - 1;
            if (s_last) counters[ticket] = 0;  // every block has arrived: reset for the next launch
        }
        __syncthreads();
        if (s_last) {
            __threadfence();
            for (int x = tid; x < PA_HPB * PA_GC * PA_D; x += WARPS * 32) {
                const int e = x % PA_D;
                const size_t row = (size_t)seq * p.hq + h0 + x / PA_D;
                float l2;
                o[row * PA_D + e] = from_f(merge_row(part_out, part_ml, row, parts, e, p, &l2));
                if (e == 0) lse[row] = l2;
            }
        }
    }
}
// ANCHOR_END: paged_partition

// ANCHOR: paged_split
// Which key ranges a block attends. Partitions (PA_SPLIT 0): grid (partition, head chunk, sequence),
// block (x, y, s) takes keys [x P, (x + 1) P) of its row. Even split (PA_SPLIT 1): the rows of
// thread-block work (a sequence's head chunk, all its visible keys) laid end to end, W keys in all,
// and the grid's G blocks take W / G consecutive keys each, wherever the rows' boundaries fall. Every
// block has the same work and the grid is one wave: with 128 rows on 132 SMs, partitions leave four
// SMs idle, or add a second, partial wave when a row is split.
__device__ __forceinline__ long long split_block_of(long long z, const PagedParams& p) {
    return ((z + 1) * gridDim.x - 1) / p.work;  // the block whose keys include position z
}

template <bool PAGED>
__device__ __forceinline__ void decode_body(const elem_t* __restrict__ q, const elem_t* __restrict__ k,
                                            const elem_t* __restrict__ v, const int* __restrict__ tables,
                                            const int* __restrict__ seq_lens,
                                            const long long* __restrict__ prefix,
                                            float* __restrict__ part_out, float* __restrict__ part_ml,
                                            elem_t* __restrict__ o, float* __restrict__ lse,
                                            int* __restrict__ counters, const PagedParams& p) {
    const int gy = p.hq / (PA_GC * PA_HPB);  // thread blocks' head chunks of a sequence
#if PA_SPLIT
    // prefix[s]: the visible keys of the sequences before s. Sequence s's head chunk y starts at
    // prefix[s] gy + y (prefix[s + 1] - prefix[s]) of the W = prefix[S] gy keys.
    // Every sequence has a key (the host refuses empty ones), so every row has work.
    const int G = gridDim.x, b = blockIdx.x;
    long long x = (long long)b * p.work / G;
    const long long end = (long long)(b + 1) * p.work / G;
    while (x < end) {
        int s0 = 0, s1 = p.num_seqs - 1;  // the last sequence with prefix[s] gy <= x
        while (s0 < s1) {
            const int mid = (s0 + s1 + 1) / 2;
            if (prefix[mid] * gy <= x) s0 = mid; else s1 = mid - 1;
        }
        const int seq = s0, vis = (int)(prefix[seq + 1] - prefix[seq]);
        const int y = (int)((x - prefix[seq] * gy) / vis);
        const long long u0 = prefix[seq] * gy + (long long)y * vis, u1 = u0 + vis;
        const long long x1 = min(end, u1);
        const int len = seq_lens[seq], lo = p.window > 0 ? max(0, len - p.window) : 0;
        const long long first = split_block_of(u0, p);
        const int blocks = (int)(split_block_of(u1 - 1, p) - first + 1);  // blocks sharing this row
        attend_range<PAGED>(q, k, v, tables, part_out, part_ml, o, lse, counters, p, seq, y * PA_GC * PA_HPB,
                            lo + (int)(x - u0), lo + (int)(x1 - u0), blocks == 1 ? -1 : (int)(b - first),
                            blocks, blocks, seq * gy + y, 0, 0);
        x = x1;
    }
#else
    const int part = blockIdx.x, seq = blockIdx.z;
    // The early start's bounds (PA_EARLY, no window): the partition's keys as far as the table row (or
    // the twin's rows) reaches, known without the length.
    const int e_lo = part * p.partition;
    const int e_hi = PA_EARLY && p.window == 0
                         ? min(e_lo + p.partition, PAGED ? p.table_stride * PA_BLOCK : p.nk_stride)
                         : 0;
    const int len = seq_lens[seq];
    const int lo = p.window > 0 ? max(0, len - p.window) : 0;
    const int p_lo = max(lo, part * p.partition), p_hi = min(len, (part + 1) * p.partition);
    // Every partition's block writes its partial, empty or not; the merge reads those holding keys.
    attend_range<PAGED>(q, k, v, tables, part_out, part_ml, o, lse, counters, p, seq, blockIdx.y * PA_GC * PA_HPB,
                        p_lo, max(p_lo, p_hi), p.num_parts == 1 ? -1 : part, PA_FUSED ? (int)gridDim.x : 0,
                        min(p.num_parts, (len + p.partition - 1) / p.partition), seq * gy + blockIdx.y, e_lo,
                        e_hi);
#endif
}
// ANCHOR_END: paged_split

// With the even split, blocks of fewer than 16 warps are capped at 128 registers a thread so that
// 16 warps' worth of blocks share an SM: one block's start runs under the others' loads.
extern "C" __global__ void PA_CLUSTER_DIMS __launch_bounds__(WARPS * 32, (PA_SPLIT || PA_BULK == 2) && !PA_TC ? 16 / WARPS : 1)
    paged_decode_partition(const elem_t* __restrict__ q, const elem_t* __restrict__ k_pool,
                           const elem_t* __restrict__ v_pool, const int* __restrict__ tables,
                           const int* __restrict__ seq_lens, const long long* __restrict__ prefix,
                           float* __restrict__ part_out,
                           float* __restrict__ part_ml, elem_t* __restrict__ o, float* __restrict__ lse,
                           int* __restrict__ counters, const PagedParams p) {
    decode_body<true>(q, k_pool, v_pool, tables, seq_lens, prefix, part_out, part_ml, o, lse, counters, p);
}

extern "C" __global__ void PA_CLUSTER_DIMS __launch_bounds__(WARPS * 32, (PA_SPLIT || PA_BULK == 2) && !PA_TC ? 16 / WARPS : 1)
    contiguous_decode_partition(const elem_t* __restrict__ q, const elem_t* __restrict__ k,
                                const elem_t* __restrict__ v, const int* __restrict__ tables,
                                const int* __restrict__ seq_lens, const long long* __restrict__ prefix,
                                float* __restrict__ part_out,
                                float* __restrict__ part_ml, elem_t* __restrict__ o,
                                float* __restrict__ lse, int* __restrict__ counters,
                                const PagedParams p) {
    decode_body<false>(q, k, v, tables, seq_lens, prefix, part_out, part_ml, o, lse, counters, p);
}

// ANCHOR: paged_reduce
// The unfused merge (PA_FUSED 0): a second launch, grid (Hq, S), PA_D threads, one row per block.
extern "C" __global__ void paged_decode_reduce(const float* __restrict__ part_out,
                                               const float* __restrict__ part_ml,
                                               const int* __restrict__ seq_lens,
                                               elem_t* __restrict__ o, float* __restrict__ lse,
                                               const PagedParams p) {
    const int h = blockIdx.x, seq = blockIdx.y, e = threadIdx.x;
    const size_t row = (size_t)seq * p.hq + h;
    const int parts = min(p.num_parts, (seq_lens[seq] + p.partition - 1) / p.partition);
    float l2;
    o[row * PA_D + e] = from_f(merge_row(part_out, part_ml, row, parts, e, p, &l2));
    if (e == 0) lse[row] = l2;
}
// ANCHOR_END: paged_reduce

// ANCHOR: read_pass
// The decode kernel's reads without its arithmetic: grid (S * Hkv), PA_WARPS warps, each (sequence, kv
// head) row's K and V walked in the same warp chunks, through the table (or the contiguous twin), with
// the same branch-free loads, folded into one word so that nothing is dropped. Its time is what the
// access pattern itself costs; the decode kernel's distance from it is its arithmetic's.
template <bool PAGED>
__device__ __forceinline__ void read_rows(const elem_t* __restrict__ k, const elem_t* __restrict__ v,
                                          const int* __restrict__ tables, const int* __restrict__ seq_lens,
                                          unsigned* __restrict__ sink, const PagedParams& p) {
    const int seq = blockIdx.x / p.hkv, kvh = blockIdx.x % p.hkv, len = seq_lens[seq];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int slice = lane % TPT, tok = lane / TPT;
    // A chunk's words are folded in the next iteration, after that one's loads are issued: the
    // register allocator cannot then fold each load before issuing the next (it did: one load in flight).
    uint4 kp[PASSES], vp[PASSES];
#pragma unroll
    for (int i = 0; i < PASSES; ++i) kp[i] = vp[i] = make_uint4(0, 0, 0, 0);
    unsigned a = 0;
    for (int c0 = warp * TOK * PASSES; c0 < len; c0 += WARPS * TOK * PASSES) {
        uint4 kr[PASSES], vr[PASSES];
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            const int t = min(c0 + i * TOK + tok, len - 1);
            const size_t row = PAGED ? pool_row(__ldg(tables + (size_t)seq * p.table_stride + t / PA_BLOCK), kvh,
                                                t % PA_BLOCK, p)
                                     : ((size_t)seq * p.hkv + kvh) * p.nk_stride + t;
            kr[i] = load_once(k + row * PA_D + slice * 8);
            vr[i] = load_once(v + row * PA_D + slice * 8);
        }
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            a ^= kp[i].x ^ kp[i].y ^ kp[i].z ^ kp[i].w ^ vp[i].x ^ vp[i].y ^ vp[i].z ^ vp[i].w;
            kp[i] = kr[i];
            vp[i] = vr[i];
        }
    }
#pragma unroll
    for (int i = 0; i < PASSES; ++i) a ^= kp[i].x ^ kp[i].y ^ kp[i].z ^ kp[i].w ^ vp[i].x ^ vp[i].y ^ vp[i].z ^ vp[i].w;
    sink[(size_t)blockIdx.x * blockDim.x + threadIdx.x] = a;
}
extern "C" __global__ void __launch_bounds__(WARPS * 32)
    paged_read_pass(const elem_t* __restrict__ k, const elem_t* __restrict__ v, const int* __restrict__ tables,
                    const int* __restrict__ seq_lens, unsigned* __restrict__ sink, const PagedParams p) {
    read_rows<true>(k, v, tables, seq_lens, sink, p);
}
extern "C" __global__ void __launch_bounds__(WARPS * 32)
    contiguous_read_pass(const elem_t* __restrict__ k, const elem_t* __restrict__ v,
                         const int* __restrict__ tables, const int* __restrict__ seq_lens,
                         unsigned* __restrict__ sink, const PagedParams p) {
    read_rows<false>(k, v, tables, seq_lens, sink, p);
}
// ANCHOR_END: read_pass

// ANCHOR: read_bandwidth
// The roof decode is measured against: HBM read bandwidth. Each thread reads 16-byte words through the
// same load as the decode kernel, eight loads in flight, and folds them into one word written once per
// thread so that the loads cannot be dropped. Three orders (PA_READ): 0, a grid stride (the eight
// loads of a thread a whole grid apart); 1, chunks (a block reads eight words a thread, 32 KB side by
// side at 256 threads, then jumps a grid of chunks); 2, slabs (each block walks its own contiguous
// share of the buffer, as a decode row walks its sequence's keys).
#ifndef PA_READ
#define PA_READ 0
#endif
__device__ __forceinline__ void fold(uint4& a, const uint4 b) {
    a.x ^= b.x; a.y ^= b.y; a.z ^= b.z; a.w ^= b.w;
}
extern "C" __global__ void read_bandwidth(const uint4* __restrict__ x, size_t n, uint4* __restrict__ sink) {
    uint4 a = make_uint4(0, 0, 0, 0);
#if PA_READ == 0
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 7 * stride < n; i += 8 * stride) {
        uint4 b[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) b[j] = load_once(x + i + j * stride);
#pragma unroll
        for (int j = 0; j < 8; ++j) fold(a, b[j]);
    }
    for (; i < n; i += stride) fold(a, load_once(x + i));
#else
    const size_t chunk = 8 * (size_t)blockDim.x;  // words a block reads per step
#if PA_READ == 1
    size_t c0 = (size_t)blockIdx.x * chunk, end = n;
    const size_t step = (size_t)gridDim.x * chunk;
#else
    const size_t share = (n / gridDim.x + chunk - 1) / chunk * chunk;
    size_t c0 = (size_t)blockIdx.x * share, end = c0 + share < n ? c0 + share : n;
    const size_t step = chunk;
#endif
    for (; c0 < end; c0 += step) {
        const size_t i = c0 + threadIdx.x;
        if (c0 + chunk <= end) {
            uint4 b[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) b[j] = load_once(x + i + j * blockDim.x);
#pragma unroll
            for (int j = 0; j < 8; ++j) fold(a, b[j]);
        } else {
            for (size_t w = i; w < end; w += blockDim.x) fold(a, load_once(x + w));
        }
    }
#endif
    sink[(size_t)blockIdx.x * blockDim.x + threadIdx.x] = a;
}
// ANCHOR_END: read_bandwidth
