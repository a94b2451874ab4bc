// FlashAttention forward on the GPU: a numbered progression (lab 02).
//
// Shapes (row-major, contiguous): q, o: (B, Hq, Nq, D); k, v: (B, Hkv, Nk, D); lse: (B, Hq, Nq) f32.
// Query head h reads kv head h / (Hq / Hkv) by index. Query row i sits at position p = i + Nk - Nq;
// causal keeps keys j <= p, a window of W keeps j > p - W; a row that sees no key gets O = 0 and
// lse = -inf. Storage is f16 or bf16, every sum is f32. PyTorch's line for all of it:
//     o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=..., enable_gqa=True)
//
// Compiled at run time by NVRTC (src/gpu/mod.rs), one module per (version, dtype): the host defines
// FA_VERSION (1..8) and FA_BF16 (0 or 1) so that a process compiles only the kernels it launches.
//
// ANCHOR: changelog
// Changelog. The first entries were measured on an NVIDIA H100 80GB HBM3 (driver 580.159, CUDA 13.0),
// 2026-11-27; later ones name their card and date. fp16, B*N = 16k tokens, H = 2048/D, non-causal unless
// said; TFLOP/s = 4 B H N^2 D / t (halved for causal).
// PyTorch 2.11 SDPA ran in the same run; every number is in measurements/gpu-*.json.
//   v0  PyTorch SDPA. D=128 N=16384: flash (FA2) 336, cuDNN 563, mem-efficient 178 TFLOP/s; math
//       (S materialised) 23 at N=4096. D=64 N=16384: flash 298, cuDNN 434, efficient 137.
//   v1  naive: three kernels, S = QK^T materialised in global memory as f32 (B*Hq*Nq*Nk floats), a row
//       softmax in place, then P V. 0.8-0.9 TFLOP/s at every size (timed to N = 2048; S is 4 GB there).
//       ncu at D=64 N=2048: 24.3 GB of DRAM traffic against v5's 0.26 GB.
//   v1b naive on the tensor cores (2026-11-28, NVIDIA H200, commit cb87d87): not a step of the
//       progression but its control. v1's three launches and f32 S, with v4's mma.sync fragments for
//       Q K^T and P V, 8- and 16-byte accesses, a softmax that walks each row twice (v1: three times),
//       and P read as f32 and split into hi + lo 16-bit fragments (no rounding to compensate).
//       Naive's bytes at the Flash kernels' instruction quality: the roofline's naive dot then measures
//       the bytes, not the loops. D=64 N=2048: 42 TFLOP/s (v1: 0.9), 63% of its memory bound; ncu
//       21.5 GB of DRAM traffic against the model's 17.4 GB: one extra read of S, most likely the
//       softmax's last walk over rows that left L2 (thousands of 8 KB rows are in flight); going from
//       three walks to two did not change the count (12.85 -> 12.91 GB read), only L2's (42 -> 38 GB).
//   v2  online softmax, one thread per query row: no S, but every row reads K and V through L1/L2 one
//       key at a time, two exp2 per key. 9.6 TFLOP/s at D=64 N=2048, 4.5 at D=128 (255 registers and
//       spills: q and the D accumulators live in registers). Timed to N = 2048.
//   v3  tiled through shared memory, FlashAttention-1 on CUDA cores: 64 rows share each 64-key tile of
//       K and V. 16-17 TFLOP/s at D=64, 6.9 at D=128 (spills again). Scalar FMAs cap it near the
//       FP32 roof; timed to N = 4096.
//   v4  tensor cores, FlashAttention-2 style: 4 warps x 16 query rows, mma.sync m16n8k16 (f32
//       accumulators) fed by ldmatrix (.trans for V), P kept in registers (S's accumulator fragment is
//       P V's A fragment). 193 TFLOP/s at D=128 N=16384, 206 at D=64: 28x v3.
//   v5  v4 plus cp.async double buffering of K/V tiles (tile t+1 in flight while t is computed).
//       231 TFLOP/s at D=128 N=16384 (0.69 of FA2, 0.41 of cuDNN), 230.6 causal (0.78 of FA2);
//       209 at D=64 (0.70 of FA2). Barely pays at D=64 (+1-2%), +20% at D=128.
//       Rounding P to fp16 before P V cost up to 2^-12 |v| in O, which with O's own rounding broke the
//       1e-3 bar on short rows (18 of 896 checks, max 1.2e-3): tiles that carry more than a quarter of a
//       row's weight now also add (P - fp16(P)) V. That cost about 20% at D=128 N=2048 (258 -> 210)
//       and turned the best block size from 8 warps to 4: the 8-warp variant stays in the table
//       (ours/v5_cp_async_w8, 209 at D=128 N=16384).
//   v6  Hopper warpgroup MMA (sm_90a), 2026-11-28, commit 4a77dae: two warpgroups of 64 query rows
//       share 128-key tiles; S = Q K^T and O += P V are wgmma.mma_async (Q, K, V read by the tensor
//       cores from shared memory through descriptors, P passed in registers); cp.async copies,
//       issued behind S's wgmma. Steps on the way, at D=128 N=2048:
//         a. packed (unswizzled) core matrices: 224 TFLOP/s, barely above v5; a data-dependent branch
//            around the correction wgmma made ptxas serialise every wgmma (C7520), so only each
//            block's first tile is corrected;
//         b. next tile's copies issued behind S's wgmma: 245; leaving P V in flight across the loop's
//            back edge serialised the wgmmas again (C7515), so it is waited for;
//         c. 128-byte swizzled tiles: 339. ncu had shown one 32-byte sector per L2 request and L2 at
//            89% of its throughput; swizzled, four sectors per request and L2 at 22%.
//       At 4a77dae: D=128 1.01-1.20x FA2 from N=2048 on (370 TFLOP/s at N=16384), 0.83-0.93x at
//       N=512-1024; D=64 0.75-0.94x FA2. At N=64 v6 is 2-3x slower than v5 (one 160 KB, 256-thread
//       block per SM; half of each 128x128 tile is padding there).
//         d. (2026-11-28, commit 060d90c, shared with v7) ncu's source counters showed about 28
//            integer instructions per 16-byte copy (row, column, swizzle and address of every chunk)
//            and a descriptor built from scratch for every wgmma: a quarter of the loop's instructions,
//            with 2 warps per scheduler to hide them. A thread's chunks share their column and their
//            row mod 8, so its shared and global offsets are computed once and advance by constants;
//            a descriptor is the tile's plus a constant. D=128 N=8192: 370 -> 485 TFLOP/s; D=64:
//            278 -> 339 (gpu-probe time, one call).
//   v7  v6 with FlashAttention-3's intra-warpgroup overlap, 2026-11-28, commit 060d90c: step t issues
//       S_t and P_{t-1} V_{t-1} together, waits for S_t only, computes P_t into a second register set
//       while the tensor cores run P V, then waits and rescales O. Three things stood in the way:
//         a. copying P_t into the set the next step reads made ptxas serialise every wgmma (C7513),
//            so the steps alternate two sets (the loop is unrolled by two);
//         b. ptxas hoisted both waits and the barrier above the softmax (nothing ties them to it), so
//            at first nothing overlapped and v7 was 3-8% slower than v6; one shared store of the row
//            sums, which depend on every exponential, pins the waits below the softmax;
//         c. with that, v7 was 1-5% faster than v6 before d. and 2-7% after it (gpu-probe time).
//       Measured at 6ee0b65 (Table 02.1): 1.02-1.50x FA2 at every N >= 512 except D=64 N=512 (0.93x,
//       0.92x causal) and N=1024 causal (0.95x); 487 TFLOP/s at D=128 N=16384 (0.84 of cuDNN).
//       The fastest version from N=512 on until v8 (v5 stays ahead at N=64).
//         d. (commit cd1a2da) one-warpgroup blocks (64 rows, 128 threads, 206 registers, 74 KB at
//            D=64: two blocks an SM) beside the two-warpgroup one; at D=64 +20-27% over it from
//            N=512 on (gpu-probe time, same call), at D=128 slower (only one fits an SM): the default
//            is one warpgroup at D <= 64 (v7_warps).
//         e. (commit d1ce975) one warpgroup only: the first tile's correction product joins step 1's
//            P V instead of running alone before the loop: N=512 causal 136 -> 153 TFLOP/s, other
//            lengths within +-3%.
//         f. (commit f356d47) the two-warpgroup block corrects its first tile only where a row of the
//            block sees fewer keys than a tile (short_rows): D=128 +2-4%. The same rule in the
//            one-warpgroup block (two copies of step 1) made causal D=64 7% slower: not kept there.
//       Measured at f356d47 (Table 02.1): >= 1.12x FA2 at every N >= 512 except D=64 causal N=512
//       (0.996x) and N=1024 (0.98x); 0.58-0.93x cuDNN.
//       Tried after f356d47, not kept (gpu-probe time against the f356d47 build in the same call,
//       H100, 2026-11-28):
//         g. persistent one-warpgroup blocks (as many as fit, each walking (tile, head) items, the next
//            item's Q and first K tile loaded under the last P V): non-causal D=64 within +-2%, so the
//            second block on the SM already hid the start; with a static item order causal got
//            20-30% slower (blocks' loads unequal; cuDNN's persistent kernel schedules dynamically),
//            and with tile t of every head together (head-minor order) K and V left L2: half speed.
//         h. key tiles walked from the last down, the diagonal tile first, and when its upper 64
//            keys are past every row, S with N = 64 and half the exponentials: N=512 causal 3.5%
//            slower, others 1-2% slower (the masked tile moves into the prologue, which nothing
//            overlaps).
//         i. the one-warpgroup block orders its (1-D) grid itself (wg_order): with a causal mask, in
//            groups of heads whose K and V fit in L2, the last query tile of each, then the one
//            before...: long blocks first, the grid ends on short ones. Against the f356d47 build in
//            the same call (gpu-probe time, D=64 causal): N=512 153 -> 166 TFLOP/s (FA2: 155),
//            N=1024 207 -> 243 (FA2: 219), N=16384 +1.4%; unmasked D=64 within -1.3..+0.5% (there
//            the grid stays head by head: grouped, it was 2-5% slower). Checked by gpu-probe
//            sanitize's probe cases (f16 and bf16, every mask).
//       Measured at dfc012b (Table 02.1): >= 1.09x FA2 at every N >= 512 (the lowest: D=64 causal
//       N=512); 0.62-0.93x cuDNN.
//         j. the same grouped order for the two-warpgroup block (one block an SM): causal D=128
//            N=2048/4096 +3-4%, but N=512 8% slower and N=16384 within noise; unmasked -0.5%.
//            Not kept (gpu-probe time against the dfc012b build, same call, H100, 2026-11-28).
//   v8  v7's consumers fed by a producer warpgroup (FlashAttention-3's warp specialisation),
//       2026-11-28, NVIDIA H200 (no H100 was available that day), gpu-probe time in one call each:
//         a. one thread of a third warpgroup loads Q, K and V as TMA boxes (src/gpu/tma.rs's maps,
//            `tile_off`'s swizzle) into 2 (D = 128) or 4 (D = 64) stages; "full" and "empty"
//            mbarriers per stage replace v7's cp.async waits and its block-wide barrier, so the two
//            consumer warpgroups no longer meet every tile. `setmaxnreg` moves registers from the
//            producer to the consumers. With v7's two P register sets the consumers needed more than
//            the 240 they can get (ptxas: spills, and C7512, every wgmma serialised at D = 128);
//            rounding P_t into the one set only after P_{t-1} V is done (FlashAttention-3's order)
//            fits with no spill and no warning (commit 30d9190): D = 128 N = 2048 462 -> 582 TFLOP/s
//            against v7, N = 16384 480 -> 588, causal 518 -> 640; at D = 64 below v7's
//            one-warpgroup blocks up to N = 2048.
//         b. ping-pong (the two warpgroups take turns issuing their wgmmas on named barriers): +4-7%
//            at N = 512-1024, D = 128, within -8..+1% elsewhere. Not kept.
//         c. persistent (commit 2dc2b67): one block an SM taking (tile, head) items in `work_item`
//            order from a counter in global memory that the last block resets; the next item's Q
//            and K/V load while the consumers finish the last. Against (a) in the same call:
//            D = 128 N = 512 380 -> 427, causal 219 -> 254; D = 64 N = 512 280 -> 320, causal
//            151 -> 184; N >= 8192 within -4..+6%. Producer 40 registers, consumers 232.
//         d. racecheck reported the handoff of the work item through shared memory: with one
//            arrival a warp on Q's "empty" barrier (with or without a __syncwarp before it) only
//            lane 0's read is released; every consumer thread now arrives (commit 6740c03: 0
//            hazards).
//         e. (2026-11-28, H200) three consumer warpgroups at D = 64 (192-row tiles, 512 threads,
//            setmaxnreg 24 / 160; ptxas spills 144 bytes, by compiling with other budgets about 44 of
//            them the producer's and the rest the consumers'; at 152 every wgmma is serialised, C7512):
//            against two, gpu-probe time, both builds in one call: unmasked
//            N = 512 319 -> 333 TFLOP/s, 2048 405 -> 473, 4096 424 -> 499, 16384 414 -> 487; causal
//            N = 4096 385 -> 411, 16384 430 -> 466..511, equal at 2048, but 187 -> 156 at 512 and
//            264 -> 225 at 1024 (three 192-row tiles cover 512 rows unevenly). Kept for all but causal
//            calls up to N = 2048, which keep two (`v8_consumers`).
//         f. (2026-11-28, H200) two Q tiles where they fit (every kernel but D = 128 with three
//            stages): the producer takes the next item and asks for its Q once the current item's
//            first K/V tile is on its way, and the consumers issue the next item's first S with this
//            item's last P V, computing its exponentials while P V runs, then store this item's O
//            (`ws_next_item`). Against the f88157a build, gpu-probe time, both builds twice in one
//            call (old, new, old, new): D = 128 N = 512 436 -> 444 TFLOP/s, causal 254 -> 275; 1024
//            +1.4% / +2.2%; 2048 +1.0% / +0.4%; D = 64 N = 512 333 -> 343, causal 187 -> 191; 1024
//            +1.3% / +1.8%; from N = 4096 within -2.3..+6% (noise of that size between the two
//            runs of one build there). The one-Q-tile kernel's code moved too and gained as much
//            unmasked (D = 128, three stages, N = 512 434 -> 444): there the gain is the rewritten
//            loop's, not the overlap's. The overlap shows at D = 128 causal N = 512 (+8.5% against
//            +1.4% for the one-Q-tile kernel). Checked: flash_gpu 1948 ok, memcheck 0 errors,
//            racecheck 0 hazards.
//         g. a consumer warpgroup whose 64 rows all lie past the last query row (the third of the last
//            192-row tile at N = 512) passing its tiles on without computing (commit f3fbd4a; ptxas:
//            the three-consumer kernels' spills fell from 172 to 34 bytes, no serialisation warning).
//            Slower everywhere, against the cade349 build, gpu-probe time, twice each in one call
//            (H200, D = 64): N = 512 340 -> 332 TFLOP/s, 1024 396 -> 372, 2048 472 -> 415, 4096 498
//            -> 430, causal 4096 400 -> 355, 16384 464..491 -> 420, with idle warpgroups in at most
//            one item in three (N = 512) and one in 33 (2048): the branch cost the loop of every item
//            more than the skipped work saved. memcheck and racecheck were clean. Not kept.
//         h. the producer asking L2 for the K/V tile 1, 2 or 4 past the one it loads, before it
//            waits for a free stage (`cp.async.bulk.prefetch.tensor`, this item's tiles or the next
//            item's first; commit edd74cb, reverted). Slower at every shape, 3-35%, against the
//            same kernel without the hints (H200, gpu-probe time, both builds twice in one call,
//            2026-11-28; the build without hints within 0.5% of the one before): D = 128 N = 512
//            446 -> 412 / 408 / 408 TFLOP/s, 2048 609 -> 474..510 / 457..469 / 451..454, 4096 639
//            -> 479..536 / 477 / 480..488, causal 512 275 -> 253 / 253 / 259; D = 64 N = 512 343
//            -> 331 / 331 / 334, causal 512 191 -> 182 / 182 / 183, causal 4096 402 -> 348..365.
//            A prefetch box takes the copy engine's issue slot as a load does, and the first
//            touches it was to hide are not what the short rows wait on, or not all of it.
//         i. O stored through the item's Q tile (commit fb57656, reverted): a profile's stall samples
//            (ncu SourceCounters, one launch, H200, a601e63) put 39% of all samples at D = 128 N = 512
//            in the code that runs once an item (4096: 7%), a sixth of all in the epilogue's 32-bit
//            stores and the register reuse waiting on them. Each warp wrote its 16 rows of O, rounded,
//            into its rows of the Q tile and stored them back as 16-byte pieces of whole rows, the tile
//            released to the producer after that instead of after the item's last S. Checked (gpu-probe
//            sanitize's cases, no sanitizer: all match), and slower at every length up to 4096, against
//            a601e63, both builds twice in one call: D = 128 N = 512 444 -> 398 TFLOP/s, 2048 604 ->
//            588, causal 512 275 -> 223; D = 64 N = 512 341 -> 274, causal 512 191 -> 148, 4096 401 ->
//            354; level or faster only at D = 128 N = 16384 (581 -> 595..624, causal 636 -> 640). Then
//            the same store through an O tile of its own (commit 2ae4bdf, reverted; it fits beside
//            two Q tiles in every such kernel), the Q tile released after the last S as before:
//            checked (gpu-probe check v8: all match), and against a601e63 in one call D = 128
//            unmasked level at every length (N = 512 442 -> 441, 16384 581 -> 578), causal 512 274
//            -> 258, 1024 391 -> 382; D = 64 5-10% slower everywhere (N = 512 340 -> 313, causal
//            512 190 -> 179, 16384 459 -> 430; the three-consumer kernels spill more). So the late
//            Q was the larger part of the first attempt's loss at D = 128, and the stores were never
//            the cost the samples suggested: a warp waiting in the epilogue waits where it would
//            otherwise wait elsewhere.
//         j. three Q tiles where they fit (every kernel with two; D = 128 two stages at 226 KB), the
//            producer publishing two items ahead, so that the item after next's Q is asked for while
//            this one runs (commit 472216c, reverted; i. had shown a later Q costing 10% at D = 128 N =
//            512). Checked (gpu-probe check v8: all match); against a601e63 in one call: D = 128
//            unmasked level (N = 512 446 -> 442, 4096 640 -> 644, 16384 581 -> 598), causal 3-6%
//            slower (512 276 -> 262, 16384 601 -> 567); D = 64 N = 512 343 -> 318 (both builds twice),
//            1024 399 -> 382, causal level to 2048 and 4% slower from 4096. Two Q tiles already bring
//            the next Q in time; a third only takes the producer's attention two items ahead.
//         k. FlashAttention-4's conditional rescale (commit 1e7a7a6, reverted): a row keeps its old
//            maximum unless the new one is more than 2^8 larger in the exponentials, so alpha is 1 on
//            most tiles of a long row and the warp skips O's 64 multiplies (a vote, the branch
//            warp-uniform; p stays at most 256, inside fp16). ptxas: no spill and no serialisation
//            warning added. Checked (gpu-probe check v8: all match); against the 424cd3d build,
//            both twice in one call (H200, 2026-11-28): D = 128 unmasked level (N = 512 443 -> 444,
//            2048 605 -> 604, 16384 593 -> 586..590), causal level to 4096 (-0.2..-0.5%) and +7% at
//            16384 (590..595 -> 634..635, unexplained); D = 64 1-2% slower up to 4096 (N = 512 341
//            -> 338, 2048 472 -> 466, causal 4096 401 -> 396). The rescale was never on the loop's
//            critical path: the other warpgroup's wgmmas fill the tensor cores while one rescales.
//         l. three K stages and two V stages at D = 128 (commit 7d484d5, reverted): with V asked for
//            one tile after K (the consumers read V_t a step after K_t), K and V both run two tiles
//            ahead, and the 224 KB still hold the second Q tile, which three stages of both do not.
//            Checked (the edge grid of tests/flash_gpu.rs: ok); against the 424cd3d build, both twice
//            in one call (H200, 2026-11-28): N = 512 441 -> 448 TFLOP/s (causal 273 -> 274), 1024 1-2%
//            slower, from 2048 on 1-12% slower (4096 631 -> 552, causal 563 -> 493..556). The short
//            items' wait is not for stages.
//         m. b's ping-pong again, now in the persistent block (commit 4c4c15f, reverted): the consumer
//            warpgroups take turns issuing their products on named barriers 1 + wg, every group of
//            products one turn (an item's first S, a step's S and P V, the last P V), the same turns
//            in every warpgroup because they share items; warpgroup 0 takes the last hand-over. Checked
//            (gpu-probe check v8: all match; synccheck: 0 errors); against the 424cd3d build, both
//            twice in one call (H200, 2026-11-28): D = 128 unmasked N = 512 443 -> 451..452 TFLOP/s,
//            1024 +0.9%, from 2048 level (16384 -0.6%); causal 512 -1.1%, 1024-4096 level; D = 64
//            (three warpgroups unmasked) 1.5-4% slower from N = 1024, causal 4-7% slower up to 4096.
//            D = 128 causal 16384 read 566..594 -> 622..634, as in k., and the 424cd3d build itself
//            read 618..628 there in l.'s call: that shape's spread between calls is larger than any
//            of these changes.
//         n. The trace build (FA_TRACE, `gpu-probe trace`, commit 871d1e8; Lab 02's Table 02.5 and
//            Figure 02.1) showed where a short item's time goes: at D = 128 N = 512 each consumer
//            warpgroup spent about 1250 cycles an item between asking for the next item and waiting
//            for its first K (the item's Q had arrived long before; the time is the item's decoding,
//            `keys`, with its divisions) and about 1500 storing O, both warpgroups at once, of about
//            17000 an item. So the producer now publishes each item decoded (key tiles, head, first key
//            tile, query tile; commit 99f7225), which halved the first (trace: 1254 -> 676 cycles an
//            item). Timed against 424cd3d, both twice in one call (H200, 2026-11-28): D = 64 causal,
//            the two-consumer block, N = 512 190 -> 201 TFLOP/s, 1024 269 -> 282, 2048 341 -> 354; D =
//            128 causal 512 +1.3..2%; but every other kernel's loop compiled slower (D = 128 unmasked
//            1-2% at every length, the three-consumer D = 64 block about 1%). Kept only where it paid
//            (`DECODED`, commit 51f5607, whose other kernels compile to 871d1e8's PTX exactly): again
//            against 424cd3d, D = 64 causal 512 / 1024 / 2048 +5.1% / +4.5% / +3.4% in both runs, D =
//            128 within 0.6%; gpu-probe check v8 all match, racecheck 0 hazards.
//         o. The trace's other per-item state, storing O (about 1500 cycles an item at N = 512, both
//            warpgroups at once): each consumer warpgroup writes its 64 rows of O, rounded, into an O
//            tile of its own in shared memory (tile_off's swizzle, conflict-free), and one thread
//            hands it to the copy engine (`cp.async.bulk.tensor` store, a bulk group it waits on
//            before the tile is written again; rows past N are not stored), where the tile fits
//            beside two Q tiles and the stages. Unlike i., no thread issues a global store. Checked
//            (gpu-probe check v8: all match; racecheck 0 hazards); against the 51f5607 build in one
//            call (H200, 2026-11-28, commit ca318e6, every fitting kernel with the tile): D = 128
//            unmasked N = 512 435 -> 473 TFLOP/s, 1024 534 -> 556, 2048 594 -> 604, 16384 588 -> 570;
//            causal 512 271 -> 286, 1024 387 -> 400, 2048 487 -> 493, 16384 626 -> 567 (that shape's
//            spread between calls is as large); D = 64 1-8% slower everywhere (unmasked 512 340 ->
//            323, 16384 485 -> 451). Kept as the `_o` kernel at D = 128 with two stages up to N =
//            2048 (`v8_o_tile`; its PTX is the measured build's), the other kernels as before; its
//            length rule was revised in p.
//         p. The item boundary reordered (`LATE_S`, every kernel with two Q tiles): this item's last
//            P V is issued first and the next item read (and decoded) under it; then the next item's
//            first S is issued and this item's O stored while that S runs. The S's exponentials,
//            which the old order computed under the last P V, now have nothing under them. The trace
//            at 4887609 (before this) gave the two hidden states 6.8% and 8.4% of a consumer's cycles
//            at D = 128 N = 512. Every path waits for both products before paths join: a product in
//            flight where they join is serialised by ptxas (its C7514 / C7515 notes). Checked
//            (gpu-probe check v8: all match; racecheck 0 hazards); against 4887609, both twice in
//            one call (H200, 2026-11-28): D = 128 unmasked N = 512 482 -> 508 TFLOP/s, 1024 566 ->
//            588, 2048 615 -> 634, 4096 638 -> 635; causal 512 288 -> 297, 1024 406 -> 421, 2048
//            502 -> 519, 4096 567 -> 563; D = 64 unmasked within 0.6% (512 340 -> 338), causal 512
//            200 -> 209, 1024 281 -> 289, 2048 352 -> 360, 16384 462..464 -> 486..503. Kept. In the
//            same call, the `_o` kernel past N = 2048 (both builds with p): unmasked 4096 634 -> 658,
//            8192 654 -> 636..649; causal 4096 562 -> 584, 8192 606 -> 621; at 16384 the two runs
//            disagree by more than the change. So `v8_o_tile` now takes rows that see at most 4096
//            keys on average (N / 2 under a causal mask).
//         q. Not a change: where the O store's time goes, from a diagnostic trace build with four more
//            events inside `store_o` (96af004 plus the events, not kept; H200, 2026-11-28, one call,
//            medians over the first two blocks). With the O tile (D = 128): the rounded writes into
//            the tile 1080-1140 cycles, the proxy fence and the second warpgroup barrier about 100
//            each, thread 0's TMA issue about 330; at D = 64 the plain global stores (`wg_store`)
//            about 1600. The same at N = 512 and 4096, causal or not. So the stores themselves are
//            slow, not the synchronisation around them; most likely they queue for the shared memory
//            unit behind the S product's operand reads (each consumer's S reads 48 KB of Q and K
//            from shared memory), and so stretch over the product, which finishes under them (the
//            wait for S after the store is about 110 cycles). The boundary now costs about one loop
//            step plus S_0's exponentials.
//         r. S_0's exponentials under the next S (`EARLY_S1`, code not kept): at the boundary, once the
//            next item's S_0 is done, its S_1 issued before S_0's exponentials, and that item's first
//            step done there (P_0 V_0 a write-only product, scale-d 0, so O is not live under S_1;
//            S_1's exponentials under it), its loop starting at t = 2; items with two tiles or more
//            and no short rows. Without the loop's shared store after the exponentials ptxas waited
//            for P_0 V_0 before them and spilled; with it, no spill, no C75xx note. Checked (gpu-probe
//            check v8: all match; racecheck 0 hazards; REQUIRE_GPU flash tests 1948 ok). Against the
//            same source without it, twice in one call (H200, 2026-11-28): D = 128 unmasked N = 512
//            506 -> 499 TFLOP/s, 1024 587 -> 579, 2048 627 -> 621, 4096 643 -> 638; causal 512 296 ->
//            285, 1024 418 -> 414; D = 64 within 0.6%. Slower: it assumed the tensor cores idle
//            under S_0's exponentials, which the per-warpgroup trace cannot show (the other
//            warpgroup's products compete for them); what it surely adds is the hand-over at the
//            join (the peeled step leaves O and P in other registers than the loop's). `DECODED` at
//            D = 128 as well (same call, with r): slower again, 512 499 -> 490, causal 1024 414 -> 408.
//         s. Ping-pong a third time (after b. and m.), now that p. put a product under most of the
//            boundary: the two consumer warpgroups issue in turns (named barriers 3 and 4) at every
//            issue point, or in the loop only. Checked (check v8 all match, racecheck 0 hazards).
//            Against the free-running build, twice in one call (H200, 2026-11-28): D = 128 level at
//            N = 512, slower from 1024 (unmasked 596 -> 583, 2048 641 -> 623, 4096 659 -> 640; causal
//            4096 593 -> 574); D = 64 unmasked level; causal 512 210 -> 180 (every issue point) / 200
//            (loop only), 1024 290 -> 255 / 268. Not kept. (The free-running build ran 1-2.5% faster
//            in this call than the same source in r.'s, on another H200: why only same-call ratios
//            count.)
//         t. Not a change: v8 beside cuDNN in ncu's counters (49f9a08's kernels, PyTorch's cuDNN
//            backend, one launch each, one call, H200, 2026-11-28; ncu fixes the clocks). Elapsed
//            cycles ours / cuDNN: D = 128 unmasked N = 4096 1.02x, 512 1.09x; D = 64 causal 512 1.33x.
//            Tensor pipe active 71.7% / 73.5% at 4096, 54.9% / 59.9% at 512, 27.7% / 35.0% D = 64
//            causal. Instructions: 0.95x cuDNN's at 4096, 1.07x at 512, 1.38x at D = 64 causal (its
//            kernel also issues 6% fewer wgmmas there: finer causal skipping). Stalls per issued
//            instruction that differ: "no instruction" (instruction cache misses) 0.32 at N = 512 and
//            0.27 at D = 64 causal against 0.08 at 4096, cuDNN 0.06-0.09 everywhere; "gmma" 0.20 /
//            0.15 against 0.08 (cuDNN 0.04-0.06). "Long scoreboard" (waits for memory) is cuDNN's
//            within 0.1, so the first-touch reading below is not where the short rows lose. cuDNN's
//            warps stall at barriers (1.25-1.72 an issued instruction, ours 0.13-0.39) and ours on
//            fixed-latency dependencies ("wait" 1.4-1.8, cuDNN 0.9) at every length, so neither
//            explains the short rows. The likeliest reading of the rest: each item boundary runs code
//            the loop does not (each v8 kernel is 113-131 KB of SASS, wg_softmax inlined at every
//            call site), fetched again at every item. Next: one copy of the boundary's softmax (or
//            the loop's reused) and fewer paths, then the same counters; at D = 64 causal, fewer
//            instructions in the masked tiles.
//         u. Following t.: the first tile's rounding residual (`wg_pack` with LOW: P - fp16(P),
//            converted back and rounded again) computed at the boundary only for items with short
//            rows, the only ones whose correction uses it (one softmax instance of each kind, one
//            executed an item). ncu's per-instruction counts (same call as t., N = 512, D = 128) put
//            about 1110 instructions a warp into each boundary against 532 into a loop step, of them
//            64 conversions, 64 subtractions and 32 packs for the residual. Checked (check v8 all
//            match, racecheck 0 hazards, REQUIRE_GPU flash tests 1948 ok). Against the build
//            without it, twice in one call (H200, 2026-11-28), means of the two: D = 128 unmasked N =
//            512 499.2 -> 501.0 TFLOP/s, 1024 579.6 -> 581.9; causal 512 294.8 -> 295.8, 2048 511.5 ->
//            514.3; D = 64 unmasked 512 338.1 -> 340.6, causal 512 209.1 -> 210.9, 1024 289.2 ->
//            290.2; N = 4096 within 0.3% either way. Small, but in both rounds: kept. (The one-Q-tile
//            kernel's `first_tile` still computes it for every item.)
//         v. Following t.'s D = 64 causal lead: `wg_exp`'s mask with each row's part done once. Per
//            element, `visible` compared the key with Nk, the causal limit and the window, with the
//            flags read at run time; ptxas made of it about 600 instructions a masked tile (predicate
//            juggling through P2R / LOP3) and the three-consumer kernels spilled 116 bytes around it
//            (ptxas 13.5, locally). Now each of the thread's two rows gets the range [lo, hi) of its
//            columns once, and an element costs a compare with a constant and a select (two compares
//            with a window): about 140 instructions a masked tile, no spill in any kernel, each
//            kernel's SASS a quarter smaller (D = 64 two consumers 8432 -> 6128 instructions, D = 128
//            9352 -> 7064). Checked (check v8 all match, REQUIRE_GPU flash tests pass). Against the
//            build without it, twice in one call (H200, 2026-11-29), means: D = 64 causal N = 512
//            210.9 -> 242.4 TFLOP/s, 1024 290.1 -> 321.8, 2048 361.0 -> 375.9, 4096 401.9 -> 445.6;
//            unmasked 512 340.8 -> 375.4, 1024 395.2 -> 421.6, 4096 500.0 -> 511.9 (the spill was in
//            the three-consumer kernel's loop); D = 128 causal 512 299.1 -> 333.1, 1024 428.1 ->
//            462.8, 4096 595.9 -> 608.6; D = 128 unmasked 0.997-0.998x (level). Kept: the masked
//            tiles' code, which no profile of an unmasked loop shows, was most of t.'s D = 64 gap.
//         w. With v.: the one-Q-tile kernel's `first_tile` (every item starts there) computes the
//            rounding residual only for short rows, as u. at the two-Q-tile boundary; it is that
//            kernel's only change (D = 128, three stages, not the default), checked with v.
//         x. FlashAttention-4's lazy rescale, in v8's loop: a row's running maximum moves only when
//            the tile's maximum exceeds it by more than 8 in the exponent (2^8 in P), else alpha is
//            exactly 1, and a warp whose 16 rows all kept theirs skips O's rescale (D / 2 multiplies a
//            thread) behind one vote. P then stays below 256, which fp16 and bf16 hold to the same
//            relative precision; l and O are f32. Unit-normal scores almost never grow that much after
//            a row's first tile, so a test with scores that jump 2^12 or more a tile drives the other
//            path (`a_growing_maximum_is_rescaled`). No spill, no C75xx note. Checked (check v8 all
//            match, REQUIRE_GPU flash tests pass). Against v.'s build, twice in one call (H200,
//            2026-11-29), means: D = 128 unmasked N = 512 519.5 -> 524.3 TFLOP/s, 1024 602.8 ->
//            610.7, 2048 643.2 -> 651.9, 4096 659.7 -> 671.1; causal 1024 466.0 -> 469.9, 4096 612.9
//            -> 622.4; D = 64 unmasked 512 377.4 -> 383.9, 2048 493.6 -> 503.4; causal 4096 446.5 ->
//            453.2; D = 64 causal 512-2048 level (0.996-1.004x in each round). Kept.
//         Not kept, not timed: the diagonal tile's right half skipped for the warpgroup whose rows
//            end before it (an N = 64 S product and half the P V, behind a branch on the item). ptxas
//            serialised every kernel's wgmmas (C7520: warpgroup.arrive injected in a divergent path;
//            with the branch made warp-uniform by a shuffle, C7511 / C7515 and kilobytes of spills).
//         y. Host side, after v.: D = 64 causal takes three consumer warpgroups from N = 2048 (was
//            4096; `v8_consumers`). Three rounds, one call (H200, 2026-11-29), the same source with
//            either choice, check v8 all match for both: N = 2048 375.5 -> 394.1 TFLOP/s (+5.0%,
//            every round), 4096 level (three either way), 512 242.8 -> 213.7 and 1024 320.8 -> 284.5
//            (two kept there). The REQUIRE_GPU flash tests, whose edge grid's N = 2048 causal D = 64
//            cases now take the three-consumer kernel, pass on this build (H200, 2026-11-29).
//         z. Not kept: FlashAttention-4's other trick, some exponentials on the FMA pipe. In the
//            loop's `wg_exp`, the last 1 or 2 of every 8 column fragments took 2^x from a degree-4
//            polynomial (x rounded with the 1.5 2^23 shift, the integer added to the exponent bits;
//            relative error 2.7e-6, about 10 instructions each) instead of MUFU.EX2, 12.5% or 25% of
//            them. No spill, no C75xx note; check v8 all match. Against the build without it, twice in
//            one call (H200, 2026-11-29), D = 64: one in 8 0.93-0.98x at every length and mask, two in 8
//            0.88-0.97x. So at D = 64 on this card the exponential unit is not the limit it is on
//            Blackwell: 16 exponentials a clock an SM would allow about 1000 TFLOP/s, and what the
//            emulation adds to every other pipe costs more than the MUFU time it frees.
//         Not kept again: g.'s idle warpgroups (rows all past Nq) passing their tiles on without
//            products, retried after v. (no spill in the loop now): the branch at the top of the item
//            loop made every kernel slower, D = 64 0.89-0.93x, and D = 128, which has no idle
//            warpgroup at these lengths, 0.95-0.96x (H200, twice in one call, 2026-11-29).
//         aa. Not kept: the row sums on the tensor cores (D = 64). P V as m64n72k16, its last 8
//            columns read through the descriptor's LBO from a 16 KB block of ones beside the stages,
//            so the accumulators add up P's rows and the exponentials' loop has no sums: 499 -> 417
//            instructions a tile in the three-consumer loop, no spill. Against the build without it,
//            twice in one call (H200, 2026-11-29): level, 0.96x (D = 64 unmasked N = 512) to 1.01x
//            (8192), the 12.5% wider P V taking back what the fewer instructions gave. And l is then
//            the sum of the rounded P: O is normalised consistently, but in bf16 the LSE moved by
//            1.2e-3 on a 100-key window, past the tests' 1e-3 bound, so it would need f32 sums too.
//         ab. Not kept, host side and one constant (H200, 2026-11-29, one call, means of two rounds,
//            check v8 all match for each build): two consumers at D = 64 unmasked up to N = 1024 too,
//            which leaves no idle warpgroup (512 rows are four 128-row tiles): 0.92x at 512 and 1024
//            (382.7 -> 352.4, 427.1 -> 392.0 TFLOP/s), so the third warpgroup is worth more than the
//            ninth of its work that is padding. The causal item order's head groups (`work_item`,
//            K and V of 8 MB) at 4 MB: D = 64 causal N = 512 +2.1%, 1024 and 2048 -0.4 / -0.7%,
//            D = 128 causal +1.4% at 512, -2.2% / -3.1% at 1024 / 2048; at 16 MB: D = 64 causal
//            +0.7% / -0.3% / +1.8%, D = 128 causal -5.6% / -3.5% / -0.3% (one round there: the
//            run's time ran out). No size wins at every length.
//         ac. Not kept: a causal diagonal tile's dead columns skipped in `wg_exp` (FA_DEAD, code not
//            kept). Where every element of a 32- or 64-column chunk is masked for all 16 rows of a warp
//            (past the warp's last row on the diagonal, or past Nk), its maxima, exponentials and sums
//            skipped and P zero there, bit for bit the masked result: on the diagonal a quarter (64-
//            column chunks) to three eighths (32) of the tile's exponentials, and at N = 512 the
//            diagonal is one tile in 2.5. With the chunk test in every tile's code, ptxas cut the
//            exponentials into separate blocks (a branch and a reconvergence per chunk) and every
//            kernel got slower, D = 128 unmasked, which has no masked tile, included: 0.80-0.91x.
//            With a second copy of the exponentials, taken only by tiles that have a dead chunk, in
//            the two-consumer loop only (the three-consumer kernels spilled with it): 32-column chunks
//            0.94-0.97x, 64-column 0.97-0.99x, D = 128 unmasked as much as the causal rows (about 800
//            more instructions in each kernel's code). H200, 2026-11-29, two rounds in one call each,
//            check v8 all match for every build. The loop's code is worth more than a saving on one
//            tile in a few.
//         ad. `DECODED` (entry n) in the three-consumer D = 64 kernels too, which did not exist when n
//            was measured (330 fewer instructions, spills 12 / 8 bytes instead of 4 / 4). Against the
//            build without it, two rounds in one call (H200, 2026-11-29), check v8 all match for both:
//            D = 64 unmasked N = 512 384.6 -> 393.2 TFLOP/s, 1024 428.8 -> 440.0, 2048 501.8 -> 509.5
//            (+1.5-2.6%, both rounds), 4096 level (0.987x, 1.009x); causal 2048 395.5 -> 405.7, 4096
//            452.6 -> 460.9 (+1.6-2.9%, both rounds); the two-consumer shapes (causal 512, 1024),
//            whose kernel did not change, level. Kept.
//         ae. Not kept: o.'s O tile for the two-consumer D = 64 kernel (causal, N up to 1024; four
//            stages, 16 KB more), whose O was last tried there before p. put the store under the next
//            S. No spill; check v8 all match. Against the build without it, three rounds in one call
//            (H200, 2026-11-29): N = 512 243.3 -> 242.0 TFLOP/s (0.995x), 1024 321.6 -> 323.8
//            (1.007x), each in every round. Level: under the next S, the store's path matters little.
//         af. Not kept, a third time (after n. and r.): `DECODED` in the D = 128 kernels too, now that
//            ad. found it paying in every D = 64 kernel (about 300 fewer instructions, no spill; check
//            v8 all match). Against the build without it, two rounds in one call (H200, 2026-11-29):
//            unmasked N = 512 / 1024 / 2048 510.9 -> 502.9, 592.1 -> 582.5, 639.8 -> 629.4 TFLOP/s
//            (0.984x at each, every round), causal 0.998x / 1.009x / 1.000x. The D = 128 loop still
//            compiles slower with the decoded item, for reasons its instruction count does not show.
//         ag. Not kept: half a diagonal tile (code not kept). In the two-consumer D = 64 kernels
//            (causal, N up to 1024), a warpgroup none of whose rows sees a key in its last tile's
//            second half computed S over the first 64 keys only (an m64n64 wgmma), its exponentials
//            over 32 columns a thread instead of 64, P's second half zero; in a step of its own
//            after the loop and a third path of the item boundary, so the loop's code did not
//            change. With Nq = Nk that is every item's last tile for the first warpgroup: at N = 512
//            a tenth of the block's exponentials and a twentieth of its products. Branches between
//            two different products had to test a vote (`__all_sync`), or ptxas serialised every
//            product around them (C7520); the kernel's code grew by 31%. Against the build without
//            it, three rounds in one call (H200, 2026-11-29; check v8 all match for both, the
//            sanitizer's cases now with several key tiles under a causal mask at D = 64): N = 512
//            242.3 -> 235.3 TFLOP/s (0.971x), 1024 319.8 -> 311.5 (0.974x), every round; 2048
//            (three consumers, unchanged) level. Its P V over the first 64 keys too: 0.966x /
//            0.969x. The work came off the warpgroup that does not set the pace: an item ends when
//            the second warpgroup's full diagonal tile does, and both share every K/V stage and the
//            next Q, so unless the second waited for the tensor cores the first used, the first only
//            waits longer; the extra code costs on every item. One call cannot tell the two apart.
//         ah. The O tile (entry o) written with `stmatrix` (four 8 x 8 matrices of the accumulator
//            layout an instruction, a row address a lane) instead of a 4-byte store per fragment
//            row: 8 instructions a thread instead of 32 at D = 128, 4 instead of 16 at D = 64 (80
//            fewer in the `_o` kernel's code). Against the build without it, two rounds in one call
//            (H200, 2026-11-29), check v8 all match for each: at D = 128, where the tile was already
//            used, level (unmasked N = 512-2048 0.996-0.998x, causal 1.000-1.006x); with it, the
//            tile now pays in D = 64's two-consumer kernel (causal, N up to 1024), level there
//            without it (entry ae): N = 512 242.6 -> 246.6 TFLOP/s (+1.6%), 1024 319.7 -> 325.8
//            (+1.9%), every round. In the three-consumer kernels, against the build with the tile in
//            the two-consumer one only (same call length, two rounds): unmasked N = 512 +1.0%, 1024
//            level, 2048 -0.9%, 8192 -4.4%; causal 2048 -0.9%, 8192 -0.5%. Kept, and `v8_o_tile`
//            picks the tile at D = 64 for the two-consumer kernel and where a row sees at most 512
//            keys, as at D = 128 where it sees at most 4096 (why long rows lose with the tile is not
//            measured; it takes 16-32 KB of shared memory, which the L1 cache shares).
//         ai. Not settled, so not changed: with ah.'s cheaper store, the O tile at D = 128 for long rows
//            too (`v8_o_tile` without its 4096-key limit; host only). Two calls (H200, 2026-11-29,
//            check v8 all match for both builds), six rounds in all: per-round ratios at unmasked
//            N = 8192 0.91-1.05x, at 16384 0.98-1.09x, causal 16384 level; the build without the tile
//            itself moved by up to 8% between rounds there. At long rows the card holds its clock
//            less steadily than the difference to be measured, and the limit stays as measured in p.
//         aj. Not kept: one consumer warpgroup a block, two blocks an SM (code not kept: instances
//            flash_v8_64_s2_c1{,_o}, `__launch_bounds__(256, 2)`, consumers up to 216 registers, a grid
//            of two blocks an SM) for D = 64 causal up to N = 1024, in place of the two-consumer kernel.
//            Each warpgroup then has an item of 64 rows to itself, so none waits on a partner's longer
//            diagonal (ag.'s diagnosis), at the price of twice the items (each with its Q, its O and
//            its first K/V tile) and K/V read once per 64 rows. Against the build without it, three
//            rounds in one call (H200, 2026-11-29, check v8 all match for both): N = 512 246.6 ->
//            231.5 TFLOP/s (0.939x), 1024 326.0 -> 314.5 (0.965x), every round; 2048 (three
//            consumers, unchanged) level. The per-item costs outweigh the partner's wait.
//         ak. Not a change: what the last wave costs (`gpu-probe time v8 N D bB`, the batch B varied
//            around the grid's; H200, 2026-11-29, commit 16d5549, three rounds in one call, check
//            before each). At D = 128 the grid is B N / 8 equal items on 132 SMs; at
//            N = 1024, B = 29-32 leave the last wave 3% short of full by that count, B = 33 fills it
//            exactly and 34-36 nearly: 623-625 TFLOP/s against 628-630, every round, so the tail
//            costs under 1%, not 3% (the persistent blocks overlap one item's end with the next one's
//            loads, so a short last wave is not idle time in full). At N = 512 B = 32 (the grid's)
//            518 against 528 at B = 33 and 526 at 34. At D = 64 (192-row items) N = 1024, B = 9-13:
//            419, 431, 439, 436, 442 (B = 11 fills the waves exactly): a rising trend with at most
//            a couple of percent of tail on it. So splitting the last wave's items along the keys
//            (merged by their log-sum-exp) could win back at most a percent or two, before the merge.
//         al. Not kept: ping-pong again (entry b, code not kept), now in the persistent loop: the consumer
//            warpgroups issue their products in turns on named barriers (each waits on its own for the
//            one before it to pass the turn on; FlashAttention-3's scheduler barrier), at every issue
//            point of the loop and the item boundary. Against the build without it, three rounds in
//            one call (H200, 2026-11-29, against the 714add9 build; every shape checked first): slower
//            at every shape and in every round, D = 128 causal N = 512 / 1024 / 2048 0.986x / 0.950x /
//            0.947x, unmasked 0.977x / 0.963x / 0.957x; D = 64 causal 0.915x / 0.905x / 0.836x,
//            unmasked N = 512 / 1024 0.828x / 0.820x. v7's in-warpgroup overlap (S_t with P_{t-1} V)
//            already keeps the tensor cores fed; a turn only makes each warpgroup wait for the other.
//         am. Not a change: the kernels' size and registers read locally, no GPU (`modern-attention
//            kernels flash_fwd FA_VERSION=8`: NVRTC 13.5 for sm_90a, ptxas -v and the cubin's .text
//            sections; 217f9c7, 2026-11-30). f16 / bf16 machine code: D = 64 two consumers 95-97 /
//            98-100 KB, three consumers 94-96 / 98-100 KB, D = 128 two stages 110-111 / 113-114 KB, three
//            stages 90 / 92 KB; registers at launch 168 (two consumers) and 128 (three), spills 4 / 4
//            bytes in the three-consumer D = 64 kernels, none elsewhere (the trace build spills up to 92 /
//            132). About 100 KB a kernel, of which a loop step runs a small part: entry t's reading (the
//            item boundary's code fetched again at every item) is still untested, and a change that
//            shrinks the boundary's code can now be sized here before it is timed.
//         an. Following t. and am.: the default kernels compiled once more for each mask class they are
//            picked for (`MASK` in `flash_ws`, `v8_kernel` on the host): `_u` for no mask and whole key
//            tiles, every masked tile's code left out; `_c` for a causal mask without a window, the
//            window's code left out (it was the larger of the two masked copies in each of the five
//            inlined softmaxes). Executed instructions unchanged; machine code (f16, `kernels`): D = 128
//            110-111 KB -> 65-67 (`_u`) / 93-94 (`_c`), D = 64 95-97 -> 53 (`_o_u`) / 77-80 (`_c`). The
//            loop step's code is then one run of about 500 instructions where it was 892 with the masked
//            block in its middle, and the item boundary's hot path about 16 KB where it was 23 (nvdisasm
//            of the cubins from `kernels --cubin`). Checked (gpu-probe check v8: all match; REQUIRE_GPU
//            flash tests pass), and against the build without it, twice in one call each (H200,
//            2026-11-30, means of the two rounds): unmasked D = 128 N = 512 513.8 -> 523.1 TFLOP/s
//            (+1.8%), 1024 598.6 -> 607.2, 2048 644.2 -> 652.9, 4096 667.8 -> 673.0, 16384 609.8 -> 619.3
//            (+0.8..+1.6%, in both rounds); D = 64 N = 512 395.6 -> 407.0 (+2.9%), 1024 level, 2048 /
//            4096 / 16384 0.996x in both rounds (the plain three-consumer `_u` kernel; so not compiled:
//            from N = 1024 D = 64 runs the general kernel as before). Causal D = 64 N = 512 246.9 -> 250.2
//            (+1.3%), 1024 +0.5%, 2048 +0.7%, 4096 +0.4%; D = 128 512 +0.6%, 1024 +0.7%, 2048 +0.9%, 4096
//            +1.4%, each in both rounds; 16384 moved by 4-9% between the rounds of one build in either
//            direction, as before. Less code, same instructions, faster: the first direct evidence for
//            t.'s instruction-cache reading. Its prediction held only in part: the largest gain is at
//            the shortest unmasked rows, but long unmasked rows at D = 128 gained nearly as much, and
//            causal D = 128 more at 4096 than at 512; the loop step's own code, now one unbroken run,
//            takes fewer cache lines too.
//         ao. Host side, after an.: D = 64's `_o_u` kernel (the O tile, no masked code: 53 KB against
//            the general plain kernel's 95) for whole unmasked rows up to N = 2048, where the general
//            `_o` kernel stops at 512 (entry ah); and D = 128's `_o_u` past N = 4096. Against e2e61cd,
//            three rounds in one call (H200, 2026-11-30; the same kernels, only the choice differs):
//            D = 64 N = 1024 438.2 -> 445.3 TFLOP/s (+1.6%, every round), 2048 506.8 -> 509.6 (+0.2..
//            +0.7%, every round); D = 128 8192 and 16384 undecided (a round of the unchanged build moved
//            by 7-9%), so D = 128 keeps the O tile to 4096. D = 64 rows past 2048 ran the same kernel in
//            both builds and still read 0.94-1.07x between them at 8192 in single rounds: at long rows
//            one round says nothing below several percent. Kept for D = 64 (`v8_kernel`).
//         ap. Not kept: at the item boundary the next item's exponentials computed once (`wg_exp`), only
//            the rounding differing between short-row items and the others (`wg_pack<LOW>`): the same
//            instructions executed, machine code `_c` 80 -> 74 KB (D = 64) and 94 -> 87 (D = 128), the
//            general kernels about a tenth smaller. Against the build without it, three rounds in one
//            call (H200, 2026-11-30, `bench/ab.sh`, every build checked first): D = 128 causal N = 512 /
//            1024 / 2048 / 4096 0.989x / 0.991x / 0.995x / 0.998x, unmasked 0.995x / 0.996x / 0.998x /
//            0.999x, each in every round; D = 64 causal 1.000x / 1.006x / 0.993x / 0.997x. Smaller code
//            and slower: less code is not by itself faster. Not measured why; a candidate: entry an's
//            kernels lost code that never ran, while here the one softmax now runs before a branch on
//            the item, where each of the two had been scheduled with its own rounding after it.
//         aq. D = 128's causal kernels (`_c`, `_o_c`) take each item decoded from the producer, as D = 64's
//            kernels do (DECODED above). Same call as ap.: D = 128 causal N = 512 332.1 -> 333.0 TFLOP/s,
//            1024 459.3 -> 463.7 (+0.9%), 2048 551.5 -> 553.4, 4096 606.9 -> 607.8, faster in every
//            round (+0.1..+1.0%); D = 64 unchanged (0.996x-1.001x, the same kernels). The same for the
//            unmasked `_u` kernels was 0.992x / 0.994x at N = 512 / 1024 and 1.002x / 1.009x at 2048 /
//            4096, each in every round: not taken, as short unmasked rows are where v8 is behind.
//         ar. Not kept, entry y. asked again with the mask-class kernels: three consumers at short causal
//            rows (`gpu-probe time v8,v8@flash_v8_64_s4_c3_c 512,1024 64 causal`, one build, three
//            rounds in each order, same call as ap.): 228 against 250 TFLOP/s at N = 512 (0.91x), 295
//            against 329 at 1024 (0.90x). Two consumers stay the rule there (`v8_consumers`).
//         as. The row reductions (`wg_exp`'s RED): the maximum as a tree of four partial maxima
//            (RED_TREE_MAX; the chain of dependent FMNMX 7 deep instead of 17), and l kept as each
//            thread's share of its row's sum, the quad's four shares added once an item where O is
//            divided (RED_L_SHARE; two shuffles and two adds a row fewer at every tile). Both
//            exact in the maximum, the sum's rounding order changed. Two calls (H200, 2026-11-30,
//            `bench/ab.sh`, every build checked first), against the build without either: both at
//            once, three rounds, D = 128 unmasked N = 512 / 1024 / 2048 / 4096 +0.7% / +1.2% / +1.6% /
//            +2.2%, D = 64 causal 1024 +1.2% but 512 -1.0% and 2048 / 4096 -0.6%, D = 64 unmasked 4096
//            -0.9%, each in every round. So each alone, two rounds (ratios in both rounds within
//            0.4% of each other): the shares +0.6..+1.7% at D = 128 unmasked, level at D = 128
//            causal (-0.4% at 512, +0.5% at 4096), +0.5..+1.2% at D = 64 unmasked up to 2048 (the
//            `_o_u` kernel), -0.7% / +0.8% / -1.2% / -1.2% at D = 64 causal 512 / 1024 / 2048 / 4096,
//            -0.9% at D = 64 unmasked 4096 (the general kernel); the tree +0.5% / +0.9% at D = 64
//            causal 512 / 1024 (the two-consumer kernel), -0.6..-1.4% at D = 64 unmasked, level
//            elsewhere. Neither is a rule on its own: ptxas schedules each kernel's loop around it
//            differently. Kept by kernel where it measured faster (`flash_ws`'s RED): the shares in
//            every D = 128 kernel and D = 64's `_o_u`, the tree in D = 64's two-consumer kernels.
//            Every fp16 v8 kernel's machine code (cubin .text, `kernels --cubin`) is byte for byte
//            that of the build it was measured in, so the timings above are this source's.
//         at. O's rescale one issue later (LATE_RESCALE in `flash_ws`): step t issues S_t, then
//            multiplies O by the factor step t - 1's softmax left, then issues P_{t-1} V_{t-1}, as
//            FlashAttention-3's loop does; before, O was rescaled at the end of step t - 1, after its
//            P V was done, so S_t waited for the multiplies (D / 2 a thread, behind entry x's vote).
//            An item's first softmax leaves factor 1, and the item's last P V takes the last factor
//            first. Same instructions, one more wgmma fence a step. No spill, no C75xx note. Against
//            the 2844eb3 build, three rounds in one call (H200, 2026-11-30, `bench/ab.sh`, both
//            builds checked first: check v8 all match), ratio in each round: D = 64 causal N = 1024
//            1.035 / 1.034 / 1.037, 512 1.004-1.006; D = 64 unmasked 1024 1.007-1.023, 2048
//            1.011-1.027, 512 1.000-1.008; D = 128 causal 512 / 1024 / 2048 / 4096 +0.1..+0.8%,
//            +0.2..+1.0%, +1.1..+1.2%, +1.7..+2.2%, unmasked +0.1..+0.4%, +0.6..+0.8%, +1.4..+1.5%,
//            +2.1..+2.3%; level in the three-consumer D = 64 kernels with a mask (causal 2048
//            0.991-0.999, 4096 0.998-1.003; unmasked 4096, the general kernel, 0.982-1.004). Entry k
//            had read the rescale as off the loop's critical path; it was on the path to the next S.
//            Kept where it measured faster: every kernel but D = 64's three-consumer ones with a mask
//            (`_c` and the general kernel), whose machine code is byte for byte 2844eb3's; every other
//            fp16 v8 kernel's is the measured build's. Not yet run on this source: the REQUIRE_GPU
//            flash tests and compute-sanitizer (the device time of the day was spent).
//         Where short rows lose (ncu, one launch each, H200, a0e81e9): D = 128 N = 512 unmasked, L2 hit
//         rate 64% (N = 4096: 91%), DRAM at 32% and L2 at 62% of peak, SM throughput 45% (4096: 69%),
//         no eligible warp in 68% of cycles; D = 64 causal N = 512 alike (L2 hits 57%, DRAM 28%, SM
//         45%). Neither memory nor the tensor cores are busy: the consumers wait on first-touch K/V
//         tiles and Q, with two stages too few to cover DRAM's latency. Next: more stages at short N,
//         or a K/V tile multicast to a 2-block cluster (asking L2 ahead, h. above, does not help).
//         More stages did not pay (l.). And cuDNN's kernel at these shapes (ncu LaunchStats, one
//         launch each, H200, 2026-11-28, PyTorch's cuDNN backend; the kernel's name gives its tile,
//         `..._wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1` at D = 128, `64x128x64` at D = 64) is built
//         like v8: one persistent block an SM (132), 384 threads, 168 registers at launch, and no
//         cluster (cga 1x1x1), so multicast is not where its lead comes from. It asks for all 227 KB
//         of shared memory at D = 128 (v8: 199 KB) and 134 KB at D = 64 (v8's three-consumer block:
//         183 KB). Under ncu at N = 512, D = 128 it took 169 us to v8's 210 (SM throughput 60% to
//         47%), at N = 2048 538..544 to 584, at D = 64 N = 512 232 to 271 (ncu fixes the SM clock,
//         so these ratios are lower than Table 02.1's, timed at the clocks the card chooses).
//       Measured at 2dc2b67 (Table 02.1, H200): the fastest version from N = 512 on at D = 128 and
//       at D = 64 (but causal N = 4096, where v7 is); best ours / cuDNN 0.97-1.07x at D = 128 from
//       N = 2048, 0.76-0.89x at 512-1024, 0.69-0.95x at D = 64.
//       Measured at 0d78c28 (Table 02.1, H200, 2026-11-28, PyTorch 2.11 in the same call): best ours /
//       cuDNN at D = 128 unmasked 0.94x / 0.97x at N = 512 / 1024, 1.10x at 2048, 0.97-1.00x beyond;
//       causal 0.87x / 0.97x at 512 / 1024, 1.02-1.07x from 2048. At D = 64 unmasked 0.85x / 0.88x at
//       512 / 1024, 1.02-1.09x from 2048; causal 0.79-0.95x up to 4096, 1.02x / 1.06x at 8192 / 16384.
//       Measured at f917a64 (after v. and x.; Table 02.1, H200, 2026-11-29, PyTorch in the same call):
//       best ours / cuDNN at D = 128 unmasked 0.97x / 0.99x at N = 512 / 1024, 1.00-1.03x from 2048;
//       causal 0.98x at 512, 1.06-1.20x from 1024. At D = 64 unmasked 0.95x / 0.97x at 512 / 1024,
//       1.06-1.10x from 2048; causal 0.92-0.94x at 512-2048, 1.09x from 4096.
//       Measured at e1d17e3 (after y.; Table 02.1, H200, 2026-11-29, PyTorch in the same call): best
//       ours / cuDNN at D = 128 unmasked 0.98x / 0.99x at N = 512 / 1024, 1.00-1.10x from 2048; causal
//       0.99x at 512, 1.06-1.12x from 1024. At D = 64 unmasked 0.97x / 0.95x at 512 / 1024, 1.04-1.16x
//       from 2048; causal 0.92x / 0.95x at 512 / 1024, 1.02-1.09x from 2048.
//       Measured at a01189d (after ad.; Table 02.1, H200, 2026-11-29, PyTorch in the same call): best
//       ours / cuDNN at D = 128 unmasked 0.98x / 0.99x at N = 512 / 1024, 1.00-1.04x from 2048; causal
//       0.99x at 512, 1.07-1.09x from 1024. At D = 64 unmasked 0.98x / 0.99x at 512 / 1024, 1.06-1.11x
//       from 2048; causal 0.91x / 0.94x at 512 / 1024, 1.02-1.11x from 2048. Interleaved with cuDNN
//       shape by shape (Table 02.7, four rounds, same day): ahead in every round at 15 of the 24
//       shapes, behind in every round at D = 64 causal 512 / 1024 (0.93x / 0.94x medians), D = 64
//       unmasked 1024 and D = 128 unmasked 512 (0.99x / 0.98x), level at the other five.
//       Measured at 53c8f22 (after ah.; Table 02.1, H200, 2026-11-29, PyTorch in the same call): best
//       ours / cuDNN at D = 128 unmasked 0.98x / 0.99x at N = 512 / 1024, 1.00-1.05x from 2048; causal
//       1.00x at 512, 1.07-1.21x from 1024. At D = 64 unmasked 1.00x / 1.01x at 512 / 1024, 1.05-1.13x
//       from 2048; causal 0.93x / 0.96x at 512 / 1024, 1.05-1.10x from 2048. Interleaved (Table 02.7,
//       four rounds, same day): ahead in every round at 14 of 24 shapes, behind in every round at
//       D = 64 causal 512 (0.95x median) and D = 128 unmasked 512 (0.98x), level at the other eight
//       (D = 64 causal 1024 now among them, 0.98x median, rounds 0.95-1.04x).
//       Interleaved again at e0080eb (the same kernels; PyTorch's side now checked under the same rule
//       as ours; H200, 2026-11-29, four rounds): ahead in every round at 15 of 24 shapes, behind in
//       every round at the three N = 1024 shapes D = 64 causal (0.96x), D = 64 unmasked (0.99x) and
//       D = 128 unmasked (0.99x), level at every N = 512 shape (rounds 0.93-1.14x) and at D = 128
//       unmasked 8192 and 16384: at the short rows the order moves between runs of the same code.
//       Measured again at 15c25f0 (the same kernels, every record of the card's file in one session,
//       H200, 2026-11-29): Table 02.1's best ours / cuDNN at D = 128 unmasked 0.98x at N = 512 and
//       1024, 1.00-1.03x from 2048; causal 0.99x at 512, 1.07-1.19x from 1024; at D = 64 unmasked
//       1.00x / 0.95x at 512 / 1024, 1.06-1.11x from 2048; causal 0.93x / 0.95x at 512 / 1024, 0.995x
//       at 2048, 1.09-1.10x from 4096. Interleaved (three rounds): ahead in every round at 14 of 24
//       shapes, behind in every round at D = 64 causal 1024 (0.96x) and D = 128 unmasked 1024 (0.99x),
//       level at the other eight, every N = 512 shape among them.
// ANCHOR_END: changelog

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#ifndef FA_VERSION
#define FA_VERSION 5
#endif
#ifndef FA_BF16
#define FA_BF16 0
#endif

