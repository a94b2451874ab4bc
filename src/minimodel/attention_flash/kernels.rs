//! The inner loops of the tiled forward pass: the two tile products and the exponential.
//!
//! They are written as plain Rust over fixed-width lanes so that LLVM vectorises them, and compiled three
//! times: for AVX-512, for AVX2 with FMA, and portably. [`Isa::detect`] picks the best the CPU has at run
//! time (the binary itself stays portable). Shapes are in the caller's tile buffers, all `f32`:
//! `q: (Br, D)`, `kt: (D, Bc)` (the K tile transposed), `s: (Br, Bc)`, `v: (Bc, D)`, `o: (Br, D)`.

/// Which instruction set the inner loops were compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F (16 lanes of f32, fused multiply-add).
    Avx512,
    /// x86-64 with AVX2 and FMA (8 lanes of f32).
    Avx2Fma,
    /// Whatever the target has by default (SSE2 on x86-64).
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }

    /// Short name for records.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Portable => "portable",
        }
    }
}

/// `a * b + c`, fused into one instruction where the target has FMA (inside the `target_feature`
/// wrappers below), two roundings otherwise.
#[inline(always)]
fn fma<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

// ANCHOR: exp2
/// The Taylor coefficients of `2^f = e^(f ln 2)`, lowest degree first (shared with the AVX-512 copy).
const EXP2_C: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_5,   // ln2^2 / 2
    0.055_504_11,  // ln2^3 / 6
    0.009_618_129, // ln2^4 / 24
    0.001_333_355_8,
    0.000_154_035_3,
];

/// `2^x` for `x <= 0`, to about 2 ulp, in a form that vectorises: split `x = n + f` with `n` an integer
/// and `f` in `[-0.5, 0.5)`, evaluate `2^f` by its Taylor polynomial (degree 6: error below `1.2e-7`
/// relative), and put `n` straight into the exponent bits. Inputs below `-126` (and `-inf`) give exactly 0.
#[inline(always)]
pub fn exp2<const FUSED: bool>(x: f32) -> f32 {
    const C: [f32; 7] = EXP2_C;
    let xc = x.max(-126.0);
    let n = (xc + 0.5).floor();
    let f = xc - n;
    let mut p = C[6];
    for c in C[..6].iter().rev() {
        p = fma::<FUSED>(p, f, *c);
    }
    // 2^n by building the float's bits: n + 127 is an integer in [1, 127]; adding 2^23 puts it in the
    // low mantissa bits of a float (no float-to-int conversion, which vectorises poorly), and shifting
    // left by 23 moves it into the exponent field (the 2^23's own bits fall off the top).
    let scale = f32::from_bits((n + (8_388_608.0 + 127.0)).to_bits() << 23);
    if x < -126.0 {
        0.0
    } else {
        p * scale
    }
}
// ANCHOR_END: exp2

/// Query rows in the next register block when `left` remain: 6, then 4, 2 or 1 for the last (the
/// AVX-512 and AVX2 blocks alike).
#[inline(always)]
fn block_rows(left: usize) -> usize {
    match left {
        6.. => 6,
        4 | 5 => 4,
        2 | 3 => 2,
        _ => 1,
    }
}

/// Rows `r .. r + R` of the row-major `a` (rows of `k`): one register block's `A` operand.
#[inline(always)]
fn row_slices<const R: usize>(a: &[f32], r: usize, k: usize) -> [&[f32]; R] {
    std::array::from_fn(|i| &a[(r + i) * k..][..k])
}

/// `max` of a row with `LANES` independent lanes, so the reduction vectorises (a single running max would
/// be a chain of dependent operations). NaN never occurs here: inputs are checked finite.
#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, y) in acc.iter_mut().zip(c) {
            *a = if *y > *a { *y } else { *a };
        }
    }
    let m = tail
        .iter()
        .fold(f32::NEG_INFINITY, |a, &y| if y > a { y } else { a });
    acc.iter().fold(m, |a, &y| if y > a { y } else { a })
}

