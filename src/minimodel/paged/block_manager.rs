//! vLLM's classic block manager, re-told in Rust: physical KV blocks on two devices, one block table per
//! sequence, reference counts, copy on write, fork, swap, sliding-window reuse and prefix caching.
//!
//! The semantics follow vLLM's V0 manager (`vllm-project/vllm`: `vllm/core/block_manager.py` at v0.1.0,
//! commit `67d96c29`, grown into `vllm/core/block_manager_v1.py` at v0.6.3, commit `fd47e57f`), with these
//! invariants kept after every call and checked by [`BlockManager::check_invariants`]:
//!
//! 1. conservation: on each device `free + |{b : ref(b) > 0}| = total`, where free counts the free list and
//!    the evictable cached blocks, which are disjoint;
//! 2. `ref(b)` is the number of sequences whose table holds `b` (a table holds each block at most once);
//! 3. a block is free (on the free list or evictable) iff `ref(b) = 0`; freeing it again is [`BlockError::DoubleFree`];
//! 4. a table has `ceil(tokens / B)` logical blocks (capped at the window's blocks, see below);
//! 5. a token is written only into a block with `ref = 1`: appending to a shared last block first copies it
//!    and returns the `(src, dst)` pair that must be copied *before* the token is written;
//! 6. `fork` allocates nothing; 7. the watermark rule of [`BlockManager::can_allocate`];
//! 8. swaps are a bijection on the distinct blocks of the swapped sequences, so shared blocks stay shared;
//! 9. `free` of an unknown sequence does nothing; 10-11. prefix caching, below.
//!
//! Every public call either succeeds or returns a [`BlockError`] having changed nothing: each one first
//! works out everything it will need (blocks, the watermark), and mutates only when that plan is sure to
//! succeed. The tests compare whole snapshots (`BlockManager: Clone + Eq`) around every refused call.
//!
//! **Addresses.** Block ids are device-local: GPU blocks `0..G`, CPU blocks `0..C`. Token `t` of a sequence
//! lives in slot `table[t / B] * B + t % B` of its device's pool (`vllm/worker/worker.py` at v0.1.0).
//!
//! **Placement.** Which free block an allocation takes is vLLM's by default (the free list's top,
//! [`Placement::FreeList`]); [`Placement::AfterLast`] and [`Placement::Chunked`] are this book's
//! experiments, asking for the block after the one before it in the sequence's table, or for whole
//! aligned chunks of blocks per sequence. None changes what is allocated or when, only which block, so
//! every invariant above holds under each (the property tests draw all three).
//!
//! **Sliding window** (vLLM's `block_sliding_window`, v0.6.3 `block_manager_v1.py`): with a window of `W`
//! tokens a sequence keeps at most `Wb = ceil(W / B)` physical blocks, used as a ring: logical block `i`
//! lives in physical block `ring[i % Wb]`, so token `t` overwrites token `t - Wb B`, and the last `Wb B >= W`
//! tokens are always present. Unlike vLLM, a table counts each ring block once for fork and free alike.
//!
//! **Prefix caching** (v0.6.3's `CachedBlockAllocator`, hashes chained as in `prefix_caching_block.py`): a
//! full block's content hash is `H(hash of the previous block, its tokens)`, so it names the whole prefix.
//! A GPU block carries a hash iff the cache map points at it. [`BlockManager::allocate`] reuses the cached
//! blocks of the longest prompt prefix it finds, but never the block holding the prompt's last token (its
//! KV must be recomputed to get the next token's logits). A block that an append has just filled is
//! registered (or, if another block already holds that prefix, swapped for it) at the sequence's next
//! append, once its last token is surely written. A freed block with a hash is not forgotten: it becomes
//! *evictable* and can be revived by a hit until a fresh allocation evicts it, least recently freed
//! first, and among those freed together the one with the most hashed tokens (a chain's tail) first.
//! Prefix caching is GPU-only and cannot be combined with a window (a ring overwrites full blocks), as in
//! vLLM's v1 manager. Hashes are 64-bit; a real cache would also compare the tokens (vLLM V1 keys by both).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use thiserror::Error;

/// A physical block's number, local to its device.
pub type BlockId = usize;
/// A sequence's id.
pub type SeqId = u64;
/// A token id (only prefix caching looks at the values).
pub type Token = u32;

/// Where a block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// The accelerator's memory, where attention reads the cache.
    Gpu,
    /// Host memory, where preempted sequences are swapped to.
    Cpu,
}

/// The answer of [`BlockManager::can_allocate`] (vLLM's `AllocStatus`, `vllm/core/interfaces.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocStatus {
    /// It fits now, leaving the watermark's reserve free.
    Ok,
    /// It would fit an empty device, but not now.
    Later,
    /// It can never fit: the device minus the reserve is too small.
    Never,
}

