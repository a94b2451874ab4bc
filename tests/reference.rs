//! The reference attention and the tolerance rule, on the edge grid.
//!
//! The reference (materialised scores, GQA by repetition) is compared with an independent single-pass
//! attention built on the online-softmax row state (GQA by index); the rule of `check::attn_close` is
//! exercised with an f16 candidate; typed errors are checked to leave nothing half-done.

use half::f16;
use modern_attention::minimodel::check::{
    assert_attn_close, attn_close, err_stats, CloseError, FP16_BAR,
};
use modern_attention::minimodel::numeric::{convert, DType, Element};
use modern_attention::minimodel::reference::{attention_lowp, attention_ref64};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask, ShapeError};
use modern_attention::minimodel::softmax::AttentionRow;
use proptest::prelude::*;

/// Single-pass attention with the online row state, GQA by index, in the precision of `round`
/// (inputs rounded to the storage type, accumulation in f64 then rounded to f32 per step when asked).
fn online_attention<T: Element>(q: &[T], k: &[T], v: &[T], s: &AttnShape, mask: Mask) -> Vec<f64> {
    let scale = 1.0 / (s.d as f64).sqrt();
    let mut o = vec![f64::NAN; s.q_len()]; // poisoned: every row must be written
    for b in 0..s.b {
        for h in 0..s.hq {
            let hk = h / s.group();
            for i in 0..s.nq {
                let qi = &q[s.q_row(b, h, i)..][..s.d];
                let mut row = AttentionRow::new(s.d);
                for j in 0..s.nk {
                    if !mask.visible(i, j, s.nq, s.nk) {
                        continue;
                    }
                    let kj = &k[s.kv_row(b, hk, j)..][..s.d];
                    let vj: Vec<f64> = v[s.kv_row(b, hk, j)..][..s.d]
                        .iter()
                        .map(|x| x.to_f64())
                        .collect();
                    let sc = qi
                        .iter()
                        .zip(kj)
                        .map(|(x, y)| x.to_f64() * y.to_f64())
                        .sum::<f64>()
                        * scale;
                    row.push(sc, &vj).unwrap();
                }
                o[s.q_row(b, h, i)..][..s.d].copy_from_slice(&row.finish());
            }
        }
    }
    o
}

fn inputs(s: &AttnShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = Rng::new(seed);
    (
        r.normal_vec_f32(s.q_len()),
        r.normal_vec_f32(s.kv_len()),
        r.normal_vec_f32(s.kv_len()),
    )
}

fn masks() -> Vec<Mask> {
    vec![
        Mask::NONE,
        Mask::CAUSAL,
        Mask::sliding(7, false).unwrap(),
        Mask::sliding(16, true).unwrap(),
    ]
}

#[test]
fn reference_matches_online_attention_on_the_edge_grid() {
    let mut seed = 1;
    for (nq, nk) in [
        (1, 1),
        (17, 17),
        (64, 64),
        (113, 113),
        (1, 113),
        (17, 64),
        (64, 17),
        (113, 1023),
    ] {
        for d in [32, 64] {
            for (hq, hkv) in [(4, 4), (4, 2), (4, 1)] {
                for mask in masks() {
                    let s = AttnShape::new(1, hq, hkv, nq, nk, d).unwrap();
                    let (q, k, v) = inputs(&s, seed);
                    seed += 1;
                    let r = attention_ref64(&q, &k, &v, &s, mask).unwrap();
                    let o = online_attention(&q, &k, &v, &s, mask);
                    assert_eq!(o.len(), r.len());
                    // A NaN (a row left unwritten) must fail: `err_stats` keeps it.
                    let err = err_stats(&o, &r).max;
                    assert!(
                        err < 1e-12,
                        "nq={nq} nk={nk} d={d} hq={hq} hkv={hkv} {}: {err}",
                        mask.name()
                    );
                }
            }
        }
    }
}

#[test]
fn stress_length_causal() {
    let s = AttnShape::self_attention(1, 1, 2048, 64).unwrap();
    let (q, k, v) = inputs(&s, 2048);
    let r = attention_ref64(&q, &k, &v, &s, Mask::CAUSAL).unwrap();
    let o = online_attention(&q, &k, &v, &s, Mask::CAUSAL);
    assert_eq!(o.len(), r.len());
    let err = err_stats(&o, &r).max; // NaN fails
    assert!(err < 1e-12, "{err}");
}

#[test]
fn fully_masked_rows_are_zero_not_nan() {
    // More queries than keys, causal: the first Nq - Nk queries precede every key.
    let s = AttnShape::new(1, 2, 1, 5, 3, 4).unwrap();
    let (q, k, v) = inputs(&s, 9);
    let r = attention_ref64(&q, &k, &v, &s, Mask::CAUSAL).unwrap();
    for h in 0..2 {
        for i in 0..2 {
            assert!(r[s.q_row(0, h, i)..][..4].iter().all(|&x| x == 0.0));
        }
        assert!(r[s.q_row(0, h, 2)..][..4]
            .iter()
            .all(|&x| x != 0.0 && x.is_finite()));
    }
    let lowp = attention_lowp(&q, &k, &v, &s, Mask::CAUSAL, DType::F16).unwrap();
    assert!(lowp.iter().all(|x| x.is_finite()));
}

