#!/usr/bin/env bash
# One run, both sides: this crate's versions and PyTorch's CPU SDPA (a child process whose timing
# windows alternate with ours on every compared configuration) on the same grid and thread count, into
# measurements/cpu-<machine>.json.
# Needs a Python with torch: pass it as $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS=${THREADS:-$(nproc)}
cargo run --release -- measure-cpu --with-torch "$@"
