#!/usr/bin/env python3
"""Our fastest kernel and PyTorch's cuDNN and FlashAttention-2 backends, interleaved shape by shape.

Table 02.1 times every version in one phase and PyTorch's backends in another of the same run, minutes
apart; under sustained load the card's clock moves, and the same kernel's rows have moved by several
percent between runs. Here, for each shape of the grid, our kernel (`modern-attention gpu-probe serve`,
one process for the whole run, so its modules compile once) and PyTorch's backends (this process) are
timed back to back, in rounds, the side that goes first alternating from round to round. A ratio is
taken within a round, between runs seconds apart, and the table reports each shape's ratios over the
rounds.

Both sides use the same method: fresh unit-normal q, k and v (independent) whose bytes exceed the L2,
rotated over several sets; 5 warm-up launches, then 40 launches each between its own pair of CUDA events;
the 21st fastest of the 40. Each side is checked before it is timed, in the first round: ours against
the f64 reference as the harness checks it (`time ... check`), PyTorch's on the last 128 rows of batch
0, head 0, against float64 (the crate's rule and max error <= 1e-3).

    python3 bench/peers/torch_race.py --bin DIR/bin/modern-attention --out OUT/race.json [--rounds 3]
    modern-attention measure-gpu --only race --race OUT/race.json

Records: variant `race`, `impl` `ours/v8_tma` (the default configuration `flash::forward` picks) or
`torch/cudnn`, `torch/flash`, with `round`.
"""
import argparse
import re
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from peer_common import Ours, close, json_err, lowp_attention, reference_last_rows, time_ms, write_race

BACKENDS = [("torch/cudnn", SDPBackend.CUDNN_ATTENTION), ("torch/flash", SDPBackend.FLASH_ATTENTION)]
WARMUP, RUNS = 5, 40
TIME = re.compile(r"^time (\S+) N=(\d+) D=(\d+) (\S+): ([\d.]+) ms [\d.]+ TFLOP/s \(min ([\d.]+) max ([\d.]+) ms")
CHECK = re.compile(r"^check \S+ N=\d+ D=\d+ \S+: max error (\S+)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the modern-attention binary")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ns", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--shapes", default="64;64 causal;128;128 causal", help="`D [causal]`, semicolon-separated")
    a = ap.parse_args()
    torch.manual_seed(29)
    dev = torch.cuda.get_device_properties(0)
    l2 = dev.L2_cache_size  # sizes the input rotation: read from the card, never guessed
    ns = [int(x) for x in a.ns.split(",")]
    shapes = [(int(s.split()[0]), "causal" in s) for s in a.shapes.split(";")]
    ours = Ours(a.bin)
    print(f"race: torch {torch.__version__} cudnn {torch.backends.cudnn.version()} on {dev.name}, "
          f"{a.rounds} rounds", flush=True)

    inputs, checked = {}, {}
    records = []

    def record(name, d, n, causal, r, ms, lo, hi, err, ok):
        b, h = 16384 // n, 2048 // d
        flops = 4.0 * b * h * n * n * d / (2 if causal else 1)
        bytes_model = 2.0 * b * h * 4 * n * d
        records.append(dict(variant="race", impl=name, dtype="f16", b=b, hq=h, hkv=h, nq=n, nk=n, d=d,
                            mask="causal" if causal else "none", ms=ms, ms_min=lo, ms_max=hi,
                            tflops=flops / ms / 1e9, gbps=bytes_model / ms / 1e6, flops=flops,
                            bytes_model=bytes_model, bytes_counted=None, dram_bytes=None, max_err=json_err(err),
                            checked=ok, round=r))
        print(f"r{r} {name:12} D={d:3} N={n:5} {'causal' if causal else 'none':6}: {ms:8.4f} ms "
              f"{flops / ms / 1e9:6.1f} TFLOP/s", flush=True)

    def run_ours(d, n, causal, r):
        cmd = f"time v8 {n} {d}" + (" causal" if causal else "") + (" check" if r == 1 else "")
        lines = ours.ask(cmd)
        err = next((float(m.group(1)) for m in map(CHECK.match, lines) if m), None)
        if r == 1:
            if err is None:
                print(f"ours D={d} N={n} causal={causal}: not checked ({lines}); not timed", flush=True)
                checked[("ours", d, n, causal)] = None
                return
            checked[("ours", d, n, causal)] = err
        err = checked.get(("ours", d, n, causal))
        if err is None:
            return
        m = next((m for m in map(TIME.match, lines) if m), None)
        if m is None:
            print(f"ours D={d} N={n} causal={causal}: no time in {lines}", flush=True)
            return
        record("ours/v8_tma", d, n, causal, r, float(m.group(5)), float(m.group(6)), float(m.group(7)), err, True)

    def run_torch(d, n, causal, r):
        sets, nsets = inputs[(d, n)]
        for name, backend in BACKENDS:
            key = (name, d, n, causal)
            if r == 1:
                q, k, v = (t[:1, :1, -128:] if j == 0 else t[:1, :1] for j, t in enumerate(sets[0]))
                ref = reference_last_rows(q, k, v, n, causal)
                lowp = lowp_attention(q, k, v, causal)  # the rule's low-precision reference
                ok = False
                try:
                    with sdpa_kernel([backend]):
                        out = F.scaled_dot_product_attention(*sets[0], is_causal=causal)
                    err, ok = close(out[:1, :1, -128:], lowp, ref, n, bar=1e-3)
                    del out
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    print(f"{name} D={d} N={n} causal={causal}: skipped ({str(e).splitlines()[0][:80]})", flush=True)
                    err = None
                checked[key] = err if ok else None
                if err is not None and not ok:
                    print(f"{name} D={d} N={n} causal={causal}: error {err:.1e} fails the rule or 1e-3; not timed",
                          flush=True)
            if checked.get(key) is None:
                continue
            with sdpa_kernel([backend]):
                fn = lambda i: F.scaled_dot_product_attention(*sets[i % nsets], is_causal=causal)
                for i in range(WARMUP):
                    fn(i)
                t = time_ms(fn, RUNS, warmup=0)
            record(name, d, n, causal, r, t[RUNS // 2], t[0], t[-1], checked[key], True)

    for d in sorted({d for d, _ in shapes}):
        for n in ns:
            b, h = 16384 // n, 2048 // d
            one = 4 * b * h * n * d * 2  # bytes of q, k, v, o
            nsets = max(2, -(-2 * l2 // one) + 1)
            inputs[(d, n)] = ([[torch.randn(b, h, n, d, device="cuda", dtype=torch.float16) for _ in range(3)]
                               for _ in range(nsets)], nsets)
    for r in range(1, a.rounds + 1):
        for d, causal in shapes:
            for n in ns:
                sides = [run_ours, run_torch] if r % 2 == 1 else [run_torch, run_ours]
                for side in sides:
                    side(d, n, causal, r)
    ours.close()
    return write_race(a.out, dev, records, "race")


if __name__ == "__main__":
    sys.exit(main())
