//! Lab 00's checks: the online softmax and its merge, against the batched softmax, under proptest.
//!
//! If the rescale factor `e^(m - m')` in `OnlineSoftmax::push` is dropped or wrong, the first property
//! fails at once (and `checker_catches_a_missing_rescale` shows the checker catching such a bug).

use modern_attention::minimodel::softmax::{
    blocked_softmax, online_softmax, softmax, AttentionRow, OnlineSoftmax, SoftmaxError,
};
use proptest::prelude::*;

/// Agreement with the batched softmax: every probability within `tol` absolute, and the row sums to 1.
fn agrees_with_batched(p: &[f64], x: &[f64], tol: f64) -> Result<(), String> {
    let base = softmax(x).map_err(|e| e.to_string())?;
    if p.len() != base.len() {
        return Err(format!(
            "{} probabilities for {} scores",
            p.len(),
            base.len()
        ));
    }
    for (j, (a, b)) in p.iter().zip(&base).enumerate() {
        if !a.is_finite() || (a - b).abs() > tol {
            return Err(format!("p[{j}] = {a}, batched {b}"));
        }
    }
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() > tol * x.len() as f64 {
        return Err(format!("row sums to {sum}"));
    }
    Ok(())
}

/// Scores in `[-lim, lim]`, some of them masked, at least one unmasked.
fn row(lim: f64, max_len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![9 => -lim..lim, 1 => Just(f64::NEG_INFINITY)],
        1..max_len,
    )
    .prop_filter("at least one unmasked score", |x| {
        x.iter().any(|v| v.is_finite())
    })
}

