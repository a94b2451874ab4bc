"""What the GPU peer scripts share: CUDA-event timing, the float64 reference they check a backend's last
rows against, and the driver's version for the records' machine."""
import subprocess

import torch


def time_ms(fn, runs, warmup=3):
    """`warmup` calls of fn(0), then `runs` calls fn(i), each between its own pair of CUDA events; the
    times in ms, sorted."""
    for _ in range(warmup):
        fn(0)
    pairs = []
    for i in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(i)
        b.record()
        pairs.append((a, b))
    torch.cuda.synchronize()
    return sorted(a.elapsed_time(b) for a, b in pairs)


def reference_last_rows(q, k, v, n, causal):
    """Attention in float64 for the query rows `q` (the last rows of a sequence of `n`) over all of k and
    v, the causal mask bottom-right aligned like ours."""
    qf, kf, vf = (x.double() for x in (q, k, v))
    s = (qf @ kf.transpose(-1, -2)) / q.shape[-1] ** 0.5
    if causal:
        rows = torch.arange(n - q.shape[2], n, device="cuda")[:, None]
        s = s.masked_fill(torch.arange(n, device="cuda")[None, :] > rows, float("-inf"))
    return torch.softmax(s, -1) @ vf


def driver_version():
    """The NVIDIA driver's version from nvidia-smi, or None without one."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return None
