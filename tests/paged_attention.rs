//! Paged attention on the CPU against the f64 reference over the K and V gathered through the tables: K and
//! V scattered into an oversized, NaN-poisoned pool through shuffled block tables, partial last blocks, GQA,
//! masks; the partitioned (V2) decode against the reference and against V1; refused calls leave the output
//! alone.

use half::{bf16, f16};
use modern_attention::minimodel::numeric::{convert, Element};
use modern_attention::minimodel::paged::paged_attention::{
    contiguous_decode, gather, paged_attention, paged_decode, paged_decode_partitioned,
    paged_decode_pool_order, read_pass, read_pass_contiguous, read_pass_pool_order,
    reduce_partitions, PagedBatch, PagedError, PagedKv, Partial,
};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};

mod common;
use common::setup;

fn decode_grid<T: Element>() {
    let mut seed = 300;
    for (lens, bs) in [
        (vec![1, 17, 64], 16),
        (vec![113, 1023], 16),
        (vec![5, 33, 40], 5),
        (vec![9, 2], 1),
    ] {
        // D = 20 takes the portable path (the AVX2 loop wants multiples of 8); 6 heads a group, a
        // block of 4 query rows and one of 2.
        for d in [20, 32, 64, 128] {
            for (hq, hkv) in [(4, 4), (4, 2), (4, 1), (6, 1)] {
                seed += 1;
                let st = setup::<T>(&lens, hkv, d, bs, seed);
                let mut r = Rng::new(seed + 1000);
                let q: Vec<T> = convert(&r.normal_vec_f32(lens.len() * hq * d));
                for mask in [Mask::NONE, Mask::sliding(20, true).unwrap()] {
                    let mut o = vec![T::from_f64(f64::NAN); q.len()];
                    paged_decode(&q, hq, &st.kv(), &st.batch(), mask, &mut o).unwrap();
                    st.check("paged_decode", &q, &o, hq, 1, mask);
                    let mut o = vec![T::from_f64(f64::NAN); q.len()];
                    paged_decode_pool_order(&q, hq, &st.kv(), &st.batch(), mask, &mut o).unwrap();
                    st.check("paged_decode_pool_order", &q, &o, hq, 1, mask);
                    for p in [bs, 3 * bs, 512 / bs * bs] {
                        let mut o2 = vec![T::from_f64(f64::NAN); q.len()];
                        paged_decode_partitioned(&q, hq, &st.kv(), &st.batch(), mask, p, &mut o2)
                            .unwrap();
                        st.check(&format!("paged_decode_v2 P={p}"), &q, &o2, hq, 1, mask);
                    }
                }
            }
        }
    }
}

#[test]
fn decode_equals_dense_attention_f32() {
    decode_grid::<f32>();
}

#[test]
fn decode_equals_dense_attention_f16() {
    decode_grid::<f16>();
}

#[test]
fn decode_equals_dense_attention_bf16() {
    decode_grid::<bf16>();
}

#[test]
fn prefill_equals_dense_attention() {
    let masks = [
        Mask::NONE,
        Mask::CAUSAL,
        Mask::sliding(7, false).unwrap(),
        Mask::sliding(40, true).unwrap(),
    ];
    let mut seed = 900;
    for (lens, nq) in [
        (vec![17, 64], 17),
        (vec![113, 40], 1),
        (vec![113, 113], 113),
        (vec![10, 3], 7),
    ] {
        for (hq, hkv, d, bs) in [(4, 2, 64, 16), (2, 1, 32, 3), (4, 4, 128, 16)] {
            seed += 1;
            let st = setup::<f16>(&lens, hkv, d, bs, seed);
            let mut r = Rng::new(seed);
            let q: Vec<f16> = convert(&r.normal_vec_f32(lens.len() * hq * nq * d));
            for mask in masks {
                let mut o = vec![f16::NAN; q.len()];
                paged_attention(&q, hq, nq, &st.kv(), &st.batch(), mask, &mut o).unwrap();
                st.check("paged_prefill", &q, &o, hq, nq, mask);
            }
        }
    }
}

