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
/// `2^x` for `x <= 0`, to about 2 ulp, in a form that vectorises: split `x = n + f` with `n` an integer
/// and `f` in `[-0.5, 0.5)`, evaluate `2^f` by its Taylor polynomial (degree 6: error below `1.2e-7`
/// relative), and put `n` straight into the exponent bits. Inputs below `-126` (and `-inf`) give exactly 0.
#[inline(always)]
pub fn exp2<const FUSED: bool>(x: f32) -> f32 {
    const C: [f32; 7] = [
        1.0,
        std::f32::consts::LN_2,
        0.240_226_5,   // ln2^2 / 2
        0.055_504_11,  // ln2^3 / 6
        0.009_618_129, // ln2^4 / 24
        0.001_333_355_8,
        0.000_154_035_3,
    ];
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

/// Rows of the S product handled together: their accumulators stay in registers. With `CS` columns
/// (32 for AVX-512: two registers a row; 16 for AVX2), that is 8 independent accumulators, enough to
/// keep two FMA units busy through the FMA's 4-cycle latency.
const RS: usize = 4;
/// Lanes of the row reductions.
const LANES: usize = 16;
/// Rows of the PV product handled together.
const RO: usize = 4;

// ANCHOR: s_tile
/// `s = q kt` for a `(br, d) x (d, bc)` tile pair: `RS` rows of `q` against `CS` columns of `kt` at a
/// time, `RS * CS` accumulators kept in registers across the whole `d` loop.
#[inline(always)]
fn s_tile<const FUSED: bool, const CS: usize>(
    q: &[f32],
    kt: &[f32],
    s: &mut [f32],
    br: usize,
    bc: usize,
    d: usize,
) {
    let mut r = 0;
    while r < br {
        let rows = RS.min(br - r);
        let mut c = 0;
        while c < bc {
            let cols = CS.min(bc - c);
            let mut acc = [[0.0f32; CS]; RS];
            if rows == RS && cols == CS {
                // The hot loop: per k, one CS-wide load of kt and RS broadcasts of q, RS x CS FMAs.
                let qr: [&[f32]; RS] = std::array::from_fn(|i| &q[(r + i) * d..][..d]);
                #[cfg(target_arch = "x86_64")]
                if CS == 32 {
                    // SAFETY: CS == 32 only in `tile_step_avx512`, compiled for and run on AVX-512F; the
                    // slices hold RS rows of d elements and d rows of at least c + 32 of kt (cols == CS).
                    let block = unsafe { x86::s_block::<RS>(&qr, &kt[c..], bc, d) };
                    for (i, row) in block.iter().enumerate() {
                        s[(r + i) * bc + c..][..32].copy_from_slice(row);
                    }
                    c += CS;
                    continue;
                }
                for k in 0..d {
                    let kv: &[f32; CS] = kt[k * bc + c..][..CS].try_into().expect("CS lanes");
                    for (a, qi) in acc.iter_mut().zip(&qr) {
                        let qik = qi[k]; // broadcast one element of q
                        for (x, y) in a.iter_mut().zip(kv) {
                            *x = fma::<FUSED>(qik, *y, *x);
                        }
                    }
                }
            } else {
                for k in 0..d {
                    for (i, a) in acc.iter_mut().enumerate().take(rows) {
                        let qi = q[(r + i) * d + k];
                        for (x, y) in a.iter_mut().zip(&kt[k * bc + c..][..cols]) {
                            *x = fma::<FUSED>(qi, *y, *x);
                        }
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(rows) {
                s[(r + i) * bc + c..][..cols].copy_from_slice(&a[..cols]);
            }
            c += CS;
        }
        r += RS;
    }
}
// ANCHOR_END: s_tile

// ANCHOR: softmax_tile
/// The online-softmax step for a tile of scores, in place: for each row `r`,
/// `m' = max(m, rowmax(S_r))`, `P_r = 2^(S_r - m')`, `l' = l 2^(m - m') + rowsum(P_r)`, and the row's
/// output accumulator is scaled by `alpha = 2^(m - m')`. Scores are in log2 units (Q was pre-scaled by
/// `log2(e) / sqrt(D)`). A row whose scores are all `-inf` so far keeps `m = -inf`, `l = 0`, `P = 0`.
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
        l[r] = fma::<FUSED>(l[r], alpha, lanes_sum(row));
        m[r] = m_new;
        if alpha != 1.0 {
            for x in &mut o[r * d..][..d] {
                *x *= alpha;
            }
        }
    }
}
// ANCHOR_END: softmax_tile

// ANCHOR: pv_tile
/// `o += p v` for a `(br, bc) x (bc, d)` tile pair, blocked like [`s_tile`]: `RO` rows of `p` against
/// `CS` columns of `v` at a time, the `RO * CS` partial outputs kept in registers across the `bc` loop and
/// added into `o` once.
#[inline(always)]
fn pv_tile<const FUSED: bool, const CS: usize>(
    p: &[f32],
    v: &[f32],
    o: &mut [f32],
    br: usize,
    bc: usize,
    d: usize,
) {
    let mut r = 0;
    while r < br {
        let rows = RO.min(br - r);
        let mut c = 0;
        while c < d {
            let cols = CS.min(d - c);
            let mut acc = [[0.0f32; CS]; RO];
            if rows == RO && cols == CS {
                // The hot loop: per key j, one CS-wide load of v and RO broadcasts of p.
                let pr: [&[f32]; RO] = std::array::from_fn(|i| &p[(r + i) * bc..][..bc]);
                #[cfg(target_arch = "x86_64")]
                if CS == 32 {
                    // SAFETY: as in `s_tile`: AVX-512F present; RO rows of bc probabilities, bc rows of v
                    // with at least c + 32 elements each (cols == CS).
                    let block = unsafe { x86::pv_block::<RO>(&pr, &v[c..], bc, d) };
                    for (i, row) in block.iter().enumerate() {
                        for (x, y) in o[(r + i) * d + c..][..32].iter_mut().zip(row) {
                            *x += y;
                        }
                    }
                    c += CS;
                    continue;
                }
                for j in 0..bc {
                    let vj: &[f32; CS] = v[j * d + c..][..CS].try_into().expect("CS lanes");
                    for (a, pi) in acc.iter_mut().zip(&pr) {
                        let pij = pi[j]; // broadcast one probability
                        for (x, y) in a.iter_mut().zip(vj) {
                            *x = fma::<FUSED>(pij, *y, *x);
                        }
                    }
                }
            } else {
                for j in 0..bc {
                    for (i, a) in acc.iter_mut().enumerate().take(rows) {
                        let pij = p[(r + i) * bc + j];
                        for (x, y) in a.iter_mut().zip(&v[j * d + c..][..cols]) {
                            *x = fma::<FUSED>(pij, *y, *x);
                        }
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(rows) {
                for (x, y) in o[(r + i) * d + c..][..cols].iter_mut().zip(a) {
                    *x += y;
                }
            }
            c += CS;
        }
        r += RO;
    }
}
// ANCHOR_END: pv_tile

/// The AVX-512 register blocks, with explicit intrinsics: the compiler's auto-vectorised loops above
/// spilled accumulators to the stack, and these two blocks are where nearly all the FLOPs are.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    // ANCHOR: s_block
    /// `S[R x 32] = Q[R x d] Kt[d x 32]`: `2 R` accumulators (R rows x 2 registers of 16 lanes) live in
    /// registers for the whole `d` loop; per `k`, 2 loads of `kt`, `R` broadcasts of `q`, `2 R` FMAs.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `q[i]` has `d` elements; `kt` has `(d - 1) * bc + 32` elements at least.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn s_block<const R: usize>(
        q: &[&[f32]; R],
        kt: &[f32],
        bc: usize,
        d: usize,
    ) -> [[f32; 32]; R] {
        assert!(q.iter().all(|r| r.len() >= d) && kt.len() >= (d - 1) * bc + 32);
        let qp: [*const f32; R] = std::array::from_fn(|i| q[i].as_ptr());
        let kp = kt.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for k in 0..d {
            let k0 = _mm512_loadu_ps(kp.add(k * bc));
            let k1 = _mm512_loadu_ps(kp.add(k * bc + 16));
            for (a, p) in acc.iter_mut().zip(&qp) {
                let b = _mm512_set1_ps(*p.add(k)); // broadcast q[i][k]
                a[0] = _mm512_fmadd_ps(b, k0, a[0]);
                a[1] = _mm512_fmadd_ps(b, k1, a[1]);
            }
        }
        let mut out = [[0.0f32; 32]; R];
        for (row, a) in out.iter_mut().zip(&acc) {
            _mm512_storeu_ps(row.as_mut_ptr(), a[0]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), a[1]);
        }
        out
    }
    // ANCHOR_END: s_block

    /// `O[R x 32] = P[R x bc] V[bc x 32]` (a 32-wide column slice of `V`, row stride `d`): the same
    /// register block as [`s_block`], looping over keys instead of head dimensions.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `p[i]` has `bc` elements; `v` has `(bc - 1) * d + 32` elements at least.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn pv_block<const R: usize>(
        p: &[&[f32]; R],
        v: &[f32],
        bc: usize,
        d: usize,
    ) -> [[f32; 32]; R] {
        assert!(p.iter().all(|r| r.len() >= bc) && v.len() >= (bc - 1) * d + 32);
        let pp: [*const f32; R] = std::array::from_fn(|i| p[i].as_ptr());
        let vp = v.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for j in 0..bc {
            let v0 = _mm512_loadu_ps(vp.add(j * d));
            let v1 = _mm512_loadu_ps(vp.add(j * d + 16));
            for (a, p) in acc.iter_mut().zip(&pp) {
                let b = _mm512_set1_ps(*p.add(j)); // broadcast p[i][j]
                a[0] = _mm512_fmadd_ps(b, v0, a[0]);
                a[1] = _mm512_fmadd_ps(b, v1, a[1]);
            }
        }
        let mut out = [[0.0f32; 32]; R];
        for (row, a) in out.iter_mut().zip(&acc) {
            _mm512_storeu_ps(row.as_mut_ptr(), a[0]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), a[1]);
        }
        out
    }
}