/// Sum of a row with `LANES` independent lanes (a reordering of the additions, to let them vectorise).
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, y) in acc.iter_mut().zip(c) {
            *a += y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Rows of a tile product handled together by the portable loop: their accumulators stay in registers.
/// With `CS` columns (16 for AVX2: two registers a row), that is 8 independent accumulators, enough to
/// keep two FMA units busy through the FMA's 4-cycle latency. (AVX-512 uses `x86::gemm`'s larger
/// blocks and leaves this loop only the last `n % 32` columns.)
const RS: usize = 4;
/// Lanes of the row reductions.
const LANES: usize = 16;
/// Partial sums kept per row for the softmax's normaliser (one AVX-512 register).
pub const L: usize = 16;

/// A row's normaliser from its `L` partial sums.
pub fn row_sum(l: &[f32]) -> f32 {
    l[..L].iter().sum()
}

/// The last step of a row's online softmax: each row of `o` (`d` wide) divided by its sum of
/// exponentials ([`row_sum`] of its `L` partial sums in `l`); a row that saw no key stays zero.
pub fn normalise_rows(o: &mut [f32], l: &[f32], d: usize) {
    for (r, orow) in o.chunks_mut(d).enumerate() {
        let lr = row_sum(&l[r * L..]);
        let inv = if lr > 0.0 { 1.0 / lr } else { 0.0 };
        orow.iter_mut().for_each(|x| *x *= inv);
    }
}

// ANCHOR: tile_gemm
/// `c = a b` (or `c += a b` when `accumulate`) for one tile: `a: (m, k)`, `b: (k, n)`, `c: (m, n)`, all
/// row-major. Both products of a tile step are this one kernel: `S = Q Kt` (`m = Br, k = D, n = Bc`)
/// and `o += P V` (`m = Br, k = Bc, n = D`). A block of `RS` rows of `a` by `CS` columns of `b` is
/// computed at a time, its `RS * CS` partial sums kept in registers for the whole `k` loop: per step
/// of `k`, one `CS`-wide load of `b` and `RS` broadcasts of single elements of `a` feed `RS * CS`
/// multiply-adds (an outer-product update).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_gemm<const FUSED: bool, const CS: usize>(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    // AVX-512 (CS == 32 only in `tile_step_avx512`): register blocks for every column but the last
    // n % 32, which the portable loop below finishes.
    #[cfg(target_arch = "x86_64")]
    let col0 = if CS == 32 && k > 0 {
        // SAFETY: CS == 32 only in `tile_step_avx512`, compiled for and run on AVX-512F; the slices
        // have the shapes `gemm` asks for (checked by its blocks' asserts).
        unsafe { x86::gemm(a, b, c, m, k, n, accumulate) }
    } else if CS == 16 && k > 0 {
        // SAFETY: CS == 16 only in `tile_step_avx2`, compiled for and run on AVX2 with FMA; the
        // slices have the shapes `gemm` asks for (checked by its blocks' asserts).
        unsafe { avx2::gemm(a, b, c, m, k, n, accumulate) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let col0 = 0;
    if col0 >= n {
        return; // the register blocks covered every column
    }
    let mut r = 0;
    while r < m {
        let rows = RS.min(m - r);
        let ar: [&[f32]; RS] = std::array::from_fn(|i| &a[(r + i).min(m - 1) * k..][..k]);
        let mut col = col0;
        while col < n {
            let cols = CS.min(n - col);
            let mut acc = [[0.0f32; CS]; RS];
            for kk in 0..k {
                let bk = &b[kk * n + col..][..cols]; // one row of b, `cols` wide
                for (accr, arow) in acc.iter_mut().zip(&ar).take(rows) {
                    let x = arow[kk]; // broadcast one element of a
                    for (y, z) in accr.iter_mut().zip(bk) {
                        *y = fma::<FUSED>(x, *z, *y);
                    }
                }
            }
            for (i, accr) in acc.iter().enumerate().take(rows) {
                let dst = &mut c[(r + i) * n + col..][..cols];
                if accumulate {
                    dst.iter_mut().zip(accr).for_each(|(y, z)| *y += z);
                } else {
                    dst.copy_from_slice(&accr[..cols]);
                }
            }
            col += CS;
        }
        r += RS;
    }
}
// ANCHOR_END: tile_gemm

// ANCHOR: softmax_tile
/// The online-softmax step for a tile of scores, in place: for each row `r`,
/// `m' = max(m, rowmax(S_r))`, `P_r = 2^(S_r - m')`, `l' = l 2^(m - m') + rowsum(P_r)`, and the row's
/// output accumulator is scaled by `alpha = 2^(m - m')`. Scores are in log2 units (the K tile was
/// scaled by `log2(e) / sqrt(D)` as it was transposed). A row whose scores are all `-inf` so far keeps `m = -inf`, `l = 0`, `P = 0`.
#[inline(always)]
fn softmax_tile<const FUSED: bool>(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    br: usize,
    bc: usize,
    d: usize,
) {
    for r in 0..br {
        let row = &mut s[r * bc..][..bc];
        let m_new = lanes_max(row).max(m[r]);
        if m_new == f32::NEG_INFINITY {
            row.fill(0.0); // nothing visible yet: contributes nothing
            continue;
        }
        let alpha = exp2::<FUSED>(m[r] - m_new); // 0 when m = -inf
        for x in row.iter_mut() {
            *x = exp2::<FUSED>(*x - m_new); // P = 2^(S - m'), vectorised: no reduction in this loop
        }
        // All L partial sums rescaled (a vector loop may have filled them on an earlier tile of the
        // row), the new sum added to the first.
        let lr = &mut l[r * L..][..L];
        lr.iter_mut().for_each(|x| *x *= alpha);
        lr[0] += lanes_sum(row);
        m[r] = m_new;
        if alpha != 1.0 {
            for x in &mut o[r * d..][..d] {
                *x *= alpha;
            }
        }
    }
}
// ANCHOR_END: softmax_tile

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;

/// The AVX-512 register blocks, with explicit intrinsics: the compiler's auto-vectorised loops above
/// spilled accumulators to the stack, and these two blocks are where nearly all the FLOPs are.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    // ANCHOR: block
    /// `C[R x 16 V] (+)= A[R x k] B[k x 16 V]` (a `16 V`-wide column slice of `B`, row stride `ldb`):
    /// `R V` accumulators (R rows x V registers of 16 lanes) live in registers for the whole `k` loop;
    /// per step, `V` loads of `B`, `R` broadcasts of `A`, `R V` FMAs. With `accumulate` the
    /// accumulators start from `C` instead of zero (times `alpha[i]` on row `i` when given: the online
    /// softmax's rescale, applied as the accumulators are loaded); they end stored to `C` (row stride
    /// `ldc`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a[i]` has `k` elements; `b` has `(k - 1) * ldb + 16 V` elements at
    /// least; `c` has `(R - 1) * ldc + 16 V`.
    #[target_feature(enable = "avx512f")]
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
        assert!(k > 0 && a.iter().all(|r| r.len() >= k) && b.len() >= (k - 1) * ldb + 16 * V);
        assert!(c.len() >= (R - 1) * ldc + 16 * V);
        let ap: [*const f32; R] = std::array::from_fn(|i| a[i].as_ptr());
        let (bp, cp) = (b.as_ptr(), c.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        if accumulate {
            for (i, acc_r) in acc.iter_mut().enumerate() {
                for (j, x) in acc_r.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(cp.add(i * ldc + 16 * j));
                    if let Some(alpha) = alpha {
                        *x = _mm512_mul_ps(_mm512_set1_ps(alpha[i]), *x); // the softmax's rescale
                    }
                }
            }
        }
        for kk in 0..k {
            let bv: [__m512; V] =
                std::array::from_fn(|j| _mm512_loadu_ps(bp.add(kk * ldb + 16 * j)));
            for (acc_r, p) in acc.iter_mut().zip(&ap) {
                let x = _mm512_set1_ps(*p.add(kk)); // broadcast a[i][kk]
                for (y, bj) in acc_r.iter_mut().zip(&bv) {
                    *y = _mm512_fmadd_ps(x, *bj, *y);
                }
            }
        }
        for (i, acc_r) in acc.iter().enumerate() {
            for (j, x) in acc_r.iter().enumerate() {
                _mm512_storeu_ps(cp.add(i * ldc + 16 * j), *x);
            }
        }
    }
    // ANCHOR_END: block

    // ANCHOR: transpose16
    /// Transpose the 16 x 16 block at `src` (row stride `lds`) into `dst` (row stride `ldd`), times
    /// `scale`: 16 loads, three rounds of in-register shuffles (pairs of rows, then 128-bit and 256-bit
    /// lanes), 16 multiplies and 16 stores.
    ///
    /// # Safety
    /// The CPU has AVX-512F; both blocks are in bounds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn transpose16(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, scale: f32) {
        // Plain loops over arrays, not `array::from_fn`: its closures are not compiled for AVX-512
        // and were called, not inlined.
        let (mut r, mut t) = ([_mm512_setzero_ps(); 16], [_mm512_setzero_ps(); 16]);
        for (i, x) in r.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(src.add(i * lds));
        }
        // Rows 2i and 2i + 1 interleaved, within each 128-bit lane.
        for i in (0..16).step_by(2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        // Four rows' elements together in each 128-bit lane.
        for g in (0..16).step_by(4) {
            r[g] = _mm512_shuffle_ps::<0x44>(t[g], t[g + 2]);
            r[g + 1] = _mm512_shuffle_ps::<0xEE>(t[g], t[g + 2]);
            r[g + 2] = _mm512_shuffle_ps::<0x44>(t[g + 1], t[g + 3]);
            r[g + 3] = _mm512_shuffle_ps::<0xEE>(t[g + 1], t[g + 3]);
        }
        // Then the 128-bit lanes of rows four apart, and of rows eight apart.
        for g in (0..16).step_by(8) {
            for k in 0..4 {
                t[g + k] = _mm512_shuffle_f32x4::<0x88>(r[g + k], r[g + 4 + k]);
                t[g + 4 + k] = _mm512_shuffle_f32x4::<0xDD>(r[g + k], r[g + 4 + k]);
            }
        }
        let sv = _mm512_set1_ps(scale);
        for i in 0..8 {
            let lo = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
            let hi = _mm512_shuffle_f32x4::<0xDD>(t[i], t[8 + i]);
            _mm512_storeu_ps(dst.add(i * ldd), _mm512_mul_ps(lo, sv));
            _mm512_storeu_ps(dst.add((8 + i) * ldd), _mm512_mul_ps(hi, sv));
        }
    }
    // ANCHOR_END: transpose16

    // ANCHOR: softmax_avx512
    /// `2^x` on 16 lanes: [`super::exp2`]'s `n` and polynomial, but `p 2^n` in one `vscalefps` (exact
    /// scaling by a power of two, so bit-identical to the scalar multiply), which also takes the place of
    /// the clamp and the exponent-bit arithmetic; lanes below `-126` (and `-inf`) are zeroed by the same
    /// instruction's mask: 12 vector instructions for 16 lanes, against 16 for the same polynomial with the
    /// clamp and the exponent bits done by hand.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn exp2v(x: __m512) -> __m512 {
        const C: [f32; 7] = super::EXP2_C;
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
            _mm512_add_ps(x, _mm512_set1_ps(0.5)),
        );
        let f = _mm512_sub_ps(x, n);
        let mut p = _mm512_set1_ps(C[6]);
        for c in C[..6].iter().rev() {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(*c));
        }
        let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-126.0));
        _mm512_maskz_scalef_ps(keep, p, n)
    }

    /// The online softmax's rescale factors `2^(m - m')` of up to 16 rows in one vector exponential
    /// (one scalar `exp2` a row was a chain of dependent FMAs the rows waited on).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rescale_factors(mold: &[f32; 16], mnew: &[f32; 16]) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        let diff = _mm512_sub_ps(
            _mm512_loadu_ps(mold.as_ptr()),
            _mm512_loadu_ps(mnew.as_ptr()),
        );
        _mm512_storeu_ps(out.as_mut_ptr(), exp2v(diff));
        out
    }

    /// [`exp2v`] over a slice (a multiple of 16 long).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `dst` is as long as `src`, a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp2_slice(src: &[f32], dst: &mut [f32]) {
        assert!(src.len() == dst.len() && src.len().is_multiple_of(16));
        for (d, x) in dst.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
            _mm512_storeu_ps(d.as_mut_ptr(), exp2v(_mm512_loadu_ps(x.as_ptr())));
        }
    }

    /// [`super::softmax_tile`] on 16 lanes at a time, for `bc` and `d` multiples of 16: the row's max
    /// and sum are one vector each, folded across lanes once per row (the portable version's 16-lane
    /// arrays compile to a scalar fold per row, which cost as much as the exponentials).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `s: (br, bc)`, `o: (br, d)`, `m, l: (br)`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_tile(
        s: &mut [f32],
        m: &mut [f32],
        l: &mut [f32],
        o: &mut [f32],
        br: usize,
        bc: usize,
        d: usize,
    ) {
        assert!(
            bc.is_multiple_of(16)
                && d.is_multiple_of(16)
                && s.len() >= br * bc
                && o.len() >= br * d
        );
        assert!(m.len() >= br && l.len() >= br * 16);
        // Rows in groups of 16: the maxima first, then the 16 rescale factors 2^(m - m') in one
        // vector exp2 (one scalar exp2 a row was a chain of dependent FMAs the rows waited on).
        for r0 in (0..br).step_by(16) {
            let rows = 16.min(br - r0);
            let mut mnew = [f32::NEG_INFINITY; 16];
            let mut mold = [f32::NEG_INFINITY; 16];
            for (i, (mn, mo)) in mnew.iter_mut().zip(mold.iter_mut()).enumerate().take(rows) {
                let row = s[(r0 + i) * bc..][..bc].as_ptr();
                let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
                for j in (0..bc).step_by(16) {
                    mx = _mm512_max_ps(mx, _mm512_loadu_ps(row.add(j)));
                }
                *mo = m[r0 + i];
                *mn = _mm512_reduce_max_ps(mx).max(*mo);
            }
            // 2^(m - m'): 0 when m = -inf; a row with m' = -inf is skipped below.
            let alphas = rescale_factors(&mold, &mnew);
            for i in 0..rows {
                let (r, m_new, alpha) = (r0 + i, mnew[i], alphas[i]);
                if m_new == f32::NEG_INFINITY {
                    s[r * bc..][..bc].fill(0.0); // nothing visible yet: contributes nothing
                    continue;
                }
                let row = s[r * bc..][..bc].as_mut_ptr();
                let (mv, mut sum) = (_mm512_set1_ps(m_new), _mm512_setzero_ps());
                for j in (0..bc).step_by(16) {
                    let p = exp2v(_mm512_sub_ps(_mm512_loadu_ps(row.add(j)), mv));
                    _mm512_storeu_ps(row.add(j), p);
                    sum = _mm512_add_ps(sum, p);
                }
                let lr = l[r * 16..][..16].as_mut_ptr();
                _mm512_storeu_ps(
                    lr,
                    _mm512_fmadd_ps(_mm512_loadu_ps(lr), _mm512_set1_ps(alpha), sum),
                );
                m[r] = m_new;
                if alpha != 1.0 {
                    let (orow, av) = (o[r * d..][..d].as_mut_ptr(), _mm512_set1_ps(alpha));
                    for j in (0..d).step_by(16) {
                        _mm512_storeu_ps(
                            orow.add(j),
                            _mm512_mul_ps(av, _mm512_loadu_ps(orow.add(j))),
                        );
                    }
                }
            }
        }
    }
    // ANCHOR_END: softmax_avx512

    // ANCHOR: row_block
    /// A whole tile step for `R` query rows when the K tile has `BC = 16 BV` keys (64 or 32): the
    /// `R x BC` scores come out of one register block into `p` (a few KB that stay in L1), the online softmax turns them into
    /// probabilities there, and `O += P V` runs in register blocks whose accumulators are loaded from
    /// `O` already multiplied by the rows' rescale factors. Compared with three passes over a whole
    /// `Br x 64` tile (`S = Q Kt`, softmax, `O += P V`), the scores never leave L1 and `O` is read and
    /// written once per step instead of twice.
    ///
    /// `q: (R, d)` from the tile's row `r0`, `kt: (d, BC)`, `v: (BC, d)`, `o: (R, d)`, `m, l: (R)`,
    /// `p`: at least `R * BC` floats of scratch; `range` gives row `r0 + i`'s visible columns.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `d` is a multiple of 16; the slices have the shapes above.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn row_block<const R: usize, const BV: usize>(
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        p: &mut [f32],
        m: &mut [f32],
        l: &mut [f32],
        o: &mut [f32],
        d: usize,
        range: Option<super::RowRange>,
        r0: usize,
    ) {
        let bc = 16 * BV;
        assert!(BV == 2 || BV == 4);
        assert!(d.is_multiple_of(16) && q.len() >= R * d && o.len() >= R * d);
        assert!(kt.len() >= d * bc && v.len() >= bc * d && p.len() >= R * bc);
        assert!(m.len() >= R && l.len() >= R * 16);
        // The columns any row of the block sees. At the edges of a causal diagonal or of a window's
        // band every row of a block often sees one half of the tile only: then only that half's scores
        // and products are computed; where no row sees a column, nothing is (a masked score's
        // probability is 0, so the state would not change).
        let (mut seen_lo, mut seen_hi) = (0, bc);
        if let Some(range) = range {
            (seen_lo, seen_hi) = (bc, 0);
            for i in 0..R {
                let (lo, hi) = range(r0 + i);
                let (lo, hi) = (lo.min(bc), hi.min(bc));
                if hi > lo {
                    (seen_lo, seen_hi) = (seen_lo.min(lo), seen_hi.max(hi));
                }
            }
            if seen_hi <= seen_lo {
                return;
            }
        }
        let half = bc / 2;
        let c_lo = match (seen_lo >= half, seen_hi <= half) {
            (false, false) => {
                return cols::<R, BV, BV>(q, kt, v, p, m, l, o, d, range, r0, 0);
            }
            (true, _) => half,
            (false, true) => 0,
        };
        if BV == 4 {
            cols::<R, 4, 2>(q, kt, v, p, m, l, o, d, range, r0, c_lo)
        } else {
            cols::<R, 2, 1>(q, kt, v, p, m, l, o, d, range, r0, c_lo)
        }
    }
    // ANCHOR_END: row_block

    // ANCHOR: row_block_cols
    /// [`row_block`] on the tile's columns `[c_lo, c_lo + 16 W)` only (`W = BV`: all of them).
    ///
    /// # Safety
    /// As [`row_block`], and `c_lo + 16 W <= 16 BV`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn cols<const R: usize, const BV: usize, const W: usize>(
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        p: &mut [f32],
        m: &mut [f32],
        l: &mut [f32],
        o: &mut [f32],
        d: usize,
        range: Option<super::RowRange>,
        r0: usize,
        c_lo: usize,
    ) {
        let (bc, kw) = (16 * BV, 16 * W);
        assert!(c_lo + kw <= bc);
        // S = Q Kt, R rows x the W vectors of keys from c_lo, into p.
        // Plain loops, not `array::from_fn`, whose closures are not compiled for AVX-512 and were called.
        let mut qrows: [&[f32]; R] = [&[]; R];
        for (i, row) in qrows.iter_mut().enumerate() {
            *row = &q[i * d..][..d];
        }
        block::<R, W>(qrows, &kt[c_lo..], bc, d, &mut p[c_lo..], bc, false, None);
        // The mask (two fills a row become one blend a register), the rows' maxima, then the R rescale
        // factors 2^(m - m') in one vector exponential.
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let (mut mold, mut mnew) = ([f32::NEG_INFINITY; 16], [f32::NEG_INFINITY; 16]);
        for i in 0..R {
            let row = p.as_mut_ptr().add(i * bc + c_lo);
            let mut x: [__m512; W] = [ninf; W];
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = _mm512_loadu_ps(row.add(16 * j));
            }
            if let Some(range) = range {
                let (lo, hi) = range(r0 + i);
                let (lo, hi) = (lo.min(bc), hi.min(bc).max(lo.min(bc)));
                let upto = |c: usize| if c >= 64 { u64::MAX } else { (1u64 << c) - 1 };
                let visible = (upto(hi) & !upto(lo)) >> c_lo;
                for (j, xj) in x.iter_mut().enumerate() {
                    *xj = _mm512_mask_blend_ps((visible >> (16 * j)) as u16, ninf, *xj);
                    _mm512_storeu_ps(row.add(16 * j), *xj);
                }
            }
            let mut mx = x[0];
            for xj in &x[1..] {
                mx = _mm512_max_ps(mx, *xj);
            }
            mold[i] = m[i];
            mnew[i] = _mm512_reduce_max_ps(mx).max(m[i]);
        }
        let mut alpha = rescale_factors(&mold, &mnew);
        // P = 2^(S - m'), the row sums, the new state.
        for i in 0..R {
            let row = p.as_mut_ptr().add(i * bc + c_lo);
            if mnew[i] == f32::NEG_INFINITY {
                // Nothing visible yet: P = 0, and the state (m = -inf, l = 0, o = 0) stays.
                for j in 0..W {
                    _mm512_storeu_ps(row.add(16 * j), _mm512_setzero_ps());
                }
                alpha[i] = 1.0;
                continue;
            }
            let (mv, mut sum) = (_mm512_set1_ps(mnew[i]), _mm512_setzero_ps());
            for j in 0..W {
                let e = exp2v(_mm512_sub_ps(_mm512_loadu_ps(row.add(16 * j)), mv));
                _mm512_storeu_ps(row.add(16 * j), e);
                sum = _mm512_add_ps(sum, e);
            }
            let li = l[i * 16..][..16].as_mut_ptr();
            _mm512_storeu_ps(
                li,
                _mm512_fmadd_ps(_mm512_loadu_ps(li), _mm512_set1_ps(alpha[i]), sum),
            );
            m[i] = mnew[i];
        }
        // O = alpha O + P V over those keys, 64 output columns at a time (then 32, 16).
        // Plain loops again (see above): the R rows of P, and the R of the 16 rescale factors.
        let (mut prows, mut alpha_r): ([&[f32]; R], [f32; R]) = ([&[]; R], [0.0; R]);
        for i in 0..R {
            prows[i] = &p[i * bc + c_lo..][..kw];
            alpha_r[i] = alpha[i];
        }
        let v = &v[c_lo * d..];
        let mut c0 = 0;
        while c0 < d {
            let (vs, os) = (&v[c0..], &mut o[c0..]);
            c0 += match d - c0 {
                64.. => {
                    block::<R, 4>(prows, vs, d, kw, os, d, true, Some(alpha_r));
                    64
                }
                32..64 => {
                    block::<R, 2>(prows, vs, d, kw, os, d, true, Some(alpha_r));
                    32
                }
                _ => {
                    block::<R, 1>(prows, vs, d, kw, os, d, true, Some(alpha_r));
                    16
                }
            };
        }
    }
    // ANCHOR_END: row_block_cols

    // ANCHOR: gemm
    /// [`super::tile_gemm`]'s columns `[0, n - n % 32)` in register blocks: 6 rows (then 4, 2, 1 for
    /// the last) by 64 columns (then 32). 6 x 64 holds 24 accumulators, 4 registers of `B` and a
    /// broadcast: 29 of the 32 vector registers, 24 FMAs for every 10 loads, enough independent sums
    /// to keep both FMA units busy through their latency. Returns the columns covered.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a: (m, k)`, `b: (k, n)`, `c: (m, n)` row-major, `k > 0`.
    #[target_feature(enable = "avx512f")]
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
        let n32 = n - n % 32;
        let mut r = 0;
        while r < m {
            let step = block_rows(m - r);
            let mut col = 0;
            while col < n32 {
                let wide = n32 - col >= 64;
                let (bs, cs) = (&b[col..], &mut c[r * n + col..]);
                match (step, wide) {
                    (6, true) => block::<6, 4>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                    (6, false) => block::<6, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                    (4, true) => block::<4, 4>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                    (4, false) => block::<4, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                    (2, true) => block::<2, 4>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                    (2, false) => block::<2, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                    (_, true) => block::<1, 4>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                    (_, false) => block::<1, 2>(rows(a, r, k), bs, n, k, cs, n, acc, None),
                }
                col += if wide { 64 } else { 32 };
            }
            r += step;
        }
        n32
    }
    // ANCHOR_END: gemm
}

