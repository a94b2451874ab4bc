//! # Modern Attention
//!
//! The crate behind the book: every code block in `book/` is an anchored include of a module here, and
//! every number in `book/generated/` is written by [`regenerate`] from code in this crate.
//!
//! * [`minimodel`]: MiniGPT's attention and everything that makes it fast (the phase's module).
//! * [`roofline`]: the traffic model (FLOPs and bytes of each variant) and machine ceilings.
//! * [`regenerate`]: the main job's renderers: tables (and later figures) for the book.
//! * [`gpu`]: the CUDA side: context, NVRTC-compiled kernels of `kernels/`, launch wrappers, timing.

/// CUDA sources embedded from `kernels/` by `build.rs`.
pub mod kernels {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
pub mod gpu;
pub mod measure;
pub mod minimodel;
pub mod regenerate;
pub mod roofline;
