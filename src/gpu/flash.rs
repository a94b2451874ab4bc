//! FlashAttention forward on the GPU: the launch wrappers of `kernels/flash_fwd.cu`'s numbered versions.
//!
//! Shapes: `q, o: (B, Hq, Nq, D)`, `k, v: (B, Hkv, Nk, D)`, `lse: (B, Hq, Nq)` (f32, natural log of each
//! row's softmax denominator over the scaled scores; `-inf` for a row that sees no key). Storage is
//! `f16` or `bf16`, arithmetic f32. Every wrapper validates the shape and the buffers before it launches.
//!
//! Versions (the changelog with measured numbers is at the top of `kernels/flash_fwd.cu`):
//! * `v1_naive`: three kernels, `S` materialised in global memory.
//! * `v1b_naive_mma`: the same three passes with v4's tensor-core fragments (`mma.sync`): naive's bytes
//!   at the Flash kernels' instruction quality, the roofline's naive dot.
//! * `v2_online`: one thread per query row, online softmax, K and V read once per row.
//! * `v3_tiled`: K/V tiles in shared memory shared by 64 rows, still on CUDA cores.
//! * `v4_tensor_cores`: `mma.sync` m16n8k16 with `ldmatrix`, P kept in registers.
//! * `v5_cp_async`: v4 plus `cp.async` double buffering of K/V tiles.
//! * `v6_wgmma`: Hopper's warpgroup MMA (`wgmma.mma_async`, operands from shared memory through matrix
//!   descriptors), two warpgroups of 64 query rows sharing 128-key tiles (sm_90a only).
//! * `v7_overlap`: v6 with each tile's softmax computed while the tensor cores run the previous tile's
//!   `P V` (FlashAttention-3's intra-warpgroup overlap; sm_90a only).
//! * `v8_tma`: v7's two consumer warpgroups fed by a producer warpgroup through the tensor memory
//!   accelerator, stages handed over on mbarriers, registers moved to the consumers with `setmaxnreg`
//!   (FlashAttention-3's warp specialisation; sm_90a only, D in {64, 128}).

use super::tma::{kv_map, TensorMap};
use super::{Device, GpuError};
use crate::minimodel::numeric::Element;
use crate::minimodel::shape::{AttnShape, Mask};
use cudarc::driver::{
    sys, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use half::{bf16, f16};

/// The numbered kernel versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// S materialised: scores, softmax, P V (three launches).
    V1Naive,
    /// v1's three launches with the products on the tensor cores (`mma.sync`).
    V1bNaiveMma,
    /// Online softmax, one thread per query row.
    V2Online,
    /// Tiled through shared memory, CUDA cores.
    V3Tiled,
    /// Tensor cores (`mma.sync` + `ldmatrix`), synchronous tile loads.
    V4TensorCores,
    /// Tensor cores with `cp.async` double-buffered K/V tiles.
    V5CpAsync,
    /// Hopper's warpgroup MMA (`wgmma`), 128-row blocks of two warpgroups, 128-key tiles.
    V6Wgmma,
    /// v6 with each tile's softmax overlapped with the previous tile's `P V` on the tensor cores.
    V7Overlap,
    /// v7's consumers fed by a TMA producer warpgroup (warp specialisation).
    V8Tma,
}

impl Version {
    /// Every version, slowest first.
    pub const ALL: [Version; 9] = [
        Version::V1Naive,
        Version::V1bNaiveMma,
        Version::V2Online,
        Version::V3Tiled,
        Version::V4TensorCores,
        Version::V5CpAsync,
        Version::V6Wgmma,
        Version::V7Overlap,
        Version::V8Tma,
    ];

    /// The fastest version this crate has.
    pub const FASTEST: Version = Version::V8Tma;

    /// `v1_naive`, ...
    pub const fn name(self) -> &'static str {
        match self {
            Version::V1Naive => "v1_naive",
            Version::V1bNaiveMma => "v1b_naive_mma",
            Version::V2Online => "v2_online",
            Version::V3Tiled => "v3_tiled",
            Version::V4TensorCores => "v4_tensor_cores",
            Version::V5CpAsync => "v5_cp_async",
            Version::V6Wgmma => "v6_wgmma",
            Version::V7Overlap => "v7_overlap",
            Version::V8Tma => "v8_tma",
        }
    }

    /// The number in the progression (`FA_VERSION` of the kernel file; v1b shares v1's module).
    pub const fn number(self) -> i64 {
        match self {
            Version::V1Naive | Version::V1bNaiveMma => 1,
            Version::V2Online => 2,
            Version::V3Tiled => 3,
            Version::V4TensorCores => 4,
            Version::V5CpAsync => 5,
            Version::V6Wgmma => 6,
            Version::V7Overlap => 7,
            Version::V8Tma => 8,
        }
    }

    /// The head sizes the version is compiled for (v1 takes any `D <= 1024`).
    pub const fn head_dims(self) -> &'static [usize] {
        match self {
            Version::V1Naive => &[],
            // A tensor map's box is 64 columns of the 128-byte swizzle.
            Version::V8Tma => &[64, 128],
            _ => &[32, 64, 128],
        }
    }

    // ANCHOR: fastest
    /// The fastest version that takes head size `d`: v8 at D = 64 and 128, v7 at the other sizes the
    /// tensor-core versions are compiled for (MiniGPT's D = 32 among them), v1 (any D) otherwise.
    pub fn fastest_for(d: usize) -> Version {
        [Version::FASTEST, Version::V7Overlap]
            .into_iter()
            .find(|v| v.head_dims().contains(&d))
            .unwrap_or(Version::V1Naive)
    }
    // ANCHOR_END: fastest

    /// Parse `v1`, `v1_naive`, `1` (v1, not v1b), `v1b`, ...
    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| {
            v.name() == s || v.name().split('_').next() == Some(s) || v.number().to_string() == s
        })
    }
}

/// The kernels' parameter block (mirrors `struct Params` in `kernels/flash_fwd.cu`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Batch.
    pub b: i32,
    /// Query heads.
    pub hq: i32,
    /// Key/value heads.
    pub hkv: i32,
    /// Query rows.
    pub nq: i32,
    /// Key rows.
    pub nk: i32,
    /// Head size.
    pub d: i32,
    /// 1 for causal.
    pub causal: i32,
    /// Window size `W`, 0 for none.
    pub window: i32,
    /// `1 / sqrt(D)`.
    pub scale: f32,
    /// `scale * log2(e)`.
    pub scale_log2: f32,
}

// SAFETY: `Params` is `repr(C)`, plain data, and matches the kernels' struct field for field.
unsafe impl DeviceRepr for Params {}

