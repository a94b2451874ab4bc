//! The GPU side: a CUDA context through `cudarc`, the kernels of `kernels/` compiled at run time by
//! NVRTC (once per process and module), launch wrappers that validate shapes, and CUDA-event timing.
//!
//! Nothing here needs CUDA at build time: `cudarc` loads `libcuda` and `libnvrtc` when first used, so
//! [`Device::open`] asks whether they are there before touching them and answers `Ok(None)` on a
//! machine without a driver or a device (the GPU tests then print `skipped: no CUDA device`).
//!
//! Shapes follow the crate: `q: (B, Hq, Nq, D)`, `k, v: (B, Hkv, Nk, D)`, row-major, contiguous.

pub mod ceilings;
pub mod flash;
pub mod paged;
pub mod tma;

use crate::minimodel::shape::ShapeError;
use cudarc::driver::{
    sys, CudaContext, CudaModule, CudaSlice, CudaStream, DriverError, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use thiserror::Error;

/// Why a GPU call failed. Validation errors are returned before anything is launched.
#[derive(Debug, Error)]
pub enum GpuError {
    /// The CUDA driver refused a call (allocation, copy, launch, ...).
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    /// NVRTC could not compile a kernel module; `log` is NVRTC's own log.
    #[error("NVRTC could not compile {module} with {options:?}:\n{log}")]
    Compile {
        /// Which module (file and defines).
        module: String,
        /// The options NVRTC was given.
        options: Vec<String>,
        /// NVRTC's log.
        log: String,
    },
    /// A paged batch was refused (tables, lengths, partition): nothing was uploaded or launched.
    #[error(transparent)]
    Paged(#[from] crate::minimodel::paged::paged_attention::PagedError),
    /// This device cannot run what was asked (e.g. Hopper's bulk copies on an older GPU).
    #[error("not supported on this device ({arch}): {what}")]
    NotSupported {
        /// What was asked.
        what: &'static str,
        /// The device's NVRTC target.
        arch: &'static str,
    },
    /// A kernel asked for by name (`flash::forward_v8_named`) cannot run this call, or is not compiled.
    #[error("kernel {name} cannot run this call: {why}")]
    KernelChoice {
        /// The name asked for.
        name: String,
        /// Why not.
        why: String,
    },
    /// The shape itself is invalid.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The kernel has no instantiation for this head size.
    #[error("{version} is compiled for head sizes {supported:?}, not D = {d}")]
    HeadDim {
        /// The kernel version.
        version: &'static str,
        /// The head size asked for.
        d: usize,
        /// The head sizes it supports.
        supported: &'static [usize],
    },
    /// A device buffer's length does not match the shape.
    #[error("device tensor {tensor} holds {got} elements, the shape needs {expected}")]
    Length {
        /// `q`, `k`, `v`, `o` or `lse`.
        tensor: &'static str,
        /// Elements the shape needs.
        expected: usize,
        /// Elements the buffer holds.
        got: usize,
    },
    /// A dimension past what the kernels index with 32-bit integers or launch as a grid.
    #[error("{what} = {value} is past the kernels' limit {limit}")]
    TooLarge {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The limit.
        limit: usize,
    },
}

/// Fill a kernel's outputs `o` and `lse` with NaN, so that an element it leaves unwritten fails the check.
pub fn poison_outputs<T: flash::GpuElement>(
    dev: &Device,
    o: &mut CudaSlice<T>,
    lse: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let st = dev.stream();
    st.memcpy_htod(&vec![T::nan(); o.len()], o)?;
    st.memcpy_htod(&vec![f32::NAN; lse.len()], lse)?;
    Ok(())
}

/// Copy a kernel's outputs `o` and `lse` back to the host.
pub fn download_outputs<T: flash::GpuElement>(
    dev: &Device,
    o: &CudaSlice<T>,
    lse: &CudaSlice<f32>,
) -> Result<(Vec<T>, Vec<f32>), GpuError> {
    let st = dev.stream();
    Ok((st.clone_dtoh(o)?, st.clone_dtoh(lse)?))
}

/// What [`Device::time_each_queued`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Each run's time between its own events, ms, in launch order: the GPU's work alone.
    pub ms: Vec<f64>,
    /// The host's time to issue one call, microseconds.
    pub host_us: f64,
    /// The span from the hold's end to the last run's end less the runs' own times, ms: the stream's
    /// time between the timed pairs (recording the events), and any wait for the host, which would add
    /// about the host's time a call less the GPU's to every run once the queue ran dry.
    pub idle_ms: f64,
}

/// An open CUDA device: its context, one stream every launch goes to, and its compiled modules.
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    sms: u32,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
}

