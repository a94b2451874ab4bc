//! MiniGPT's attention, from the obviously right f64 reference to the fast kernels.
//!
//! Shape convention for the whole module: `q: (B, Hq, Nq, D)`, `k, v: (B, Hkv, Nk, D)`, each a row-major
//! contiguous slice described by an [`shape::AttnShape`]. Query head `h` reads kv head `h / (Hq / Hkv)`.

pub mod attention_flash;
pub mod attention_mqa_gqa;
pub mod check;
pub mod config;
pub mod corpus;
pub mod kv_cache;
pub mod model;
pub mod numeric;
pub mod paged;
pub mod reference;
pub mod rng;
pub mod shape;
pub mod softmax;
