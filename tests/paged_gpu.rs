//! Lab 03's GPU checks: the paged decode kernel against the f64 reference, K and V scattered into an
//! oversized NaN-poisoned pool through shuffled tables (a kernel that reads one row it should not fails),
//! partial last blocks, GQA groups of 1 to 8, windows, one and many partitions, f16 and bf16; the
//! contiguous twin bit-identical to the paged path; refused calls typed and launch nothing.
//!
//! Skipped (with `skipped: no CUDA device` printed) without a CUDA device; `REQUIRE_GPU=1` fails instead.

use half::{bf16, f16};
use modern_attention::gpu::flash::{lse_max_err, lse_ref64, GpuElement};
use modern_attention::gpu::paged::{
    decode, decode_tuned, read_pass_ms, DecodeBuffers, PoolOrder, Tuning,
};
use modern_attention::gpu::{Device, GpuError};
use modern_attention::minimodel::numeric::convert;
use modern_attention::minimodel::paged::paged_attention::{PagedBatch, PagedError};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};

mod common;
use common::{device, setup};

fn grid<T: GpuElement>(dev: &Device) {
    let masks = [
        Mask::NONE,
        Mask::CAUSAL,
        Mask::sliding(100, true).unwrap(),
        Mask::sliding(1, false).unwrap(),
    ];
    let mut seed = 700;
    let mut checks = 0;
    for (lens, bs) in [
        (vec![1, 17, 64, 113], 16),
        (vec![1023, 2048, 5000], 16),
        (vec![33, 300], 8),
        (vec![77, 1], 32),
    ] {
        for d in [32, 64, 128] {
            for (hq, hkv) in [(4, 4), (8, 2), (8, 1), (6, 2)] {
                seed += 1;
                let st = setup::<T>(&lens, hkv, d, bs, seed);
                let q: Vec<T> = convert(&Rng::new(seed + 9).normal_vec_f32(lens.len() * hq * d));
                let mut bufs =
                    DecodeBuffers::upload_paged(dev, &q, hq, &st.kv(), &st.batch()).unwrap();
                for mask in masks {
                    // `decode`'s own choice (the tensor cores at these head sizes, the heuristic's
                    // partition); the register path on the heuristic's partition and forced small
                    // ones, so that every batch also takes the reduce path; the tensor cores on one.
                    let r = Tuning::REGISTERS;
                    for (tuning, partition) in [
                        (None, None),
                        (Some(r), None),
                        (Some(r), Some(4 * bs)),
                        (Some(r), Some(bs * (256 / bs).max(1))),
                        (Some(Tuning::TENSOR_CORES), Some(4 * bs)),
                    ] {
                        bufs.poison(dev).unwrap();
                        let p = match tuning {
                            None => decode(dev, &mut bufs, mask, partition).unwrap(),
                            Some(t) => decode_tuned(dev, &mut bufs, mask, partition, t).unwrap(),
                        };
                        let tuning = tuning.unwrap_or(Tuning::for_call(dev, &bufs));
                        let (o, lse) = bufs.download(dev).unwrap();
                        let name = format!("gpu paged {} P={p}", tuning.name());
                        st.check(&name, &q, &o, hq, 1, mask);
                        for (i, &len) in lens.iter().enumerate() {
                            let s = AttnShape::new(1, hq, hkv, 1, len, d).unwrap();
                            let qs = &q[i * hq * d..(i + 1) * hq * d];
                            let want = lse_ref64(qs, &st.k[i], &s, mask);
                            let err = lse_max_err(&lse[i * hq..(i + 1) * hq], &want);
                            assert!(err < 2e-3, "{name} seq {i} len {len}: lse error {err}");
                        }
                        checks += 1;
                    }
                }
            }
        }
    }
    println!(
        "{checks} paged decode configurations checked ({})",
        T::DTYPE.name()
    );
}

#[test]
fn paged_decode_matches_the_reference_f16() {
    if let Some(dev) = device() {
        grid::<f16>(&dev);
    }
}

#[test]
fn paged_decode_matches_the_reference_bf16() {
    if let Some(dev) = device() {
        grid::<bf16>(&dev);
    }
}