/// One step of the tiled loop on a (Q tile, K/V tile) pair: scores, online softmax, output update.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_step<const FUSED: bool, const CS: usize>(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    mask: &dyn Fn(usize, usize) -> bool,
    masked: bool,
    br: usize,
    bc: usize,
    d: usize,
) {
    s_tile::<FUSED, CS>(q, kt, s, br, bc, d);
    if masked {
        for r in 0..br {
            for c in 0..bc {
                if !mask(r, c) {
                    s[r * bc + c] = f32::NEG_INFINITY;
                }
            }
        }
    }
    softmax_tile::<FUSED>(s, m, l, o, br, bc, d);
    pv_tile::<FUSED, CS>(s, v, o, br, bc, d);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_step_avx512(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    mask: &dyn Fn(usize, usize) -> bool,
    masked: bool,
    br: usize,
    bc: usize,
    d: usize,
) {
    tile_step::<true, 32>(q, kt, v, s, m, l, o, mask, masked, br, bc, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_step_avx2(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    mask: &dyn Fn(usize, usize) -> bool,
    masked: bool,
    br: usize,
    bc: usize,
    d: usize,
) {
    tile_step::<true, 16>(q, kt, v, s, m, l, o, mask, masked, br, bc, d)
}

/// Run one tile step with the inner loops compiled for `isa`. `isa` must come from [`Isa::detect`]
/// (or be [`Isa::Portable`]): asking for an instruction set the CPU lacks falls back to portable code.
#[allow(clippy::too_many_arguments)]
pub fn step(
    isa: Isa,
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [f32],
    mask: &dyn Fn(usize, usize) -> bool,
    masked: bool,
    br: usize,
    bc: usize,
    d: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the CPU has the features: `detect` found them (re-checked here, cheaply cached).
        Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => unsafe {
            return tile_step_avx512(q, kt, v, s, m, l, o, mask, masked, br, bc, d);
        },
        Isa::Avx2Fma
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") =>
        unsafe {
            return tile_step_avx2(q, kt, v, s, m, l, o, mask, masked, br, bc, d);
        },
        _ => {}
    }
    let _ = isa;
    tile_step::<false, 8>(q, kt, v, s, m, l, o, mask, masked, br, bc, d)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