/// Why a call was refused. A refused call changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    /// The configuration is unusable.
    #[error("invalid block manager configuration: {0}")]
    InvalidConfig(&'static str),
    /// No sequence has this id.
    #[error("unknown sequence {0}")]
    UnknownSequence(SeqId),
    /// A new sequence was given the id of a live one.
    #[error("sequence {0} already has a block table")]
    SequenceExists(SeqId),
    /// A list of sequences named one twice.
    #[error("sequence {0} appears twice in the same call")]
    DuplicateSequence(SeqId),
    /// `allocate` needs at least one sequence.
    #[error("a sequence group needs at least one sequence")]
    EmptyGroup,
    /// `allocate` needs at least one prompt token.
    #[error("a prompt needs at least one token")]
    EmptyPrompt,
    /// Admission refused by the watermark rule (`Later`) or by the device's size (`Never`).
    #[error("cannot allocate {required} blocks: {status:?} ({free} free, watermark {watermark})")]
    CannotAllocate {
        /// What [`BlockManager::can_allocate`] (or `can_swap_in`) said.
        status: AllocStatus,
        /// Blocks the call needs.
        required: usize,
        /// Blocks free on the GPU.
        free: usize,
        /// The reserve that admission keeps free.
        watermark: usize,
    },
    /// Not enough free blocks for the call (appends and swaps ignore the watermark: it exists for them).
    #[error("out of {device:?} blocks: {needed} needed, {free} free")]
    OutOfBlocks {
        /// The device that ran out.
        device: Device,
        /// Blocks the call needs.
        needed: usize,
        /// Blocks free.
        free: usize,
    },
    /// The sequence's blocks are on the other device.
    #[error("sequence {seq} is on the {found:?}, the call needs it on the {expected:?}")]
    WrongDevice {
        /// The sequence.
        seq: SeqId,
        /// Where the call needs it.
        expected: Device,
        /// Where it is.
        found: Device,
    },
    /// Freeing a block whose reference count is already zero (vLLM's "Double free!").
    #[error("double free of {device:?} block {block}")]
    DoubleFree {
        /// The device.
        device: Device,
        /// The block.
        block: BlockId,
    },
    /// Sharing a block that is not allocated.
    #[error("{device:?} block {block} is free and cannot gain a reference")]
    NotAllocated {
        /// The device.
        device: Device,
        /// The block.
        block: BlockId,
    },
    /// A block id past the end of the pool.
    #[error("{device:?} block {block} is out of range (the pool has {num_blocks})")]
    BlockOutOfRange {
        /// The device.
        device: Device,
        /// The block.
        block: BlockId,
        /// The pool's size.
        num_blocks: usize,
    },
    /// A token position the sequence does not have.
    #[error("sequence {seq} has {num_tokens} tokens; position {pos} does not exist")]
    PositionOutOfRange {
        /// The sequence.
        seq: SeqId,
        /// The position asked for.
        pos: usize,
        /// The sequence's length.
        num_tokens: usize,
    },
}