/// One (Q tile, K/V tile) pair in fast memory, all f32: `q: (br, d)`, `kt: (d, bc)` (scaled),
/// `v: (bc, d)`, the score scratch `s: (br, bc)`, and the query rows' running state `m, l: (br)`,
/// `o: (br, d)`.
pub struct Tile<'a> {
    /// The Q tile.
    pub q: &'a [f32],
    /// The K tile, transposed.
    pub kt: &'a [f32],
    /// The V tile.
    pub v: &'a [f32],
    /// Scores, then probabilities.
    pub s: &'a mut [f32],
    /// Running row maxima.
    pub m: &'a mut [f32],
    /// Running row normalisers, `L` partial sums a row (`(br, L)`): the vector loops add a whole register
    /// of exponentials to a row's sums without folding it to one number, once per tile; the final
    /// division adds the `L` up ([`row_sum`]). The portable loop keeps its sum in the first.
    pub l: &'a mut [f32],
    /// Running un-normalised outputs.
    pub o: &'a mut [f32],
    /// Query rows in the tile.
    pub br: usize,
    /// Keys in the tile.
    pub bc: usize,
    /// Head size.
    pub d: usize,
}

/// The keys of a partially masked tile that row `r` sees: the columns `[lo, hi)` of the tile. Causal
/// and sliding-window masks leave each row one interval of keys, so a row is masked with two fills, not
/// a test per score (a closure call per score was a third of a causal run's time).
pub type RowRange<'a> = &'a dyn Fn(usize) -> (usize, usize);

