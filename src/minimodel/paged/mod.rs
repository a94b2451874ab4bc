//! Lab 03: the KV cache as virtual memory (Kwon et al., "Efficient Memory Management for Large Language
//! Model Serving with PagedAttention", SOSP 2023).
//!
//! * [`block_manager`]: vLLM's classic block manager: which physical block holds which tokens of which
//!   sequence, with reference counts, copy on write, fork, swap, sliding-window reuse and prefix caching.
//! * [`paged_attention`]: attention that reads K and V through a block table, on the CPU: decode (one
//!   query per sequence), prefill, and the partitioned (split-K, PagedAttention V2) decode whose parts
//!   merge by the log-sum-exp; and the read passes (the same walks without the arithmetic).
//! * `decode_simd` (x86-64): decode's inner loop reading each block's rows in place, 8 lanes at a time
//!   (AVX2) or 16 (AVX-512F).
//! * [`pages`]: a KV pool's memory on 2 MB pages (the CPU's translation cache and a scattered pool).
//! * [`replay`]: a seeded request trace served from a contiguous max-length reservation and from the block
//!   manager: how much of the KV memory holds tokens, and how many sequences fit.

pub mod block_manager;
#[cfg(target_arch = "x86_64")]
pub mod decode_simd;
pub mod paged_attention;
pub mod pages;
pub mod replay;

/// How decode here reads blocks: in place 16 lanes at a time ([`decode_simd`], x86-64 with AVX-512F besides
/// the rest), in place 8 at a time (AVX2, FMA and F16C), or gathered into tiles (the portable path), as
/// the number of lanes (0 for the portable path). At a head size that is a multiple of 16.
pub fn decode_lanes() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if decode_simd::wide_available() {
            16
        } else if decode_simd::available() {
            8
        } else {
            0
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}
