//! Theory 02's table: how many tile pairs a mask lets FlashAttention skip, from the traffic model.

use super::{md_table, Artifact};
use crate::minimodel::config::STRESS_SEQ_LEN;
use crate::minimodel::numeric::DType;
use crate::minimodel::shape::{AttnShape, Mask};
use crate::roofline::traffic::{flash_traffic, flops};
use crate::roofline::{si, sig3};

/// The mask table.
pub fn render() -> Vec<Artifact> {
    vec![Artifact {
        name: "t02_masks.md",
        contents: masks_table(),
    }]
}

fn masks_table() -> String {
    let (n, d, br, bc) = (STRESS_SEQ_LEN, 64, 64, 64);
    let s = AttnShape::self_attention(1, 1, n, d).expect("table shape");
    let masks = [
        Mask::NONE,
        Mask::CAUSAL,
        Mask::sliding(256, true).expect("nonzero window"),
    ];
    let mut rows = Vec::new();
    for mask in masks {
        let t = flash_traffic(&s, DType::F16, br, bc, mask);
        let executed = t.computed as f64 * 4.0 * (br * bc * d) as f64;
        // FlashAttention's benchmark convention: causal counts half of the dense FLOPs; a window counts
        // the keys each row actually sees.
        let useful: f64 = (0..n)
            .map(|i| {
                let (lo, hi) = crate::roofline::traffic::visible_keys(mask, i, n, n);
                (hi - lo).max(0) as f64 * 4.0 * d as f64
            })
            .sum();
        rows.push(vec![
            mask.name(),
            t.computed.to_string(),
            t.skipped.to_string(),
            si(executed) + "FLOP",
            si(useful) + "FLOP",
            format!("{}%", sig3(100.0 * useful / executed)),
            si((t.loaded + t.stored) as f64) + "B",
        ]);
    }
    let dense = flops(&s);
    let mut out = md_table(
        &[
            "mask",
            "tile pairs computed",
            "tile pairs skipped",
            "FLOPs executed",
            "FLOPs useful",
            "useful / executed",
            "bytes moved",
        ],
        &rows,
    );
    out += &format!(
        "\n*Table 02.T1. One head, N = {n}, D = {d}, {br}x{bc} tiles, fp16. A tile pair is skipped when the mask \
         hides all of it; a computed pair costs 4·Br·Bc·D FLOPs whether or not the mask hides part of it (the \
         diagonal tiles). Useful FLOPs count only visible (query, key) pairs: 4·D per pair; the dense count is \
         {}. From `src/roofline/traffic.rs`.*\n",
        si(dense) + "FLOP"
    );
    out
}
