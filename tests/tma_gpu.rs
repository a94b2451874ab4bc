//! The tensor memory accelerator's boxes land in shared memory in exactly the layout v6/v7's own copies
//! write (`tile_off` in `kernels/flash_fwd.cu`: row i of a 64-column block is 128 bytes at 128 i, its
//! 16-byte chunk c at position c ^ (i % 8)), rows past the tensor's end as zeros; and a tensor map the
//! copy engine cannot describe is refused with a typed error.
//!
//! Skipped (with a printed reason) without a CUDA device or on a GPU older than Hopper;
//! `REQUIRE_GPU=1` fails instead of skipping for a missing device.

use half::f16;
use modern_attention::gpu::tma::{kv_map, probe, BOX_COLS};
use modern_attention::gpu::GpuError;
use modern_attention::minimodel::rng::Rng;

mod common;
use common::device;

#[test]
fn a_box_arrives_swizzled_like_the_wgmma_tiles() {
    let Some(dev) = device() else { return };
    if !dev.arch().starts_with("sm_9") {
        println!(
            "skipped: the tensor memory accelerator needs sm_90 ({})",
            dev.arch()
        );
        return;
    }
    let (heads, rows, d, box_rows) = (3, 300, 128, 64);
    let x: Vec<f16> = Rng::new(5)
        .normal_vec_f32(heads * rows * d)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let buf = dev.stream().clone_htod(&x).unwrap();
    let map = kv_map(&dev, &buf, heads, rows, d, box_rows).unwrap();
    // A box inside the tensor, one that runs past its last row, and one in the first head.
    for (c0, r0, z) in [(64, 100, 1), (0, 256, 2), (64, 0, 0)] {
        let got = probe::<f16>(&dev, &map, box_rows, (c0, r0, z)).unwrap();
        let got: Vec<u16> = got
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut want = vec![0u16; BOX_COLS * box_rows];
        for i in 0..box_rows {
            for c in 0..BOX_COLS / 8 {
                for e in 0..8 {
                    let (row, col) = (r0 + i, c0 + c * 8 + e);
                    let v = if row < rows {
                        x[(z * rows + row) * d + col].to_bits()
                    } else {
                        0
                    };
                    want[i * 64 + ((c ^ (i % 8)) * 8) + e] = v;
                }
            }
        }
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            bad, 0,
            "box at column {c0}, row {r0}, head {z}: {bad} of {} elements differ from the swizzled layout",
            want.len()
        );
    }
}

#[test]
fn maps_the_copy_engine_cannot_describe_are_refused() {
    let Some(dev) = device() else { return };
    let buf = dev.stream().alloc_zeros::<f16>(2 * 100 * 96).unwrap();
    // D = 96 is not a whole number of 128-byte rows; 300 rows is more than a box may hold; the
    // buffer too short for the shape.
    // Each case its own refusal where the card has the copy engine; before sm_90 every map is refused
    // as not supported, whatever its shape.
    let tma = dev.arch().starts_with("sm_9") || dev.arch().starts_with("sm_1");
    for (heads, rows, d, box_rows, too_short) in [
        (2, 100, 96, 64, false),
        (2, 100, 64, 300, false),
        (4, 100, 64, 64, true),
    ] {
        match kv_map(&dev, &buf, heads, rows, d, box_rows) {
            Err(GpuError::Length { .. }) if tma && too_short => {}
            Err(GpuError::NotSupported { .. }) if !(tma && too_short) => {}
            other => panic!(
                "({heads}, {rows}, {d}, box {box_rows}) on {}: expected {}, got {other:?}",
                dev.arch(),
                if tma && too_short {
                    "Length"
                } else {
                    "NotSupported"
                }
            ),
        }
    }
}