/// Where set, the directory in which compiled PTX is kept between processes (each module once per
/// source text, defines, architecture and NVRTC version): a script that starts the binary many times
/// on one machine (`bench/ab.sh`) then pays NVRTC's compile once per build instead of once per process.
pub const PTX_CACHE_ENV: &str = "MA_PTX_CACHE";

/// FNV-1a, 64 bits: a name for a cache file that does not change with the compiler's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// PTX compiled in this process, keyed by (module defines, arch): NVRTC runs once per key.
fn ptx_cache() -> &'static Mutex<HashMap<(String, &'static str), Ptx>> {
    static CACHE: OnceLock<Mutex<HashMap<(String, &'static str), Ptx>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The CUDA toolkit's include directory, for `cuda_fp16.h`: `$CUDA_HOME/include`, `$CUDA_PATH/include`,
/// else `/usr/local/cuda/include` (the first that holds `cuda_fp16.h`).
pub fn cuda_include_dir() -> PathBuf {
    let candidates = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|p| PathBuf::from(p).join("include"))
        .chain(std::iter::once(PathBuf::from("/usr/local/cuda/include")));
    let all: Vec<PathBuf> = candidates.collect();
    all.iter()
        .find(|p| p.join("cuda_fp16.h").exists())
        .cloned()
        .unwrap_or_else(|| all.last().cloned().unwrap_or_default())
}

// ANCHOR: nvrtc_compile
/// Compile `file` of `kernels/` with `defines` for `arch` (e.g. `sm_90a`) to PTX with NVRTC: no device
/// needed, only the library (and `cuda_fp16.h`, [`cuda_include_dir`]). `key` names the module in an
/// error, which carries NVRTC's log.
pub fn compile_module(
    file: &str,
    defines: &[(&str, i64)],
    arch: &'static str,
    key: &str,
) -> Result<Ptx, GpuError> {
    let src = kernel_source(file).ok_or_else(|| GpuError::Compile {
        module: key.to_string(),
        options: Vec::new(),
        log: format!("no kernels/{file} embedded in the crate"),
    })?;
    let mut options: Vec<String> = defines.iter().map(|(n, v)| format!("-D{n}={v}")).collect();
    options.push("--generate-line-info".into()); // source lines in sanitizer and ncu reports
    let opts = CompileOptions {
        arch: Some(arch),
        include_paths: vec![cuda_include_dir().to_string_lossy().into_owned()],
        options: options.clone(),
        name: Some(file.to_string()),
        ..Default::default()
    };
    compile_ptx_with_opts(src, opts).map_err(|e| {
        let log = match &e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        };
        GpuError::Compile {
            module: key.to_string(),
            options,
            log,
        }
    })
}
// ANCHOR_END: nvrtc_compile

