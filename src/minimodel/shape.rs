//! Validated attention shapes and masks, shared by every attention implementation in the crate.
//!
//! `q: (B, Hq, Nq, D)`, `k, v: (B, Hkv, Nk, D)`, `o: (B, Hq, Nq, D)`, all row-major and contiguous.
//! Query row `i` sits at absolute position `p = i + Nk - Nq`: the queries are the *last* `Nq` tokens of
//! the `Nk` keys (FlashAttention's bottom-right alignment), so decode (`Nq = 1`) sees every key.

use std::num::NonZeroUsize;
use thiserror::Error;

/// Why an attention call was refused. Nothing was computed or written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShapeError {
    /// A dimension that must be at least 1 was 0.
    #[error("dimension {dim} is 0; every attention dimension must be at least 1")]
    ZeroDim {
        /// Which dimension (`"B"`, `"Hq"`, `"Hkv"`, `"Nq"`, `"Nk"`, `"D"`).
        dim: &'static str,
    },
    /// Query heads must split evenly into groups that share one kv head.
    #[error("Hq = {hq} query heads cannot be shared evenly by Hkv = {hkv} kv heads")]
    HeadsNotDivisible {
        /// Query heads.
        hq: usize,
        /// Key/value heads.
        hkv: usize,
    },
    /// A tensor's slice length does not match its shape.
    #[error("tensor {tensor} has {got} elements but its shape {shape} needs {expected}")]
    LengthMismatch {
        /// Which tensor (`"q"`, `"k"`, `"v"`, `"o"`).
        tensor: &'static str,
        /// The shape it should have, spelled out.
        shape: String,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A sliding window of zero keys would mask everything.
    #[error("a sliding window must hold at least one key (got 0)")]
    ZeroWindow,
    /// A tensor of the shape would hold more elements than an address can count.
    #[error("tensor {tensor} of shape {shape} has more elements than fit in a usize")]
    TooLarge {
        /// Which tensor (`"q"` or `"k"`).
        tensor: &'static str,
        /// The shape, spelled out.
        shape: String,
    },
}

/// The dimensions of one attention call, checked once at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttnShape {
    /// Batch size `B`.
    pub b: usize,
    /// Query heads `Hq`.
    pub hq: usize,
    /// Key/value heads `Hkv` (`Hq` for MHA, 1 for MQA, a divisor of `Hq` for GQA).
    pub hkv: usize,
    /// Query rows `Nq`.
    pub nq: usize,
    /// Key/value rows `Nk`.
    pub nk: usize,
    /// Head size `D`.
    pub d: usize,
}

impl AttnShape {
    /// A checked shape: every dimension at least 1, `Hkv` dividing `Hq`, and every tensor's element count
    /// representable.
    pub fn new(
        b: usize,
        hq: usize,
        hkv: usize,
        nq: usize,
        nk: usize,
        d: usize,
    ) -> Result<Self, ShapeError> {
        for (dim, v) in [
            ("B", b),
            ("Hq", hq),
            ("Hkv", hkv),
            ("Nq", nq),
            ("Nk", nk),
            ("D", d),
        ] {
            if v == 0 {
                return Err(ShapeError::ZeroDim { dim });
            }
        }
        if !hq.is_multiple_of(hkv) {
            return Err(ShapeError::HeadsNotDivisible { hq, hkv });
        }
        let s = Self {
            b,
            hq,
            hkv,
            nq,
            nk,
            d,
        };
        let count = |dims: [usize; 4]| dims.iter().try_fold(1usize, |n, &x| n.checked_mul(x));
        for (tensor, dims, shape) in [
            ("q", [b, hq, nq, d], s.q_shape()),
            ("k", [b, hkv, nk, d], s.kv_shape()),
        ] {
            if count(dims).is_none() {
                return Err(ShapeError::TooLarge { tensor, shape });
            }
        }
        Ok(s)
    }

    /// `q`'s shape spelled out, for error messages.
    fn q_shape(&self) -> String {
        format!(
            "(B={}, Hq={}, Nq={}, D={})",
            self.b, self.hq, self.nq, self.d
        )
    }

