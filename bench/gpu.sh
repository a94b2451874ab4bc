#!/usr/bin/env bash
# Lab 02 on a GPU machine that has no Rust: runs binaries built elsewhere (on any x86-64 Linux box:
# `cargo test --release --no-run` and `cargo build --release`, with the test executables copied to
# DIR/tests and the `modern-attention` binary to DIR/bin; cudarc loads the CUDA libraries at run time).
# A test executable is found by name: the first file in DIR/tests containing `flash_gpu-` (`tma_gpu-`,
# `paged_gpu-`) and not ending in `.d`, so cargo's own `flash_gpu-<hash>` and a `test-flash_gpu-<hash>`
# copy both match.
#
#   bash bench/gpu.sh DIR OUT [phase ...]
#   phases: tests sanitize quick peer ncu measure (lab 02, the default: all but quick), and
#           ptests dpeer paged (lab 03: paged decode tests, PyTorch decode peer, measure-gpu --only paged)
#           psanitize (memcheck and racecheck on the paged decode's sanitizer cases alone)
#           xcheck (our output vs PyTorch's math backend on the same saved inputs; merged by paged/measure)
#           fmeasure (lab 02's grid alone, merged into the committed file with peer and ncu rows)
#           ncu alone merges its DRAM counts into the committed file's grid (measure-gpu --only dram)
#           tma (the tensor memory accelerator's boxes against v6/v7's swizzled tile layout)
#           trace (v8's trace build on Lab 02's traced shapes: OUT/trace.json, commit it as
#           measurements/traces/gpu-<card>.json)
#           race (v8 and PyTorch's cuDNN and FA2 backends timed shape by shape in alternating rounds,
#           bench/peers/torch_race.py; ROUNDS, default 3; merged by measure/fmeasure, or on its own)
#           drace (lab 03's paged decode and PyTorch's SDPA decode timed context by context in
#           alternating rounds, bench/peers/torch_decode_race.py; DROUNDS, default 5; merged by
#           paged/measure, or on its own)
#
# DIR holds the bundle (bin/, tests/), COMMIT (the commit it was built from) and RUSTC (`rustc --version`
# of the compiler that built it; "unknown" in the records without it); the peer scripts are read from this
# script's peers/.
# OUT receives summary.log, the measurement files and logs.tar.gz (the phases' logs). Each phase has a time limit,
# so one hung phase cannot eat the whole run.
set -u
W=$1
OUT=$2
mkdir -p "$OUT"
shift 2
phases=${*:-tests sanitize peer ncu measure}
# measure and fmeasure merge ncu's DRAM counts (OUT/dram.json) only if they exist by then: ncu goes first.
has() { case " $phases " in *" $1 "*) return 0 ;; esac; return 1; }
if has ncu && { has measure || has fmeasure; }; then
  phases="ncu $(echo " $phases " | sed 's/ ncu / /g' | xargs)"
fi
# ... and the race before them, which merge it.
if has race && { has measure || has fmeasure; }; then
  phases="race $(echo " $phases " | sed 's/ race / /g' | xargs)"
fi
# ... and the decode race before paged or measure, which merge it.
if has drace && { has paged || has measure; }; then
  phases="drace $(echo " $phases " | sed 's/ drace / /g' | xargs)"
fi
B=$W/bin/modern-attention
PEERS=$(cd "$(dirname "$0")" && pwd)/peers
export PYTHONUNBUFFERED=1
# Compiled PTX kept between the binary's processes (NVRTC once per module and build, not per process;
# `MA_PTX_CACHE`, src/gpu), and the driver's JIT cache of the machine code beside it.
export MA_PTX_CACHE=${MA_PTX_CACHE:-${TMPDIR:-/tmp}/ma-ptx-cache}
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-${TMPDIR:-/tmp}/ma-cuda-cache}
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-1073741824}
log=$OUT/summary.log
say() { echo "$@" | tee -a "$log"; }
say "== $(date -u +%FT%TZ) commit $(cat "$W/COMMIT" 2>/dev/null) phases: $phases"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
  --format=csv 2>&1 | tee -a "$log"
