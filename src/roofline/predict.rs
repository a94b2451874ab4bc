//! `predict`: from a one-line description of an attention variant to its dot on a roofline, before
//! anything is measured. `modern-attention predict kind=flash hq=32 hkv=8 n=2048 d=128 dtype=f16
//! mask=causal machine=h100` prints its FLOPs, bytes, intensity, the bound it hits and the time it
//! cannot beat.

use super::spec::{Ceilings, H100_SXM_DATASHEET};
use super::traffic::{bytes_fused, bytes_naive, flash_bytes_cached, flash_traffic, visible_keys};
use super::{lower_bound_seconds, si, sig3, Bound};
use crate::minimodel::numeric::DType;
use crate::minimodel::shape::{AttnShape, Mask};
use thiserror::Error;

/// Why a description could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PredictError {
    /// A word that is not `key=value`, or an unknown key.
    #[error("cannot read `{0}`: expected key=value with key one of kind, b, hq, hkv, n, nq, d, dtype, mask, br, bc, machine")]
    Word(String),
    /// A value that does not parse.
    #[error("bad value for {key}: `{value}`")]
    Value {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// The shape is not valid.
    #[error("invalid shape: {0}")]
    Shape(String),
}

/// What kind of attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// S and P through slow memory.
    Naive,
    /// Tiled FlashAttention with `Br x Bc` tiles.
    Flash,
    /// Every tensor moved exactly once (the fused ideal; decode kernels approach it).
    Fused,
}

/// A parsed description.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Algorithm.
    pub kind: Kind,
    /// Shape.
    pub shape: AttnShape,
    /// Storage type.
    pub dtype: DType,
    /// Mask.
    pub mask: Mask,
    /// Tiles for `flash`.
    pub tiles: (usize, usize),
}

/// The prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// FLOPs executed (visible pairs for naive and fused, computed tiles for flash).
    pub flops: f64,
    /// Slow-memory bytes from the traffic model.
    pub bytes: f64,
    /// FLOP/byte.
    pub intensity: f64,
    /// The roofline's lower bound on time, seconds.
    pub seconds: f64,
    /// The ceiling that sets it.
    pub bound: Bound,
    /// Exponentials: one per score computed.
    pub exps: f64,
}

/// Read `key=value` words. Defaults: `kind=flash b=1 hq=8 hkv=hq n=2048 nq=n d=64 dtype=f16 mask=none
/// br=128 bc=64`; `decode` is `kind=fused nq=1`. Masks: `none`, `causal`, `window:W`, `causal+window:W`.
pub fn parse(words: &[String]) -> Result<(Variant, String), PredictError> {
    let (mut kind, mut b, mut hq, mut hkv, mut n, mut nq, mut d) =
        (Kind::Flash, 1, 8, None, 2048, None, 64);
    let (mut dtype, mut mask, mut br, mut bc, mut machine) =
        (DType::F16, Mask::NONE, 128, 64, "h100".to_string());
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| PredictError::Word(w.clone()))?;
        let bad = || PredictError::Value {
            key: k.into(),
            value: v.into(),
        };
        let num = || v.parse::<usize>().map_err(|_| bad());
        match k {
            "kind" => {
                kind = match v {
                    "naive" => Kind::Naive,
                    "flash" => Kind::Flash,
                    "fused" => Kind::Fused,
                    "decode" => {
                        nq = Some(1);
                        Kind::Fused
                    }
                    _ => return Err(bad()),
                }
            }
            "b" => b = num()?,
            "hq" => hq = num()?,
            "hkv" => hkv = Some(num()?),
            "n" => n = num()?,
            "nq" => nq = Some(num()?),
            "d" => d = num()?,
            "br" => br = num()?,
            "bc" => bc = num()?,
            "dtype" => {
                dtype = match v {
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    "f32" => DType::F32,
                    _ => return Err(bad()),
                }
            }
            "mask" => {
                let (causal, rest) = match v.strip_prefix("causal") {
                    Some(r) => (true, r.trim_start_matches('+')),
                    None => (false, v),
                };
                mask = match rest {
                    "" | "none" => Mask {
                        causal,
                        window: None,
                    },
                    w => {
                        let w = w
                            .strip_prefix("window:")
                            .ok_or_else(bad)?
                            .parse()
                            .map_err(|_| bad())?;
                        Mask::sliding(w, causal).map_err(|e| PredictError::Shape(e.to_string()))?
                    }
                }
            }
            "machine" => machine = v.to_string(),
            _ => return Err(PredictError::Word(w.clone())),
        }
    }
    let shape = AttnShape::new(b, hq, hkv.unwrap_or(hq), nq.unwrap_or(n), n, d)
        .map_err(|e| PredictError::Shape(e.to_string()))?;
    if br == 0 || bc == 0 {
        return Err(PredictError::Shape("tiles must be at least 1".into()));
    }
    Ok((
        Variant {
            kind,
            shape,
            dtype,
            mask,
            tiles: (br, bc),
        },
        machine,
    ))
}