#if FA_BF16
typedef __nv_bfloat16 elem_t;
#else
typedef __half elem_t;
#endif

// Mirrors `gpu::flash::Params` (repr(C)).
struct Params {
    int b, hq, hkv, nq, nk, d;
    int causal;        // 1: key j visible only if j <= p
    int window;        // 0: no window; W > 0: key j visible only if j > p - W
    float scale;       // 1 / sqrt(D)
    float scale_log2;  // scale * log2(e): softmax runs in base 2 (exp2 is one MUFU instruction)
};

#define NEG_INF (-__int_as_float(0x7f800000))
#define LN2 0.69314718055994530942f

// A row's log-sum-exp (natural log) from its running maximum m and its sum l of 2^(s scale - m).
__device__ __forceinline__ float row_lse(const Params& p, float m, float l) {
    return l > 0.f ? (m * p.scale_log2 + log2f(l)) * LN2 : NEG_INF;
}

// ---------------------------------------------------------------------------------------------------
// Element helpers: f16 and bf16 behind one interface.

__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store_f(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }
__device__ __forceinline__ float2 to_f2(unsigned int u, __half) {
    __half2 h = *reinterpret_cast<__half2*>(&u);
    return __half22float2(h);
}
__device__ __forceinline__ float2 to_f2(unsigned int u, __nv_bfloat16) {
    __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162*>(&u);
    return __bfloat1622float2(h);
}
// Two floats rounded into one 32-bit register; `a` in the low half (the lower column index).
__device__ __forceinline__ unsigned int pack2(float a, float b, __half) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<unsigned int*>(&h);
}
__device__ __forceinline__ unsigned int pack2(float a, float b, __nv_bfloat16) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<unsigned int*>(&h);
}

