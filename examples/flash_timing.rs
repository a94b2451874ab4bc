//! Time the tiled CPU FlashAttention on one shape: `cargo run --release --example flash_timing -- N D [causal]`.
//! (A quick probe for profiling with `perf`; the book's numbers come from `measure-cpu`.)

use modern_attention::minimodel::attention_flash::flash_forward;
use modern_attention::minimodel::check::LeadingHeads;
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2048);
    let d: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let causal = args.get(3).is_some_and(|a| a == "causal");
    let s = AttnShape::self_attention((2048 / n).max(1), 4, n, d).expect("valid shape");
    let mut r = Rng::new(1);
    let (q, k, v) = (
        r.normal_vec_f32(s.q_len()),
        r.normal_vec_f32(s.kv_len()),
        r.normal_vec_f32(s.kv_len()),
    );
    let mut o = vec![0.0f32; s.q_len()];
    let mask = if causal { Mask::CAUSAL } else { Mask::NONE };
    // Checked first, as the harness checks (a failure stops the probe: nothing wrong is timed).
    o.fill(f32::NAN);
    flash_forward(&q, &k, &v, &s, mask, &mut o).expect("valid call");
    let report = LeadingHeads::new(&q, &k, &v, &s, mask)
        .check("tiled", &o)
        .expect("the output passes the rule");
    println!("checked: max error {:.1e}", report.candidate.max);
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            flash_forward(&q, &k, &v, &s, mask, &mut o).expect("valid call");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let flops = 4.0 * (s.b * s.hq * n * n * d) as f64 / if causal { 2.0 } else { 1.0 };
    println!(
        "B={} H={} N={n} D={d} causal={causal}: {:.3} ms, {:.1} GFLOP/s",
        s.b,
        s.hq,
        times[100] * 1e3,
        flops / times[100] / 1e9
    );
}
