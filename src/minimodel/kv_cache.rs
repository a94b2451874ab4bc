//! The KV cache: every layer's keys and values of the tokens seen so far, so a decode step computes only
//! the new token's K and V and reads the rest.
//!
//! Layout per layer: `k, v: (Hkv, capacity, D)` f32, allocated once at construction (no growth, so the
//! bytes allocated are exactly the formula's) and filled up to `len`. Its size is the whole story of
//! MHA vs GQA vs MQA: `2 * layers * Hkv * D * N * bytes`, proportional to the kv heads.

use super::config::MiniGptConfig;
use super::numeric::DType;
use thiserror::Error;

/// Why a cache operation was refused. A refused call leaves the cache unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CacheError {
    /// Appending would pass the capacity fixed at construction.
    #[error(
        "cache full: {len} tokens cached, {adding} more would pass the capacity of {capacity}"
    )]
    Full {
        /// Tokens cached.
        len: usize,
        /// Tokens offered.
        adding: usize,
        /// Capacity in tokens.
        capacity: usize,
    },
    /// New keys or values whose length is not `Hkv * n * D` for the layer.
    #[error("layer {layer}: {tensor} has {got} elements, expected {expected}")]
    Shape {
        /// Layer index.
        layer: usize,
        /// `"k"` or `"v"`.
        tensor: &'static str,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A layer index past the model's layers.
    #[error("layer {layer} does not exist (the model has {layers})")]
    NoLayer {
        /// Layer asked for.
        layer: usize,
        /// Layers in the cache.
        layers: usize,
    },
    /// A capacity of zero tokens.
    #[error("a KV cache needs a capacity of at least one token")]
    ZeroCapacity,
    /// A capacity whose layer caches would hold more elements than an address can count.
    #[error(
        "a KV cache of {capacity} tokens of {kv_heads} kv heads of size {head_size} is too large"
    )]
    TooLarge {
        /// Capacity asked for, in tokens.
        capacity: usize,
        /// Key/value heads per layer.
        kv_heads: usize,
        /// Head size.
        head_size: usize,
    },
    /// A layer whose heads differ from those the cache was made for: its keys would be read back with
    /// another layout.
    #[error(
        "the cache holds {cache_heads} kv heads of size {cache_size}, the layer has {heads} of size {size}"
    )]
    Layout {
        /// The cache's kv heads.
        cache_heads: usize,
        /// The cache's head size.
        cache_size: usize,
        /// The layer's kv heads.
        heads: usize,
        /// The layer's head size.
        size: usize,
    },
}

/// One layer's cached keys and values.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCache {
    /// Keys, `(Hkv, capacity, D)`.
    pub k: Vec<f32>,
    /// Values, `(Hkv, capacity, D)`.
    pub v: Vec<f32>,
}

// ANCHOR: kv_cache
/// The cache of a whole model for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    kv_heads: usize,
    head_size: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache for `capacity` tokens of a model with `cfg`'s layers, kv heads and head size.
    pub fn new(cfg: &MiniGptConfig, capacity: usize) -> Result<Self, CacheError> {
        if capacity == 0 {
            return Err(CacheError::ZeroCapacity);
        }
        let per = cfg
            .n_kv_heads
            .checked_mul(capacity)
            .and_then(|x| x.checked_mul(cfg.head_size))
            .filter(|&x| x.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
            .ok_or(CacheError::TooLarge {
                capacity,
                kv_heads: cfg.n_kv_heads,
                head_size: cfg.head_size,
            })?;
        let layers = (0..cfg.n_layers)
            .map(|_| LayerCache {
                k: vec![0.0; per],
                v: vec![0.0; per],
            })
            .collect();
        Ok(Self {
            layers,
            kv_heads: cfg.n_kv_heads,
            head_size: cfg.head_size,
            capacity,
            len: 0,
        })
    }

    /// Bytes the cache actually holds allocated (the vectors' capacities), not a formula.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.capacity() + l.v.capacity()) * std::mem::size_of::<f32>())
            .sum()
    }

    /// The formula: `2 * layers * kv_heads * head_size * tokens * bytes_per_element`.
    pub fn formula_bytes(cfg: &MiniGptConfig, tokens: usize, dt: DType) -> usize {
        kv_bytes(cfg.n_layers, cfg.n_kv_heads, cfg.head_size, tokens, dt)
    }
}

/// KV-cache bytes of any MHA/GQA/MQA model: `2 * layers * kv_heads * head_size * tokens * bytes`.
pub fn kv_bytes(
    layers: usize,
    kv_heads: usize,
    head_size: usize,
    tokens: usize,
    dt: DType,
) -> usize {
    2 * layers * kv_heads * head_size * tokens * dt.bytes()
}

