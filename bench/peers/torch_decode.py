#!/usr/bin/env python3
"""PyTorch SDPA decode on lab 03's shapes, as measurement records (the peer of `measure-gpu --only paged`).

One query token per sequence against a contiguous KV cache: q (16, 32, 1, 128), k and v (16, 8, N, 128),
fp16, GQA 32/8, N in {64, 2048, 4096, 16384, 65536}, the shapes `modern-attention measure-gpu` times its
paged and contiguous decode kernels on. Each SDPA backend (flash = FlashAttention-2, cuDNN,
mem-efficient, math, and the default dispatcher) is asked for the call with enable_gqa=True; a backend
that refuses GQA is timed again on K and V repeated to 32 heads (`-repeat-kv`: what a user of that
backend must do, reading 4x the bytes). Each is first checked against a float64 reference on sequence 0
(every head; the crate's rule and max error <= 1e-3), then timed with CUDA events: 3 warm-ups, the median of at least 20.
Bytes in the records use the kernels' model (K and V rows, q, o, one f32 per row), so GB/s compare.
At N = 64 and 2048 the default dispatcher's step is also timed as `modern-attention measure-gpu` times
ours for variant `decode_launch` (src/measure/gpu_paged.rs, `launch_records`): as launched, queued behind
a held stream (the GPU's time alone, with the host's time to issue one call), and captured as a CUDA
graph (replayed as launched, and queued), each output checked.

    python3 bench/peers/torch_decode.py --out /tmp/torch_decode.json [--quick]
    modern-attention measure-gpu --only paged --peer-decode /tmp/torch_decode.json
"""
import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from peer_common import close, driver_version, json_err, lowp_attention

S, HQ, HKV, D = 16, 32, 8, 128
CONTEXTS = [64, 2048, 4096, 16384, 65536]
BACKENDS = [
    ("torch/flash", [SDPBackend.FLASH_ATTENTION]),
    ("torch/cudnn", [SDPBackend.CUDNN_ATTENTION]),
    ("torch/efficient", [SDPBackend.EFFICIENT_ATTENTION]),
    ("torch/math", [SDPBackend.MATH]),
    ("torch/sdpa", None),  # the default dispatcher: what a plain call gets
]


def event_pairs(fn, runs):
    """`runs` calls of fn, each between its own pair of CUDA events, waited for; the pairs."""
    pairs = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        pairs.append((a, b))
    torch.cuda.synchronize()
    return pairs


