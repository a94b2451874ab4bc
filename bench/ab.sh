#!/usr/bin/env bash
# A same-run comparison of kernel builds on a GPU machine (how the kernel changelog's "against the
# build without it, twice in one call" lines are measured: one call is one run of this script). Each
# binary is a `modern-attention` built from a different source; each is first checked (`gpu-probe
# check VERSION`: the sanitizer's cases, against the f64 reference), then all are timed in alternating
# rounds, so that a drift of the card's clocks within the run falls on every build alike. Ratios
# between two runs are not measurements: the same build has timed 1-2.5% apart on two machines of the
# same model.
#
#   bash bench/ab.sh OUT ROUNDS BIN_A BIN_B [BIN ...]
#
# The builds are named by their file names (give them distinct ones, e.g. old-ma, new-ma). One build
# may also be compared with itself through the host's alternatives: VERSION="v8,v8@flash_v8_64_s4_c3_c"
# times v8 as the host picks and through the named kernel (`gpu-probe time v8@KERNEL`), the list's
# order reversed every other round; each (build, variant) is then a column.
# Environment: VERSION (default v8; a comma-separated list), NS (default 512,1024,2048,4096), SHAPES (semicolon-separated
# `D [causal]`, default "128;128 causal;64;64 causal"), RACECHECK=1 to also run compute-sanitizer's
# racecheck on each build's check.
# OUT receives ab.log (every timing line, prefixed with its round and build) and ab.md (per shape, the
# mean TFLOP/s of each build over the rounds and its ratio to the first build's).
set -u
OUT=$1
ROUNDS=$2
shift 2
VERSION=${VERSION:-v8}
NS=${NS:-512,1024,2048,4096}
SHAPES=${SHAPES:-128;128 causal;64;64 causal}
mkdir -p "$OUT"
# Compiled PTX kept between the binary's processes (NVRTC once per module and build, not per process;
# `MA_PTX_CACHE`, src/gpu), and the driver's JIT cache of the machine code beside it.
export MA_PTX_CACHE=${MA_PTX_CACHE:-${TMPDIR:-/tmp}/ma-ptx-cache}
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-${TMPDIR:-/tmp}/ma-cuda-cache}
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-1073741824}
log=$OUT/ab.log
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$log" 2>/dev/null ||
  echo "no nvidia-smi" > "$log"
ok=1
# `check` takes versions, not kernels: v8@KERNEL is checked by `time` itself before it is timed.
checked=$(echo "$VERSION" | sed 's/@[^,]*//g' | tr ',' '\n' | sort -u | paste -sd,)
for b in "$@"; do
  if timeout 120 "$b" gpu-probe check "$checked" > "$OUT/check-$(basename "$b").log" 2>&1; then
    echo "check $(basename "$b"): all match" >> "$log"
  else
    echo "check $(basename "$b"): FAILED (see check-$(basename "$b").log); not timed" >> "$log"
    ok=0
  fi
  if [ "${RACECHECK:-0}" = 1 ]; then
    timeout 200 compute-sanitizer --tool racecheck --error-exitcode 3 "$b" gpu-probe check "$checked" \
      > "$OUT/race-$(basename "$b").log" 2>&1
    echo "racecheck $(basename "$b") rc=$?: $(grep 'RACECHECK SUMMARY' "$OUT/race-$(basename "$b").log" | tail -1)" >> "$log"
  fi
done
if [ $ok = 1 ]; then
  for r in $(seq 1 "$ROUNDS"); do
    # Within a build the variants run back to back; their order alternates by round.
    versions=$VERSION
    [ $((r % 2)) = 0 ] && versions=$(echo "$VERSION" | tr ',' '\n' | tac | paste -sd,)
    for b in "$@"; do
      IFS=';' read -ra shapes <<< "$SHAPES"
      for shape in "${shapes[@]}"; do
        # shellcheck disable=SC2086 # the shape is `D [causal]`, two words on purpose
        timeout 120 "$b" gpu-probe time "$versions" "$NS" $shape 2>&1 | sed "s|^|r$r $(basename "$b") |" >> "$log"
      done
    done
  done
fi
python3 - "$log" "$OUT/ab.md" "$@" <<'PY'
import re, sys, collections
log, out, bins = sys.argv[1], sys.argv[2], [b.rsplit('/', 1)[-1] for b in sys.argv[3:]]
runs = collections.defaultdict(list)  # (shape, column) -> TFLOP/s of each round
pat = re.compile(r'^r\d+ (\S+) time (\S+) N=(\d+) D=(\d+) (\S+): \S+ ms ([\d.]+) TFLOP/s')
labels = collections.defaultdict(set)  # build -> the variants it timed
for line in open(log):
    m = pat.match(line)
    if m:
        b, label, n, d, mask, tf = m.groups()
        labels[b].add(label)
        runs[(int(d), mask, int(n)), (b, label)].append(float(tf))
# A column per build, or per (build, variant) where a build timed several (`v8,v8@KERNEL`).
cols = [(b, l) for b in bins for l in sorted(labels[b], key=lambda l: ('@' in l, l))]
name = lambda c: c[0] if len(labels[c[0]]) == 1 else f'{c[0]} {c[1]}'
runs = {(s, name(c)): v for (s, c), v in runs.items()}
bins = [name(c) for c in cols]
shapes = sorted({s for s, _ in runs})
rows = ['| D | mask | N | ' + ' | '.join(bins) + ' |', '|---|---|---|' + '---|' * len(bins)]
for s in shapes:
    base = runs.get((s, bins[0]))
    cells = []
    for b in bins:
        v = runs.get((s, b))
        if not v:
            cells.append('-')
            continue
        mean = sum(v) / len(v)
        cell = f'{mean:.1f}'
        if base and b != bins[0]:
            cell += f' ({mean / (sum(base) / len(base)):.3f}x)'
        cells.append(cell)
    rows.append(f'| {s[0]} | {s[1]} | {s[2]} | ' + ' | '.join(cells) + ' |')
open(out, 'w').write('\n'.join(rows) + '\n')
print('\n'.join(rows))
PY
