//! Decode's inner loop on x86-64 vectors, reading a block's K and V rows where they lie.
//!
//! The portable walk ([`super::paged_attention`]) copies each block into f32 tiles, transposes K, and
//! runs the tiled kernel's step on them: right for a prefill tile of hundreds of query rows, wasteful for
//! decode, whose `G` query rows (one per head of a GQA group, 4 for 8 query heads on 2 kv heads) see each
//! key once. There the copies cost as much as the arithmetic: the step ran well below the machine's read
//! bandwidth, and f16 was no faster than f32 (Lab 03). Here the block's rows are read in place, a vector
//! of lanes at a time, widened to f32 in registers (`vcvtph2ps` for f16, a shift for bf16):
//!
//! 1. `S = Q K^T`: every (query row, key row) pair is a dot product of length `D`; 4 query rows by 2 key
//!    rows at a time keep 8 accumulators in registers, each query load shared by two keys.
//! 2. The online softmax of the tiled kernel, `avx2::softmax_tile`, on `S` padded to 8 columns.
//! 3. `O += P V`: 4 query rows by two vectors of columns of accumulators, each V row's columns loaded
//!    once and widened once for the 4 rows.
//!
//! The loops are written once, over a vector type ([`Wide`]): AVX2's 8 lanes (`__m256`), or AVX-512's
//! 16 (`__m512`) where the CPU has AVX-512F and `D` is a multiple of 16: half the instructions for the
//! same arithmetic (`G` rows times `2 D` multiply-adds a key). What that buys depends on how much of the
//! step the arithmetic is once the bytes stream; Lab 03's Table 03.2 times the contiguous decode at both
//! widths (`contiguous-8lanes`).
//!
//! Memory is still the bound, so each pass also asks for the rows the next one reads (across a block
//! boundary their address comes from the table, which no hardware prefetcher can guess): the next K rows
//! while the scores are computed, the next V rows during `P V`, a row at a time rather than in one burst.

use crate::minimodel::attention_flash::kernels::avx2;
use crate::minimodel::numeric::Element;
use half::{bf16, f16};
use std::arch::x86_64::*;

/// A vector of f32 lanes the loops compute in: AVX2's `__m256` or AVX-512's `__m512`. Every method is
/// one or two instructions, inlined into the entry point compiled for the vector's instruction set.
///
/// # Safety
/// Every method needs the vector's instruction set on this CPU (AVX2 and FMA, or AVX-512F): the caller
/// is compiled for it and has checked it ([`available`], [`wide_available`]); `load` and `store` need
/// `LANES` f32 readable or writable at `p`.
#[allow(clippy::missing_safety_doc)] // the trait's own section above covers its methods
pub trait Wide: Copy {
    /// f32 lanes in one vector.
    const LANES: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self;
    /// `LANES` f32 from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// `LANES` f32 to `p`.
    unsafe fn store(self, p: *mut f32);
    /// `a * b + c`, fused.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    /// The vector folded to 8 lanes whose sum is its sum (the identity for 8 lanes).
    unsafe fn to8(self) -> __m256;
}

impl Wide for __m256 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn to8(self) -> __m256 {
        self
    }
}

impl Wide for __m512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn to8(self) -> __m256 {
        // The upper 8 lanes added onto the lower 8 (AVX-512F's extract works on 4 doubles).
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self)));
        _mm256_add_ps(_mm512_castps512_ps256(self), hi)
    }
}

/// An element type the loops read a vector `W` of at a time, widened to f32 in the register.
pub trait Lanes<W: Wide>: Element {
    /// Load `W::LANES` elements from `p` as f32 lanes.
    ///
    /// # Safety
    /// The CPU has `W`'s instruction set (and F16C); `W::LANES` elements are readable at `p`.
    unsafe fn load(p: *const Self) -> W;
}

impl Lanes<__m256> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
}

impl Lanes<__m256> for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
}

impl Lanes<__m256> for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16) -> __m256 {
        // A bf16 is the top half of the f32 with the same bits.
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    }
}

impl Lanes<__m512> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
}

impl Lanes<__m512> for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
}

impl Lanes<__m512> for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16) -> __m512 {
        let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
    }
}

/// An element type both widths read: f32, f16 and bf16.
pub trait Both: Lanes<__m256> + Lanes<__m512> {}
impl<E: Lanes<__m256> + Lanes<__m512>> Both for E {}