// ANCHOR: predict
/// Place a variant on a machine's roofline.
pub fn predict(v: &Variant, machine: &Ceilings) -> Prediction {
    let s = &v.shape;
    // Visible (query, key) pairs: 4 D FLOPs each, per query head.
    let pairs: f64 = (0..s.nq)
        .map(|i| {
            let (lo, hi) = visible_keys(v.mask, i, s.nq, s.nk);
            (hi - lo).max(0) as f64
        })
        .sum();
    let useful = 4.0 * (s.b * s.hq) as f64 * pairs * s.d as f64;
    let (flops, bytes) = match v.kind {
        // Masked naive still materialises the whole S and P.
        Kind::Naive => (useful, bytes_naive(s, v.dtype)),
        Kind::Fused => (useful, bytes_fused(s, v.dtype)),
        Kind::Flash => {
            let t = flash_traffic(s, v.dtype, v.tiles.0, v.tiles.1, v.mask);
            let executed = t.computed as f64 * 4.0 * (v.tiles.0 * v.tiles.1 * s.d) as f64;
            (executed, (t.loaded + t.stored) as f64) // masked tiles cost whole tiles
        }
    };
    let (seconds, bound) = lower_bound_seconds(flops, bytes, machine);
    Prediction {
        flops,
        bytes,
        intensity: flops / bytes,
        seconds,
        bound,
        exps: flops / (4.0 * s.d as f64), // 4 D FLOPs per score
    }
}
// ANCHOR_END: predict

