#!/usr/bin/env bash
# One run, both sides: PyTorch's CPU SDPA and this crate's versions on the same grid and thread count,
# merged into measurements/cpu-<machine>.json. Needs a Python with torch (pass it as $PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-$(nproc)}
peer=$(mktemp --suffix .json)
"${PYTHON:-python3}" bench/peers/torch_cpu_sdpa.py --threads "$threads" --out "$peer" "$@"
RAYON_NUM_THREADS=$threads cargo run --release -- measure-cpu --peer "$peer" "$@"