__device__ __forceinline__ float ex2(float x) {  // 2^x; ex2(-inf) = +0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Is key j visible to query row i? (shape.rs `Mask::visible`, bottom-right aligned)
__device__ __forceinline__ bool visible(const Params& p, int i, int j) {
    const int pos = i + p.nk - p.nq;
    if (j >= p.nk) return false;
    if (p.causal && j > pos) return false;
    if (p.window && j <= pos - p.window) return false;
    return true;
}

// The keys [lo, hi) that any of the query rows i0..i1 (inclusive) may see: tiles outside are skipped.
__device__ __forceinline__ void key_range(const Params& p, int i0, int i1, int& lo, int& hi) {
    const int off = p.nk - p.nq;
    hi = p.causal ? min(p.nk, max(0, i1 + off + 1)) : p.nk;
    lo = p.window ? max(0, i0 + off - p.window + 1) : 0;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int s = 16; s > 0; s >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, s));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
    for (int s = 16; s > 0; s >>= 1) x += __shfl_xor_sync(0xffffffffu, x, s);
    return x;
}

#if FA_VERSION == 1
// ---------------------------------------------------------------------------------------------------
// v1: naive. Three launches, S (B, Hq, Nq, Nk) f32 in global memory.

// ANCHOR: v1_scores
// S_ij = q_i . k_j / sqrt(D), or -inf where masked. grid (ceil(Nk/128), Nq, B*Hq), block 128.
template <typename T>
__device__ void v1_scores(const T* q, const T* k, float* S, Params p) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y, bh = blockIdx.z;
    if (j >= p.nk) return;
    const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const T* qi = q + ((size_t)bh * p.nq + i) * p.d;
    const T* kj = k + (((size_t)b * p.hkv + hk) * p.nk + j) * p.d;
    float s = NEG_INF;
    if (visible(p, i, j)) {
        float acc = 0.f;
        for (int c = 0; c < p.d; ++c) acc += to_f(qi[c]) * to_f(kj[c]);
        s = acc * p.scale;
    }
    S[((size_t)bh * p.nq + i) * p.nk + j] = s;
}
// ANCHOR_END: v1_scores

