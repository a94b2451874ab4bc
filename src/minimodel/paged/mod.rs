//! Lab 03: the KV cache as virtual memory (Kwon et al., "Efficient Memory Management for Large Language
//! Model Serving with PagedAttention", SOSP 2023).
//!
//! * [`block_manager`]: vLLM's classic block manager: which physical block holds which tokens of which
//!   sequence, with reference counts, copy on write, fork, swap, sliding-window reuse and prefix caching.
//! * [`paged_attention`]: attention that reads K and V through a block table, on the CPU: decode (one
//!   query per sequence), prefill, and the partitioned (split-K, PagedAttention V2) decode whose parts
//!   merge by the log-sum-exp.
//! * [`replay`]: a seeded request trace served from a contiguous max-length reservation and from the block
//!   manager: how much of the KV memory holds tokens, and how many sequences fit.

pub mod block_manager;
pub mod paged_attention;
pub mod replay;
