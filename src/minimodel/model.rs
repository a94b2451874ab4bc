//! MiniGPT: a small byte-level decoder (learned positions, pre-norm blocks of attention and MLP, tied
//! embeddings) with seeded weights. The book never trains it: it is here so that the KV cache, and the
//! cost of MHA vs GQA vs MQA, are measured on a real model's forward pass.
//!
//! Token ids are bytes (`0..256`); activations `(n, d_model)` f32.

use super::attention_mqa_gqa::{matmul, Attention, GqaError};
use super::config::MiniGptConfig;
use super::kv_cache::{CacheError, KvCache};
use super::rng::Rng;
use thiserror::Error;

/// Why a model call was refused. A refused call leaves the cache unchanged.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelError {
    /// A layer refused (configuration, shapes, cache).
    #[error(transparent)]
    Layer(#[from] GqaError),
    /// The cache refused.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A token id outside the vocabulary.
    #[error("token {token} at position {index} is outside the vocabulary of {vocab}")]
    Token {
        /// Position in the input.
        index: usize,
        /// The id.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// More positions than the model has embeddings for.
    #[error("position {position} is past the model's context of {context}")]
    Context {
        /// First position out of range.
        position: usize,
        /// The model's context.
        context: usize,
    },
    /// No tokens.
    #[error("no tokens to run")]
    Empty,
}

/// One pre-norm transformer block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The attention layer (MHA, GQA or MQA).
    pub attn: Attention,
    /// `(d_model, 4 d_model)`.
    pub w1: Vec<f32>,
    /// `(4 d_model, d_model)`.
    pub w2: Vec<f32>,
}

/// MiniGPT with seeded weights.
#[derive(Debug, Clone, PartialEq)]
pub struct MiniGpt {
    /// Shapes.
    pub cfg: MiniGptConfig,
    /// `(vocab, d_model)`, also the output projection (tied).
    pub tok_emb: Vec<f32>,
    /// `(max_context, d_model)`.
    pub pos_emb: Vec<f32>,
    /// The blocks.
    pub blocks: Vec<Block>,
}

/// RMS normalisation of each row of `x` (width `d`), no learned scale.
pub(crate) fn rms_norm(x: &[f32], d: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(d) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        row.iter_mut().for_each(|v| *v *= inv);
    }
    out
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
}