/// Whether this CPU runs [`absorb`] (AVX2, FMA and F16C; the 16-lane loop needs AVX-512F besides).
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// Whether this CPU runs the 16-lane loop ([`available`] and AVX-512F).
pub fn wide_available() -> bool {
    available() && std::is_x86_feature_detected!("avx512f")
}

/// The sum of 8 lanes.
#[inline(always)]
unsafe fn hsum(x: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<1>(h, h)))
}

/// The sums of 8 vectors, as the lanes of one: `hadd` pairs them within 128-bit halves twice, then
/// the two halves of each are added.
#[inline(always)]
unsafe fn hsum8(a: [__m256; 8]) -> __m256 {
    let h01 = _mm256_hadd_ps(a[0], a[1]);
    let h23 = _mm256_hadd_ps(a[2], a[3]);
    let h45 = _mm256_hadd_ps(a[4], a[5]);
    let h67 = _mm256_hadd_ps(a[6], a[7]);
    let lo = _mm256_hadd_ps(h01, h23); // [a0 a1 a2 a3 | a0 a1 a2 a3]: low and high halves' sums
    let hi = _mm256_hadd_ps(h45, h67);
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(lo, hi),
        _mm256_permute2f128_ps::<0x31>(lo, hi),
    )
}

/// Ask for the lines of `bytes` bytes at `p` (into every cache level).
#[inline(always)]
unsafe fn prefetch(p: *const u8, bytes: usize) {
    for off in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.add(off).cast());
    }
}

/// The next block's K and V rows to ask for while this one is computed (`rows` of `D` each).
#[derive(Clone, Copy)]
pub struct Ahead<E> {
    /// First K row of the next block.
    pub k: *const E,
    /// First V row of the next block.
    pub v: *const E,
    /// Rows in it.
    pub rows: usize,
}

// ANCHOR: scores
/// `s[r ls + j] = q_r . k_j` for query rows `r0 .. r0 + R` and key rows `j0 .. j0 + J`: `R J`
/// accumulators across `D`, one load of each key chunk for the `R` rows, one of each query chunk for the
/// `J` keys.
#[inline(always)]
unsafe fn dots<W: Wide, E: Lanes<W>, const R: usize, const J: usize>(
    q: *const f32,
    k: *const E,
    d: usize,
    s: *mut f32,
    ls: usize,
) {
    let mut acc = [[W::zero(); J]; R];
    for c in (0..d).step_by(W::LANES) {
        let mut kv = [W::zero(); J];
        for (j, x) in kv.iter_mut().enumerate() {
            *x = E::load(k.add(j * d + c));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let qv = W::load(q.add(r * d + c));
            for (a, x) in acc_r.iter_mut().zip(&kv) {
                *a = W::fmadd(qv, *x, *a);
            }
        }
    }
    if R == 4 && J == 2 {
        // The 8 sums at once: three rounds of pairwise adds leave lane i holding accumulator i's sum.
        let a: [__m256; 8] = std::array::from_fn(|i| acc[i / 2][i % 2].to8());
        let sums = hsum8(a);
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), sums);
        for (i, x) in out.iter().enumerate() {
            *s.add(i / 2 * ls + i % 2) = *x;
        }
        return;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (j, a) in acc_r.iter().enumerate() {
            *s.add(r * ls + j) = hsum(a.to8());
        }
    }
}
// ANCHOR_END: scores