#[test]
fn f16_candidate_passes_the_rule_and_the_bar() {
    // An f16 candidate: inputs stored in f16, single-pass f64 arithmetic, output stored in f16.
    for (n, d, mask) in [
        (64, 32, Mask::CAUSAL),
        (113, 64, Mask::NONE),
        (1023, 128, Mask::sliding(256, true).unwrap()),
    ] {
        let s = AttnShape::new(1, 2, 1, n, n, d).unwrap();
        let (q, k, v) = inputs(&s, n as u64);
        let (qh, kh, vh): (Vec<f16>, Vec<f16>, Vec<f16>) = (convert(&q), convert(&k), convert(&v));
        // The reference sees the stored f16 inputs, widened exactly: input rounding is not error.
        let reference = attention_ref64(&qh, &kh, &vh, &s, mask).unwrap();
        let lowp = attention_lowp(&qh, &kh, &vh, &s, mask, DType::F16).unwrap();
        let out: Vec<f64> = online_attention(&qh, &kh, &vh, &s, mask)
            .iter()
            .map(|&x| DType::F16.round(x))
            .collect();
        let report = assert_attn_close(
            &format!("online f16 N={n} D={d} {}", mask.name()),
            &out,
            &lowp,
            &reference,
            DType::F16,
            n,
            Some(FP16_BAR),
        );
        assert!(
            report.baseline.max > report.candidate.max,
            "a careful candidate beats the sloppy twin"
        );
    }
}

#[test]
fn the_rule_rejects_a_wrong_scale() {
    // A classic bug: scaling by 1/D instead of 1/sqrt(D). Small at D=32 but far beyond rounding.
    let s = AttnShape::self_attention(1, 1, 64, 32).unwrap();
    let (q, k, v) = inputs(&s, 5);
    let q_bad: Vec<f32> = q.iter().map(|x| x / (32f32).sqrt()).collect();
    let reference = attention_ref64(&q, &k, &v, &s, Mask::CAUSAL).unwrap();
    let lowp = attention_lowp(&q, &k, &v, &s, Mask::CAUSAL, DType::F16).unwrap();
    let bad = attention_ref64(&q_bad, &k, &v, &s, Mask::CAUSAL).unwrap();
    let bad: Vec<f64> = bad.iter().map(|&x| DType::F16.round(x)).collect();
    assert!(matches!(
        attn_close("1/D scale", &bad, &lowp, &reference, DType::F16, 64, None),
        Err(CloseError::TooFar(_))
    ));
}

#[test]
fn typed_errors() {
    assert_eq!(
        AttnShape::new(2, 8, 3, 64, 64, 32),
        Err(ShapeError::HeadsNotDivisible { hq: 8, hkv: 3 })
    );
    assert_eq!(
        AttnShape::new(2, 8, 8, 64, 64, 0),
        Err(ShapeError::ZeroDim { dim: "D" })
    );
    assert_eq!(Mask::sliding(0, false), Err(ShapeError::ZeroWindow));
    let s = AttnShape::self_attention(1, 2, 8, 4).unwrap();
    let x = vec![0.0f32; s.q_len()];
    let e = attention_ref64(&x[..s.q_len() - 1], &x, &x, &s, Mask::NONE).unwrap_err();
    assert!(
        matches!(
            e,
            ShapeError::LengthMismatch {
                tensor: "q",
                expected: 64,
                got: 63,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("Nq=8"),
        "the message names the shape: {e}"
    );
    assert!(attention_lowp(&x, &x, &x[1..], &s, Mask::NONE, DType::F16).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn outputs_are_convex_combinations_of_values(
        nq in 1usize..20, nk in 1usize..20, d in 1usize..9, g in 1usize..4, causal in any::<bool>(),
        w in 0usize..6, seed in any::<u64>(),
    ) {
        let s = AttnShape::new(1, 2 * g, 2, nq, nk, d).unwrap();
        let mask = if w == 0 { Mask { causal, window: None } } else { Mask::sliding(w, causal).unwrap() };
        let (q, k, v) = inputs(&s, seed);
        let o = attention_ref64(&q, &k, &v, &s, mask).unwrap();
        for h in 0..s.hq {
            for i in 0..nq {
                let seen: Vec<usize> = (0..nk).filter(|&j| mask.visible(i, j, nq, nk)).collect();
                for c in 0..d {
                    let x = o[s.q_row(0, h, i) + c];
                    if seen.is_empty() {
                        prop_assert_eq!(x, 0.0);
                        continue;
                    }
                    let vals = seen.iter().map(|&j| v[s.kv_row(0, h / g, j) + c] as f64);
                    let (lo, hi) = vals.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
                    prop_assert!(x >= lo - 1e-12 && x <= hi + 1e-12, "{lo} <= {x} <= {hi}");
                }
            }
        }
    }

    #[test]
    fn permuting_keys_with_values_changes_nothing(n in 1usize..30, d in 1usize..9, seed in any::<u64>()) {
        let s = AttnShape::new(1, 1, 1, 3, n, d).unwrap();
        let (q, k, v) = inputs(&s, seed);
        let mut perm: Vec<usize> = (0..n).collect();
        Rng::new(seed ^ 1).shuffle(&mut perm);
        let gather = |x: &[f32]| perm.iter().flat_map(|&j| x[j * d..][..d].to_vec()).collect::<Vec<f32>>();
        let a = attention_ref64(&q, &k, &v, &s, Mask::NONE).unwrap();
        let b = attention_ref64(&q, &gather(&k), &gather(&v), &s, Mask::NONE).unwrap();
        for (x, y) in a.iter().zip(&b) {
            prop_assert!((x - y).abs() < 1e-12);
        }
    }
}