/// KV-cache bytes of multi-head latent attention (DeepSeek-V2): per layer and token one compressed
/// latent of `latent` elements shared by keys and values of every head, plus one decoupled RoPE key of
/// `rope` elements shared by every head: `layers * (latent + rope) * tokens * bytes`.
pub fn mla_bytes(layers: usize, latent: usize, rope: usize, tokens: usize, dt: DType) -> usize {
    layers * (latent + rope) * tokens * dt.bytes()
}
// ANCHOR_END: kv_cache

impl KvCache {
    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No token cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in tokens.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Key/value heads per layer.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// Head size.
    pub fn head_size(&self) -> usize {
        self.head_size
    }

    /// Refuse a layer of `kv_heads` heads of `head_size` unless the cache was made for exactly those:
    /// [`KvCache::check_append`] sees only flat slices, and `(2, n, 32)` and `(1, n, 64)` have the same
    /// length.
    pub fn check_layout(&self, kv_heads: usize, head_size: usize) -> Result<(), CacheError> {
        if (kv_heads, head_size) != (self.kv_heads, self.head_size) {
            return Err(CacheError::Layout {
                cache_heads: self.kv_heads,
                cache_size: self.head_size,
                heads: kv_heads,
                size: head_size,
            });
        }
        Ok(())
    }

    /// One layer's cache (read-only).
    pub fn layer(&self, layer: usize) -> Result<&LayerCache, CacheError> {
        self.layers.get(layer).ok_or(CacheError::NoLayer {
            layer,
            layers: self.layers.len(),
        })
    }

    /// Check that `n` new tokens fit and that `k_new`/`v_new` are `(Hkv, n, D)` for `layer`.
    pub fn check_append(
        &self,
        layer: usize,
        k_new: &[f32],
        v_new: &[f32],
        n: usize,
    ) -> Result<(), CacheError> {
        if layer >= self.layers.len() {
            return Err(CacheError::NoLayer {
                layer,
                layers: self.layers.len(),
            });
        }
        if n > self.capacity - self.len {
            return Err(CacheError::Full {
                len: self.len,
                adding: n,
                capacity: self.capacity,
            });
        }
        let expected = self.kv_heads * n * self.head_size;
        for (tensor, got) in [("k", k_new.len()), ("v", v_new.len())] {
            if got != expected {
                return Err(CacheError::Shape {
                    layer,
                    tensor,
                    expected,
                    got,
                });
            }
        }
        Ok(())
    }

    /// Write `n` new tokens' keys and values `(Hkv, n, D)` of `layer` after the cached ones. The cache's
    /// length advances only through [`KvCache::advance`], once every layer has been written.
    pub fn write(
        &mut self,
        layer: usize,
        k_new: &[f32],
        v_new: &[f32],
        n: usize,
    ) -> Result<(), CacheError> {
        self.check_append(layer, k_new, v_new, n)?;
        let (d, cap, len) = (self.head_size, self.capacity, self.len);
        let lc = &mut self.layers[layer];
        for h in 0..self.kv_heads {
            let dst = (h * cap + len) * d;
            let src = h * n * d;
            lc.k[dst..dst + n * d].copy_from_slice(&k_new[src..src + n * d]);
            lc.v[dst..dst + n * d].copy_from_slice(&v_new[src..src + n * d]);
        }
        Ok(())
    }

    /// Advance the length by `n` tokens after every layer wrote them.
    pub fn advance(&mut self, n: usize) -> Result<(), CacheError> {
        if n > self.capacity - self.len {
            return Err(CacheError::Full {
                len: self.len,
                adding: n,
                capacity: self.capacity,
            });
        }
        self.len += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_equals_formula_and_refusals_change_nothing() {
        let cfg = MiniGptConfig::MINIGPT.with_kv_heads(2).unwrap();
        let mut c = KvCache::new(&cfg, 10).unwrap();
        assert_eq!(
            c.allocated_bytes(),
            KvCache::formula_bytes(&cfg, 10, DType::F32)
        );
        let kv = vec![1.0f32; 2 * 4 * 32];
        c.write(0, &kv, &kv, 4).unwrap();
        let before = c.clone();
        assert!(matches!(
            c.write(0, &kv, &kv[1..], 4),
            Err(CacheError::Shape { tensor: "v", .. })
        ));
        let big = vec![1.0f32; 2 * 11 * 32];
        assert!(matches!(
            c.write(1, &big, &big, 11),
            Err(CacheError::Full { .. })
        ));
        assert!(matches!(
            c.write(9, &kv, &kv, 4),
            Err(CacheError::NoLayer { .. })
        ));
        assert_eq!(c, before);
        assert_eq!(KvCache::new(&cfg, 0), Err(CacheError::ZeroCapacity));
    }
}