// ANCHOR: v1_softmax
// P_i = softmax(S_i) in place, lse_i = m + ln(l). One warp per row; block 128 (4 rows).
__device__ void v1_softmax(float* S, float* lse, Params p) {
    const size_t row = (size_t)blockIdx.x * 4 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= (size_t)p.b * p.hq * p.nq) return;
    float* s = S + row * p.nk;
    float m = NEG_INF;
    for (int j = lane; j < p.nk; j += 32) m = fmaxf(m, s[j]);
    m = warp_max(m);
    float l = 0.f;
    if (m != NEG_INF)
        for (int j = lane; j < p.nk; j += 32) l += expf(s[j] - m);
    l = warp_sum(l);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int j = lane; j < p.nk; j += 32) s[j] = m == NEG_INF ? 0.f : expf(s[j] - m) * inv;
    if (lane == 0) lse[row] = l > 0.f ? m + logf(l) : NEG_INF;
}
// ANCHOR_END: v1_softmax

// O_i = sum_j P_ij v_j. grid (Nq, B*Hq), block D (one thread per output column: V reads coalesce).
template <typename T>
__device__ void v1_pv(const float* P, const T* v, T* o, Params p) {
    const int c = threadIdx.x, i = blockIdx.x, bh = blockIdx.y;
    const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const float* pi = P + ((size_t)bh * p.nq + i) * p.nk;
    const T* vb = v + ((size_t)b * p.hkv + hk) * p.nk * p.d;
    float acc = 0.f;
    for (int j = 0; j < p.nk; ++j) acc += pi[j] * to_f(vb[(size_t)j * p.d + c]);
    store_f(o + ((size_t)bh * p.nq + i) * p.d + c, acc);
}

extern "C" __global__ void __launch_bounds__(128) flash_v1_scores(const elem_t* q, const elem_t* k, float* S, Params p) {
    v1_scores<elem_t>(q, k, S, p);
}
extern "C" __global__ void __launch_bounds__(128) flash_v1_softmax(float* S, float* lse, Params p) {
    v1_softmax(S, lse, p);
}
extern "C" __global__ void __launch_bounds__(1024) flash_v1_pv(const float* P, const elem_t* v, elem_t* o, Params p) {
    v1_pv<elem_t>(P, v, o, p);
}
#endif  // FA_VERSION == 1

#if FA_VERSION == 2
// ---------------------------------------------------------------------------------------------------
// v2: one thread per query row, online softmax over every visible key. grid (ceil(Nq/128), B*Hq).
template <typename T, int D>
__device__ void v2_online(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                          T* __restrict__ o, float* __restrict__ lse, Params p) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y;
    if (i >= p.nq) return;
    const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const unsigned int* qi = reinterpret_cast<const unsigned int*>(q + ((size_t)bh * p.nq + i) * D);
    const T* kb = k + ((size_t)b * p.hkv + hk) * p.nk * D;
    const T* vb = v + ((size_t)b * p.hkv + hk) * p.nk * D;
    unsigned int qr[D / 2];  // q_i as pairs, unscaled (the inputs exactly)
#pragma unroll
    for (int c = 0; c < D / 2; ++c) qr[c] = qi[c];
    float acc[D];
#pragma unroll
    for (int c = 0; c < D; ++c) acc[c] = 0.f;
    // ANCHOR: v2_row_loop
    float m = NEG_INF, l = 0.f;  // running max (log2 units) and sum
    int lo, hi;
    key_range(p, i, i, lo, hi);  // for one row, exactly its visible keys
    for (int j = lo; j < hi; ++j) {
        const unsigned int* kj = reinterpret_cast<const unsigned int*>(kb + (size_t)j * D);
        float s = 0.f;
#pragma unroll
        for (int c = 0; c < D / 2; ++c) {
            const float2 a = to_f2(qr[c], T()), bb = to_f2(kj[c], T());
            s += a.x * bb.x + a.y * bb.y;
        }
        s *= p.scale_log2;
        const float m_new = fmaxf(m, s);   // m_new = max(m, s)
        const float alpha = ex2(m - m_new);  // rescales the old state; 0 on the first key
        const float pj = ex2(s - m_new);
        l = l * alpha + pj;  // l = alpha l + p
        const unsigned int* vj = reinterpret_cast<const unsigned int*>(vb + (size_t)j * D);
#pragma unroll
        for (int c = 0; c < D / 2; ++c) {
            const float2 x = to_f2(vj[c], T());
            acc[2 * c] = acc[2 * c] * alpha + pj * x.x;  // o = alpha o + p v_j
            acc[2 * c + 1] = acc[2 * c + 1] * alpha + pj * x.y;
        }
        m = m_new;
    }
    // ANCHOR_END: v2_row_loop
    const float inv = l > 0.f ? 1.f / l : 0.f;
    T* oi = o + ((size_t)bh * p.nq + i) * D;
#pragma unroll
    for (int c = 0; c < D; ++c) store_f(oi + c, acc[c] * inv);
    lse[(size_t)bh * p.nq + i] = l > 0.f ? (m + log2f(l)) * LN2 : NEG_INF;
}

#define V2(DD)                                                                                          \
    extern "C" __global__ void __launch_bounds__(128) flash_v2_##DD(const elem_t* q, const elem_t* k,  \
                                                                     const elem_t* v, elem_t* o,       \
                                                                     float* lse, Params p) {           \
        v2_online<elem_t, DD>(q, k, v, o, lse, p);                                                     \
    }
V2(32)
V2(64)
V2(128)
#endif  // FA_VERSION == 2

#if FA_VERSION == 3
// ---------------------------------------------------------------------------------------------------
// v3: Br = 64 query rows per block (one thread each) share Bc = 64-key tiles of K and V in shared
// memory. grid (ceil(Nq/64), B*Hq), block 64.
template <typename T, int D>
__device__ void v3_tiled(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ o, float* __restrict__ lse, Params p) {
    constexpr int BR = 64, BC = 64, CH = D / 8;  // CH: 16-byte chunks per row
    __shared__ __align__(16) T Ks[BC * D];
    __shared__ __align__(16) T Vs[BC * D];
    const int tid = threadIdx.x, bh = blockIdx.y;
    const int i0 = blockIdx.x * BR, i = i0 + tid;
    const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const T* kb = k + ((size_t)b * p.hkv + hk) * p.nk * D;
    const T* vb = v + ((size_t)b * p.hkv + hk) * p.nk * D;
    unsigned int qr[D / 2];
    const unsigned int* qi = reinterpret_cast<const unsigned int*>(q + ((size_t)bh * p.nq + min(i, p.nq - 1)) * D);
#pragma unroll
    for (int c = 0; c < D / 2; ++c) qr[c] = qi[c];
    float acc[D];
#pragma unroll
    for (int c = 0; c < D; ++c) acc[c] = 0.f;
    // ANCHOR: v3_tile_loop
    float m = NEG_INF, l = 0.f;
    int lo, hi;
    key_range(p, i0, min(i0 + BR, p.nq) - 1, lo, hi);
    for (int j0 = (lo / BC) * BC; j0 < hi; j0 += BC) {  // fully masked tiles are never loaded
        __syncthreads();                                // the previous tile is consumed
        for (int e = tid; e < BC * CH; e += BR) {
            const int r = e / CH, c = (e % CH) * 8, j = j0 + r;
            const uint4 zero = make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4*>(&Ks[r * D + c]) = j < p.nk ? *reinterpret_cast<const uint4*>(kb + (size_t)j * D + c) : zero;
            *reinterpret_cast<uint4*>(&Vs[r * D + c]) = j < p.nk ? *reinterpret_cast<const uint4*>(vb + (size_t)j * D + c) : zero;
        }
        __syncthreads();
        for (int jc = 0; jc < BC; jc += 16) {  // 16 keys at a time: one rescale per 16 keys
            float s[16];
            float mc = m;
#pragma unroll
            for (int t = 0; t < 16; ++t) {
                const unsigned int* kr = reinterpret_cast<const unsigned int*>(&Ks[(jc + t) * D]);
                float x = 0.f;
#pragma unroll
                for (int c = 0; c < D / 2; ++c) {
                    const float2 a = to_f2(qr[c], T()), bb = to_f2(kr[c], T());
                    x += a.x * bb.x + a.y * bb.y;
                }
                s[t] = (i < p.nq && visible(p, i, j0 + jc + t)) ? x * p.scale_log2 : NEG_INF;
                mc = fmaxf(mc, s[t]);
            }
            const float mu = mc == NEG_INF ? 0.f : mc;  // a row that saw nothing yet keeps p = 0
            const float alpha = ex2(m - mu);
            l *= alpha;
#pragma unroll
            for (int c = 0; c < D; ++c) acc[c] *= alpha;
#pragma unroll
            for (int t = 0; t < 16; ++t) {
                const float pt = ex2(s[t] - mu);
                l += pt;
                const unsigned int* vr = reinterpret_cast<const unsigned int*>(&Vs[(jc + t) * D]);
#pragma unroll
                for (int c = 0; c < D / 2; ++c) {
                    const float2 x = to_f2(vr[c], T());
                    acc[2 * c] += pt * x.x;
                    acc[2 * c + 1] += pt * x.y;
                }
            }
            m = mc;
        }
    }
    // ANCHOR_END: v3_tile_loop
    if (i >= p.nq) return;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    T* oi = o + ((size_t)bh * p.nq + i) * D;
#pragma unroll
    for (int c = 0; c < D; ++c) store_f(oi + c, acc[c] * inv);
    lse[(size_t)bh * p.nq + i] = l > 0.f ? (m + log2f(l)) * LN2 : NEG_INF;
}

#define V3(DD)                                                                                         \
    extern "C" __global__ void __launch_bounds__(64) flash_v3_##DD(const elem_t* q, const elem_t* k,  \
                                                                    const elem_t* v, elem_t* o,       \
                                                                    float* lse, Params p) {           \
        v3_tiled<elem_t, DD>(q, k, v, o, lse, p);                                                     \
    }
V3(32)
V3(64)
V3(128)
#endif  // FA_VERSION == 3

#if FA_VERSION >= 4 || FA_VERSION == 1
// ---------------------------------------------------------------------------------------------------
// ANCHOR: mma_fragments
// v4 - v6: tensor cores. Fragment layouts of mma.m16n8k16 (PTX ISA), lane = 4 g + t:
//   A (16x16, row): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 8+2t..), a3 (g+8, 8+2t..)
//   B (16x8, col):  b0 (k 2t..2t+1, n g), b1 (k 8+2t.., n g)
//   C (16x8 f32):   c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1)
// The C fragments of two neighbouring 8-key tiles of S are exactly the A fragment of P for P V.

__device__ __forceinline__ void mma16816(float* c, const unsigned int* a, unsigned int b0, unsigned int b1, __half) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// ANCHOR_END: mma_fragments
__device__ __forceinline__ void mma16816(float* c, const unsigned int* a, unsigned int b0, unsigned int b1, __nv_bfloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned int smem_addr(const void* p) {
    return static_cast<unsigned int>(__cvta_generic_to_shared(p));
}
// ANCHOR: ldmatrix
// Four 8x8 b16 matrices; lanes 8m..8m+7 give the row addresses of matrix m, register m receives it.
__device__ __forceinline__ void ldsm_x4(unsigned int* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned int* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
// ANCHOR_END: ldmatrix
// ANCHOR: cp_async
// 16 bytes global -> shared without a register round trip; src_bytes = 0 writes zeros.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool pred) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// ANCHOR_END: cp_async

#if FA_VERSION == 1
// ---------------------------------------------------------------------------------------------------
// v1b: naive on the tensor cores. v1's three passes and its f32 S (B, Hq, Nq, Nk) in global memory,
// with v4's fragments: the scores and P V are mma.sync products, every global access is 16 or 32
// contiguous bytes a row. Naive's bytes at the instruction quality of the Flash kernels, so that its
// roofline dot measures the bytes and not the loops. Here S holds the scores in base 2 (times
// scale log2 e), so the softmax uses ex2, and its rows are padded to ldS = Nk rounded up to 4 floats
// (-inf in the scores, 0 in P) so that every access is 8 or 16 bytes at any Nk.

// ANCHOR: v1b_scores
// S = Q K^T scale log2e, -inf where masked: a block of 4 warps computes 64 rows x 64 keys, warp w rows
// 16w..16w+15 (v4's qk_mma), and stores its f32 accumulators straight from the fragments: lanes 4g..4g+3
// write 32 contiguous bytes of row g (one sector). grid (ceil(Nk/64), ceil(Nq/64), B*Hq), block 128.
template <typename T, int D>
__device__ void v1b_scores(const T* __restrict__ q, const T* __restrict__ k, float* __restrict__ S, Params p) {
    constexpr int BR = 64, BC = 64, LD = D + 8, CH = D / 8;
    __shared__ __align__(16) T Qs[BR * LD];
    __shared__ __align__(16) T Ks[BC * LD];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, tg = lane & 3;
    const int j0 = blockIdx.x * BC, i0 = blockIdx.y * BR, bh = blockIdx.z, lds = (p.nk + 3) & ~3;
    const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const T* qb = q + (size_t)bh * p.nq * D;
    const T* kb = k + ((size_t)b * p.hkv + hk) * p.nk * D;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int e = tid; e < BR * CH; e += 128) {  // rows past Nq / Nk are zeros
        const int r = e / CH, c = (e % CH) * 8;
        *reinterpret_cast<uint4*>(&Qs[r * LD + c]) =
            i0 + r < p.nq ? *reinterpret_cast<const uint4*>(qb + (size_t)(i0 + r) * D + c) : zero;
        *reinterpret_cast<uint4*>(&Ks[r * LD + c]) =
            j0 + r < p.nk ? *reinterpret_cast<const uint4*>(kb + (size_t)(j0 + r) * D + c) : zero;
    }
    __syncthreads();
    float s[BC / 8][4];
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        unsigned int qf[4];
        ldsm_x4(qf, &Qs[(warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8]);
#pragma unroll
        for (int nn = 0; nn < BC / 16; ++nn) {
            unsigned int kf[4];
            const int mi = lane >> 3;
            ldsm_x4(kf, &Ks[(nn * 16 + (mi >> 1) * 8 + (lane & 7)) * LD + kk * 16 + (mi & 1) * 8]);
            mma16816(s[2 * nn], qf, kf[0], kf[1], T());
            mma16816(s[2 * nn + 1], qf, kf[2], kf[3], T());
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = i0 + warp * 16 + g + 8 * r;
        if (i >= p.nq) continue;
        float* srow = S + ((size_t)bh * p.nq + i) * lds;
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt) {
            const int j = j0 + nt * 8 + tg * 2;  // even, and lds is a multiple of 4: j + 1 < lds too
            if (j >= lds) continue;
            float2 x;
            x.x = visible(p, i, j) ? s[nt][2 * r] * p.scale_log2 : NEG_INF;
            x.y = visible(p, i, j + 1) ? s[nt][2 * r + 1] * p.scale_log2 : NEG_INF;
            *reinterpret_cast<float2*>(srow + j) = x;
        }
    }
}
// ANCHOR_END: v1b_scores

// ANCHOR: v1b_softmax
// P_i = softmax(S_i) in place, lse_i; one warp a row, four rows a block, 16-byte loads. Two walks
// over the row, not v1's three: the first keeps each lane's running max and sum (the online softmax of
// Lab 00, four scores at a time), the lanes then merge theirs, and the second writes P.
__device__ void v1b_softmax(float* S, float* lse, Params p) {
    const size_t row = (size_t)blockIdx.x * 4 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= (size_t)p.b * p.hq * p.nq) return;
    const int n4 = (p.nk + 3) / 4;  // the padded row: lds / 4 float4s
    float4* s = reinterpret_cast<float4*>(S + row * 4 * n4);
    float m = NEG_INF, l = 0.f;
    for (int j = lane; j < n4; j += 32) {
        const float4 x = s[j];
        const float mn = fmaxf(m, fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w)));
        if (mn == NEG_INF) continue;  // nothing visible yet
        l = l * ex2(m - mn) + ex2(x.x - mn) + ex2(x.y - mn) + ex2(x.z - mn) + ex2(x.w - mn);
        m = mn;
    }
    const float mw = warp_max(m);
    const float mu = mw == NEG_INF ? 0.f : mw;  // a row that sees no key: every 2^(-inf) is 0
    l = warp_sum(m == NEG_INF ? 0.f : l * ex2(m - mu));
    m = mw;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int j = lane; j < n4; j += 32) {
        const float4 x = s[j];
        s[j] = make_float4(ex2(x.x - mu) * inv, ex2(x.y - mu) * inv, ex2(x.z - mu) * inv, ex2(x.w - mu) * inv);
    }
    if (lane == 0) lse[row] = l > 0.f ? (m + log2f(l)) * LN2 : NEG_INF;
}
// ANCHOR_END: v1b_softmax