/// A storage type the kernels take: `f16` or `bf16`.
pub trait GpuElement: Element + DeviceRepr + ValidAsZeroBits {
    /// `FA_BF16` for the module.
    const BF16: bool;
    /// The NaN used to poison outputs.
    fn nan() -> Self;
}
impl GpuElement for f16 {
    const BF16: bool = false;
    fn nan() -> Self {
        f16::NAN
    }
}
impl GpuElement for bf16 {
    const BF16: bool = true;
    fn nan() -> Self {
        bf16::NAN
    }
}

/// Device buffers of one attention call, plus v1's `S` scratch (allocated on first use).
pub struct Buffers<T: GpuElement> {
    /// The shape they hold.
    pub shape: AttnShape,
    /// `(B, Hq, Nq, D)`.
    pub q: CudaSlice<T>,
    /// `(B, Hkv, Nk, D)`.
    pub k: CudaSlice<T>,
    /// `(B, Hkv, Nk, D)`.
    pub v: CudaSlice<T>,
    /// `(B, Hq, Nq, D)`.
    pub o: CudaSlice<T>,
    /// `(B, Hq, Nq)`.
    pub lse: CudaSlice<f32>,
    scratch: Option<CudaSlice<f32>>,
    /// v8's tensor maps over q, k, v and o, with the device addresses and the shape they were made for.
    maps: Option<(MapsKey, [TensorMap; 4])>,
    /// v8's work counters (next item, blocks done), zero between launches.
    sched: Option<CudaSlice<u32>>,
}

impl<T: GpuElement> Buffers<T> {
    /// Upload `q, k, v` (checked against `shape`) and allocate `o` and `lse`, poisoned with NaN.
    pub fn upload(
        dev: &Device,
        shape: AttnShape,
        q: &[T],
        k: &[T],
        v: &[T],
    ) -> Result<Self, GpuError> {
        shape.check_inputs(q.len(), k.len(), v.len())?;
        let st = dev.stream();
        let mut b = Buffers {
            shape,
            q: st.clone_htod(q)?,
            k: st.clone_htod(k)?,
            v: st.clone_htod(v)?,
            o: st.alloc_zeros::<T>(shape.q_len())?,
            lse: st.alloc_zeros::<f32>(shape.b * shape.hq * shape.nq)?,
            scratch: None,
            maps: None,
            sched: None,
        };
        b.poison(dev)?;
        Ok(b)
    }

    /// Fill `o` and `lse` with NaN, so that an element a kernel leaves unwritten fails the check.
    pub fn poison(&mut self, dev: &Device) -> Result<(), GpuError> {
        super::poison_outputs(dev, &mut self.o, &mut self.lse)
    }

    /// Copy `o` and `lse` back.
    pub fn download(&self, dev: &Device) -> Result<(Vec<T>, Vec<f32>), GpuError> {
        super::download_outputs(dev, &self.o, &self.lse)
    }

    /// Bytes on the device (inputs and outputs, not the scratch).
    pub fn bytes(&self) -> usize {
        (self.q.len() + self.k.len() + self.v.len() + self.o.len()) * std::mem::size_of::<T>()
            + self.lse.len() * 4
    }
}

/// The warps per block v5 uses for head size `d` and `nq` query rows. 8 warps (128 query rows sharing
/// each K/V tile) won at D = 128, N >= 2048 before P's rounding was compensated (258 against 242
/// TFLOP/s on an H100); since, 4 warps win everywhere on the grid (D = 128, N = 16384: 233 against 212;
/// D = 64: 213 against 171), so the other size stays only in the table (`ours/v5_cp_async_w8`).
pub fn v5_warps(d: usize, nq: usize) -> usize {
    let _ = (d, nq);
    4
}

/// The warps per block v7 uses: 4 (one warpgroup of 64 query rows; two blocks share an SM, so one
/// block's start hides under the other's loop) for `d <= 64`, 8 (two warpgroups, 128 rows sharing each
/// K/V tile, one block an SM) above, where two one-warpgroup blocks do not fit an SM's shared memory.
pub fn v7_warps(d: usize, nq: usize) -> usize {
    let _ = nq;
    if d <= 64 {
        4
    } else {
        8
    }
}

/// The K/V stages v8 compiles for head size `d` (`flash_v8_<d>_s<stages>`), the default first: at
/// D = 128 two stages (Q and two of K and V: 160 KB of shared memory) or three (224 KB); at D = 64 four
/// (144 KB) or two.
pub fn v8_stage_choices(d: usize) -> &'static [usize] {
    if d > 64 {
        &[2, 3]
    } else {
        &[4, 2]
    }
}

/// The K/V stages v8 runs with when asked for `stages` (its knob): those, where compiled for head size
/// `d`, else the default (the first of [`v8_stage_choices`]).
pub fn v8_stages(d: usize, stages: usize) -> usize {
    let choices = v8_stage_choices(d);
    if choices.contains(&stages) {
        stages
    } else {
        choices[0]
    }
}

/// v8's consumer warpgroups (64 query rows each) for head size `d`, `nq` query rows and the mask:
/// three at D = 64 (192 rows share each K/V tile, FlashAttention-3's shape there), except causal up to
/// N = 1024, where a 192-row tile leaves too few and too unequal items (H200, one call, against two:
/// +4..+18% unmasked from N = 512 and causal from N = 4096, equal causal at 2048, 15-17% slower
/// causal at 512-1024). Since the kernel's changelog entry v removed the three-consumer kernel's
/// spill, three are also 5% faster causal at N = 2048 (entry y; 12% slower at 512 and 1024 still);
/// two above D = 64.
pub fn v8_consumers(d: usize, nq: usize, causal: bool) -> usize {
    if d <= 64 && !(causal && nq <= 1024) {
        3
    } else {
        2
    }
}

/// v8's Q tiles for head size `d`, `stages` K/V stages and `consumers` warpgroups: two where they fit
/// beside the stages in an SM's 227 KB, so that the next work item's Q loads under this one and its first
/// S is computed under this one's last `P V` (`ws_next_item` in the kernel, which derives the same
/// number); one otherwise (D = 128 with three stages).
pub fn v8_q_buffers(d: usize, stages: usize, consumers: usize) -> usize {
    if (2 * 64 * consumers + 2 * stages * 128) * d * 2 + 4096 <= 232_448 {
        2
    } else {
        1
    }
}

