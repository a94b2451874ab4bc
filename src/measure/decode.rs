//! Decode attention timed for MHA, GQA and MQA across context lengths: one MiniGPT layer, one query
//! token, the cache read through `decode_attention` (one thread). Each configuration is checked against
//! the f64 reference first.

use super::Record;
use crate::minimodel::attention_mqa_gqa::decode_attention;
use crate::minimodel::check::attn_close;
use crate::minimodel::config::MiniGptConfig;
use crate::minimodel::kv_cache::LayerCache;
use crate::minimodel::numeric::DType;
use crate::minimodel::reference::{attention_lowp, attention_ref64};
use crate::minimodel::rng::Rng;
use crate::minimodel::shape::{AttnShape, Mask};
use crate::roofline::traffic::bytes_fused;
use std::time::Instant;

/// Context lengths of the decode sweep: the verb sequence, the stress length, and two past the caches.
pub const CONTEXTS: [usize; 4] = [64, 2048, 16384, 65536];

/// The KV cache of MiniGPT for every kv-head count at the two anchors: bytes allocated by a real
/// [`KvCache`](crate::minimodel::kv_cache::KvCache) beside the formula's (variant `kv_cache`; no
/// timing, so `ms` is 0).
pub fn kv_cache_records() -> Vec<Record> {
    use crate::minimodel::config::{STRESS_SEQ_LEN, VERB_SEQ_LEN};
    use crate::minimodel::kv_cache::KvCache;
    let mut out = Vec::new();
    for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
        for hkv in [8, 4, 2, 1] {
            let Ok(cfg) = MiniGptConfig::MINIGPT.with_kv_heads(hkv) else {
                continue;
            };
            let Ok(cache) = KvCache::new(&cfg, n) else {
                continue;
            };
            let shape =
                AttnShape::new(1, cfg.n_heads, hkv, n, n, cfg.head_size).expect("cache shape");
            let (got, want) = (
                cache.allocated_bytes() as f64,
                KvCache::formula_bytes(&cfg, n, DType::F32) as f64,
            );
            out.push(Record {
                bytes_model: want,
                bytes_counted: Some(got),
                kv_cache_bytes: Some(got),
                kv_cache_bytes_formula: Some(want),
                ..Record::new("kv_cache", "ours/kv_cache", "f32", &shape, "causal")
                    .checked(got == want, 0.0)
            });
        }
    }
    out
}

/// Time decode attention for every kv-head count of MiniGPT at every context in [`CONTEXTS`].
pub fn decode_records(quick: bool, log: &mut dyn FnMut(&str)) -> Vec<Record> {
    let cfg = MiniGptConfig::MINIGPT;
    let (hq, d) = (cfg.n_heads, cfg.head_size);
    let contexts: &[usize] = if quick { &CONTEXTS[..2] } else { &CONTEXTS };
    let mut out = Vec::new();
    for &len in contexts {
        for hkv in [8, 4, 2, 1] {
            let mut rng = Rng::new((len * 10 + hkv) as u64);
            let q = rng.normal_vec_f32(hq * d);
            let k = rng.normal_vec_f32(hkv * len * d);
            let v = rng.normal_vec_f32(hkv * len * d);
            let lc = LayerCache { k, v };
            let s = AttnShape::new(1, hq, hkv, 1, len, d).expect("decode shape");
            // Check on the same data (cap = len, so the cache is already contiguous).
            let got: Vec<f64> = decode_attention(&q, &lc, hq, hkv, len, len, d)
                .expect("a valid decode shape")
                .iter()
                .map(|&x| x as f64)
                .collect();
            let reference = attention_ref64(&q, &lc.k, &lc.v, &s, Mask::NONE).expect("shape");
            let lowp = attention_lowp(&q, &lc.k, &lc.v, &s, Mask::NONE, DType::F32).expect("shape");
            let verdict = attn_close("decode", &got, &lowp, &reference, DType::F32, len, None);
            let (checked, max_err) = crate::minimodel::check::verdict(&verdict, log);
            let mut times = Vec::new();
            let start = Instant::now();
            while times.len() < 7 || (start.elapsed().as_secs_f64() < 0.3 && times.len() < 200) {
                let t = Instant::now();
                std::hint::black_box(
                    decode_attention(&q, &lc, hq, hkv, len, len, d).expect("checked"),
                );
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let ms = times[times.len() / 2];
            let flops = 4.0 * (hq * len * d) as f64;
            let bytes = bytes_fused(&s, DType::F32); // the cache, plus q and o, each moved once
            log(&format!(
                "decode Hkv={hkv} len={len:6}: {:9.1} µs {:6.1} GB/s",
                ms * 1e3,
                bytes / ms / 1e6
            ));
            let mut rec = Record::new("decode", "ours/decode_attention", "f32", &s, "none");
            rec.threads = Some(1);
            out.push(rec.timed(&times, flops, bytes).checked(checked, max_err));
        }
    }
    out
}