// ANCHOR: v1b_pv
// O = P V: a block of 4 warps owns 64 query rows and walks the keys in tiles of 64; V's tile goes
// through shared memory to ldmatrix.trans (v4's pv_mma), P's f32 values are read from global memory
// straight into A-fragment order (each quad reads 32 contiguous bytes of a row) and split into two
// 16-bit fragments, hi = round(P) and lo = round(P - hi), both multiplied: P to about 22 bits, so the
// rounding v5 had to patch on heavy tiles never arises. grid (ceil(Nq/64), B*Hq), block 128.
template <typename T, int D>
__device__ void v1b_pv(const float* __restrict__ P, const T* __restrict__ v, T* __restrict__ o, Params p) {
    constexpr int BR = 64, BC = 64, LD = D + 8, CH = D / 8;
    __shared__ __align__(16) T Vs[BC * LD];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, tg = lane & 3;
    const int i0 = blockIdx.x * BR, bh = blockIdx.y, lds = (p.nk + 3) & ~3;
    const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const T* vb = v + ((size_t)b * p.hkv + hk) * p.nk * D;
    const int ra = min(i0 + warp * 16 + g, p.nq - 1), rb = min(i0 + warp * 16 + g + 8, p.nq - 1);
    const float* pa = P + ((size_t)bh * p.nq + ra) * lds;  // rows past Nq read the last row, not stored
    const float* pb = P + ((size_t)bh * p.nq + rb) * lds;
    float oacc[D / 8][4];
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) oacc[dn][0] = oacc[dn][1] = oacc[dn][2] = oacc[dn][3] = 0.f;
    for (int j0 = 0; j0 < p.nk; j0 += BC) {
        __syncthreads();  // every warp is done with the previous V tile
        for (int e = tid; e < BC * CH; e += 128) {
            const int r = e / CH, c = (e % CH) * 8;
            *reinterpret_cast<uint4*>(&Vs[r * LD + c]) = j0 + r < p.nk
                ? *reinterpret_cast<const uint4*>(vb + (size_t)(j0 + r) * D + c) : make_uint4(0, 0, 0, 0);
        }
        __syncthreads();
#pragma unroll
        for (int kt = 0; kt < BC / 16; ++kt) {
            // A fragment (PTX m16n8k16): a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 8+2t..), a3 (g+8, 8+2t..)
            const int j = j0 + kt * 16 + 2 * tg;
            const float2 zero2 = make_float2(0.f, 0.f);
            const float2 x[4] = {j < lds ? *reinterpret_cast<const float2*>(pa + j) : zero2,
                                 j < lds ? *reinterpret_cast<const float2*>(pb + j) : zero2,
                                 j + 8 < lds ? *reinterpret_cast<const float2*>(pa + j + 8) : zero2,
                                 j + 8 < lds ? *reinterpret_cast<const float2*>(pb + j + 8) : zero2};
            unsigned int hi[4], lo[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                hi[e] = pack2(x[e].x, x[e].y, T());
                const float2 f = to_f2(hi[e], T());
                lo[e] = pack2(x[e].x - f.x, x[e].y - f.y, T());
            }
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                unsigned int vf[4];
                const int mi = lane >> 3;
                ldsm_x4_trans(vf, &Vs[(kt * 16 + (mi & 1) * 8 + (lane & 7)) * LD + dp * 16 + (mi >> 1) * 8]);
                mma16816(oacc[2 * dp], hi, vf[0], vf[1], T());
                mma16816(oacc[2 * dp + 1], hi, vf[2], vf[3], T());
                mma16816(oacc[2 * dp], lo, vf[0], vf[1], T());
                mma16816(oacc[2 * dp + 1], lo, vf[2], vf[3], T());
            }
        }
    }
    T* ob = o + (size_t)bh * p.nq * D;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = i0 + warp * 16 + g + 8 * r;
        if (row >= p.nq) continue;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
            *reinterpret_cast<unsigned int*>(ob + (size_t)row * D + dn * 8 + tg * 2) =
                pack2(oacc[dn][2 * r], oacc[dn][2 * r + 1], T());
    }
}
// ANCHOR_END: v1b_pv

#define V1B(DD)                                                                                         \
    extern "C" __global__ void __launch_bounds__(128) flash_v1b_scores_##DD(const elem_t* q,            \
                                                                         const elem_t* k, float* S,     \
                                                                         Params p) {                    \
        v1b_scores<elem_t, DD>(q, k, S, p);                                                             \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) flash_v1b_pv_##DD(const float* P, const elem_t* v, \
                                                                     elem_t* o, Params p) {             \
        v1b_pv<elem_t, DD>(P, v, o, p);                                                                 \
    }
V1B(32)
V1B(64)
V1B(128)
extern "C" __global__ void __launch_bounds__(128) flash_v1b_softmax(float* S, float* lse, Params p) {
    v1b_softmax(S, lse, p);
}
#endif  // FA_VERSION == 1

#if FA_VERSION == 4 || FA_VERSION == 5
// ANCHOR: tc_block
// One block: BR = 16 NW query rows of one (batch, head); warp w owns rows 16w..16w+15. Keys in tiles of
// BC = 64. Shared memory: Q [BR][LD], K and V [STAGES][BC][LD], LD = D + 8 (16 bytes of padding per
// row: the eight row addresses of one ldmatrix fall in eight different 4-bank groups).
template <typename T, int D, int NW, bool ASYNC>
__device__ void flash_tc(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ o, float* __restrict__ lse, Params p) {
    constexpr int BR = 16 * NW, BC = 64, LD = D + 8, CH = D / 8, NT = NW * 32;
    constexpr int STAGES = ASYNC ? 2 : 1;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* Qs = reinterpret_cast<T*>(smem_raw);
    T* Ks = Qs + BR * LD;
    T* Vs = Ks + STAGES * BC * LD;
    // ANCHOR_END: tc_block

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, tg = lane & 3;
    const int tile = gridDim.x - 1 - blockIdx.x;  // the longest (causal: last) query tiles start first
    const int bh = blockIdx.y, b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const int i0 = tile * BR, off = p.nk - p.nq;
    const T* qb = q + (size_t)bh * p.nq * D;
    const T* kb = k + ((size_t)b * p.hkv + hk) * p.nk * D;
    const T* vb = v + ((size_t)b * p.hkv + hk) * p.nk * D;
    int lo, hi;
    key_range(p, i0, min(i0 + BR, p.nq) - 1, lo, hi);
    const int t_begin = lo / BC;
    const int ntiles = hi > lo ? (hi + BC - 1) / BC - t_begin : 0;  // fully masked tiles: skipped

    // Q tile -> shared (rows past Nq are zeros).
    for (int e = tid; e < BR * CH; e += NT) {
        const int r = e / CH, c = (e % CH) * 8, i = i0 + r;
        if (ASYNC) {
            cp_async16(&Qs[r * LD + c], qb + (size_t)min(i, p.nq - 1) * D + c, i < p.nq);
        } else {
            *reinterpret_cast<uint4*>(&Qs[r * LD + c]) =
                i < p.nq ? *reinterpret_cast<const uint4*>(qb + (size_t)i * D + c) : make_uint4(0, 0, 0, 0);
        }
    }
    // ANCHOR: load_kv
    // K and V tile starting at key j0 -> stage `st` (rows past Nk are zeros, so 0 * V stays finite).
    auto load_kv = [&](int st, int j0) {
        T* Kd = Ks + st * BC * LD;
        T* Vd = Vs + st * BC * LD;
        for (int e = tid; e < BC * CH; e += NT) {
            const int r = e / CH, c = (e % CH) * 8, j = j0 + r;
            const bool ok = j < p.nk;
            const size_t src = (size_t)(ok ? j : 0) * D + c;
            if (ASYNC) {
                cp_async16(&Kd[r * LD + c], kb + src, ok);
                cp_async16(&Vd[r * LD + c], vb + src, ok);
            } else {
                const uint4 zero = make_uint4(0, 0, 0, 0);
                *reinterpret_cast<uint4*>(&Kd[r * LD + c]) = ok ? *reinterpret_cast<const uint4*>(kb + src) : zero;
                *reinterpret_cast<uint4*>(&Vd[r * LD + c]) = ok ? *reinterpret_cast<const uint4*>(vb + src) : zero;
            }
        }
    };
    // ANCHOR_END: load_kv
    // ANCHOR: v5_prologue
    if (ASYNC) {
        cp_async_commit();                              // group: Q
        if (ntiles > 0) load_kv(0, t_begin * BC);
        cp_async_commit();                              // group: K/V tile 0
        cp_async_wait<1>();                             // Q has landed
    }
    __syncthreads();
    // ANCHOR_END: v5_prologue

    // ANCHOR: q_fragments
    // This warp's 16 rows of Q as A fragments, kept in registers for the whole loop.
    unsigned int qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
        ldsm_x4(qf[kk], &Qs[(warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8]);

    float oacc[D / 8][4];  // O for rows g and g+8, 8 columns per fragment
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) oacc[dn][0] = oacc[dn][1] = oacc[dn][2] = oacc[dn][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};  // raw-score max and row sum (whole row)
    const int row_a = i0 + warp * 16 + g;               // this thread's rows: row_a and row_a + 8
    // ANCHOR_END: q_fragments

    // ANCHOR: tile_loop_top
    for (int t = 0; t < ntiles; ++t) {
        const int j0 = (t_begin + t) * BC;
        const int st = ASYNC ? (t & 1) : 0;
        if (ASYNC) {
            if (t + 1 < ntiles) load_kv((t + 1) & 1, j0 + BC);  // the next tile flies during this one
            cp_async_commit();
            cp_async_wait<1>();  // everything but the newest group has landed: tile t
            __syncthreads();
        } else {
            if (t > 0) __syncthreads();  // every warp is done with the previous tile
            load_kv(0, j0);
            __syncthreads();
        }
        const T* Kt = Ks + st * BC * LD;
        const T* Vt = Vs + st * BC * LD;
        // ANCHOR_END: tile_loop_top

        // ANCHOR: qk_mma
        // S = Q K^T for 16 rows x 64 keys: 8 n-tiles of 16x8.
        float s[BC / 8][4];
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
            for (int nn = 0; nn < BC / 16; ++nn) {
                // matrices: keys +0..7 | d +0..7, keys +0..7 | d +8, keys +8..15 | d +0, keys +8..15 | d +8
                unsigned int kf[4];
                const int mi = lane >> 3;
                ldsm_x4(kf, &Kt[(nn * 16 + (mi >> 1) * 8 + (lane & 7)) * LD + kk * 16 + (mi & 1) * 8]);
                mma16816(s[2 * nn], qf[kk], kf[0], kf[1], T());
                mma16816(s[2 * nn + 1], qf[kk], kf[2], kf[3], T());
            }
        }
        // ANCHOR_END: qk_mma
        // ANCHOR: softmax_fragments
        // Mask only the tiles that straddle a boundary (Nk, the causal diagonal, the window's edge).
        const bool need_mask = j0 + BC > p.nk || (p.causal && j0 + BC - 1 > i0 + off) ||
                               (p.window && j0 <= i0 + BR - 1 + off - p.window);
        if (need_mask) {
#pragma unroll
            for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (!visible(p, row_a + (e >> 1) * 8, j0 + nt * 8 + tg * 2 + (e & 1))) s[nt][e] = NEG_INF;
        }
        // Online softmax for rows g (r = 0) and g + 8 (r = 1); a row is spread over the 4 lanes of a quad.
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt) {
            mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
        }
        float msc[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            msc[r] = mx[r] == NEG_INF ? 0.f : mx[r] * p.scale_log2;  // m_new, in log2 units
            const float alpha = ex2(m[r] * p.scale_log2 - msc[r]);    // 2^(m - m_new); 0 at the start
            l[r] *= alpha;
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn) {
                oacc[dn][2 * r] *= alpha;
                oacc[dn][2 * r + 1] *= alpha;
            }
            m[r] = mx[r];
        }
        // ANCHOR_END: softmax_fragments
        // ANCHOR: p_fragments
        // P = 2^(S scale log2e - m_new), rounded to T straight into A fragments (pf), and what the
        // rounding lost, rounded again (pl): P = pf + pl to about 22 bits.
        unsigned int pf[BC / 16][4], pl[BC / 16][4];
        float lt[2] = {0.f, 0.f};  // this tile's row sums
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt) {
            const float p0 = ex2(fmaf(s[nt][0], p.scale_log2, -msc[0]));
            const float p1 = ex2(fmaf(s[nt][1], p.scale_log2, -msc[0]));
            const float p2 = ex2(fmaf(s[nt][2], p.scale_log2, -msc[1]));
            const float p3 = ex2(fmaf(s[nt][3], p.scale_log2, -msc[1]));
            lt[0] += p0 + p1;
            lt[1] += p2 + p3;
            const unsigned int h01 = pack2(p0, p1, T()), h23 = pack2(p2, p3, T());
            const float2 f01 = to_f2(h01, T()), f23 = to_f2(h23, T());
            pf[nt / 2][(nt & 1) * 2 + 0] = h01;
            pf[nt / 2][(nt & 1) * 2 + 1] = h23;
            pl[nt / 2][(nt & 1) * 2 + 0] = pack2(p0 - f01.x, p1 - f01.y, T());
            pl[nt / 2][(nt & 1) * 2 + 1] = pack2(p2 - f23.x, p3 - f23.y, T());
        }
        // ANCHOR_END: p_fragments
        // ANCHOR: heavy_tile
        // l = alpha l + rowsum(P) over the quad. Rounding P to 16 bits costs up to 2^-12 |v| in O for a
        // row whose weight sits in this tile (a short row: its first tile, or a new dominant key), which
        // with O's own rounding can pass the fp16 bar of 1e-3: such tiles also add pl V (warp-uniform).
        bool heavy = false;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            lt[r] += __shfl_xor_sync(0xffffffffu, lt[r], 1);
            lt[r] += __shfl_xor_sync(0xffffffffu, lt[r], 2);
            l[r] += lt[r];
            heavy |= lt[r] > 0.25f * l[r];
        }
        heavy = __any_sync(0xffffffffu, heavy);
        // ANCHOR_END: heavy_tile
        // ANCHOR: pv_mma
        // O += P V: V tile is [key][d] in shared, read transposed by ldmatrix.trans.
#pragma unroll
        for (int kt = 0; kt < BC / 16; ++kt) {
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                // matrices: keys +0..7 | d +0..7, keys +8..15 | d +0, keys +0..7 | d +8, keys +8..15 | d +8
                unsigned int vf[4];
                const int mi = lane >> 3;
                ldsm_x4_trans(vf, &Vt[(kt * 16 + (mi & 1) * 8 + (lane & 7)) * LD + dp * 16 + (mi >> 1) * 8]);
                mma16816(oacc[2 * dp], pf[kt], vf[0], vf[1], T());
                mma16816(oacc[2 * dp + 1], pf[kt], vf[2], vf[3], T());
                if (heavy) {
                    mma16816(oacc[2 * dp], pl[kt], vf[0], vf[1], T());
                    mma16816(oacc[2 * dp + 1], pl[kt], vf[2], vf[3], T());
                }
            }
        }
        if (ASYNC) __syncthreads();  // every warp is done with stage st before it is refilled
        // ANCHOR_END: pv_mma
    }

    // O /= l, lse = m scale + ln l; rows past Nq are not stored.
    T* ob = o + (size_t)bh * p.nq * D;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = row_a + r * 8;
        if (row >= p.nq) continue;
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
            *reinterpret_cast<unsigned int*>(ob + (size_t)row * D + dn * 8 + tg * 2) =
                pack2(oacc[dn][2 * r] * inv, oacc[dn][2 * r + 1] * inv, T());
        if (tg == 0) lse[(size_t)bh * p.nq + row] = row_lse(p, m[r], l[r]);
    }
}

#define TC(V, ASYNC, DD, NW)                                                                            \
    extern "C" __global__ void __launch_bounds__(NW * 32)                                              \
        flash_v##V##_##DD##_w##NW(const elem_t* q, const elem_t* k, const elem_t* v, elem_t* o,        \
                                  float* lse, Params p) {                                              \
        flash_tc<elem_t, DD, NW, ASYNC>(q, k, v, o, lse, p);                                           \
    }
#if FA_VERSION == 4
TC(4, false, 32, 4)
TC(4, false, 64, 4)
TC(4, false, 128, 4)
#else
TC(5, true, 32, 4)
TC(5, true, 64, 4)
TC(5, true, 128, 4)
TC(5, true, 64, 8)
TC(5, true, 128, 8)
#endif
#endif  // FA_VERSION == 4 || FA_VERSION == 5

#if FA_VERSION >= 6
// FA_LAZY (changelog entry x): v8's loop moves a row's running maximum only when it grows a lot.
#ifndef FA_LAZY
#define FA_LAZY 1
#endif
// ---------------------------------------------------------------------------------------------------
// ANCHOR: wgmma_intro
// v6 (Hopper, sm_90a): warpgroup matrix multiply. A warpgroup is 4 consecutive warps (128 threads);
// one `wgmma.mma_async` computes a 64 x N x 16 product for all of them, B (and here A of S = Q K^T)
// read by the tensor cores straight from shared memory through a 64-bit matrix descriptor, the f32
// accumulator spread over the warpgroup's registers: warp w of the group holds rows 16w..16w+15 in
// exactly mma.m16n8's C layout, one 8-column fragment after another. So S's accumulator is still
// P V's A fragment (now passed in registers to the second wgmma), and v5's softmax code carries over.
//
// Shared-memory operands: a descriptor gives the start address, a layout type and two strides, LBO
// and SBO, between the 8-row x 16-byte "core matrices" the tensor cores read (wg_layout below). For
// D = 64 and 128 the tiles use the 128-byte swizzle, the layout Hopper's copy engine also writes:
// each row of a 64-column block is 128 contiguous bytes with its 16-byte chunks permuted by the row
// index, so that a warp copies whole rows (full 128-byte lines, four sectors per L2 request) into
// shared memory without bank conflicts. How it got there (D = 128, N = 2048, one ncu profile each; the
// times are in the changelog, v6 a. to c.):
//   * packed core matrices (no swizzle), copies of 8 rows x 64 bytes per warp to keep the stores
//     conflict-free: every L2 request carried one 32-byte sector for a 16-byte copy, and L2's request
//     throughput, not the tensor pipe, was the busy unit;
//   * the same with whole-row copies (core matrices 144 bytes apart, or packed with conflicts):
//     still one sector per request: the copy's shared-memory side must be contiguous too;
//   * 128-byte swizzle: four sectors per request, and L2 no longer the limit.
// For V, read transposed, LBO is the stride between 64-column blocks of d and SBO the stride between
// 8-key groups (the opposite reading fails the reference check).
// ANCHOR_END: wgmma_intro
#if FA_BF16
#define WG_TYPES ".f32.bf16.bf16"
#else
#define WG_TYPES ".f32.f16.f16"
#endif