#[test]
fn every_head_size_decodes_with_the_default_tuning() {
    let Some(dev) = device() else { return };
    let (lens, hq, hkv, bs) = (vec![1, 300, 5000], 8, 2, 16);
    for (i, &d) in modern_attention::gpu::paged::HEAD_DIMS.iter().enumerate() {
        let st = setup::<f16>(&lens, hkv, d, bs, 60 + i as u64);
        let q: Vec<f16> = convert(&Rng::new(70 + i as u64).normal_vec_f32(lens.len() * hq * d));
        let mut bufs = DecodeBuffers::upload_paged(&dev, &q, hq, &st.kv(), &st.batch()).unwrap();
        for mask in [Mask::NONE, Mask::sliding(100, true).unwrap()] {
            bufs.poison(&dev).unwrap();
            let p = decode(&dev, &mut bufs, mask, None)
                .unwrap_or_else(|e| panic!("D={d}: the default tuning must run: {e}"));
            let (o, _) = bufs.download(&dev).unwrap();
            let name = format!(
                "gpu paged default D={d} {} P={p}",
                Tuning::for_call(&dev, &bufs).name()
            );
            st.check(&name, &q, &o, hq, 1, mask);
        }
    }
}

#[test]
fn every_tuning_matches_the_reference() {
    let Some(dev) = device() else { return };
    // 8 head chunks of 4 query heads a sequence: the tunings that put 4 or 8 of them in a block too.
    let (lens, hq, hkv, d, bs) = (vec![1, 300, 5000], 32, 8, 128, 16);
    let st = setup::<f16>(&lens, hkv, d, bs, 41);
    let q: Vec<f16> = convert(&Rng::new(42).normal_vec_f32(lens.len() * hq * d));
    let mut bufs = DecodeBuffers::upload_paged(&dev, &q, hq, &st.kv(), &st.batch()).unwrap();
    let hopper = dev.arch().starts_with("sm_9");
    for t in Tuning::sweep()
        .into_iter()
        .filter(|t| hopper || (!t.bulk && t.cluster == 1))
    {
        for (partition, mask) in [
            (None, Mask::NONE),
            (Some(256), Mask::NONE),
            (Some(512), Mask::sliding(700, true).unwrap()),
        ] {
            // Twice in a row: the fused merge's counters must be back at zero after a launch.
            for round in 0..2 {
                bufs.poison(&dev).unwrap();
                let p = decode_tuned(&dev, &mut bufs, mask, partition, t).unwrap();
                let (o, _) = bufs.download(&dev).unwrap();
                st.check(
                    &format!("{} P={p} round {round}", t.name()),
                    &q,
                    &o,
                    hq,
                    1,
                    mask,
                );
            }
        }
    }
}

#[test]
fn contiguous_twin_is_bit_identical() {
    let Some(dev) = device() else { return };
    let (lens, hq, hkv, d, bs) = (vec![3000, 1200, 17], 16, 4, 128, 16);
    let st = setup::<f16>(&lens, hkv, d, bs, 31);
    let q: Vec<f16> = convert(&Rng::new(32).normal_vec_f32(lens.len() * hq * d));
    // The contiguous copy: (S, Hkv, Nk, D) with Nk the longest length, the rest of each row zero.
    let nk = 3000;
    let s = AttnShape::new(lens.len(), hq, hkv, 1, nk, d).unwrap();
    let mut k = vec![f16::ZERO; s.kv_len()];
    let mut v = k.clone();
    for (i, &len) in lens.iter().enumerate() {
        for h in 0..hkv {
            let (src, dst) = (h * len * d, s.kv_row(i, h, 0));
            k[dst..dst + len * d].copy_from_slice(&st.k[i][src..src + len * d]);
            v[dst..dst + len * d].copy_from_slice(&st.v[i][src..src + len * d]);
        }
    }
    let mut paged = DecodeBuffers::upload_paged(&dev, &q, hq, &st.kv(), &st.batch()).unwrap();
    let mut flat = DecodeBuffers::upload_contiguous(&dev, &s, &q, &k, &v, &lens).unwrap();
    let split = Tuning {
        split: true,
        ..Tuning::REGISTERS
    };
    for (partition, t) in [
        (None, Tuning::REGISTERS),
        (None, split),
        (Some(256), Tuning::REGISTERS),
        (Some(1024), Tuning::REGISTERS),
        (None, Tuning::TENSOR_CORES),
        (Some(256), Tuning::TENSOR_CORES),
    ] {
        // Poisoned before each pair: a tuning that wrote nothing would leave NaN, not the last pair's rows.
        paged.poison(&dev).unwrap();
        flat.poison(&dev).unwrap();
        decode_tuned(&dev, &mut paged, Mask::NONE, partition, t).unwrap();
        decode_tuned(&dev, &mut flat, Mask::NONE, partition, t).unwrap();
        let (a, la) = paged.download(&dev).unwrap();
        let (b, lb) = flat.download(&dev).unwrap();
        st.check(
            &format!("twin {t:?} P={partition:?}"),
            &q,
            &a,
            hq,
            1,
            Mask::NONE,
        );
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && la == lb,
            "same kernel body, same order: the table must change addresses only"
        );
    }
}