impl MiniGpt {
    /// A model with `cfg`'s shapes and weights drawn from `seed`.
    pub fn seeded(cfg: MiniGptConfig, seed: u64) -> Result<Self, ModelError> {
        let cfg = cfg.validate().map_err(GqaError::from)?;
        let mut rng = Rng::new(seed);
        let dm = cfg.d_model;
        let w = |rows: usize, cols: usize, s: f64, rng: &mut Rng| -> Vec<f32> {
            (0..rows * cols)
                .map(|_| (rng.normal() * s) as f32)
                .collect()
        };
        let tok_emb = w(cfg.vocab_size, dm, 1.0, &mut rng);
        let pos_emb = w(cfg.max_context, dm, 0.5, &mut rng);
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            let attn = Attention::seeded(&cfg, &mut rng)?;
            let w1 = w(dm, 4 * dm, 1.0 / (dm as f64).sqrt(), &mut rng);
            let w2 = w(4 * dm, dm, 1.0 / (4.0 * dm as f64).sqrt(), &mut rng);
            blocks.push(Block { attn, w1, w2 });
        }
        Ok(Self {
            cfg,
            tok_emb,
            pos_emb,
            blocks,
        })
    }

    /// The same model with every attention layer mean-pooled to `n_kv_heads` (Ainslie et al.'s uptraining
    /// starting point; no uptraining here).
    pub fn mean_pooled(&self, n_kv_heads: usize) -> Result<Self, ModelError> {
        let cfg = self.cfg.with_kv_heads(n_kv_heads).map_err(GqaError::from)?;
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    attn: b.attn.mean_pooled(n_kv_heads)?,
                    ..b.clone()
                })
            })
            .collect::<Result<Vec<_>, GqaError>>()?;
        Ok(Self {
            cfg,
            blocks,
            ..self.clone()
        })
    }

    /// Token plus position embeddings of `tokens` placed at positions `start..`: `(n, d_model)`.
    pub fn embed(&self, tokens: &[u32], start: usize) -> Result<Vec<f32>, ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::Empty);
        }
        let dm = self.cfg.d_model;
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.cfg.vocab_size)
        {
            return Err(ModelError::Token {
                index,
                token,
                vocab: self.cfg.vocab_size,
            });
        }
        if start + tokens.len() > self.cfg.max_context {
            return Err(ModelError::Context {
                position: self.cfg.max_context.max(start),
                context: self.cfg.max_context,
            });
        }
        let mut x = vec![0.0f32; tokens.len() * dm];
        for (i, (&t, row)) in tokens.iter().zip(x.chunks_exact_mut(dm)).enumerate() {
            let (te, pe) = (
                &self.tok_emb[t as usize * dm..][..dm],
                &self.pos_emb[(start + i) * dm..][..dm],
            );
            row.iter_mut()
                .zip(te.iter().zip(pe))
                .for_each(|(r, (a, b))| *r = a + b);
        }
        Ok(x)
    }

    fn mlp(&self, b: &Block, x: &[f32], n: usize) -> Vec<f32> {
        let dm = self.cfg.d_model;
        let mut h = matmul(&rms_norm(x, dm), &b.w1, n, dm, 4 * dm);
        h.iter_mut().for_each(|v| *v = gelu(*v));
        matmul(&h, &b.w2, n, 4 * dm, dm)
    }

    fn logits(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (dm, vocab) = (self.cfg.d_model, self.cfg.vocab_size);
        let h = rms_norm(x, dm);
        let mut out = vec![0.0f32; n * vocab];
        for (hi, oi) in h.chunks_exact(dm).zip(out.chunks_exact_mut(vocab)) {
            for (o, e) in oi.iter_mut().zip(self.tok_emb.chunks_exact(dm)) {
                *o = hi.iter().zip(e).map(|(a, b)| a * b).sum();
            }
        }
        out
    }

    /// Logits `(n, vocab)` of every position, recomputing the whole prefix (no cache).
    pub fn forward(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let dm = self.cfg.d_model;
        let n = tokens.len();
        let mut x = self.embed(tokens, 0)?;
        for b in &self.blocks {
            let a = b.attn.forward(&rms_norm(&x, dm))?;
            x.iter_mut().zip(&a).for_each(|(r, v)| *r += v);
            let m = self.mlp(b, &x, n);
            x.iter_mut().zip(&m).for_each(|(r, v)| *r += v);
        }
        Ok(self.logits(&x, n))
    }

    // ANCHOR: step
    /// Run `tokens` after the ones already in `cache` (a prefill when the cache is empty, a decode step
    /// for one token), writing their keys and values into it; returns the logits of the new positions.
    /// Refused calls (a full cache, a bad token) change nothing.
    pub fn step(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, ModelError> {
        let dm = self.cfg.d_model;
        let n = tokens.len();
        let mut x = self.embed(tokens, cache.len())?;
        if cache.len() + n > cache.capacity() {
            return Err(CacheError::Full {
                len: cache.len(),
                adding: n,
                capacity: cache.capacity(),
            }
            .into());
        }
        for (layer, b) in self.blocks.iter().enumerate() {
            let a = b.attn.forward_cached(&rms_norm(&x, dm), cache, layer)?;
            x.iter_mut().zip(&a).for_each(|(r, v)| *r += v);
            let m = self.mlp(b, &x, n);
            x.iter_mut().zip(&m).for_each(|(r, v)| *r += v);
        }
        cache.advance(n)?;
        Ok(self.logits(&x, n))
    }
    // ANCHOR_END: step
}