    /// `k`'s (and `v`'s) shape spelled out, for error messages.
    fn kv_shape(&self) -> String {
        format!(
            "(B={}, Hkv={}, Nk={}, D={})",
            self.b, self.hkv, self.nk, self.d
        )
    }

    /// Self-attention with MHA: `Hkv = Hq`, `Nk = Nq = n`.
    pub fn self_attention(b: usize, h: usize, n: usize, d: usize) -> Result<Self, ShapeError> {
        Self::new(b, h, h, n, n, d)
    }

    /// Query heads per kv head: `G = Hq / Hkv`.
    pub fn group(&self) -> usize {
        self.hq / self.hkv
    }

    /// Elements of `q` (and of `o`).
    pub fn q_len(&self) -> usize {
        self.b * self.hq * self.nq * self.d
    }

    /// Elements of `k` (and of `v`).
    pub fn kv_len(&self) -> usize {
        self.b * self.hkv * self.nk * self.d
    }

    /// Offset of row `i` of head `h` of batch `b` in `q` or `o`.
    pub fn q_row(&self, b: usize, h: usize, i: usize) -> usize {
        ((b * self.hq + h) * self.nq + i) * self.d
    }

    /// Offset of row `j` of kv head `h` of batch `b` in `k` or `v`.
    pub fn kv_row(&self, b: usize, h: usize, j: usize) -> usize {
        ((b * self.hkv + h) * self.nk + j) * self.d
    }

    /// Check the shape itself (as [`AttnShape::new`] does: the fields are public, so a shape may have been
    /// built or changed without it), then the three input slices' lengths against it.
    pub fn check_inputs(&self, q: usize, k: usize, v: usize) -> Result<(), ShapeError> {
        Self::new(self.b, self.hq, self.hkv, self.nq, self.nk, self.d)?;
        let (qs, ks) = (self.q_shape(), self.kv_shape());
        for (tensor, shape, expected, got) in [
            ("q", &qs, self.q_len(), q),
            ("k", &ks, self.kv_len(), k),
            ("v", &ks, self.kv_len(), v),
        ] {
            if expected != got {
                return Err(ShapeError::LengthMismatch {
                    tensor,
                    shape: shape.clone(),
                    expected,
                    got,
                });
            }
        }
        Ok(())
    }
}

/// Which keys a query row may see. `causal` and `window` combine.
///
/// With query row `i` at absolute position `p = i + Nk - Nq`, key `j` is visible when
/// `causal` implies `j <= p`, and a window of `W` keys implies `j > p - W` (the `W` most recent positions
/// up to `p`; with `causal` that is exactly `W` keys ending at the query itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mask {
    /// Hide keys after the query's own position.
    pub causal: bool,
    /// Hide keys `W` or more positions before the query.
    pub window: Option<NonZeroUsize>,
}

impl Mask {
    /// Every key visible.
    pub const NONE: Mask = Mask {
        causal: false,
        window: None,
    };
    /// Causal: key `j` visible iff `j <= p`.
    pub const CAUSAL: Mask = Mask {
        causal: true,
        window: None,
    };

    /// A sliding window of `w` keys, optionally causal. `w = 0` is refused.
    pub fn sliding(w: usize, causal: bool) -> Result<Mask, ShapeError> {
        let window = NonZeroUsize::new(w).ok_or(ShapeError::ZeroWindow)?;
        Ok(Mask {
            causal,
            window: Some(window),
        })
    }

    /// The window's length as a signed key count, for position arithmetic: a window longer than
    /// [`Mask::MAX_WINDOW`] (`usize::MAX` as "no limit", say) hides no key of any sequence a machine can
    /// hold, and counts as that long.
    pub fn window_keys(&self) -> Option<i64> {
        self.window.map(|w| w.get().min(Self::MAX_WINDOW) as i64)
    }

    /// The longest window [`Mask::window_keys`] distinguishes: 2^62 keys, more than any slice can hold,
    /// and small enough that `position - window` cannot overflow an `i64`.
    pub const MAX_WINDOW: usize = 1 << 62;

