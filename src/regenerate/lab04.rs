//! Lab 04's tables: the KV cache of MiniGPT's variants (allocated vs formula), the same formula on real
//! model shapes and DeepSeek-V2's latent cache, how far mean-pooling moves the model, and decode time
//! against cache bytes from the committed measurements.

use super::{md_table, Artifact};
use crate::measure::MeasurementFile;
use crate::minimodel::config::{MiniGptConfig, STRESS_SEQ_LEN, VERB_SEQ_LEN};
use crate::minimodel::corpus::verb_sequence;
use crate::minimodel::kv_cache::{kv_bytes, mla_bytes, KvCache};
use crate::minimodel::model::{rms_norm, MiniGpt};
use crate::minimodel::numeric::DType;
use crate::roofline::{si, sig3};

/// The seed of the lab's model.
pub const SEED: u64 = 2704;

/// Lab 04's tables.
pub fn render(files: &[(String, MeasurementFile)]) -> Vec<Artifact> {
    vec![
        Artifact {
            name: "lab04_kv_cache.md",
            contents: minigpt_cache_table(),
        },
        Artifact {
            name: "lab04_models.md",
            contents: models_table(),
        },
        Artifact {
            name: "lab04_pooling.md",
            contents: pooling_table(),
        },
        Artifact {
            name: "lab04_decode.md",
            contents: decode_table(files),
        },
        Artifact {
            name: "lab04_gpu_heads.md",
            contents: gpu_heads_table(files),
        },
    ]
}

/// Table 04.5: one GPU decode step with 32 query heads over 32, 8, 4 and 1 kv heads (the contiguous
/// decode kernel of lab 03): time against the bytes the heads imply.
fn gpu_heads_table(files: &[(String, MeasurementFile)]) -> String {
    let gpus: Vec<_> = files
        .iter()
        .filter(|(_, f)| f.machine.kind == "gpu")
        .collect();
    if gpus.is_empty() {
        return "*No GPU measurements are committed yet.*\n".into();
    }
    let tables: Vec<String> = gpus
        .iter()
        .filter_map(|(name, f)| gpu_heads_card(name, f))
        .collect();
    if tables.is_empty() {
        return "*No GPU kv-heads comparison is committed yet (`bench/gpu.sh ... paged`).*\n"
            .into();
    }
    tables.join("\n")
}

/// Table 04.5 for one card, if its file has the comparison.
fn gpu_heads_card(name: &str, f: &MeasurementFile) -> Option<String> {
    let mut recs: Vec<_> = f
        .records
        .iter()
        .filter(|r| r.variant == "decode_heads" && r.checked)
        .collect();
    recs.sort_by_key(|r| std::cmp::Reverse(r.hkv));
    let mha = recs.iter().find(|r| r.hkv == r.hq).copied()?;
    let read = super::lab03::read_roof(f);
    let rows: Vec<Vec<String>> = recs
        .iter()
        .map(|r| {
            let kind = match r.hkv {
                h if h == r.hq => "MHA".to_string(),
                1 => "MQA".to_string(),
                h => format!("GQA-{h}"),
            };
            vec![
                kind,
                format!("{}", r.hkv),
                si(r.bytes_model) + "B",
                format!("{:.4}", r.ms),
                sig3(r.gbps),
                format!("{:.0}%", 100.0 * r.gbps / read),
                format!("{}x", sig3(mha.bytes_model / r.bytes_model)),
                format!("{}x", sig3(mha.ms / r.ms)),
            ]
        })
        .collect();
    let mut out = md_table(
        &[
            "attention",
            "kv heads",
            "bytes per step",
            "ms (median)",
            "GB/s",
            "of read roof",
            "bytes saved vs MHA",
            "measured speed-up vs MHA",
        ],
        &rows,
    );
    let when = f.when(mha);
    let failed = super::failed_in(f, "decode_heads");
    out += &format!(
        "\n*Table 04.5, {}. One decode step on the GPU: {} sequences of {} tokens, {} query heads, D = {}, fp16, \
         contiguous K/V; lab 03's decode kernel (a thread block computes up to 4 query heads of one kv head, \
         so K/V rows are loaded once per 4 heads and the rest of a group's blocks find them in L2). Checked \
         against the f64 reference first.{failed} CUDA-event medians. Read roof {} GB/s (Table 03.5). {}, {}; \
         from \
         `measurements/{name}`.*\n",
        f.machine.name,
        mha.b,
        mha.nk,
        mha.hq,
        mha.d,
        sig3(read),
        f.machine.name,
        when
    );
    Some(out)
}