#[test]
fn head_major_pools_and_prefetches_change_addresses_only() {
    // The same shuffled tables over an oversized, NaN-poisoned pool, stored block-major and head-major:
    // every tuning (prefetches and the early start included) must give the same bits from both, and the
    // same bits with its prefetches or early start as without them (they may only change the timing).
    let Some(dev) = device() else { return };
    let (lens, hq, hkv, d, bs) = (vec![3000, 1200, 17, 1], 16, 4, 128, 16);
    let st = setup::<f16>(&lens, hkv, d, bs, 131);
    let q: Vec<f16> = convert(&Rng::new(132).normal_vec_f32(lens.len() * hq * d));
    let mut bm = DecodeBuffers::upload_paged(&dev, &q, hq, &st.kv(), &st.batch()).unwrap();
    let mut hm =
        DecodeBuffers::upload_paged_in(&dev, &q, hq, &st.kv(), &st.batch(), PoolOrder::HeadMajor)
            .unwrap();
    let tc = Tuning::TENSOR_CORES;
    let mut runs = 0;
    for mask in [Mask::NONE, Mask::sliding(700, true).unwrap()] {
        for partition in [None, Some(256)] {
            let mut first: Option<(Vec<f16>, Vec<f32>)> = None;
            for t in [
                tc,
                Tuning { prefetch: 1, ..tc },
                Tuning { prefetch: 4, ..tc },
                // The early start reads rows past a sequence's end (the NaN-poisoned slots of its
                // last block, block 0 through the table's padding) before it knows the end.
                Tuning { early: true, ..tc },
            ] {
                for bufs in [&mut bm, &mut hm] {
                    bufs.poison(&dev).unwrap();
                    let p = decode_tuned(&dev, bufs, mask, partition, t).unwrap();
                    let (o, lse) = bufs.download(&dev).unwrap();
                    st.check(
                        &format!("{} {:?} P={p}", t.name(), bufs.layout()),
                        &q,
                        &o,
                        hq,
                        1,
                        mask,
                    );
                    match &first {
                        None => first = Some((o, lse)),
                        Some((o0, l0)) => assert!(
                            o.iter().zip(o0).all(|(x, y)| x.to_bits() == y.to_bits()) && &lse == l0,
                            "{} {:?} P={p}: the pool order and the prefetches must change addresses only",
                            t.name(),
                            bufs.layout()
                        ),
                    }
                    runs += 1;
                }
            }
        }
    }
    // The register path and the read pass read the head-major pool too.
    for bufs in [&mut bm, &mut hm] {
        bufs.poison(&dev).unwrap();
        decode_tuned(&dev, bufs, Mask::NONE, None, Tuning::REGISTERS).unwrap();
        let (o, _) = bufs.download(&dev).unwrap();
        st.check(
            &format!("registers {:?}", bufs.layout()),
            &q,
            &o,
            hq,
            1,
            Mask::NONE,
        );
        assert!(read_pass_ms(&dev, bufs, 0, 1).unwrap()[0] > 0.0);
    }
    // A prefetch without the tensor cores' ring is refused, typed.
    assert!(matches!(
        decode_tuned(
            &dev,
            &mut hm,
            Mask::NONE,
            None,
            Tuning {
                prefetch: 2,
                ..Tuning::REGISTERS
            }
        ),
        Err(GpuError::NotSupported { .. })
    ));
    println!("{runs} head-major / prefetch decodes bit-identical");
}