# Clocks, power and temperature every 200 ms through a timing phase (OUT/smi-PHASE.csv), and their
# range in the summary: a kernel that draws more power may be timed at a lower clock under sustained load.
smi_start() {
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu \
    --format=csv,noheader,nounits -lms 200 > "$OUT/smi-$1.csv" 2>/dev/null &
  smi_pid=$!
}
smi_stop() {
  kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null
  awk -F', ' 'NR == 1 {lo = hi = $2; pl = ph = $4} {if ($2 < lo) lo = $2; if ($2 > hi) hi = $2;
    if ($4 < pl) pl = $4; if ($4 > ph) ph = $4} END {if (NR) printf "clocks during %s: SM %s-%s MHz, power %s-%s W (%d samples)\n",
    phase, lo, hi, pl, ph, NR}' phase="$1" "$OUT/smi-$1.csv" | tee -a "$log"
}
for phase in $phases; do
  t0=$(date +%s)
  case $phase in paged|measure|fmeasure|peer|dpeer|race|drace) smi_start "$phase" ;; esac
  case $phase in
    tests)
      t=$(ls "$W"/tests/*flash_gpu-* | grep -v '\.d$' | head -1)
      REQUIRE_GPU=1 timeout 240 "$t" --test-threads=4 --nocapture > "$OUT/tests.log" 2>&1
      say "tests rc=$? ok-lines=$(grep -c '^ok ' "$OUT/tests.log") fail-lines=$(grep -c '^FAIL' "$OUT/tests.log")"
      grep -E '^FAIL|panicked|test result' "$OUT/tests.log" | head -20 | tee -a "$log"
      ;;
    trace)
      timeout 200 "$B" gpu-probe trace "$OUT/trace.json" "$(cat "$W/COMMIT")" "$(date -u +%F)" > "$OUT/trace.log" 2>&1
      say "trace rc=$? shapes=$(grep -c '^trace ' "$OUT/trace.log") differing=$(grep -c 'DIFFERS' "$OUT/trace.log")"
      ;;
    tma)
      t=$(ls "$W"/tests/*tma_gpu-* | grep -v '\.d$' | head -1)
      REQUIRE_GPU=1 timeout 60 "$t" --nocapture > "$OUT/tma.log" 2>&1
      say "tma tests rc=$?"
      grep -E 'panicked|test result|skipped|^test ' "$OUT/tma.log" | head -10 | tee -a "$log"
      ;;
    ptests)
      t=$(ls "$W"/tests/*paged_gpu-* | grep -v '\.d$' | head -1)
      REQUIRE_GPU=1 timeout 480 "$t" --test-threads=2 --nocapture > "$OUT/ptests.log" 2>&1
      say "paged tests rc=$?"
      grep -E 'panicked|test result|configurations checked|^test ' "$OUT/ptests.log" | head -20 | tee -a "$log"
      ;;
    dpeer)
      timeout 300 python3 "$PEERS/torch_decode.py" --out "$OUT/torch_decode.json" 2>&1 | tee -a "$log"
      ;;
    xcheck)
      timeout 120 "$B" gpu-probe save-check "$OUT/xcheck" 2>&1 | tee -a "$log"
      timeout 120 python3 "$PEERS/torch_check.py" "$OUT/xcheck" --out "$OUT/crosscheck.json" 2>&1 | tee -a "$log"
      rm -rf "$OUT/xcheck"
      ;;
    paged)
      extra=""
      [ -f "$OUT/torch_decode.json" ] && extra="--peer-decode $OUT/torch_decode.json"
      [ -f "$OUT/crosscheck.json" ] && extra="$extra --peer-check $OUT/crosscheck.json"
      [ -f "$OUT/decode_race.json" ] && extra="$extra --race $OUT/decode_race.json"
      timeout 400 "$B" measure-gpu --only paged $extra --out "$OUT" --commit "$(cat "$W/COMMIT")" \
        --date "$(date -u +%F)" --rustc "$(cat "$W/RUSTC" 2>/dev/null || echo unknown)" 2>&1 | tee -a "$log"
      ;;
    sanitize|psanitize)
      # psanitize: the paged decode's cases alone (`gpu-probe sanitize paged`), a fraction of the time.
      what=""
      [ "$phase" = psanitize ] && what=paged
      for tool in memcheck racecheck; do
        timeout 200 compute-sanitizer --tool $tool --error-exitcode 3 "$B" gpu-probe sanitize $what \
          >> "$OUT/$phase.log" 2>&1
        say "compute-sanitizer $tool${what:+ ($what)} rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$phase.log" | tail -1)"
      done
      grep -E '^FAIL' "$OUT/$phase.log" | head -5 | tee -a "$log"
      ;;
    quick)
      timeout 200 "$B" measure-gpu --quick --out "$OUT" --commit "$(cat "$W/COMMIT")" --date "$(date -u +%F)" \
        2>&1 | grep -v '^\[measure-gpu\] reference' | tee -a "$log"
      ;;
    peer)
      timeout 300 python3 "$PEERS/torch_sdpa.py" --out "$OUT/torch.json" 2>&1 | tee -a "$log"
      ;;
    race)
      timeout 400 python3 "$PEERS/torch_race.py" --bin "$B" --rounds "${ROUNDS:-3}" --out "$OUT/race.json" \
        > "$OUT/race.log" 2>&1
      say "race rc=$? records=$(grep -c '^r[0-9]' "$OUT/race.log")"
      grep -vE '^r[0-9]' "$OUT/race.log" | head -20 | tee -a "$log"
      if ! has measure && ! has fmeasure && [ -f "$OUT/race.json" ]; then
        timeout 120 "$B" measure-gpu --only race --race "$OUT/race.json" --out "$OUT" --commit "$(cat "$W/COMMIT")" \
          --date "$(date -u +%F)" --rustc "$(cat "$W/RUSTC" 2>/dev/null || echo unknown)" 2>&1 | tee -a "$log"
      fi
      ;;
    drace)
      timeout 300 python3 "$PEERS/torch_decode_race.py" --bin "$B" --rounds "${DROUNDS:-5}" \
        --out "$OUT/decode_race.json" > "$OUT/decode_race.log" 2>&1
      say "decode race rc=$? records=$(grep -c '^r[0-9]' "$OUT/decode_race.log")"
      grep -vE '^r[0-9]' "$OUT/decode_race.log" | head -20 | tee -a "$log"
      if ! has measure && ! has paged && [ -f "$OUT/decode_race.json" ]; then
        timeout 120 "$B" measure-gpu --only race --race "$OUT/decode_race.json" --out "$OUT" \
          --commit "$(cat "$W/COMMIT")" --date "$(date -u +%F)" \
          --rustc "$(cat "$W/RUSTC" 2>/dev/null || echo unknown)" 2>&1 | tee -a "$log"
      fi
      ;;
    ncu)
      : > "$OUT/ncu.csv"
      for v in v1 v1b v5 v6 v7 v8; do
        for n in 64 2048; do
          echo "# $v N=$n D=64" >> "$OUT/ncu.csv"
          timeout 120 ncu --clock-control none --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum \
            --csv --print-units base -k regex:flash_ "$B" gpu-probe one $v $n 64 >> "$OUT/ncu.csv" 2>&1
        done
      done
      python3 - "$OUT/ncu.csv" "$OUT/dram.json" <<'PY' 2>&1 | tee -a "$log"
import csv, json, sys
rows, cur = [], None
names = {"v1": "ours/v1_naive", "v1b": "ours/v1b_naive_mma", "v5": "ours/v5_cp_async", "v6": "ours/v6_wgmma", "v7": "ours/v7_overlap",
         "v8": "ours/v8_tma"}
sums = {}
for line in open(sys.argv[1]):
    if line.startswith("# "):
        v, n, _ = line[2:].split(); cur = (names[v], int(n[2:])); sums[cur] = {}; continue
    if not line.startswith('"'):
        continue
    r = next(csv.reader([line]))
    if r[0] == "ID":
        header = r; continue
    rec = dict(zip(header, r))
    m = rec.get("Metric Name"); val = rec.get("Metric Value", "").replace(",", "")
    try: sums[cur][m] = sums[cur].get(m, 0.0) + float(val)
    except ValueError: pass
for (imp, n), s in sums.items():
    rd, wr = s.get("dram__bytes_read.sum", 0.0), s.get("dram__bytes_write.sum", 0.0)
    print(f"ncu {imp} N={n} D=64: DRAM read {rd/1e6:.1f} MB write {wr/1e6:.1f} MB, L2 {s.get('lts__t_bytes.sum', 0)/1e6:.1f} MB")
    rows.append(dict(impl=imp, n=n, d=64, mask="none", dram_bytes=rd + wr, dram_read=rd, dram_write=wr,
                     l2_bytes=s.get("lts__t_bytes.sum")))
json.dump(rows, open(sys.argv[2], "w"), indent=1)
PY
      # Without a grid measured in this run, the counts join the committed file's grid.
      if ! has measure && ! has fmeasure && [ -f "$OUT/dram.json" ]; then
        timeout 120 "$B" measure-gpu --only dram --dram "$OUT/dram.json" --out "$OUT" --commit "$(cat "$W/COMMIT")" \
          --date "$(date -u +%F)" --rustc "$(cat "$W/RUSTC" 2>/dev/null || echo unknown)" 2>&1 | tee -a "$log"
      fi
      ;;
    measure|fmeasure)
      extra=""
      [ "$phase" = fmeasure ] && extra="--only flash"
      [ -f "$OUT/torch.json" ] && extra="$extra --peer $OUT/torch.json"
      [ -f "$OUT/dram.json" ] && extra="$extra --dram $OUT/dram.json"
      [ -f "$OUT/crosscheck.json" ] && extra="$extra --peer-check $OUT/crosscheck.json"
      [ -f "$OUT/race.json" ] && extra="$extra --race $OUT/race.json"
      if [ "$phase" = measure ]; then
        [ -f "$OUT/torch_decode.json" ] && extra="$extra --peer-decode $OUT/torch_decode.json"
        [ -f "$OUT/decode_race.json" ] && extra="$extra --race $OUT/decode_race.json"
      fi
      timeout 420 "$B" measure-gpu $extra --out "$OUT" --commit "$(cat "$W/COMMIT")" --date "$(date -u +%F)" \
        --rustc "$(cat "$W/RUSTC" 2>/dev/null || echo unknown)" \
        2>&1 | grep -v '^\[measure-gpu\] reference' | tee -a "$log"
      ;;
  esac
  case $phase in paged|measure|fmeasure|peer|dpeer|race|drace) smi_stop "$phase" ;; esac
  say "-- phase $phase took $(( $(date +%s) - t0 )) s"
done
# The phases' own logs and the clock samples in one archive beside summary.log and the measurement files,
# so that OUT stays a handful of files.
(cd "$OUT" && ls *.log smi-*.csv ncu.csv 2>/dev/null | grep -vx summary.log | tar czf logs.tar.gz -T - --remove-files 2>/dev/null)
