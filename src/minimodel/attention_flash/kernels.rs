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
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -126.0 {
        0.0
    } else {
        p * scale
    }
}
// ANCHOR_END: exp2

/// Rows of the S product handled together: their accumulators stay in registers.
const RS: usize = 4;
/// Columns of S per register block (one AVX-512 register, two AVX2 registers).
const CS: usize = 16;
/// Rows of the PV product handled together.
const RO: usize = 4;

// ANCHOR: s_tile
/// `s = q kt` for a `(br, d) x (d, bc)` tile pair: `RS` rows of `q` against `CS` columns of `kt` at a
/// time, `RS * CS` accumulators kept in registers across the whole `d` loop.
#[inline(always)]
fn s_tile<const FUSED: bool>(q: &[f32], kt: &[f32], s: &mut [f32], br: usize, bc: usize, d: usize) {
    let mut r = 0;
    while r < br {
        let rows = RS.min(br - r);
        let mut c = 0;
        while c < bc {
            let cols = CS.min(bc - c);
            let mut acc = [[0.0f32; CS]; RS];
            if rows == RS && cols == CS {
                for k in 0..d {
                    let kv: &[f32; CS] = kt[k * bc + c..][..CS].try_into().expect("CS lanes");
                    for (i, a) in acc.iter_mut().enumerate() {
                        let qi = q[(r + i) * d + k]; // broadcast one element of q
                        for (x, y) in a.iter_mut().zip(kv) {
                            *x = fma::<FUSED>(qi, *y, *x);
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
        let m_new = row.iter().copied().fold(m[r], f32::max);
        if m_new == f32::NEG_INFINITY {
            row.fill(0.0); // nothing visible yet: contributes nothing
            continue;
        }
        let alpha = exp2::<FUSED>(m[r] - m_new); // 0 when m = -inf
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = exp2::<FUSED>(*x - m_new);
            sum += *x;
        }
        l[r] = fma::<FUSED>(l[r], alpha, sum);
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
/// `o += p v` for a `(br, bc) x (bc, d)` tile pair: `RO` rows at a time, each row of `v` loaded once per
/// block of rows and reused across them.
#[inline(always)]
fn pv_tile<const FUSED: bool>(p: &[f32], v: &[f32], o: &mut [f32], br: usize, bc: usize, d: usize) {
    let mut r = 0;
    while r < br {
        let rows = RO.min(br - r);
        let block = &mut o[r * d..(r + rows) * d];
        for j in 0..bc {
            let vj = &v[j * d..][..d];
            for (i, oi) in block.chunks_exact_mut(d).enumerate() {
                let pij = p[(r + i) * bc + j];
                if pij == 0.0 {
                    continue; // masked or underflowed: skip the row update
                }
                for (x, y) in oi.iter_mut().zip(vj) {
                    *x = fma::<FUSED>(pij, *y, *x);
                }
            }
        }
        r += RO;
    }
}
// ANCHOR_END: pv_tile

/// One step of the tiled loop on a (Q tile, K/V tile) pair: scores, online softmax, output update.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_step<const FUSED: bool>(
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
    s_tile::<FUSED>(q, kt, s, br, bc, d);
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
    pv_tile::<FUSED>(s, v, o, br, bc, d);
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
    tile_step::<true>(q, kt, v, s, m, l, o, mask, masked, br, bc, d)
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
    tile_step::<true>(q, kt, v, s, m, l, o, mask, masked, br, bc, d)
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
    tile_step::<false>(q, kt, v, s, m, l, o, mask, masked, br, bc, d)
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