#[test]
fn partitions_merge_to_the_unpartitioned_result() {
    // V2 against V1, tighter than the reference rule: the merge is exact up to f32 rounding.
    for (len, bs, p) in [
        (1023, 16, 512),
        (1024, 16, 256),
        (100, 4, 8),
        (7, 1, 1),
        (2048, 16, 16),
    ] {
        let st = setup::<f32>(&[len, len / 2 + 1], 2, 64, bs, len as u64);
        let q: Vec<f32> = Rng::new(5).normal_vec_f32(2 * 8 * 64);
        let (mut o1, mut o2) = (vec![f32::NAN; q.len()], vec![f32::NAN; q.len()]);
        paged_decode(&q, 8, &st.kv(), &st.batch(), Mask::NONE, &mut o1).unwrap();
        paged_decode_partitioned(&q, 8, &st.kv(), &st.batch(), Mask::NONE, p, &mut o2).unwrap();
        // Both start as NaN: a row either call left unwritten must fail, which `f32::max` would hide.
        let max = o1
            .iter()
            .zip(&o2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, |m, e| if e.is_nan() || e > m { e } else { m });
        println!("len {len} B {bs} P {p}: max |v2 - v1| = {max:.2e}");
        assert!(max < 1e-5, "{max}");
    }
    // The reduce of one partition is that partition; empty partitions contribute nothing.
    let one = Partial {
        max_logit: 3.0,
        exp_sum: 2.0,
        out: vec![1.0, -2.0],
    };
    let empty = Partial {
        max_logit: f32::NEG_INFINITY,
        exp_sum: 0.0,
        out: vec![0.0, 0.0],
    };
    let mut out = vec![f32::NAN; 2];
    reduce_partitions(&[empty.clone(), one.clone(), empty.clone()], &mut out);
    assert_eq!(out, one.out);
    reduce_partitions(&[empty], &mut out);
    assert_eq!(out, vec![0.0, 0.0]);
}

#[test]
fn contiguous_decode_and_gather_agree_with_the_paged_path() {
    let (len, hq, hkv, d, bs) = (300, 8, 2, 64, 16);
    let st = setup::<f32>(&[len, len], hkv, d, bs, 77);
    let q: Vec<f32> = Rng::new(78).normal_vec_f32(2 * hq * d);
    let mut k = Vec::new();
    let mut v = Vec::new();
    for i in 0..2 {
        let (gk, gv) = gather(&st.kv(), &st.tables[i], len).unwrap();
        assert_eq!((&gk, &gv), (&st.k[i], &st.v[i]));
        k.extend(gk);
        v.extend(gv);
    }
    let s = AttnShape::new(2, hq, hkv, 1, len, d).unwrap();
    let (mut o1, mut o2) = (vec![f32::NAN; q.len()], vec![f32::NAN; q.len()]);
    contiguous_decode(&q, &k, &v, &s, bs, &mut o1).unwrap();
    paged_decode(&q, hq, &st.kv(), &st.batch(), Mask::NONE, &mut o2).unwrap();
    assert_eq!(o1, o2, "same kernel, same order: bit-identical");
    // The read passes walk the same rows: every valid row once, nothing of the NaN-poisoned rest of the
    // pool. A block missed or read twice moves the sum by about sqrt(16 D) = 32; f32 rounding by far
    // less than the bound (1e-5 of the sum of magnitudes, about 1.2 here).
    let through = read_pass(&st.kv(), &st.batch()).unwrap();
    let by_pool = read_pass_pool_order(&st.kv(), &st.batch()).unwrap();
    let flat = read_pass_contiguous(&k, &v, &s, bs).unwrap();
    let exact: f64 = k.iter().chain(&v).map(|&x| f64::from(x)).sum();
    let bound = 1e-5 * k.iter().chain(&v).map(|&x| f64::from(x).abs()).sum::<f64>();
    for (name, got) in [
        ("through the tables", through),
        ("in pool order", by_pool),
        ("contiguous", flat),
    ] {
        assert!(
            (f64::from(got) - exact).abs() <= bound,
            "read pass {name}: {got} against {exact} (bound {bound})"
        );
    }
}

