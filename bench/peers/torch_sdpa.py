#!/usr/bin/env python3
"""PyTorch SDPA on the GPU harness's grid ("version 0" of lab 02), as measurement records.

Same shapes as `modern-attention measure-gpu`: fp16, D in {64, 128}, N in {64 .. 16384}, B*N = 16k tokens,
H = 2048/D, causal and not. Each of SDPA's backends (flash = FlashAttention-2, cuDNN, mem-efficient, math)
is forced with torch.nn.attention.sdpa_kernel; a configuration a backend refuses (or runs out of memory
on) is skipped and said so. Each is first checked against a float64 reference on batch 0, head 0, the
last 128 query rows (the crate's rule, `close` in peer_common.py, and max error <= 1e-3), then timed with CUDA events: 3 warm-ups, then the median of at
least 20 launches, inputs rotated over enough sets that their bytes exceed twice the L2.

Also measures the card's ceilings for the roofline: a large fp16 matrix product (peak) and a large
device-to-device copy (bandwidth, bytes read plus written). Run on the GPU machine, beside the harness:

    python3 bench/peers/torch_sdpa.py --out /tmp/torch_gpu.json [--quick]
    modern-attention measure-gpu --peer /tmp/torch_gpu.json
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from peer_common import close, driver_version, json_err, lowp_attention, reference_last_rows, time_ms

BACKENDS = [
    ("torch/flash", SDPBackend.FLASH_ATTENTION),
    ("torch/cudnn", SDPBackend.CUDNN_ATTENTION),
    ("torch/efficient", SDPBackend.EFFICIENT_ATTENTION),
    ("torch/math", SDPBackend.MATH),
]
NS = [64, 512, 1024, 2048, 4096, 8192, 16384]


def ceilings():
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.float16) for _ in range(2))
    t = time_ms(lambda i: a @ b, 20)
    peak = 2 * n**3 / (t[len(t) // 2] * 1e-3) / 1e12
    x = torch.empty(1 << 30, device="cuda", dtype=torch.uint8).random_(0, 255)  # 1 GiB
    y = torch.empty_like(x)
    t = time_ms(lambda i: y.copy_(x), 20)
    copy = 2 * x.numel() / (t[len(t) // 2] * 1e-3) / 1e9
    del a, b, x, y
    torch.cuda.empty_cache()
    return peak, copy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(27)
    dev = torch.cuda.get_device_properties(0)
    l2 = dev.L2_cache_size  # sizes the input rotation: read from the card, never guessed
    peak, copy = ceilings()
    print(f"torch: {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
          f"on {dev.name}: fp16 matmul {peak:.0f} TFLOP/s, copy {copy:.0f} GB/s", flush=True)
    records = []
    ns = [64, 2048] if a.quick else NS
    for d in (64, 128):
        for n in ns:
            b, h = 16384 // n, 2048 // d
            one = 4 * b * h * n * d * 2  # bytes of q, k, v, o
            nsets = max(2, -(-2 * l2 // one) + 1)
            sets = [[torch.randn(b, h, n, d, device="cuda", dtype=torch.float16) for _ in range(3)]
                    for _ in range(nsets)]
            for causal in (False, True):
                q, k, v = (t[:1, :1, -128:] if j == 0 else t[:1, :1] for j, t in enumerate(sets[0]))
                # Reference: the last 128 rows of head 0 in float64, bottom-right aligned like ours.
                ref = reference_last_rows(q, k, v, n, causal)
                lowp = lowp_attention(q, k, v, causal)  # the rule's low-precision reference
                for name, backend in BACKENDS:
                    if name == "torch/math" and n > 4096:
                        continue  # materialises S: gigabytes, and minutes of device time
                    try:
                        with sdpa_kernel([backend]):
                            out = F.scaled_dot_product_attention(*sets[0], is_causal=causal)
                            err, ok = close(out[:1, :1, -128:], lowp, ref, n, bar=1e-3)
                            del out
                            fn = lambda i: F.scaled_dot_product_attention(*sets[i % nsets], is_causal=causal)
                            probe = time_ms(fn, 1)[0]
                            runs = int(min(200, max(20, 300 / max(probe, 1e-3))))
                            t = time_ms(fn, runs, warmup=0)
                    except (RuntimeError, torch.OutOfMemoryError) as e:
                        print(f"{name:16} D={d:3} N={n:5} causal={causal}: skipped ({str(e).splitlines()[0][:80]})",
                              flush=True)
                        torch.cuda.empty_cache()
                        continue
                    ms = t[len(t) // 2]
                    flops = 4.0 * b * h * n * n * d / (2 if causal else 1)
                    bytes_model = 2.0 * b * h * 4 * n * d
                    print(f"{name:16} D={d:3} N={n:5} {'causal' if causal else 'none':6}: {ms:9.4f} ms "
                          f"{flops / ms / 1e9:7.1f} TFLOP/s err {err:.1e}", flush=True)
                    records.append(dict(variant="flash", impl=name, dtype="f16", b=b, hq=h, hkv=h, nq=n, nk=n,
                                        d=d, mask="causal" if causal else "none", ms=ms, ms_min=t[0],
                                        ms_max=t[-1], tflops=flops / ms / 1e9, gbps=bytes_model / ms / 1e6,
                                        flops=flops, bytes_model=bytes_model, bytes_counted=None,
                                        dram_bytes=None, max_err=json_err(err), checked=ok,
                                        torch=torch.__version__))
            del sets
            torch.cuda.empty_cache()
    machine = dict(name=dev.name, driver=driver_version(), cuda=torch.version.cuda, torch=torch.__version__,
                   cudnn=torch.backends.cudnn.version(), peak_tflops=peak, copy_gbps=copy)
    with open(a.out, "w") as f:
        json.dump(dict(machine=machine, records=records), f, indent=1)


if __name__ == "__main__":
    main()