#[test]
fn bad_batches_are_refused_before_anything_runs() {
    let Some(dev) = device() else { return };
    let st = setup::<f16>(&[40, 20], 2, 64, 16, 5);
    let q = vec![f16::ONE; 2 * 4 * 64];
    let kv = st.kv();
    let refuse = |tables: &[Vec<usize>], lens: &[usize]| {
        DecodeBuffers::upload_paged(
            &dev,
            &q,
            4,
            &kv,
            &PagedBatch {
                tables,
                seq_lens: lens,
            },
        )
        .err()
        .expect("refused")
    };
    let mut wild = st.tables.clone();
    wild[1][0] = st.num_blocks;
    assert!(matches!(
        refuse(&wild, &st.lens),
        GpuError::Paged(PagedError::BlockOutOfRange { seq: 1, .. })
    ));
    let short = vec![st.tables[0][..2].to_vec(), st.tables[1].clone()];
    assert!(matches!(
        refuse(&short, &st.lens),
        GpuError::Paged(PagedError::TableTooShort { seq: 0, .. })
    ));
    assert!(matches!(
        refuse(&st.tables, &[40, 0]),
        GpuError::Paged(PagedError::EmptySequence { seq: 1 })
    ));
    assert!(matches!(
        refuse(&st.tables, &[40]),
        GpuError::Paged(PagedError::BatchMismatch { .. })
    ));
    // Heads not divisible, and a head size with no kernel.
    let e = DecodeBuffers::upload_paged(&dev, &q[..2 * 3 * 64], 3, &kv, &st.batch()).err();
    assert!(matches!(e, Some(GpuError::Shape(_))), "{e:?}");
    let st48 = setup::<f16>(&[40, 20], 2, 48, 16, 6);
    let e = DecodeBuffers::upload_paged(&dev, &q[..2 * 4 * 48], 4, &st48.kv(), &st48.batch()).err();
    assert!(matches!(e, Some(GpuError::HeadDim { d: 48, .. })), "{e:?}");
    // A partition that is not a whole number of blocks: refused, and the output keeps its poison.
    let mut bufs = DecodeBuffers::upload_paged(&dev, &q, 4, &kv, &st.batch()).unwrap();
    let e = decode(&dev, &mut bufs, Mask::NONE, Some(24)).err();
    assert!(
        matches!(e, Some(GpuError::Paged(PagedError::BadPartition { .. }))),
        "{e:?}"
    );
    // Bulk copies with the even split: refused (a warp's copy ring is set up once a range).
    let both = Tuning {
        split: true,
        bulk: true,
        warps: 4,
        ..Tuning::REGISTERS
    };
    let e = decode_tuned(&dev, &mut bufs, Mask::NONE, None, both).err();
    assert!(matches!(e, Some(GpuError::NotSupported { .. })), "{e:?}");
    // Two copy paths at once: refused.
    let two = Tuning {
        bulk: true,
        cp_async: true,
        warps: 4,
        ..Tuning::REGISTERS
    };
    let e = decode_tuned(&dev, &mut bufs, Mask::NONE, None, two).err();
    assert!(matches!(e, Some(GpuError::NotSupported { .. })), "{e:?}");
    // Head chunks a block: not dividing the warps, off the tensor-core path, or more than the
    // sequence has (4 query heads over 2 kv heads: 2 chunks of 2); a touch off that path; clusters
    // that do not fit the grid: refused.
    for t in [
        Tuning {
            heads: 3,
            ..Tuning::TENSOR_CORES
        },
        Tuning {
            heads: 2,
            ..Tuning::REGISTERS
        },
        Tuning {
            heads: 4,
            ..Tuning::TENSOR_CORES
        },
        // A translation touch, or the early start, without the tensor cores' ring.
        Tuning {
            touch: 1,
            ..Tuning::REGISTERS
        },
        Tuning {
            early: true,
            ..Tuning::REGISTERS
        },
        // Clusters: not a power of two up to 8, not dividing the sequence's 2 thread blocks, or on
        // the even split's 1-D grid.
        Tuning {
            cluster: 3,
            ..Tuning::TENSOR_CORES
        },
        Tuning {
            cluster: 4,
            ..Tuning::TENSOR_CORES
        },
        Tuning {
            cluster: 2,
            split: true,
            ..Tuning::TENSOR_CORES
        },
    ] {
        let e = decode_tuned(&dev, &mut bufs, Mask::NONE, None, t).err();
        assert!(
            matches!(e, Some(GpuError::NotSupported { .. })),
            "{}: {e:?}",
            t.name()
        );
    }
    let (o, _) = bufs.download(&dev).unwrap();
    assert!(
        o.iter().all(|x| x.is_nan()),
        "a refused call wrote the output"
    );
    // Copy rings that do not fit a block's shared memory (8 warps of tensor-core chunks at D = 256):
    // a typed refusal before anything is launched.
    let st256 = setup::<f16>(&[40, 20], 2, 256, 16, 7);
    let q256 = vec![f16::ONE; 2 * 4 * 256];
    let mut big = DecodeBuffers::upload_paged(&dev, &q256, 4, &st256.kv(), &st256.batch()).unwrap();
    let e = decode_tuned(&dev, &mut big, Mask::NONE, None, Tuning::TENSOR_CORES).err();
    assert!(matches!(e, Some(GpuError::TooLarge { .. })), "{e:?}");
    let (o, _) = big.download(&dev).unwrap();
    assert!(
        o.iter().all(|x| x.is_nan()),
        "a refused call wrote the output"
    );
}

