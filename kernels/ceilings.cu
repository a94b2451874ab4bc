// Micro-kernels for the GPU's ceilings that PyTorch's peer does not measure.

// ANCHOR: ex2_rate
// The softmax's second roof: how many `ex2.approx` (one per score) the special function units retire
// a second. Each thread runs CH independent chains y <- 2^(-y) (y stays in [0.5, 1]: no overflow, no
// denormals), so the only arithmetic is the exponential itself (the negation is an operand modifier),
// and writes one sum so that the chains cannot be dropped.
#define CH 8
extern "C" __global__ void ex2_rate(float* __restrict__ sink, int iters) {
    float y[CH];
#pragma unroll
    for (int c = 0; c < CH; ++c) y[c] = 0.5f + 0.0625f * c + 1e-6f * (threadIdx.x & 31);
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int c = 0; c < CH; ++c) asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y[c]) : "f"(-y[c]));
    }
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < CH; ++c) s += y[c];
    sink[(size_t)blockIdx.x * blockDim.x + threadIdx.x] = s;
}
// ANCHOR_END: ex2_rate

// ANCHOR: mma_rate
// The tensor cores' rate through `mma.sync` (the warp-level instruction of v4, v5 and FlashAttention-2;
// Hopper's warpgroup `wgmma`, which the peak from PyTorch's matrix product uses, issues more per SM).
// Each warp keeps CH independent m16n8k16 f16 products with f32 accumulators in flight, operands from
// the thread index so that nothing is constant, and writes one sum so that nothing is dropped.
extern "C" __global__ void mma_rate(float* __restrict__ sink, int iters) {
    const unsigned x = 0x3c003c00u ^ (threadIdx.x & 1u);  // two fp16 values near 1
    const unsigned a0 = x, a1 = x ^ 2u, a2 = x ^ 4u, a3 = x ^ 6u, b0 = x ^ 8u, b1 = x ^ 10u;
    float c[CH][4];
#pragma unroll
    for (int k = 0; k < CH; ++k) c[k][0] = c[k][1] = c[k][2] = c[k][3] = 0.f;
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int k = 0; k < CH; ++k)
            asm volatile(
                "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                "{%0,%1,%2,%3};\n"
                : "+f"(c[k][0]), "+f"(c[k][1]), "+f"(c[k][2]), "+f"(c[k][3])
                : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < CH; ++k) s += (c[k][0] + c[k][1]) + (c[k][2] + c[k][3]);
    sink[(size_t)blockIdx.x * blockDim.x + threadIdx.x] = s;
}
// ANCHOR_END: mma_rate

// ANCHOR: hold
// Not a ceiling: one thread that keeps the stream busy for `ns` nanoseconds of the global timer, so that
// the launches a host issues after it queue up behind it and then run back to back. Events around each
// of those then time the GPU's work alone, with no wait for the host in between (Device::time_each_queued).
extern "C" __global__ void hold(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
// ANCHOR_END: hold