/// [`compile_module`] through a directory of compiled PTX (`cache`, where given): a file named by
/// everything the PTX depends on (the source text, the defines, the architecture and NVRTC's version;
/// the toolkit's headers aside: one cache per machine) is read instead of compiling, and written after
/// a compile. A cache that cannot be written costs only the next process's compile.
pub fn compile_module_cached(
    file: &str,
    defines: &[(&str, i64)],
    arch: &'static str,
    key: &str,
    cache: Option<&Path>,
) -> Result<Ptx, GpuError> {
    let Some(dir) = cache else {
        return compile_module(file, defines, arch, key);
    };
    let src = kernel_source(file).unwrap_or_default();
    let stamp = format!("{key}|{arch}|{}|{src}", nvrtc_version().unwrap_or_default());
    let path = dir.join(format!("{file}-{:016x}.ptx", fnv1a(stamp.as_bytes())));
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(Ptx::from_src(text));
    }
    let ptx = compile_module(file, defines, arch, key)?;
    // Written under another name and renamed: a process killed mid-write, or two writing at once,
    // leave no partial file under the name that is read.
    let tmp = path.with_extension(format!("ptx.{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, ptx.to_src()))
        .and_then(|_| std::fs::rename(&tmp, &path));
    Ok(ptx)
}

pub use crate::measure::ptxas::KernelReport;

/// What [`ptxas_report`] returns for one module.
#[derive(Debug, Clone)]
pub struct PtxasReport {
    /// ptxas's report of every kernel, with its machine code's size.
    pub kernels: Vec<KernelReport>,
    /// Every line of the log that is a warning.
    pub warnings: Vec<String>,
    /// The cubin itself (an ELF file), for a disassembler such as `nvdisasm` or `cuobjdump -sass`.
    pub cubin: Vec<u8>,
}

/// Compile `file` with `defines` to a cubin for `arch` with NVRTC and `--ptxas-options=-v`: ptxas's own
/// report of every kernel (registers, spills, shared memory) and every line of the log that is a warning
/// (ptxas's `C75xx` notes on serialised `wgmma`s among them). No device needed: what a kernel change does
/// to registers and spills can be read before any GPU time is spent.
pub fn ptxas_report(
    file: &str,
    defines: &[(&str, i64)],
    arch: &'static str,
) -> Result<PtxasReport, GpuError> {
    use cudarc::nvrtc::result::{
        compile_program, create_program, destroy_program, get_program_log,
    };
    use std::ffi::CString;
    let key = module_key(file, defines);
    let fail = |options: Vec<String>, log: String| GpuError::Compile {
        module: key.clone(),
        options,
        log,
    };
    let src = kernel_source(file).ok_or_else(|| {
        fail(
            Vec::new(),
            format!("no kernels/{file} embedded in the crate"),
        )
    })?;
    let mut options: Vec<String> = defines.iter().map(|(n, v)| format!("-D{n}={v}")).collect();
    options.extend([
        format!("--gpu-architecture={arch}"),
        "--ptxas-options=-v".into(),
        format!("-I{}", cuda_include_dir().display()),
    ]);
    let c = |x: &str| CString::new(x).map_err(|e| fail(Vec::new(), e.to_string()));
    let prog = create_program(&c(src)?, Some(&c(file)?))
        .map_err(|e| fail(options.clone(), e.to_string()))?;
    // SAFETY: `prog` was just created and is destroyed once, below, whatever the compile returns.
    let (compiled, log, cubin) = unsafe {
        let compiled = compile_program(prog, &options);
        let log = get_program_log(prog);
        let mut cubin = Vec::new();
        let mut size = 0usize;
        if compiled.is_ok()
            && cudarc::nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .is_ok()
        {
            cubin = vec![0u8; size];
            if cudarc::nvrtc::sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())
                .result()
                .is_err()
            {
                cubin.clear();
            }
        }
        let _ = destroy_program(prog);
        (compiled, log, cubin)
    };
    let log: Vec<u8> = log
        .map_err(|e| fail(options.clone(), e.to_string()))?
        .into_iter()
        .take_while(|&c| c != 0)
        .map(|c| c as u8)
        .collect();
    let log = String::from_utf8_lossy(&log).into_owned();
    if compiled.is_err() {
        return Err(fail(options, log));
    }
    let (mut kernels, warnings) = parse_ptxas(&log);
    let text = text_sections(&cubin);
    for k in &mut kernels {
        k.code = text
            .iter()
            .find(|(name, _)| name.strip_prefix(".text.") == Some(k.name.as_str()))
            .map_or(0, |(_, size)| *size);
    }
    Ok(PtxasReport {
        kernels,
        warnings,
        cubin,
    })
}