/// The report `predict` prints.
pub fn report(v: &Variant, machine: &Ceilings) -> String {
    let p = predict(v, machine);
    // Slow-memory bytes when a cache serves the K/V re-reads (flash on a machine with a known cache).
    let mut bytes = p.bytes;
    let cached = match (v.kind, machine.cache) {
        (Kind::Flash, Some((cache, resident))) => {
            let (hit, fits, working) =
                flash_bytes_cached(&v.shape, v.dtype, v.tiles, v.mask, cache, resident);
            if fits {
                bytes = hit;
                let (t, bound) = lower_bound_seconds(p.flops, hit, machine);
                format!(
                    "cache      K/V of the heads in flight: {w}B, fits the {c}B cache: re-reads hit it\n\
                     with it    {hit}B to slow memory, intensity {i} FLOP/byte -> {b}-bound, time >= {t}s\n",
                    w = si(working),
                    c = si(cache),
                    hit = si(hit),
                    i = sig3(p.flops / hit),
                    b = bound.name(),
                    t = si(t),
                )
            } else {
                format!(
                    "cache      K/V of the heads in flight: {w}B, more than the {c}B cache: the model stands\n",
                    w = si(working),
                    c = si(cache),
                )
            }
        }
        _ => String::new(),
    };
    // The softmax's exponentials, where the machine's rate is known.
    let exps = match machine.exp_rate {
        Some(rate) => {
            let (t_math, t_exp) = (p.flops / machine.peak_flops, p.exps / rate);
            let t_comms = bytes / machine.bandwidth;
            format!(
                "softmax    {e} exponentials, T_exp = {te}s: time >= {ts}s if they add to the \
                 products (T_math + T_exp; always on a CPU, whose vector units do both), >= {to}s \
                 only if other units run them under the products\n",
                e = si(p.exps),
                te = si(t_exp),
                ts = si((t_math + t_exp).max(t_comms)),
                to = si(t_math.max(t_exp).max(t_comms)),
            )
        }
        None => String::new(),
    };
    let head = format!(
        "{kind:?} attention, B={b} Hq={hq} Hkv={hkv} Nq={nq} Nk={nk} D={d} {dt} mask={mask}{tiles}\n\
         on {name}: peak {peak}FLOP/s, bandwidth {bw}B/s, ridge {ridge} FLOP/byte\n\
         FLOPs      {flops}FLOP\n\
         bytes      {bytes}B (traffic model)\n\
         intensity  {int} FLOP/byte -> {bound}-bound\n\
         time       >= {t}s (max of T_math = {tm}s and T_comms = {tc}s)\n",
        kind = v.kind,
        b = v.shape.b,
        hq = v.shape.hq,
        hkv = v.shape.hkv,
        nq = v.shape.nq,
        nk = v.shape.nk,
        d = v.shape.d,
        dt = v.dtype.name(),
        mask = v.mask.name(),
        tiles = if v.kind == Kind::Flash { format!(" tiles {}x{}", v.tiles.0, v.tiles.1) } else { String::new() },
        name = machine.name,
        peak = si(machine.peak_flops),
        bw = si(machine.bandwidth),
        ridge = sig3(machine.ridge()),
        flops = si(p.flops),
        bytes = si(p.bytes),
        int = sig3(p.intensity),
        bound = p.bound.name(),
        t = si(p.seconds),
        tm = si(p.flops / machine.peak_flops),
        tc = si(p.bytes / machine.bandwidth),
    );
    // Nothing overlapped: the products, the bytes and the exponentials one after another (Table R.1's
    // "no overlap" column), what a kernel of separate passes pays.
    let serial = {
        let t_exp = machine.exp_rate.map_or(0.0, |rate| p.exps / rate);
        let t = p.flops / machine.peak_flops + bytes / machine.bandwidth + t_exp;
        format!(
            "no overlap time >= {t}s if nothing runs under anything else (T_math + T_comms{e}): what \
             a kernel of separate passes pays, naive's three among them\n",
            t = si(t),
            e = if machine.exp_rate.is_some() { " + T_exp" } else { "" },
        )
    };
    // Decode (one query token) only reads its cache: the measured read rate is its roof.
    let read = match machine.read_bandwidth {
        Some(rd) if v.shape.nq == 1 => {
            let t_read = bytes / rd;
            format!(
                "read roof  decode only reads: at the measured read rate {r}B/s, T_comms = {tr}s, \
                 time >= {t}s\n",
                r = si(rd),
                tr = si(t_read),
                t = si(t_read.max(p.flops / machine.peak_flops)),
            )
        }
        _ => String::new(),
    };
    head + &cached + &exps + &serial + &read
}