/// One step of the tiled loop on a (Q tile, K/V tile) pair: scores, online softmax, output update.
/// `mask`, for a partially masked tile, gives each row's visible columns.
#[inline(always)]
fn tile_step<const FUSED: bool, const CS: usize>(t: &mut Tile, mask: Option<RowRange>) {
    let (br, bc, d) = (t.br, t.bc, t.d);
    #[cfg(target_arch = "x86_64")]
    if CS == 32 && (bc == 64 || bc == 32) && d.is_multiple_of(16) {
        // SAFETY: CS == 32 only in `tile_step_avx512`, compiled for and run on AVX-512F; every row
        // block's slices are inside the tile's (asserted inside).
        unsafe {
            if bc == 64 {
                fused_step::<4>(t, mask)
            } else {
                fused_step::<2>(t, mask)
            }
        };
        return;
    }
    tile_gemm::<FUSED, CS>(t.q, t.kt, t.s, br, d, bc, false); // S = Q Kt
    if let Some(range) = mask {
        for (r, row) in t.s[..br * bc].chunks_exact_mut(bc).enumerate() {
            let (lo, hi) = range(r);
            let (lo, hi) = (lo.min(bc), hi.min(bc).max(lo.min(bc)));
            row[..lo].fill(f32::NEG_INFINITY);
            row[hi..].fill(f32::NEG_INFINITY);
        }
    }
    #[cfg(target_arch = "x86_64")]
    let (fast, fast8) = (
        CS == 32 && bc.is_multiple_of(16) && d.is_multiple_of(16),
        CS == 16 && bc.is_multiple_of(8) && d.is_multiple_of(8),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (fast, fast8) = (false, false);
    if fast {
        // SAFETY: CS == 32 only in `tile_step_avx512`, compiled for and run on AVX-512F; the tile's
        // slices have the shapes asked for (checked by the asserts inside).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::softmax_tile(t.s, t.m, t.l, t.o, br, bc, d)
        };
    } else if fast8 {
        // SAFETY: CS == 16 only in `tile_step_avx2`, compiled for and run on AVX2 with FMA; the
        // tile's slices have the shapes asked for (checked by the asserts inside).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx2::softmax_tile(t.s, t.m, t.l, t.o, br, bc, d)
        };
    } else {
        softmax_tile::<FUSED>(t.s, t.m, t.l, t.o, br, bc, d);
    }
    tile_gemm::<FUSED, CS>(t.s, t.v, t.o, br, bc, d, true); // o += P V
}