/// The physical blocks of one device: reference counts, a free list, and (GPU, prefix caching) the
/// content-hash map with its evictor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPool {
    device: Device,
    ref_counts: Vec<u32>,
    /// Blocks with `ref = 0` and no hash. A stack, as vLLM v0.1.0's list (`pop` / `append`); it starts
    /// so that block 0 is handed out first.
    free_list: Vec<BlockId>,
    /// Where each block sits on `free_list` (`usize::MAX` when it is not there): lets
    /// [`Placement::AfterLast`] take a given free block in constant time.
    free_at: Vec<usize>,
    /// [`Placement::Chunked`]: blocks per aligned chunk (0: chunks not tracked).
    chunk: usize,
    /// Free-listed blocks of each chunk (empty when chunks are not tracked).
    free_in_chunk: Vec<usize>,
    /// The chunks all of whose blocks are on the free list.
    whole_chunks: BTreeSet<usize>,
    /// The content hash a block is registered under (`cached[h] == b` iff `hash_of[b] == Some(h)`).
    hash_of: Vec<Option<u64>>,
    /// Tokens covered by a registered block's hash: `(i + 1) B` for logical block `i`.
    hashed_tokens: Vec<usize>,
    cached: HashMap<u64, BlockId>,
    /// Registered blocks with `ref = 0`, in eviction order: least recently freed first; among blocks freed
    /// in the same call, the most hashed tokens (a chain's tail) first; then the block id.
    evictor: BTreeSet<(u64, Reverse<usize>, BlockId)>,
    freed_at: Vec<u64>,
    /// A logical clock, advanced once per manager call, so blocks freed together tie.
    clock: u64,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks.
    pub fn new(device: Device, num_blocks: usize) -> Self {
        Self::with_chunks(device, num_blocks, 0)
    }

    /// A pool of `num_blocks` free blocks that also counts the free blocks of each aligned chunk of
    /// `chunk` blocks ([`Placement::Chunked`]; 0 counts nothing).
    pub fn with_chunks(device: Device, num_blocks: usize, chunk: usize) -> Self {
        let chunks = if chunk == 0 {
            0
        } else {
            num_blocks.div_ceil(chunk)
        };
        Self {
            device,
            ref_counts: vec![0; num_blocks],
            free_list: (0..num_blocks).rev().collect(),
            free_at: (0..num_blocks).map(|b| num_blocks - 1 - b).collect(),
            chunk,
            free_in_chunk: (0..chunks)
                .map(|c| chunk.min(num_blocks - c * chunk))
                .collect(),
            whole_chunks: (0..chunks).collect(),
            hash_of: vec![None; num_blocks],
            hashed_tokens: vec![0; num_blocks],
            cached: HashMap::new(),
            evictor: BTreeSet::new(),
            freed_at: vec![0; num_blocks],
            clock: 0,
        }
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks an allocation can take: never used or released, plus evictable cached ones.
    pub fn num_free(&self) -> usize {
        self.free_list.len() + self.evictor.len()
    }

    /// Cached blocks with no owner, which a hit can revive until an allocation evicts them.
    pub fn num_evictable(&self) -> usize {
        self.evictor.len()
    }

    /// A block's reference count.
    pub fn ref_count(&self, block: BlockId) -> Result<u32, BlockError> {
        self.check_range(block)?;
        Ok(self.ref_counts[block])
    }

    /// The content hash a block is registered under, if any.
    pub fn hash_of(&self, block: BlockId) -> Result<Option<u64>, BlockError> {
        self.check_range(block)?;
        Ok(self.hash_of[block])
    }

    /// The block registered under a content hash, if any (owned or evictable).
    pub fn lookup(&self, hash: u64) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    fn check_range(&self, block: BlockId) -> Result<(), BlockError> {
        if block >= self.num_blocks() {
            return Err(BlockError::BlockOutOfRange {
                device: self.device,
                block,
                num_blocks: self.num_blocks(),
            });
        }
        Ok(())
    }

    /// Take a block with `ref = 1`: from the free list, else by evicting the first evictable block
    /// (which forgets its hash). vLLM's `BlockAllocator.allocate`.
    pub fn allocate(&mut self) -> Result<BlockId, BlockError> {
        let block = match self.free_list.pop() {
            Some(b) => {
                self.free_at[b] = usize::MAX;
                self.left_list(b);
                b
            }
            None => {
                let Some(&first) = self.evictor.first() else {
                    return Err(BlockError::OutOfBlocks {
                        device: self.device,
                        needed: 1,
                        free: 0,
                    });
                };
                self.evictor.remove(&first);
                let b = first.2;
                if let Some(h) = self.hash_of[b].take() {
                    self.cached.remove(&h);
                }
                b
            }
        };
        self.ref_counts[block] = 1;
        Ok(block)
    }

    /// [`BlockPool::allocate`], except that `want`, if it is on the free list, is the block taken (the
    /// free list's top moves into its place): [`Placement::AfterLast`]'s allocation.
    fn allocate_preferring(&mut self, want: Option<BlockId>) -> Result<BlockId, BlockError> {
        let on_list = want.filter(|&b| self.free_at.get(b).is_some_and(|&i| i != usize::MAX));
        let Some(b) = on_list else {
            return self.allocate();
        };
        let i = self.free_at[b];
        self.free_list.swap_remove(i);
        if let Some(&moved) = self.free_list.get(i) {
            self.free_at[moved] = i;
        }
        self.free_at[b] = usize::MAX;
        self.left_list(b);
        self.ref_counts[b] = 1;
        Ok(b)
    }

    /// Chunk bookkeeping: `b` has left the free list.
    fn left_list(&mut self, b: BlockId) {
        if let Some(c) = b.checked_div(self.chunk) {
            self.whole_chunks.remove(&c);
            self.free_in_chunk[c] -= 1;
        }
    }

    /// Chunk bookkeeping: `b` has joined the free list.
    fn joined_list(&mut self, b: BlockId) {
        if let Some(c) = b.checked_div(self.chunk) {
            self.free_in_chunk[c] += 1;
            if self.free_in_chunk[c] == self.chunk_len(c) {
                self.whole_chunks.insert(c);
            }
        }
    }

    /// Blocks in chunk `c` (the last may be short).
    fn chunk_len(&self, c: usize) -> usize {
        self.chunk.min(self.num_blocks() - c * self.chunk)
    }

    // ANCHOR: wanted
    /// The block `placement` asks for after `prev` (the block before it in the sequence's table):
    /// none under [`Placement::FreeList`], `prev + 1` under [`Placement::AfterLast`]; under
    /// [`Placement::Chunked`], `prev + 1` while it is free and in `prev`'s chunk, else the first block of
    /// the lowest chunk that is wholly free. [`BlockPool::allocate_preferring`] takes the free list's top
    /// when the block asked for is not free (or none is asked for).
    fn wanted(&self, placement: Placement, prev: Option<BlockId>) -> Option<BlockId> {
        match placement {
            Placement::FreeList => None,
            Placement::AfterLast => prev.map(|b| b + 1),
            Placement::Chunked { .. } if self.chunk == 0 => None, // a pool made without chunks
            Placement::Chunked { .. } => {
                let next = prev.map(|b| b + 1).filter(|&n| {
                    n % self.chunk != 0 && self.free_at.get(n).is_some_and(|&i| i != usize::MAX)
                });
                next.or_else(|| self.whole_chunks.first().map(|&c| c * self.chunk))
            }
        }
    }
    // ANCHOR_END: wanted

    /// One more reference to an allocated block (fork, a shared prompt, a swap mapping).
    pub fn share(&mut self, block: BlockId) -> Result<(), BlockError> {
        self.check_range(block)?;
        if self.ref_counts[block] == 0 {
            return Err(BlockError::NotAllocated {
                device: self.device,
                block,
            });
        }
        self.ref_counts[block] += 1;
        Ok(())
    }

    /// Drop one reference. At zero the block becomes free: evictable if it carries a hash (its contents
    /// stay findable), else back on the free list. vLLM's `BlockAllocator.free`.
    pub fn free(&mut self, block: BlockId) -> Result<(), BlockError> {
        self.check_range(block)?;
        if self.ref_counts[block] == 0 {
            return Err(BlockError::DoubleFree {
                device: self.device,
                block,
            });
        }
        self.ref_counts[block] -= 1;
        if self.ref_counts[block] == 0 {
            if self.hash_of[block].is_some() {
                self.freed_at[block] = self.clock;
                self.evictor
                    .insert((self.clock, Reverse(self.hashed_tokens[block]), block));
            } else {
                self.free_at[block] = self.free_list.len();
                self.free_list.push(block);
                self.joined_list(block);
            }
        }
        Ok(())
    }

    /// Take one more reference to a registered block found by a hit, reviving it if evictable.
    fn touch(&mut self, block: BlockId) {
        if self.ref_counts[block] == 0 {
            let key = (
                self.freed_at[block],
                Reverse(self.hashed_tokens[block]),
                block,
            );
            self.evictor.remove(&key);
        }
        self.ref_counts[block] += 1;
    }

    /// Register an owned, full block under its content hash.
    fn register(&mut self, block: BlockId, hash: u64, hashed_tokens: usize) {
        debug_assert!(self.ref_counts[block] > 0 && !self.cached.contains_key(&hash));
        self.hash_of[block] = Some(hash);
        self.hashed_tokens[block] = hashed_tokens;
        self.cached.insert(hash, block);
    }

    /// The pool's own invariants (1, 3 and the hash map's bijection); `refs` are the counts the tables imply.
    fn check(&self, refs: &[u32]) -> Result<(), String> {
        let d = self.device;
        let mut seen = vec![false; self.num_blocks()];
        for (i, &b) in self.free_list.iter().enumerate() {
            if b >= seen.len() || seen[b] {
                return Err(format!("{d:?} free list holds {b} twice or out of range"));
            }
            if self.free_at[b] != i {
                return Err(format!(
                    "{d:?} free block {b} is at {i}, its index says otherwise"
                ));
            }
            seen[b] = true;
            if self.ref_counts[b] != 0 || self.hash_of[b].is_some() {
                return Err(format!(
                    "{d:?} block {b} is on the free list with a ref or hash"
                ));
            }
        }
        for &(t, Reverse(n), b) in &self.evictor {
            if seen[b] {
                return Err(format!("{d:?} block {b} is both free-listed and evictable"));
            }
            seen[b] = true;
            if self.ref_counts[b] != 0 || self.hash_of[b].is_none() {
                return Err(format!("{d:?} evictable block {b} has a ref or no hash"));
            }
            if t != self.freed_at[b] || n != self.hashed_tokens[b] {
                return Err(format!("{d:?} evictor key of {b} is stale"));
            }
        }
        for (b, (&r, &want)) in self.ref_counts.iter().zip(refs).enumerate() {
            if r != want {
                return Err(format!(
                    "{d:?} block {b} has ref {r}, its tables hold it {want} times"
                ));
            }
            if (r == 0) != seen[b] {
                return Err(format!("{d:?} block {b}: ref {r} but free = {}", seen[b]));
            }
        }
        for (&h, &b) in &self.cached {
            if self.hash_of.get(b) != Some(&Some(h)) {
                return Err(format!("{d:?} cache maps a hash to {b}, which has another"));
            }
        }
        let indexed = self.free_at.iter().filter(|&&i| i != usize::MAX).count();
        if indexed != self.free_list.len() {
            return Err(format!(
                "{d:?}: {indexed} blocks indexed as free-listed, {} on the list",
                self.free_list.len()
            ));
        }
        if self.chunk > 0 {
            for (c, &n) in self.free_in_chunk.iter().enumerate() {
                let listed = (c * self.chunk..c * self.chunk + self.chunk_len(c))
                    .filter(|&b| self.free_at[b] != usize::MAX)
                    .count();
                if listed != n || (n == self.chunk_len(c)) != self.whole_chunks.contains(&c) {
                    return Err(format!(
                        "{d:?} chunk {c}: {listed} blocks free-listed, counted {n}"
                    ));
                }
            }
        }
        let registered = self.hash_of.iter().filter(|h| h.is_some()).count();
        if registered != self.cached.len() {
            return Err(format!(
                "{d:?}: {registered} hashed blocks, {} cache entries",
                self.cached.len()
            ));
        }
        Ok(())
    }
}

