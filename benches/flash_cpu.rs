//! Criterion benches of the CPU progression: naive, online, tiled, at N in {64, 512, 2048}, D in {64, 128},
//! f32 and f16, causal and not. `cargo bench --bench flash_cpu` (a filter narrows it, e.g. `-- N=2048`).
//! The book's tables come from `measure-cpu`, which also times PyTorch in the same run; these benches are
//! for working on the kernels. Each configuration is checked against the f64 reference first (the
//! harness's rule and bar, on its leading heads), and one that fails is not timed.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use modern_attention::minimodel::attention_flash::Version;
use modern_attention::minimodel::check::LeadingHeads;
use modern_attention::minimodel::numeric::{convert, Element};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};
use std::time::Duration;

fn bench_dtype<T: Element>(c: &mut Criterion, tag: &str) {
    let mut group = c.benchmark_group(format!("flash_cpu/{tag}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for d in [64, 128] {
        for n in [64, 512, 2048] {
            for causal in [false, true] {
                let s = AttnShape::self_attention((2048 / n).max(1), 4, n, d).expect("bench shape");
                let mask = if causal { Mask::CAUSAL } else { Mask::NONE };
                let mut r = Rng::new(n as u64);
                let q: Vec<T> = convert(&r.normal_vec_f32(s.q_len()));
                let k: Vec<T> = convert(&r.normal_vec_f32(s.kv_len()));
                let v: Vec<T> = convert(&r.normal_vec_f32(s.kv_len()));
                let mut o = vec![T::from_f32(0.0); s.q_len()];
                let check = LeadingHeads::new(&q, &k, &v, &s, mask);
                let flops = 4 * s.b * s.hq * n * n * d / if causal { 2 } else { 1 };
                group.throughput(Throughput::Elements(flops as u64));
                for ver in Version::ALL {
                    // The slow versions at the stress length take seconds per call: tiled only there.
                    if n == 2048 && ver != Version::V3Tiled {
                        continue;
                    }
                    let id = BenchmarkId::new(ver.name(), format!("N={n}/D={d}/{}", mask.name()));
                    o.fill(T::from_f32(f32::NAN));
                    ver.run(&q, &k, &v, &s, mask, &mut o).expect("valid");
                    if let Err(e) = check.check(ver.name(), &o) {
                        eprintln!("not timed, the check failed: {e}");
                        continue;
                    }
                    group.bench_function(id, |b| {
                        b.iter(|| ver.run(&q, &k, &v, &s, mask, &mut o).expect("valid"))
                    });
                }
            }
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_dtype::<f32>(c, "f32");
    bench_dtype::<f16>(c, "f16");
}

criterion_group!(flash, benches);
criterion_main!(flash);
