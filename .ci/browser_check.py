#!/usr/bin/env python3
"""Opens chapters of the rendered book in headless Chromium (Debian's `chromium`) and checks what a reader
sees: the page loads with no console errors, its math was rendered offline (MathML elements, no raw TeX
left), and every figure it references exists and is a well-formed SVG.

Usage: python3 .ci/browser_check.py target/book [page ...]
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

DEFAULT_PAGES = [
    "theory/00-motivation.html",
    "theory/01-online-softmax.html",
    "theory/02-flash-attention.html",
    "theory/03-paged-and-sliding.html",
    "theory/04-gqa-mqa-mla.html",
    "lab/00-online-softmax.html",
    "lab/01-flash-bytes.html",
    "lab/02-flash-gpu.html",
    "lab/03-paged-attn-reading.html",
    "lab/04-mqa-gqa.html",
]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=4000",
]


def check_page(chromium, root, page):
    problems = []
    path = os.path.abspath(os.path.join(root, page))
    if not os.path.exists(path):
        return [f"{page}: not rendered"]
    # A browser killed by a signal (a crash of Chromium itself, not of the page) gets one more try on a
    # fresh profile; a page it renders is judged on the first rendering.
    for attempt in range(2):
        with tempfile.TemporaryDirectory() as profile:
            res = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                                  f"file://{path}"], capture_output=True, text=True, timeout=120)
        if res.returncode >= 0 or "<body" in res.stdout:
            break
        print(f"{page}: Chromium died (exit {res.returncode}), trying once more")
    dom, log = res.stdout, res.stderr
    if "<body" not in dom:
        problems.append(f"{page}: Chromium returned no page (exit {res.returncode})")
    for line in log.splitlines():
        if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I):
            problems.append(f"{page}: console: {line.strip()[:200]}")
    maths = dom.count("<math")
    if maths == 0:
        problems.append(f"{page}: no rendered math (expected MathML)")
    main = dom[dom.find("<main"):dom.find("</main>")] if "<main" in dom else dom
    text = re.sub(r"<(code|pre|script|style)[^>]*>.*?</\1>", "", main, flags=re.S)
    if re.search(r"\$\$|\\\(|\\frac|\\sum", re.sub(r"<math.*?</math>", "", text, flags=re.S)):
        problems.append(f"{page}: raw TeX left in the page")
    for src in re.findall(r'<img[^>]+src="([^"]+)"', dom):
        if src.startswith(("http:", "https:", "data:")):
            continue
        target = os.path.normpath(os.path.join(os.path.dirname(path), src))
        if not os.path.exists(target):
            problems.append(f"{page}: image {src} is missing")
        elif target.endswith(".svg"):
            try:
                ET.parse(target)
            except ET.ParseError as e:
                problems.append(f"{page}: image {src} is not well-formed SVG: {e}")
    print(f"{page}: {maths} math elements, {len(re.findall(r'<img', dom))} images, "
          f"{len(problems)} problem(s)")
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/book"
    pages = sys.argv[2:] or DEFAULT_PAGES
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium not found (Debian: apt-get install chromium)")
        return 1
    problems = [p for page in pages for p in check_page(chromium, root, page)]
    for p in problems:
        print("BROKEN", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
