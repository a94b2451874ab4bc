//! The correctness rule every timed configuration passes first (FlashAttention's, from its tests):
//!
//! `max|out - ref64| <= 2 * max|out_lowp - ref64| + 2 * floor(dtype)`
//!
//! where `ref64` is the `f64` reference, `out_lowp` the reference recomputed in the candidate's precision
//! with another operation order ([`super::reference::attention_lowp`]), and `floor` the rounding error of
//! adding and removing `0.3` in the dtype at the output's magnitudes (the Hopper tests' `fwd_atol`). A
//! candidate may be as wrong as low-precision arithmetic is, with a factor of two of slack, and no more.
//! For `f32` (and wider) candidates the twin is as precise as the candidate, so a factor of two is within
//! the noise of summation order; the bound then also admits an accumulation floor,
//! `sqrt(Nk) * 2^-24 * max|ref|` (the typical error of summing `Nk` terms in f32), negligible at f16.
//! `Nk` is the number of terms the caller says each output's f32 sums run over: the keys, plus the head
//! size where the candidate's scores are themselves f32 sums whose error the exponential carries into
//! every probability (the CPU kernels' tests pass both).
//! The reference is computed from the candidate's own stored inputs (an `f16` tensor widened exactly), as
//! FlashAttention's tests do: rounding the inputs to the storage type is not the kernel's error.
//! For `f16` with unit-normal inputs the phase adds an absolute bar: `max|out - ref64| <= 1e-3`.

use super::numeric::{DType, Element};
use super::reference::{attention_lowp, attention_ref64};
use super::shape::{AttnShape, Mask};
use std::fmt;
use thiserror::Error;

/// The phase's absolute bar for `f16` outputs on unit-normal inputs.
pub const FP16_BAR: f64 = 1e-3;

/// Maximum and mean absolute error of one output against the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrStats {
    /// `max_i |x_i - ref_i|`.
    pub max: f64,
    /// `mean_i |x_i - ref_i|`.
    pub mean: f64,
}

/// Errors of `out` against `reference` (equal lengths). A NaN anywhere makes `max` NaN.
pub fn err_stats(out: &[f64], reference: &[f64]) -> ErrStats {
    let mut max = 0.0f64;
    let mut sum = 0.0;
    for (x, r) in out.iter().zip(reference) {
        let e = (x - r).abs();
        if e.is_nan() || e > max {
            max = if max.is_nan() { max } else { e };
        }
        sum += e;
    }
    ErrStats {
        max,
        mean: sum / reference.len().max(1) as f64,
    }
}

/// The dtype's rounding floor at these outputs: `max_i |((r_i + 0.3) - 0.3) - r_i|`, each operation
/// rounded to `dt`, with `r_i` the reference rounded to `dt`.
pub fn rounding_floor(dt: DType, reference: &[f64]) -> f64 {
    reference
        .iter()
        .map(|&x| {
            let r = dt.round(x);
            (dt.round(dt.round(r + 0.3) - 0.3) - r).abs()
        })
        .fold(0.0, f64::max)
}

/// Everything the rule looked at, for printing and for measurement records.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseReport {
    /// What was checked (kernel and configuration).
    pub name: String,
    /// The candidate's dtype.
    pub dtype: DType,
    /// The candidate's error against `ref64`.
    pub candidate: ErrStats,
    /// The low-precision reference's error against `ref64`.
    pub baseline: ErrStats,
    /// [`rounding_floor`] at the reference's outputs.
    pub floor: f64,
    /// The f32 accumulation floor `sqrt(Nk) 2^-24 max|ref|` (0 for f16 and bf16 candidates).
    pub accum_floor: f64,
    /// The allowed maximum error: `2 * baseline.max + 2 * floor + accum_floor`.
    pub bound: f64,
    /// The absolute bar applied too, if any.
    pub bar: Option<f64>,
}

impl fmt::Display for CloseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}]: candidate max {:.3e} mean {:.3e} | low-precision reference max {:.3e} mean {:.3e} | \
             allowed {:.3e}{}",
            self.name,
            self.dtype.name(),
            self.candidate.max,
            self.candidate.mean,
            self.baseline.max,
            self.baseline.mean,
            self.bound,
            match self.bar {
                Some(b) => format!(" and bar {b:.0e}"),
                None => String::new(),
            }
        )
    }
}

/// Why a candidate failed the rule.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CloseError {
    /// The candidate, reference and baseline do not have the same number of elements.
    #[error("lengths differ: candidate {candidate}, low-precision {lowp}, reference {reference}")]
    LengthMismatch {
        /// Candidate elements.
        candidate: usize,
        /// Low-precision reference elements.
        lowp: usize,
        /// Reference elements.
        reference: usize,
    },
    /// Some output is NaN or infinite (for example a poisoned output the kernel never wrote).
    #[error("{0}: output {1} is not finite (left unwritten, or overflowed)")]
    NotFinite(String, usize),
    /// The candidate is further from the reference than the rule allows.
    #[error("too far from the reference: {0}")]
    TooFar(Box<CloseReport>),
    /// The candidate passed the relative rule but not the absolute bar.
    #[error("above the absolute bar: {0}")]
    AboveBar(Box<CloseReport>),
}