/// v8's dynamic shared memory for head size `d`, `stages` K/V stages and `consumers` warpgroups: the Q
/// tiles ([`v8_q_buffers`], 64 rows a consumer warpgroup) and the stages of K and V (128 rows each,
/// 16-bit), 1 KB to align the first tile on 1024 bytes, the barriers (full and empty for each Q tile and
/// for each stage of K and of V), the two items in hand (four words each: key tiles, head, first key
/// tile, query tile) and one word a consumer thread.
pub fn v8_smem_bytes(d: usize, stages: usize, consumers: usize) -> usize {
    let qb = v8_q_buffers(d, stages, consumers);
    (64 * consumers * qb + 2 * stages * 128) * d * 2
        + 1024
        + 8 * (2 * qb + 4 * stages)
        + 32
        + 128 * consumers * 4
}

/// [`v8_smem_bytes`] for the `_o` kernels: the O tile (64 rows a consumer warpgroup) besides.
pub fn v8_smem_bytes_o(d: usize, stages: usize, consumers: usize) -> usize {
    v8_smem_bytes(d, stages, consumers) + 64 * consumers * d * 2
}

/// Whether v8 runs its `_o` kernel, whose block also holds an O tile (64 rows a consumer warpgroup)
/// that the consumers fill (`stmatrix`) and the copy engine stores (`OSTAGE` in the kernel): at
/// D = 128 with two stages where a row sees at most 4096 keys on average (N / 2 under a causal mask),
/// where it was measured faster (H200, one call each: +9% at N = 512, +2% at 2048, +4% at 4096 and
/// causal 4096, +3% at causal 8192; unmasked 8192 1-3% slower; changelog entries o and p); at D = 64
/// in the two-consumer kernel (causal, N up to 1024: +1.6% / +1.9%) and where a row sees at most 512
/// keys (+1.0% at N = 512; up to 4% slower from 2048), since its stores became `stmatrix` (entry ah).
pub fn v8_o_tile(d: usize, nq: usize, causal: bool, stages: usize, consumers: usize) -> bool {
    let keys = if causal { nq / 2 } else { nq };
    let short = match d {
        128 => stages == 2 && keys <= 4096,
        64 => consumers == 2 || keys <= 512,
        _ => false,
    };
    short && v8_smem_bytes_o(d, stages, consumers) <= 232_448
}

/// The v8 kernel a call runs ([`v8_kernel`], or [`v8_named`]): its name, consumer warpgroups, whether
/// it has the O tile, and its K/V stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V8Kernel {
    /// `flash_v8_<d>_s<stages>_c<consumers>`, then `_o` with the O tile, then the mask class.
    pub name: String,
    /// Consumer warpgroups ([`v8_consumers`]).
    pub consumers: usize,
    /// Whether O leaves through a shared-memory tile ([`v8_o_tile`], and below).
    pub o_tile: bool,
    /// K/V stages.
    pub stages: usize,
}

/// Every v8 kernel the kernel file compiles (its `WS(...)` lines: head size, stages, consumers, O tile,
/// mask class), by name.
pub fn v8_compiled() -> Vec<String> {
    super::kernel_source("flash_fwd.cu")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("WS(")?.strip_suffix(')').map(str::to_string))
        .filter_map(|args| {
            let a: Vec<&str> = args.split(',').map(str::trim).collect();
            (a.len() == 6).then(|| format!("flash_v8_{}_s{}_c{}{}", a[0], a[1], a[2], a[5]))
        })
        .collect()
}

/// A v8 kernel named by the caller instead of the host's rules (`gpu-probe time v8@NAME`: two rules'
/// choices compared in one process, one build), refused with a typed error where it is not compiled or
/// cannot compute this call correctly: another head size, a `_u` kernel for a mask or a partial key
/// tile, a `_c` kernel for anything but a causal mask without a window.
pub fn v8_named(name: &str, s: &AttnShape, mask: Mask) -> Result<V8Kernel, GpuError> {
    let refuse = |why: String| GpuError::KernelChoice {
        name: name.to_string(),
        why,
    };
    if !v8_compiled().iter().any(|k| k == name) {
        return Err(refuse("no such kernel in kernels/flash_fwd.cu".into()));
    }
    let rest = name.strip_prefix("flash_v8_").unwrap_or(name);
    let mut parts = rest.split('_');
    let mut field =
        |prefix: &str| -> Option<usize> { parts.next()?.strip_prefix(prefix)?.parse().ok() };
    let (Some(d), Some(stages), Some(consumers)) = (field(""), field("s"), field("c")) else {
        return Err(refuse(
            "not a flash_v8_<d>_s<stages>_c<consumers> name".into(),
        ));
    };
    let suffixes: Vec<&str> = parts.collect();
    let o_tile = suffixes.contains(&"o");
    if d != s.d {
        return Err(refuse(format!(
            "compiled for D = {d}, the call has D = {}",
            s.d
        )));
    }
    if suffixes.contains(&"u")
        && (mask.causal || mask.window.is_some() || s.nk == 0 || !s.nk.is_multiple_of(128))
    {
        return Err(refuse(
            "a `_u` kernel has no masked tiles' code: no mask and Nk a multiple of 128 only".into(),
        ));
    }
    if suffixes.contains(&"c") && (!mask.causal || mask.window.is_some()) {
        return Err(refuse(
            "a `_c` kernel has only the causal mask's code: a causal mask without a window only"
                .into(),
        ));
    }
    Ok(V8Kernel {
        name: name.to_string(),
        consumers,
        o_tile,
        stages,
    })
}

/// The v8 kernel a call runs: `flash_v8_<d>_s<stages>_c<consumers>`, `_o` where [`v8_o_tile`] says
/// (and, at D = 64, for whole unmasked rows up to N = 2048), then the mask class it is compiled for.
/// The default configurations (the first of [`v8_stage_choices`], with the consumers and O tile the
/// rules pick) are compiled again for each class of mask they are picked for: `_u` (no mask and `nk` a
/// multiple of the 128-key tile, so no tile is masked) and `_c` (a causal mask without a window); each
/// leaves out the masked tiles' code it can never run (`MASK` in the kernel). Every other call (a
/// window, a partial last key tile, other stages) takes the general kernel. The instructions a call
/// executes are the same; the machine code is a sixth to nearly a half smaller (Table 02.8), and with
/// it what the instruction cache must hold (the kernel's changelog, entries t and an: 0.4-2.9% faster
/// on the H200). D = 64's plain `_u` kernel was level at N = 1024 and lost a fraction of a percent
/// from 2048, so it is not compiled; its `_o_u` kernel, about half the general `_o` kernel's code,
/// runs up to N = 2048 (entry ao: +1.6% at 1024, +0.5% at 2048 against the general kernel without the
/// tile), where the general `_o` stops at 512.
pub fn v8_kernel(d: usize, nq: usize, nk: usize, mask: Mask, stages: usize) -> V8Kernel {
    let consumers = v8_consumers(d, nq, mask.causal);
    let default = stages == v8_stage_choices(d)[0] && mask.window.is_none();
    let whole = default && !mask.causal && nk > 0 && nk.is_multiple_of(128);
    let o_tile =
        v8_o_tile(d, nq, mask.causal, stages, consumers) || (whole && d == 64 && nq <= 2048);
    let class = match (default, mask.causal, d, o_tile) {
        (false, _, _, _) => "",
        (true, true, 128 | 64, _) => "_c",
        (true, false, 128, _) | (true, false, 64, true) if whole => "_u",
        _ => "",
    };
    V8Kernel {
        name: format!(
            "flash_v8_{d}_s{stages}_c{consumers}{}{class}",
            if o_tile { "_o" } else { "" }
        ),
        consumers,
        o_tile,
        stages,
    }
}

