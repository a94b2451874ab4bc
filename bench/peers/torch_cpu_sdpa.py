#!/usr/bin/env python3
"""PyTorch's CPU scaled_dot_product_attention on the CPU harness's grid, as measurement records.

Same shapes, dtypes, masks and thread count as `modern-attention measure-cpu`; each configuration is
first checked against a float64 reference on batch 0, heads 0-1 under the crate's own rule (at most twice
the error of standard attention in the same precision, plus the dtype's rounding floor; and 1e-3 for
float16), then timed: one warm-up, then the median of at
least five runs. Run by hand (PyTorch is not a dependency of the crate):

    python3 bench/peers/torch_cpu_sdpa.py --threads 2 --out /tmp/torch_cpu.json [--quick]
    cargo run --release -- measure-cpu --peer /tmp/torch_cpu.json

With --serve it times on request instead, so that its runs and ours can alternate in the same seconds
of a shared machine (what `measure-cpu --with-torch` does): each line on stdin is a JSON object
{"b", "h", "n", "d", "dtype": "f32" | "f16", "causal", "seconds"}; the reply, one JSON line on stdout,
is {"times_ms": [...], "max_err", "checked", "torch"}: the runs of one timing window of that many
seconds (at least one run). A configuration is built, checked and warmed up on its first request.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from peer_common import close, json_err, lowp_attention


def grid(quick):
    ns = [64, 2048] if quick else [64, 512, 2048]
    ds = [64] if quick else [64, 128]
    dts = [torch.float32] if quick else [torch.float32, torch.float16]
    for dt in dts:
        for d in ds:
            for n in ns:
                for causal in (False, True):
                    yield dict(b=max(1, 2048 // n), h=4, n=n, d=d, dtype=dt, causal=causal)


def prepare(b, h, n, d, dt, causal):
    """Inputs for one configuration, checked against float64 on batch 0, heads 0-1, and one warm-up."""
    q, k, v = (torch.randn(b, h, n, d).to(dt) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    ref = F.scaled_dot_product_attention(q[:1, :2].double(), k[:1, :2].double(), v[:1, :2].double(), is_causal=causal)
    lowp = lowp_attention(q[:1, :2], k[:1, :2], v[:1, :2], causal)  # the rule's low-precision reference
    err, ok = close(out[:1, :2], lowp, ref, n, bar=1e-3 if dt == torch.float16 else None)
    return (q, k, v), err, ok


def serve():
    key, inputs = None, None
    # One small call first, then say so: the caller measures its ceilings and first configurations only
    # after this process has imported torch and warmed up, not while it does.
    x = torch.randn(1, 1, 64, 64)
    F.scaled_dot_product_attention(x, x, x)
    print(json.dumps(dict(ready=True, torch=torch.__version__)), flush=True)
    for line in sys.stdin:
        r = json.loads(line)
        dt = torch.float16 if r["dtype"] == "f16" else torch.float32
        want = (r["b"], r["h"], r["n"], r["d"], dt, bool(r["causal"]))
        if want != key:
            key, inputs = want, prepare(*want)
        (q, k, v), err, ok = inputs
        times, start = [], time.perf_counter()
        while not times or time.perf_counter() - start < r["seconds"]:
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, is_causal=key[5])
            times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps(dict(times_ms=times, max_err=json_err(err), checked=ok, torch=torch.__version__)), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(27)
    if a.serve:
        serve()
        return
    if not a.out:
        ap.error("--out is required without --serve")
    records = []
    for c in grid(a.quick):
        b, h, n, d, dt, causal = c["b"], c["h"], c["n"], c["d"], c["dtype"], c["causal"]
        (q, k, v), err, ok = prepare(b, h, n, d, dt, causal)
        times = []
        start = time.perf_counter()
        while len(times) < 5 or (time.perf_counter() - start < 0.5 and len(times) < 30):
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        ms = times[len(times) // 2]
        flops = 4.0 * b * h * n * n * d / (2 if causal else 1)
        e = 2 if dt == torch.float16 else 4
        bytes_model = e * b * h * 4.0 * n * d
        name = "f16" if dt == torch.float16 else "f32"
        print(f"torch/cpu {name} N={n:5} D={d:3} {'causal' if causal else 'none':6}: {ms:9.3f} ms "
              f"{flops / ms / 1e6:7.1f} GFLOP/s err {err:.1e}", flush=True)
        records.append(dict(variant="flash", impl="torch/cpu", dtype=name, b=b, hq=h, hkv=h, nq=n, nk=n, d=d,
                            mask="causal" if causal else "none", ms=ms, ms_min=times[0], ms_max=times[-1],
                            tflops=flops / ms / 1e9, gbps=bytes_model / ms / 1e6, flops=flops,
                            bytes_model=bytes_model, bytes_counted=None, dram_bytes=None, max_err=json_err(err),
                            checked=ok, torch=torch.__version__, threads=a.threads))
    with open(a.out, "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
