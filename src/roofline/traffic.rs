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
use crate::minimodel::shape::{AttnShape, Mask};

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
    bytes_naive_scores(s, dt, dt.bytes())
}
// ANCHOR_END: bytes

/// [`bytes_naive`] with `S` and `P` stored in `score_bytes` bytes an element instead of the inputs'
/// (the GPU's naive kernels keep them in f32: 4).
pub fn bytes_naive_scores(s: &AttnShape, dt: DType, score_bytes: usize) -> f64 {
    let (e, es) = (dt.bytes() as f64, score_bytes as f64);
    let bh = (s.b * s.hq) as f64;
    bh * (e * (2.0 * (s.nq * s.d) as f64 + 2.0 * (s.nk * s.d) as f64)
        + es * 4.0 * (s.nq * s.nk) as f64)
}

/// Arithmetic intensity in FLOP/byte.
pub fn intensity(flops: f64, bytes: f64) -> f64 {
    flops / bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_that_holds_the_heads_in_flight_leaves_the_fused_ideal() {
        let s = AttnShape::self_attention(8, 32, 2048, 64).unwrap();
        let (dt, tiles) = (DType::F16, (128, 128));
        let t = flash_traffic(&s, dt, 128, 128, Mask::NONE);
        // 132 tiles in flight over Tr = 16 tiles a head: 10 heads, 512 KB of K and V each.
        let (hit, fits, working) = flash_bytes_cached(&s, dt, tiles, Mask::NONE, 50e6, 132);
        assert!(
            fits && (working - 10.0 * 524_288.0).abs() < 1.0,
            "{working}"
        );
        assert_eq!(hit, bytes_fused(&s, dt));
        let (miss, fits, _) = flash_bytes_cached(&s, dt, tiles, Mask::NONE, 1e6, 132);
        assert!(!fits);
        assert_eq!(miss, (t.loaded + t.stored) as f64);
        assert!(miss > 8.0 * hit); // Tr = 16 reads of K and V against one
    }

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

// ANCHOR: flash_model
/// The keys query row `i` can see, as a half-open interval `[lo, hi)` (empty when `lo >= hi`): causal
/// keeps `j <= p`, a window of `W` keeps `j > p - W`, with `p = i + Nk - Nq`.
pub fn visible_keys(mask: Mask, i: usize, nq: usize, nk: usize) -> (i64, i64) {
    let p = i as i64 + nk as i64 - nq as i64;
    let hi = if mask.causal {
        (p + 1).min(nk as i64)
    } else {
        nk as i64
    };
    let lo = match mask.window_keys() {
        Some(w) => (p - w + 1).max(0),
        None => 0,
    };
    (lo, hi.max(0))
}

/// Slow-memory traffic of tiled FlashAttention with `Br x Bc` tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashTraffic {
    /// Bytes read: each Q tile once, each visible K and V tile once per query tile.
    pub loaded: u64,
    /// Bytes written: each O tile once.
    pub stored: u64,
    /// (Q tile, K/V tile) pairs computed.
    pub computed: u64,
    /// Pairs skipped because the mask hides every element.
    pub skipped: u64,
}

/// The traffic model of tiled FlashAttention: `Q` and `O` move once, and a K/V tile is read once for
/// every query tile that can see any of it. Without a mask this is the closed form
/// `e B Hq (2 Nq D + 2 Tr Nk D)` with `Tr = ceil(Nq / Br)`: K and V are read `Tr` times.
pub fn flash_traffic(s: &AttnShape, dt: DType, br: usize, bc: usize, mask: Mask) -> FlashTraffic {
    let e = dt.bytes() as u64;
    let (tr, tc) = (s.nq.div_ceil(br), s.nk.div_ceil(bc));
    let heads = (s.b * s.hq) as u64;
    let (mut kv_rows, mut computed) = (0u64, 0u64);
    for t in 0..tr {
        let (i0, i1) = (t * br, (t * br + br).min(s.nq));
        // Visible keys of the tile's rows: the intervals slide monotonically, so their union is
        // [lo(first row), hi(last row)); an empty last row means no row sees anything.
        let (lo, _) = visible_keys(mask, i0, s.nq, s.nk);
        let (_, hi) = visible_keys(mask, i1 - 1, s.nq, s.nk);
        if hi <= lo {
            continue; // causal with more queries than keys: these rows see nothing
        }
        for jt in 0..tc {
            let (j0, j1) = ((jt * bc) as i64, ((jt * bc + bc).min(s.nk)) as i64);
            if j0 < hi && lo < j1 {
                computed += 1;
                kv_rows += (j1 - j0) as u64;
            }
        }
    }
    let per_head_q = (s.nq * s.d) as u64;
    FlashTraffic {
        loaded: e * heads * (per_head_q + 2 * kv_rows * s.d as u64),
        stored: e * heads * per_head_q,
        computed: heads * computed,
        skipped: heads * (tr * tc) as u64 - heads * computed,
    }
}

/// FlashAttention's asymptotic count (Dao et al. 2022, Theorem 2): with on-chip memory of `M` elements
/// and `Br ~ M / (4 D)`, slow-memory accesses are `Theta(N^2 D^2 / M)` per head. This is that
/// expression's value, `Nq Nk D^2 / M` elements, per head, to set beside the concrete count.
pub fn flash_theta_elements(nq: usize, nk: usize, d: usize, sram_elements: usize) -> f64 {
    nq as f64 * nk as f64 * (d * d) as f64 / sram_elements as f64
}
// ANCHOR_END: flash_model

// ANCHOR: cached
/// Tiled Flash with a cache in front of slow memory: what reaches slow memory when `resident` query
/// tiles run at once, scheduled query tile fastest (the GPU kernels' grid order; on a CPU, the work
/// items one core takes in turn). The tiles in flight span at most `resident / Tr + 1` heads, whose K
/// and V stay live. If that working set fits in `cache_bytes`, every re-read of K and V after a head's
/// first is a hit and slow memory sees the fused ideal (each tensor once); otherwise every re-read
/// goes to slow memory and the tile model stands. A threshold, not a simulation of the cache: it says
/// which side of the line a problem is on. Returns the bytes, whether the working set fits, and the
/// working set in bytes.
pub fn flash_bytes_cached(
    s: &AttnShape,
    dt: DType,
    tiles: (usize, usize),
    mask: Mask,
    cache_bytes: f64,
    resident: usize,
) -> (f64, bool, f64) {
    let tr = s.nq.div_ceil(tiles.0.max(1));
    let heads = (resident.div_ceil(tr) + 1).min(s.b * s.hkv) as f64;
    let working = heads * 2.0 * (s.nk * s.d * dt.bytes()) as f64;
    if working <= cache_bytes {
        (bytes_fused(s, dt), true, working)
    } else {
        let t = flash_traffic(s, dt, tiles.0, tiles.1, mask);
        ((t.loaded + t.stored) as f64, false, working)
    }
}
// ANCHOR_END: cached
