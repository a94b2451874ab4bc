//! The machine's own roofs, measured: peak FMA throughput and copy bandwidth.
//!
//! * Peak: every thread runs `ACC` independent vector accumulators through `a = a * x + y` (enough of
//!   them to cover the FMA latency on two FMA units), compiled for the widest instruction set the CPU has.
//! * Bandwidth: every thread copies its share of a buffer far larger than the last-level cache;
//!   bytes read plus bytes written, over the median of several passes.
//! * Exponentials: every thread runs the softmax's `2^x` over a buffer that stays in L1; the
//!   softmax needs one per score, on the same vector units as the products.

use crate::minimodel::attention_flash::kernels::{exp2_into, Isa};
use std::time::Instant;

/// Independent accumulators, each a vector register: 12 chains cover the FMA's latency (4 cycles)
/// on two FMA units with room to spare.
const ACC: usize = 12;

/// The portable ceiling: `ACC` accumulators of `LANES` floats through `a = a x + y` (a multiply and
/// an add: no FMA instruction is assumed), `iters` times, left to the compiler's vectoriser. The array
/// must fit the register file (an earlier AVX2 build of 16 lanes spilled to the stack and measured half
/// the FMA rate); the vector instruction sets have their own loops below.
#[inline(always)]
fn fma_loop<const LANES: usize>(iters: usize, seed: f32) -> f32 {
    let mut acc = [[seed; LANES]; ACC];
    let (x, y) = (0.999_99f32, 1e-6f32);
    for _ in 0..iters {
        for r in acc.iter_mut() {
            for v in r.iter_mut() {
                *v = *v * x + y;
            }
        }
    }
    acc.iter().flatten().sum()
}

/// Multiply-adds one `fma_loop` iteration does with `isa`'s vector width.
fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2Fma => 8,
        Isa::Portable => 4,
    }
}

// The vector loops are written with intrinsics, one register an accumulator: compiled from
// `fma_loop`'s arrays of floats, rustc 1.95 vectorised the AVX-512 build across the accumulators
// instead, with gathers and scatters through the stack, and its "peak" came out at a fortieth of the
// FMA rate on an AVX-512 Xeon.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(seed); ACC];
    let (x, y) = (_mm512_set1_ps(0.999_99), _mm512_set1_ps(1e-6));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    _mm512_reduce_add_ps(sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(seed); ACC];
    let (x, y) = (_mm256_set1_ps(0.999_99), _mm256_set1_ps(1e-6));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum()
}

/// One thread's `fma_loop` with `isa`'s width; [`lanes`] multiply-adds per accumulator and iteration.
fn fma_run(isa: Isa, iters: usize, seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `isa` came from `Isa::detect`, re-checked here.
        Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => unsafe {
            return fma_avx512(iters, seed);
        },
        Isa::Avx2Fma if std::is_x86_feature_detected!("fma") => unsafe {
            return fma_avx2(iters, seed);
        },
        _ => {}
    }
    fma_loop::<4>(iters, seed)
}

/// Peak FLOP/s over `threads` threads (the best of three timed runs).
pub fn peak_flops(threads: usize) -> f64 {
    let isa = Isa::detect();
    let iters = 2_000_000;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let sink: f32 = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|i| sc.spawn(move || fma_run(isa, iters, i as f32)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        let flops = (threads * iters * ACC * lanes(isa) * 2) as f64;
        best = best.max(flops / secs);
    }
    best
}

/// Copy bandwidth in bytes/s (read plus write) over `threads` threads, `bytes` per buffer.
pub fn copy_bandwidth(threads: usize, bytes: usize) -> f64 {
    let n = bytes / 4;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let chunk = n.div_ceil(threads.max(1));
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|sc| {
            for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                sc.spawn(move || d.copy_from_slice(s));
            }
        });
        times.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    times.sort_by(f64::total_cmp);
    (2 * n * 4) as f64 / times[times.len() / 2]
}

/// Read-only bandwidth in bytes/s over `threads` threads, `bytes` in all: each thread sums its share
/// into 64 independent accumulators (vector adds, nothing written back), the median of five runs. The
/// roof of a kernel that only reads, such as decode: on a CPU it can be well below the copy's rate,
/// which counts a read and a write per element and keeps more misses in flight.
pub fn read_bandwidth(threads: usize, bytes: usize) -> f64 {
    fn sum(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 64];
        for c in x.chunks_exact(64) {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        acc.iter().sum()
    }
    let n = bytes / 4;
    let src: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let chunk = n.div_ceil(threads.max(1));
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let total: f32 = std::thread::scope(|sc| {
            let hs: Vec<_> = src
                .chunks(chunk)
                .map(|s| sc.spawn(move || sum(s)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    times.sort_by(f64::total_cmp);
    (n * 4) as f64 / times[times.len() / 2]
}

/// Exponentials per second over `threads` threads (the softmax's `2^x`, the widest instruction set the
/// CPU has; the best of three timed runs).
pub fn exp_rate(threads: usize) -> f64 {
    let isa = Isa::detect();
    let (n, reps) = (4096usize, 2000usize);
    let src: Vec<f32> = (0..n).map(|i| -20.0 * i as f32 / n as f32).collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let sink: f32 = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let src = &src;
                    sc.spawn(move || {
                        let mut dst = vec![0.0f32; n];
                        for _ in 0..reps {
                            exp2_into(isa, std::hint::black_box(src), &mut dst);
                        }
                        dst[n / 2]
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        best = best.max((threads * n * reps) as f64 / secs);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_is_a_memory_rate() {
        // 64 MB, past any cache: between a slow DRAM channel's rate and far below the FMA peak in bytes.
        let r = read_bandwidth(1, 64 << 20);
        assert!(r > 1e9 && r < 1e12, "{r:e} bytes/s");
    }

    #[test]
    fn an_exponential_costs_more_than_a_multiply_add() {
        // Many vector instructions each (a polynomial, a rounding, an exponent shift): fewer
        // exponentials per second than the FMA peak has lanes.
        let (exps, peak) = (exp_rate(1), peak_flops(1));
        assert!(
            exps > 1e6 && exps < peak / 2.0,
            "{exps:e} exponentials/s against {peak:e} FLOP/s"
        );
    }
}
