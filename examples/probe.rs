use modern_attention::minimodel::attention_flash::Version;
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use std::time::Instant;
fn main() {
    for (b, h, n, d, causal) in [
        (1, 4, 2048, 64, false),
        (16, 8, 64, 64, false),
        (1, 4, 2048, 128, false),
        (1, 4, 2048, 64, true),
    ] {
        let s = AttnShape::self_attention(b, h, n, d).unwrap();
        let mut r = Rng::new(1);
        let (q, k, v) = (
            r.normal_vec_f32(s.q_len()),
            r.normal_vec_f32(s.kv_len()),
            r.normal_vec_f32(s.kv_len()),
        );
        let mut o = vec![0.0f32; s.q_len()];
        let mask = if causal { Mask::CAUSAL } else { Mask::NONE };
        for ver in Version::ALL
            .into_iter()
            .filter(|v| std::env::var("ONLY").map_or(true, |o| v.name() == o))
        {
            ver.run(&q, &k, &v, &s, mask, &mut o).unwrap();
            let mut ts = vec![];
            for _ in 0..5 {
                let t = Instant::now();
                ver.run(&q, &k, &v, &s, mask, &mut o).unwrap();
                ts.push(t.elapsed().as_secs_f64());
            }
            ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let fl = 4.0 * (b * h * n * n * d) as f64 / if causal { 2.0 } else { 1.0 };
            println!(
                "B={b} H={h} N={n} D={d} causal={causal} {:10} {:8.3} ms {:7.1} GFLOP/s",
                ver.name(),
                ts[2] * 1e3,
                fl / ts[2] / 1e9
            );
        }
    }
}
