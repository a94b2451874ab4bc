//! Sweep tile sizes of the tiled CPU kernel on one shape: `cargo run --release --example tiles_sweep -- D`.
use modern_attention::minimodel::attention_flash::{kernels::Isa, tiled, NoCount, Tiles};
use modern_attention::minimodel::check::LeadingHeads;
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use std::time::Instant;
fn main() {
    let d: usize = std::env::args()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(64);
    let s = AttnShape::self_attention(1, 4, 2048, d).expect("shape");
    let mut r = Rng::new(1);
    let (q, k, v) = (
        r.normal_vec_f32(s.q_len()),
        r.normal_vec_f32(s.kv_len()),
        r.normal_vec_f32(s.kv_len()),
    );
    let mut o = vec![0.0f32; s.q_len()];
    let check = LeadingHeads::new(&q, &k, &v, &s, Mask::NONE);
    for (br, bc) in [
        (32, 64),
        (64, 32),
        (64, 64),
        (128, 32),
        (128, 64),
        (128, 128),
        (192, 64),
        (192, 32),
        (256, 32),
        (256, 64),
        (256, 128),
        (512, 64),
    ] {
        let t = Tiles { br, bc };
        let run = |o: &mut [f32]| {
            tiled(&q, &k, &v, &s, Mask::NONE, o, t, Isa::detect(), &NoCount).expect("valid")
        };
        // Each tiling checked first, as the harness checks; one that fails is not timed.
        o.fill(f32::NAN);
        run(&mut o);
        if let Err(e) = check.check(&format!("{br}x{bc}"), &o) {
            println!("D={d} {br}x{bc}: not timed, the check failed: {e}");
            continue;
        }
        let mut ts: Vec<f64> = (0..9)
            .map(|_| {
                let t0 = Instant::now();
                tiled(
                    &q,
                    &k,
                    &v,
                    &s,
                    Mask::NONE,
                    &mut o,
                    t,
                    Isa::detect(),
                    &NoCount,
                )
                .expect("valid");
                t0.elapsed().as_secs_f64()
            })
            .collect();
        ts.sort_by(f64::total_cmp);
        println!(
            "D={d} {br}x{bc}: {:.1} GFLOP/s",
            4.0 * (4 * 2048 * 2048 * d) as f64 / ts[4] / 1e9
        );
    }
}