fn state_close(a: OnlineSoftmax, b: OnlineSoftmax) -> bool {
    a.m == b.m && (a.l - b.l).abs() <= 1e-12 * a.l.abs().max(b.l.abs())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn online_matches_batched(x in row(50.0, 300)) {
        let p = online_softmax(&x).unwrap();
        prop_assert!(agrees_with_batched(&p, &x, 1e-14).is_ok(), "{:?}", agrees_with_batched(&p, &x, 1e-14));
    }

    #[test]
    fn huge_magnitudes_neither_overflow_nor_nan(x in row(1e4, 200)) {
        let p = online_softmax(&x).unwrap();
        prop_assert!(p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        prop_assert!(agrees_with_batched(&p, &x, 1e-14).is_ok());
    }

    #[test]
    fn shift_invariant(x in row(50.0, 200), c in -1e3f64..1e3) {
        let shifted: Vec<f64> = x.iter().map(|v| v + c).collect();
        let (p, q) = (online_softmax(&x).unwrap(), online_softmax(&shifted).unwrap());
        for (a, b) in p.iter().zip(&q) {
            // Adding c perturbs each score by rounding at |c|'s scale, about 1e-13 here.
            prop_assert!((a - b).abs() <= 1e-10, "{a} vs {b}");
        }
    }

    #[test]
    fn masked_scores_get_exactly_zero(x in row(50.0, 200)) {
        let p = online_softmax(&x).unwrap();
        for (xj, pj) in x.iter().zip(&p) {
            if *xj == f64::NEG_INFINITY {
                prop_assert_eq!(*pj, 0.0);
            }
        }
    }

    // ANCHOR: merge_property
    #[test]
    fn merge_is_associative_commutative_with_identity(
        a in prop::collection::vec(-50.0f64..50.0, 0..50),
        b in prop::collection::vec(-50.0f64..50.0, 0..50),
        c in prop::collection::vec(-50.0f64..50.0, 0..50),
    ) {
        let (sa, sb, sc) = (
            OnlineSoftmax::from_stream(&a).unwrap(),
            OnlineSoftmax::from_stream(&b).unwrap(),
            OnlineSoftmax::from_stream(&c).unwrap(),
        );
        prop_assert!(state_close(sa.merge(sb).merge(sc), sa.merge(sb.merge(sc))));
        prop_assert_eq!(sa.merge(sb), sb.merge(sa));
        prop_assert_eq!(sa.merge(OnlineSoftmax::EMPTY), sa);
        prop_assert_eq!(OnlineSoftmax::EMPTY.merge(sa), sa);
        // The merge of the parts is the state of the whole stream.
        let whole: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
        prop_assert!(state_close(sa.merge(sb).merge(sc), OnlineSoftmax::from_stream(&whole).unwrap()));
    }
    // ANCHOR_END: merge_property

    #[test]
    fn blocks_in_any_order(x in row(50.0, 300), block in 1usize..40, seed in any::<u64>()) {
        let nb = x.len().div_ceil(block);
        let mut order: Vec<usize> = (0..nb).collect();
        let mut rng = modern_attention::minimodel::rng::Rng::new(seed);
        rng.shuffle(&mut order);
        let p = blocked_softmax(&x, block, &order).unwrap();
        prop_assert!(agrees_with_batched(&p, &x, 1e-14).is_ok());
    }

    #[test]
    fn attention_row_split_anywhere_equals_one_pass(
        s in prop::collection::vec(-30.0f64..30.0, 1..80),
        split in 0usize..80,
        width in 1usize..6,
    ) {
        let v: Vec<Vec<f64>> = s.iter().enumerate()
            .map(|(j, _)| (0..width).map(|c| ((j * 7 + c * 3) % 11) as f64 - 5.0).collect())
            .collect();
        let split = split.min(s.len());
        let mut whole = AttentionRow::new(width);
        let (mut left, mut right) = (AttentionRow::new(width), AttentionRow::new(width));
        for (j, (sj, vj)) in s.iter().zip(&v).enumerate() {
            whole.push(*sj, vj).unwrap();
            if j < split { left.push(*sj, vj).unwrap() } else { right.push(*sj, vj).unwrap() }
        }
        // Directly from the definition: O = sum_j softmax(s)_j v_j.
        let p = softmax(&s).unwrap();
        let direct: Vec<f64> = (0..width).map(|c| p.iter().zip(&v).map(|(pj, vj)| pj * vj[c]).sum()).collect();
        for out in [whole.finish(), right.merge(&left).unwrap().finish()] {
            for (a, b) in out.iter().zip(&direct) {
                prop_assert!((a - b).abs() <= 1e-12, "{a} vs {b}");
            }
        }
    }
}

// ANCHOR: broken_rescale
#[test]
fn checker_catches_a_missing_rescale() {
    // The classic bug: forget to rescale l when the max grows.
    fn broken(x: &[f64]) -> Vec<f64> {
        let (mut m, mut l) = (f64::NEG_INFINITY, 0.0);
        for &xj in x {
            let m_new = m.max(xj);
            l += (xj - m_new).exp(); // missing: l *= e^(m - m_new)
            m = m_new;
        }
        x.iter().map(|&xj| (xj - m).exp() / l).collect()
    }
    let x = [0.0, 3.0, 1.0];
    assert!(agrees_with_batched(&broken(&x), &x, 1e-14).is_err());
    assert!(agrees_with_batched(&online_softmax(&x).unwrap(), &x, 1e-14).is_ok());
}
// ANCHOR_END: broken_rescale

#[test]
fn edge_cases_are_defined() {
    assert_eq!(online_softmax(&[]), Err(SoftmaxError::Empty));
    assert_eq!(online_softmax(&[1e4]).unwrap(), vec![1.0]);
    let s = OnlineSoftmax::from_stream(&[0.0, 0.0]).unwrap();
    assert!((s.log_sum_exp() - 2f64.ln()).abs() < 1e-15);
    assert_eq!(
        blocked_softmax(&[1.0, 2.0], 1, &[0, 5]).unwrap_err(),
        SoftmaxError::BadOrder {
            order: vec![0, 5],
            blocks: 2
        }
    );
}
