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
