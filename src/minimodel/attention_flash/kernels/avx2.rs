//! The AVX2 register blocks, with explicit intrinsics: the same kernels as the AVX-512 module beside
//! them, on 8 lanes and 16 vector registers. Without them the AVX2 build ran the portable loops
//! compiled for AVX2, whose accumulators LLVM kept on the stack (a load, an FMA and a store for every
//! multiply-add), and whose `mul_add` outside these functions became a library call.

use std::arch::x86_64::*;

// ANCHOR: block_avx2
/// `C[R x 8 V] (+)= A[R x k] B[k x 8 V]` (an `8 V`-wide column slice of `B`, row stride `ldb`):
/// `R V` accumulators live in registers for the whole `k` loop; per step, `V` loads of `B`, `R`
/// broadcasts of `A`, `R V` FMAs. With 16 registers, 6 rows by 2 (12 accumulators, 2 of `B`, one
/// broadcast) is the largest block that leaves none on the stack. With `accumulate` the
/// accumulators start from `C` (times `alpha[i]` on row `i` when given: the online softmax's
/// rescale); they end stored to `C` (row stride `ldc`).
///
/// # Safety
/// The CPU has AVX2 and FMA; `a[i]` has `k` elements; `b` has `(k - 1) * ldb + 8 V` elements at
/// least; `c` has `(R - 1) * ldc + 8 V`.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block<const R: usize, const V: usize>(
    a: [&[f32]; R],
    b: &[f32],
    ldb: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    alpha: Option<[f32; R]>,
) {
    assert!(k > 0 && a.iter().all(|r| r.len() >= k) && b.len() >= (k - 1) * ldb + 8 * V);
    assert!(c.len() >= (R - 1) * ldc + 8 * V);
    let mut ap = [std::ptr::null::<f32>(); R];
    for (p, row) in ap.iter_mut().zip(&a) {
        *p = row.as_ptr();
    }
    let (bp, cp) = (b.as_ptr(), c.as_mut_ptr());
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    if accumulate {
        for (i, acc_r) in acc.iter_mut().enumerate() {
            for (j, x) in acc_r.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(cp.add(i * ldc + 8 * j));
                if let Some(alpha) = alpha {
                    *x = _mm256_mul_ps(_mm256_set1_ps(alpha[i]), *x);
                }
            }
        }
    }
    for kk in 0..k {
        let mut bv = [_mm256_setzero_ps(); V];
        for (j, x) in bv.iter_mut().enumerate() {
            *x = _mm256_loadu_ps(bp.add(kk * ldb + 8 * j));
        }
        for (acc_r, p) in acc.iter_mut().zip(&ap) {
            let x = _mm256_set1_ps(*p.add(kk)); // broadcast a[i][kk]
            for (y, bj) in acc_r.iter_mut().zip(&bv) {
                *y = _mm256_fmadd_ps(x, *bj, *y);
            }
        }
    }
    for (i, acc_r) in acc.iter().enumerate() {
        for (j, x) in acc_r.iter().enumerate() {
            _mm256_storeu_ps(cp.add(i * ldc + 8 * j), *x);
        }
    }
}
// ANCHOR_END: block_avx2

/// `c (+)= a b` for the columns `[0, n - n % 8)` in register blocks: 6 rows (then 4, 2, 1 for the
/// last) by 16 columns (then 8). Returns the columns covered; the caller finishes the rest.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a: (m, k)`, `b: (k, n)`, `c: (m, n)` row-major, `k > 0`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    acc: bool,
) -> usize {
    use super::{block_rows, row_slices as rows};
    let n8 = n - n % 8;
    let mut r = 0;
    while r < m {
        let step = block_rows(m - r);
        let mut col = 0;
        while col < n8 {
            let wide = n8 - col >= 16;
            let (bs, cs) = (&b[col..], &mut c[r * n + col..]);
            match (step, wide) {
                (6, true) => block::<6, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                (6, false) => block::<6, 1>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                (4, true) => block::<4, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                (4, false) => block::<4, 1>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                (2, true) => block::<2, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                (2, false) => block::<2, 1>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                (_, true) => block::<1, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                (_, false) => block::<1, 1>(rows(a, r, k), bs, n, k, cs, n, acc, None),
            }
            col += if wide { 16 } else { 8 };
        }
        r += step;
    }
    n8
}

/// `2^x` on 8 lanes: [`super::exp2`] step for step (the same clamp, rounding, polynomial and
/// exponent bits), so bit-identical to it, lane for lane.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn exp2v(x: __m256) -> __m256 {
    const C: [f32; 7] = super::EXP2_C;
    let xc = _mm256_max_ps(x, _mm256_set1_ps(-126.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm256_add_ps(
        xc,
        _mm256_set1_ps(0.5),
    ));
    let f = _mm256_sub_ps(xc, n);
    let mut p = _mm256_set1_ps(C[6]);
    for c in C[..6].iter().rev() {
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(*c));
    }
    // 2^n from its bits: n + 127 in [1, 127] shifted into the exponent field.
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-126.0));
    _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e)))
}

/// [`exp2v`] over a slice (a multiple of 8 long).
///
/// # Safety
/// The CPU has AVX2 and FMA; `dst` is as long as `src`, a multiple of 8.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp2_slice(src: &[f32], dst: &mut [f32]) {
    assert!(src.len() == dst.len() && src.len().is_multiple_of(8));
    for (d, x) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
        _mm256_storeu_ps(d.as_mut_ptr(), exp2v(_mm256_loadu_ps(x.as_ptr())));
    }
}

