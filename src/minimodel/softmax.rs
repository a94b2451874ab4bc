//! Lab 00: softmax three ways, and the merge that makes FlashAttention possible.
//!
//! * [`softmax`]: the batched (three-pass) softmax: find the max, sum the exponentials, normalise.
//! * [`OnlineSoftmax`]: the one-pass running state `(m, l)` of Milakov & Gimelshein (2018): the max and
//!   the normaliser of everything seen so far, updated one element at a time. A second pass turns scores
//!   into probabilities, so softmax costs two passes over memory instead of three.
//! * [`OnlineSoftmax::merge`]: two states over disjoint parts of a row combine into the state of the
//!   union. The merge is associative and commutative, so blocks of a row can be processed in any order
//!   and on any worker: this is the identity FlashAttention tiles on.
//! * [`AttentionRow`]: the same state carrying the un-normalised output `o = sum_j e^(s_j - m) v_j`, so an
//!   attention row needs a single pass over K and V.
//!
//! Conventions: scores are `f64` (this is the lab's exact arithmetic); `-inf` means "masked"; `NaN` and
//! `+inf` are rejected as inputs. A row whose every score is masked has `l = 0`: [`softmax`] refuses it
//! (`0/0` has no value), while [`AttentionRow::finish`] defines its output as zeros, as every attention
//! kernel in this book does.

use thiserror::Error;

/// Why a softmax input was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SoftmaxError {
    /// Softmax of nothing has no value.
    #[error("softmax of an empty row: there is no distribution over zero elements")]
    Empty,
    /// A score was NaN or `+inf`; `-inf` (masked) is allowed.
    #[error("score {index} is {value}: only finite scores and -inf (masked) are allowed")]
    NonFinite {
        /// Position of the offending score.
        index: usize,
        /// The offending score.
        value: f64,
    },
    /// Every score was `-inf`: the normaliser is zero and the probabilities are 0/0.
    #[error("every score in the row is masked (-inf): the probabilities would be 0/0")]
    AllMasked,
    /// The merge order of [`blocked_softmax`] was not a permutation of the block indices.
    #[error("merge order {order:?} is not a permutation of the {blocks} block indices")]
    BadOrder {
        /// The order given.
        order: Vec<usize>,
        /// How many blocks the row has.
        blocks: usize,
    },
    /// A value row did not have the width of the attention row's output.
    #[error("value row has {got} elements, the output has {expected}")]
    WidthMismatch {
        /// Width of the output accumulator.
        expected: usize,
        /// Width of the value row offered.
        got: usize,
    },
}