__device__ __forceinline__ unsigned long long sdesc(const void* p, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((smem_addr(p) & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32);  // layout type 0 (no swizzle), base offset 0
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared memory written by ordinary (generic-proxy) stores, cp.async included, and read next by the
// tensor cores (the async proxy) needs this fence in every writing thread before the barrier.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// ANCHOR: wg_layout
// Where chunk c (16 bytes: columns 8c..8c+7) of row i of an R-row tile lives, in elements.
// D a multiple of 64: the 128-byte swizzle. Column blocks of 64 (128 bytes a row) one after the other,
// R rows each; in a block, row i is 128 bytes at 128 i, its chunk c at position c ^ (i % 8). Eight rows
// make a 1024-byte atom; the XOR spreads the same chunk of eight rows over all 32 banks.
// Otherwise (D = 32): no swizzle, core matrices of 8 rows x 16 bytes packed row group by row group.
template <int D>
__device__ __forceinline__ int tile_off(int i, int c, int R) {
    if constexpr (D % 64 == 0) return (c / 8) * (R * 64) + i * 64 + ((c % 8) ^ (i % 8)) * 8;
    else return ((i / 8) * (D / 8) + c) * 64 + (i % 8) * 8;
}
#define SW128 (1ull << 62)  // descriptor layout type 1: 128-byte swizzle
// Q or K (K-major, d contiguous), wgmma k-step kk (columns 16kk..16kk+15).
//   swizzled: start 32 bytes further per step inside a 64-column block (the hardware applies the XOR
//   to the address it forms), SBO = 1024 (next 8 rows), LBO unused;
//   packed:   LBO = 128 (next 8 columns), SBO = 16 D (next 8 rows).
// The address field is linear (bytes / 16 in the low bits), so a k-step's descriptor is the tile's
// plus a constant: one descriptor computed per tile, not one per wgmma.
template <int D, typename T>
__device__ __forceinline__ unsigned long long kmajor_desc(const T* base, int kk, int R) {
    if constexpr (D % 64 == 0) return (sdesc(base, 16, 1024) | SW128) + (((kk / 4) * R * 64 + (kk % 4) * 16) * 2 >> 4);
    else return sdesc(base, 128, 16 * D) + (kk * 128 * 2 >> 4);
}
// V (N = d contiguous: "MN-major", read with the transpose bit), k-step kt (keys 16kt..16kt+15).
//   swizzled: LBO = 128 R (next 64 columns of d), SBO = 1024 (next 8 keys);
//   packed:   LBO = 16 D (next 8 keys), SBO = 128 (next 8 columns).
template <int D, typename T>
__device__ __forceinline__ unsigned long long vt_desc(const T* base, int kt, int R) {
    if constexpr (D % 64 == 0) return (sdesc(base, 128 * R, 1024) | SW128) + (kt * 16 * 64 * 2 >> 4);
    else return sdesc(base, 16 * D, 128) + (kt * 16 * D * 2 >> 4);
}
// ANCHOR_END: wg_layout

// ANCHOR: wgmma_ops
// D (64 x N, f32) = or += A B for one k-step of 16. `ss`: A and B from shared memory (descriptors);
// `rs`: A from registers (the P fragment), B from shared memory read transposed (V is [key][d]).
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], unsigned long long da,
                                                 unsigned long long db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16" WG_TYPES " {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_ss_n128_first(float (&d)[64], unsigned long long da,
                                                       unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16" WG_TYPES " {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]),
          "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]),
          "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]),
          "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]),
          "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]),
          "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]),
          "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]),
          "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63])
        : "l"(da), "l"(db), "r"(0));
}
__device__ __forceinline__ void wgmma_rs_n32(float (&d)[16], const unsigned int (&a)[4],
                                                 unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16" WG_TYPES " {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
        "{%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[32], const unsigned int (&a)[4],
                                                 unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16" WG_TYPES " {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const unsigned int (&a)[4],
                                                 unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16" WG_TYPES " {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
// ANCHOR_END: wgmma_ops
__device__ __forceinline__ void wgmma_rs(float (&d)[16], const unsigned int (&a)[4], unsigned long long b) {
    wgmma_rs_n32(d, a, b);
}
__device__ __forceinline__ void wgmma_rs(float (&d)[32], const unsigned int (&a)[4], unsigned long long b) {
    wgmma_rs_n64(d, a, b);
}
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const unsigned int (&a)[4], unsigned long long b) {
    wgmma_rs_n128(d, a, b);
}

// ANCHOR: wg_issue
// S = Q K^T for one warpgroup's 64 rows and BC keys, D / 16 wgmma k-steps of 16 columns of d; and
// O += P V with P from registers, BC / 16 k-steps of 16 keys. Both only issue: the caller commits and
// waits.
template <int D, int BR, int BC, typename T>
__device__ __forceinline__ void issue_qk(float (&s)[BC / 2], const T* Qw, const T* Kt) {
    wgmma_ss_n128_first(s, kmajor_desc<D>(Qw, 0, BR), kmajor_desc<D>(Kt, 0, BC));
#pragma unroll
    for (int kk = 1; kk < D / 16; ++kk)
        wgmma_ss_n128(s, kmajor_desc<D>(Qw, kk, BR), kmajor_desc<D>(Kt, kk, BC), 1);
}
template <int D, int BC, typename T>
__device__ __forceinline__ void issue_pv(float (&o)[D / 2], const unsigned int (&p)[BC / 16][4], const T* Vt) {
#pragma unroll
    for (int kt = 0; kt < BC / 16; ++kt) wgmma_rs(o, p[kt], vt_desc<D>(Vt, kt, BC));
}
// ANCHOR_END: wg_issue

// ANCHOR: wg_softmax
// The online softmax of one warpgroup's 64 x BC tile of S, exactly v5's (a row is spread over the 4
// lanes of a quad); only tiles that straddle a boundary for this warpgroup's rows are masked. `wg_exp`
// leaves the exponentials p = 2^(s scale - m) in s (f32), updates m and l, and returns in alpha the
// factor O must be scaled by before this tile's P V is added; `wg_pack` rounds them into P V's A
// fragments, with LOW also the rounding residual P - fp16(P). `wg_softmax` is both.
// The masks a kernel is compiled for (v8's `_u` and `_c` kernels; every other kernel is MASK_ANY): the
// masked tiles' code for what the kernel never meets is not compiled at all (changelog entry an).
enum { MASK_NONE = 0, MASK_CAUSAL = 1, MASK_ANY = 2 };
// MASK_NONE: no mask and Nk a multiple of the key tile, so no tile is ever masked. MASK_CAUSAL: a
// causal mask and no window. MASK_ANY: whatever the parameters say.
template <int MASK>
__device__ __forceinline__ bool is_causal(const Params& p) {
    return MASK == MASK_ANY ? p.causal != 0 : MASK == MASK_CAUSAL;
}
template <int MASK>
__device__ __forceinline__ int window_of(const Params& p) {
    return MASK == MASK_ANY ? p.window : 0;
}
// The sum of x over the four lanes of a quad (which hold one row; every lane of the warp calls it).
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
// How a row's maximum and sum are reduced over the thread's 32 columns (bits of RED; changelog
// entry as). RED_TREE_MAX: the maximum as a tree of four partial maxima, so the chain of dependent
// FMNMX a thread waits on is 7 deep instead of 17 (BC = 128). RED_L_SHARE: l holds this thread's
// share of the row's sum, and the quad's four shares are added once, where O is divided by them
// (`row_sum`), instead of two shuffles and two adds a row at every tile. Each pays in some kernels
// and costs in others, as ptxas schedules the rest around it: v8 picks them by kernel (`flash_ws`),
// v6 and v7 use neither.
enum { RED_CHAIN = 0, RED_TREE_MAX = 1, RED_L_SHARE = 2 };
template <int BC, bool LAZY = false, int MASK = MASK_ANY, int RED = RED_CHAIN>
__device__ __forceinline__ void wg_exp(float (&s)[BC / 2], const Params& p, int j0, int iw, int row_a, int tg,
                                      float (&m)[2], float (&l)[2], float (&alpha)[2]) {
    const int off = p.nk - p.nq;
    const bool causal = is_causal<MASK>(p);
    const int window = window_of<MASK>(p);
    const bool need_mask = MASK != MASK_NONE && (j0 + BC > p.nk || (causal && j0 + BC - 1 > iw + off) ||
                                                 (window && j0 <= iw + 63 + off - window));
    if (need_mask) {
        // `visible` per element, with the row's part done once: row r of this thread sees the keys
        // jb + c for c in [lo[r], hi[r]), where jb is its first column; an element then costs a compare
        // with a constant (two with a window) and a select (changelog entry v).
        const int jb = j0 + tg * 2;
        int lo[2], hi[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int pos = row_a + 8 * r + off;
            hi[r] = (causal ? min(p.nk, pos + 1) : p.nk) - jb;
            lo[r] = pos - window + 1 - jb;
        }
        if (window) {
#pragma unroll
            for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int c = nt * 8 + (e & 1);
                    if (c >= hi[e >> 1] || c < lo[e >> 1]) s[4 * nt + e] = NEG_INF;
                }
        } else {
#pragma unroll
            for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (nt * 8 + (e & 1) >= hi[e >> 1]) s[4 * nt + e] = NEG_INF;
        }
    }
    float mx[2] = {m[0], m[1]};
    if constexpr (RED & RED_TREE_MAX) {
        constexpr int NP = BC / 8 < 4 ? BC / 8 : 4;
        float pm[2][NP];
#pragma unroll
        for (int k = 0; k < NP; ++k) {
            pm[0][k] = fmaxf(s[4 * k], s[4 * k + 1]);
            pm[1][k] = fmaxf(s[4 * k + 2], s[4 * k + 3]);
        }
#pragma unroll
        for (int nt = NP; nt < BC / 8; ++nt) {
            pm[0][nt % NP] = fmaxf(pm[0][nt % NP], fmaxf(s[4 * nt], s[4 * nt + 1]));
            pm[1][nt % NP] = fmaxf(pm[1][nt % NP], fmaxf(s[4 * nt + 2], s[4 * nt + 3]));
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
#pragma unroll
            for (int w = 1; w < NP; w *= 2)
#pragma unroll
                for (int k = 0; k + w < NP; k += 2 * w) pm[r][k] = fmaxf(pm[r][k], pm[r][k + w]);
            mx[r] = fmaxf(mx[r], pm[r][0]);
        }
    } else {
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt) {
            mx[0] = fmaxf(mx[0], fmaxf(s[4 * nt], s[4 * nt + 1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[4 * nt + 2], s[4 * nt + 3]));
        }
    }
    float msc[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        if constexpr (LAZY) {
            // The maximum is moved only when it grows by more than 2^8 in P (changelog entry x):
            // P then stays below 256 (fp16 and bf16 hold it to the same relative precision, and l
            // and O in f32), alpha is exactly 1 otherwise, and O's rescale can be skipped.
            if (!(mx[r] * p.scale_log2 > m[r] * p.scale_log2 + 8.f)) {
                msc[r] = m[r] == NEG_INF ? 0.f : m[r] * p.scale_log2;
                alpha[r] = 1.f;
                continue;
            }
        }
        msc[r] = mx[r] == NEG_INF ? 0.f : mx[r] * p.scale_log2;
        alpha[r] = ex2(m[r] * p.scale_log2 - msc[r]);
        l[r] *= alpha[r];
        m[r] = mx[r];
    }
    float lt[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) {
        s[4 * nt] = ex2(fmaf(s[4 * nt], p.scale_log2, -msc[0]));
        s[4 * nt + 1] = ex2(fmaf(s[4 * nt + 1], p.scale_log2, -msc[0]));
        s[4 * nt + 2] = ex2(fmaf(s[4 * nt + 2], p.scale_log2, -msc[1]));
        s[4 * nt + 3] = ex2(fmaf(s[4 * nt + 3], p.scale_log2, -msc[1]));
        lt[0] += s[4 * nt] + s[4 * nt + 1];
        lt[1] += s[4 * nt + 2] + s[4 * nt + 3];
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] += RED & RED_L_SHARE ? lt[r] : quad_sum(lt[r]);
}
// A row's sum from the four shares its quad holds, with RED_L_SHARE (every lane of the warp calls it).
template <int RED>
__device__ __forceinline__ float row_sum(const float (&l)[2], int r) {
    return RED & RED_L_SHARE ? quad_sum(l[r]) : l[r];
}
template <typename T, int BC, bool LOW>
__device__ __forceinline__ void wg_pack(const float (&s)[BC / 2], unsigned int (&pf)[BC / 16][4],
                                       unsigned int (&pl)[BC / 16][4]) {
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) {
        const unsigned int h01 = pack2(s[4 * nt], s[4 * nt + 1], T()), h23 = pack2(s[4 * nt + 2], s[4 * nt + 3], T());
        pf[nt / 2][(nt & 1) * 2 + 0] = h01;
        pf[nt / 2][(nt & 1) * 2 + 1] = h23;
        if constexpr (LOW) {
            const float2 f01 = to_f2(h01, T()), f23 = to_f2(h23, T());
            pl[nt / 2][(nt & 1) * 2 + 0] = pack2(s[4 * nt] - f01.x, s[4 * nt + 1] - f01.y, T());
            pl[nt / 2][(nt & 1) * 2 + 1] = pack2(s[4 * nt + 2] - f23.x, s[4 * nt + 3] - f23.y, T());
        }
    }
}
template <typename T, int BC, bool LOW, int MASK = MASK_ANY, int RED = RED_CHAIN>
__device__ __forceinline__ void wg_softmax(float (&s)[BC / 2], const Params& p, int j0, int iw, int row_a,
                                          int tg, float (&m)[2], float (&l)[2], float (&alpha)[2],
                                          unsigned int (&pf)[BC / 16][4], unsigned int (&pl)[BC / 16][4]) {
    wg_exp<BC, false, MASK, RED>(s, p, j0, iw, row_a, tg, m, l, alpha);
    wg_pack<T, BC, LOW>(s, pf, pl);
}
// ANCHOR_END: wg_softmax

// ANCHOR: wg_copy_rows
// Rows [r0, r0 + R) of an (n x D) matrix into an R-row tile, chunk cc of rows ci, ci + RS, ...
template <int R, int D, int RS, typename T>
__device__ __forceinline__ void copy_rows(T* dst, const T* src, int r0, int n, int ci, int cc) {
    constexpr int SSTEP = D % 64 == 0 ? RS * 64 : RS * D;  // RS rows further on in the tile
    T* d = dst + tile_off<D>(ci, cc, R);
    const T* g = src + (size_t)(r0 + ci) * D + cc * 8;
    if (r0 + R <= n) {
#pragma unroll
        for (int k = 0; k < R / RS; ++k) cp_async16(d + k * SSTEP, g + k * RS * D);
    } else {
#pragma unroll
        for (int k = 0; k < R / RS; ++k) {
            const bool in = r0 + ci + k * RS < n;
            cp_async16(d + k * SSTEP, in ? g + k * RS * D : src, in);
        }
    }
}
// ANCHOR_END: wg_copy_rows

// ANCHOR: wg_store
// O /= l and lse = m scale + ln l for this thread's rows row_a and row_a + 8 (rows past Nq are not
// stored), from the wgmma accumulator layout (8-column fragments of rows g and g + 8: [4 dn + 2 r + c]).
template <typename T, int D, int RED = RED_CHAIN>
__device__ __forceinline__ void wg_store(T* __restrict__ o, float* __restrict__ lse, const Params& p, int bh,
                                         int row_a, int tg, const float (&oacc)[D / 2], const float (&m)[2],
                                         const float (&l)[2]) {
    T* ob = o + (size_t)bh * p.nq * D;
    const float lr[2] = {row_sum<RED>(l, 0), row_sum<RED>(l, 1)};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = row_a + r * 8;
        if (row >= p.nq) continue;
        const float inv = lr[r] > 0.f ? 1.f / lr[r] : 0.f;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
            *reinterpret_cast<unsigned int*>(ob + (size_t)row * D + dn * 8 + tg * 2) =
                pack2(oacc[4 * dn + 2 * r] * inv, oacc[4 * dn + 2 * r + 1] * inv, T());
        if (tg == 0) lse[(size_t)bh * p.nq + row] = row_lse(p, m[r], lr[r]);
    }
}
// ANCHOR_END: wg_store

// ANCHOR: work_item
// Work item `item` of a 1-D order over (query tile, head) pairs of BR rows: in groups of GH heads, tile
// T - 1 of the group's heads, then T - 2, ... With a causal mask the longest items then start first
// and the order ends on the shortest (head by head, every head's long items ran to the end beside
// short ones: slower at N = 512 and 1024 for v7's one-warpgroup block, changelog v7 i.), while the
// items at work at one time share a few heads' K and V (GH heads' K and V take about 16 MB: they stay in
// L2). Without a mask every item is as long: GH = 1, head by head (grouped was slower, v7 i.).
template <typename T, int D, int BR>
__device__ __forceinline__ void work_item(const Params& p, int item, int& tile, int& bh) {
    const int T_ = (p.nq + BR - 1) / BR, BH = p.b * p.hq;
    const int GH = p.causal ? max(1, min(BH, (8 << 20) / (int)sizeof(T) / D / max(p.nk, 1))) : 1;
    const int grp = item / (GH * T_), r = item - grp * GH * T_;
    const int gc = min(GH, BH - grp * GH);  // heads in this (maybe the last, partial) group
    tile = T_ - 1 - r / gc;
    bh = grp * GH + r % gc;
}
// ANCHOR_END: work_item