/// The launch plan kept with the buffers, a CUDA graph of the decode and queued timing all launch the
/// same work: a decode with a kept plan, after another tuning's plan and a refused call, after
/// `forget_plan`, and a graph's replay onto poisoned outputs all write the first decode's bits.
#[test]
fn kept_plans_graphs_and_queued_runs_decode_the_same() {
    let Some(dev) = device() else { return };
    let (lens, hq, hkv, d, bs) = (vec![700, 64, 1], 8, 2, 128, 16);
    let st = setup::<f16>(&lens, hkv, d, bs, 41);
    let q: Vec<f16> = convert(&Rng::new(42).normal_vec_f32(lens.len() * hq * d));
    let mut bufs = DecodeBuffers::upload_paged(&dev, &q, hq, &st.kv(), &st.batch()).unwrap();
    let tc = Tuning::TENSOR_CORES;
    let run = |bufs: &mut DecodeBuffers<f16>, t: Tuning, p: Option<usize>| {
        bufs.poison(&dev).unwrap();
        decode_tuned(&dev, bufs, Mask::NONE, p, t).unwrap();
        bufs.download(&dev).unwrap()
    };
    let first = run(&mut bufs, tc, None);
    st.check("first plan", &q, &first.0, hq, 1, Mask::NONE);
    let same = |x: &(Vec<f16>, Vec<f32>)| {
        x.0.iter()
            .zip(&first.0)
            .all(|(a, b)| a.to_bits() == b.to_bits())
            && x.1
                .iter()
                .zip(&first.1)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    };
    assert!(same(&run(&mut bufs, tc, None)), "the kept plan");
    let other = run(&mut bufs, Tuning::REGISTERS, Some(256));
    st.check("another plan", &q, &other.0, hq, 1, Mask::NONE);
    let refused = Tuning { cluster: 3, ..tc };
    assert!(decode_tuned(&dev, &mut bufs, Mask::NONE, None, refused).is_err());
    assert!(same(&run(&mut bufs, tc, None)), "planned again");
    bufs.forget_plan();
    assert!(same(&run(&mut bufs, tc, None)), "after forget_plan");
    let graph = dev
        .capture(|| decode_tuned(&dev, &mut bufs, Mask::NONE, None, tc).map(|_| ()))
        .unwrap();
    bufs.poison(&dev).unwrap();
    graph.launch().unwrap();
    assert!(same(&bufs.download(&dev).unwrap()), "the graph's replay");
    let queued = dev
        .time_each_queued(2, 5, |_| {
            decode_tuned(&dev, &mut bufs, Mask::NONE, None, tc).map(|_| ())
        })
        .unwrap();
    assert_eq!(queued.ms.len(), 5);
    assert!(
        queued.ms.iter().all(|t| t.is_finite() && *t > 0.0)
            && queued.host_us > 0.0
            && queued.idle_ms >= 0.0,
        "{queued:?}"
    );
    assert!(same(&bufs.download(&dev).unwrap()), "after the queued runs");
}
