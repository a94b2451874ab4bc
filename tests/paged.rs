//! Lab 03's checks of the block manager: vLLM's own scenarios re-told, then thousands of random operation
//! sequences against a simulated KV store (the read-back oracle: every live sequence, read through its
//! block table, must hold its tokens), with every invariant checked after every operation and every
//! refused call compared bit for bit with the state before it.

use modern_attention::minimodel::paged::block_manager::{
    alloc_status, AllocStatus, BlockError, BlockManager, BlockPool, Device, ManagerConfig,
    Placement, SeqId, Token,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeMap;

fn manager(bs: usize, gpu: usize, cpu: usize) -> BlockManager {
    BlockManager::new(ManagerConfig::new(bs, gpu, cpu)).unwrap()
}

fn prompt(n: usize, salt: u32) -> Vec<Token> {
    (0..n as u32)
        .map(|t| t.wrapping_mul(2654435761) ^ salt)
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// vLLM's scenarios (tests/core/test_block_manager.py and tests/core/block/test_block_table.py @ v0.6.3)
// ---------------------------------------------------------------------------------------------------

#[test]
fn a_33_token_prompt_takes_3_blocks_of_16() {
    let mut m = manager(16, 64, 16);
    assert_eq!(m.blocks_for_prompt(33), 3);
    assert_eq!(m.can_allocate(33), AllocStatus::Ok);
    let a = m.allocate(&[1], &prompt(33, 0)).unwrap();
    assert_eq!(a.computed_tokens, 0);
    assert_eq!(m.block_table(1).unwrap().len(), 3);
    assert_eq!(m.num_free_blocks(Device::Gpu), 61);
    // Token 32 is the first of the third block.
    let t = m.block_table(1).unwrap();
    assert_eq!(m.slot(1, 32).unwrap(), t[2] * 16);
    // 15 more tokens fill block 3 without a new block; the 16th needs one.
    for i in 0..15 {
        let ap = m.append_slot(1, i).unwrap();
        assert_eq!(ap.copy, None);
    }
    assert_eq!(m.num_free_blocks(Device::Gpu), 61);
    let _ = m.append_slot(1, 99).unwrap();
    assert_eq!(m.block_table(1).unwrap().len(), 4);
    assert_eq!(m.num_free_blocks(Device::Gpu), 60);
    m.check_invariants().unwrap();
}

#[test]
fn fork_then_append_copies_the_shared_last_block_once() {
    // The child's append copies the parent's partial last block; the parent then writes in place.
    let mut m = manager(16, 64, 16);
    let _ = m.allocate(&[1], &prompt(33, 0)).unwrap();
    let before = m.num_free_blocks(Device::Gpu);
    m.fork(1, 2).unwrap();
    assert_eq!(
        m.num_free_blocks(Device::Gpu),
        before,
        "fork allocates nothing"
    );
    let parent = m.block_table(1).unwrap();
    assert!(parent
        .iter()
        .all(|&b| m.pool(Device::Gpu).ref_count(b).unwrap() == 2));
    let ap = m.append_slot(2, 7).unwrap();
    let child = m.block_table(2).unwrap();
    assert_eq!(ap.copy, Some((parent[2], child[2])));
    assert_ne!(parent[2], child[2]);
    assert_eq!(child[..2], parent[..2], "the full blocks stay shared");
    assert_eq!(
        m.block_table(1).unwrap(),
        parent,
        "the parent's table is untouched"
    );
    assert_eq!(ap.slot, child[2] * 16 + 1);
    let ap = m.append_slot(1, 8).unwrap();
    assert_eq!(ap.copy, None, "ref(parent's last) is back to 1");
    assert_eq!(m.pool(Device::Gpu).ref_count(parent[2]).unwrap(), 1);
    m.check_invariants().unwrap();
}

#[test]
fn a_group_shares_its_prompt_and_forks_of_full_blocks_need_no_copy() {
    // allocate() gives every sequence of a group the same blocks (ref = group size), as vLLM does.
    let mut m = manager(16, 64, 16);
    let _ = m.allocate(&[1, 2, 3], &prompt(32, 0)).unwrap();
    let t = m.block_table(1).unwrap();
    assert_eq!(t, m.block_table(3).unwrap());
    assert!(t
        .iter()
        .all(|&b| m.pool(Device::Gpu).ref_count(b).unwrap() == 3));
    // The prompt fills its last block: each sequence's next token opens its own block, no copy.
    for s in 1..=3 {
        assert_eq!(m.append_slot(s, 0).unwrap().copy, None);
    }
    assert_eq!(m.num_free_blocks(Device::Gpu), 64 - 2 - 3);
    m.check_invariants().unwrap();
}

#[test]
fn the_watermark_decides_ok_later_never() {
    // 100 blocks: W = int(0.01 * 100) = 1.
    let mut m = manager(16, 100, 0);
    assert_eq!(m.watermark_blocks(), 1);
    assert_eq!(m.can_allocate(99 * 16), AllocStatus::Ok);
    assert_eq!(m.can_allocate(99 * 16 + 1), AllocStatus::Never);
    let _ = m.allocate(&[1], &prompt(50 * 16, 0)).unwrap();
    assert_eq!(m.can_allocate(49 * 16), AllocStatus::Ok);
    assert_eq!(m.can_allocate(50 * 16), AllocStatus::Later);
    let snap = m.clone();
    let err = m.allocate(&[2], &prompt(50 * 16, 0)).unwrap_err();
    assert!(matches!(
        err,
        BlockError::CannotAllocate {
            status: AllocStatus::Later,
            required: 50,
            free: 50,
            watermark: 1
        }
    ));
    assert_eq!(m, snap, "a refused allocate changes nothing");
    // Appends may use the reserve: that is what it is for.
    for t in 0..50 * 16 {
        let _ = m.append_slot(1, t).unwrap();
    }
    assert_eq!(m.num_free_blocks(Device::Gpu), 0);
    let snap = m.clone();
    assert!(!m.can_append_slot(1).unwrap());
    assert!(matches!(
        m.append_slot(1, 0),
        Err(BlockError::OutOfBlocks {
            device: Device::Gpu,
            needed: 1,
            free: 0
        })
    ));
    assert_eq!(m, snap);
    // Small pools truncate the watermark to zero, as int() does.
    assert_eq!(manager(16, 99, 0).watermark_blocks(), 0);
}

#[test]
fn alloc_status_closed_form_is_monotone_in_free() {
    // Never does not depend on `free`, and Later -> Ok is monotone in `free`.
    proptest!(|(total in 0usize..200, req in 0usize..220, w in 0usize..10, free_a in 0usize..200, free_b in 0usize..200)| {
        let (fa, fb) = (free_a.min(total), free_b.min(total));
        let (lo, hi) = (fa.min(fb), fa.max(fb));
        let (s_lo, s_hi) = (alloc_status(total, lo, req, w), alloc_status(total, hi, req, w));
        // vLLM's own signed form (`total - required < watermark`), not the port's rearranged one.
        let (t, r, w_, h) = (total as i64, req as i64, w as i64, hi as i64);
        prop_assert_eq!(s_lo == AllocStatus::Never, t - r < w_);
        prop_assert_eq!(s_lo == AllocStatus::Never, s_hi == AllocStatus::Never);
        if s_lo == AllocStatus::Ok { prop_assert_eq!(s_hi, AllocStatus::Ok); }
        prop_assert_eq!(s_hi == AllocStatus::Ok, t - r >= w_ && h - r >= w_);
    });
}

#[test]
fn the_pool_refuses_a_double_free_and_unknown_frees_are_ignored() {
    let mut p = BlockPool::new(Device::Gpu, 2);
    let b = p.allocate().unwrap();
    assert_eq!(b, 0, "block 0 is handed out first");
    p.free(b).unwrap();
    let snap = p.clone();
    assert_eq!(
        p.free(b),
        Err(BlockError::DoubleFree {
            device: Device::Gpu,
            block: 0
        })
    );
    assert!(matches!(
        p.free(7),
        Err(BlockError::BlockOutOfRange { block: 7, .. })
    ));
    assert_eq!(
        p.share(1),
        Err(BlockError::NotAllocated {
            device: Device::Gpu,
            block: 1
        })
    );
    assert_eq!(p, snap);
    let _ = (p.allocate().unwrap(), p.allocate().unwrap());
    assert!(matches!(p.allocate(), Err(BlockError::OutOfBlocks { .. })));

    let mut m = manager(16, 8, 8);
    let _ = m.allocate(&[1], &prompt(5, 0)).unwrap();
    assert!(m.free(1));
    let snap = m.clone();
    assert!(!m.free(1), "a second free of a sequence is a no-op");
    assert!(!m.free(42));
    assert_eq!(m, snap);
    assert_eq!(m.num_free_blocks(Device::Gpu), 8);
}

#[test]
fn refused_calls_name_their_reason() {
    let mut m = manager(4, 8, 2);
    let _ = m.allocate(&[1], &prompt(6, 0)).unwrap();
    let snap = m.clone();
    let cases: Vec<(BlockError, Result<(), BlockError>)> = vec![
        (
            BlockError::EmptyGroup,
            m.clone().allocate(&[], &[1]).map(|_| ()),
        ),
        (
            BlockError::EmptyPrompt,
            m.clone().allocate(&[2], &[]).map(|_| ()),
        ),
        (
            BlockError::SequenceExists(1),
            m.clone().allocate(&[2, 1], &[1]).map(|_| ()),
        ),
        (
            BlockError::DuplicateSequence(3),
            m.clone().allocate(&[3, 3], &[1]).map(|_| ()),
        ),
        (
            BlockError::UnknownSequence(9),
            m.clone().append_slot(9, 0).map(|_| ()),
        ),
        (BlockError::UnknownSequence(9), m.clone().fork(9, 10)),
        (BlockError::SequenceExists(1), m.clone().fork(1, 1)),
        (
            BlockError::UnknownSequence(9),
            m.clone().swap_out(&[9]).map(|_| ()),
        ),
        (
            BlockError::DuplicateSequence(1),
            m.clone().swap_out(&[1, 1]).map(|_| ()),
        ),
        (
            BlockError::WrongDevice {
                seq: 1,
                expected: Device::Cpu,
                found: Device::Gpu,
            },
            m.clone().swap_in(&[1]).map(|_| ()),
        ),
        (
            BlockError::PositionOutOfRange {
                seq: 1,
                pos: 6,
                num_tokens: 6,
            },
            m.slot(1, 6).map(|_| ()),
        ),
    ];
    for (want, got) in cases {
        assert_eq!(got, Err(want));
    }
    // The CPU holds 2 blocks: the sequence's 2 fit, then it cannot take a token while swapped out.
    let pairs = m.swap_out(&[1]).unwrap();
    assert_eq!(pairs.len(), 2);
    let snap2 = m.clone();
    assert_eq!(
        m.append_slot(1, 0),
        Err(BlockError::WrongDevice {
            seq: 1,
            expected: Device::Gpu,
            found: Device::Cpu
        })
    );
    assert_eq!(m, snap2);
    let _ = m.swap_in(&[1]).unwrap();
    assert_ne!(m, snap, "the blocks moved");
    m.check_invariants().unwrap();
    assert!(matches!(
        BlockManager::new(ManagerConfig {
            sliding_window: Some(8),
            prefix_caching: true,
            ..ManagerConfig::new(4, 8, 0)
        }),
        Err(BlockError::InvalidConfig(_))
    ));
    // A window whose blocks' slots would not fit a usize ("no limit" as usize::MAX) is refused.
    assert!(matches!(
        BlockManager::new(ManagerConfig {
            sliding_window: Some(usize::MAX),
            ..ManagerConfig::new(16, 8, 0)
        }),
        Err(BlockError::InvalidConfig(_))
    ));
    // The admission rule at sizes past usize: never, not a wrapped yes.
    assert_eq!(alloc_status(100, 100, usize::MAX, 1), AllocStatus::Never);
}

#[test]
fn swap_keeps_shared_blocks_shared_and_round_trips() {
    // A family of three sequences sharing a prompt; swap out then in restores free counts and the
    // sharing structure (which logical blocks are the same physical block), up to renaming.
    let mut m = manager(4, 32, 32);
    let _ = m.allocate(&[1, 2], &prompt(10, 0)).unwrap();
    m.fork(1, 3).unwrap();
    for s in [1, 3] {
        let _ = m.append_slot(s, 5).unwrap(); // 1 and 3 now own their last block
    }
    let (gpu0, cpu0) = (
        m.num_free_blocks(Device::Gpu),
        m.num_free_blocks(Device::Cpu),
    );
    let classes = |m: &BlockManager| {
        let mut names = BTreeMap::new();
        let mut out = Vec::new();
        for s in [1u64, 2, 3] {
            for b in m.block_table(s).unwrap() {
                let n = names.len();
                out.push(*names.entry(b).or_insert(n));
            }
        }
        out
    };
    let before = classes(&m);
    let distinct = 3 + 3; // 2 shared full blocks + 3 last blocks (seq 2 still holds the prompt's)
    assert_eq!(m.can_swap_out(&[1, 2, 3]), Ok(true));
    let out = m.swap_out(&[1, 2, 3]).unwrap();
    assert_eq!(out.len(), distinct - 1, "each distinct block copied once");
    assert_eq!(m.num_free_blocks(Device::Gpu), 32);
    assert_eq!(classes(&m), before);
    let back = m.swap_in(&[3, 2, 1]).unwrap();
    assert_eq!(back.len(), out.len());
    assert_eq!(
        (
            m.num_free_blocks(Device::Gpu),
            m.num_free_blocks(Device::Cpu)
        ),
        (gpu0, cpu0)
    );
    assert_eq!(classes(&m), before);
    m.check_invariants().unwrap();
}

#[test]
fn a_sliding_window_keeps_a_ring_of_blocks() {
    // Window 32 tokens, blocks of 16 -> at most 2 blocks per sequence; the ring reuses them.
    let cfg = ManagerConfig {
        sliding_window: Some(32),
        ..ManagerConfig::new(16, 16, 0)
    };
    let mut m = BlockManager::new(cfg).unwrap();
    assert_eq!(m.window_blocks(), Some(2));
    assert_eq!(m.blocks_for_prompt(1000), 2);
    let _ = m.allocate(&[1], &prompt(40, 0)).unwrap();
    let ring = m.held_blocks(1).unwrap().to_vec();
    assert_eq!(ring.len(), 2);
    // Token 40 lives in logical block 2 = ring[0], at offset 8.
    assert_eq!(m.slot(1, 39).unwrap(), ring[0] * 16 + 7);
    m.fork(1, 2).unwrap();
    for t in 0..100 {
        let _ = m.append_slot(2, t).unwrap();
        assert!(m.held_blocks(2).unwrap().len() <= 2);
        m.check_invariants().unwrap();
    }
    assert_eq!(m.first_stored_position(2).unwrap(), 140 - 32);
    assert_eq!(
        m.num_free_blocks(Device::Gpu),
        16 - 4,
        "the child copied both ring blocks once"
    );
}

#[test]
fn prefix_caching_shares_full_blocks_of_a_common_prefix() {
    // Two prompts sharing 3 full blocks share exactly those 3 blocks; the partial tail never.
    let cfg = ManagerConfig {
        prefix_caching: true,
        ..ManagerConfig::new(4, 32, 0)
    };
    let mut m = BlockManager::new(cfg).unwrap();
    let a: Vec<Token> = (0..14).collect();
    let mut b = a[..12].to_vec();
    b.extend([100, 101, 102]);
    let _ = m.allocate(&[1], &a).unwrap();
    let hit = m.allocate(&[2], &b).unwrap();
    assert_eq!(hit.computed_tokens, 12);
    let (ta, tb) = (m.block_table(1).unwrap(), m.block_table(2).unwrap());
    assert_eq!(ta[..3], tb[..3]);
    assert_ne!(ta[3], tb[3]);
    // A change in an early token changes every later hash: no hit at all.
    let mut c = a.clone();
    c[0] = 77;
    assert_eq!(m.allocate(&[3], &c).unwrap().computed_tokens, 0);
    // The same prompt again: every full block but the one holding the last token is a hit.
    let exact: Vec<Token> = (0..12).collect();
    assert_eq!(m.allocate(&[4], &exact).unwrap().computed_tokens, 8);
    m.check_invariants().unwrap();
}

#[test]
fn freed_cached_blocks_are_evicted_lru_tail_first() {
    // Free R1 then R2; new allocations take R1's blocks tail-first, then R2's. A freed block stays
    // findable (a hit revives it) until an allocation evicts it.
    let cfg = ManagerConfig {
        prefix_caching: true,
        watermark: 0.0,
        ..ManagerConfig::new(2, 8, 0)
    };
    let mut m = BlockManager::new(cfg).unwrap();
    let (p1, p2): (Vec<Token>, Vec<Token>) = ((0..9).collect(), (50..59).collect());
    let _ = m.allocate(&[1], &p1).unwrap(); // 5 blocks: 4 full (hashed) + 1
    let _ = m.allocate(&[2], &p2[..5]).unwrap(); // 3 blocks: 2 full (hashed) + 1
    let (t1, t2) = (m.block_table(1).unwrap(), m.block_table(2).unwrap());
    assert!(m.free(1));
    assert!(m.free(2));
    assert_eq!(m.pool(Device::Gpu).num_evictable(), 6);
    assert_eq!(m.num_free_blocks(Device::Gpu), 8);
    // A hit on R2's first block revives it.
    let r = m.allocate(&[3], &p2[..3]).unwrap();
    assert_eq!(r.computed_tokens, 2);
    assert_eq!(m.block_table(3).unwrap()[0], t2[0]);
    // Fresh allocations: the two unhashed blocks first (free list), then R1's chain from its tail.
    let mut order = Vec::new();
    for s in 10..16 {
        let _ = m.allocate(&[s], &[1000 + s as Token]).unwrap();
        order.push(m.block_table(s).unwrap()[0]);
    }
    // Sequence 3's second block took one of the two unhashed blocks; the other comes first, and only
    // then do the evictions start.
    let taken = m.block_table(3).unwrap()[1];
    let unhashed = [t1[4], t2[2]];
    assert!(
        unhashed.contains(&taken),
        "a fresh block comes from the free list, not an eviction"
    );
    let spare = if taken == unhashed[0] {
        unhashed[1]
    } else {
        unhashed[0]
    };
    assert_eq!(order, [spare, t1[3], t1[2], t1[1], t1[0], t2[1]]);
    // R1's hashes are gone: the same prompt misses now.
    assert!(m.free(10));
    assert_eq!(
        m.allocate(&[20], &p1).map(|a| a.computed_tokens),
        Err(BlockError::CannotAllocate {
            status: AllocStatus::Later,
            required: 5,
            free: 1,
            watermark: 0
        })
    );
    m.check_invariants().unwrap();
}

#[test]
fn a_filled_block_is_registered_and_deduplicated_at_the_next_append() {
    let cfg = ManagerConfig {
        prefix_caching: true,
        ..ManagerConfig::new(4, 16, 0)
    };
    let mut m = BlockManager::new(cfg).unwrap();
    let _ = m.allocate(&[1], &[1, 2, 3]).unwrap();
    let _ = m.allocate(&[2], &[1, 2, 3]).unwrap(); // no hit: the only block holds the last token
    assert_ne!(m.block_table(1).unwrap(), m.block_table(2).unwrap());
    for s in [1, 2] {
        let _ = m.append_slot(s, 4).unwrap(); // both fill block 0 with [1, 2, 3, 4]
    }
    let free = m.num_free_blocks(Device::Gpu);
    let _ = m.append_slot(1, 5).unwrap(); // seq 1 registers its block 0
    let _ = m.append_slot(2, 5).unwrap(); // seq 2 finds it cached and drops its own copy
    assert_eq!(m.block_table(1).unwrap()[0], m.block_table(2).unwrap()[0]);
    assert_eq!(
        m.num_free_blocks(Device::Gpu),
        free - 1,
        "two new blocks, one duplicate freed"
    );
    m.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------------
// Random operation sequences against a simulated KV store
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Admit a group of `group` sequences with a prompt: `len` tokens of base prompt `base`, then `extra`.
    Allocate {
        group: usize,
        base: usize,
        len: usize,
        extra: Vec<Token>,
    },
    /// Append `count` tokens to a live sequence (chosen by index).
    Append {
        seq: usize,
        count: usize,
        token: Token,
    },
    Fork {
        seq: usize,
    },
    Free {
        seq: usize,
    },
    /// Swap out a sequence with (`family`) or without its relatives.
    SwapOut {
        seq: usize,
        family: bool,
    },
    SwapIn {
        seq: usize,
        family: bool,
    },
    /// A call on an id that does not exist or a request that must be refused.
    Bogus {
        kind: u8,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1usize..=3, 0usize..3, 1usize..40, prop::collection::vec(0u32..4, 0..6))
            .prop_map(|(group, base, len, extra)| Op::Allocate { group, base, len, extra }),
        8 => (any::<usize>(), 1usize..6, 0u32..4).prop_map(|(seq, count, token)| Op::Append { seq, count, token }),
        2 => any::<usize>().prop_map(|seq| Op::Fork { seq }),
        2 => any::<usize>().prop_map(|seq| Op::Free { seq }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(seq, family)| Op::SwapOut { seq, family }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(seq, family)| Op::SwapIn { seq, family }),
        1 => (0u8..6).prop_map(|kind| Op::Bogus { kind }),
    ]
}

fn config_strategy() -> impl Strategy<Value = ManagerConfig> {
    (
        prop::sample::select(vec![1usize, 2, 3, 4, 16]),
        2usize..64,
        0usize..32,
        prop::sample::select(vec![0.0, 0.01, 0.1]),
        prop::option::of(1usize..40),
        any::<bool>(),
        0usize..5,
    )
        .prop_map(
            |(bs, gpu, cpu, watermark, window, caching, placement)| ManagerConfig {
                block_size: bs,
                num_gpu_blocks: gpu,
                num_cpu_blocks: cpu,
                watermark,
                sliding_window: if caching { None } else { window },
                prefix_caching: caching,
                // Every placement (chunks of 1, 3 and 8 blocks: a chunk of one block, pools that end in
                // a short chunk, pools of fewer blocks than a chunk): the invariants and the read-back
                // oracle do not depend on which free block a sequence gets.
                placement: match placement {
                    0 => Placement::FreeList,
                    1 => Placement::AfterLast,
                    2 => Placement::Chunked { blocks: 1 },
                    3 => Placement::Chunked { blocks: 3 },
                    _ => Placement::Chunked { blocks: 8 },
                },
            },
        )
}

/// What the random runs did, summed over cases.
#[derive(Debug, Default)]
struct Stats {
    cases: usize,
    ops: usize,
    refused: usize,
    copies: usize,
    swaps: usize,
    hits: usize,
}

/// The test's model: the KV store of both devices, each slot the `(token, position)` written there, and
/// each live sequence's tokens and family.
struct Model {
    bs: usize,
    store: [Vec<Option<(Token, usize)>>; 2],
    tokens: BTreeMap<SeqId, Vec<Token>>,
    family: BTreeMap<SeqId, u64>,
    next_id: SeqId,
}

fn dev(d: Device) -> usize {
    usize::from(d == Device::Cpu)
}

impl Model {
    fn copy_block(&mut self, from: Device, src: usize, to: Device, dst: usize) {
        let bs = self.bs;
        let data: Vec<_> = self.store[dev(from)][src * bs..(src + 1) * bs].to_vec();
        self.store[dev(to)][dst * bs..(dst + 1) * bs].copy_from_slice(&data);
    }
}

const BASES: [[Token; 48]; 3] = {
    let mut b = [[0; 48]; 3];
    let mut i = 0;
    while i < 48 {
        b[0][i] = (i % 4) as Token;
        b[1][i] = ((i * 7 + 1) % 4) as Token;
        b[2][i] = 3;
        i += 1;
    }
    b
};

/// Check every invariant through the public API, then read every live sequence back through its table.
fn check_state(m: &BlockManager, model: &Model) -> Result<(), String> {
    m.check_invariants()?;
    for d in [Device::Gpu, Device::Cpu] {
        let pool = m.pool(d);
        let mut holders = vec![0u32; pool.num_blocks()];
        for s in m.sequences().filter(|&s| m.device_of(s) == Ok(d)) {
            for &b in m.held_blocks(s).map_err(|e| e.to_string())? {
                holders[b] += 1;
            }
        }
        let used = holders.iter().filter(|&&h| h > 0).count();
        if used + pool.num_free() != pool.num_blocks() {
            return Err(format!(
                "{d:?}: {used} used + {} free != {}",
                pool.num_free(),
                pool.num_blocks()
            ));
        }
        for (b, &h) in holders.iter().enumerate() {
            if pool.ref_count(b) != Ok(h) {
                return Err(format!(
                    "{d:?} block {b}: ref {:?}, held by {h}",
                    pool.ref_count(b)
                ));
            }
        }
    }
    for (&s, toks) in &model.tokens {
        let d = m.device_of(s).map_err(|e| e.to_string())?;
        if m.num_tokens(s) != Ok(toks.len()) {
            return Err(format!(
                "seq {s}: length {:?}, model {}",
                m.num_tokens(s),
                toks.len()
            ));
        }
        let first = m.first_stored_position(s).map_err(|e| e.to_string())?;
        for (t, &tok) in toks.iter().enumerate().skip(first) {
            let slot = m.slot(s, t).map_err(|e| e.to_string())?;
            let got = model.store[dev(d)][slot];
            if got != Some((tok, t)) {
                return Err(format!(
                    "seq {s} position {t}: slot {slot} on {d:?} holds {got:?}, want {:?}",
                    (tok, t)
                ));
            }
        }
    }
    if m.sequences().count() != model.tokens.len() {
        return Err("the manager and the model disagree on the live sequences".into());
    }
    Ok(())
}

/// Run one operation; `Ok(true)` if the manager accepted it.
fn step(
    m: &mut BlockManager,
    model: &mut Model,
    op: &Op,
    stats: &mut Stats,
) -> Result<bool, String> {
    let live: Vec<SeqId> = m.sequences().collect();
    let pick = |i: usize| (!live.is_empty()).then(|| live[i % live.len()]);
    let relatives = |m: &BlockManager, model: &Model, s: SeqId, family: bool| -> Vec<SeqId> {
        if !family {
            return vec![s];
        }
        let d = m.device_of(s).ok();
        model
            .family
            .iter()
            .filter(|(&x, &f)| f == model.family[&s] && m.device_of(x).ok() == d)
            .map(|(&x, _)| x)
            .collect()
    };
    let snapshot = m.clone();
    let bs = model.bs;
    let outcome: Result<(), BlockError> = match op {
        Op::Allocate {
            group,
            base,
            len,
            extra,
        } => {
            let mut p: Vec<Token> = BASES[*base][..*len].to_vec();
            p.extend(extra);
            let ids: Vec<SeqId> = (0..*group as u64).map(|i| model.next_id + i).collect();
            model.next_id += *group as u64;
            m.allocate(&ids, &p).map(|a| {
                stats.hits += a.computed_tokens / bs;
                let hit_blocks = &m.block_table(ids[0]).expect("live")[..a.computed_tokens / bs];
                for (t, &tok) in p.iter().enumerate().skip(a.computed_tokens) {
                    let slot = m.slot(ids[0], t).expect("live");
                    // The prefill writes only into blocks this call allocated for the group.
                    assert!(
                        !hit_blocks.contains(&(slot / bs)),
                        "prefill writes into a cached block"
                    );
                    assert_eq!(m.pool(Device::Gpu).ref_count(slot / bs), Ok(*group as u32));
                    model.store[0][slot] = Some((tok, t));
                }
                for &id in &ids {
                    model.tokens.insert(id, p.clone());
                    model.family.insert(id, ids[0]);
                }
            })
        }
        Op::Append { seq, count, token } => match pick(*seq) {
            None => Ok(()),
            Some(s) => {
                let mut r = Ok(());
                for i in 0..*count {
                    let before = m.clone();
                    let tok = token.wrapping_add(i as Token) % 4;
                    match m.append_slot(s, tok) {
                        Ok(ap) => {
                            if let Some((src, dst)) = ap.copy {
                                stats.copies += 1;
                                model.copy_block(Device::Gpu, src, Device::Gpu, dst);
                            }
                            // Copy on write: the token goes into a block nobody else holds.
                            if m.pool(Device::Gpu).ref_count(ap.slot / bs) != Ok(1) {
                                return Err(format!(
                                    "append writes into shared block {}",
                                    ap.slot / bs
                                ));
                            }
                            let toks = model.tokens.get_mut(&s).expect("live");
                            model.store[0][ap.slot] = Some((tok, toks.len()));
                            toks.push(tok);
                        }
                        Err(e) => {
                            if *m != before {
                                return Err(format!("refused append ({e}) changed the state"));
                            }
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
        },
        Op::Fork { seq } => match pick(*seq) {
            None => Ok(()),
            Some(s) => {
                let child = model.next_id;
                model.next_id += 1;
                m.fork(s, child).map(|()| {
                    let t = model.tokens[&s].clone();
                    model.tokens.insert(child, t);
                    model.family.insert(child, model.family[&s]);
                })
            }
        },
        Op::Free { seq } => {
            if let Some(s) = pick(*seq) {
                assert!(m.free(s));
                model.tokens.remove(&s);
                model.family.remove(&s);
            }
            Ok(())
        }
        Op::SwapOut { seq, family } | Op::SwapIn { seq, family } => match pick(*seq) {
            None => Ok(()),
            Some(s) => {
                let group = relatives(m, model, s, *family);
                let out = matches!(op, Op::SwapOut { .. });
                let r = if out {
                    m.swap_out(&group)
                } else {
                    m.swap_in(&group)
                };
                r.map(|pairs| {
                    stats.swaps += 1;
                    let (from, to) = if out {
                        (Device::Gpu, Device::Cpu)
                    } else {
                        (Device::Cpu, Device::Gpu)
                    };
                    for (src, dst) in pairs {
                        model.copy_block(from, src, to, dst);
                    }
                })
            }
        },
        Op::Bogus { kind } => {
            let ghost = u64::MAX - 1;
            let some = pick(*kind as usize);
            match (kind, some) {
                (0, _) => m.append_slot(ghost, 0).map(|_| ()),
                (1, _) => m.fork(ghost, ghost + 1),
                (2, Some(s)) => m.fork(s, s),
                (3, Some(s)) => m.allocate(&[model.next_id, s], &[1]).map(|_| ()),
                (4, _) => m.swap_out(&[ghost]).map(|_| ()),
                (5, _) => {
                    assert!(!m.free(ghost));
                    Ok(())
                }
                _ => m.allocate(&[model.next_id], &[]).map(|_| ()),
            }
        }
    };
    match outcome {
        Ok(()) => Ok(true),
        Err(e) => {
            // An Append that got partway keeps its accepted tokens; every other refusal changes nothing.
            if !matches!(op, Op::Append { .. }) && *m != snapshot {
                return Err(format!("refused {op:?} ({e}) changed the state"));
            }
            Ok(false)
        }
    }
}

fn run_case(cfg: ManagerConfig, ops: &[Op], stats: &mut Stats) -> Result<(), String> {
    let mut m = BlockManager::new(cfg).map_err(|e| e.to_string())?;
    let bs = cfg.block_size;
    let mut model = Model {
        bs,
        store: [
            vec![None; cfg.num_gpu_blocks * bs],
            vec![None; cfg.num_cpu_blocks * bs],
        ],
        tokens: BTreeMap::new(),
        family: BTreeMap::new(),
        next_id: 0,
    };
    stats.cases += 1;
    for (i, op) in ops.iter().enumerate() {
        let accepted =
            step(&mut m, &mut model, op, stats).map_err(|e| format!("op {i} {op:?}: {e}"))?;
        stats.ops += 1;
        stats.refused += usize::from(!accepted);
        check_state(&m, &model).map_err(|e| format!("after op {i} {op:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn random_operation_sequences_keep_every_invariant() {
    // Seeded (ChaCha with proptest's fixed seed), so every run sees the same sequences.
    let config = Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let stats = RefCell::new(Stats::default());
    let strategy = (
        config_strategy(),
        prop::collection::vec(op_strategy(), 60..200),
    );
    let result = runner.run(&strategy, |(cfg, ops)| {
        run_case(cfg, &ops, &mut stats.borrow_mut()).map_err(TestCaseError::fail)
    });
    let s = stats.into_inner();
    println!(
        "{} cases, {} operations ({} refused), {} copy-on-write pairs, {} swaps, {} prefix-hit blocks",
        s.cases, s.ops, s.refused, s.copies, s.swaps, s.hits
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(s.ops >= 100_000, "only {} operations", s.ops);
    assert!(s.copies > 1000 && s.swaps > 1000 && s.hits > 1000 && s.refused > 1000);
}

/// `Placement::AfterLast` takes the block after a sequence's last one where it is free, and the free
/// list's top otherwise; vLLM's placement always takes the top (the block freed last).
#[test]
fn after_last_placement_continues_a_run_where_it_can() {
    let tables = |placement| {
        let cfg = ManagerConfig {
            placement,
            watermark: 0.0,
            ..ManagerConfig::new(1, 8, 0)
        };
        let mut m = BlockManager::new(cfg).unwrap();
        for seq in 0..3 {
            let _ = m.allocate(&[seq], &[7]).unwrap(); // blocks 0, 1, 2
        }
        assert!(m.free(1)); // block 1 back on top of the free list
        let _ = m.append_slot(2, 7).unwrap();
        let _ = m.append_slot(0, 7).unwrap();
        m.check_invariants().unwrap();
        (m.block_table(0).unwrap(), m.block_table(2).unwrap())
    };
    assert_eq!(tables(Placement::FreeList), (vec![0, 3], vec![2, 1]));
    assert_eq!(tables(Placement::AfterLast), (vec![0, 1], vec![2, 3]));
}

/// `Placement::Chunked` starts each sequence in a wholly free aligned chunk and continues it there, so a
/// second sequence leaves the first one's chunk alone while the pool has whole chunks; once none is left
/// an allocation takes the free list's top. A chunk of zero blocks is refused.
#[test]
fn chunked_placement_keeps_each_sequence_in_its_own_chunks() {
    let cfg = ManagerConfig {
        placement: Placement::Chunked { blocks: 4 },
        watermark: 0.0,
        ..ManagerConfig::new(1, 10, 0)
    };
    let mut m = BlockManager::new(cfg).unwrap();
    let _ = m.allocate(&[0], &[7]).unwrap(); // chunk 0: block 0
    let _ = m.allocate(&[1], &[7]).unwrap(); // chunk 1 (chunk 0 is started): block 4
    for _ in 0..4 {
        let _ = m.append_slot(0, 7).unwrap(); // 1, 2, 3, then chunk 2's block 8
        let _ = m.append_slot(1, 7).unwrap(); // 5, 6, 7, then no whole chunk: the free list's top
    }
    m.check_invariants().unwrap();
    let (t0, t1) = (m.block_table(0).unwrap(), m.block_table(1).unwrap());
    assert_eq!(t0, vec![0, 1, 2, 3, 8]);
    assert_eq!(t1[..4], [4, 5, 6, 7]);
    assert_eq!(t1[4], 9, "the free list's top once no chunk is whole");
    let zero = ManagerConfig {
        placement: Placement::Chunked { blocks: 0 },
        ..cfg
    };
    assert!(matches!(
        BlockManager::new(zero),
        Err(BlockError::InvalidConfig(_))
    ));
}
