#!/usr/bin/env python3
"""Lab 02's "matches PyTorch reference attention" check: our kernel's output against PyTorch's
math-backend SDPA on the very same inputs.

`modern-attention gpu-probe save-check DIR` writes, for D in {64, 128} and masks none/causal, the inputs
q, k, v (unit-normal, fp16) and our fastest version's output o as raw little-endian fp16 with a
manifest. This script runs torch.nn.functional.scaled_dot_product_attention with the math backend
(enable_gqa, is_causal) on the same q, k, v in fp16 on the GPU, and also a float64 reference, and records:
max |ours - torch math| (the check: <= 1e-3), max |ours - f64| and max |torch math - f64|.

    python3 bench/peers/torch_check.py DIR --out crosscheck.json
    modern-attention measure-gpu ... --peer-check crosscheck.json
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def load(dirname, stem, name, shape):
    x = np.fromfile(os.path.join(dirname, f"{stem}-{name}.f16"), dtype="<f2").reshape(shape)
    return torch.from_numpy(x.copy()).cuda()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sets = json.load(open(os.path.join(a.dir, "manifest.json")))
    records = []
    for s in sets:
        b, hq, hkv, n, d = s["b"], s["hq"], s["hkv"], s["n"], s["d"]
        q = load(a.dir, s["stem"], "q", (b, hq, n, d))
        k = load(a.dir, s["stem"], "k", (b, hkv, n, d))
        v = load(a.dir, s["stem"], "v", (b, hkv, n, d))
        ours = load(a.dir, s["stem"], "o", (b, hq, n, d)).double()
        with sdpa_kernel([SDPBackend.MATH]):
            math = F.scaled_dot_product_attention(q, k, v, is_causal=s["causal"], enable_gqa=True).double()
        ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=s["causal"],
                                             enable_gqa=True)
        e_math = (ours - math).abs().max().item()
        e_ours = (ours - ref).abs().max().item()
        e_torch = (math - ref).abs().max().item()
        mask = "causal" if s["causal"] else "none"
        print(f"{s['impl']} D={d} {mask:6}: max|ours - torch math| {e_math:.2e}  "
              f"max|ours - f64| {e_ours:.2e}  max|torch math - f64| {e_torch:.2e}", flush=True)
        records.append(dict(variant="crosscheck", impl=s["impl"], dtype="f16", b=b, hq=hq, hkv=hkv, nq=n, nk=n,
                            d=d, mask=mask, ms=0.0, ms_min=0.0, ms_max=0.0, tflops=0.0, gbps=0.0, flops=0.0,
                            bytes_model=0.0, bytes_counted=None, dram_bytes=None, max_err=e_math,
                            checked=e_math <= 1e-3 and e_ours <= 1e-3, err_vs_f64=e_ours,
                            torch_math_err_vs_f64=e_torch,
                            torch=torch.__version__))
    dev = torch.cuda.get_device_properties(0)
    with open(a.out, "w") as f:
        json.dump(dict(machine=dict(name=dev.name, torch=torch.__version__), records=records), f, indent=1)


if __name__ == "__main__":
    main()
