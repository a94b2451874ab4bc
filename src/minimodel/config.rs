//! MiniGPT's shapes, and the two sequence lengths every measurement in the book is anchored at.
//!
//! MiniGPT is the small byte-level transformer the book optimises. Its attention has 8 query heads so
//! that every GQA grouping exists: 8 kv heads (MHA), 4 and 2 (GQA), 1 (MQA).

use super::shape::{AttnShape, ShapeError};
use thiserror::Error;

/// The verb corpus's fixed 64-token window: small-model reality, where the whole working set of
/// attention fits in cache.
pub const VERB_SEQ_LEN: usize = 64;

/// The synthetic stress length: production scale, where FlashAttention's win is plain.
pub const STRESS_SEQ_LEN: usize = 2048;

/// Why a model configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A dimension that must be at least 1 was 0.
    #[error("{dim} is 0; it must be at least 1")]
    ZeroDim {
        /// The field's name.
        dim: &'static str,
    },
    /// `d_model` must be the heads times the head size.
    #[error("d_model = {d_model} is not n_heads ({n_heads}) x head_size ({head_size})")]
    ModelWidth {
        /// Model width.
        d_model: usize,
        /// Query heads.
        n_heads: usize,
        /// Head size.
        head_size: usize,
    },
    /// Query heads must split evenly over the kv heads.
    #[error("n_heads = {n_heads} cannot be shared evenly by n_kv_heads = {n_kv_heads}")]
    HeadsNotDivisible {
        /// Query heads.
        n_heads: usize,
        /// Key/value heads.
        n_kv_heads: usize,
    },
}

// ANCHOR: config
/// MiniGPT's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiniGptConfig {
    /// Byte-level vocabulary: one token per byte value.
    pub vocab_size: usize,
    /// Residual stream width, `n_heads * head_size`.
    pub d_model: usize,
    /// Query heads `Hq`.
    pub n_heads: usize,
    /// Key/value heads `Hkv`: `n_heads` for MHA, 1 for MQA, a divisor for GQA.
    pub n_kv_heads: usize,
    /// Head size `D`.
    pub head_size: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Longest context the model accepts (positions it has embeddings for).
    pub max_context: usize,
}

impl MiniGptConfig {
    /// The book's MiniGPT: 8 heads of size 32 (d_model 256), 4 layers, contexts up to the stress length.
    pub const MINIGPT: MiniGptConfig = MiniGptConfig {
        vocab_size: 256,
        d_model: 256,
        n_heads: 8,
        n_kv_heads: 8,
        head_size: 32,
        n_layers: 4,
        max_context: STRESS_SEQ_LEN,
    };
    // ANCHOR_END: config

    /// Check a configuration: no zero dimension, `d_model = n_heads * head_size`, kv heads dividing heads.
    pub fn validate(self) -> Result<Self, ConfigError> {
        for (dim, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_size", self.head_size),
            ("n_layers", self.n_layers),
            ("max_context", self.max_context),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroDim { dim });
            }
        }
        if self.n_heads * self.head_size != self.d_model {
            return Err(ConfigError::ModelWidth {
                d_model: self.d_model,
                n_heads: self.n_heads,
                head_size: self.head_size,
            });
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(ConfigError::HeadsNotDivisible {
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
            });
        }
        Ok(self)
    }

    /// The same model with `n_kv_heads` kv heads (8 = MHA, 4 or 2 = GQA, 1 = MQA).
    pub fn with_kv_heads(self, n_kv_heads: usize) -> Result<Self, ConfigError> {
        Self { n_kv_heads, ..self }.validate()
    }

    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// The attention shape of one layer for `batch` sequences of `n` tokens (self-attention).
    pub fn attn_shape(&self, batch: usize, n: usize) -> Result<AttnShape, ShapeError> {
        AttnShape::new(batch, self.n_heads, self.n_kv_heads, n, n, self.head_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minigpt_is_valid_and_groups_exist() {
        let c = MiniGptConfig::MINIGPT.validate().unwrap();
        for g in [8, 4, 2, 1] {
            assert_eq!(c.with_kv_heads(g).unwrap().group(), 8 / g);
        }
        assert_eq!(
            c.with_kv_heads(3),
            Err(ConfigError::HeadsNotDivisible {
                n_heads: 8,
                n_kv_heads: 3
            })
        );
        assert_eq!(
            c.with_kv_heads(0),
            Err(ConfigError::ZeroDim { dim: "n_kv_heads" })
        );
        let s = c.attn_shape(1, VERB_SEQ_LEN).unwrap();
        assert_eq!((s.hq, s.hkv, s.nq, s.d), (8, 8, 64, 32));
    }
}