    /// Is key `j` visible to query row `i` of a `(nq, nk)` problem?
    pub fn visible(&self, i: usize, j: usize, nq: usize, nk: usize) -> bool {
        let p = i as i64 + nk as i64 - nq as i64; // the query's absolute position
        let j = j as i64;
        if self.causal && j > p {
            return false;
        }
        match self.window_keys() {
            Some(w) => j > p - w,
            None => true,
        }
    }

    /// The name used in measurement records: `none`, `causal`, `window:W`, `causal+window:W`.
    pub fn name(&self) -> String {
        match (self.causal, self.window) {
            (false, None) => "none".into(),
            (true, None) => "causal".into(),
            (false, Some(w)) => format!("window:{w}"),
            (true, Some(w)) => format!("causal+window:{w}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_shapes() {
        assert_eq!(
            AttnShape::new(1, 8, 3, 4, 4, 32),
            Err(ShapeError::HeadsNotDivisible { hq: 8, hkv: 3 })
        );
        assert_eq!(
            AttnShape::new(1, 8, 8, 0, 4, 32),
            Err(ShapeError::ZeroDim { dim: "Nq" })
        );
        assert_eq!(Mask::sliding(0, true), Err(ShapeError::ZeroWindow));
        let s = AttnShape::new(2, 8, 2, 3, 5, 4).unwrap();
        assert_eq!(s.group(), 4);
        let err = s
            .check_inputs(s.q_len(), s.kv_len() - 1, s.kv_len())
            .unwrap_err();
        assert!(err.to_string().contains("tensor k"), "{err}");
    }

    #[test]
    fn a_shape_built_around_new_is_checked_with_its_inputs() {
        // The fields are public: a shape written out by hand meets the same checks as `new`'s.
        let s = AttnShape::new(1, 8, 2, 4, 4, 32).unwrap();
        let bad = |s: AttnShape| s.check_inputs(s.q_len(), 0, 0).unwrap_err();
        assert_eq!(
            bad(AttnShape { hkv: 0, ..s }),
            ShapeError::ZeroDim { dim: "Hkv" }
        );
        assert_eq!(
            bad(AttnShape { hkv: 3, ..s }),
            ShapeError::HeadsNotDivisible { hq: 8, hkv: 3 }
        );
        assert_eq!(
            bad(AttnShape { d: 0, ..s }),
            ShapeError::ZeroDim { dim: "D" }
        );
        // Element counts past a usize are refused, not wrapped.
        let huge = AttnShape::new(1, 1 << 32, 1, 1 << 32, 1, 1).unwrap_err();
        assert!(
            matches!(huge, ShapeError::TooLarge { tensor: "q", .. }),
            "{huge}"
        );
        let huge = AttnShape::new(1 << 20, 1, 1, 1, 1 << 44, 1).unwrap_err();
        assert!(
            matches!(huge, ShapeError::TooLarge { tensor: "k", .. }),
            "{huge}"
        );
    }

    #[test]
    fn a_window_longer_than_any_sequence_hides_nothing() {
        for causal in [false, true] {
            let plain = Mask {
                causal,
                window: None,
            };
            for w in [usize::MAX, usize::MAX / 2 + 1, Mask::MAX_WINDOW, 100] {
                let m = Mask::sliding(w, causal).unwrap();
                for (i, j) in [(0, 0), (0, 5), (3, 0), (3, 7), (7, 7)] {
                    assert_eq!(
                        m.visible(i, j, 8, 8),
                        plain.visible(i, j, 8, 8),
                        "w={w} {i} {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn masks_are_bottom_right_aligned() {
        // Nq = 2 queries are the last two of Nk = 4 keys: positions 2 and 3.
        let c = Mask::CAUSAL;
        assert!(c.visible(0, 2, 2, 4) && !c.visible(0, 3, 2, 4));
        assert!(c.visible(1, 3, 2, 4));
        let w = Mask::sliding(2, true).unwrap();
        assert!(!w.visible(1, 1, 2, 4) && w.visible(1, 2, 2, 4) && w.visible(1, 3, 2, 4));
        // More queries than keys: the first queries precede every key and see nothing.
        assert!((0..2).all(|j| !c.visible(0, j, 4, 2)));
        assert_eq!(
            Mask::sliding(256, true).unwrap().name(),
            "causal+window:256"
        );
    }
}
