//! The slow, obviously right attention: `O = softmax(Q K^T / sqrt(D)) V` in `f64`, one row at a time.
//!
//! It imports nothing from the fast code (not even the crate's softmax), materialises every score row,
//! and implements GQA the literal way, by repeating each kv head `G = Hq / Hkv` times. Its twin,
//! [`attention_lowp`], recomputes the same thing rounded to a low precision with the operations in a
//! different order; the gap between the two is the yardstick of [`super::check::attn_close`].
//!
//! Shapes: `q: (B, Hq, Nq, D)`, `k, v: (B, Hkv, Nk, D)`, output `(B, Hq, Nq, D)`; masks as in
//! [`super::shape::Mask`]; a row that sees no key gets zeros.

use super::numeric::{DType, Element};
use super::shape::{AttnShape, Mask, ShapeError};

// ANCHOR: repeat_kv
/// GQA by repetition: expand `(B, Hkv, Nk, D)` to `(B, Hq, Nk, D)` by copying kv head `h / G` into
/// query head `h`. Wasteful on purpose: the fast code shares heads by index instead.
pub fn repeat_kv(x: &[f64], s: &AttnShape) -> Vec<f64> {
    let (g, row) = (s.group(), s.nk * s.d);
    let mut out = Vec::with_capacity(s.b * s.hq * row);
    for b in 0..s.b {
        for h in 0..s.hq {
            let src = (b * s.hkv + h / g) * row;
            out.extend_from_slice(&x[src..src + row]);
        }
    }
    out
}
// ANCHOR_END: repeat_kv

// ANCHOR: reference
/// Reference attention in `f64`. Inputs of any [`Element`] type are widened exactly.
pub fn attention_ref64<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
) -> Result<Vec<f64>, ShapeError> {
    s.check_inputs(q.len(), k.len(), v.len())?;
    let widen = |x: &[T]| x.iter().map(|e| e.to_f64()).collect::<Vec<f64>>();
    let q = widen(q);
    let (k, v) = (repeat_kv(&widen(k), s), repeat_kv(&widen(v), s)); // now (B, Hq, Nk, D)
    let scale = 1.0 / (s.d as f64).sqrt();
    let mut o = vec![0.0; s.q_len()];
    let mut scores = vec![0.0; s.nk];
    for bh in 0..s.b * s.hq {
        for i in 0..s.nq {
            let qi = &q[(bh * s.nq + i) * s.d..][..s.d];
            // S_ij = q_i . k_j / sqrt(D), or -inf where the mask hides key j
            for (j, sj) in scores.iter_mut().enumerate() {
                let kj = &k[(bh * s.nk + j) * s.d..][..s.d];
                *sj = if mask.visible(i, j, s.nq, s.nk) {
                    qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale
                } else {
                    f64::NEG_INFINITY
                };
            }
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                continue; // fully masked row: output stays zero
            }
            let l: f64 = scores.iter().map(|&x| (x - m).exp()).sum();
            let oi = &mut o[(bh * s.nq + i) * s.d..][..s.d];
            for (j, &sj) in scores.iter().enumerate() {
                let p = (sj - m).exp() / l; // P_ij = softmax(S_i)_j
                let vj = &v[(bh * s.nk + j) * s.d..][..s.d];
                for (oc, vc) in oi.iter_mut().zip(vj) {
                    *oc += p * vc; // O_i = sum_j P_ij v_j
                }
            }
        }
    }
    Ok(o)
}
// ANCHOR_END: reference

/// The reference recomputed in a low precision `dt`, with a different operation order: inputs rounded
/// to `dt`; `Q` scaled by `1/sqrt(D)` *before* the product; products accumulated in `f32` (as tensor
/// cores do) and rounded to `dt`; `exp` rounded to `dt`; `P = e / l` rounded to `dt` before `P V`.
///
/// This is what "the same math in the candidate's precision" costs in error: FlashAttention's tests
/// allow a candidate twice this error (plus a rounding floor), see [`super::check::attn_close`].
pub fn attention_lowp<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: Mask,
    dt: DType,
) -> Result<Vec<f64>, ShapeError> {
    s.check_inputs(q.len(), k.len(), v.len())?;
    let r = |x: f64| dt.round(x);
    let f32r = |x: f64| x as f32 as f64;
    let scale = 1.0 / (s.d as f64).sqrt();
    let q: Vec<f64> = q.iter().map(|e| r(r(e.to_f64()) * scale)).collect(); // scale Q first
    let k: Vec<f64> = k.iter().map(|e| r(e.to_f64())).collect();
    let v: Vec<f64> = v.iter().map(|e| r(e.to_f64())).collect();
    let g = s.group();
    let mut o = vec![0.0; s.q_len()];
    let mut e = vec![0.0; s.nk];
    for b in 0..s.b {
        for h in 0..s.hq {
            for i in 0..s.nq {
                let qi = &q[s.q_row(b, h, i)..][..s.d];
                let mut m = f64::NEG_INFINITY;
                for (j, ej) in e.iter_mut().enumerate() {
                    *ej = if mask.visible(i, j, s.nq, s.nk) {
                        let kj = &k[s.kv_row(b, h / g, j)..][..s.d];
                        let acc = qi.iter().zip(kj).fold(0.0, |a, (x, y)| f32r(a + x * y));
                        r(acc)
                    } else {
                        f64::NEG_INFINITY
                    };
                    m = m.max(*ej);
                }
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let mut l = 0.0;
                for ej in e.iter_mut() {
                    *ej = r((*ej - m).exp());
                    l = f32r(l + *ej);
                }
                let oi = &mut o[s.q_row(b, h, i)..][..s.d];
                let mut acc = vec![0.0f64; s.d];
                for (j, &ej) in e.iter().enumerate() {
                    let p = r(ej / l);
                    let vj = &v[s.kv_row(b, h / g, j)..][..s.d];
                    for (a, vc) in acc.iter_mut().zip(vj) {
                        *a = f32r(*a + p * vc);
                    }
                }
                for (oc, a) in oi.iter_mut().zip(acc) {
                    *oc = r(a);
                }
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_copies_its_value() {
        let s = AttnShape::new(1, 2, 1, 3, 1, 2).unwrap();
        let q = vec![0.5f64; s.q_len()];
        let (k, v) = (vec![1.0f64, -1.0], vec![3.0f64, 4.0]);
        let o = attention_ref64(&q, &k, &v, &s, Mask::NONE).unwrap();
        assert_eq!(o, [3.0, 4.0].repeat(6));
    }

    #[test]
    fn uniform_scores_average_values() {
        let s = AttnShape::self_attention(1, 1, 4, 1).unwrap();
        let q = vec![0.0f64; 4];
        let k = vec![1.0f64; 4];
        let v = vec![1.0, 2.0, 3.0, 6.0];
        let o = attention_ref64(&q, &k, &v, &s, Mask::CAUSAL).unwrap();
        for (got, want) in o.iter().zip([1.0, 1.5, 2.0, 3.0]) {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
    }

    #[test]
    fn refuses_mismatched_inputs() {
        let s = AttnShape::self_attention(1, 1, 4, 2).unwrap();
        let x = vec![0.0f32; 8];
        let err = attention_ref64(&x, &x[..6], &x, &s, Mask::NONE).unwrap_err();
        assert!(matches!(
            err,
            ShapeError::LengthMismatch { tensor: "k", .. }
        ));
    }
}