fn minigpt_cache_table() -> String {
    let mut rows = Vec::new();
    for n in [VERB_SEQ_LEN, STRESS_SEQ_LEN] {
        let mha = KvCache::new(&MiniGptConfig::MINIGPT, n)
            .map(|c| c.allocated_bytes())
            .unwrap_or(0);
        for g in [8, 4, 2, 1] {
            let cfg = MiniGptConfig::MINIGPT
                .with_kv_heads(g)
                .expect("valid group");
            let Ok(cache) = KvCache::new(&cfg, n) else {
                continue;
            };
            let name = match g {
                8 => "MHA".to_string(),
                1 => "MQA".to_string(),
                _ => format!("GQA-{g}"),
            };
            rows.push(vec![
                format!("N={n}"),
                name,
                g.to_string(),
                format!(
                    "{} ({})",
                    cache.allocated_bytes(),
                    si(cache.allocated_bytes() as f64) + "B"
                ),
                KvCache::formula_bytes(&cfg, n, DType::F32).to_string(),
                format!("1/{}", mha / cache.allocated_bytes().max(1)),
            ]);
        }
    }
    let mut s = md_table(
        &[
            "context",
            "variant",
            "kv heads",
            "allocated bytes",
            "formula bytes",
            "vs MHA",
        ],
        &rows,
    );
    s += "\n*Table 04.1. MiniGPT's KV cache (4 layers, 8 query heads of size 32, f32) for one sequence: \
          allocated is what the cache's buffers hold (`KvCache::allocated_bytes`), formula is \
          2·layers·kv_heads·head_size·N·4. From `src/minimodel/kv_cache.rs`.*\n";
    s
}

fn models_table() -> String {
    let tokens = 4096;
    let e = DType::F16;
    // (model, layers, query heads, kv heads, head size)
    let gqa_like = [
        ("Llama-2-70B shape as MHA", 80, 64, 64, 128),
        ("Llama-2-70B (GQA, 8 kv heads)", 80, 64, 8, 128),
        ("Llama-2-70B shape as MQA", 80, 64, 1, 128),
        ("DeepSeek-V2 shape as MHA", 60, 128, 128, 128),
    ];
    let mut rows = Vec::new();
    let base = kv_bytes(80, 64, 128, tokens, e) as f64;
    for (name, layers, hq, hkv, d) in gqa_like {
        let bytes = kv_bytes(layers, hkv, d, tokens, e) as f64;
        // Decode, one token against T keys: 4 Hq T D FLOPs over 2 Hkv T D e bytes per layer.
        let intensity = (4 * hq * d) as f64 / (2 * hkv * d * e.bytes()) as f64;
        rows.push(vec![
            name.to_string(),
            layers.to_string(),
            hq.to_string(),
            format!("{hkv} kv heads x {d}"),
            si(bytes / tokens as f64) + "B",
            si(bytes) + "B",
            format!("{}x", sig3(base / bytes)),
            sig3(intensity),
        ]);
    }
    // MLA (DeepSeek-V2): a 512-wide latent plus a 64-wide RoPE key per layer and token, shared by all
    // 128 heads. With the projections absorbed, each head scores against the 576-wide cached vector and
    // accumulates a 512-wide output: 2 Hq (2 * 512 + 64) FLOPs per key over 576 e bytes.
    let (layers, hq, latent, rope) = (60, 128, 512, 64);
    let bytes = mla_bytes(layers, latent, rope, tokens, e) as f64;
    let intensity = (2 * hq * (2 * latent + rope)) as f64 / ((latent + rope) * e.bytes()) as f64;
    rows.push(vec![
        "DeepSeek-V2 (MLA)".into(),
        layers.to_string(),
        hq.to_string(),
        format!("latent {latent} + RoPE {rope}"),
        si(bytes / tokens as f64) + "B",
        si(bytes) + "B",
        format!("{}x", sig3(base / bytes)),
        sig3(intensity),
    ]);
    let mut s = md_table(
        &[
            "model",
            "layers",
            "query heads",
            "cached per layer and token",
            "cache per token",
            "cache at 4096 tokens",
            "smaller than Llama-2-70B-as-MHA",
            "decode FLOP/byte",
        ],
        &rows,
    );
    s += "\n*Table 04.2. fp16 caches of one sequence, from the same formulas (`kv_bytes`, `mla_bytes` in \
          `src/minimodel/kv_cache.rs`). Decode intensity: one query token against a long cache, per layer; \
          GQA's is the group size G, MLA's comes from all heads sharing one cached vector.*\n";
    s
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

fn argmax_rows(x: &[f32], width: usize) -> Vec<usize> {
    x.chunks_exact(width)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0
        })
        .collect()
}

