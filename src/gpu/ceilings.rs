//! Ceilings of the GPU that the PyTorch peer does not measure (it times a matrix product and a
//! copy): the rate of the softmax's exponentials, and what the device says of its clock and L2.

use super::{Device, GpuError};
use cudarc::driver::{sys::CUdevice_attribute, LaunchConfig, PushKernelArg};

// ANCHOR: exp_rate
/// Exponentials a second (`ex2.approx`, one per score of the softmax): the `ex2_rate` kernel, eight
/// blocks of 256 threads an SM, each thread `8 x iters` dependent-in-eight-chains exponentials;
/// median of 20 launches.
pub fn exp_rate(dev: &Device) -> Result<f64, GpuError> {
    const CHAINS: usize = 8; // `CH` in kernels/ceilings.cu
    let sms = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
    let (blocks, threads, iters) = (sms * 8, 256usize, 4096i32);
    let ms = median_ms(dev, "ex2_rate", blocks, threads, iters)?;
    let exps = (blocks * threads * CHAINS) as f64 * iters as f64;
    Ok(exps / (ms * 1e-3))
}

/// The median of 20 launches (after 3) of `kernel(float* sink, int iters)` from kernels/ceilings.cu
/// on `blocks` x `threads`, in ms.
fn median_ms(
    dev: &Device,
    kernel: &str,
    blocks: usize,
    threads: usize,
    iters: i32,
) -> Result<f64, GpuError> {
    let module = dev.module("ceilings.cu", &[])?;
    let f = module.load_function(kernel)?;
    let st = dev.stream();
    let mut sink = st.alloc_zeros::<f32>(blocks * threads)?;
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut ms = dev.time_each(3, 20, |_| {
        // SAFETY: the ceilings kernels take `(float* sink, int iters)` and write one float per
        // thread of the grid; `sink` holds one per thread.
        unsafe { st.launch_builder(&f).arg(&mut sink).arg(&iters).launch(cfg) }?;
        Ok(())
    })?;
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}
// ANCHOR_END: exp_rate

// ANCHOR: mma_sync_rate
/// FLOP/s of the tensor cores through `mma.sync` (m16n8k16, fp16 in, f32 accumulate: the instruction of
/// v4, v5 and FlashAttention-2): the `mma_rate` kernel, four blocks of four warps an SM, each warp eight
/// independent products `iters` times (4096 FLOPs each); median of 20 launches.
pub fn mma_sync_rate(dev: &Device) -> Result<f64, GpuError> {
    const CHAINS: usize = 8; // `CH` in kernels/ceilings.cu
    let sms = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
    let (blocks, threads, iters) = (sms * 4, 128usize, 2048i32);
    let ms = median_ms(dev, "mma_rate", blocks, threads, iters)?;
    let flops = (blocks * threads / 32 * CHAINS) as f64 * iters as f64 * 4096.0;
    Ok(flops / (ms * 1e-3))
}
// ANCHOR_END: mma_sync_rate

/// The device's maximum SM clock in MHz and its L2 size in bytes, as the driver reports them.
pub fn clock_and_l2(dev: &Device) -> Result<(f64, f64), GpuError> {
    let khz = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?;
    let l2 = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?;
    Ok((khz as f64 / 1e3, l2 as f64))
}
