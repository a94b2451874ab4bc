//! What ptxas made of each kernel, as a committed file (`measurements/ptxas/<arch>.json`): written by
//! `modern-attention kernels --json FILE WORD...` (NVRTC, no GPU), read by Lab 02's Table 02.8. Compiled
//! facts rather than timings, so any machine with NVRTC reproduces them for a given NVRTC version.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// What ptxas reports for one kernel of a module: registers a thread, spill stores and loads (bytes),
/// static shared memory (bytes), and the size of its machine code.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelReport {
    /// The entry function.
    pub name: String,
    /// Registers a thread at launch.
    pub registers: u32,
    /// Bytes of spill stores.
    pub spill_stores: u32,
    /// Bytes of spill loads.
    pub spill_loads: u32,
    /// Static shared memory, bytes.
    pub smem: u32,
    /// Machine code (SASS), bytes: the size of the kernel's `.text` section in the cubin. The
    /// instruction cache holds a fraction of a large kernel (Lab 02's changelog, entry t).
    pub code: u64,
}

/// One module: its file and defines, and its kernels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRow {
    /// `file -DNAME=VALUE ...`, as `modern-attention kernels` prints it.
    pub module: String,
    /// Its kernels, in ptxas's order.
    pub kernels: Vec<KernelReport>,
    /// ptxas's warnings, verbatim.
    pub warnings: Vec<String>,
}

/// A file of reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtxasFile {
    /// The target, e.g. `sm_90a`.
    pub arch: String,
    /// NVRTC's version, e.g. `13.5`.
    pub nvrtc: String,
    /// The crate's commit the kernels were compiled at.
    pub commit: String,
    /// The date, `YYYY-MM-DD`.
    pub date: String,
    /// The modules.
    pub modules: Vec<ModuleRow>,
}

/// Every report file in `dir` (none if it does not exist).
pub fn load_all(dir: &Path) -> Result<Vec<PtxasFile>, String> {
    super::load_json_dir(dir)
}