/// The three read passes read the same rows in the half types too (the AVX2 sums widen them): all
/// three sums agree with the exact one.
#[test]
fn read_passes_cover_every_row_in_f16_and_bf16() {
    fn check<T: Element>() {
        let (len, hkv, d, bs) = (200, 2, 64, 16);
        let st = setup::<T>(&[len, len, 37], hkv, d, bs, 91);
        let exact: f64 = st.k.iter().chain(&st.v).flatten().map(|x| x.to_f64()).sum();
        let bound = 1e-5
            * st.k
                .iter()
                .chain(&st.v)
                .flatten()
                .map(|x| x.to_f64().abs())
                .sum::<f64>();
        let mut k = Vec::new();
        let mut v = Vec::new();
        for i in 0..2 {
            k.extend_from_slice(&st.k[i]);
            v.extend_from_slice(&st.v[i]);
        }
        let two = PagedBatch {
            tables: &st.tables[..2],
            seq_lens: &st.lens[..2],
        };
        let exact_two: f64 = k.iter().chain(&v).map(|x| x.to_f64()).sum();
        let s = AttnShape::new(2, hkv, hkv, 1, len, d).unwrap();
        for (name, got, want) in [
            ("tables", read_pass(&st.kv(), &st.batch()).unwrap(), exact),
            (
                "pool order",
                read_pass_pool_order(&st.kv(), &st.batch()).unwrap(),
                exact,
            ),
            (
                "pool order, two",
                read_pass_pool_order(&st.kv(), &two).unwrap(),
                exact_two,
            ),
            (
                "contiguous",
                read_pass_contiguous(&k, &v, &s, bs).unwrap(),
                exact_two,
            ),
        ] {
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "{} read pass {name}: {got} against {want} (bound {bound})",
                T::DTYPE.name()
            );
        }
    }
    check::<f16>();
    check::<bf16>();
}

/// The pool-order walk reads each block once for every sequence that owns rows of it: a forked prefix
/// (two tables naming the same blocks) and any number of workers (the pool cut into that many runs).
#[test]
fn the_pool_order_walk_serves_shared_blocks_on_any_number_of_threads() {
    let (bs, hkv, d, hq) = (8, 2, 32, 4);
    let mut st = setup::<f32>(&[45, 37, 20], hkv, d, bs, 77);
    // Sequence 1 forks sequence 0's first two blocks (16 tokens): its table names them, and its own K
    // and V rows for those tokens become sequence 0's.
    let shared = 2;
    for i in 0..shared {
        st.tables[1][i] = st.tables[0][i];
    }
    for h in 0..hkv {
        for t in 0..shared * bs {
            let (src, dst) = ((h * st.lens[0] + t) * d, (h * st.lens[1] + t) * d);
            let (k0, v0) = (
                st.k[0][src..src + d].to_vec(),
                st.v[0][src..src + d].to_vec(),
            );
            st.k[1][dst..dst + d].copy_from_slice(&k0);
            st.v[1][dst..dst + d].copy_from_slice(&v0);
        }
    }
    let q: Vec<f32> = Rng::new(78).normal_vec_f32(st.lens.len() * hq * d);
    for threads in [1, 2, 3, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for mask in [Mask::NONE, Mask::sliding(30, true).unwrap()] {
            let mut o = vec![f32::NAN; q.len()];
            pool.install(|| {
                paged_decode_pool_order(&q, hq, &st.kv(), &st.batch(), mask, &mut o).unwrap()
            });
            st.check(
                &format!("pool order, {threads} threads"),
                &q,
                &o,
                hq,
                1,
                mask,
            );
            let mut o1 = vec![f32::NAN; q.len()];
            paged_decode(&q, hq, &st.kv(), &st.batch(), mask, &mut o1).unwrap();
            st.check("paged_decode, forked prefix", &q, &o1, hq, 1, mask);
        }
    }
}