/// `o[r] += sum_j p[r ls + j] v_j` for rows `r0 .. r0 + R` and the `V` vectors of columns at `c`, over
/// the `n` key rows: `R V` accumulators, one load and widening of each V chunk for the `R` rows.
#[inline(always)]
unsafe fn pv<W: Wide, E: Lanes<W>, const R: usize, const V: usize>(
    p: *const f32,
    ls: usize,
    v: *const E,
    n: usize,
    d: usize,
    o: *mut f32,
) {
    let mut acc = [[W::zero(); V]; R];
    for (r, acc_r) in acc.iter_mut().enumerate() {
        for (c, a) in acc_r.iter_mut().enumerate() {
            *a = W::load(o.add(r * d + W::LANES * c));
        }
    }
    for j in 0..n {
        let mut vv = [W::zero(); V];
        for (c, x) in vv.iter_mut().enumerate() {
            *x = E::load(v.add(j * d + W::LANES * c));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let pr = W::splat(*p.add(r * ls + j));
            for (a, x) in acc_r.iter_mut().zip(&vv) {
                *a = W::fmadd(pr, *x, *a);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (c, a) in acc_r.iter().enumerate() {
            a.store(o.add(r * d + W::LANES * c));
        }
    }
}

/// Keys per pass of the three loops: 16 rows of K and of V in f32 at D = 128 are 16 KB, which stay in
/// L1 while the scores, the softmax and `P V` pass over them (64-row blocks in one pass were markedly
/// slower at D = 128 in f32: the `P V` loop's column slices found V in L2).
pub const CHUNK: usize = 16;

// ANCHOR: absorb
/// Absorb `n` keys (`k`, `v`: `n` rows of `D`, in place) into `G` query rows: `q: (G, D)` already
/// scaled by `log2(e) / sqrt(D)`; running max `m: (G)`, partial sums `l: (G, L)` and output
/// `o: (G, D)` as in the tiled kernel; `s` scratch of `G` rows of [`CHUNK`]. In passes of [`CHUNK`]
/// keys, each asking for the next pass's rows (the last for `ahead`'s, the next block's). With `wide`,
/// 16 lanes at a time (AVX-512F, `D` a multiple of 16), else 8 (AVX2).
///
/// # Safety
/// [`available`] ([`wide_available`] with `wide`); `D` a multiple of 8 (16 with `wide`); `k` and `v`
/// hold `n D` elements, `ahead` (if any) `rows D`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn absorb<E: Both>(
    wide: bool,
    q: &[f32],
    k: &[E],
    v: &[E],
    n: usize,
    d: usize,
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    s: &mut [f32],
    ahead: Option<Ahead<E>>,
) {
    assert!(k.len() >= n * d && v.len() >= n * d);
    assert!(d.is_multiple_of(if wide { 16 } else { 8 }));
    if wide {
        absorb_512(q, k, v, n, d, m, l, o, s, ahead)
    } else {
        absorb_256(q, k, v, n, d, m, l, o, s, ahead)
    }
}

/// The passes of [`absorb`], at the width `W`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn passes<W: Wide, E: Lanes<W>>(
    q: &[f32],
    k: &[E],
    v: &[E],
    n: usize,
    d: usize,
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    s: &mut [f32],
    ahead: Option<Ahead<E>>,
) {
    for j in (0..n).step_by(CHUNK) {
        let c = (n - j).min(CHUNK);
        let next = if j + c < n {
            Some(Ahead {
                k: k.as_ptr().add((j + c) * d),
                v: v.as_ptr().add((j + c) * d),
                rows: (n - j - c).min(CHUNK),
            })
        } else {
            // The next block's first pass: a pass asks for one pass's rows, never a whole block at once.
            ahead.map(|a| Ahead {
                rows: a.rows.min(CHUNK),
                ..a
            })
        };
        let rows = j * d..(j + c) * d;
        pass::<W, E>(q, &k[rows.clone()], &v[rows], c, d, m, l, o, s, next);
    }
}
// ANCHOR_END: absorb

/// [`absorb`] in 8 lanes, compiled for AVX2.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn absorb_256<E: Lanes<__m256>>(
    q: &[f32],
    k: &[E],
    v: &[E],
    n: usize,
    d: usize,
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    s: &mut [f32],
    ahead: Option<Ahead<E>>,
) {
    passes::<__m256, E>(q, k, v, n, d, m, l, o, s, ahead)
}

/// [`absorb`] in 16 lanes, compiled for AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn absorb_512<E: Lanes<__m512>>(
    q: &[f32],
    k: &[E],
    v: &[E],
    n: usize,
    d: usize,
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    s: &mut [f32],
    ahead: Option<Ahead<E>>,
) {
    passes::<__m512, E>(q, k, v, n, d, m, l, o, s, ahead)
}