// ANCHOR: wg_block
// One block: NWG warpgroups (128 NWG threads), BR = 64 NWG query rows of one (batch, head); warpgroup w
// owns rows 64w..64w+63. Keys in tiles of BC = 128, two stages filled by cp.async: the copies of tile
// t + 1 are issued right after S of tile t (the tensor cores work meanwhile) into the stage tile t - 1
// used, which every warpgroup finished before the barrier at the top of tile t. Shared memory: Q
// (BR x D), then two stages of K and V (BC x D each), all 16-bit: 160 KB at D = 128 with two
// warpgroups. 233 registers a thread: one two-warpgroup block per SM. With one warpgroup (v7 at D = 64:
// 74 KB, about 200 registers), two blocks share an SM, so one block's start (its first loads and its
// first tile, which nothing overlaps) runs under the other's loop.
template <typename T, int D, bool OVERLAP, int NWG>
__device__ void flash_wg(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ o, float* __restrict__ lse, Params p) {
    constexpr int BR = 64 * NWG, BC = 128, CH = D / 8, NT = 128 * NWG;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // Swizzled tiles must start on 1024 bytes (the XOR reads address bits 7..9): the host adds 1 KB.
    T* Qs = reinterpret_cast<T*>(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
    T* Ks = Qs + BR * D;  // stage st: K at Ks + 2 st BC D, V right after it
    // ANCHOR_END: wg_block

    const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane >> 2, tg = lane & 3;
    // ANCHOR: wg_order
    // Which (query tile, head) this block is. Two warpgroups: blockIdx.x counts tiles from the last,
    // blockIdx.y is the head. One warpgroup (v7 at D <= 64, many short blocks): a 1-D grid in
    // `work_item`'s order.
    int tile, bh;
    if constexpr (NWG == 1 && OVERLAP) {
        work_item<T, D, BR>(p, blockIdx.x, tile, bh);
    } else {
        tile = gridDim.x - 1 - blockIdx.x;  // the longest (causal: last) query tiles start first
        bh = blockIdx.y;
    }
    // ANCHOR_END: wg_order
    const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
    const int i0 = tile * BR, iw = i0 + wg * 64;  // iw: this warpgroup's first row
    const T* qb = q + (size_t)bh * p.nq * D;
    const T* kb = k + ((size_t)b * p.hkv + hk) * p.nk * D;
    const T* vb = v + ((size_t)b * p.hkv + hk) * p.nk * D;
    int lo, hi;
    key_range(p, i0, min(i0 + BR, p.nq) - 1, lo, hi);
    const int t_begin = lo / BC;
    const int ntiles = hi > lo ? (hi + BC - 1) / BC - t_begin : 0;  // fully masked tiles: skipped
    // ANCHOR: short_rows
    // Does any row of the block see fewer keys than a tile holds? Only such a short row can have its
    // weight on a few keys, where rounding P to 16 bits reaches the 1e-3 bar ("Rounding P"); only then
    // does v7's two-warpgroup block run its first tile's correction. (v6 corrects every block's first
    // tile; v7's one-warpgroup block folds the correction into step 1, where it costs little.)
    int min_keys = p.nk;
    if (p.causal) min_keys = min(min_keys, i0 + p.nk - p.nq + 1);
    if (p.window) min_keys = min(min_keys, p.window);
    const bool short_rows = min_keys < BC;
    // ANCHOR_END: short_rows

    // ANCHOR: wg_copy
    // Rows [r0, r0 + R) of an (n x D) matrix into an R-row tile (R = BC for K and V, BR for Q).
    // Thread tid copies chunk cc = tid % CH of rows ci, ci + RS, ci + 2 RS, ...: a warp reads whole
    // rows (full 128-byte lines), and since RS is a multiple of 8 a thread's rows share their swizzle
    // (i % 8), so the shared and the global offsets both advance by constants: computed once here, not
    // for every chunk (the per-chunk arithmetic was a large share of the loop's instructions, changelog
    // v6 d.). Rows past n
    // are zeros; only a matrix's last tile takes that path.
    const int cc = tid % CH, ci = tid / CH;
    auto copy_tile = [&](T* dst, const T* src, int r0, int n) { copy_rows<BC, D, NT / CH>(dst, src, r0, n, ci, cc); };
    auto copy_q = [&]() { copy_rows<BR, D, NT / CH>(Qs, qb, i0, p.nq, ci, cc); };
    // ANCHOR_END: wg_copy
    auto load_kv = [&](int st, int j0) {
        T* Kd = Ks + st * 2 * BC * D;
        copy_tile(Kd, kb, j0, p.nk);
        copy_tile(Kd + BC * D, vb, j0, p.nk);
    };
    if constexpr (!OVERLAP) {
        copy_q();
        cp_async_commit();  // group: Q
        if (ntiles > 0) load_kv(0, t_begin * BC);
        cp_async_commit();  // group: K/V tile 0
    } else if (ntiles > 0) {
        copy_q();
        copy_tile(Ks, kb, t_begin * BC, p.nk);
        cp_async_commit();  // group: Q and K_0
    }

    float oacc[D / 2];  // O, 8-column fragments of rows g and g + 8 of this warp: [4 dn + 2 r + c]
#pragma unroll
    for (int x = 0; x < D / 2; ++x) oacc[x] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};  // raw-score max and row sum (whole row)
    const int row_a = iw + warp * 16 + g;               // this thread's rows: row_a and row_a + 8
    const T* Qw = Qs + tile_off<D>(64 * wg, 0, BR);    // this warpgroup's 64 rows of Q

    if constexpr (!OVERLAP) {
        // ANCHOR: wg_loop
        for (int t = 0; t < ntiles; ++t) {
            const int j0 = (t_begin + t) * BC, st = t & 1;
            cp_async_wait<0>();  // this thread's copies of tile t (and Q) have landed
            fence_proxy_async();
            __syncthreads();  // everyone's have; and both warpgroups are done with tile t - 1
            const T* Kt = Ks + st * 2 * BC * D;
            const T* Vt = Kt + BC * D;

            // ANCHOR: wg_qk
            // S = Q K^T, 64 rows x 128 keys per warpgroup: D / 16 wgmma k-steps of 16 columns of d.
            float s[BC / 2];
            wg_fence();
            issue_qk<D, BR, BC>(s, Qw, Kt);
            wg_commit();
            // While the tensor cores work: the copies of tile t + 1 into the stage tile t - 1 used.
            if (t + 1 < ntiles) load_kv(st ^ 1, j0 + BC);
            cp_async_commit();
            wg_wait<0>();
            // ANCHOR_END: wg_qk

            float alpha[2];
            unsigned int pf[BC / 16][4], pl[BC / 16][4];
            wg_softmax<T, BC, true>(s, p, j0, iw, row_a, tg, m, l, alpha, pf, pl);
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
                for (int x = 0; x < 4; ++x) oacc[4 * dn + x] *= alpha[x >> 1];
            // ANCHOR: wg_first_tile
            // v5 adds (P - fp16(P)) V on any tile that carries over a quarter of a row's weight; a branch on
            // data around wgmma makes the compiler serialise every wgmma of the kernel (ptxas C7520), so v6
            // corrects the block's first tile only, a branch on the loop counter. The first tile is where
            // a short row has all its weight (the rows that broke the 1e-3 bar in v5).
            const bool heavy = t == 0;
            // ANCHOR_END: wg_first_tile

            // ANCHOR: wg_pv
            // O += P V: A = P from registers, B = V from shared memory, k-steps of 16 keys (2 core-matrix
            // rows, 16 D elements further on).
            wg_fence();
            issue_pv<D, BC>(oacc, pf, Vt);
            if (heavy) {
                issue_pv<D, BC>(oacc, pl, Vt);
            }
            // Waited for here: leaving it in flight across the loop's back edge made ptxas serialise
            // every wgmma (C7515, accumulator registers copied at the back edge).
            wg_commit();
            wg_wait<0>();
            // ANCHOR_END: wg_pv
        }
        // ANCHOR_END: wg_loop
    } else {
        // ANCHOR: wo_loop
        // v7: tile t's softmax runs while the tensor cores compute tile t - 1's P V (FlashAttention-3's
        // intra-warpgroup overlap). Each step issues S_t = Q K_t^T and then O += P_{t-1} V_{t-1}, waits
        // for S_t only, computes P_t into a second set of registers, then waits for P V and rescales O.
        // Nothing is in flight across the back edge. V_{t-1} is still being read during step t, so K and
        // V move in different steps: step t copies V_t into the stage V_{t-2} used and K_{t+1} into the
        // stage K_{t-1} used, and the barrier at the end of step t covers both.
        unsigned int pf[BC / 16][4], pg[BC / 16][4];  // P of the tile whose P V is next, two sets
        // The first tile's rounding residual P - fp16(P). With one warpgroup (the registers allow it)
        // its product (P - fp16(P)) V_0 joins step 1's P V on the tensor cores, under step 1's softmax;
        // with two, it runs alone before the loop.
        constexpr bool FOLD = NWG == 1 && D <= 64;
        unsigned int pl[BC / 16][4];
        float* sink = reinterpret_cast<float*>(Ks + 4 * BC * D) + tid;  // one word a thread, after V
        float alpha[2];
        if (ntiles > 0) {
            copy_tile(Ks + BC * D, vb, t_begin * BC, p.nk);  // V_0 into stage 0
            if (ntiles > 1) copy_tile(Ks + 2 * BC * D, kb, (t_begin + 1) * BC, p.nk);  // K_1
            cp_async_commit();
            cp_async_wait<1>();  // Q and K_0
            fence_proxy_async();
            __syncthreads();
            float s[BC / 2];
            wg_fence();
            issue_qk<D, BR, BC>(s, Qw, Ks);
            wg_commit();
            wg_wait<0>();
            wg_softmax<T, BC, true>(s, p, t_begin * BC, iw, row_a, tg, m, l, alpha, pf, pl);
            // As in the loop below: pins the wait for V_0 and K_1 below the softmax, so the copies
            // land while the exponentials run.
            asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(smem_addr(sink)), "f"(l[0] + l[1]));
            cp_async_wait<0>();  // V_0 and K_1
            fence_proxy_async();
            __syncthreads();
            if (!FOLD && short_rows) {
                // The first tile's rounding correction, O = (P - fp16(P)) V_0, before the loop (O is
                // zero, so alpha is not needed); P V_0 itself is step 1's.
                wg_fence();
                issue_pv<D, BC>(oacc, pl, Ks + BC * D);
                wg_commit();
                wg_wait<0>();
            }
        }
        // One step: S_t and P_{t-1} V_{t-1} issued, P_t computed into pnext while pcur is still being
        // read. Steps alternate two register sets (a copy from one to the other, even fenced, made
        // ptxas serialise every wgmma: C7513).
        // `first`: step 1, which also adds the first tile's correction when FOLD (a literal at each call,
        // so no branch is left around the wgmmas once the lambda is inlined).
        auto step = [&](int t, unsigned int (&pcur)[BC / 16][4], unsigned int (&pnext)[BC / 16][4],
                        bool first) {
            const int j0 = (t_begin + t) * BC;
            const T* Kt = Ks + (t & 1) * 2 * BC * D;                // K_t
            const T* Vp = Ks + ((t - 1) & 1) * 2 * BC * D + BC * D;  // V_{t-1}
            float s[BC / 2];
            wg_fence();
            issue_qk<D, BR, BC>(s, Qw, Kt);
            wg_commit();
            issue_pv<D, BC>(oacc, pcur, Vp);
            if (FOLD && first) issue_pv<D, BC>(oacc, pl, Vp);
            wg_commit();
            copy_tile(Ks + (t & 1) * 2 * BC * D + BC * D, vb, j0, p.nk);  // V_t
            if (t + 1 < ntiles) copy_tile(Ks + ((t + 1) & 1) * 2 * BC * D, kb, j0 + BC, p.nk);
            cp_async_commit();
            wg_wait<1>();  // S_t is done; P V may still run
            unsigned int unused[BC / 16][4];
            wg_softmax<T, BC, false>(s, p, j0, iw, row_a, tg, m, l, alpha, pnext, unused);
            // Nothing ties the softmax to the two waits below, and ptxas hoists them (and the barrier)
            // above it, so that nothing overlaps. A store of the row sums, which depend on every
            // exponential, pins the waits below the softmax.
            asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(smem_addr(sink)), "f"(l[0] + l[1]));
            wg_wait<0>();  // P_{t-1} V_{t-1} is done
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
                for (int x = 0; x < 4; ++x) oacc[4 * dn + x] *= alpha[x >> 1];
            cp_async_wait<0>();  // V_t and K_{t+1}
            fence_proxy_async();
            __syncthreads();
        };
        // The last tile's P V, from whichever set holds its P (with the correction when that tile is
        // the first and FOLD).
        auto last_pv = [&](unsigned int (&pcur)[BC / 16][4], bool first) {
            wg_fence();
            const T* Vp = Ks + ((ntiles - 1) & 1) * 2 * BC * D + BC * D;
            issue_pv<D, BC>(oacc, pcur, Vp);
            if (FOLD && first) issue_pv<D, BC>(oacc, pl, Vp);
            wg_commit();
            wg_wait<0>();
        };
        // Folded, the correction is always added: skipping it where no row is short (a branch around
        // the whole of step 1, two copies of it) made the one-warpgroup kernel slower on causal
        // masks at D = 64, where it is nearly free under the softmax (changelog v7 f.).
        if (ntiles == 1) {
            last_pv(pf, true);
        } else if (ntiles > 1) {
            step(1, pf, pg, true);  // P_1 now in pg
            int t = 2;
            for (; t + 1 < ntiles; t += 2) {
                step(t, pg, pf, false);
                step(t + 1, pf, pg, false);
            }
            if (t < ntiles) {
                step(t, pg, pf, false);
                last_pv(pf, false);
            } else {
                last_pv(pg, false);
            }
        }
        // ANCHOR_END: wo_loop
    }

    wg_store<T, D>(o, lse, p, bh, row_a, tg, oacc, m, l);
}

// W warps: 8 (two warpgroups, one block an SM) or 4 (one warpgroup, two blocks an SM where they fit).
#define WG(V, DD, W)                                                                                    \
    extern "C" __global__ void __launch_bounds__(32 * W, W == 4 && DD <= 64 ? 2 : 1)                               \
        flash_v##V##_##DD##_w##W(const elem_t* q, const elem_t* k, const elem_t* v, elem_t* o, float* lse, \
                                 Params p) {                                                           \
        flash_wg<elem_t, DD, V == 7, W / 4>(q, k, v, o, lse, p);                                       \
    }
#if FA_VERSION == 6
WG(6, 32, 8)
WG(6, 64, 8)
WG(6, 128, 8)
#elif FA_VERSION == 7
WG(7, 32, 8)
WG(7, 64, 8)
WG(7, 128, 8)
WG(7, 32, 4)
WG(7, 64, 4)
WG(7, 128, 4)
#endif

#if FA_VERSION == 8
// ANCHOR: v8_intro
// v8: v7's two-warpgroup loop fed by a third warpgroup through Hopper's tensor memory accelerator
// (FlashAttention-3's warp specialisation). In v7 every consumer thread computes addresses and issues
// 16-byte cp.async copies, and the two warpgroups meet at a block-wide barrier every tile. Here one
// thread of a producer warpgroup asks the copy engine for whole boxes (64 columns x 128 rows of K or V,
// 64 NWG rows of Q, in the 128-byte swizzle `tile_off` describes; src/gpu/tma.rs builds the tensor maps
// on the host), rows past the end arriving as zeros. Each stage of K and each of V has two mbarriers: "full", on which the
// copy engine counts the bytes it delivered, and "empty", on which each consumer warp arrives once it
// has finished reading the stage (its wgmma waited for); Q has a pair of its own, on whose "empty" every
// consumer thread arrives. Nothing else synchronises the block: the consumer warpgroups run v7's
// overlapped steps each at its own pace, and the block is persistent (`flash_ws`). The producer gives
// up registers (`setmaxnreg.dec` to 40) so that the consumers can take 232 (`setmaxnreg.inc`) under the
// 384-thread launch's 168 (128 x 40 + 256 x 232 = 384 x 168 registers). At D = 64 a block has three
// consumer warpgroups (NWG = 3: 192 query rows share each K/V tile, 512 threads, 24 and 160
// registers) except for short causal calls (`v8_consumers` in src/gpu/flash.rs).
// ANCHOR_END: v8_intro
struct __align__(64) TensorMap {
    unsigned long long opaque[16];
};

// ANCHOR: mbarrier
__device__ __forceinline__ void mb_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// One arrival that also tells the barrier to expect `bytes` more from the copy engine.
__device__ __forceinline__ void mb_expect(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mb_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Wait until the phase of parity `parity` has completed. A barrier starts in phase 0, so waiting for
// parity 1 on a fresh barrier returns at once (the producer's first pass over empty stages).
__device__ __forceinline__ void mb_wait(unsigned bar, unsigned parity) {
    asm volatile(
        "{\n.reg .pred done;\nWAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
}
// One box of a (heads, rows, D) tensor map: columns c0.., rows r0.., head z, into shared memory at dst;
// its bytes are counted on `bar`.
__device__ __forceinline__ void tma_box(void* dst, const TensorMap* map, int c0, int r0, int z, unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
        "%4}], [%5];\n" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(r0), "r"(z), "r"(bar)
        : "memory");
}
// One box of a (heads, rows, D) tensor map from shared memory at src to columns c0.., rows r0.., head
// z (rows past the map's end are not written); the copies one thread asked for since its last
// commit form a bulk group, whose reads of shared memory it can wait for.
__device__ __forceinline__ void tma_store_box(const TensorMap* map, int c0, int r0, int z, const void* src) {
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%1, %2, %3}], [%4];\n" ::"l"(
                     reinterpret_cast<unsigned long long>(map)),
                 "r"(c0), "r"(r0), "r"(z), "r"(smem_addr(src))
                 : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// Four 8 x 8 matrices of 16-bit values from the mma fragment layout (register i of each thread: its
