//! Machine ceilings. Vendor numbers live here with their source; measured ceilings of the machine the
//! book is regenerated on are added by the regenerate job and always shown beside these.

/// A machine's two roofs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceilings {
    /// Display name.
    pub name: &'static str,
    /// Peak arithmetic rate in FLOP/s.
    pub peak_flops: f64,
    /// Slow-memory bandwidth in bytes/s.
    pub bandwidth: f64,
    /// Where the numbers come from.
    pub source: &'static str,
    /// The last cache before slow memory, if known: its bytes, and how many query tiles run at once
    /// against one such cache (for [`super::traffic::flash_bytes_cached`]).
    pub cache: Option<(f64, usize)>,
    /// Exponentials per second, if known: the softmax's one `2^x` per score runs on units apart from
    /// the matrix units (the GPU's special function units), at a far lower rate.
    pub exp_rate: Option<f64>,
    /// Read-only bandwidth in bytes/s, if measured: the roof of a kernel that only reads (decode),
    /// which on a CPU can be well below the copy's rate.
    pub read_bandwidth: Option<f64>,
}

impl Ceilings {
    /// The ridge point `peak / bandwidth` in FLOP/byte: the intensity where the two roofs meet.
    pub fn ridge(&self) -> f64 {
        self.peak_flops / self.bandwidth
    }
}

/// NVIDIA H100 SXM5 80 GB, dense FP16/BF16 tensor-core peak and HBM3 bandwidth, from NVIDIA's H100
/// datasheet (also quoted by the FlashAttention-3 paper and FlashInfer's benchmarks).
pub const H100_SXM_DATASHEET: Ceilings = Ceilings {
    name: "NVIDIA H100 SXM5 80GB",
    peak_flops: 989.4e12,
    bandwidth: 3.35e12,
    source:
        "NVIDIA H100 datasheet: dense FP16/BF16 tensor cores; HBM3; 50 MB L2 (H100 architecture \
             whitepaper), one query tile per SM on its 132 SMs; 16 exponentials per clock per SM (CUDA \
             programming guide) at 1980 MHz",
    cache: Some((50.0 * 1024.0 * 1024.0, 132)),
    exp_rate: Some(H100_EXP_RATE),
    read_bandwidth: None,
};

/// The H100's `ex2.approx` rate: 16 results per clock per SM (the CUDA C++ Programming Guide's
/// arithmetic-instruction throughput table, compute capability 9.0, "base 2 exponential"), on 132 SMs
/// at the 1980 MHz maximum SM clock (`nvidia-smi --query-gpu=clocks.max.sm` on the book's H100).
pub const H100_EXP_RATE: f64 = 16.0 * 132.0 * 1.98e9;
