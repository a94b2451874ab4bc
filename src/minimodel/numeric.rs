//! The number types at the storage boundary, and what each one rounds away.
//!
//! Kernels store `f16`/`bf16` (or `f32`), accumulate in `f32`, and are judged against an `f64` reference.
//! [`Element`] converts any of them to and from `f64`; [`DType`] names them and knows their rounding.

use half::{bf16, f16};

/// The storage types this book's kernels read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE double: the reference's arithmetic.
    F64,
    /// IEEE single.
    F32,
    /// IEEE half: 10 explicit mantissa bits.
    F16,
    /// bfloat16: 7 explicit mantissa bits, the exponent range of f32.
    BF16,
}

impl DType {
    /// Bytes per element in slow memory.
    pub const fn bytes(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Unit roundoff `u = 2^-(p)` where `p` counts the mantissa bits including the implicit one:
    /// the largest relative error of rounding one value to nearest.
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DType::F64 => 2f64.powi(-53),
            DType::F32 => 2f64.powi(-24),
            DType::F16 => 2f64.powi(-11),
            DType::BF16 => 2f64.powi(-8),
        }
    }

    /// Round an `f64` to this type and back.
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::F64 => x,
            DType::F32 => x as f32 as f64,
            DType::F16 => f16::from_f64(x).to_f64(),
            DType::BF16 => bf16::from_f64(x).to_f64(),
        }
    }

    /// The short name used in measurement records (`"f16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

/// A storage element: convertible to `f64` exactly, and from `f64` by rounding to nearest.
pub trait Element: Copy + Send + Sync + 'static {
    /// Which [`DType`] this is.
    const DTYPE: DType;
    /// Exact widening to `f64`.
    fn to_f64(self) -> f64;
    /// Rounding to nearest from `f64`.
    fn from_f64(x: f64) -> Self;
    /// Widening to `f32` (exact for f32, f16 and bf16; rounding for f64): what kernels load.
    fn to_f32(self) -> f32;
    /// Rounding to nearest from `f32`: what kernels store.
    fn from_f32(x: f32) -> Self;
    /// Widen a whole slice into `dst` (equal lengths): a kernel's tile load. The half types override it
    /// with `half`'s vectorised conversion (F16C where the CPU has it).
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// Round a whole slice of f32 into `dst` (equal lengths): a kernel's tile store. The half types
    /// override it with `half`'s vectorised conversion, as [`Element::widen_into`].
    fn narrow_from(src: &[f32], dst: &mut [Self]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(*s);
        }
    }
    /// Neither infinite nor NaN. The half types test the exponent bits (no conversion: validating an
    /// f16 input by widening each element was 30% of a short sequence's time).
    fn finite(self) -> bool {
        self.to_f32().is_finite()
    }
    /// Every element [`Element::finite`]: a branch-free pass (it vectorises). f32 overrides it with
    /// AVX-512 where the CPU has it.
    fn all_finite(x: &[Self]) -> bool {
        x.iter().fold(true, |ok, e| ok & e.finite())
    }
    /// `src` as f32: widened into `buf` (the first `src.len()` floats) and returned from there; the f32
    /// slice itself for f32, so that a kernel reads it in place instead of copying it into a tile.
    fn view_f32<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
        let buf = &mut buf[..src.len()];
        Self::widen_into(src, buf);
        buf
    }
    /// An output slice a kernel may accumulate into directly: the slice itself for f32, `None` for the
    /// other types (which accumulate in an f32 buffer and round once at the end).
    fn as_f32_mut(dst: &mut [Self]) -> Option<&mut [f32]> {
        let _ = dst;
        None
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x as f64
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    fn view_f32<'a>(src: &'a [Self], _buf: &'a mut [f32]) -> &'a [f32] {
        src
    }
    fn as_f32_mut(dst: &mut [Self]) -> Option<&mut [f32]> {
        Some(dst)
    }
    fn all_finite(x: &[Self]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present.
            return unsafe { all_finite_avx512(x) };
        }
        x.iter().fold(true, |ok, e| ok & e.is_finite())
    }
}

/// [`Element::all_finite`] for f32 on AVX-512: 16 exponent fields compared with all-ones per
/// instruction, the results OR-ed into one mask (the crate's baseline build has only 128-bit
/// vectors; with them this check of the inputs was about a sixth of the time at N = 64).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn all_finite_avx512(x: &[f32]) -> bool {
    use std::arch::x86_64::*;
    let exp = _mm512_set1_epi32(0x7f80_0000);
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    let mut bad: u16 = 0;
    for c in chunks {
        let bits = _mm512_loadu_si512(c.as_ptr().cast());
        bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, exp), exp);
    }
    bad == 0 && tail.iter().all(|e| e.is_finite())
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
    fn narrow_from(src: &[f32], dst: &mut [Self]) {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src);
    }
    #[inline(always)]
    fn finite(self) -> bool {
        f16::is_finite(self)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
    fn narrow_from(src: &[f32], dst: &mut [Self]) {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src);
    }
    #[inline(always)]
    fn finite(self) -> bool {
        bf16::is_finite(self)
    }
}

/// Convert a whole slice (for example `f32` inputs to the `f16` a kernel stores).
pub fn convert<A: Element, B: Element>(xs: &[A]) -> Vec<B> {
    xs.iter().map(|&x| B::from_f64(x.to_f64())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_every_nan_and_infinity() {
        // Lengths around the 16-lane blocks; a bad value at every position, and the extremes that are
        // finite (the largest f32, a subnormal, -0).
        for n in [0, 1, 15, 16, 17, 47, 64, 100] {
            let mut x: Vec<f32> = (0..n).map(|i| (i as f32 - 7.5) * 1e3).collect();
            if n >= 3 {
                (x[0], x[1], x[2]) = (f32::MAX, f32::MIN_POSITIVE / 4.0, -0.0);
            }
            assert!(<f32 as Element>::all_finite(&x), "n = {n}");
            for i in 0..n {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let keep = x[i];
                    x[i] = bad;
                    assert!(!<f32 as Element>::all_finite(&x), "n = {n}, {bad} at {i}");
                    x[i] = keep;
                }
            }
        }
    }

    #[test]
    fn roundoff_bounds_rounding() {
        for dt in [DType::F32, DType::F16, DType::BF16] {
            for x in [0.1, 1.0 / 3.0, 0.7, 1.9] {
                let rel = (dt.round(x) - x).abs() / x;
                assert!(rel <= dt.unit_roundoff(), "{dt:?} {x} {rel}");
            }
        }
        assert_eq!(f16::from_f64(0.5).to_f64(), 0.5);
        assert_eq!(DType::BF16.bytes(), 2);
    }
}