/// The manager's settings. [`ManagerConfig::new`] gives vLLM's defaults (watermark 0.01, no window, no caching).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ManagerConfig {
    /// Tokens per block `B` (vLLM's default is 16).
    pub block_size: usize,
    /// Blocks in the GPU pool.
    pub num_gpu_blocks: usize,
    /// Blocks in the CPU (swap) pool.
    pub num_cpu_blocks: usize,
    /// The fraction of GPU blocks admission keeps free: `W = floor(watermark * num_gpu_blocks)`.
    pub watermark: f64,
    /// A sliding window of this many tokens: a sequence keeps at most `ceil(W / B)` blocks.
    pub sliding_window: Option<usize>,
    /// Share full blocks between sequences with the same prefix.
    pub prefix_caching: bool,
    /// Which free block a sequence's new block is.
    pub placement: Placement,
}

/// Which free block an allocation takes. Not a vLLM setting: vLLM always takes the free list's
/// ([`Placement::FreeList`]); the other is this book's experiment on what keeping a sequence's blocks
/// together is worth to the attention kernels that read them (Lab 03).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The top of the free list (the block freed last), as vLLM.
    #[default]
    FreeList,
    /// The block right after the one before it in the sequence's table, when that block is on the free
    /// list; else the top of the free list. A prompt's first block, and any block whose neighbour is
    /// taken, still come from the free list, so nothing is reserved and no memory is lost.
    AfterLast,
    /// The pool cut into aligned chunks of `blocks` blocks: a sequence's next block is the next one of
    /// its last block's chunk while that one is free; a sequence that needs a new chunk (its first block,
    /// or its chunk used up) starts the lowest chunk that is wholly free, so other sequences leave the
    /// rest of a started chunk alone while the pool has whole chunks. Only when none is left does an
    /// allocation take the free list's top, wherever it lies. Nothing is reserved: every free block stays
    /// allocatable, and admission counts it as free.
    Chunked {
        /// Blocks per chunk (at least 1).
        blocks: usize,
    },
}

impl ManagerConfig {
    /// vLLM's defaults for the given sizes.
    pub fn new(block_size: usize, num_gpu_blocks: usize, num_cpu_blocks: usize) -> Self {
        Self {
            block_size,
            num_gpu_blocks,
            num_cpu_blocks,
            watermark: 0.01,
            sliding_window: None,
            prefix_caching: false,
            placement: Placement::FreeList,
        }
    }
}

/// One sequence's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeqState {
    device: Device,
    /// Physical blocks, distinct. Logical block `i` lives in `ring[i % ring.len()]` once the ring is full
    /// (with no window the ring never wraps: `ring[i]`).
    ring: Vec<BlockId>,
    num_tokens: usize,
    /// Chained content hash of each full logical block (prefix caching only).
    hashes: Vec<u64>,
    /// Tokens of the partial last block (prefix caching only).
    tail: Vec<Token>,
}

/// What [`BlockManager::allocate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Allocation {
    /// Leading prompt tokens whose KV is already in cached blocks: the prefill writes only
    /// positions `computed_tokens..` (a multiple of `B`, always less than the prompt's length).
    pub computed_tokens: usize,
}

/// What [`BlockManager::append_slot`] did: copy `copy` first (if any), then write the token at `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the copy must run before the token is written"]
pub struct Appended {
    /// Copy on write: the block `(src, dst)` to copy before writing.
    pub copy: Option<(BlockId, BlockId)>,
    /// The GPU slot (`block * B + offset`) where the new token's K and V go.
    pub slot: usize,
}