// ANCHOR: attn_close
/// Apply the rule. `out`, `lowp` and `reference` are the candidate, the low-precision reference and the
/// `f64` reference, all widened to `f64`; `bar` adds an absolute limit (use [`FP16_BAR`] for `f16`
/// outputs on unit-normal inputs); `nk` is the number of terms each output's f32 sums run over (the
/// keys, or the keys plus the head size: see the module's note).
pub fn attn_close(
    name: &str,
    out: &[f64],
    lowp: &[f64],
    reference: &[f64],
    dtype: DType,
    nk: usize,
    bar: Option<f64>,
) -> Result<CloseReport, CloseError> {
    if out.len() != reference.len() || lowp.len() != reference.len() {
        return Err(CloseError::LengthMismatch {
            candidate: out.len(),
            lowp: lowp.len(),
            reference: reference.len(),
        });
    }
    // Every comparison below is false for a NaN: a non-finite reference would pass anything.
    for (which, xs) in [
        ("", out),
        (" (low-precision reference)", lowp),
        (" (reference)", reference),
    ] {
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(CloseError::NotFinite(format!("{name}{which}"), i));
        }
    }
    let candidate = err_stats(out, reference);
    let baseline = err_stats(lowp, reference);
    let floor = rounding_floor(dtype, reference);
    let accum_floor = match dtype {
        DType::F32 | DType::F64 => {
            let peak = reference.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            (nk as f64).sqrt() * DType::F32.unit_roundoff() * peak
        }
        DType::F16 | DType::BF16 => 0.0,
    };
    let bound = 2.0 * baseline.max + 2.0 * floor + accum_floor; // FlashAttention's rule
    let report = CloseReport {
        name: name.to_string(),
        dtype,
        candidate,
        baseline,
        floor,
        accum_floor,
        bound,
        bar,
    };
    if candidate.max > bound {
        return Err(CloseError::TooFar(Box::new(report)));
    }
    if bar.is_some_and(|b| candidate.max > b) {
        return Err(CloseError::AboveBar(Box::new(report)));
    }
    Ok(report)
}
// ANCHOR_END: attn_close

/// The check every CPU harness, bench and probe runs before it times a configuration: batch 0's first kv
/// heads (up to 2) and their query heads (contiguous at the start of every tensor: query head `h` reads kv
/// head `h / G`), and the last batch's last kv head with its query heads (at the end of every tensor),
/// against the f64 reference under the rule, with the fp16 bar for `f16` outputs. The references are
/// computed once, at construction; [`LeadingHeads::check`] then costs a comparison.
pub struct LeadingHeads {
    /// Per checked region: its shape, where its query rows start in `q` and `o`, and its references.
    regions: Vec<(AttnShape, usize, Vec<f64>, Vec<f64>)>,
    dtype: DType,
}

impl LeadingHeads {
    /// The references for the inputs `q, k, v` of shape `s` under `mask`, in `T`'s precision.
    pub fn new<T: Element>(q: &[T], k: &[T], v: &[T], s: &AttnShape, mask: Mask) -> Self {
        let kv_heads = 2.min(s.hkv);
        let lead = AttnShape::new(1, kv_heads * s.group(), kv_heads, s.nq, s.nk, s.d)
            .expect("a sub-shape of a valid shape");
        let tail = AttnShape::new(1, s.group(), 1, s.nq, s.nk, s.d).expect("a sub-shape");
        let regions = [
            (lead, 0, 0),
            (tail, s.q_len() - tail.q_len(), s.kv_len() - tail.kv_len()),
        ]
        .into_iter()
        .map(|(sub, qo, ko)| {
            let q = &q[qo..][..sub.q_len()];
            let (k, v) = (&k[ko..][..sub.kv_len()], &v[ko..][..sub.kv_len()]);
            let reference = attention_ref64(q, k, v, &sub, mask).expect("a valid sub-shape");
            let lowp = attention_lowp(q, k, v, &sub, mask, T::DTYPE).expect("a valid sub-shape");
            (sub, qo, reference, lowp)
        })
        .collect();
        Self {
            regions,
            dtype: T::DTYPE,
        }
    }