fn pooling_table() -> String {
    let cfg = MiniGptConfig {
        max_context: VERB_SEQ_LEN,
        ..MiniGptConfig::MINIGPT
    };
    let tokens = verb_sequence();
    let Ok(mha) = MiniGpt::seeded(cfg, SEED) else {
        return "*model construction failed*\n".into();
    };
    let x = mha
        .embed(&tokens, 0)
        .map(|x| rms_norm(&x, cfg.d_model))
        .unwrap_or_default();
    let (Ok(a_mha), Ok(l_mha)) = (mha.blocks[0].attn.forward(&x), mha.forward(&tokens)) else {
        return "*forward failed*\n".into();
    };
    let top_mha = argmax_rows(&l_mha, cfg.vocab_size);
    let mut rows = Vec::new();
    for g in [8, 4, 2, 1] {
        let Ok(m) = mha.mean_pooled(g) else { continue };
        let (Ok(a), Ok(l)) = (m.blocks[0].attn.forward(&x), m.forward(&tokens)) else {
            continue;
        };
        let same = argmax_rows(&l, cfg.vocab_size)
            .iter()
            .zip(&top_mha)
            .filter(|(a, b)| a == b)
            .count();
        rows.push(vec![
            g.to_string(),
            format!("{:.3}", rel_l2(&a, &a_mha)),
            format!("{:.3}", rel_l2(&l, &l_mha)),
            format!("{same} of {}", tokens.len()),
        ]);
    }
    let mut s = md_table(
        &[
            "kv heads after pooling",
            "layer-0 attention output, relative L2 shift",
            "logits, relative L2 shift",
            "positions with the same top token",
        ],
        &rows,
    );
    s += &format!(
        "\n*Table 04.3. MiniGPT with seeded weights (seed {SEED}), its MHA key and value heads mean-pooled into \
         groups (Ainslie et al. 2023), on the verb sequence; no uptraining. Random weights are the worst case: \
         trained heads are correlated and pool with less loss. From `src/regenerate/lab04.rs`.*\n"
    );
    s
}

fn decode_table(files: &[(String, MeasurementFile)]) -> String {
    let mut out = String::new();
    for (name, f) in files.iter().filter(|(_, f)| f.machine.kind == "cpu") {
        let recs: Vec<_> = f
            .records
            .iter()
            .filter(|r| r.variant == "decode" && r.checked)
            .collect();
        if recs.is_empty() {
            continue;
        }
        let mut rows = Vec::new();
        let mut contexts: Vec<usize> = recs.iter().map(|r| r.nk).collect();
        contexts.dedup();
        for n in contexts {
            let mha = recs.iter().find(|r| r.nk == n && r.hkv == r.hq);
            for r in recs.iter().filter(|r| r.nk == n) {
                let (measured, predicted) = match mha {
                    Some(m) => (m.ms / r.ms, m.bytes_model / r.bytes_model),
                    None => (f64::NAN, f64::NAN),
                };
                rows.push(vec![
                    format!("N={n}"),
                    r.hkv.to_string(),
                    si(r.bytes_model) + "B",
                    format!("{:.1}", r.ms * 1e3),
                    sig3(r.gbps),
                    format!("{}x", sig3(measured)),
                    format!("{}x", sig3(predicted)),
                    sig3(r.flops / r.bytes_model),
                ]);
            }
        }
        out += &md_table(
            &[
                "context",
                "kv heads",
                "bytes per step",
                "µs per token",
                "GB/s",
                "speed-up vs MHA, measured",
                "speed-up vs MHA, bytes predict",
                "FLOP/byte",
            ],
            &rows,
        );
        let one = f
            .machine
            .bandwidth_gbps_1t
            .map_or(String::new(), |b| format!(", {} GB/s on one", sig3(b)));
        let when = f.when(recs[0]);
        let failed = super::failed_in(f, "decode");
        out += &format!(
            "\n*Table 04.4. One MiniGPT layer's decode attention (8 query heads of size 32, f32, one thread) on {} \
             (copy bandwidth {} GB/s over {} threads{one}), {when}; every configuration checked against the f64 \
             reference first; median of repeated runs.{failed} From `measurements/{name}`.*\n\n",
            f.machine.name,
            sig3(f.machine.bandwidth_gbps),
            f.generated.threads,
        );
    }
    if out.is_empty() {
        out = "*No decode measurements are committed yet: run `cargo run --release -- measure-cpu`.*\n".into();
    }
    out
}
