//! Lab 04: one attention layer, parameterised by its number of key/value heads.
//!
//! `n_kv_heads = n_heads` is multi-head attention (MHA), `1` is multi-query attention (MQA, Shazeer 2019),
//! anything between that divides `n_heads` is grouped-query attention (GQA, Ainslie et al. 2023). Query
//! head `h` reads kv head `h / G` with `G = n_heads / n_kv_heads`, by index: nothing is copied. The only
//! other difference between the three is the size of `W_k`, `W_v` and of the KV cache.
//!
//! Shapes: activations `x: (n, d_model)`; projections `W_q: (d_model, Hq D)`, `W_k, W_v: (d_model, Hkv D)`,
//! `W_o: (Hq D, d_model)`, all row-major f32.

use super::attention_flash::kernels::{self, Isa};
use super::attention_flash::{flash_forward, FlashError};
use super::config::{ConfigError, MiniGptConfig};
use super::kv_cache::{CacheError, KvCache, LayerCache};
use super::rng::Rng;
use super::shape::{AttnShape, Mask, ShapeError};
use thiserror::Error;

/// Why an attention layer call was refused. Nothing (the cache included) was changed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GqaError {
    /// The configuration is invalid (for example kv heads not dividing the heads).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The attention shapes are invalid.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The attention kernel refused the call.
    #[error(transparent)]
    Flash(#[from] FlashError),
    /// The KV cache refused the call.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The activations are not `(n, d_model)` with `n >= 1`.
    #[error("activations have {got} elements, not a positive multiple of d_model = {d_model}")]
    Activations {
        /// Model width.
        d_model: usize,
        /// Elements given.
        got: usize,
    },
    /// Mean pooling starts from multi-head attention: this layer already shares its kv heads.
    #[error("mean pooling needs an MHA layer; this one has {n_heads} query heads on {n_kv_heads} kv heads")]
    NotMultiHead {
        /// Query heads.
        n_heads: usize,
        /// Key/value heads (fewer than the query heads).
        n_kv_heads: usize,
    },
    /// A projection's weights do not have the size the layer's heads and width give it (the fields are
    /// public, so a layer may have been built or changed by hand).
    #[error("weights {name} have {got} elements, but the layer's heads and width need {expected}")]
    Weights {
        /// `"wq"`, `"wk"`, `"wv"` or `"wo"`.
        name: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements held.
        got: usize,
    },
}

/// `x (n, din) @ w (din, dout) -> (n, dout)`, row-major; the `i-k-j` loop order streams rows of `w`.
pub(crate) fn matmul(x: &[f32], w: &[f32], n: usize, din: usize, dout: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n * dout];
    for (xi, oi) in x.chunks_exact(din).zip(out.chunks_exact_mut(dout)) {
        for (xik, wk) in xi.iter().zip(w.chunks_exact(dout)) {
            for (o, wkj) in oi.iter_mut().zip(wk) {
                *o += xik * wkj;
            }
        }
    }
    out
}

/// `(n, H D)` with heads side by side to `(H, n, D)` head-major, and back.
fn split_heads(x: &[f32], n: usize, h: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for t in 0..n {
        for hh in 0..h {
            out[(hh * n + t) * d..][..d].copy_from_slice(&x[(t * h + hh) * d..][..d]);
        }
    }
    out
}

fn merge_heads(x: &[f32], n: usize, h: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for hh in 0..h {
        for t in 0..n {
            out[(t * h + hh) * d..][..d].copy_from_slice(&x[(hh * n + t) * d..][..d]);
        }
    }
    out
}

// ANCHOR: layer
/// One attention layer with `n_heads` query heads sharing `n_kv_heads` key/value heads.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    /// Query heads `Hq`.
    pub n_heads: usize,
    /// Key/value heads `Hkv`, dividing `Hq`.
    pub n_kv_heads: usize,
    /// Head size `D`.
    pub head_size: usize,
    /// Residual width.
    pub d_model: usize,
    /// `(d_model, Hq D)`.
    pub wq: Vec<f32>,
    /// `(d_model, Hkv D)`: `G` times smaller than MHA's.
    pub wk: Vec<f32>,
    /// `(d_model, Hkv D)`.
    pub wv: Vec<f32>,
    /// `(Hq D, d_model)`.
    pub wo: Vec<f32>,
}
// ANCHOR_END: layer

