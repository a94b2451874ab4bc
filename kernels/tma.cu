// Hopper's tensor memory accelerator (TMA), the copy path FlashAttention-3 feeds its tensor cores with,
// and the first step of giving v7 a producer warp (issue 4's next step). One thread asks for a box of a
// tensor described once on the host by a tensor map (`cuTensorMapEncodeTiled`, src/gpu/tma.rs); the copy
// engine writes the box into shared memory, here in the 128-byte swizzled layout that v6/v7's wgmma
// descriptors read (`tile_off` in flash_fwd.cu: a row of 64 elements is 128 bytes at 128 i, its 16-byte
// chunk c at position c ^ (i % 8)), and counts the bytes it delivered on an mbarrier that the block waits
// on. Rows past the tensor's end arrive as zeros.
//
// `tma_probe` loads one box and writes its shared-memory bytes out unchanged, so that a test can compare
// the layout with the one v6/v7's own copies produce (tests/tma_gpu.rs). Compiled by NVRTC for sm_90a.

// The driver's CUtensorMap: 128 opaque bytes, 64-byte aligned, passed by value as a __grid_constant__
// kernel parameter (the copy instruction takes its address).
struct __align__(64) TensorMap {
    unsigned long long opaque[16];
};

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ANCHOR: tma_probe
extern "C" __global__ void tma_probe(const __grid_constant__ TensorMap tm, unsigned char* __restrict__ out,
                                     int c0, int r0, int z, unsigned bytes) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) unsigned long long bar;
    // The swizzle repeats every 1024 bytes and is computed from the address: the box starts on 1024.
    unsigned char* box = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(&bar)));
        // The copy engine (the async proxy) must see the initialised barrier.
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(&bar)), "r"(bytes)
                     : "memory");
        asm volatile(
            "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
            "%4}], [%5];" ::"r"(smem_u32(box)),
            "l"(reinterpret_cast<unsigned long long>(&tm)), "r"(c0), "r"(r0), "r"(z), "r"(smem_u32(&bar))
            : "memory");
    }
    __syncthreads();  // the barrier is initialised before anyone waits on it
    unsigned done = 0;
    while (!done) {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n selp.u32 %0, 1, 0, p;\n}"
            : "=r"(done)
            : "r"(smem_u32(&bar))
            : "memory");
    }
    for (unsigned i = threadIdx.x; i < bytes; i += blockDim.x) out[i] = box[i];
}
// ANCHOR_END: tma_probe