// ANCHOR: pass
/// One pass of [`absorb`] over `n <= CHUNK` keys.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pass<W: Wide, E: Lanes<W>>(
    q: &[f32],
    k: &[E],
    v: &[E],
    n: usize,
    d: usize,
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    s: &mut [f32],
    ahead: Option<Ahead<E>>,
) {
    let g = m.len();
    let ls = n.next_multiple_of(8);
    assert!(d.is_multiple_of(W::LANES) && n > 0 && k.len() >= n * d && v.len() >= n * d);
    assert!(q.len() >= g * d && o.len() >= g * d && s.len() >= g * ls);
    let (kp, vp, qp, sp) = (k.as_ptr(), v.as_ptr(), q.as_ptr(), s.as_mut_ptr());
    let row_bytes = d * std::mem::size_of::<E>();
    // 1. Scores, 4 query rows by 2 keys at a time; with each pair of keys, the next block's same rows.
    let mut r0 = 0;
    while r0 < g {
        let rows = (g - r0).min(4);
        let (qr, sr) = (qp.add(r0 * d), sp.add(r0 * ls));
        let mut j = 0;
        while j < n {
            if let (0, Some(a)) = (r0, ahead) {
                for jj in j..(j + 2).min(a.rows) {
                    prefetch(a.k.add(jj * d).cast(), row_bytes); // the next block's K, row for row
                }
            }
            let (kj, sj) = (kp.add(j * d), sr.add(j));
            match (rows, n - j >= 2) {
                (4, true) => dots::<W, E, 4, 2>(qr, kj, d, sj, ls),
                (4, false) => dots::<W, E, 4, 1>(qr, kj, d, sj, ls),
                (3, true) => dots::<W, E, 3, 2>(qr, kj, d, sj, ls),
                (3, false) => dots::<W, E, 3, 1>(qr, kj, d, sj, ls),
                (2, true) => dots::<W, E, 2, 2>(qr, kj, d, sj, ls),
                (2, false) => dots::<W, E, 2, 1>(qr, kj, d, sj, ls),
                (_, true) => dots::<W, E, 1, 2>(qr, kj, d, sj, ls),
                (_, false) => dots::<W, E, 1, 1>(qr, kj, d, sj, ls),
            }
            j += 2;
        }
        for i in 0..rows {
            s[(r0 + i) * ls + n..][..ls - n].fill(f32::NEG_INFINITY); // padding: weight 0
        }
        r0 += rows;
    }
    // 2. The online softmax: new maxima, P = 2^(S - m'), l and o rescaled by 2^(m - m').
    avx2::softmax_tile(&mut s[..g * ls], m, l, o, g, ls, d);
    // 3. O += P V, 4 rows by two vectors of columns (then one) at a time.
    let op = o.as_mut_ptr();
    let step = 2 * W::LANES;
    let mut r0 = 0;
    while r0 < g {
        let rows = (g - r0).min(4);
        let (pr, or) = (sp.add(r0 * ls), op.add(r0 * d));
        let mut c = 0;
        while c < d {
            let two = d - c >= step;
            if let (0, Some(a)) = (r0, ahead) {
                // The next block's V, its rows spread over this block's column slices.
                let per = a.rows.div_ceil(d.div_ceil(step));
                for jj in (c / step * per..).take(per).take_while(|&jj| jj < a.rows) {
                    prefetch(a.v.add(jj * d).cast(), row_bytes);
                }
            }
            let (vc, oc) = (vp.add(c), or.add(c));
            match (rows, two) {
                (4, true) => pv::<W, E, 4, 2>(pr, ls, vc, n, d, oc),
                (4, false) => pv::<W, E, 4, 1>(pr, ls, vc, n, d, oc),
                (3, true) => pv::<W, E, 3, 2>(pr, ls, vc, n, d, oc),
                (3, false) => pv::<W, E, 3, 1>(pr, ls, vc, n, d, oc),
                (2, true) => pv::<W, E, 2, 2>(pr, ls, vc, n, d, oc),
                (2, false) => pv::<W, E, 2, 1>(pr, ls, vc, n, d, oc),
                (_, true) => pv::<W, E, 1, 2>(pr, ls, vc, n, d, oc),
                (_, false) => pv::<W, E, 1, 1>(pr, ls, vc, n, d, oc),
            }
            c += if two { step } else { W::LANES };
        }
        r0 += rows;
    }
}
// ANCHOR_END: pass

/// The sum of every element of `k` and `v` (one block's rows), asking for `ahead`'s lines at the same
/// pace as [`absorb`] does (each 32 elements read, the next block's 32 at the same offset): the decode's
/// reads without its arithmetic. Always 8 lanes: the read pass measures the loads, not the arithmetic.
///
/// # Safety
/// The CPU has AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn sum_rows<E: Lanes<__m256>>(k: &[E], v: &[E], ahead: Option<(&[E], &[E])>) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut tail = 0.0f32;
    for (x, next) in [(k, ahead.map(|a| a.0)), (v, ahead.map(|a| a.1))] {
        let whole = x.len() - x.len() % 32;
        for c in (0..whole).step_by(32) {
            if let Some(next) = next.filter(|nx| c < nx.len()) {
                prefetch(next.as_ptr().add(c).cast(), 32 * std::mem::size_of::<E>());
            }
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, E::load(x.as_ptr().add(c + 8 * i)));
            }
        }
        tail += x[whole..].iter().map(|e| e.to_f32()).sum::<f32>();
    }
    hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    )) + tail
}