/// The warps per block `version` runs with by default; for v8, whose block is always 12 warps (two
/// consumer warpgroups and a producer), the knob is its K/V stages.
pub fn default_warps(version: Version, d: usize, nq: usize) -> usize {
    match version {
        Version::V5CpAsync => v5_warps(d, nq),
        Version::V6Wgmma => 8,
        Version::V7Overlap => v7_warps(d, nq),
        Version::V8Tma => v8_stage_choices(d)[0],
        _ => 4,
    }
}

fn check_fits(what: &'static str, value: usize, limit: usize) -> Result<i32, GpuError> {
    if value > limit {
        return Err(GpuError::TooLarge { what, value, limit });
    }
    Ok(value as i32)
}

/// The parameter block for `s` and `mask`, checked against the kernels' 32-bit limits.
pub fn params(s: &AttnShape, mask: Mask) -> Result<Params, GpuError> {
    let max = i32::MAX as usize;
    let scale = 1.0 / (s.d as f32).sqrt();
    Ok(Params {
        b: check_fits("B", s.b, max)?,
        hq: check_fits("Hq", s.hq, max)?,
        hkv: check_fits("Hkv", s.hkv, max)?,
        nq: check_fits("Nq", s.nq, max)?,
        nk: check_fits("Nk", s.nk, max)?,
        d: check_fits("D", s.d, 1024)?,
        causal: mask.causal as i32,
        // A window wider than every position is no window; clamping keeps it in i32.
        window: mask.window.map_or(0, |w| w.get().min(s.nq + s.nk + 1)) as i32,
        scale,
        scale_log2: scale * std::f32::consts::LOG2_E,
    })
}

fn check_buffers<T: GpuElement>(b: &Buffers<T>) -> Result<(), GpuError> {
    let s = &b.shape;
    // The fields are public: the shape is checked again as `AttnShape::new` checks it (the kernels
    // divide by Hq / Hkv and index kv heads by it), then every buffer against it.
    AttnShape::new(s.b, s.hq, s.hkv, s.nq, s.nk, s.d)?;
    for (tensor, expected, got) in [
        ("q", s.q_len(), b.q.len()),
        ("k", s.kv_len(), b.k.len()),
        ("v", s.kv_len(), b.v.len()),
        ("o", s.q_len(), b.o.len()),
        ("lse", s.b * s.hq * s.nq, b.lse.len()),
    ] {
        if expected != got {
            return Err(GpuError::Length {
                tensor,
                expected,
                got,
            });
        }
    }
    Ok(())
}

/// Run `version` on `bufs` with `mask`, writing `bufs.o` and `bufs.lse` (asynchronously: call
/// [`Device::synchronize`] or download to wait), with the version's [`default_warps`].
pub fn forward<T: GpuElement>(
    dev: &Device,
    version: Version,
    bufs: &mut Buffers<T>,
    mask: Mask,
) -> Result<(), GpuError> {
    let warps = default_warps(version, bufs.shape.d, bufs.shape.nq);
    forward_with(dev, version, bufs, mask, warps)
}

/// Run the fastest version for the buffers' head size ([`Version::fastest_for`]) with its default
/// knob; returns the version that ran.
pub fn forward_fastest<T: GpuElement>(
    dev: &Device,
    bufs: &mut Buffers<T>,
    mask: Mask,
) -> Result<Version, GpuError> {
    let version = Version::fastest_for(bufs.shape.d);
    forward(dev, version, bufs, mask)?;
    Ok(version)
}

/// [`forward_with`] where `warps` is given, [`forward`] (the version's default) where it is not.
pub fn forward_knob<T: GpuElement>(
    dev: &Device,
    version: Version,
    bufs: &mut Buffers<T>,
    mask: Mask,
    warps: Option<usize>,
) -> Result<(), GpuError> {
    match warps {
        Some(w) => forward_with(dev, version, bufs, mask, w),
        None => forward(dev, version, bufs, mask),
    }
}

/// v8 through the kernel `name` instead of the one [`v8_kernel`]'s rules pick ([`v8_named`] says which
/// names this call may take), with every check [`forward_with`] makes: how `gpu-probe time v8@NAME`
/// compares two rules' choices in one process.
pub fn forward_v8_named<T: GpuElement>(
    dev: &Device,
    bufs: &mut Buffers<T>,
    mask: Mask,
    name: &str,
) -> Result<(), GpuError> {
    let pick = v8_named(name, &bufs.shape, mask)?;
    check_buffers(bufs)?;
    let p = params(&bufs.shape, mask)?;
    check_fits("B * Hq", bufs.shape.b * bufs.shape.hq, 65_535)?;
    let module = dev.module("flash_fwd.cu", &forward_defines(Version::V8Tma, T::BF16))?;
    launch_v8(dev, &module, bufs, &p, &pick, None)
}

/// The defines of `version`'s module (`flash_fwd.cu`), in bf16 or f16.
fn forward_defines(version: Version, bf16: bool) -> Vec<(&'static str, i64)> {
    vec![("FA_VERSION", version.number()), ("FA_BF16", bf16 as i64)]
}

/// The defines of v8's trace build.
fn trace_defines(bf16: bool) -> Vec<(&'static str, i64)> {
    vec![
        ("FA_VERSION", 8),
        ("FA_BF16", bf16 as i64),
        ("FA_TRACE", 1),
        ("FA_TRACE_BLOCKS", TRACE_BLOCKS as i64),
        ("FA_TRACE_EVENTS", TRACE_EVENTS as i64),
    ]
}

