#!/usr/bin/env python3
"""Fetch NVRTC and the CUDA headers it needs (cuda_fp16.h, cuda_bf16.h) from NVIDIA's wheels on PyPI, at
pinned versions checked by SHA-256, into DEST (default target/nvrtc): DEST/lib holds libnvrtc, DEST/include
the headers. With LD_LIBRARY_PATH=DEST/lib and CUDA_HOME=DEST, `tests/kernels_compile.rs` compiles every
kernel module on a machine with no GPU and no CUDA toolkit. Standard library only.

    python3 .ci/fetch_nvrtc.py [DEST]
"""
import hashlib
import html
import io
import os
import re
import sys
import urllib.request
import zipfile

WHEELS = [
    ("nvidia-cuda-nvrtc", "13.5.37",
     "nvidia_cuda_nvrtc-13.5.37-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
     "86b4d68058807988b7d9af5b44917a0601e9c337f35ccd657bfb3c759ff8d8bc"),
    ("nvidia-cuda-runtime", "13.5.37",
     "nvidia_cuda_runtime-13.5.37-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
     "df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d"),
]
PREFIX = "nvidia/cu13/"


def fetch(name, version, filename, sha256):
    # The package's page in PyPI's simple index (what pip reads) links every file of every version.
    with urllib.request.urlopen(f"https://pypi.org/simple/{name}/", timeout=60) as r:
        page = r.read().decode()
    links = [u for u in re.findall(r'href="([^"]+)"', page) if u.split("#")[0].endswith("/" + filename)]
    if not links:
        sys.exit(f"{name} {version}: {filename} not on PyPI's simple index")
    with urllib.request.urlopen(html.unescape(links[0]).split("#")[0], timeout=300) as r:
        data = r.read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        sys.exit(f"{filename}: SHA-256 {got}, expected {sha256}")
    return zipfile.ZipFile(io.BytesIO(data))


def main():
    dest = sys.argv[1] if len(sys.argv) > 1 else "target/nvrtc"
    marker = os.path.join(dest, "VERSIONS")
    want = "\n".join(f for _, _, f, _ in WHEELS)
    if os.path.exists(marker) and open(marker).read() == want:
        print(f"NVRTC already in {dest}")
        return
    for name, version, filename, sha256 in WHEELS:
        wheel = fetch(name, version, filename, sha256)
        for member in wheel.namelist():
            if not member.startswith(PREFIX) or member.endswith("/"):
                continue
            rel = member[len(PREFIX):]
            if not (rel.startswith("lib/") or rel.startswith("include/")):
                continue
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(wheel.read(member))
        print(f"{filename}: verified, unpacked into {dest}")
    with open(marker, "w") as f:
        f.write(want)


if __name__ == "__main__":
    main()
