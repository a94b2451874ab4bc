#!/usr/bin/env python3
"""Our paged decode and PyTorch's SDPA decode, interleaved context by context (lab 03's speed target).

Table 03.5 times our decode kernels in one phase and PyTorch's SDPA (`torch_decode.py`) in another of the
same run, a minute or more apart, and the card's clock moves between them by as much as the distance being
measured. Here, for each context of lab 03's batch (16 sequences, GQA 32/8, D = 128, fp16), our kernel
(`modern-attention gpu-probe serve`, one process for the whole run: `decode N [check]`, the paged batch
through shuffled tables and its contiguous twin) and PyTorch's SDPA on contiguous K/V of the same shape
(the default dispatcher, and cuDNN forced) are timed back to back, in rounds, the side that goes first
alternating from round to round. A ratio is taken within a round.

Both sides use the same method: 5 warm-up launches, then 40 launches each between its own pair of CUDA
events, the 21st fastest of the 40. Each side is checked before it is timed, in the first round: ours
against the f64 reference on its first and last sequences (every head), PyTorch's on sequence 0 (every
head) against float64, under the crate's rule and max error <= 1e-3. The cache at these contexts (134 MB
and up) exceeds the L2, so no input rotation is needed.

    python3 bench/peers/torch_decode_race.py --bin DIR/bin/modern-attention --out OUT/decode_race.json
    modern-attention measure-gpu --only race --race OUT/decode_race.json

Records: variant `decode_race`, `impl` `ours/gpu-paged`, `ours/gpu-contiguous`, `torch/sdpa` or
`torch/cudnn`, with `round`.
"""
import argparse
import contextlib
import re
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from peer_common import Ours, close, json_err, lowp_attention, time_ms, write_race

S, HQ, HKV, D = 16, 32, 8, 128
CONTEXTS = [2048, 4096, 16384, 65536]
BACKENDS = [("torch/sdpa", None), ("torch/cudnn", [SDPBackend.CUDNN_ATTENTION])]
WARMUP, RUNS = 5, 40
TIME = re.compile(r"^time (\S+) N=(\d+): ([\d.]+) ms \(min ([\d.]+) max ([\d.]+) ms\)")
CHECK = re.compile(r"^check (\S+) N=(\d+): max error (\S+)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(27)
    dev = torch.cuda.get_device_properties(0)
    ours = Ours(a.bin)
    print(f"decode race: torch {torch.__version__} cudnn {torch.backends.cudnn.version()} on {dev.name}, "
          f"{a.rounds} rounds", flush=True)
    records, checked, inputs = [], {}, {}

    def record(name, n, r, ms, lo, hi, err):
        flops = 4.0 * S * HQ * n * D
        bytes_model = 2.0 * (2 * S * HKV * n * D) + 2.0 * (2 * S * HQ * D) + 4.0 * S * HQ
        records.append(dict(variant="decode_race", impl=name, dtype="f16", b=S, hq=HQ, hkv=HKV, nq=1, nk=n, d=D,
                            mask="none", ms=ms, ms_min=lo, ms_max=hi, tflops=flops / ms / 1e9,
                            gbps=bytes_model / ms / 1e6, flops=flops, bytes_model=bytes_model,
                            bytes_counted=None, dram_bytes=None, max_err=json_err(err), checked=True, round=r))
        print(f"r{r} {name:20} N={n:6}: {ms:8.5f} ms {bytes_model / ms / 1e6:6.0f} GB/s", flush=True)

    def run_ours(n, r):
        lines = ours.ask(f"decode {n}" + (" check" if r == 1 else ""))
        if r == 1:
            for m in map(CHECK.match, lines):
                if m:
                    checked[(m.group(1), n)] = float(m.group(3))
        for m in map(TIME.match, lines):
            if not m:
                continue
            err = checked.get((m.group(1), n))
            if err is None:
                print(f"{m.group(1)} N={n}: not checked ({lines}); not recorded", flush=True)
                continue
            record(m.group(1), n, r, float(m.group(3)), float(m.group(4)), float(m.group(5)), err)
        if not any(map(TIME.match, lines)):
            print(f"ours N={n}: no time in {lines}", flush=True)

    def run_torch(n, r):
        q, k, v = inputs[n]
        for name, backends in BACKENDS:
            key = (name, n)

            def call(_):
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

            ctx = (lambda: sdpa_kernel(backends)) if backends is not None else contextlib.nullcontext
            if r == 1:
                g = HQ // HKV
                kr, vr = (x[:1].double().repeat_interleave(g, 1) for x in (k, v))
                ref = torch.softmax(q[:1].double() @ kr.transpose(-1, -2) / D**0.5, -1) @ vr
                del kr, vr
                lowp = lowp_attention(q[:1], k[:1], v[:1], False)
                try:
                    with ctx():
                        out = call(0)
                    err, ok = close(out[:1], lowp, ref, n, bar=1e-3)
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    print(f"{name} N={n}: skipped ({str(e).splitlines()[0][:80]})", flush=True)
                    err, ok = None, False
                checked[key] = err if ok else None
                if err is not None and not ok:
                    print(f"{name} N={n}: error {err:.1e} fails the rule or 1e-3; not timed", flush=True)
            if checked.get(key) is None:
                continue
            with ctx():
                t = time_ms(call, RUNS, warmup=WARMUP)
            record(name, n, r, t[RUNS // 2], t[0], t[-1], checked[key])

    for n in CONTEXTS:
        q = torch.randn(S, HQ, 1, D, device="cuda", dtype=torch.float16)
        k, v = (torch.randn(S, HKV, n, D, device="cuda", dtype=torch.float16) for _ in range(2))
        inputs[n] = (q, k, v)
    for r in range(1, a.rounds + 1):
        for n in CONTEXTS:
            sides = [run_ours, run_torch] if r % 2 == 1 else [run_torch, run_ours]
            for side in sides:
                side(n, r)
    ours.close()
    return write_race(a.out, dev, records, "decode race")


if __name__ == "__main__":
    sys.exit(main())
