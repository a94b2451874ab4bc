//! Hopper's tensor memory accelerator from the host: a tensor map (`cuTensorMapEncodeTiled`) for a
//! `(heads, rows, D)` K, V or Q tensor, boxes of 64 columns by `box_rows` rows in the 128-byte
//! swizzled layout of v6/v7's shared-memory tiles, and `probe`, which loads one box through the copy
//! engine and returns its shared-memory bytes (`kernels/tma.cu`). The foundation of a producer warp
//! that feeds v7's tensor cores without the consumers' copies (issue 4's next step).

use super::flash::GpuElement;
use super::{Device, GpuError};
use cudarc::driver::sys;
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

/// The driver's `CUtensorMap`: 128 opaque bytes, 64-byte aligned; a kernel takes it by value as a
/// `__grid_constant__` parameter.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub struct TensorMap(pub [u64; 16]);

// SAFETY: plain data of the size and alignment of the kernels' `struct TensorMap`.
unsafe impl DeviceRepr for TensorMap {}

/// Columns of a box: one 128-byte swizzle row of 16-bit elements.
pub const BOX_COLS: usize = 64;

/// A tensor map over `x`, a row-major `(heads, rows, d)` tensor of 16-bit elements, with boxes of
/// [`BOX_COLS`] columns x `box_rows` rows x 1 head, 128-byte swizzle, zeros past the end. Typed errors
/// for shapes the copy engine cannot describe (`d` not a multiple of 64, a box of more than 256 rows).
pub fn kv_map<T: GpuElement>(
    dev: &Device,
    x: &CudaSlice<T>,
    heads: usize,
    rows: usize,
    d: usize,
    box_rows: usize,
) -> Result<TensorMap, GpuError> {
    if !dev.arch().starts_with("sm_9") && !dev.arch().starts_with("sm_1") {
        return Err(GpuError::NotSupported {
            what: "the tensor memory accelerator (sm_90 or newer)",
            arch: dev.arch(),
        });
    }
    if d == 0 || !d.is_multiple_of(BOX_COLS) || box_rows == 0 || box_rows > 256 {
        return Err(GpuError::NotSupported {
            what: "a tensor map needs D a multiple of 64 and boxes of 1 to 256 rows",
            arch: dev.arch(),
        });
    }
    let need = heads * rows * d;
    if x.len() < need {
        return Err(GpuError::Length {
            tensor: "tensor-map source",
            got: x.len(),
            expected: need,
        });
    }
    let e = std::mem::size_of::<T>() as u64;
    let dims: [u64; 3] = [d as u64, rows as u64, heads as u64];
    let strides: [u64; 2] = [d as u64 * e, (rows * d) as u64 * e]; // bytes, dims 1 and 2
    let boxes: [u32; 3] = [BOX_COLS as u32, box_rows as u32, 1];
    let unit: [u32; 3] = [1, 1, 1];
    let dtype = if T::BF16 {
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
    } else {
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16
    };
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::uninit();
    let st = dev.stream();
    let (ptr, _sync) = x.device_ptr(st);
    // SAFETY: every array holds `rank` (3) entries, strides `rank - 1`, as the driver API requires;
    // `map` is written by the call before it is read.
    let map = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            dtype,
            3,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            unit.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()?;
        map.assume_init()
    };
    Ok(TensorMap(map.opaque))
}

/// Load the box at column `c0`, row `r0`, head `z` of `map` (boxes of `box_rows` rows) through the copy
/// engine into shared memory and return those bytes as they lie there (`BOX_COLS * box_rows` elements).
pub fn probe<T: GpuElement>(
    dev: &Device,
    map: &TensorMap,
    box_rows: usize,
    (c0, r0, z): (usize, usize, usize),
) -> Result<Vec<u8>, GpuError> {
    let bytes = BOX_COLS * box_rows * std::mem::size_of::<T>();
    let module = dev.module("tma.cu", &[])?;
    let f = module.load_function("tma_probe")?;
    let st = dev.stream();
    let mut out = st.alloc_zeros::<u8>(bytes)?;
    let smem = (bytes + 1024) as u32; // the box starts on the next 1024-byte boundary
    f.set_attribute(
        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem as i32,
    )?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem,
    };
    let (c0, r0, z, n) = (c0 as i32, r0 as i32, z as i32, bytes as u32);
    // SAFETY: argument types and order match `tma_probe`; the map describes a live buffer, and `out`
    // holds the box's bytes.
    unsafe {
        st.launch_builder(&f)
            .arg(map)
            .arg(&mut out)
            .arg(&c0)
            .arg(&r0)
            .arg(&z)
            .arg(&n)
            .launch(cfg)
    }?;
    Ok(st.clone_dtoh(&out)?)
}