/// The pool-order walk keeps one set of states per worker thread, locked while a run is walked: calls
/// made from inside another parallel loop on the same pool (a worker may then steal a run of another
/// call, or another call's outer item) must neither deadlock nor mix their states.
#[test]
fn pool_order_calls_nested_in_a_parallel_loop_stay_apart() {
    use rayon::prelude::*;
    let (bs, hkv, d, hq) = (4, 2, 16, 4);
    let st = setup::<f32>(&[45, 37, 20, 9], hkv, d, bs, 91);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    // Eight calls at once, each with its own queries (so a state served to the wrong call shows).
    let qs: Vec<Vec<f32>> = (0..8)
        .map(|i| Rng::new(200 + i).normal_vec_f32(st.lens.len() * hq * d))
        .collect();
    let outs: Vec<Vec<f32>> = pool.install(|| {
        qs.par_iter()
            .map(|q| {
                let mut o = vec![f32::NAN; q.len()];
                paged_decode_pool_order(q, hq, &st.kv(), &st.batch(), Mask::NONE, &mut o).unwrap();
                o
            })
            .collect()
    });
    for (i, (q, o)) in qs.iter().zip(&outs).enumerate() {
        st.check(&format!("nested call {i}"), q, o, hq, 1, Mask::NONE);
    }
}

#[test]
fn bad_tables_are_refused_and_the_output_untouched() {
    let st = setup::<f32>(&[20, 5], 2, 8, 4, 1);
    let q = vec![0.5f32; 2 * 4 * 8];
    let mut o = vec![7.0f32; q.len()];
    let kv = st.kv();
    let short = vec![st.tables[0][..4].to_vec(), st.tables[1].clone()];
    let mut wild = st.tables.clone();
    wild[1][1] = st.num_blocks;
    let try_batch = |tables: &[Vec<usize>], lens: &[usize], o: &mut [f32]| {
        paged_decode(
            &q,
            4,
            &kv,
            &PagedBatch {
                tables,
                seq_lens: lens,
            },
            Mask::NONE,
            o,
        )
    };
    assert_eq!(
        try_batch(&short, &st.lens, &mut o),
        Err(PagedError::TableTooShort {
            seq: 0,
            len: 20,
            need: 5,
            have: 4
        })
    );
    assert_eq!(
        try_batch(&wild, &st.lens, &mut o),
        Err(PagedError::BlockOutOfRange {
            seq: 1,
            index: 1,
            block: st.num_blocks,
            num_blocks: st.num_blocks
        })
    );
    assert_eq!(
        try_batch(&st.tables, &[20], &mut o),
        Err(PagedError::BatchMismatch { tables: 2, lens: 1 })
    );
    assert_eq!(
        try_batch(&st.tables, &[20, 0], &mut o),
        Err(PagedError::EmptySequence { seq: 1 })
    );
    assert!(matches!(
        try_batch(&st.tables, &st.lens, &mut o[1..]),
        Err(PagedError::QueryLength { tensor: "o", .. })
    ));
    assert!(matches!(
        paged_decode(&q, 3, &kv, &st.batch(), Mask::NONE, &mut o),
        Err(PagedError::Shape(_))
    ));
    // The pool-order walk checks the same things before it reads anything.
    let pool_order = |tables: &[Vec<usize>], lens: &[usize], o: &mut [f32]| {
        let batch = PagedBatch {
            tables,
            seq_lens: lens,
        };
        paged_decode_pool_order(&q, 4, &kv, &batch, Mask::NONE, o)
    };
    assert_eq!(
        pool_order(&wild, &st.lens, &mut o),
        Err(PagedError::BlockOutOfRange {
            seq: 1,
            index: 1,
            block: st.num_blocks,
            num_blocks: st.num_blocks
        })
    );
    assert!(matches!(
        pool_order(&short, &st.lens, &mut o),
        Err(PagedError::TableTooShort { seq: 0, .. })
    ));
    assert!(matches!(
        pool_order(&st.tables, &st.lens, &mut o[1..]),
        Err(PagedError::QueryLength { tensor: "o", .. })
    ));
    assert_eq!(
        paged_decode_partitioned(&q, 4, &kv, &st.batch(), Mask::NONE, 6, &mut o),
        Err(PagedError::BadPartition {
            partition: 6,
            block_size: 4
        })
    );
    assert!(matches!(
        PagedKv::new(&st.k_cache[1..], &st.v_cache, st.num_blocks, 2, 4, 8),
        Err(PagedError::PoolLength { tensor: "k", .. })
    ));
    assert!(
        o.iter().all(|&x| x == 7.0),
        "a refused call wrote to the output"
    );
}
