//! Lab 04's checks: one attention layer for MHA, GQA and MQA; the KV cache's bytes against the formula;
//! cached decoding against recomputation; mean-pooling conversion; refusals that change nothing.

use modern_attention::minimodel::attention_mqa_gqa::decode_attention;
use modern_attention::minimodel::check::assert_attn_close;
use modern_attention::minimodel::config::{MiniGptConfig, STRESS_SEQ_LEN, VERB_SEQ_LEN};
use modern_attention::minimodel::corpus::verb_sequence;
use modern_attention::minimodel::kv_cache::{CacheError, KvCache, LayerCache};
use modern_attention::minimodel::model::{MiniGpt, ModelError};
use modern_attention::minimodel::numeric::DType;
use modern_attention::minimodel::reference::{attention_lowp, attention_ref64};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};

const KV_HEADS: [usize; 4] = [8, 4, 2, 1];

#[test]
fn cache_bytes_equal_the_formula_and_mqa_is_an_eighth() {
    for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
        let mha = KvCache::new(&MiniGptConfig::MINIGPT, n)
            .unwrap()
            .allocated_bytes();
        for g in KV_HEADS {
            let cfg = MiniGptConfig::MINIGPT.with_kv_heads(g).unwrap();
            let c = KvCache::new(&cfg, n).unwrap();
            assert_eq!(
                c.allocated_bytes(),
                KvCache::formula_bytes(&cfg, n, DType::F32)
            );
            assert_eq!(c.allocated_bytes() * (8 / g), mha);
        }
    }
}

#[test]
fn cached_decoding_equals_recomputation() {
    let tokens = verb_sequence();
    for g in KV_HEADS {
        let cfg = MiniGptConfig {
            max_context: 128,
            ..MiniGptConfig::MINIGPT
        }
        .with_kv_heads(g)
        .unwrap();
        let model = MiniGpt::seeded(cfg, 4).unwrap();
        let full = model.forward(&tokens).unwrap();
        let mut cache = KvCache::new(&cfg, tokens.len()).unwrap();
        let mut got = model.step(&tokens[..16], &mut cache).unwrap(); // prefill
        for &t in &tokens[16..] {
            got.extend(model.step(&[t], &mut cache).unwrap()); // one token at a time
        }
        assert_eq!(cache.len(), tokens.len());
        assert_eq!(got.len(), full.len(), "one row of logits per token");
        let scale = full.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let err = full
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, |m, e| if e.is_nan() || e > m { e } else { m }); // NaN fails
        println!("kv_heads={g}: max |cached - recomputed| = {err:.2e} (logits up to {scale:.1})");
        assert!(err <= 1e-4 * scale, "kv_heads={g}: {err} vs scale {scale}");
    }
}

#[test]
fn decode_attention_matches_the_reference() {
    let mut rng = Rng::new(44);
    for (hkv, len) in [(8, 1), (4, 17), (2, 64), (1, 113), (1, 2048), (2, 1000)] {
        let (hq, d, cap) = (8, 32, len + 5);
        let q = rng.normal_vec_f32(hq * d);
        let k = rng.normal_vec_f32(hkv * cap * d);
        let v = rng.normal_vec_f32(hkv * cap * d);
        let lc = LayerCache {
            k: k.clone(),
            v: v.clone(),
        };
        let out: Vec<f64> = decode_attention(&q, &lc, hq, hkv, cap, len, d)
            .expect("a valid decode shape")
            .iter()
            .map(|&x| x as f64)
            .collect();
        // The reference on the same tokens, contiguous: (1, Hkv, len, D).
        let take = |x: &[f32]| -> Vec<f32> {
            (0..hkv)
                .flat_map(|h| x[h * cap * d..][..len * d].to_vec())
                .collect()
        };
        let s = AttnShape::new(1, hq, hkv, 1, len, d).unwrap();
        let reference = attention_ref64(&q, &take(&k), &take(&v), &s, Mask::NONE).unwrap();
        let lowp = attention_lowp(&q, &take(&k), &take(&v), &s, Mask::NONE, DType::F32).unwrap();
        assert_attn_close(
            &format!("decode Hkv={hkv} len={len}"),
            &out,
            &lowp,
            &reference,
            DType::F32,
            len,
            None,
        );
    }
}