/// The largest of 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn reduce_max(x: __m256) -> f32 {
    let h = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_max_ss(h, _mm_shuffle_ps::<1>(h, h));
    _mm_cvtss_f32(h)
}

/// [`super::softmax_tile`] on 8 lanes at a time, for `bc` and `d` multiples of 8: a row's max and sum
/// are one register each, folded once per row; the rows' rescale factors `2^(m - m')` come 8 at a
/// time from one vector exponential. The sum goes into the first 8 of the row's `L` partial sums.
///
/// # Safety
/// The CPU has AVX2 and FMA; `s: (br, bc)`, `o: (br, d)`, `m: (br)`, `l: (br, L)`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_tile(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    br: usize,
    bc: usize,
    d: usize,
) {
    const L: usize = super::L;
    assert!(bc.is_multiple_of(8) && d.is_multiple_of(8) && s.len() >= br * bc && o.len() >= br * d);
    assert!(m.len() >= br && l.len() >= br * L);
    for r0 in (0..br).step_by(8) {
        let rows = 8.min(br - r0);
        let mut mnew = [f32::NEG_INFINITY; 8];
        let mut mold = [f32::NEG_INFINITY; 8];
        for (i, (mn, mo)) in mnew.iter_mut().zip(mold.iter_mut()).enumerate().take(rows) {
            let row = s[(r0 + i) * bc..][..bc].as_ptr();
            let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
            for j in (0..bc).step_by(8) {
                mx = _mm256_max_ps(mx, _mm256_loadu_ps(row.add(j)));
            }
            *mo = m[r0 + i];
            *mn = reduce_max(mx).max(*mo);
        }
        // 2^(m - m'): 0 when m = -inf; a row with m' = -inf is skipped below (its lanes' -inf - -inf
        // is NaN, never read).
        let mut alphas = [0.0f32; 8];
        let diff = _mm256_sub_ps(
            _mm256_loadu_ps(mold.as_ptr()),
            _mm256_loadu_ps(mnew.as_ptr()),
        );
        _mm256_storeu_ps(alphas.as_mut_ptr(), exp2v(diff));
        for i in 0..rows {
            let (r, m_new, alpha) = (r0 + i, mnew[i], alphas[i]);
            if m_new == f32::NEG_INFINITY {
                s[r * bc..][..bc].fill(0.0); // nothing visible yet: contributes nothing
                continue;
            }
            let row = s[r * bc..][..bc].as_mut_ptr();
            let (mv, mut sum) = (_mm256_set1_ps(m_new), _mm256_setzero_ps());
            for j in (0..bc).step_by(8) {
                let p = exp2v(_mm256_sub_ps(_mm256_loadu_ps(row.add(j)), mv));
                _mm256_storeu_ps(row.add(j), p);
                sum = _mm256_add_ps(sum, p);
            }
            let (lr, av) = (l[r * L..][..L].as_mut_ptr(), _mm256_set1_ps(alpha));
            _mm256_storeu_ps(lr, _mm256_fmadd_ps(_mm256_loadu_ps(lr), av, sum));
            for j in (8..L).step_by(8) {
                _mm256_storeu_ps(lr.add(j), _mm256_mul_ps(_mm256_loadu_ps(lr.add(j)), av));
            }
            m[r] = m_new;
            if alpha != 1.0 {
                let orow = o[r * d..][..d].as_mut_ptr();
                for j in (0..d).step_by(8) {
                    _mm256_storeu_ps(orow.add(j), _mm256_mul_ps(av, _mm256_loadu_ps(orow.add(j))));
                }
            }
        }
    }
}

/// Transpose the 8 x 8 block at `src` (row stride `lds`) into `dst` (row stride `ldd`), times
/// `scale`: 8 loads, three rounds of shuffles (pairs of rows, then four rows within 128-bit lanes,
/// then the lanes), 8 multiplies and 8 stores.
///
/// # Safety
/// The CPU has AVX2 and FMA; both blocks are in bounds.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn transpose8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, scale: f32) {
    let (mut r, mut t) = ([_mm256_setzero_ps(); 8], [_mm256_setzero_ps(); 8]);
    for (i, x) in r.iter_mut().enumerate() {
        *x = _mm256_loadu_ps(src.add(i * lds));
    }
    for i in (0..8).step_by(2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for g in (0..8).step_by(4) {
        r[g] = _mm256_shuffle_ps::<0x44>(t[g], t[g + 2]);
        r[g + 1] = _mm256_shuffle_ps::<0xEE>(t[g], t[g + 2]);
        r[g + 2] = _mm256_shuffle_ps::<0x44>(t[g + 1], t[g + 3]);
        r[g + 3] = _mm256_shuffle_ps::<0xEE>(t[g + 1], t[g + 3]);
    }
    let sv = _mm256_set1_ps(scale);
    for k in 0..4 {
        let lo = _mm256_permute2f128_ps::<0x20>(r[k], r[4 + k]);
        let hi = _mm256_permute2f128_ps::<0x31>(r[k], r[4 + k]);
        _mm256_storeu_ps(dst.add(k * ldd), _mm256_mul_ps(lo, sv));
        _mm256_storeu_ps(dst.add((4 + k) * ldd), _mm256_mul_ps(hi, sv));
    }
}