impl Attention {
    /// A layer with seeded weights (normal, standard deviation `1/sqrt(fan_in)`), for `cfg`'s heads.
    pub fn seeded(cfg: &MiniGptConfig, rng: &mut Rng) -> Result<Self, GqaError> {
        let cfg = cfg.validate()?;
        let (dm, hq, hkv, d) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_size);
        let mut w = |rows: usize, cols: usize| -> Vec<f32> {
            let s = 1.0 / (rows as f64).sqrt();
            (0..rows * cols)
                .map(|_| (rng.normal() * s) as f32)
                .collect()
        };
        Ok(Self {
            n_heads: hq,
            n_kv_heads: hkv,
            head_size: d,
            d_model: dm,
            wq: w(dm, hq * d),
            wk: w(dm, hkv * d),
            wv: w(dm, hkv * d),
            wo: w(hq * d, dm),
        })
    }

    // ANCHOR: mean_pool
    /// Ainslie et al.'s conversion of a trained MHA layer to GQA with `n_kv_heads` groups: the key and
    /// value projection heads of each group are replaced by their mean; queries and output unchanged.
    /// `n_kv_heads = n_heads` is the identity.
    pub fn mean_pooled(&self, n_kv_heads: usize) -> Result<Self, GqaError> {
        if self.n_kv_heads != self.n_heads {
            return Err(GqaError::NotMultiHead {
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
            });
        }
        if n_kv_heads == 0 || !self.n_heads.is_multiple_of(n_kv_heads) {
            return Err(GqaError::Config(ConfigError::HeadsNotDivisible {
                n_heads: self.n_heads,
                n_kv_heads,
            }));
        }
        let (dm, d, g) = (self.d_model, self.head_size, self.n_heads / n_kv_heads);
        let pool = |w: &[f32]| -> Vec<f32> {
            let mut out = vec![0.0f32; dm * n_kv_heads * d];
            for row in 0..dm {
                for kv in 0..n_kv_heads {
                    for c in 0..d {
                        let sum: f32 = (0..g)
                            .map(|i| w[row * self.n_heads * d + (kv * g + i) * d + c])
                            .sum();
                        out[row * n_kv_heads * d + kv * d + c] = sum / g as f32;
                    }
                }
            }
            out
        };
        Ok(Self {
            n_kv_heads,
            wk: pool(&self.wk),
            wv: pool(&self.wv),
            ..self.clone()
        })
    }
    // ANCHOR_END: mean_pool

    /// The number of rows of `x (n, d_model)`, once the layer itself is checked: its heads as
    /// [`AttnShape::new`] checks them, and every projection's size.
    fn rows(&self, x: &[f32]) -> Result<usize, GqaError> {
        let (dm, hq, hkv, d) = (self.d_model, self.n_heads, self.n_kv_heads, self.head_size);
        AttnShape::new(1, hq, hkv, 1, 1, d)?;
        for (name, w, expected) in [
            ("wq", &self.wq, dm * hq * d),
            ("wk", &self.wk, dm * hkv * d),
            ("wv", &self.wv, dm * hkv * d),
            ("wo", &self.wo, hq * d * dm),
        ] {
            if w.len() != expected || expected == 0 {
                let got = w.len();
                return Err(GqaError::Weights {
                    name,
                    expected,
                    got,
                });
            }
        }
        if x.is_empty() || !x.len().is_multiple_of(self.d_model) {
            return Err(GqaError::Activations {
                d_model: self.d_model,
                got: x.len(),
            });
        }
        Ok(x.len() / self.d_model)
    }

    /// Project `x (n, d_model)` to `q (Hq, n, D)`, `k, v (Hkv, n, D)`.
    fn qkv(&self, x: &[f32], n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (dm, hq, hkv, d) = (self.d_model, self.n_heads, self.n_kv_heads, self.head_size);
        let q = split_heads(&matmul(x, &self.wq, n, dm, hq * d), n, hq, d);
        let k = split_heads(&matmul(x, &self.wk, n, dm, hkv * d), n, hkv, d);
        let v = split_heads(&matmul(x, &self.wv, n, dm, hkv * d), n, hkv, d);
        (q, k, v)
    }

    fn project_out(&self, o: &[f32], n: usize) -> Vec<f32> {
        let (hq, d) = (self.n_heads, self.head_size);
        matmul(&merge_heads(o, n, hq, d), &self.wo, n, hq * d, self.d_model)
    }

    /// Causal self-attention over `x (n, d_model)` with no cache: the whole prefix recomputed.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, GqaError> {
        let n = self.rows(x)?;
        let (q, k, v) = self.qkv(x, n);
        let s = AttnShape::new(1, self.n_heads, self.n_kv_heads, n, n, self.head_size)?;
        let mut o = vec![0.0f32; q.len()];
        flash_forward(&q, &k, &v, &s, Mask::CAUSAL, &mut o)?;
        Ok(self.project_out(&o, n))
    }

    // ANCHOR: forward_cached
    /// Causal attention of `n` new tokens `x (n, d_model)` against everything in `cache` plus themselves;
    /// their keys and values are written to `cache` layer `layer` (the caller advances the cache's length
    /// once every layer has run). One new token reads the cache through [`decode_attention`].
    pub fn forward_cached(
        &self,
        x: &[f32],
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Vec<f32>, GqaError> {
        let n = self.rows(x)?;
        cache.check_layout(self.n_kv_heads, self.head_size)?; // a cache made for these heads
        let (q, k, v) = self.qkv(x, n);
        cache.write(layer, &k, &v, n)?; // validates first: a refused write changes nothing
        let past = cache.len();
        let total = past + n;
        let lc = cache.layer(layer)?;
        let o = if n == 1 {
            decode_attention(
                &q,
                lc,
                self.n_heads,
                self.n_kv_heads,
                cache.capacity(),
                total,
                self.head_size,
            )?
        } else {
            // Several new tokens (a prefill, or a chunk of one): gather the cached prefix contiguously
            // and run the tiled kernel with the queries aligned to the last `n` keys.
            let (kc, vc) = gather(lc, self.n_kv_heads, cache.capacity(), total, self.head_size);
            let s = AttnShape::new(1, self.n_heads, self.n_kv_heads, n, total, self.head_size)?;
            let mut o = vec![0.0f32; q.len()];
            flash_forward(&q, &kc, &vc, &s, Mask::CAUSAL, &mut o)?;
            o
        };
        Ok(self.project_out(&o, n))
    }
    // ANCHOR_END: forward_cached
}