    /// Apply the rule to the output `o` (the whole output of the call) in each region: the report with
    /// the largest error, or the first failure.
    pub fn check<T: Element>(&self, name: &str, o: &[T]) -> Result<CloseReport, CloseError> {
        let bar = (self.dtype == DType::F16).then_some(FP16_BAR);
        let mut worst: Option<CloseReport> = None;
        for (sub, qo, reference, lowp) in &self.regions {
            let rows = o.get(*qo..*qo + sub.q_len()).unwrap_or_default();
            let got: Vec<f64> = rows.iter().map(|x| x.to_f64()).collect();
            let r = attn_close(name, &got, lowp, reference, self.dtype, sub.nk, bar)?;
            if worst
                .as_ref()
                .is_none_or(|w| r.candidate.max > w.candidate.max)
            {
                worst = Some(r);
            }
        }
        Ok(worst.expect("two regions"))
    }
}

/// For harnesses: `(passed, candidate max error)`, logging the failure when there is one (the max error
/// is NaN then, and the configuration is recorded as unchecked).
pub fn verdict<E: fmt::Display>(
    result: &Result<CloseReport, E>,
    log: &mut dyn FnMut(&str),
) -> (bool, f64) {
    match result {
        Ok(r) => (true, r.candidate.max),
        Err(e) => {
            log(&format!("FAILED CHECK {e}"));
            (false, f64::NAN)
        }
    }
}

/// [`attn_close`] for tests: prints the errors of candidate and baseline, then panics on failure.
#[track_caller]
pub fn assert_attn_close(
    name: &str,
    out: &[f64],
    lowp: &[f64],
    reference: &[f64],
    dtype: DType,
    nk: usize,
    bar: Option<f64>,
) -> CloseReport {
    match attn_close(name, out, lowp, reference, dtype, nk, bar) {
        Ok(report) => {
            println!("ok   {report}");
            report
        }
        Err(e) => {
            println!("FAIL {e}");
            panic!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_heads_cover_the_first_and_the_last_groups() {
        use crate::minimodel::attention_flash::flash_forward;
        use crate::minimodel::rng::Rng;
        let s = AttnShape::new(3, 8, 4, 17, 17, 16).unwrap();
        let mut rng = Rng::new(9);
        let q = rng.normal_vec_f32(s.q_len());
        let (k, v) = (
            rng.normal_vec_f32(s.kv_len()),
            rng.normal_vec_f32(s.kv_len()),
        );
        let mut o = vec![0.0f32; s.q_len()];
        flash_forward(&q, &k, &v, &s, Mask::CAUSAL, &mut o).unwrap();
        let c = LeadingHeads::new(&q, &k, &v, &s, Mask::CAUSAL);
        assert!(c.check("ok", &o).is_ok());
        // A wrong row in batch 0's first head, or in the last batch's last head, fails.
        for at in [0, o.len() - 1] {
            let mut bad = o.clone();
            bad[at] += 0.5;
            assert!(
                matches!(c.check("bad", &bad), Err(CloseError::TooFar(_))),
                "{at}"
            );
        }
        let short = &o[..o.len() - 1];
        assert!(matches!(
            c.check("short", short),
            Err(CloseError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn rule_accepts_and_rejects() {
        let reference = vec![0.25, -0.5, 1.0];
        let lowp: Vec<f64> = reference.iter().map(|x| x + 1e-3).collect();
        let good: Vec<f64> = reference.iter().map(|x| x - 1.5e-3).collect();
        let bad: Vec<f64> = reference.iter().map(|x| x + 5e-3).collect();
        let r = attn_close("good", &good, &lowp, &reference, DType::F16, 3, None).unwrap();
        assert!((r.baseline.max - 1e-3).abs() < 1e-12);
        assert!(matches!(
            attn_close("bad", &bad, &lowp, &reference, DType::F16, 3, None),
            Err(CloseError::TooFar(_))
        ));
        assert!(matches!(
            attn_close(
                "bar",
                &good,
                &lowp,
                &reference,
                DType::F16,
                3,
                Some(FP16_BAR)
            ),
            Err(CloseError::AboveBar(_))
        ));
        let poisoned = vec![0.25, f64::NAN, 1.0];
        assert!(matches!(
            attn_close("nan", &poisoned, &lowp, &reference, DType::F16, 3, None),
            Err(CloseError::NotFinite(_, 1))
        ));
        // A non-finite reference or baseline is refused too (a NaN bound would accept anything).
        for (nan_ref, nan_lowp) in [(true, false), (false, true)] {
            let put = |xs: &[f64], nan: bool| {
                let mut xs = xs.to_vec();
                if nan {
                    xs[2] = f64::INFINITY;
                }
                xs
            };
            let (r, l) = (put(&reference, nan_ref), put(&lowp, nan_lowp));
            assert!(matches!(
                attn_close("ref", &bad, &l, &r, DType::F16, 3, None),
                Err(CloseError::NotFinite(_, 2))
            ));
        }
        assert!(rounding_floor(DType::F16, &reference) > 0.0);
        assert_eq!(rounding_floor(DType::F64, &[0.0]), 0.0);
    }
}