#[test]
fn decode_attention_refuses_what_does_not_fit() {
    use modern_attention::minimodel::attention_mqa_gqa::GqaError;
    use modern_attention::minimodel::shape::ShapeError;
    let (hq, hkv, cap, d) = (8, 2, 10, 32);
    let lc = LayerCache {
        k: vec![0.5; hkv * cap * d],
        v: vec![0.5; hkv * cap * d],
    };
    let q = vec![0.1f32; hq * d];
    assert!(decode_attention(&q, &lc, hq, hkv, cap, cap, d).is_ok());
    let refused = |r: Result<Vec<f32>, GqaError>| r.expect_err("refused");
    assert!(matches!(
        refused(decode_attention(&q, &lc, hq, 0, cap, 4, d)),
        GqaError::Shape(ShapeError::ZeroDim { dim: "Hkv" })
    ));
    assert!(matches!(
        refused(decode_attention(&q, &lc, hq, 3, cap, 4, d)),
        GqaError::Shape(ShapeError::HeadsNotDivisible { hq: 8, hkv: 3 })
    ));
    assert!(matches!(
        refused(decode_attention(&q, &lc, hq, hkv, cap, 4, 0)),
        GqaError::Shape(ShapeError::ZeroDim { dim: "D" })
    ));
    assert!(matches!(
        refused(decode_attention(&q, &lc, hq, hkv, cap, cap + 1, d)),
        GqaError::Cache(CacheError::Full {
            adding: 11,
            capacity: 10,
            ..
        })
    ));
    assert!(matches!(
        refused(decode_attention(&q[1..], &lc, hq, hkv, cap, 4, d)),
        GqaError::Shape(ShapeError::LengthMismatch { tensor: "q", .. })
    ));
    assert!(matches!(
        refused(decode_attention(&q, &lc, hq, hkv, cap - 1, 4, d)),
        GqaError::Shape(ShapeError::LengthMismatch { tensor: "k", .. })
    ));
}

#[test]
fn mean_pooling_is_identity_at_g_equals_h_and_refuses_bad_groups() {
    let model = MiniGpt::seeded(
        MiniGptConfig {
            max_context: 64,
            ..MiniGptConfig::MINIGPT
        },
        5,
    )
    .unwrap();
    assert_eq!(model.mean_pooled(8).unwrap(), model);
    assert!(model.mean_pooled(3).is_err());
    assert!(model.mean_pooled(0).is_err());
    let gqa = model.mean_pooled(2).unwrap();
    assert_eq!(gqa.cfg.n_kv_heads, 2);
    assert_eq!(
        gqa.blocks[0].attn.wk.len() * 4,
        model.blocks[0].attn.wk.len()
    );
    // Each pooled head's column is the mean of its group's four: `(d_model, Hkv D)` from
    // `(d_model, Hq D)`, written out here by the definition, element by element, every layer.
    let (dm, d) = (model.cfg.d_model, model.cfg.head_size);
    for (pooled, mha) in gqa.blocks.iter().zip(&model.blocks) {
        assert_eq!(pooled.attn.wq, mha.attn.wq, "queries unchanged");
        assert_eq!(pooled.attn.wo, mha.attn.wo, "output unchanged");
        for (p, w) in [
            (&pooled.attn.wk, &mha.attn.wk),
            (&pooled.attn.wv, &mha.attn.wv),
        ] {
            for row in 0..dm {
                for kv in 0..2 {
                    for c in 0..d {
                        let heads = (0..4).map(|i| w[row * 8 * d + (kv * 4 + i) * d + c]);
                        let mean = heads.map(f64::from).sum::<f64>() / 4.0;
                        let got = p[row * 2 * d + kv * d + c] as f64;
                        assert!(
                            (got - mean).abs() <= 1e-6 * (1.0 + mean.abs()),
                            "{got} {mean}"
                        );
                    }
                }
            }
        }
    }
    assert!(
        matches!(
            gqa.mean_pooled(1),
            Err(ModelError::Layer(
                modern_attention::minimodel::attention_mqa_gqa::GqaError::NotMultiHead { .. }
            ))
        ),
        "pooling starts from MHA"
    );
}