// two values of matrix i) to shared memory, one row address a lane (lanes 8i..8i+7: matrix i's rows).
__device__ __forceinline__ void stsm_x4(unsigned addr, unsigned r0, unsigned r1, unsigned r2, unsigned r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0), "r"(r1),
                 "r"(r2), "r"(r3)
                 : "memory");
}
__device__ __forceinline__ void wg_bar(int id) { asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory"); }
// ANCHOR_END: mbarrier

// ANCHOR: trace_codes
// The trace build (FA_TRACE = 1, `gpu-probe trace`): thread 0 of each consumer warpgroup and the
// producer's thread record every change of state with the SM's clock, in the first FA_TRACE_BLOCKS
// blocks, FA_TRACE_EVENTS events each. An event starts the state it names, which lasts until the
// writer's next event. Elsewhere `tr` compiles to nothing.
#ifndef FA_TRACE
#define FA_TRACE 0
#endif
#ifndef FA_TRACE_BLOCKS
#define FA_TRACE_BLOCKS 2
#endif
#ifndef FA_TRACE_EVENTS
#define FA_TRACE_EVENTS 8192
#endif
enum TraceCode : unsigned {
    TR_START = 0,
    // a consumer warpgroup: waiting for Q (the next item), for K, for V; issuing products; waiting for
    // S; the exponentials; waiting for P V; rescaling O and rounding P (with LATE_RESCALE, rounding P
    // only: O's rescale falls between the two issues); storing O; finished
    TR_WAIT_Q = 1,
    TR_WAIT_K = 2,
    TR_WAIT_V = 3,
    TR_ISSUE = 4,
    TR_WAIT_S = 5,
    TR_SOFTMAX = 6,
    TR_WAIT_PV = 7,
    TR_RESCALE = 8,
    TR_STORE = 9,
    TR_DONE = 10,
    // the producer: taking an item, waiting for a free Q tile, K stage or V stage, asking for a box
    TR_TAKE = 16,
    TR_WAIT_Q_FREE = 17,
    TR_LOAD_Q = 18,
    TR_WAIT_K_FREE = 19,
    TR_LOAD_K = 20,
    TR_WAIT_V_FREE = 21,
    TR_LOAD_V = 22,
    TR_P_DONE = 23,
};
// ANCHOR_END: trace_codes

// ANCHOR: ws_block
// One block an SM, persistent: consumer warpgroups 0 .. NWG-1 (query rows 64w..64w+63 of a 64 NWG-row
// tile, as v7's two-warpgroup block when NWG = 2), producer warpgroup NWG. The block walks work items,
// (query tile, head) pairs in v7's `work_item` order, taking the next from a counter in global memory
// (dynamic scheduling: with a causal mask items are unequal), so launching thousands of short blocks is
// paid once. Where shared memory holds two Q tiles (QB = 2: every shape but D = 128 with three stages),
// the producer takes item n + 1 and asks for its Q as soon as item n's first K/V tile is on its way, and
// the consumers start item n + 1 under item n's end: its first S = Q K^T is issued with item n's last
// P V and its exponentials run while that P V does, then item n's O is stored (the consumer loop). With one
// Q tile the next item's Q can only be asked for once the last S has read this one, and an item's start
// (its Q's load, its first S and softmax, which nothing overlaps) is paid in full. Shared memory: QB Q
// tiles (64 NWG x D), STAGES stages of K, STAGES of V (128 x D each), the barriers, the items in hand and
// v7's one word a consumer thread.
template <typename T, int D, int STAGES, int NWG, bool OTILE, int MASK>
__device__ void flash_ws(const TensorMap* tq, const TensorMap* tk, const TensorMap* tv, const TensorMap* to,
                         T* __restrict__ o,
                         float* __restrict__ lse, Params p, unsigned* sched,
                         [[maybe_unused]] unsigned long long* trace) {
    constexpr int BR = 64 * NWG, BC = 128;
    constexpr unsigned TILE_BYTES = BC * D * sizeof(T);
    // DECODED: the producer publishes each item decoded (its key tiles, head, first key tile and query
    // tile), so the consumers' item boundary does no division; otherwise the item's number, which
    // each consumer warpgroup decodes. Measured: it pays in every D = 64 block (changelog entries n and
    // ad), and in three attempts the D = 128 kernels' loops compiled slower with it (n, r and af);
    // D = 128's causal kernels without the window's code are faster with it, its unmasked ones at short
    // rows slower (entry aq).
    constexpr bool DECODED = D == 64 || MASK == MASK_CAUSAL;
    // Q tiles: two where they fit beside the stages in an SM's 227 KB (the host's `v8_q_buffers`).
    constexpr int QB = (2 * BR + 2 * STAGES * BC) * D * (int)sizeof(T) + 4096 <= 232448 ? 2 : 1;
    // LATE_S (changelog entry p): at an item boundary, this item's last P V is issued first and the
    // next item read under it, then the next item's first S issued and this item's O stored under
    // that. It needs the next item's Q in hand, so two Q tiles.
    constexpr bool LATE_S = QB == 2;
    // The row reductions (`wg_exp`'s RED; changelog entry as): the quad's sums added once an item in
    // the D = 128 kernels and in D = 64's unmasked one, the maximum as a tree in D = 64's
    // two-consumer kernels (causal rows up to 1024 keys), each where it measured faster.
    constexpr int RED =
        (D == 128 || MASK == MASK_NONE ? RED_L_SHARE : 0) | (D == 64 && NWG == 2 ? RED_TREE_MAX : 0);
    // LATE_RESCALE (changelog entry at): a step rescales O by the last softmax's factor between its S's
    // issue and its P V's, FlashAttention-3's order, instead of before its S: S starts that much
    // earlier. Every kernel but D = 64's three-consumer ones with a mask, where it measured level.
    constexpr bool LATE_RESCALE = !(D == 64 && NWG == 3 && MASK != MASK_NONE);
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    T* Qs = reinterpret_cast<T*>(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
    T* Ks = Qs + QB * BR * D;      // stage s at Ks + s BC D
    T* Vs = Ks + STAGES * BC * D;  // stage s at Vs + s BC D
    // OSTAGE (the `_o` kernels; the host's `v8_o_tile` picks them): each consumer warpgroup writes its
    // 64 rows of O into a tile of its own (stmatrix: four 8 x 8 matrices an instruction) and one
    // thread hands the tile to the copy engine (a TMA store), instead of every thread storing its
    // scattered 4-byte pieces to global memory. Measured (changelog entries o and ah): it pays at
    // short rows, and costs at long ones.
    constexpr int BASE = (QB * BR + 2 * STAGES * BC) * D * (int)sizeof(T) + 1024 + 8 * (2 * QB + 4 * STAGES) + 32 +
                         512 * NWG;
    constexpr bool OSTAGE = OTILE && BASE + BR * D * (int)sizeof(T) <= 232448;
    T* Os = Vs + STAGES * BC * D;  // warpgroup w's O tile at Os + 64 w D (OSTAGE)
    // Barriers (8 bytes each): Q full and Q empty for each Q tile; then K full, K empty, V full, V empty,
    // one per stage.
    const unsigned bars = smem_addr(Os + (OSTAGE ? BR * D : 0));
    auto q_full = [&](int n) { return bars + 16u * (n % QB); };  // item n's Q tile is n % QB
    auto q_empty = [&](int n) { return bars + 16u * (n % QB) + 8; };
    auto bar = [&](int kind, int s) { return bars + 8u * (2 * QB + kind * STAGES + s); };
    enum { K_FULL = 0, K_EMPTY = 1, V_FULL = 2, V_EMPTY = 3 };
    volatile int* s_item = reinterpret_cast<volatile int*>(Os + (OSTAGE ? BR * D : 0)) + 2 * (2 * QB + 4 * STAGES);
    // ANCHOR_END: ws_block

    const int tid = threadIdx.x, wg = tid / 128;
    const int items = (p.nq + BR - 1) / BR * p.b * p.hq;
    // The trace build's state changes (`trace_codes`): this block's n-th item, its t-th key tile.
    [[maybe_unused]] int tr_count = 0;
    auto tr = [&]([[maybe_unused]] unsigned code, [[maybe_unused]] int n, [[maybe_unused]] int t) {
        if constexpr (FA_TRACE) {
            if (trace != nullptr && tid % 128 == 0 && blockIdx.x < FA_TRACE_BLOCKS && tr_count < FA_TRACE_EVENTS) {
                unsigned long long* e = trace + 2 * ((size_t)(blockIdx.x * 4 + wg) * FA_TRACE_EVENTS + tr_count++);
                e[0] = clock64();
                e[1] = code | (unsigned long long)(n & 0xFFFFFF) << 8 | (unsigned long long)(unsigned)t << 32;
            }
        }
    };
    tr(TR_START, 0, 0);
    // The keys item `item` sees, as tiles [t_begin, t_begin + ntiles) (fully masked tiles skipped).
    auto keys = [&](int item, int& tile, int& bh, int& t_begin, int& ntiles) {
        work_item<T, D, BR>(p, item, tile, bh);
        int lo, hi;
        key_range(p, tile * BR, min(tile * BR + BR, p.nq) - 1, lo, hi);
        t_begin = lo / BC;
        ntiles = hi > lo ? (hi + BC - 1) / BC - t_begin : 0;
    };

    if (tid == 0) {
        for (int b = 0; b < QB; ++b) {
            mb_init(q_full(b), 1);
            mb_init(q_empty(b), 128 * NWG);  // every consumer thread arrives
        }
        for (int s = 0; s < STAGES; ++s) {
            mb_init(bar(K_FULL, s), 1);  // the producer's arrival; the bytes complete the phase
            mb_init(bar(V_FULL, s), 1);
            mb_init(bar(K_EMPTY, s), 4 * NWG);  // one arrival per consumer warp
            mb_init(bar(V_EMPTY, s), 4 * NWG);
        }
        // The copy engine (the async proxy) must see the initialised barriers.
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    }
    __syncthreads();  // the only block-wide barrier

    // ANCHOR: ws_producer
    if (wg == NWG) {
        if constexpr (NWG == 3) {
            asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
        } else {
            asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        }
        if (tid == 128 * NWG) {
            auto take = [&]() {
                tr(TR_TAKE, 0, 0);
                const int item = (int)atomicAdd(sched, 1u);
                return item < items ? item : -1;
            };
            // Item `item` becomes the block's n-th: once the consumers are done with the Q tile it
            // will use, the item, decoded (its key tiles, head and query tile: the divisions are
            // done once, here), is published beside it (by the arrival: release semantics) and its
            // Q asked for; -1 key tiles tell the consumers to stop.
            auto publish = [&](int n, int item) {
                tr(TR_WAIT_Q_FREE, n, 0);
                mb_wait(q_empty(n), ((n / QB) & 1) ^ 1);
                tr(TR_LOAD_Q, n, 0);
                volatile int* slot = s_item + (DECODED ? 4 : 1) * (n % QB);
                if constexpr (!DECODED) slot[0] = item;
                if (item < 0) {
                    if constexpr (DECODED) slot[0] = -1;
                    mb_arrive(q_full(n));
                    return;
                }
                int tile, bh, t_begin, ntiles;
                keys(item, tile, bh, t_begin, ntiles);
                if constexpr (DECODED) {
                    slot[0] = ntiles;
                    slot[1] = bh;
                    slot[2] = t_begin;
                    slot[3] = tile;
                }
                mb_expect(q_full(n), BR * D * sizeof(T));
#pragma unroll
                for (int cb = 0; cb < D / 64; ++cb)
                    tma_box(Qs + (n % QB) * BR * D + cb * BR * 64, tq, cb * 64, tile * BR, bh, q_full(n));
            };
            int kv = 0;  // K/V tiles loaded so far: tile kv goes to stage kv % STAGES
            int item = take();
            publish(0, item);
            for (int n = 0; item >= 0; ++n) {
                int tile, bh, t_begin, ntiles;
                keys(item, tile, bh, t_begin, ntiles);
                const int b = bh / p.hq, hk = bh % p.hq / (p.hq / p.hkv), zk = b * p.hkv + hk;
                // The next item is taken once this one's first tile is asked for (two Q tiles), or
                // once its last is (one: its Q is free only after the last S).
                const int ahead = QB == 2 ? min(1, ntiles) : ntiles;
                int next = -1;
                for (int t = 0;; ++t, ++kv) {
                    if (t == ahead) {
                        next = take();
                        publish(n + 1, next);
                    }
                    if (t == ntiles) break;
                    const int s = kv % STAGES, parity = ((kv / STAGES) & 1) ^ 1, j0 = (t_begin + t) * BC;
                    tr(TR_WAIT_K_FREE, n, t);
                    mb_wait(bar(K_EMPTY, s), parity);  // every consumer is done with tile kv - STAGES
                    tr(TR_LOAD_K, n, t);
                    mb_expect(bar(K_FULL, s), TILE_BYTES);
#pragma unroll
                    for (int cb = 0; cb < D / 64; ++cb)
                        tma_box(Ks + s * BC * D + cb * BC * 64, tk, cb * 64, j0, zk, bar(K_FULL, s));
                    tr(TR_WAIT_V_FREE, n, t);
                    mb_wait(bar(V_EMPTY, s), parity);
                    tr(TR_LOAD_V, n, t);
                    mb_expect(bar(V_FULL, s), TILE_BYTES);
#pragma unroll
                    for (int cb = 0; cb < D / 64; ++cb)
                        tma_box(Vs + s * BC * D + cb * BC * 64, tv, cb * 64, j0, zk, bar(V_FULL, s));
                }
                item = next;
            }
            tr(TR_P_DONE, 0, 0);
            // The last block to finish resets the counters for the next launch (every block has taken
            // its last item by the time it counts itself done).
            __threadfence();
            if (atomicAdd(sched + 1, 1u) == gridDim.x - 1) {
                sched[0] = 0;
                sched[1] = 0;
                __threadfence();
            }
        }
        return;
    }
    // ANCHOR_END: ws_producer
    if constexpr (NWG == 3) {  // 128 x 24 + 384 x 160 <= 65536
        asm volatile("setmaxnreg.inc.sync.aligned.u32 160;\n" ::: "memory");
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    }

    // ANCHOR: ws_consumer
    const int warp = (tid / 32) % 4, lane = tid % 32, g = lane >> 2, tg = lane & 3;
    float* sink = reinterpret_cast<float*>(const_cast<int*>(s_item) + (DECODED ? 8 : 2)) + tid;
    // Tiles are numbered across items (kv + t), as the producer fills the stages.
    auto wait_full = [&](int kind, int t) { mb_wait(bar(kind, t % STAGES), (t / STAGES) & 1); };
    auto release = [&](int kind, int t) {
        if (lane == 0) mb_arrive(bar(kind, t % STAGES));
    };
    // Every consumer thread has read the item, so every one arrives: an arrival releases only its own
    // thread's reads (with one arrival a warp, compute-sanitizer's racecheck reported the producer's
    // next write of the item, with or without a __syncwarp before it).
    auto release_q = [&](int n) { mb_arrive(q_empty(n)); };
    auto q_tile = [&](int n) { return Qs + (n % QB) * BR * D + tile_off<D>(64 * wg, 0, BR); };
    auto k_tile = [&](int t) { return Ks + (t % STAGES) * BC * D; };
    auto v_tile = [&](int t) { return Vs + (t % STAGES) * BC * D; };

    // The block's n-th item as this warpgroup sees it (ntiles < 0: no item, stop).
    struct Item {
        int bh, t_begin, ntiles, iw;
        bool short_rows;  // a row sees fewer than BC keys: the first tile's rounding correction
    };
    auto item_at = [&](int n) {
        tr(TR_WAIT_Q, n, 0);
        mb_wait(q_full(n), (n / QB) & 1);
        volatile int* slot = s_item + (DECODED ? 4 : 1) * (n % QB);
        Item x;
        int tile;
        if constexpr (DECODED) {
            x.ntiles = slot[0];
            if (x.ntiles < 0) return x;
            x.bh = slot[1];
            x.t_begin = slot[2];
            tile = slot[3];
        } else {
            const int item = slot[0];
            if (item < 0) {
                x.ntiles = -1;
                return x;
            }
            keys(item, tile, x.bh, x.t_begin, x.ntiles);
        }
        const int i0 = tile * BR;
        x.iw = i0 + wg * 64;
        int min_keys = p.nk;  // as v7 (`short_rows`)
        if (is_causal<MASK>(p)) min_keys = min(min_keys, i0 + p.nk - p.nq + 1);
        if (window_of<MASK>(p)) min_keys = min(min_keys, window_of<MASK>(p));
        x.short_rows = MASK != MASK_NONE && min_keys < BC;
        return x;
    };
    auto row_of = [&](const Item& x) { return x.iw + warp * 16 + g; };

    float oacc[D / 2];
    float m[2], l[2], alpha[2];
    if constexpr (LATE_RESCALE) alpha[0] = alpha[1] = 1.f;
    // `reset` sets l for every item; this line only keeps these kernels' code the one entry as timed.
    if constexpr ((RED & RED_L_SHARE) != 0) l[0] = l[1] = 0.f;
    unsigned int pf[BC / 16][4];  // P of the tile whose P V is next
    // O of the item at rows iw.. (this thread's row_a, row_a + 8) divided by its sums, and its LSE.
    auto store_o = [&](int bh, int iw, int row_a) {
        if constexpr (OSTAGE) {
            T* ot = Os + wg * 64 * D;
            if (tid % 128 == 0) bulk_wait_read();  // the last item's store has read the tile
            wg_bar(1 + wg);
            // stmatrix: columns 8dn.. and 8dn + 8.. of the warp's 16 rows, four 8 x 8 matrices an
            // instruction (rows 0-7 and 8-15 of each): lane L gives row 8 (L / 8 % 2) + L % 8 of
            // chunk dn + L / 16.
            const float lr[2] = {row_sum<RED>(l, 0), row_sum<RED>(l, 1)};
            float inv[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) inv[r] = lr[r] > 0.f ? 1.f / lr[r] : 0.f;
            const int rl = warp * 16 + (lane >> 3 & 1) * 8 + (lane & 7), cl = lane >> 4;
#pragma unroll
            for (int dn = 0; dn < D / 8; dn += 2)
                stsm_x4(smem_addr(ot + tile_off<D>(rl, dn + cl, 64)),
                        pack2(oacc[4 * dn] * inv[0], oacc[4 * dn + 1] * inv[0], T()),
                        pack2(oacc[4 * dn + 2] * inv[1], oacc[4 * dn + 3] * inv[1], T()),
                        pack2(oacc[4 * dn + 4] * inv[0], oacc[4 * dn + 5] * inv[0], T()),
                        pack2(oacc[4 * dn + 6] * inv[1], oacc[4 * dn + 7] * inv[1], T()));
#pragma unroll
            for (int r = 0; r < 2; ++r)
                if (tg == 0 && row_a + 8 * r < p.nq)
                    lse[(size_t)bh * p.nq + row_a + 8 * r] = row_lse(p, m[r], lr[r]);
            fence_proxy_async();  // the copy engine must see these writes
            wg_bar(1 + wg);
            if (tid % 128 == 0) {
#pragma unroll
                for (int cb = 0; cb < D / 64; ++cb) tma_store_box(to, cb * 64, iw, bh, ot + cb * 64 * 64);
                bulk_commit();
            }
        } else {
            wg_store<T, D, RED>(o, lse, p, bh, row_a, tg, oacc, m, l);
        }
    };
    // A new item's state: O zero, no maximum, no sum.
    auto reset = [&]() {
#pragma unroll
        for (int i = 0; i < D / 2; ++i) oacc[i] = 0.f;
        m[0] = m[1] = NEG_INF;
        l[0] = l[1] = 0.f;
    };
    // The first tile's rounding correction, O = (P - fp16(P)) V_0, for rows that see fewer than BC
    // keys (`short_rows`), as v7's two-warpgroup block.
    auto correct_first = [&](const unsigned int (&pl)[BC / 16][4], int n, int kv) {
        tr(TR_WAIT_V, n, 0);
        wait_full(V_FULL, kv);
        tr(TR_ISSUE, n, 0);
        wg_fence();
        issue_pv<D, BC>(oacc, pl, v_tile(kv));
        wg_commit();
        tr(TR_WAIT_PV, n, 0);
        wg_wait<0>();
    };
    // O *= alpha, the factor the last softmax left (with FA_LAZY, a warp whose rows all kept their
    // maximum skips it).
    auto rescale_o = [&](const float (&a)[2]) {
        if (!FA_LAZY || __any_sync(0xffffffffu, a[0] != 1.f || a[1] != 1.f)) {
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
                for (int x = 0; x < 4; ++x) oacc[4 * dn + x] *= a[x >> 1];
        }
    };
    // LATE_RESCALE: the factor is applied in the next step, after its S is issued; an item's first
    // softmax leaves none (O is new).
    auto no_rescale = [&]() {
        if constexpr (LATE_RESCALE) alpha[0] = alpha[1] = 1.f;
    };
    // An item's first tile on its own: S, then its softmax, nothing under either (and, for short
    // rows, the rounding correction's P V).
    auto first_tile = [&](const Item& x, int n, int kv) {
        reset();
        if (x.ntiles == 0) {
            release_q(n);
            return;
        }
        unsigned int pl[BC / 16][4];
        tr(TR_WAIT_K, n, 0);
        wait_full(K_FULL, kv);
        float s[BC / 2];
        tr(TR_ISSUE, n, 0);
        wg_fence();
        issue_qk<D, BR, BC>(s, q_tile(n), k_tile(kv));
        wg_commit();
        tr(TR_WAIT_S, n, 0);
        wg_wait<0>();
        tr(TR_SOFTMAX, n, 0);
        release(K_EMPTY, kv);
        if (x.ntiles == 1) release_q(n);
        // With one Q tile every item starts here, and the rounding residual is computed only where
        // it is used (changelog entry w, as u at LATE_S's boundary); with two, only the block's first
        // item does, and one softmax is less code.
        if (!LATE_S && !x.short_rows) {
            wg_softmax<T, BC, false, MASK, RED>(s, p, x.t_begin * BC, x.iw, row_of(x), tg, m, l, alpha, pf, pl);
        } else {
            wg_softmax<T, BC, true, MASK, RED>(s, p, x.t_begin * BC, x.iw, row_of(x), tg, m, l, alpha, pf, pl);
            if (x.short_rows) correct_first(pl, n, kv);
        }
        no_rescale();
    };

    int kv = 0, n = 0;
    Item cur = item_at(0);
    if (cur.ntiles >= 0) first_tile(cur, 0, 0);
    while (cur.ntiles >= 0) {
        const int row_a = row_of(cur);
        // v7's step: S_t and P_{t-1} V_{t-1} issued together, the exponentials of S_t computed while
        // P V runs. K_t is released as soon as S_t is done (and Q after the item's last S), V_{t-1}
        // once P V is. Unlike v7, P_t is rounded into the registers P_{t-1} occupied only after P V is
        // done (FlashAttention-3's order): one register set for P instead of v7's two, which the 232
        // registers a consumer thread has here do not hold at D = 128.
        for (int t = 1; t < cur.ntiles; ++t) {
            const int j0 = (cur.t_begin + t) * BC, u = kv + t;
            tr(TR_WAIT_K, n, t);
            wait_full(K_FULL, u);
            if constexpr (!LATE_RESCALE) {
                tr(TR_WAIT_V, n, t);
                wait_full(V_FULL, u - 1);
            }
            float s[BC / 2];
            tr(TR_ISSUE, n, t);
            wg_fence();
            issue_qk<D, BR, BC>(s, q_tile(n), k_tile(u));
            wg_commit();
            if constexpr (LATE_RESCALE) {
                rescale_o(alpha);  // the last step's factor, while S runs
                tr(TR_WAIT_V, n, t);
                wait_full(V_FULL, u - 1);
                wg_fence();
            }
            issue_pv<D, BC>(oacc, pf, v_tile(u - 1));
            wg_commit();
            tr(TR_WAIT_S, n, t);
            wg_wait<1>();  // S_t is done; P V may still run
            tr(TR_SOFTMAX, n, t);
            release(K_EMPTY, u);
            if (t == cur.ntiles - 1) release_q(n);
            wg_exp<BC, FA_LAZY, MASK, RED>(s, p, j0, cur.iw, row_a, tg, m, l, alpha);
            asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(smem_addr(sink)), "f"(l[0] + l[1]));
            tr(TR_WAIT_PV, n, t);
            wg_wait<0>();  // P_{t-1} V_{t-1} is done
            tr(TR_RESCALE, n, t);
            release(V_EMPTY, u - 1);
            if constexpr (!LATE_RESCALE) rescale_o(alpha);
            unsigned int unused[BC / 16][4];
            wg_pack<T, BC, false>(s, pf, unused);
        }
        const int kv_next = kv + cur.ntiles, u = kv_next - 1;
        // ... the item boundary: this item's end and the next item's start (listed on its own).
        // ANCHOR_END: ws_consumer
        // ANCHOR: ws_next_item
        Item nx = {0, 0, -1, 0, false};
        if (LATE_S && cur.ntiles > 0) {
            // This item's last P V issued first and the next item read under it; then, if the next
            // item has keys, its first S issued and this item's O stored while that S runs (its
            // exponentials have nothing under them). Every path waits for the products before it
            // leaves this block: a product in flight where paths join would be serialised.
            if constexpr (LATE_RESCALE) rescale_o(alpha);
            tr(TR_WAIT_V, n, cur.ntiles);
            wait_full(V_FULL, u);
            tr(TR_ISSUE, n, cur.ntiles);
            wg_fence();
            issue_pv<D, BC>(oacc, pf, v_tile(u));
            wg_commit();
            nx = item_at(n + 1);  // its Q was asked for early in this item
            if (nx.ntiles > 0) {
                tr(TR_WAIT_K, n + 1, 0);
                wait_full(K_FULL, kv_next);
                float s[BC / 2];
                tr(TR_ISSUE, n + 1, 0);
                wg_fence();
                issue_qk<D, BR, BC>(s, q_tile(n + 1), k_tile(kv_next));
                wg_commit();
                tr(TR_WAIT_PV, n, cur.ntiles);
                wg_wait<1>();  // this item's last P V is done; the next item's S may still run
                tr(TR_STORE, n, cur.ntiles);
                release(V_EMPTY, u);
                store_o(cur.bh, cur.iw, row_a);
                tr(TR_WAIT_S, n + 1, 0);
                wg_wait<0>();
                tr(TR_SOFTMAX, n + 1, 0);
                release(K_EMPTY, kv_next);
                if (nx.ntiles == 1) release_q(n + 1);
                reset();  // not before the wait: S would be serialised
                unsigned int pl[BC / 16][4];
                // The rounding residual only where it is used (changelog entry u): its conversions
                // are a visible share of the boundary's instructions.
                if (nx.short_rows) {
                    wg_softmax<T, BC, true, MASK, RED>(s, p, nx.t_begin * BC, nx.iw, row_of(nx), tg, m, l, alpha, pf, pl);
                    tr(TR_RESCALE, n + 1, 0);
                    correct_first(pl, n + 1, kv_next);
                    tr(TR_RESCALE, n + 1, 0);
                } else {
                    wg_softmax<T, BC, false, MASK, RED>(s, p, nx.t_begin * BC, nx.iw, row_of(nx), tg, m, l, alpha, pf, pl);
                    tr(TR_RESCALE, n + 1, 0);
                }
                no_rescale();
            } else {
                tr(TR_WAIT_PV, n, cur.ntiles);
                wg_wait<0>();
                release(V_EMPTY, u);
                tr(TR_STORE, n, cur.ntiles);
                store_o(cur.bh, cur.iw, row_a);
                if (nx.ntiles == 0) first_tile(nx, n + 1, kv_next);
            }
        } else {  // one Q tile, or this item has no keys
            if constexpr (QB == 2) nx = item_at(n + 1);  // its Q was asked for early in this item
            if (cur.ntiles > 0) {  // the last tile's P V on its own
                if constexpr (LATE_RESCALE) rescale_o(alpha);
                tr(TR_WAIT_V, n, cur.ntiles);
                wait_full(V_FULL, u);
                tr(TR_ISSUE, n, cur.ntiles);
                wg_fence();
                issue_pv<D, BC>(oacc, pf, v_tile(u));
                wg_commit();
                tr(TR_WAIT_PV, n, cur.ntiles);
                wg_wait<0>();
                release(V_EMPTY, u);
            }
            tr(TR_STORE, n, cur.ntiles);
            store_o(cur.bh, cur.iw, row_a);
            if constexpr (QB == 1) nx = item_at(n + 1);
            if (nx.ntiles >= 0) first_tile(nx, n + 1, kv_next);
        }
        // ANCHOR_END: ws_next_item
        // ANCHOR: ws_consumer_end
        kv = kv_next;
        ++n;
        cur = nx;
    }
    tr(TR_DONE, n, 0);
    if (OSTAGE && tid % 128 == 0) bulk_wait_read();  // shared memory stays until the copy engine has read it
    // ANCHOR_END: ws_consumer_end
}

// Tensor maps are kernel parameters (__grid_constant__: the copy instruction takes their address).
// The trace build takes the trace buffer as one more parameter.
#if FA_TRACE
#define TRACE_PARAM , unsigned long long* trace
#define TRACE_ARG trace
#else
#define TRACE_PARAM
#define TRACE_ARG nullptr
#endif
#define WS(DD, S, C, OT, MK, SUFFIX)                                                                    \
    extern "C" __global__ void __launch_bounds__(128 * (C + 1), 1)                                      \
        flash_v8_##DD##_s##S##_c##C##SUFFIX(const __grid_constant__ TensorMap tq,                       \
                                    const __grid_constant__ TensorMap tk,                               \
                                    const __grid_constant__ TensorMap tv,                               \
                                    const __grid_constant__ TensorMap to, elem_t* o, float* lse,        \
                                    Params p, unsigned* sched TRACE_PARAM) {                            \
        flash_ws<elem_t, DD, S, C, OT, MK>(&tq, &tk, &tv, &to, o, lse, p, sched, TRACE_ARG);            \
    }
WS(64, 2, 2, false, MASK_ANY, )
WS(64, 4, 2, false, MASK_ANY, )
WS(64, 2, 3, false, MASK_ANY, )
WS(64, 4, 3, false, MASK_ANY, )
WS(128, 2, 2, false, MASK_ANY, )
WS(128, 3, 2, false, MASK_ANY, )
WS(128, 2, 2, true, MASK_ANY, _o)
WS(64, 2, 2, true, MASK_ANY, _o)
WS(64, 4, 2, true, MASK_ANY, _o)
WS(64, 2, 3, true, MASK_ANY, _o)
WS(64, 4, 3, true, MASK_ANY, _o)
// The default configurations again, each for the one mask class it is picked for (`v8_kernel` on the
// host): `_u` no mask and whole key tiles, `_c` causal without a window.
WS(128, 2, 2, false, MASK_NONE, _u)
WS(128, 2, 2, true, MASK_NONE, _o_u)
WS(64, 4, 3, true, MASK_NONE, _o_u)
WS(128, 2, 2, false, MASK_CAUSAL, _c)
WS(128, 2, 2, true, MASK_CAUSAL, _o_c)
WS(64, 4, 3, false, MASK_CAUSAL, _c)
WS(64, 4, 2, true, MASK_CAUSAL, _o_c)
#endif  // FA_VERSION == 8
#endif  // FA_VERSION >= 6
#endif  // FA_VERSION >= 4
