//! Time paged decode against contiguous decode on the same data: `cargo run --release --example
//! paged_decode_timing`. (A quick probe; `measure-cpu` records the same runs as variant `paged_decode`.)

use half::f16;
use modern_attention::measure::cpu::paged_decode_records;

fn main() {
    let mut log = |s: &str| println!("{s}");
    for recs in [
        paged_decode_records::<f32>(false, &mut log),
        paged_decode_records::<f16>(false, &mut log),
    ] {
        let base = recs[0].ms;
        for r in &recs {
            println!(
                "  {:16} {:.3} ms ({:+.1}% vs contiguous)",
                r.implementation,
                r.ms,
                100.0 * (r.ms / base - 1.0)
            );
        }
    }
}