#[test]
fn refused_calls_change_nothing() {
    let cfg = MiniGptConfig {
        max_context: 64,
        ..MiniGptConfig::MINIGPT
    }
    .with_kv_heads(2)
    .unwrap();
    let model = MiniGpt::seeded(cfg, 6).unwrap();
    let mut cache = KvCache::new(&cfg, 8).unwrap();
    model.step(&[104, 111, 108], &mut cache).unwrap();
    let before = cache.clone();
    assert!(matches!(
        model.step(&[104, 300], &mut cache),
        Err(ModelError::Token {
            index: 1,
            token: 300,
            ..
        })
    ));
    assert!(matches!(
        model.step(&[1; 6], &mut cache),
        Err(ModelError::Cache(CacheError::Full { .. }))
    ));
    assert!(matches!(
        model.step(&[], &mut cache),
        Err(ModelError::Empty)
    ));
    assert_eq!(cache, before);
    assert!(MiniGptConfig::MINIGPT.with_kv_heads(0).is_err());
    assert!(MiniGptConfig::MINIGPT.with_kv_heads(3).is_err());
    // Past the model's context: refused before anything runs.
    let mut long = KvCache::new(&cfg, 100).unwrap();
    assert!(matches!(
        model.step(&[1; 65], &mut long),
        Err(ModelError::Context { .. })
    ));
    assert!(long.is_empty());
}

#[test]
fn a_layer_refuses_a_cache_or_weights_not_made_for_it() {
    use modern_attention::minimodel::attention_mqa_gqa::{Attention, GqaError};
    use modern_attention::minimodel::shape::ShapeError;
    let cfg = MiniGptConfig::MINIGPT.with_kv_heads(2).unwrap();
    let layer = Attention::seeded(&cfg, &mut Rng::new(3)).unwrap();
    let x = Rng::new(4).normal_vec_f32(2 * cfg.d_model);
    // A cache whose kv heads hold as many elements a token, laid out otherwise: (1, 64) against (2, 32).
    let other = MiniGptConfig {
        n_kv_heads: 1,
        head_size: 2 * cfg.head_size,
        ..cfg
    };
    let mut cache = KvCache::new(&other, 8).unwrap();
    let before = cache.clone();
    assert!(matches!(
        layer.forward_cached(&x, &mut cache, 0),
        Err(GqaError::Cache(CacheError::Layout {
            cache_heads: 1,
            heads: 2,
            ..
        }))
    ));
    assert_eq!(cache, before, "a refused call writes nothing");
    // The layer's fields are public: one changed by hand is refused, not run.
    let mut cache = KvCache::new(&cfg, 8).unwrap();
    let zero = Attention {
        n_heads: 0,
        ..layer.clone()
    };
    assert!(matches!(
        zero.forward(&x),
        Err(GqaError::Shape(ShapeError::ZeroDim { dim: "Hq" }))
    ));
    let short = Attention {
        wq: layer.wq[1..].to_vec(),
        ..layer.clone()
    };
    assert!(matches!(
        short.forward_cached(&x, &mut cache, 0),
        Err(GqaError::Weights { name: "wq", .. })
    ));
    assert!(layer.forward_cached(&x, &mut cache, 0).is_ok());
    // Lengths that would wrap are refused, and the cache keeps its tokens.
    cache.advance(2).unwrap();
    assert!(matches!(
        cache.advance(usize::MAX),
        Err(CacheError::Full { len: 2, .. })
    ));
    assert_eq!(cache.len(), 2);
    assert!(matches!(
        KvCache::new(&cfg, 1 << 60),
        Err(CacheError::TooLarge { .. })
    ));
}