/// The first `len` rows of each kv head of a layer cache, as contiguous `(Hkv, len, D)` tensors.
fn gather(lc: &LayerCache, hkv: usize, cap: usize, len: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let take = |x: &[f32]| -> Vec<f32> {
        (0..hkv)
            .flat_map(|h| x[h * cap * d..][..len * d].to_vec())
            .collect()
    };
    (take(&lc.k), take(&lc.v))
}

/// [`decode_attention`]'s refusals: the heads and head size as [`AttnShape::new`] checks them, `q` of
/// `Hq D` elements, K and V of `Hkv cap D` each, and `len <= cap` cached rows to read.
fn check_decode(
    q: &[f32],
    lc: &LayerCache,
    (hq, hkv): (usize, usize),
    cap: usize,
    len: usize,
    d: usize,
) -> Result<(), GqaError> {
    let s = AttnShape::new(1, hq, hkv, 1, cap.max(1), d)?;
    if len > cap {
        return Err(CacheError::Full {
            len: 0,
            adding: len,
            capacity: cap,
        }
        .into());
    }
    for (tensor, got, expected) in [
        ("q", q.len(), s.q_len()),
        ("k", lc.k.len(), s.kv_len()),
        ("v", lc.v.len(), s.kv_len()),
    ] {
        if got != expected {
            let shape = format!("(Hq={hq}, Hkv={hkv}, cap={cap}, D={d})");
            return Err(ShapeError::LengthMismatch {
                tensor,
                shape,
                expected,
                got,
            }
            .into());
        }
    }
    Ok(())
}

// ANCHOR: decode_attention
/// Decode attention: one query token `q (Hq, D)` against the first `len` cached keys and values of
/// each kv head (`(Hkv, cap, D)`). The `G` query heads of a group are one tile of `G` query rows, and
/// each block of cached keys one K/V tile of the tiled kernel: every cached key and value row is read
/// **once per kv head**, not once per query head, and serves the `G` rows from registers and L1. The
/// bytes read are `2 Hkv len D * 4` and the FLOPs `4 Hq len D`, an intensity of about `G / 2` FLOP/byte
/// in f32. A shape that does not fit (heads, lengths, `len > cap`) is refused before anything runs.
pub fn decode_attention(
    q: &[f32],
    lc: &LayerCache,
    hq: usize,
    hkv: usize,
    cap: usize,
    len: usize,
    d: usize,
) -> Result<Vec<f32>, GqaError> {
    check_decode(q, lc, (hq, hkv), cap, len, d)?;
    const BLOCK: usize = 64; // keys per tile, as the tiled kernel's Bc
    let g = hq / hkv;
    let isa = Isa::detect();
    // Scores in log2 units: the K tile is scaled by log2(e) / sqrt(D) as it is transposed.
    let scale = std::f32::consts::LOG2_E / (d as f32).sqrt();
    let mut out = vec![0.0f32; hq * d];
    let (mut kt, mut s) = (vec![0.0f32; d * BLOCK], vec![0.0f32; g * BLOCK]);
    let (mut m, mut l) = (vec![0.0f32; g], vec![0.0f32; g * kernels::L]);
    for kvh in 0..hkv {
        let kh = &lc.k[kvh * cap * d..][..len * d];
        let vh = &lc.v[kvh * cap * d..][..len * d];
        let qg = &q[kvh * g * d..][..g * d]; // the group's query rows: the Q tile
        let og = &mut out[kvh * g * d..][..g * d]; // their un-normalised outputs
        m.fill(f32::NEG_INFINITY);
        l.fill(0.0);
        for (kb, vb) in kh.chunks(BLOCK * d).zip(vh.chunks(BLOCK * d)) {
            let cols = kb.len() / d;
            kernels::transpose(isa, kb, cols, d, &mut kt[..d * cols], scale);
            // Scores of the G rows, one online-softmax step each, o += P V: Lab 01's tile step.
            let mut tile = kernels::Tile {
                q: qg,
                kt: &kt[..d * cols],
                v: vb,
                s: &mut s[..g * cols],
                m: &mut m,
                l: &mut l,
                o: &mut *og,
                br: g,
                bc: cols,
                d,
            };
            kernels::step(isa, &mut tile, None);
        }
        kernels::normalise_rows(og, &l, d); // one division per row; no key: zeros
    }
    Ok(out)
}

// ANCHOR_END: decode_attention
