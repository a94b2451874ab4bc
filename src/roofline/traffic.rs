//! The traffic model: FLOPs and slow-memory bytes of attention, written once and used by the book's
//! formulas, tables and tests.
//!
//! For one call of shape `(B, Hq, Hkv, Nq, Nk, D)` with `e` bytes per element (no mask):
//! * FLOPs: two matrix products of `2 Nq Nk D` each per query head: `4 B Hq Nq Nk D` (the count
//!   FlashAttention's benchmarks use; the softmax's exponentials are not counted).
//! * Fused (the ideal, and FlashAttention's to first order): `Q` read once, `K` and `V` read once per
//!   kv head, `O` written once: `e (2 B Hq Nq D + 2 B Hkv Nk D)`.
//! * Naive: the scores `S` written and read back for the softmax, the probabilities `P` written and read
//!   back for `P V` (`4 e B Hq Nq Nk` more), and `K`, `V` read once per *query* head, as a batched
//!   product over repeated heads does.

use crate::minimodel::numeric::DType;
use crate::minimodel::shape::AttnShape;

// ANCHOR: flops
/// FLOPs of attention without a mask: `4 B Hq Nq Nk D`.
pub fn flops(s: &AttnShape) -> f64 {
    4.0 * (s.b * s.hq) as f64 * s.nq as f64 * s.nk as f64 * s.d as f64
}
// ANCHOR_END: flops

// ANCHOR: bytes
/// Slow-memory bytes when every tensor is moved exactly once: `e (2 B Hq Nq D + 2 B Hkv Nk D)`.
pub fn bytes_fused(s: &AttnShape, dt: DType) -> f64 {
    let e = dt.bytes() as f64;
    e * (2.0 * (s.b * s.hq * s.nq * s.d) as f64 + 2.0 * (s.b * s.hkv * s.nk * s.d) as f64)
}

/// Slow-memory bytes of the naive three-kernel algorithm: `Q`, `K`, `V` read and `O` written per query
/// head, plus `S` and `P` each written once and read once: `e (2 B Hq Nq D + 2 B Hq Nk D + 4 B Hq Nq Nk)`.
pub fn bytes_naive(s: &AttnShape, dt: DType) -> f64 {
    let e = dt.bytes() as f64;
    let bh = (s.b * s.hq) as f64;
    e * bh * (2.0 * (s.nq * s.d) as f64 + 2.0 * (s.nk * s.d) as f64 + 4.0 * (s.nq * s.nk) as f64)
}
// ANCHOR_END: bytes

/// Arithmetic intensity in FLOP/byte.
pub fn intensity(flops: f64, bytes: f64) -> f64 {
    flops / bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_prefill_intensity_is_st_over_s_plus_t() {
        // The scaling-book form: at 2 bytes per element, fused intensity = S T / (S + T).
        for (n, d) in [(64, 64), (2048, 128), (17, 32)] {
            let s = AttnShape::self_attention(1, 1, n, d).unwrap();
            let i = intensity(flops(&s), bytes_fused(&s, DType::F16));
            let nf = n as f64;
            assert!((i - nf * nf / (2.0 * nf)).abs() < 1e-9, "{i}");
        }
    }

    #[test]
    fn gqa_decode_intensity_approaches_the_group() {
        let s = AttnShape::new(1, 8, 1, 1, 1 << 16, 128).unwrap();
        let i = intensity(flops(&s), bytes_fused(&s, DType::F16));
        assert!((i - 8.0).abs() < 0.01, "{i}");
        // MHA decode sits at about 1.
        let s = AttnShape::new(1, 8, 8, 1, 1 << 16, 128).unwrap();
        let i = intensity(flops(&s), bytes_fused(&s, DType::F16));
        assert!((i - 1.0).abs() < 0.01, "{i}");
    }

    #[test]
    fn naive_moves_more_and_equals_fused_plus_scores_for_mha() {
        let s = AttnShape::self_attention(2, 4, 64, 32).unwrap();
        let extra = bytes_naive(&s, DType::F32) - bytes_fused(&s, DType::F32);
        assert_eq!(extra, 4.0 * 4.0 * (2 * 4 * 64 * 64) as f64);
    }
}
