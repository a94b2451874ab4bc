#!/usr/bin/env python3
"""PyTorch's CPU scaled_dot_product_attention on the CPU harness's grid, as measurement records.

Same shapes, dtypes, masks and thread count as `modern-attention measure-cpu`; each configuration is
first checked against a float64 reference on batch 0, heads 0-1 (max error <= 1e-3 for float16, or
the float32 rounding of the same order for float32), then timed: one warm-up, then the median of at
least five runs. Run by hand (PyTorch is not a dependency of the crate):

    python3 bench/peers/torch_cpu_sdpa.py --threads 2 --out /tmp/torch_cpu.json [--quick]
    cargo run --release -- measure-cpu --peer /tmp/torch_cpu.json
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def grid(quick):
    ns = [64, 2048] if quick else [64, 512, 2048]
    ds = [64] if quick else [64, 128]
    dts = [torch.float32] if quick else [torch.float32, torch.float16]
    for dt in dts:
        for d in ds:
            for n in ns:
                for causal in (False, True):
                    yield dict(b=max(1, 2048 // n), h=4, n=n, d=d, dtype=dt, causal=causal)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(27)
    records = []
    for c in grid(a.quick):
        b, h, n, d, dt, causal = c["b"], c["h"], c["n"], c["d"], c["dtype"], c["causal"]
        q, k, v = (torch.randn(b, h, n, d).to(dt) for _ in range(3))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        ref = F.scaled_dot_product_attention(q[:1, :2].double(), k[:1, :2].double(), v[:1, :2].double(), is_causal=causal)
        err = (out[:1, :2].double() - ref).abs().max().item()
        bar = 1e-3 if dt == torch.float16 else 1e-5
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
                            bytes_model=bytes_model, bytes_counted=None, dram_bytes=None, max_err=err,
                            checked=err <= bar, torch=torch.__version__, threads=a.threads))
    with open(a.out, "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