/// vLLM's block space manager. See the module documentation for the semantics.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockManager {
    cfg: ManagerConfig,
    watermark_blocks: usize,
    /// Blocks a sequence keeps under the sliding window.
    window_blocks: Option<usize>,
    gpu: BlockPool,
    cpu: BlockPool,
    seqs: BTreeMap<SeqId, SeqState>,
}

/// The plan of one append, worked out before anything changes.
struct AppendPlan {
    /// Prefix caching: the full block to register or swap for the cached copy.
    promote: Option<Promotion>,
    /// Ring index the token goes to; `None` pushes a fresh block.
    target: Option<usize>,
    /// The target block is shared and must be copied first.
    cow: bool,
}

enum Promotion {
    /// Register ring entry `idx` under `hash`, covering `tokens` tokens.
    Register {
        idx: usize,
        hash: u64,
        tokens: usize,
    },
    /// Replace ring entry `idx` by the cached block `with` holding the same prefix.
    Adopt { idx: usize, with: BlockId },
}

/// The chained content hash of a full block: a function of the previous block's hash and this block's
/// tokens, hence of the whole prefix (FNV-1a over the tokens, seeded by the parent, SplitMix-finalised).
pub fn chain_hash(prev: Option<u64>, tokens: &[Token]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ prev.map_or(0x5bd1_e995, |p| p.rotate_left(29));
    for &t in tokens {
        h = (h ^ t as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

// ANCHOR: alloc_status
/// The admission rule (vLLM v0.6.3 `can_allocate`): `Never` iff `total - required < watermark`, `Ok` iff
/// `free - required >= watermark`, else `Later`.
pub fn alloc_status(total: usize, free: usize, required: usize, watermark: usize) -> AllocStatus {
    let need = required.saturating_add(watermark); // a request past usize is simply Never
    if total < need {
        AllocStatus::Never // even an empty device would dip into the reserve
    } else if free >= need {
        AllocStatus::Ok
    } else {
        AllocStatus::Later // fits once running sequences finish
    }
}
// ANCHOR_END: alloc_status

impl BlockManager {
    /// A manager with every block free.
    pub fn new(cfg: ManagerConfig) -> Result<Self, BlockError> {
        if cfg.block_size == 0 {
            return Err(BlockError::InvalidConfig("block_size must be at least 1"));
        }
        if !(cfg.watermark.is_finite() && (0.0..1.0).contains(&cfg.watermark)) {
            return Err(BlockError::InvalidConfig("watermark must be in [0, 1)"));
        }
        if cfg.sliding_window == Some(0) {
            return Err(BlockError::InvalidConfig(
                "a sliding window holds at least one token",
            ));
        }
        if cfg.sliding_window.is_some_and(|w| {
            w.div_ceil(cfg.block_size)
                .checked_mul(cfg.block_size)
                .is_none()
        }) {
            return Err(BlockError::InvalidConfig(
                "a sliding window of more tokens than its blocks can count (use no window)",
            ));
        }
        if cfg.sliding_window.is_some() && cfg.prefix_caching {
            // A ring overwrites full blocks, which a cache assumes immutable (vLLM refuses this too).
            return Err(BlockError::InvalidConfig(
                "prefix caching cannot be combined with a sliding window",
            ));
        }
        let chunk = match cfg.placement {
            Placement::Chunked { blocks: 0 } => {
                return Err(BlockError::InvalidConfig(
                    "a chunked placement of zero blocks",
                ));
            }
            Placement::Chunked { blocks } => blocks,
            _ => 0,
        };
        Ok(Self {
            cfg,
            // int(0.01 * total) in vLLM: truncation, so small pools keep no reserve.
            watermark_blocks: (cfg.watermark * cfg.num_gpu_blocks as f64) as usize,
            window_blocks: cfg.sliding_window.map(|w| w.div_ceil(cfg.block_size)),
            gpu: BlockPool::with_chunks(Device::Gpu, cfg.num_gpu_blocks, chunk),
            cpu: BlockPool::with_chunks(Device::Cpu, cfg.num_cpu_blocks, chunk),
            seqs: BTreeMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// The GPU blocks admission keeps free.
    pub fn watermark_blocks(&self) -> usize {
        self.watermark_blocks
    }

    /// Blocks a sequence keeps under the sliding window, if there is one.
    pub fn window_blocks(&self) -> Option<usize> {
        self.window_blocks
    }

    /// A device's pool.
    pub fn pool(&self, device: Device) -> &BlockPool {
        match device {
            Device::Gpu => &self.gpu,
            Device::Cpu => &self.cpu,
        }
    }

    fn pool_mut(&mut self, device: Device) -> &mut BlockPool {
        match device {
            Device::Gpu => &mut self.gpu,
            Device::Cpu => &mut self.cpu,
        }
    }

    /// Free blocks on a device.
    pub fn num_free_blocks(&self, device: Device) -> usize {
        self.pool(device).num_free()
    }

    /// The live sequences, in id order.
    pub fn sequences(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.keys().copied()
    }

    fn seq(&self, id: SeqId) -> Result<&SeqState, BlockError> {
        self.seqs.get(&id).ok_or(BlockError::UnknownSequence(id))
    }

    /// Where a sequence's blocks are.
    pub fn device_of(&self, seq: SeqId) -> Result<Device, BlockError> {
        Ok(self.seq(seq)?.device)
    }

    /// A sequence's length in tokens.
    pub fn num_tokens(&self, seq: SeqId) -> Result<usize, BlockError> {
        Ok(self.seq(seq)?.num_tokens)
    }

    /// The distinct physical blocks a sequence holds (its ring, in ring order).
    pub fn held_blocks(&self, seq: SeqId) -> Result<&[BlockId], BlockError> {
        Ok(&self.seq(seq)?.ring)
    }

    /// The block table a kernel reads: the physical block of each logical block, in logical order,
    /// `ceil(tokens / B)` entries (vLLM's `get_block_table`). Under a window, entries before the last
    /// `Wb` name ring blocks that now hold later tokens.
    pub fn block_table(&self, seq: SeqId) -> Result<Vec<BlockId>, BlockError> {
        let s = self.seq(seq)?;
        let n = s.num_tokens.div_ceil(self.cfg.block_size);
        Ok((0..n).map(|i| s.ring[i % s.ring.len()]).collect())
    }

    /// The slot of token `pos`: `table[pos / B] * B + pos % B` on the sequence's device.
    pub fn slot(&self, seq: SeqId, pos: usize) -> Result<usize, BlockError> {
        let s = self.seq(seq)?;
        if pos >= s.num_tokens {
            return Err(BlockError::PositionOutOfRange {
                seq,
                pos,
                num_tokens: s.num_tokens,
            });
        }
        let bs = self.cfg.block_size;
        Ok(s.ring[(pos / bs) % s.ring.len()] * bs + pos % bs)
    }

    /// The earliest position whose K and V are still stored: `tokens - Wb B` under a window, else 0.
    pub fn first_stored_position(&self, seq: SeqId) -> Result<usize, BlockError> {
        let s = self.seq(seq)?;
        Ok(match self.window_blocks {
            Some(wb) => s.num_tokens.saturating_sub(wb * self.cfg.block_size),
            None => 0,
        })
    }

    /// Blocks a prompt of `prompt_len` tokens needs: `ceil(len / B)`, capped at the window's blocks.
    pub fn blocks_for_prompt(&self, prompt_len: usize) -> usize {
        let n = prompt_len.div_ceil(self.cfg.block_size);
        self.window_blocks.map_or(n, |w| n.min(w))
    }

    // ANCHOR: can_allocate
    /// Can a prompt of `prompt_len` tokens be admitted? `Ok` if its blocks leave the watermark's reserve
    /// free, `Later` if it would fit when other sequences finish, `Never` if the GPU is too small. Prefix
    /// hits are not counted against the need (as in vLLM): admission stays conservative.
    pub fn can_allocate(&self, prompt_len: usize) -> AllocStatus {
        alloc_status(
            self.gpu.num_blocks(),
            self.gpu.num_free(),
            self.blocks_for_prompt(prompt_len),
            self.watermark_blocks,
        )
    }
    // ANCHOR_END: can_allocate

    fn prompt_hashes(&self, prompt: &[Token]) -> Vec<u64> {
        if !self.cfg.prefix_caching {
            return Vec::new();
        }
        let mut prev = None;
        prompt
            .chunks_exact(self.cfg.block_size)
            .map(|c| {
                let h = chain_hash(prev, c);
                prev = Some(h);
                h
            })
            .collect()
    }

    // ANCHOR: allocate
    /// Admit a sequence group: one set of blocks for the prompt, shared by every sequence of the group
    /// (each block's `ref` is the group's size), as vLLM's `allocate`. Refused unless
    /// [`BlockManager::can_allocate`] says `Ok`. With prefix caching, the longest cached prefix of full
    /// blocks is reused (never the block holding the last prompt token) and the rest is allocated.
    pub fn allocate(
        &mut self,
        group: &[SeqId],
        prompt: &[Token],
    ) -> Result<Allocation, BlockError> {
        // Plan: validate everything before touching any state.
        if group.is_empty() {
            return Err(BlockError::EmptyGroup);
        }
        if prompt.is_empty() {
            return Err(BlockError::EmptyPrompt);
        }
        for (i, &id) in group.iter().enumerate() {
            if self.seqs.contains_key(&id) {
                return Err(BlockError::SequenceExists(id));
            }
            if group[..i].contains(&id) {
                return Err(BlockError::DuplicateSequence(id));
            }
        }
        let required = self.blocks_for_prompt(prompt.len());
        let status = self.can_allocate(prompt.len());
        if status != AllocStatus::Ok {
            return Err(BlockError::CannotAllocate {
                status,
                required,
                free: self.gpu.num_free(),
                watermark: self.watermark_blocks,
            });
        }
        let bs = self.cfg.block_size;
        let hashes = self.prompt_hashes(prompt);
        // Hits: a contiguous prefix of cached full blocks, stopping before the block of the last token.
        let max_hits = hashes.len().min((prompt.len() - 1) / bs);
        let hits: Vec<BlockId> = hashes[..max_hits]
            .iter()
            .map_while(|&h| self.gpu.lookup(h))
            .collect();

        // Mutate: the plan cannot fail from here on (free >= required + watermark).
        self.gpu.clock += 1;
        let extra = (group.len() - 1) as u32; // every sequence of the group holds the prompt
        let mut ring = Vec::with_capacity(required);
        for &b in &hits {
            self.gpu.touch(b); // revives an evictable block, or shares an owned one
            ring.push(b);
        }
        for i in hits.len()..required {
            let want = self.gpu.wanted(self.cfg.placement, ring.last().copied());
            let b = self
                .gpu
                .allocate_preferring(want)
                .expect("admission checked the free count");
            if let Some(&h) = hashes.get(i) {
                if self.gpu.lookup(h).is_none() {
                    self.gpu.register(b, h, (i + 1) * bs); // the prefill writes it in this step
                }
            }
            ring.push(b);
        }
        for &b in &ring {
            self.gpu.ref_counts[b] += extra;
        }
        let tail = if self.cfg.prefix_caching {
            prompt[hashes.len() * bs..].to_vec()
        } else {
            Vec::new()
        };
        for &id in group {
            self.seqs.insert(
                id,
                SeqState {
                    device: Device::Gpu,
                    ring: ring.clone(),
                    num_tokens: prompt.len(),
                    hashes: hashes.clone(),
                    tail: tail.clone(),
                },
            );
        }
        Ok(Allocation {
            computed_tokens: hits.len() * bs,
        })
    }
    // ANCHOR_END: allocate

    /// Work out an append to `seq` without changing anything.
    fn plan_append(&self, id: SeqId) -> Result<AppendPlan, BlockError> {
        let s = self.seq(id)?;
        if s.device != Device::Gpu {
            return Err(BlockError::WrongDevice {
                seq: id,
                expected: Device::Gpu,
                found: s.device,
            });
        }
        let bs = self.cfg.block_size;
        let pos = s.num_tokens; // the new token's position
        let logical = pos / bs;
        // Prefix caching: the previous block filled up at the last append and is now written.
        let mut promote = None;
        let mut freed_by_promotion = false;
        if self.cfg.prefix_caching && pos % bs == 0 {
            let idx = logical - 1; // pos >= 1 since prompts are non-empty
            let b = s.ring[idx];
            let h = s.hashes[idx];
            if self.gpu.hash_of[b].is_none() {
                match self.gpu.lookup(h) {
                    None => {
                        promote = Some(Promotion::Register {
                            idx,
                            hash: h,
                            tokens: (idx + 1) * bs,
                        })
                    }
                    // Drop our copy for the cached one only if ours is exclusive: then the swap frees
                    // one block and (at worst) revives one, so the free count does not move.
                    Some(c) if self.gpu.ref_counts[b] == 1 => {
                        promote = Some(Promotion::Adopt { idx, with: c });
                        freed_by_promotion = self.gpu.ref_counts[c] > 0;
                    }
                    Some(_) => {}
                }
            }
        }
        let (target, cow) = if pos % bs != 0 {
            let idx = logical % s.ring.len(); // the partial last block
            (Some(idx), self.gpu.ref_counts[s.ring[idx]] > 1)
        } else {
            match self.window_blocks {
                // Ring full: the new logical block reuses the block leaving the window.
                Some(wb) if s.ring.len() == wb => {
                    let idx = logical % wb;
                    (Some(idx), self.gpu.ref_counts[s.ring[idx]] > 1)
                }
                _ => (None, false),
            }
        };
        let needed = usize::from(target.is_none() || cow);
        let free = self.gpu.num_free() + usize::from(freed_by_promotion);
        if needed > free {
            return Err(BlockError::OutOfBlocks {
                device: Device::Gpu,
                needed,
                free: self.gpu.num_free(),
            });
        }
        Ok(AppendPlan {
            promote,
            target,
            cow,
        })
    }

    /// Can `seq` take one more token now? (vLLM asks "one free block per running sequence"; this is
    /// the exact answer for one sequence.)
    pub fn can_append_slot(&self, seq: SeqId) -> Result<bool, BlockError> {
        match self.plan_append(seq) {
            Ok(_) => Ok(true),
            Err(BlockError::OutOfBlocks { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ANCHOR: append_slot
    /// Reserve the slot of one new token of `seq` (on the GPU). A new logical block gets a fresh block
    /// (or, under a window, the ring block leaving the window); a shared target block is first copied
    /// (copy on write): the caller must copy `src -> dst` before writing the token at `slot`.
    pub fn append_slot(&mut self, seq: SeqId, token: Token) -> Result<Appended, BlockError> {
        let plan = self.plan_append(seq)?;
        self.gpu.clock += 1;
        let bs = self.cfg.block_size;
        let placement = self.cfg.placement;
        let gpu = &mut self.gpu;
        let s = self.seqs.get_mut(&seq).expect("planned on a live sequence");
        match plan.promote {
            Some(Promotion::Register { idx, hash, tokens }) => {
                gpu.register(s.ring[idx], hash, tokens)
            }
            Some(Promotion::Adopt { idx, with }) => {
                gpu.touch(with); // same prefix, same K and V: no copy needed
                gpu.free(s.ring[idx]).expect("an owned block");
                s.ring[idx] = with;
            }
            None => {}
        }
        let mut copy = None;
        let idx = match plan.target {
            None => {
                let want = gpu.wanted(placement, s.ring.last().copied());
                s.ring
                    .push(gpu.allocate_preferring(want).expect("planned a free block"));
                s.ring.len() - 1
            }
            Some(idx) => {
                if plan.cow {
                    // Copy on write: ref(src) drops by one but stays >= 1, so src is not reused this step.
                    let src = s.ring[idx];
                    let want = gpu.wanted(placement, idx.checked_sub(1).map(|i| s.ring[i]));
                    let dst = gpu.allocate_preferring(want).expect("planned a free block");
                    gpu.free(src).expect("a shared block");
                    s.ring[idx] = dst;
                    copy = Some((src, dst));
                }
                idx
            }
        };
        let pos = s.num_tokens;
        s.num_tokens += 1;
        if self.cfg.prefix_caching {
            s.tail.push(token);
            if s.tail.len() == bs {
                let h = chain_hash(s.hashes.last().copied(), &s.tail);
                s.hashes.push(h);
                s.tail.clear();
            }
        }
        Ok(Appended {
            copy,
            slot: s.ring[idx] * bs + pos % bs,
        })
    }
    // ANCHOR_END: append_slot

    // ANCHOR: fork
    /// A child sharing every block of its parent: the table is copied and each block gains a reference.
    /// Allocates nothing, so it cannot run out of memory.
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<(), BlockError> {
        let state = self.seq(parent)?.clone();
        if self.seqs.contains_key(&child) {
            return Err(BlockError::SequenceExists(child));
        }
        self.pool_mut(state.device).clock += 1;
        for &b in &state.ring {
            self.pool_mut(state.device).share(b).expect("a held block");
        }
        self.seqs.insert(child, state);
        Ok(())
    }
    // ANCHOR_END: fork

    // ANCHOR: free
    /// Release a sequence's blocks (each distinct block once). Unknown sequences are ignored, as in vLLM
    /// (already freed, or never scheduled); returns whether there was anything to free.
    pub fn free(&mut self, seq: SeqId) -> bool {
        let Some(s) = self.seqs.remove(&seq) else {
            return false;
        };
        let pool = self.pool_mut(s.device);
        pool.clock += 1;
        for &b in &s.ring {
            pool.free(b).expect("a held block");
        }
        true
    }
    // ANCHOR_END: free

    /// Check that `seqs` are distinct, live and on `device`; return their distinct blocks in first-seen order.
    fn group_blocks(&self, seqs: &[SeqId], device: Device) -> Result<Vec<BlockId>, BlockError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, &id) in seqs.iter().enumerate() {
            let s = self.seq(id)?;
            if seqs[..i].contains(&id) {
                return Err(BlockError::DuplicateSequence(id));
            }
            if s.device != device {
                return Err(BlockError::WrongDevice {
                    seq: id,
                    expected: device,
                    found: s.device,
                });
            }
            out.extend(s.ring.iter().filter(|&&b| seen.insert(b)));
        }
        Ok(out)
    }

    /// Can `seqs` move to the CPU? Their distinct blocks must fit in the free CPU blocks.
    pub fn can_swap_out(&self, seqs: &[SeqId]) -> Result<bool, BlockError> {
        Ok(self.group_blocks(seqs, Device::Gpu)?.len() <= self.cpu.num_free())
    }

    /// Can `seqs` come back to the GPU? They need their distinct blocks plus one per sequence (its next
    /// append), under the watermark rule (vLLM v0.6.3 `can_swap_in`).
    pub fn can_swap_in(&self, seqs: &[SeqId]) -> Result<AllocStatus, BlockError> {
        let required = self.group_blocks(seqs, Device::Cpu)?.len() + seqs.len();
        Ok(alloc_status(
            self.gpu.num_blocks(),
            self.gpu.num_free(),
            required,
            self.watermark_blocks,
        ))
    }

    // ANCHOR: swap
    /// Move the blocks of `seqs` from `from` to `to` through one mapping, so a block shared by several of
    /// them is copied once and stays shared. Returns the `(src, dst)` copies, in first-seen order.
    fn swap(&mut self, seqs: &[SeqId], from: Device, to: Device) -> Vec<(BlockId, BlockId)> {
        let mut mapping: BTreeMap<BlockId, BlockId> = BTreeMap::new();
        let mut pairs = Vec::new();
        self.gpu.clock += 1;
        self.cpu.clock += 1;
        for &id in seqs {
            let mut s = self.seqs.remove(&id).expect("checked live");
            let mut prev = None;
            for b in s.ring.iter_mut() {
                let dst = match mapping.get(b) {
                    Some(&d) => {
                        self.pool_mut(to).share(d).expect("mapped block");
                        d
                    }
                    None => {
                        let placement = self.cfg.placement;
                        let want = self.pool_mut(to).wanted(placement, prev);
                        let d = self
                            .pool_mut(to)
                            .allocate_preferring(want)
                            .expect("checked free count");
                        mapping.insert(*b, d);
                        pairs.push((*b, d));
                        d
                    }
                };
                self.pool_mut(from).free(*b).expect("a held block");
                *b = dst;
                prev = Some(dst);
            }
            s.device = to;
            self.seqs.insert(id, s);
        }
        pairs
    }
    // ANCHOR_END: swap

    // ANCHOR: swap_out
    /// Preempt `seqs` by moving their blocks to the CPU. Returns the `(gpu, cpu)` block copies to run.
    pub fn swap_out(&mut self, seqs: &[SeqId]) -> Result<Vec<(BlockId, BlockId)>, BlockError> {
        let needed = self.group_blocks(seqs, Device::Gpu)?.len();
        if needed > self.cpu.num_free() {
            return Err(BlockError::OutOfBlocks {
                device: Device::Cpu,
                needed,
                free: self.cpu.num_free(),
            });
        }
        Ok(self.swap(seqs, Device::Gpu, Device::Cpu))
    }
    // ANCHOR_END: swap_out

    // ANCHOR: swap_in
    /// Resume `seqs` by moving their blocks back to the GPU; refused unless [`BlockManager::can_swap_in`]
    /// says `Ok`. Returns the `(cpu, gpu)` block copies to run.
    pub fn swap_in(&mut self, seqs: &[SeqId]) -> Result<Vec<(BlockId, BlockId)>, BlockError> {
        let status = self.can_swap_in(seqs)?;
        if status != AllocStatus::Ok {
            return Err(BlockError::CannotAllocate {
                status,
                required: self.group_blocks(seqs, Device::Cpu)?.len() + seqs.len(),
                free: self.gpu.num_free(),
                watermark: self.watermark_blocks,
            });
        }
        Ok(self.swap(seqs, Device::Cpu, Device::Gpu))
    }
    // ANCHOR_END: swap_in

    /// Check invariants 1-4 and 10 of the module documentation against the state; a description of the
    /// first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let bs = self.cfg.block_size;
        let mut refs = [
            vec![0u32; self.gpu.num_blocks()],
            vec![0u32; self.cpu.num_blocks()],
        ];
        for (&id, s) in &self.seqs {
            let want = self.blocks_for_prompt(s.num_tokens);
            if s.ring.len() != want {
                return Err(format!(
                    "seq {id}: {} blocks for {} tokens, want {want}",
                    s.ring.len(),
                    s.num_tokens
                ));
            }
            let dev = usize::from(s.device == Device::Cpu);
            for (i, &b) in s.ring.iter().enumerate() {
                if s.ring[..i].contains(&b) {
                    return Err(format!("seq {id} holds block {b} twice"));
                }
                match refs[dev].get_mut(b) {
                    Some(r) => *r += 1,
                    None => return Err(format!("seq {id} holds out-of-range block {b}")),
                }
            }
            if self.cfg.prefix_caching && s.hashes.len() != s.num_tokens / bs {
                return Err(format!(
                    "seq {id}: {} hashes for {} tokens",
                    s.hashes.len(),
                    s.num_tokens
                ));
            }
        }
        self.gpu.check(&refs[0])?;
        self.cpu.check(&refs[1])?;
        if !self.cpu.cached.is_empty() {
            return Err("the CPU pool holds cached blocks".into());
        }
        Ok(())
    }
}
