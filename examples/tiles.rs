use modern_attention::minimodel::attention_flash::{kernels::Isa, tiled, NoCount, Tiles};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use std::time::Instant;
fn main() {
    for d in [64, 128] {
        let s = AttnShape::self_attention(1, 4, 2048, d).unwrap();
        let mut r = Rng::new(1);
        let (q, k, v) = (
            r.normal_vec_f32(s.q_len()),
            r.normal_vec_f32(s.kv_len()),
            r.normal_vec_f32(s.kv_len()),
        );
        let mut o = vec![0.0f32; s.q_len()];
        for (br, bc) in [
            (32, 32),
            (64, 32),
            (64, 64),
            (128, 64),
            (128, 128),
            (256, 64),
            (64, 128),
            (32, 256),
        ] {
            let t = Tiles { br, bc };
            let run = |o: &mut [f32]| {
                tiled(&q, &k, &v, &s, Mask::NONE, o, t, Isa::detect(), &NoCount).unwrap()
            };
            run(&mut o);
            let mut ts: Vec<f64> = (0..5)
                .map(|_| {
                    let t0 = Instant::now();
                    run(&mut o);
                    t0.elapsed().as_secs_f64()
                })
                .collect();
            ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "D={d} {br}x{bc}: {:.1} GFLOP/s",
                4.0 * (4 * 2048 * 2048 * d) as f64 / ts[2] / 1e9
            );
        }
    }
}
