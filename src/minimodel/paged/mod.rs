//! Lab 03: the KV cache as virtual memory (Kwon et al., "Efficient Memory Management for Large Language
//! Model Serving with PagedAttention", SOSP 2023).
//!
//! * [`block_manager`]: vLLM's classic block manager: which physical block holds which tokens of which
//!   sequence, with reference counts, copy on write, fork, swap, sliding-window reuse and prefix caching.
//! * [`paged_attention`]: attention that reads K and V through a block table, on the CPU: decode (one
//!   query per sequence), prefill, and the partitioned (split-K, PagedAttention V2) decode whose parts
//!   merge by the log-sum-exp; and the read passes (the same walks without the arithmetic).
//! * `decode_avx2` (x86-64): decode's inner loop reading each block's rows in place, 8 lanes at a time.
//! * [`pages`]: a KV pool's memory on 2 MB pages (the CPU's translation cache and a scattered pool).
//! * [`replay`]: a seeded request trace served from a contiguous max-length reservation and from the block
//!   manager: how much of the KV memory holds tokens, and how many sequences fit.

pub mod block_manager;
#[cfg(target_arch = "x86_64")]
pub mod decode_avx2;
pub mod paged_attention;
pub mod pages;
pub mod replay;

/// Whether decode here reads blocks in place with the AVX2 loop ([`decode_avx2`]) rather than the portable
/// gather-and-tile path (x86-64 with AVX2, FMA and F16C).
pub fn decode_avx2_in_use() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        decode_avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