def time_ms(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    return sorted(a.elapsed_time(b) for a, b in event_pairs(fn, runs))


LAUNCH_CONTEXTS = [64, 2048]  # LAUNCH_CONTEXTS in src/measure/gpu_paged.rs
LAUNCH_RUNS = 100


def cycles_per_ms():
    """The rate of torch.cuda._sleep's cycles, measured: a held stream is asked for in cycles."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1000)  # loads the kernel
    a.record()
    torch.cuda._sleep(10_000_000)
    b.record()
    torch.cuda.synchronize()
    return 10_000_000 / a.elapsed_time(b)


def queued(fn, runs, rate, warmup=3):
    """`fn` timed as Device::time_each_queued times ours: after the warm-ups the stream is held for four
    times their host pace (plus 2 ms) while `runs` calls are issued, then `runs` more each between its own
    events. Returns (sorted times in ms, host microseconds a call, ms of the stream outside the timed pairs: the
    events between runs, and any wait for the host)."""
    t = time.perf_counter()
    for _ in range(warmup):
        fn()
    per_call = (time.perf_counter() - t) / warmup
    torch.cuda.synchronize()
    hold_ms = min(4 * per_call * runs * 1e3 + 2.0, 1000.0)
    torch.cuda._sleep(int(hold_ms * rate))
    t = time.perf_counter()
    for _ in range(runs):
        fn()
    host_us = (time.perf_counter() - t) * 1e6 / runs
    torch.cuda.synchronize()
    torch.cuda._sleep(int(hold_ms * rate))
    first = torch.cuda.Event(enable_timing=True)
    first.record()
    pairs = event_pairs(fn, runs)
    ts = [a.elapsed_time(b) for a, b in pairs]
    idle = max(0.0, first.elapsed_time(pairs[-1][1]) - sum(ts))
    return sorted(ts), host_us, idle


def launch_records(q, k, v, lowp, ref, n, flops, bytes_model, rate):
    """The default dispatcher's decode step at context n, variant `decode_launch`: launched, queued,
    graph and graph-queued (see the module's docstring), each output checked first."""
    def call():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    out = call()
    err, ok = close(out[:1], lowp, ref, n, bar=1e-3)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # PyTorch's rule: warm a captured call up on a side stream
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_out = call()
    g_out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    g_err, g_ok = close(g_out[:1], lowp, ref, n, bar=1e-3)
    launched = time_ms(call, LAUNCH_RUNS)
    q_t, host, idle = queued(call, LAUNCH_RUNS, rate)
    g_launched = time_ms(graph.replay, LAUNCH_RUNS)
    gq_t, g_host, g_idle = queued(graph.replay, LAUNCH_RUNS, rate)
    rows = [("launched", launched, host, None, err, ok), ("queued", q_t, None, idle, err, ok),
            ("graph", g_launched, g_host, None, g_err, g_ok), ("graph-queued", gq_t, None, g_idle, g_err, g_ok)]
    out = []
    for timing, t, host_us, idle_ms, e, passed in rows:
        ms = t[len(t) // 2]
        print(f"launch torch/sdpa N={n:6} {timing:12}: {ms:8.4f} ms, host "
              f"{'-' if host_us is None else f'{host_us:.1f}'} us, GPU idle "
              f"{'-' if idle_ms is None else f'{idle_ms:.4f}'} ms, err {e:.1e}", flush=True)
        rec = dict(variant="decode_launch", impl="torch/sdpa", dtype="f16", b=S, hq=HQ, hkv=HKV, nq=1, nk=n,
                   d=D, mask="none", ms=ms, ms_min=t[0], ms_max=t[-1], tflops=flops / ms / 1e9,
                   gbps=bytes_model / ms / 1e6, flops=flops, bytes_model=bytes_model, bytes_counted=None,
                   dram_bytes=None, max_err=json_err(e), checked=passed, torch=torch.__version__, timing=timing)
        if host_us is not None:
            rec["host_us"] = host_us
        if idle_ms is not None:
            rec["idle_ms"] = idle_ms
        out.append(rec)
    del graph, g_out
    return out


def read_bandwidth():
    x = torch.empty(1 << 29, device="cuda", dtype=torch.float32).normal_()  # 2 GiB
    t = time_ms(lambda: x.sum(), 20)
    gbps = x.numel() * 4 / (t[len(t) // 2] * 1e-3) / 1e9
    del x
    torch.cuda.empty_cache()
    return gbps


def run(backends, q, k, v, gqa):
    """Check-call once, then time; the backend is forced around the whole loop (no per-call overhead)."""
    def call():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    with (sdpa_kernel(backends) if backends is not None else contextlib.nullcontext()):
        out = call()
        probe = time_ms(call, 1)[0]
        runs = int(min(200, max(20, 300 / max(probe, 1e-3))))
        return out, time_ms(call, runs, warmup=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(27)
    dev = torch.cuda.get_device_properties(0)
    read = read_bandwidth()
    print(f"torch {torch.__version__} on {dev.name}: read bandwidth (x.sum) {read:.0f} GB/s", flush=True)
    rate = cycles_per_ms()
    records = []
    for n in ([64, 4096] if a.quick else CONTEXTS):
        q = torch.randn(S, HQ, 1, D, device="cuda", dtype=torch.float16)
        k, v = (torch.randn(S, HKV, n, D, device="cuda", dtype=torch.float16) for _ in range(2))
        g = HQ // HKV
        kr, vr = (x[:1].double().repeat_interleave(g, 1) for x in (k, v))
        ref = torch.softmax(q[:1].double() @ kr.transpose(-1, -2) / D**0.5, -1) @ vr
        del kr, vr
        lowp = lowp_attention(q[:1], k[:1], v[:1], False)  # the rule's low-precision reference
        flops = 4.0 * S * HQ * n * D
        bytes_model = 2.0 * (2 * S * HKV * n * D) + 2.0 * (2 * S * HQ * D) + 4.0 * S * HQ
        for name, backends in BACKENDS:
            for gqa in (True, False):
                label = name if gqa else name + "-repeat-kv"
                try:
                    if gqa:
                        out, t = run(backends, q, k, v, True)
                    else:
                        kk, vv = (x.repeat_interleave(g, 1) for x in (k, v))
                        out, t = run(backends, q, kk, vv, False)
                        del kk, vv
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    print(f"{label:26} N={n:6}: skipped ({str(e).splitlines()[0][:90]})", flush=True)
                    torch.cuda.empty_cache()
                    continue
                err, ok = close(out[:1], lowp, ref, n, bar=1e-3)
                ms = t[len(t) // 2]
                print(f"{label:26} N={n:6}: {ms:8.4f} ms {bytes_model / ms / 1e6:6.0f} GB/s "
                      f"({100 * bytes_model / ms / 1e6 / read:4.1f}% of read) err {err:.1e}", flush=True)
                records.append(dict(variant="paged_decode", impl=label, dtype="f16", b=S, hq=HQ, hkv=HKV, nq=1,
                                    nk=n, d=D, mask="none", ms=ms, ms_min=t[0], ms_max=t[-1],
                                    tflops=flops / ms / 1e9, gbps=bytes_model / ms / 1e6, flops=flops,
                                    bytes_model=bytes_model, bytes_counted=None, dram_bytes=None,
                                    max_err=json_err(err), checked=ok, torch=torch.__version__))
                if gqa:
                    break  # the backend takes GQA: no need for the repeated copy
        if n in LAUNCH_CONTEXTS:
            try:
                records.extend(launch_records(q, k, v, lowp, ref, n, flops, bytes_model, rate))
            except RuntimeError as e:  # a backend that cannot be captured: said, not fatal
                print(f"launch torch/sdpa N={n:6}: skipped ({str(e).splitlines()[0][:90]})", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    machine = dict(name=dev.name, driver=driver_version(), cuda=torch.version.cuda, torch=torch.__version__,
                   read_gbps_torch_sum=read)
    with open(a.out, "w") as f:
        json.dump(dict(machine=machine, records=records), f, indent=1)


if __name__ == "__main__":
    main()