/// The `.text.*` sections of an ELF64 file (a cubin) with their sizes; empty if `elf` is not one.
fn text_sections(elf: &[u8]) -> Vec<(String, u64)> {
    let bytes = |o: usize, n: usize| elf.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| bytes(o, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at =
        |o: usize| bytes(o, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let u64_at = |o: usize| {
        bytes(o, 8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    let read = || -> Option<Vec<(String, u64)>> {
        if bytes(0, 5)? != b"\x7fELF\x02" {
            return None;
        }
        let (shoff, shentsize) = (u64_at(0x28)? as usize, u16_at(0x3A)?);
        let (shnum, shstrndx) = (u16_at(0x3C)?, u16_at(0x3E)?);
        let section = |i: usize| shoff + i * shentsize;
        let names = u64_at(section(shstrndx) + 0x18)? as usize; // the name table's file offset
        let mut out = Vec::new();
        for i in 0..shnum {
            let at = names + u32_at(section(i))?;
            let end = at + elf.get(at..)?.iter().position(|&c| c == 0)?;
            let name = String::from_utf8_lossy(&elf[at..end]).into_owned();
            if name.starts_with(".text.") {
                out.push((name, u64_at(section(i) + 0x20)?));
            }
        }
        Some(out)
    };
    read().unwrap_or_default()
}

/// ptxas's `-v` log as one report a kernel, and its warnings.
fn parse_ptxas(log: &str) -> (Vec<KernelReport>, Vec<String>) {
    let number_before = |line: &str, unit: &str| -> u32 {
        line.split(',')
            .find_map(|part| {
                let part = part.trim();
                let at = part.find(unit)?;
                part[..at].split_whitespace().last()?.parse().ok()
            })
            .unwrap_or(0)
    };
    let mut kernels: Vec<KernelReport> = Vec::new();
    let mut warnings = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            kernels.push(KernelReport {
                name: rest.trim().to_string(),
                ..Default::default()
            });
        } else if let Some(k) = kernels.last_mut() {
            if line.contains("spill stores") {
                k.spill_stores = number_before(line, "bytes spill stores");
                k.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                k.registers = number_before(line, "registers");
                k.smem = number_before(line, "bytes smem");
            }
        }
        if line.to_ascii_lowercase().contains("warning") {
            warnings.push(line.trim().to_string());
        }
    }
    (kernels, warnings)
}

/// NVRTC's version, e.g. `13.5` (`None` where it cannot be loaded).
pub fn nvrtc_version() -> Option<String> {
    if !nvrtc_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; two plain out-parameters.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .ok()?;
    Some(format!("{major}.{minor}"))
}

/// Whether NVRTC can be loaded here (it can be, with no GPU and no driver: [`compile_module`]).
pub fn nvrtc_present() -> bool {
    // SAFETY: this only tries to dlopen the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// A module's name: its file and its defines, `file -DNAME=VALUE ...` (the module cache's key, and what
/// errors and `modern-attention kernels` print).
pub fn module_key(file: &str, defines: &[(&str, i64)]) -> String {
    defines
        .iter()
        .fold(file.to_string(), |k, (n, v)| format!("{k} -D{n}={v}"))
}

/// One module the crate builds: a file of `kernels/` and its `-D` defines.
pub type ModuleConfig = (&'static str, Vec<(&'static str, i64)>);

/// Every module configuration the book's runs build for a Hopper card (`sm_90a`): each flash version in
/// f16 and bf16 and v8's trace build ([`flash::module_configs`]), the paged decode's tunings, head sizes
/// and pool layouts and its read-bandwidth kernels ([`paged::module_configs`]), the ceilings and the TMA
/// check. What `tests/kernels_compile.rs` compiles where NVRTC is present, with or without a GPU.
pub fn module_configs() -> Vec<ModuleConfig> {
    let mut out: Vec<ModuleConfig> = vec![("ceilings.cu", vec![]), ("tma.cu", vec![])];
    out.extend(flash::module_configs());
    out.extend(paged::module_configs());
    // v1 and v1b share a module, the paged sweep and defaults some tunings: each configuration once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.clone()));
    out
}

/// The embedded source of one file of `kernels/`.
pub fn kernel_source(name: &str) -> Option<&'static str> {
    crate::kernels::SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
}

impl Device {
    // ANCHOR: device_open
    /// Open device 0, or `Ok(None)` where there is no CUDA driver, no NVRTC or no device.
    pub fn open() -> Result<Option<Device>, GpuError> {
        // SAFETY: these only try to dlopen the libraries; with dynamic loading a missing library makes
        // every other cudarc call panic, so they are asked first.
        let present = unsafe {
            cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present()
        };
        if !present {
            return Ok(None);
        }
        match CudaContext::device_count() {
            Ok(n) if n >= 1 => {}
            _ => return Ok(None), // a driver with no device (or no usable one)
        }
        let ctx = CudaContext::new(0)?;
        // One stream carries every launch, so cudarc's per-buffer event tracking only adds overhead.
        // SAFETY: nothing of this context is used from another stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let (major, minor) = ctx.compute_capability()?;
        // wgmma and setmaxnreg need the `a` target on Hopper; elsewhere the device's own capability.
        let arch: &'static str = match (major, minor) {
            (9, 0) => "sm_90a",
            _ => Box::leak(format!("sm_{major}{minor}").into_boxed_str()),
        };
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            as u32;
        Ok(Some(Device {
            ctx,
            stream,
            arch,
            sms,
            modules: Mutex::new(HashMap::new()),
        }))
    }
    // ANCHOR_END: device_open

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch of this device goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> Result<String, GpuError> {
        Ok(self.ctx.name()?)
    }

    /// The NVRTC target, e.g. `sm_90a`.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// The number of streaming multiprocessors (a persistent kernel's grid).
    pub fn sm_count(&self) -> u32 {
        self.sms
    }

    /// A device attribute (`CU_DEVICE_ATTRIBUTE_*`).
    pub fn attribute(&self, a: sys::CUdevice_attribute) -> Result<i32, GpuError> {
        Ok(self.ctx.attribute(a)?)
    }

    /// Free and total device memory, bytes.
    pub fn memory(&self) -> Result<(usize, usize), GpuError> {
        Ok(self.ctx.mem_get_info()?)
    }

    /// The CUDA version the driver supports, e.g. `13.0`.
    pub fn driver_cuda_version(&self) -> Result<String, GpuError> {
        let mut v: std::ffi::c_int = 0;
        // SAFETY: a plain out-parameter call; the library is loaded (the context exists).
        unsafe { sys::cuDriverGetVersion(&mut v) }.result()?;
        Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
    }

    /// The module built from `file` of `kernels/` with `defines` (`-DNAME=VALUE` each), compiled by
    /// NVRTC the first time a process asks for it and loaded once per device.
    pub fn module(&self, file: &str, defines: &[(&str, i64)]) -> Result<Arc<CudaModule>, GpuError> {
        let key = module_key(file, defines);
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(&key) {
            return Ok(m.clone());
        }
        let ptx = {
            let mut cache = ptx_cache().lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&(key.clone(), self.arch)) {
                Some(p) => p.clone(),
                None => {
                    let p = self.compile(file, defines, &key)?;
                    cache.insert((key.clone(), self.arch), p.clone());
                    p
                }
            }
        };
        let module = self.ctx.load_module(ptx)?;
        modules.insert(key, module.clone());
        Ok(module)
    }

    fn compile(&self, file: &str, defines: &[(&str, i64)], key: &str) -> Result<Ptx, GpuError> {
        let dir = std::env::var_os(PTX_CACHE_ENV).map(PathBuf::from);
        compile_module_cached(file, defines, self.arch, key, dir.as_deref())
    }

    // ANCHOR: timing_event
    /// Record an event that can time (`CU_EVENT_DEFAULT`; cudarc's default event cannot).
    pub fn timing_event(&self) -> Result<cudarc::driver::CudaEvent, GpuError> {
        Ok(self
            .stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?)
    }

    /// Time `runs` calls of `launch(i)` (for `i` from `warmup` on) after `warmup` untimed ones, each
    /// between its own pair of events; the times in ms, in launch order.
    pub fn time_each(
        &self,
        warmup: usize,
        runs: usize,
        mut launch: impl FnMut(usize) -> Result<(), GpuError>,
    ) -> Result<Vec<f64>, GpuError> {
        for i in 0..warmup {
            launch(i)?;
        }
        let mut events = Vec::with_capacity(runs);
        for i in 0..runs {
            let start = self.timing_event()?;
            launch(warmup + i)?;
            let end = self.timing_event()?;
            events.push((start, end));
        }
        self.synchronize()?;
        events
            .iter()
            .map(|(a, b)| Ok(a.elapsed_ms(b)? as f64))
            .collect()
    }
    // ANCHOR_END: timing_event

    // ANCHOR: time_queued
    /// Keep the stream busy for `us` microseconds (`hold` in kernels/ceilings.cu: one thread watching
    /// the global timer), so that what the host issues next queues up behind it.
    pub fn hold(&self, us: u64) -> Result<(), GpuError> {
        let f = self.module("ceilings.cu", &[])?.load_function("hold")?;
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        let ns = us.saturating_mul(1000);
        // SAFETY: the kernel takes one u64 and touches no memory.
        unsafe { self.stream.launch_builder(&f).arg(&ns).launch(cfg) }?;
        Ok(())
    }

    /// [`Device::time_each`]'s runs with the host taken out. After `warmup` untimed calls of
    /// `launch(i)` (at least one: their pace sets the hold's length), the stream is held ([`Device::hold`]) for longer than the host takes to issue every
    /// run, then `runs` calls are issued, each between its own pair of events: they run back to back
    /// once the hold ends, so each pair times the GPU's work alone. Also measured: the host's time to
    /// issue one call (`runs` more, behind another hold, with no events), and the stream's time outside
    /// the timed pairs between the hold's end and the last run's end ([`Queued::idle_ms`]).
    pub fn time_each_queued(
        &self,
        warmup: usize,
        runs: usize,
        mut launch: impl FnMut(usize) -> Result<(), GpuError>,
    ) -> Result<Queued, GpuError> {
        let warmup = warmup.max(1);
        let t = std::time::Instant::now();
        for i in 0..warmup {
            launch(i)?;
        }
        let per_call = t.elapsed().as_secs_f64() / warmup as f64;
        self.synchronize()?;
        // Four times the warm-ups' pace with two events a run, and 2 ms to spare, at most a second.
        let hold_us = ((4.0 * per_call * runs as f64) * 1e6 + 2000.0).min(1e6) as u64;
        self.hold(hold_us)?;
        let t = std::time::Instant::now();
        for i in 0..runs {
            launch(warmup + i)?;
        }
        let host_us = t.elapsed().as_secs_f64() * 1e6 / runs.max(1) as f64;
        self.synchronize()?;
        self.hold(hold_us)?;
        let first = self.timing_event()?;
        let mut events = Vec::with_capacity(runs);
        for i in 0..runs {
            let start = self.timing_event()?;
            launch(warmup + runs + i)?;
            let end = self.timing_event()?;
            events.push((start, end));
        }
        self.synchronize()?;
        let ms = events
            .iter()
            .map(|(a, b)| Ok(a.elapsed_ms(b)? as f64))
            .collect::<Result<Vec<f64>, GpuError>>()?;
        let span = match events.last() {
            Some((_, end)) => first.elapsed_ms(end)? as f64,
            None => 0.0,
        };
        Ok(Queued {
            idle_ms: (span - ms.iter().sum::<f64>()).max(0.0),
            ms,
            host_us,
        })
    }
    // ANCHOR_END: time_queued

    // ANCHOR: capture
    /// Record what `launch` issues on the stream as a CUDA graph, instantiated and uploaded: replaying
    /// it ([`CudaGraph::launch`](cudarc::driver::CudaGraph::launch)) runs the same kernels with the same
    /// arguments for one host call. `launch` must not allocate or copy from the host (run it once
    /// before, so that its buffers exist). The capture ends whether `launch` succeeds or not.
    pub fn capture(
        &self,
        launch: impl FnOnce() -> Result<(), GpuError>,
    ) -> Result<cudarc::driver::CudaGraph, GpuError> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let issued = launch();
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        issued?;
        let graph = graph?.ok_or(GpuError::NotSupported {
            what: "a graph of this launch (the stream capture recorded none)",
            arch: self.arch,
        })?;
        graph.upload()?;
        Ok(graph)
    }
    // ANCHOR_END: capture

    /// Wait for everything launched so far.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        Ok(self.stream.synchronize()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_logs_parse_into_one_report_a_kernel() {
        let log = "ptxas info    : Compiling entry function 'a' for 'sm_90a'\n\
            ptxas info    : Function properties for a\n\
            ptxas         .     8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n\
            ptxas info    : Used 168 registers, used 1 barriers, 8448 bytes smem\n\
            ptxas warning : (C7520) wgmma serialized\n\
            ptxas info    : Function properties for b\n\
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 32 registers, used 0 barriers\n";
        let (k, w) = parse_ptxas(log);
        assert_eq!(
            k,
            vec![
                KernelReport {
                    name: "a".into(),
                    registers: 168,
                    spill_stores: 12,
                    spill_loads: 16,
                    smem: 8448,
                    code: 0,
                },
                KernelReport {
                    name: "b".into(),
                    registers: 32,
                    ..Default::default()
                },
            ]
        );
        assert_eq!(
            w,
            vec!["ptxas warning : (C7520) wgmma serialized".to_string()]
        );
    }

    #[test]
    fn text_sections_are_read_from_an_elf64_header() {
        // A minimal ELF64: header, a name table, three section headers (null, names, .text.k).
        let names = b"\0.shstrtab\0.text.k\0";
        let shoff = 64 + names.len();
        let mut elf = vec![0u8; shoff + 3 * 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3E..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf[64..64 + names.len()].copy_from_slice(names);
        let sh = |i: usize| shoff + 64 * i;
        elf[sh(1)..sh(1) + 4].copy_from_slice(&1u32.to_le_bytes()); // ".shstrtab"
        elf[sh(1) + 0x18..sh(1) + 0x20].copy_from_slice(&64u64.to_le_bytes());
        elf[sh(2)..sh(2) + 4].copy_from_slice(&11u32.to_le_bytes()); // ".text.k"
        elf[sh(2) + 0x20..sh(2) + 0x28].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(text_sections(&elf), vec![(".text.k".to_string(), 4096)]);
        assert!(text_sections(b"not an elf").is_empty());
    }
}