/// [`tile_step`] as [`x86::row_block`]s: 6 query rows at a time (then 4, 2, 1 for the last).
///
/// # Safety
/// The CPU has AVX-512F; `t.bc == 16 BV` (64 or 32), `t.d` a multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fused_step<const BV: usize>(t: &mut Tile, mask: Option<RowRange>) {
    let (br, d) = (t.br, t.d);
    let mut r = 0;
    while r < br {
        let (q, o) = (&t.q[r * d..], &mut t.o[r * d..]);
        let (m, l) = (&mut t.m[r..], &mut t.l[r * L..]);
        let (kt, v, p) = (t.kt, t.v, &mut *t.s);
        let step = block_rows(br - r);
        match step {
            6 => x86::row_block::<6, BV>(q, kt, v, p, m, l, o, d, mask, r),
            4 => x86::row_block::<4, BV>(q, kt, v, p, m, l, o, d, mask, r),
            2 => x86::row_block::<2, BV>(q, kt, v, p, m, l, o, d, mask, r),
            _ => x86::row_block::<1, BV>(q, kt, v, p, m, l, o, d, mask, r),
        }
        r += step;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_step_avx512(t: &mut Tile, mask: Option<RowRange>) {
    tile_step::<true, 32>(t, mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_step_avx2(t: &mut Tile, mask: Option<RowRange>) {
    tile_step::<true, 16>(t, mask)
}

/// `dst (cols x rows) = scale src (rows x cols)` transposed: the K tile's load, which also applies the
/// softmax's scale `log2(e) / sqrt(D)` (so that Q is read in place, never copied). On AVX-512 in 16 x 16
/// blocks of register shuffles when both sizes are multiples of 16 (a scalar transpose, one strided
/// store an element, was 8% of the tiled loop's time at N = 2048), on AVX2 in 8 x 8 blocks when both
/// are multiples of 8; element by element otherwise.
///
/// # Panics
/// If `src` or `dst` holds fewer than `rows cols` elements (an internal kernel, called by the tiled
/// loops with their own tiles' sizes; the public entry points check shapes before they get here).
pub fn transpose(isa: Isa, src: &[f32], rows: usize, cols: usize, dst: &mut [f32], scale: f32) {
    // The unsafe blocks below rely on this: a product that wraps would let a short slice through.
    let n = rows
        .checked_mul(cols)
        .expect("transpose: rows x cols past usize");
    assert!(
        src.len() >= n && dst.len() >= n,
        "transpose: slices shorter than rows x cols"
    );
    // The register-shuffle block of `isa`, and its side: 16 x 16 on AVX-512, 8 x 8 on AVX2.
    #[cfg(target_arch = "x86_64")]
    {
        type Block = unsafe fn(*const f32, usize, *mut f32, usize, f32);
        let block: Option<(usize, Block)> = match isa {
            Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => Some((16, x86::transpose16)),
            Isa::Avx2Fma
                if std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma") =>
            {
                Some((8, avx2::transpose8))
            }
            _ => None,
        };
        if let Some((b, f)) =
            block.filter(|(b, _)| rows.is_multiple_of(*b) && cols.is_multiple_of(*b))
        {
            for r0 in (0..rows).step_by(b) {
                for c0 in (0..cols).step_by(b) {
                    // SAFETY: the block's instruction set is present (detected above); both b x b
                    // blocks are inside the slices (asserted).
                    unsafe {
                        f(
                            src.as_ptr().add(r0 * cols + c0),
                            cols,
                            dst.as_mut_ptr().add(c0 * rows + r0),
                            rows,
                            scale,
                        )
                    };
                }
            }
            return;
        }
    }
    let _ = isa;
    for (r, row) in src[..rows * cols].chunks_exact(cols).enumerate() {
        for (c, x) in row.iter().enumerate() {
            dst[c * rows + r] = *x * scale;
        }
    }
}

/// `dst[i] = 2^src[i]` with the softmax's exponential (16 lanes at a time on AVX-512, 8 on AVX2,
/// `src.len()` a multiple of the lanes there): what the ceilings time to measure the machine's exponential rate.
pub fn exp2_into(isa: Isa, src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512
        && src.len().is_multiple_of(16)
        && std::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: AVX-512F is present; both slices hold `src.len()` floats, a multiple of 16.
        unsafe { x86::exp2_slice(src, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma
        && src.len().is_multiple_of(8)
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: AVX2 and FMA are present; both slices hold `src.len()` floats, a multiple of 8.
        unsafe { avx2::exp2_slice(src, dst) };
        return;
    }
    let _ = isa;
    for (d, x) in dst.iter_mut().zip(src) {
        *d = exp2::<true>(*x);
    }
}

/// Run one tile step with the inner loops compiled for `isa`. `isa` must come from [`Isa::detect`]
/// (or be [`Isa::Portable`]): asking for an instruction set the CPU lacks falls back to portable code.
pub fn step(isa: Isa, t: &mut Tile, mask: Option<RowRange>) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the CPU has the features: `detect` found them (re-checked here, cheaply cached).
        Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => unsafe {
            return tile_step_avx512(t, mask);
        },
        Isa::Avx2Fma
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") =>
        unsafe {
            return tile_step_avx2(t, mask);
        },
        _ => {}
    }
    let _ = isa;
    tile_step::<false, 8>(t, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tile's running state before a step: every third row has seen nothing yet (`m = -inf`,
    /// `l = 0`), the others `m = 0.5` and `l = 2` (in the first of their `L` partial sums).
    fn start_state(br: usize) -> (Vec<f32>, Vec<f32>) {
        let m: Vec<f32> = (0..br)
            .map(|r| if r % 3 == 0 { f32::NEG_INFINITY } else { 0.5 })
            .collect();
        let l = (0..br * L)
            .map(|i| {
                if i % L == 0 && m[i / L].is_finite() {
                    2.0
                } else {
                    0.0
                }
            })
            .collect();
        (m, l)
    }

    /// The exponential's test arguments: a ramp through the softmax's range, the clamp's edges and
    /// -inf, padded to a multiple of `lanes`.
    #[cfg(target_arch = "x86_64")]
    fn exp2_inputs(lanes: usize) -> Vec<f32> {
        let mut xs: Vec<f32> = (0..4000).map(|i| -40.0 + i as f32 * 0.01).collect();
        xs.extend([0.0, -0.5, -125.9, -126.0, -126.1, -300.0, f32::NEG_INFINITY]);
        xs.resize(xs.len().div_ceil(lanes) * lanes, -1.0);
        xs
    }

    /// The portable softmax and `vector` (`s, m, l, o`) on the same `br x bc` tile, every third row
    /// starting at -inf (nothing seen yet), rows 5 and 6 fully masked (row 6 also starts at -inf: it
    /// stays empty): the same probabilities, maxima and output, row sums to 1e-6.
    #[cfg(target_arch = "x86_64")]
    fn softmax_agrees(
        br: usize,
        bc: usize,
        d: usize,
        vector: impl FnOnce(&mut [f32], &mut [f32], &mut [f32], &mut [f32]),
    ) {
        let mut rng = crate::minimodel::rng::Rng::new(3);
        let mut s0 = rng.normal_vec_f32(br * bc);
        s0[5 * bc..7 * bc].fill(f32::NEG_INFINITY);
        let o0 = rng.normal_vec_f32(br * d);
        let (m0, l0) = start_state(br);
        let (mut s1, mut m1, mut l1, mut o1) = (s0.clone(), m0.clone(), l0.clone(), o0.clone());
        softmax_tile::<true>(&mut s1, &mut m1, &mut l1, &mut o1, br, bc, d);
        let (mut s2, mut m2, mut l2, mut o2) = (s0, m0, l0, o0);
        vector(&mut s2, &mut m2, &mut l2, &mut o2);
        assert_eq!(s1, s2);
        assert_eq!(m1, m2);
        assert_eq!(o1, o2);
        for (a, b) in l1.chunks(L).zip(l2.chunks(L)) {
            let (a, b) = (row_sum(a), row_sum(b));
            assert!((a - b).abs() <= 1e-6 * a.abs(), "row sums {a} and {b}");
        }
    }

    #[test]
    fn the_vector_transpose_equals_the_scalar_one() {
        for (rows, cols) in [
            (16, 16),
            (64, 64),
            (32, 128),
            (48, 16),
            (17, 64),
            (64, 40),
            (8, 24),
            (40, 8),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut want = vec![0.0f32; rows * cols];
            transpose(Isa::Portable, &src, rows, cols, &mut want, 0.5);
            for (r, c) in [(0, 0), (rows - 1, cols - 1), (rows / 2, cols / 3)] {
                assert_eq!(want[c * rows + r], 0.5 * src[r * cols + c]);
            }
            let mut got = vec![-1.0f32; rows * cols];
            transpose(Isa::detect(), &src, rows, cols, &mut got, 0.5);
            assert_eq!(got, want, "{rows} x {cols} on {}", Isa::detect().name());
        }
    }

    #[test]
    fn exp2_is_accurate_and_exact_at_the_edges() {
        let mut worst = 0.0f64;
        let mut x = -30.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp2();
            for got in [exp2::<true>(x), exp2::<false>(x)] {
                worst = worst.max(((got as f64) - want).abs() / want);
            }
            x += 0.001;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp2::<true>(0.0), 1.0);
        assert_eq!(exp2::<true>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2::<false>(-200.0), 0.0);
    }

    /// The AVX-512 exponential is the scalar one, lane for lane, bit for bit (so the two softmax paths
    /// differ only in the order of the row sums), and the AVX-512 softmax matches the portable one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_softmax_matches_the_portable_one() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            println!("skipped: no AVX-512 on this CPU");
            return;
        }
        let xs = exp2_inputs(16);
        for chunk in xs.chunks_exact(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: AVX-512F was detected above; `chunk` and `got` hold 16 floats.
            unsafe {
                use std::arch::x86_64::*;
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    x86::exp2v(_mm512_loadu_ps(chunk.as_ptr())),
                );
            }
            for (g, x) in got.iter().zip(chunk) {
                assert_eq!(g.to_bits(), exp2::<true>(*x).to_bits(), "2^{x}");
            }
        }
        let (br, bc, d) = (20, 32, 16);
        softmax_agrees(br, bc, d, |s, m, l, o| {
            // SAFETY: AVX-512F was detected above; the slices have the shapes passed.
            unsafe { x86::softmax_tile(s, m, l, o, br, bc, d) }
        });
    }

    /// The AVX2 exponential is the scalar one, lane for lane, bit for bit, and the AVX2 softmax
    /// matches the portable one (8 lanes: tiles and head sizes that are multiples of 8, not of 16).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_softmax_matches_the_portable_one() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            println!("skipped: no AVX2 with FMA on this CPU");
            return;
        }
        let xs = exp2_inputs(8);
        let mut got = vec![0.0f32; xs.len()];
        // SAFETY: AVX2 and FMA were detected above; both slices hold a multiple of 8 floats.
        unsafe { avx2::exp2_slice(&xs, &mut got) };
        for (g, x) in got.iter().zip(&xs) {
            assert_eq!(g.to_bits(), exp2::<true>(*x).to_bits(), "2^{x}");
        }
        let (br, bc, d) = (20, 24, 40);
        softmax_agrees(br, bc, d, |s, m, l, o| {
            // SAFETY: AVX2 and FMA were detected above; the slices have the shapes passed.
            unsafe { avx2::softmax_tile(s, m, l, o, br, bc, d) }
        });
    }

    /// A whole tile step with the CPU's widest instruction set (AVX-512: the fused row blocks on 64-
    /// and 32-key tiles; AVX2: the 8-lane register blocks and softmax) against portable, with and
    /// without a mask, on tiles whose row counts exercise every row-block size (6, 4, 2, 1), head
    /// sizes that exercise every output-column block (64, 32, 16; 8 on AVX2), and key tiles whose
    /// width is not a multiple of the vector (the portable loop's columns after the blocks).
    #[test]
    fn the_vector_tile_step_matches_the_portable_one() {
        let isa = Isa::detect();
        if isa == Isa::Portable {
            println!("skipped: no AVX2 or AVX-512 on this CPU");
            return;
        }
        let mut rng = crate::minimodel::rng::Rng::new(5);
        let cases = [(13, 64), (7, 112), (1, 16), (32, 128), (5, 24)];
        for (br, d, bc) in cases
            .into_iter()
            .flat_map(|(br, d)| [(br, d, 64), (br, d, 32), (br, d, 40), (br, d, 20)])
        {
            let (q, kt, v) = (
                rng.normal_vec_f32(br * d),
                rng.normal_vec_f32(d * bc),
                rng.normal_vec_f32(bc * d),
            );
            let o0 = rng.normal_vec_f32(br * d);
            // Row r sees keys [r, r + 40) (row 0 of a 1-row tile: [0, 40)); row 2 sees nothing.
            let range = |r: usize| if r == 2 { (10, 10) } else { (r, r + 40) };
            for masked in [false, true] {
                let run = |isa: Isa| {
                    let (mut m, mut l) = start_state(br);
                    let mut o: Vec<f32> = (0..br * d)
                        .map(|i| if m[i / d].is_finite() { o0[i] } else { 0.0 })
                        .collect();
                    let mut s = vec![0.0f32; br * bc];
                    let mut t = Tile {
                        q: &q,
                        kt: &kt,
                        v: &v,
                        s: &mut s,
                        m: &mut m,
                        l: &mut l,
                        o: &mut o,
                        br,
                        bc,
                        d,
                    };
                    step(isa, &mut t, masked.then_some(&range as RowRange));
                    let sums: Vec<f32> = l.chunks(L).map(row_sum).collect();
                    (m, sums, o)
                };
                let (m1, l1, o1) = run(Isa::Portable);
                let (m2, l2, o2) = run(isa);
                // The products' sums run in different orders: equal to rounding, not bit for bit.
                for (a, b) in m1.iter().zip(&m2) {
                    assert!(a == b || (a - b).abs() <= 1e-5 * a.abs(), "max {a} vs {b}");
                }
                for (a, b) in l1.iter().zip(&l2).chain(o1.iter().zip(&o2)) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                        "{a} vs {b}, br {br} d {d} bc {bc}"
                    );
                }
                if masked && br > 2 {
                    assert_eq!(l2[2], if m2[2].is_finite() { 2.0 } else { 0.0 });
                }
            }
        }
    }
}