/// The H100 datasheet, or a machine's measured ceilings given as `(name, GFLOP/s, GB/s)`.
pub fn machine_ceilings(measured: Option<(&'static str, f64, f64)>) -> Ceilings {
    match measured {
        Some((name, gflops, gbps)) => Ceilings {
            name,
            peak_flops: gflops * 1e9,
            bandwidth: gbps * 1e9,
            source: "measured by this crate (measurements/)",
            cache: None,
            exp_rate: None,
            read_bandwidth: None,
        },
        None => H100_SXM_DATASHEET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// The no-overlap line is the sum of the three times the other lines give (H100 datasheet, whose
    /// exponential rate is the guide's): for naive at N = 2048 the sum of T_math, T_comms and T_exp.
    #[test]
    fn no_overlap_is_the_sum_of_the_three_times() {
        let (v, _) = parse(&words("kind=naive b=8 hq=32 n=2048 d=64 dtype=f16")).unwrap();
        let m = H100_SXM_DATASHEET;
        let p = predict(&v, &m);
        let t_exp = m.exp_rate.map_or(0.0, |r| p.exps / r);
        let sum = p.flops / m.peak_flops + p.bytes / m.bandwidth + t_exp;
        assert!(sum > p.seconds, "the sum exceeds the max");
        let line = report(&v, &m)
            .lines()
            .find(|l| l.starts_with("no overlap"))
            .expect("a no-overlap line")
            .to_string();
        assert!(line.contains(&format!(">= {}s", si(sum))), "{line}");
    }

    #[test]
    fn decode_with_gqa_lands_at_the_group() {
        let (v, m) = parse(&words("kind=decode hq=32 hkv=8 n=65536 d=128 dtype=f16")).unwrap();
        assert_eq!(m, "h100");
        let p = predict(&v, &H100_SXM_DATASHEET);
        assert!((p.intensity - 4.0).abs() < 0.01, "{}", p.intensity); // G = 4
        assert_eq!(p.bound, Bound::Memory);
    }

    #[test]
    fn long_flash_prefill_is_compute_bound_and_causal_halves_flops() {
        let (v, _) = parse(&words("kind=flash hq=16 n=8192 d=128 br=128 bc=128")).unwrap();
        let full = predict(&v, &H100_SXM_DATASHEET);
        let (vc, _) = parse(&words(
            "kind=flash hq=16 n=8192 d=128 br=128 bc=128 mask=causal",
        ))
        .unwrap();
        let causal = predict(&vc, &H100_SXM_DATASHEET);
        assert!(causal.flops < 0.52 * full.flops && causal.flops > 0.5 * full.flops);
        let (vn, _) = parse(&words("kind=naive hq=16 n=8192 d=128")).unwrap();
        assert!(predict(&vn, &H100_SXM_DATASHEET).intensity < full.intensity);
    }

    #[test]
    fn one_exponential_per_score_and_the_h100_rate() {
        let (v, _) = parse(&words("kind=fused b=2 hq=4 n=1024 d=64")).unwrap();
        let p = predict(&v, &H100_SXM_DATASHEET);
        assert_eq!(p.exps, (2 * 4 * 1024 * 1024) as f64);
        let report = report(&v, &H100_SXM_DATASHEET);
        assert!(report.contains("exponentials"), "{report}");
        // At D = 64 the exponentials take most of the time the products do: 16 a clock per SM
        // against a score's 256 FLOPs on the tensor cores.
        let h100 = &H100_SXM_DATASHEET;
        let (t_math, t_exp) = (
            p.flops / h100.peak_flops,
            p.exps / h100.exp_rate.expect("rate"),
        );
        assert!(
            t_exp > 0.8 * t_math && t_exp < t_math,
            "{t_exp} vs {t_math}"
        );
    }

    #[test]
    fn a_measured_read_rate_bounds_decode_only() {
        let mut m = machine_ceilings(Some(("box", 300.0, 30.0)));
        m.read_bandwidth = Some(15e9);
        let (decode, _) = parse(&words("kind=decode hq=8 hkv=2 n=2048 d=128 dtype=f32")).unwrap();
        let r = report(&decode, &m);
        let p = predict(&decode, &m);
        assert!(r.contains("read roof"), "{r}");
        assert!(r.contains(&si(p.bytes / 15e9)), "the read line's time: {r}");
        let (prefill, _) = parse(&words("kind=flash n=2048 d=64 dtype=f32")).unwrap();
        assert!(!report(&prefill, &m).contains("read roof"));
    }

    #[test]
    fn bad_words_are_refused() {
        assert!(matches!(
            parse(&words("kind=magic")),
            Err(PredictError::Value { .. })
        ));
        assert!(matches!(
            parse(&words("heads=8")),
            Err(PredictError::Word(_))
        ));
        assert!(matches!(
            parse(&words("hq=8 hkv=3")),
            Err(PredictError::Shape(_))
        ));
        assert!(matches!(
            parse(&words("mask=window:0")),
            Err(PredictError::Shape(_))
        ));
        let (v, _) = parse(&words("mask=causal+window:256")).unwrap();
        assert_eq!(v.mask, Mask::sliding(256, true).unwrap());
    }
}
