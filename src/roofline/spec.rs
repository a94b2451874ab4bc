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
             whitepaper), one query tile per SM on its 132 SMs",
    cache: Some((50.0 * 1024.0 * 1024.0, 132)),
};
