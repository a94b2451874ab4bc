//! Time paged decode against contiguous decode on the same data: `cargo run --release --example
//! paged_decode_timing`. (A quick probe; `measure-cpu` records the same runs as variants `paged_decode`,
//! `paged_read` and `paged_decode_sweep`.)

use half::f16;
use modern_attention::measure::cpu::paged_decode_records;
use modern_attention::minimodel::paged::decode_lanes;

fn main() {
    let mut log = |s: &str| println!("{s}");
    println!(
        "in-place decode loop: {} lanes (0: the portable path)",
        decode_lanes()
    );
    for recs in [
        paged_decode_records::<f32>(false, &mut log),
        paged_decode_records::<f16>(false, &mut log),
    ] {
        for r in &recs {
            // Each against its contiguous twin, as Tables 03.2 and 03.3 do.
            let pages = if r.implementation.ends_with("-2m") {
                "-2m"
            } else {
                ""
            };
            let twin = match r.variant.as_str() {
                "paged_read" => format!("ours/read-pass-contiguous{pages}"),
                "paged_decode" => format!("ours/contiguous{pages}"),
                _ => r.implementation.replace("paged-v1", "contiguous"),
            };
            let base = recs
                .iter()
                .find(|b| b.implementation == twin && b.nk == r.nk)
                .map_or(r.ms, |b| b.ms);
            // The tables' price: the median of the per-round ratios (quartiles beside it); the
            // ratio of the medians after it.
            let q = r
                .ratio_to_twin
                .map_or("no twin".to_string(), |[lo, mid, hi]| {
                    format!(
                        "{:+.1}% ({:+.1}..{:+.1})",
                        100.0 * (mid - 1.0),
                        100.0 * (lo - 1.0),
                        100.0 * (hi - 1.0)
                    )
                });
            println!(
                "  {:28} {:4} N={:5} {:.3} ms  rounds {q}  medians {:+.1}% vs {twin}",
                r.implementation,
                r.dtype,
                r.nk,
                r.ms,
                100.0 * (r.ms / base - 1.0)
            );
        }
    }
}
