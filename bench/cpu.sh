#!/usr/bin/env bash
# One run, both sides: PyTorch's CPU SDPA (before and after ours; its faster run is kept) and this
# crate's versions on the same grid and thread count, into measurements/cpu-<machine>.json.
# Needs a Python with torch: pass it as $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS=${THREADS:-$(nproc)}
cargo run --release -- measure-cpu --with-torch "$@"