/// Every flash module the crate builds: each version in f16 and bf16, and v8's trace build in both.
pub fn module_configs() -> Vec<super::ModuleConfig> {
    Version::ALL
        .into_iter()
        .flat_map(|v| [false, true].map(|bf16| forward_defines(v, bf16)))
        .chain([false, true].map(trace_defines))
        .map(|d| ("flash_fwd.cu", d))
        .collect()
}

// ANCHOR: forward_checks
/// [`forward`] with the warps per block of the tensor-core versions chosen: 4 or 8 for v5 (at D >= 64)
/// and v7; v4 always runs 4 and v6 always 8 (other values are taken as those), the CUDA-core versions
/// ignore it.
/// For v8 the knob is the number of K/V stages, one of [`v8_stage_choices`] (others: the default).
pub fn forward_with<T: GpuElement>(
    dev: &Device,
    version: Version,
    bufs: &mut Buffers<T>,
    mask: Mask,
    warps: usize,
) -> Result<(), GpuError> {
    check_buffers(bufs)?;
    let s = bufs.shape;
    let p = params(&s, mask)?;
    let dims = version.head_dims();
    if !dims.is_empty() && !dims.contains(&s.d) {
        return Err(GpuError::HeadDim {
            version: version.name(),
            d: s.d,
            supported: dims,
        });
    }
    let bh = check_fits("B * Hq", s.b * s.hq, 65_535)? as u32; // grid y (z for v1)
    let module = dev.module("flash_fwd.cu", &forward_defines(version, T::BF16))?;
    // ANCHOR_END: forward_checks
    let st = dev.stream();
    let nq = s.nq as u32;
    match version {
        // v1 and v1b: the same three launches (scores into S, softmax in place, P V) with their own
        // kernels and grids; v1b pads S's rows to a multiple of 4 floats (its 16-byte accesses).
        Version::V1Naive | Version::V1bNaiveMma => {
            let mma = version == Version::V1bNaiveMma;
            let lds = if mma { s.nk.div_ceil(4) * 4 } else { s.nk };
            let nk = s.nk as u32;
            let (scores, softmax, pv, scores_grid, pv_grid, pv_block) = if mma {
                check_fits("Nq / 64 (v1b grid)", s.nq.div_ceil(64), 65_535)?;
                (
                    format!("flash_v1b_scores_{}", s.d),
                    "flash_v1b_softmax",
                    format!("flash_v1b_pv_{}", s.d),
                    (nk.div_ceil(64), nq.div_ceil(64), bh),
                    (nq.div_ceil(64), bh, 1),
                    128,
                )
            } else {
                check_fits("Nq (v1 grid)", s.nq, 65_535)?;
                (
                    "flash_v1_scores".to_string(),
                    "flash_v1_softmax",
                    "flash_v1_pv".to_string(),
                    (nk.div_ceil(128), nq, bh),
                    (nq, bh, 1),
                    s.d as u32, // one thread per output column
                )
            };
            let need = s.b * s.hq * s.nq * lds;
            if bufs.scratch.as_ref().is_none_or(|x| x.len() < need) {
                bufs.scratch = None; // free the old one first
                                     // SAFETY: every element of S the later kernels read is written by the scores kernel.
                bufs.scratch = Some(unsafe { st.alloc::<f32>(need) }?);
            }
            let scratch = bufs.scratch.as_mut().expect("allocated above");
            let f = module.load_function(&scores)?;
            let cfg = LaunchConfig {
                grid_dim: scores_grid,
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: argument types and order match the kernel; sizes were validated above.
            unsafe {
                st.launch_builder(&f)
                    .arg(&bufs.q)
                    .arg(&bufs.k)
                    .arg(&mut *scratch)
                    .arg(&p)
                    .launch(cfg)
            }?;
            let rows = (s.b * s.hq * s.nq) as u32;
            let f = module.load_function(softmax)?;
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(4), 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: as above.
            unsafe {
                st.launch_builder(&f)
                    .arg(&mut *scratch)
                    .arg(&mut bufs.lse)
                    .arg(&p)
                    .launch(cfg)
            }?;
            let f = module.load_function(&pv)?;
            let cfg = LaunchConfig {
                grid_dim: pv_grid,
                block_dim: (pv_block, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: as above.
            unsafe {
                st.launch_builder(&f)
                    .arg(&*scratch)
                    .arg(&bufs.v)
                    .arg(&mut bufs.o)
                    .arg(&p)
                    .launch(cfg)
            }?;
        }
        Version::V2Online | Version::V3Tiled => {
            let (name, rows) = if version == Version::V2Online {
                (format!("flash_v2_{}", s.d), 128u32)
            } else {
                (format!("flash_v3_{}", s.d), 64u32)
            };
            let f = module.load_function(&name)?;
            let cfg = LaunchConfig {
                grid_dim: (nq.div_ceil(rows), bh, 1),
                block_dim: (rows, 1, 1),
                shared_mem_bytes: 0,
            };
            launch_qkv(dev, &f, cfg, bufs, &p)?;
        }
        // ANCHOR: tc_launch
        Version::V4TensorCores | Version::V5CpAsync => {
            let asynchronous = version == Version::V5CpAsync;
            let warps = if asynchronous && s.d >= 64 && warps == 8 {
                8
            } else {
                4
            };
            let name = format!("flash_v{}_{}_w{}", version.number(), s.d, warps);
            let f = module.load_function(&name)?;
            let br = 16 * warps;
            let stages = if asynchronous { 2 } else { 1 };
            let smem = ((br + 2 * stages * 64) * (s.d + 8) * 2) as u32;
            f.set_attribute(MAX_DYNAMIC_SMEM, smem as i32)?;
            let cfg = LaunchConfig {
                grid_dim: (nq.div_ceil(br as u32), bh, 1),
                block_dim: (32 * warps as u32, 1, 1),
                shared_mem_bytes: smem,
            };
            launch_qkv(dev, &f, cfg, bufs, &p)?;
            // ANCHOR_END: tc_launch
        }
        // ANCHOR: wg_launch
        Version::V6Wgmma | Version::V7Overlap => {
            if dev.arch() != "sm_90a" {
                return Err(GpuError::NotSupported {
                    what: "v6_wgmma and v7_overlap need Hopper's warpgroup MMA (sm_90a)",
                    arch: dev.arch(),
                });
            }
            let one_warpgroup = version == Version::V7Overlap && warps == 4;
            let warps = if one_warpgroup { 4 } else { 8 };
            let name = format!("flash_v{}_{}_w{warps}", version.number(), s.d);
            let f = module.load_function(&name)?;
            let (br, bc, threads) = (16 * warps, 128, 32 * warps);
            // Q, then two stages of K and V, and 1 KB to align the first tile on 1024 bytes;
            // v7 also has one word a thread after the tiles (the store that orders its waits).
            let sink = if version == Version::V7Overlap {
                threads * 4
            } else {
                0
            };
            let smem = ((br + 4 * bc) * s.d * 2 + 1024 + sink) as u32;
            f.set_attribute(MAX_DYNAMIC_SMEM, smem as i32)?;
            // v7's one-warpgroup block takes a 1-D grid and orders it itself (`flash_wg` through
            // `work_item`).
            let grid_dim = if one_warpgroup {
                (nq.div_ceil(br as u32) * bh, 1, 1)
            } else {
                (nq.div_ceil(br as u32), bh, 1)
            };
            let cfg = LaunchConfig {
                grid_dim,
                block_dim: (threads as u32, 1, 1),
                shared_mem_bytes: smem,
            };
            launch_qkv(dev, &f, cfg, bufs, &p)?;
            // ANCHOR_END: wg_launch
        }
        Version::V8Tma => {
            let kernel = v8_kernel(s.d, s.nq, s.nk, mask, v8_stages(s.d, warps));
            launch_v8(dev, &module, bufs, &p, &kernel, None)?
        }
    }
    Ok(())
}

// ANCHOR: ws_launch
/// v8's launch of `kernel` (the host's pick, [`v8_kernel`], or one named through [`forward_v8_named`]),
/// from [`forward_with`] and [`forward_v8_named`] (`trace` None) or [`v8_trace`] (the trace build, its
/// buffer).
fn launch_v8<T: GpuElement>(
    dev: &Device,
    module: &std::sync::Arc<cudarc::driver::CudaModule>,
    bufs: &mut Buffers<T>,
    p: &Params,
    kernel: &V8Kernel,
    trace: Option<&mut CudaSlice<u64>>,
) -> Result<(), GpuError> {
    let s = bufs.shape;
    let st = dev.stream();
    let nq = s.nq as u32;
    if dev.arch() != "sm_90a" {
        return Err(GpuError::NotSupported {
            what: "v8_tma needs Hopper's warpgroup MMA and tensor memory accelerator (sm_90a)",
            arch: dev.arch(),
        });
    }
    let V8Kernel {
        name,
        consumers,
        o_tile,
        stages,
    } = kernel;
    let (consumers, o_tile, stages) = (*consumers, *o_tile, *stages);
    let f = module.load_function(name)?;
    let br = 64 * consumers; // the block's query rows: Q's box
    let [tq, tk, tv, to] = v8_maps(dev, bufs, br)?;
    if bufs.sched.is_none() {
        bufs.sched = Some(st.alloc_zeros::<u32>(2)?);
    }
    let smem = if o_tile {
        v8_smem_bytes_o(s.d, stages, consumers)
    } else {
        v8_smem_bytes(s.d, stages, consumers)
    } as u32;
    f.set_attribute(MAX_DYNAMIC_SMEM, smem as i32)?;
    // Persistent: one block an SM (at most one per work item), each taking items from the
    // counter in `sched` until none is left; the last block to finish sets it back to zero.
    let items = nq.div_ceil(br as u32) * (s.b * s.hq) as u32;
    let cfg = LaunchConfig {
        grid_dim: (items.min(dev.sm_count()), 1, 1),
        block_dim: (128 * (consumers as u32 + 1), 1, 1),
        shared_mem_bytes: smem,
    };
    let sched = bufs.sched.as_mut().expect("allocated above");
    let mut launch = st.launch_builder(&f);
    launch
        .arg(&tq)
        .arg(&tk)
        .arg(&tv)
        .arg(&to)
        .arg(&mut bufs.o)
        .arg(&mut bufs.lse)
        .arg(p)
        .arg(sched);
    if let Some(t) = trace {
        launch.arg(t); // the trace build's extra parameter
    }
    // SAFETY: argument types and order match `flash_v8_*` (the trace build's with the buffer last);
    // the maps describe q, k and v as validated above (they were made for these very allocations),
    // o and lse hold the shape, `sched` holds the two counters the kernel takes and leaves at zero,
    // and a trace buffer holds TRACE_BLOCKS x 4 writers x TRACE_EVENTS events of two words.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
// ANCHOR_END: ws_launch

/// The trace build's blocks and events per writer (`FA_TRACE_BLOCKS`, `FA_TRACE_EVENTS` in the kernel).
pub const TRACE_BLOCKS: usize = 2;
/// See [`TRACE_BLOCKS`].
pub const TRACE_EVENTS: usize = 8192;

/// One event of v8's trace build: the SM's clock, the state it starts (`trace_codes` in the kernel),
/// the block's item number and the key tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceEvent {
    /// `clock64()` when the state began.
    pub cycle: u64,
    /// The state's code.
    pub code: u32,
    /// The block's item number (0, 1, ... in the order the block took them).
    pub item: u32,
    /// The key tile within the item.
    pub tile: u32,
}

/// One launch of v8's trace build (FA_TRACE = 1) on `bufs` with `mask` and the stage choice `stages`:
/// for each of the first [`TRACE_BLOCKS`] blocks, each writer's events in order (consumer warpgroups
/// 0, 1, ..., then the producer). The output is written as by [`forward_with`]; the trace build
/// differs from the timed one only by the recording.
pub fn v8_trace<T: GpuElement>(
    dev: &Device,
    bufs: &mut Buffers<T>,
    mask: Mask,
    stages: usize,
) -> Result<Vec<Vec<Vec<TraceEvent>>>, GpuError> {
    check_buffers(bufs)?;
    let s = bufs.shape;
    let p = params(&s, mask)?;
    let dims = Version::V8Tma.head_dims();
    if !dims.contains(&s.d) {
        return Err(GpuError::HeadDim {
            version: Version::V8Tma.name(),
            d: s.d,
            supported: dims,
        });
    }
    let module = dev.module("flash_fwd.cu", &trace_defines(T::BF16))?;
    let st = dev.stream();
    let mut buf = st.alloc_zeros::<u64>(TRACE_BLOCKS * 4 * TRACE_EVENTS * 2)?;
    let kernel = v8_kernel(s.d, s.nq, s.nk, mask, v8_stages(s.d, stages));
    launch_v8(dev, &module, bufs, &p, &kernel, Some(&mut buf))?;
    let raw = st.clone_dtoh(&buf)?;
    let writers = v8_consumers(s.d, s.nq, mask.causal) + 1;
    Ok(decode_trace(&raw, writers))
}

/// Split the trace buffer into blocks and writers; a writer's events end at its first unused slot.
fn decode_trace(raw: &[u64], writers: usize) -> Vec<Vec<Vec<TraceEvent>>> {
    (0..TRACE_BLOCKS)
        .map(|b| {
            (0..writers)
                .map(|w| {
                    raw[(b * 4 + w) * TRACE_EVENTS * 2..][..TRACE_EVENTS * 2]
                        .chunks_exact(2)
                        .take_while(|e| e[0] != 0)
                        .map(|e| TraceEvent {
                            cycle: e[0],
                            code: (e[1] & 0xFF) as u32,
                            item: ((e[1] >> 8) & 0xFF_FFFF) as u32,
                            tile: (e[1] >> 32) as u32,
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// What v8's tensor maps were made for: the device addresses of q, k, v and o, the shape, and the rows of
/// Q's box.
type MapsKey = ([u64; 4], AttnShape, usize);

/// v8's tensor maps over `bufs.q` (boxes of 64 columns x `q_rows` rows of one head: the block's query
/// tile), `bufs.k` and `bufs.v` (64 x 128) and `bufs.o` (64 x 64: one consumer warpgroup's rows, for
/// the `_o` kernels' stores), made once for the allocations they describe and kept with
/// the buffers: encoding them is host work that would otherwise run before every timed launch. Made
/// again when the buffers, the shape they claim (a public field) or Q's box change.
fn v8_maps<T: GpuElement>(
    dev: &Device,
    bufs: &mut Buffers<T>,
    q_rows: usize,
) -> Result<[TensorMap; 4], GpuError> {
    let st = dev.stream();
    let key = (
        [
            bufs.q.device_ptr(st).0,
            bufs.k.device_ptr(st).0,
            bufs.v.device_ptr(st).0,
            bufs.o.device_ptr(st).0,
        ],
        bufs.shape,
        q_rows,
    );
    if let Some((k, maps)) = &bufs.maps {
        if *k == key {
            return Ok(*maps);
        }
    }
    let s = bufs.shape;
    let maps = [
        kv_map(dev, &bufs.q, s.b * s.hq, s.nq, s.d, q_rows)?,
        kv_map(dev, &bufs.k, s.b * s.hkv, s.nk, s.d, 128)?,
        kv_map(dev, &bufs.v, s.b * s.hkv, s.nk, s.d, 128)?,
        kv_map(dev, &bufs.o, s.b * s.hq, s.nq, s.d, 64)?, // one consumer warpgroup's rows
    ];
    bufs.maps = Some((key, maps));
    Ok(maps)
}

/// Raise a kernel's dynamic shared memory limit (more than 48 KB must be asked for).
const MAX_DYNAMIC_SMEM: sys::CUfunction_attribute =
    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;

/// Launch `f` with the argument list every fused version takes: q, k, v, o, lse, params.
fn launch_qkv<T: GpuElement>(
    dev: &Device,
    f: &cudarc::driver::CudaFunction,
    cfg: LaunchConfig,
    bufs: &mut Buffers<T>,
    p: &Params,
) -> Result<(), GpuError> {
    // SAFETY: the fused kernels take exactly (q, k, v, o, lse, Params); the callers validated the
    // buffers' lengths against the shape the parameters describe.
    unsafe {
        dev.stream()
            .launch_builder(f)
            .arg(&bufs.q)
            .arg(&bufs.k)
            .arg(&bufs.v)
            .arg(&mut bufs.o)
            .arg(&mut bufs.lse)
            .arg(p)
            .launch(cfg)
    }?;
    Ok(())
}

// ANCHOR: time_ms
/// Time `runs` launches of `version` after `warmup` untimed ones, rotating over `sets` (run `i` uses
/// `sets[i % sets.len()]`, so that with enough sets the timed inputs are not resident in L2). Each
/// launch is bracketed by its own pair of CUDA events; returns the times in ms, in launch order.
pub fn time_ms<T: GpuElement>(
    dev: &Device,
    version: Version,
    warps: Option<usize>,
    sets: &mut [Buffers<T>],
    mask: Mask,
    warmup: usize,
    runs: usize,
) -> Result<Vec<f64>, GpuError> {
    let n = sets.len().max(1);
    dev.time_each(warmup, runs, |i| {
        forward_knob(dev, version, &mut sets[i % n], mask, warps)
    })
}
// ANCHOR_END: time_ms

/// The log-sum-exp of every row in `f64`, `lse_i = ln sum_j exp(q_i . k_j / sqrt(D))` over the visible
/// keys (`-inf` where none is): what the kernels return beside `O`. Inputs widened exactly.
pub fn lse_ref64<T: Element>(q: &[T], k: &[T], s: &AttnShape, mask: Mask) -> Vec<f64> {
    let scale = 1.0 / (s.d as f64).sqrt();
    let mut out = Vec::with_capacity(s.b * s.hq * s.nq);
    let mut scores = Vec::with_capacity(s.nk);
    for b in 0..s.b {
        for h in 0..s.hq {
            for i in 0..s.nq {
                let qi = &q[s.q_row(b, h, i)..][..s.d];
                scores.clear();
                for j in 0..s.nk {
                    if mask.visible(i, j, s.nq, s.nk) {
                        let kj = &k[s.kv_row(b, h / s.group(), j)..][..s.d];
                        let dot: f64 = qi
                            .iter()
                            .zip(kj)
                            .map(|(x, y)| x.to_f64() * y.to_f64())
                            .sum();
                        scores.push(dot * scale);
                    }
                }
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                out.push(if m == f64::NEG_INFINITY {
                    m
                } else {
                    m + scores.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
                });
            }
        }
    }
    out
}

/// Largest `|lse - lse64|` over rows, treating two `-inf` as equal and any NaN (or a lone `-inf`) as
/// infinitely far.
pub fn lse_max_err(got: &[f32], want: &[f64]) -> f64 {
    got.iter().zip(want).fold(0.0f64, |acc, (&g, &w)| {
        let g = g as f64;
        let e = if g == f64::NEG_INFINITY && w == f64::NEG_INFINITY {
            0.0
        } else if g.is_finite() && w.is_finite() {
            (g - w).abs()
        } else {
            f64::INFINITY
        };
        acc.max(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel name [`v8_kernel`] can return is one the kernel file compiles (its `WS(...)`
    /// lines), for both head sizes, both stage choices, every mask and lengths on both sides of each
    /// rule's threshold, with Nk a multiple of the tile or not.
    #[test]
    fn every_v8_kernel_the_host_picks_is_compiled() {
        let compiled = v8_compiled();
        assert!(compiled.len() >= 11, "{compiled:?}");
        let window = Mask {
            causal: false,
            window: std::num::NonZeroUsize::new(100),
        };
        let causal_window = Mask {
            causal: true,
            ..window
        };
        let mut picked = std::collections::BTreeSet::new();
        for d in [64, 128] {
            for &stages in v8_stage_choices(d) {
                for mask in [Mask::NONE, Mask::CAUSAL, window, causal_window] {
                    for nq in [1, 100, 512, 1024, 2048, 4096, 8192, 8193, 16384] {
                        for nk in [1, 200, 512, 1000, 2048, 8192, 16384] {
                            let name = v8_kernel(d, nq, nk, mask, stages).name;
                            assert!(compiled.contains(&name), "{name} is not compiled");
                            picked.insert(name);
                        }
                    }
                }
            }
        }
        // Every mask class is picked somewhere, and the masked kernels keep the window and the
        // partial tiles.
        for suffix in ["_u", "_c"] {
            assert!(picked.iter().any(|n| n.ends_with(suffix)), "{picked:?}");
        }
        assert_eq!(
            v8_kernel(128, 512, 512, Mask::NONE, 2).name,
            "flash_v8_128_s2_c2_o_u"
        );
        assert_eq!(
            v8_kernel(128, 512, 500, Mask::NONE, 2).name,
            "flash_v8_128_s2_c2_o"
        );
        assert_eq!(
            v8_kernel(128, 512, 512, window, 2).name,
            "flash_v8_128_s2_c2_o"
        );
        assert_eq!(
            v8_kernel(128, 512, 512, Mask::NONE, 3).name,
            "flash_v8_128_s3_c2"
        );
        assert_eq!(
            v8_kernel(64, 512, 512, Mask::CAUSAL, 4).name,
            "flash_v8_64_s4_c2_o_c"
        );
        // D = 64 unmasked: the `_o_u` kernel up to N = 2048 with whole tiles, the general one without
        // the tile beyond, or with a partial tile from N = 1024.
        assert_eq!(
            v8_kernel(64, 2048, 2048, Mask::NONE, 4).name,
            "flash_v8_64_s4_c3_o_u"
        );
        assert_eq!(
            v8_kernel(64, 4096, 4096, Mask::NONE, 4).name,
            "flash_v8_64_s4_c3"
        );
        assert_eq!(
            v8_kernel(64, 2048, 2000, Mask::NONE, 4).name,
            "flash_v8_64_s4_c3"
        );
        assert!(v8_kernel(64, 1024, 1024, Mask::NONE, 4).o_tile);
    }

    /// A kernel named by the caller runs only where it computes the call correctly; every other name is
    /// refused with the reason, and the host's own picks are always accepted.
    #[test]
    fn a_named_v8_kernel_is_refused_where_it_cannot_run() {
        let s = |nq, nk, d| AttnShape::new(1, 2, 2, nq, nk, d).unwrap();
        let window = Mask::sliding(100, true).unwrap();
        let ok = |name: &str, shape, mask| v8_named(name, &shape, mask).is_ok();
        assert!(ok("flash_v8_64_s4_c3_c", s(1024, 1024, 64), Mask::CAUSAL));
        assert!(ok("flash_v8_64_s4_c3_o_u", s(1024, 1024, 64), Mask::NONE));
        assert!(ok("flash_v8_128_s3_c2", s(1000, 1000, 128), window));
        for (name, shape, mask) in [
            ("flash_v8_64_s4_c3_o_u", s(1024, 1000, 64), Mask::NONE), // a partial key tile
            ("flash_v8_64_s4_c3_o_u", s(1024, 1024, 64), Mask::CAUSAL),
            ("flash_v8_64_s4_c3_c", s(1024, 1024, 64), window), // a window
            ("flash_v8_64_s4_c3_c", s(1024, 1024, 64), Mask::NONE),
            ("flash_v8_64_s4_c3_c", s(1024, 1024, 128), Mask::CAUSAL), // another head size
            ("flash_v8_64_s3_c3", s(1024, 1024, 64), Mask::NONE),      // not compiled
            ("flash_v7_64_w4", s(1024, 1024, 64), Mask::NONE),
        ] {
            let e = v8_named(name, &shape, mask).expect_err(name);
            assert!(
                matches!(&e, GpuError::KernelChoice { name: n, .. } if n == name),
                "{e}"
            );
        }
        for d in [64, 128] {
            for mask in [Mask::NONE, Mask::CAUSAL, window] {
                for (nq, nk) in [(512, 512), (2048, 2048), (4352, 256), (1000, 700)] {
                    let pick = v8_kernel(d, nq, nk, mask, v8_stage_choices(d)[0]);
                    let named = v8_named(&pick.name, &s(nq, nk, d), mask).expect("the host's pick");
                    assert_eq!(named, pick);
                }
            }
        }
    }

    /// The trace buffer's layout: block-major, four writer slots a block, two words an event (the
    /// clock, then code | item << 8 | tile << 32); a writer's events end at its first zero clock.
    #[test]
    fn trace_events_decode_per_block_and_writer() {
        let mut raw = vec![0u64; TRACE_BLOCKS * 4 * TRACE_EVENTS * 2];
        let at = |b: usize, w: usize, i: usize| ((b * 4 + w) * TRACE_EVENTS + i) * 2;
        raw[at(0, 0, 0)] = 100;
        raw[at(0, 0, 0) + 1] = 0; // TR_START
        raw[at(0, 0, 1)] = 150;
        raw[at(0, 0, 1) + 1] = 2 | (3 << 8) | (5u64 << 32); // TR_WAIT_K, item 3, tile 5
        raw[at(1, 2, 0)] = 7;
        raw[at(1, 2, 0) + 1] = 19 | (1 << 8);
        raw[at(1, 3, 0)] = 9; // a fourth writer slot, not asked for below
        let t = decode_trace(&raw, 3);
        assert_eq!(t.len(), TRACE_BLOCKS);
        assert_eq!(t[0].len(), 3);
        assert_eq!(
            t[0][0],
            vec![
                TraceEvent {
                    cycle: 100,
                    code: 0,
                    item: 0,
                    tile: 0
                },
                TraceEvent {
                    cycle: 150,
                    code: 2,
                    item: 3,
                    tile: 5
                }
            ]
        );
        assert!(t[0][1].is_empty() && t[0][2].is_empty() && t[1][0].is_empty());
        assert_eq!(
            t[1][2],
            vec![TraceEvent {
                cycle: 7,
                code: 19,
                item: 1,
                tile: 0
            }]
        );
    }
}
