"""What the peer scripts share: CUDA-event timing, the float64 reference they check a backend's last rows
against, the tolerance rule the crate applies to its own kernels (so that both sides of a ratio pass the
same check), the driver's version for the records' machine, the races' handle on our side (`Ours`) and
their output file (`write_race`)."""
import json
import math
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


def lowp_attention(q, k, v, causal):
    """Standard attention in the inputs' own precision: the rule's low-precision reference. The queries
    are the last rows of the keys' sequence (bottom-right aligned, as ours), kv heads repeated for GQA."""
    g = q.shape[1] // k.shape[1]
    k, v = (x.repeat_interleave(g, 1) for x in (k, v))
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        nq, nk = q.shape[-2], k.shape[-2]
        rows = torch.arange(nk - nq, nk, device=q.device)[:, None]
        s = s.masked_fill(torch.arange(nk, device=q.device)[None, :] > rows, float("-inf"))
    return torch.softmax(s, -1) @ v


def close(out, lowp, ref, nk, bar=None):
    """FlashAttention's rule as `attn_close` in src/minimodel/check.rs applies it: the candidate's max error
    against the float64 reference at most twice the low-precision reference's, plus twice the dtype's
    rounding floor at these outputs (and, in f32, the accumulation floor of `nk` terms), and at most `bar`
    where one is given. Returns (max error, passed); a non-finite value anywhere fails."""
    dt = out.dtype
    out, lowp, ref = out.double(), lowp.double(), ref.double()
    if not all(torch.isfinite(x).all().item() for x in (out, lowp, ref)):
        return float("nan"), False
    err = (out - ref).abs().max().item()
    base = (lowp - ref).abs().max().item()
    r = ref.to(dt)
    floor = ((r.double() + 0.3).to(dt).double() - 0.3).to(dt).double().sub(r.double()).abs().max().item()
    accum = 0.0
    if dt in (torch.float32, torch.float64):
        accum = math.sqrt(nk) * 2.0**-24 * ref.abs().max().item()
    ok = err <= 2 * base + 2 * floor + accum and (bar is None or err <= bar)
    return err, ok


def json_err(x):
    """An error for a JSON record: JSON has no NaN, so a failed check's NaN is written as null (which the
    crate reads back as NaN)."""
    return x if x is not None and math.isfinite(x) else None


def driver_version():
    """The NVIDIA driver's version from nvidia-smi, or None without one."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return None


class Ours:
    """Our side of a race: `modern-attention gpu-probe serve`, one command a line, each answer ended by `done`
    (one process for the whole run, so its modules compile once)."""

    def __init__(self, binary):
        self.p = subprocess.Popen([binary, "gpu-probe", "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = []
        while True:
            reply = self.p.stdout.readline()
            if not reply:
                raise RuntimeError(f"gpu-probe serve ended during `{line}`: {out}")
            reply = reply.rstrip("\n")
            if reply == "done":
                return out
            out.append(reply)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def write_race(path, dev, records, label):
    """A race's output: the machine (card, driver, CUDA, PyTorch, cuDNN), PyTorch's version on its records,
    and the records, as JSON at `path`. Returns the exit status: 0 when there are records."""
    machine = dict(name=dev.name, driver=driver_version(), cuda=torch.version.cuda, torch=torch.__version__,
                   cudnn=torch.backends.cudnn.version())
    for rec in records:
        if rec["impl"].startswith("torch/"):
            rec["torch"] = torch.__version__
    with open(path, "w") as f:
        json.dump(dict(machine=machine, records=records), f, indent=1)
    print(f"{label}: {len(records)} records -> {path}", flush=True)
    return 0 if records else 1