fn check_scores(x: &[f64]) -> Result<(), SoftmaxError> {
    if x.is_empty() {
        return Err(SoftmaxError::Empty);
    }
    match x.iter().position(|v| v.is_nan() || *v == f64::INFINITY) {
        Some(index) => Err(SoftmaxError::NonFinite {
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

// ANCHOR: unsafe_softmax
/// Softmax straight from the definition, `e^(x_j) / sum_k e^(x_k)`, without subtracting the max.
/// Correct in exact arithmetic; in floating point `e^x` overflows to `inf` once `x` passes about 709
/// (`f64`) or 88 (`f32`), and `inf / inf` is NaN. Kept to show why every real softmax subtracts the max.
pub fn unsafe_softmax(x: &[f64]) -> Vec<f64> {
    let l: f64 = x.iter().map(|&xj| xj.exp()).sum();
    x.iter().map(|&xj| xj.exp() / l).collect()
}
// ANCHOR_END: unsafe_softmax

// ANCHOR: batched
/// Batched softmax: three passes over the row (max, sum of exponentials, normalise).
///
/// Subtracting the max first is what keeps `exp` from overflowing: every exponent is `<= 0`.
pub fn softmax(x: &[f64]) -> Result<Vec<f64>, SoftmaxError> {
    check_scores(x)?;
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max); // pass 1: m = max_j x_j
    if m == f64::NEG_INFINITY {
        return Err(SoftmaxError::AllMasked);
    }
    let l: f64 = x.iter().map(|&xj| (xj - m).exp()).sum(); // pass 2: l = sum_j e^(x_j - m)
    Ok(x.iter().map(|&xj| (xj - m).exp() / l).collect()) // pass 3: p_j = e^(x_j - m) / l
}
// ANCHOR_END: batched

/// The running state of an online softmax: `m`, the largest score seen, and `l`, the sum of
/// `e^(x_j - m)` over the scores seen. The empty state is `(m, l) = (-inf, 0)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnlineSoftmax {
    /// Running maximum `m`.
    pub m: f64,
    /// Running normaliser `l`, expressed relative to `m`.
    pub l: f64,
}

impl Default for OnlineSoftmax {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// `e^(a - b)` with the convention `e^(-inf - (-inf)) = 0`: an empty state contributes nothing.
fn rescale(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        0.0
    } else {
        (a - b).exp()
    }
}

impl OnlineSoftmax {
    /// The state of an empty stream.
    pub const EMPTY: Self = Self {
        m: f64::NEG_INFINITY,
        l: 0.0,
    };

    // ANCHOR: online_update
    /// Absorb one score: `m' = max(m, x)`, `l' = l * e^(m - m') + e^(x - m')`.
    ///
    /// When `x` raises the maximum, everything summed so far was measured against the old `m`;
    /// multiplying by `e^(m - m')` re-expresses it against the new one. That factor is the whole trick.
    pub fn push(&mut self, x: f64) {
        let m_new = self.m.max(x);
        self.l = self.l * rescale(self.m, m_new) + rescale(x, m_new);
        self.m = m_new;
    }
    // ANCHOR_END: online_update

    /// The state of a whole stream, in one pass. Fails on NaN or `+inf`; an empty stream gives
    /// [`OnlineSoftmax::EMPTY`].
    pub fn from_stream(x: &[f64]) -> Result<Self, SoftmaxError> {
        let mut state = Self::EMPTY;
        for (index, &value) in x.iter().enumerate() {
            if value.is_nan() || value == f64::INFINITY {
                return Err(SoftmaxError::NonFinite { index, value });
            }
            state.push(value);
        }
        Ok(state)
    }

    // ANCHOR: merge
    /// Combine the states of two disjoint parts of one row into the state of their union:
    /// `m = max(m_a, m_b)`, `l = l_a e^(m_a - m) + l_b e^(m_b - m)`.
    ///
    /// Associative and commutative (up to rounding), with [`OnlineSoftmax::EMPTY`] as identity.
    #[must_use]
    pub fn merge(self, other: Self) -> Self {
        let m = self.m.max(other.m);
        Self {
            m,
            l: self.l * rescale(self.m, m) + other.l * rescale(other.m, m),
        }
    }
    // ANCHOR_END: merge

    /// The probability of score `x` under this state: `e^(x - m) / l`. Needs a non-empty state
    /// with at least one unmasked score.
    pub fn probability(&self, x: f64) -> Result<f64, SoftmaxError> {
        if self.l == 0.0 {
            return Err(SoftmaxError::AllMasked);
        }
        Ok(rescale(x, self.m) / self.l)
    }

    /// `log(sum_j e^(x_j))`, the log-sum-exp of the row: what a kernel stores to merge or recompute later.
    pub fn log_sum_exp(&self) -> f64 {
        self.m + self.l.ln()
    }
}

// ANCHOR: online_softmax
/// Online softmax: one pass to build `(m, l)`, one pass to write the probabilities.
pub fn online_softmax(x: &[f64]) -> Result<Vec<f64>, SoftmaxError> {
    check_scores(x)?;
    let state = OnlineSoftmax::from_stream(x)?; // pass 1: (m, l) together
    x.iter().map(|&xj| state.probability(xj)).collect() // pass 2: p_j = e^(x_j - m) / l
}
// ANCHOR_END: online_softmax

/// Softmax of a row processed in blocks of `block` scores (0 is treated as 1), whose states are merged in the order
/// `order` (a permutation of the block indices). The result must not depend on either choice.
pub fn blocked_softmax(x: &[f64], block: usize, order: &[usize]) -> Result<Vec<f64>, SoftmaxError> {
    check_scores(x)?;
    let block = block.max(1);
    let blocks: Vec<&[f64]> = x.chunks(block).collect();
    let mut seen = vec![false; blocks.len()];
    for &b in order {
        match seen.get_mut(b) {
            Some(s) if !*s => *s = true,
            _ => break,
        }
    }
    if order.len() != blocks.len() || seen.contains(&false) {
        return Err(SoftmaxError::BadOrder {
            order: order.to_vec(),
            blocks: blocks.len(),
        });
    }
    let mut state = OnlineSoftmax::EMPTY;
    for &b in order {
        state = state.merge(OnlineSoftmax::from_stream(blocks[b])?); // any order: the merge commutes
    }
    x.iter().map(|&xj| state.probability(xj)).collect()
}

/// One attention row in flight: the softmax state `(m, l)` and the un-normalised output
/// `o = sum_j e^(s_j - m) v_j`, all relative to the running max `m`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionRow {
    /// Softmax state of the scores seen.
    pub state: OnlineSoftmax,
    /// Un-normalised output accumulator, one entry per value dimension.
    pub o: Vec<f64>,
}

impl AttentionRow {
    /// An empty row whose output has `width` dimensions (the value head size).
    pub fn new(width: usize) -> Self {
        Self {
            state: OnlineSoftmax::EMPTY,
            o: vec![0.0; width],
        }
    }

    // ANCHOR: attention_push
    /// Absorb one key: its score `s` and its value row `v`, in a single pass:
    /// `m' = max(m, s)`, `l' = l e^(m - m') + e^(s - m')`, `o' = o e^(m - m') + e^(s - m') v`.
    pub fn push(&mut self, s: f64, v: &[f64]) -> Result<(), SoftmaxError> {
        if v.len() != self.o.len() {
            return Err(SoftmaxError::WidthMismatch {
                expected: self.o.len(),
                got: v.len(),
            });
        }
        if s.is_nan() || s == f64::INFINITY {
            return Err(SoftmaxError::NonFinite { index: 0, value: s });
        }
        let m_new = self.state.m.max(s);
        let alpha = rescale(self.state.m, m_new); // how much the old sums shrink
        let p = rescale(s, m_new); // this key's weight, relative to the new max
        self.state.l = self.state.l * alpha + p;
        for (oi, &vi) in self.o.iter_mut().zip(v) {
            *oi = *oi * alpha + p * vi;
        }
        self.state.m = m_new;
        Ok(())
    }
    // ANCHOR_END: attention_push

    // ANCHOR: attention_merge
    /// Combine two rows that saw disjoint sets of keys (for example two K/V tiles).
    pub fn merge(&self, other: &Self) -> Result<Self, SoftmaxError> {
        if other.o.len() != self.o.len() {
            return Err(SoftmaxError::WidthMismatch {
                expected: self.o.len(),
                got: other.o.len(),
            });
        }
        let state = self.state.merge(other.state);
        let (a, b) = (
            rescale(self.state.m, state.m),
            rescale(other.state.m, state.m),
        );
        let o = self
            .o
            .iter()
            .zip(&other.o)
            .map(|(x, y)| x * a + y * b)
            .collect();
        Ok(Self { state, o })
    }
    // ANCHOR_END: attention_merge

    /// The finished output `o / l`: a single division at the very end. A row that saw only masked
    /// keys (`l = 0`) yields zeros, never NaN.
    pub fn finish(&self) -> Vec<f64> {
        if self.state.l == 0.0 {
            return vec![0.0; self.o.len()];
        }
        self.o.iter().map(|x| x / self.state.l).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_single() {
        assert_eq!(softmax(&[]), Err(SoftmaxError::Empty));
        assert_eq!(online_softmax(&[]), Err(SoftmaxError::Empty));
        assert_eq!(softmax(&[-3.5]).unwrap(), vec![1.0]);
        assert_eq!(online_softmax(&[7.0]).unwrap(), vec![1.0]);
        assert_eq!(
            OnlineSoftmax::from_stream(&[]).unwrap(),
            OnlineSoftmax::EMPTY
        );
    }

    #[test]
    fn masked_and_non_finite() {
        let x = [f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY];
        assert_eq!(online_softmax(&x).unwrap(), vec![0.0, 1.0, 0.0]);
        assert_eq!(
            softmax(&[f64::NEG_INFINITY; 3]),
            Err(SoftmaxError::AllMasked)
        );
        assert_eq!(
            online_softmax(&[f64::NEG_INFINITY; 2]),
            Err(SoftmaxError::AllMasked)
        );
        assert!(matches!(
            softmax(&[1.0, f64::NAN]),
            Err(SoftmaxError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            online_softmax(&[f64::INFINITY]),
            Err(SoftmaxError::NonFinite { index: 0, .. })
        ));
    }

    #[test]
    fn masked_attention_row_is_zero() {
        let mut row = AttentionRow::new(2);
        row.push(f64::NEG_INFINITY, &[1.0, 2.0]).unwrap();
        assert_eq!(row.finish(), vec![0.0, 0.0]);
        assert!(matches!(
            row.push(0.0, &[1.0]),
            Err(SoftmaxError::WidthMismatch {
                expected: 2,
                got: 1
            })
        ));
        // The refused push changed nothing.
        assert_eq!(row.state, OnlineSoftmax::EMPTY);
    }
}
