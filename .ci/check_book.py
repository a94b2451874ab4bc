#!/usr/bin/env python3
"""Checks the rendered book: every relative link and image resolves (anchors included), no include was
left unexpanded, no math failed to render, no chapter leaks a local file path.

Usage: python3 .ci/check_book.py target/book
"""
import html.parser
import os
import re
import sys
from urllib.parse import unquote, urlsplit


# An absolute path on someone's machine (a home or scratch directory, a mount), which means nothing to a
# reader: not preceded by a word character, a dot, a colon or a slash, so the paths inside URLs
# (https://host/home/...) and relative paths (a/tmp/b) do not count.
LOCAL_PATH = re.compile(
    r"(?<![\w.:/-])(?:/(?:home|work|tmp|root|mnt|private|Users)/|/var/folders/|[A-Za-z]:\\Users\\)[\w.-]+"
)


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key])


def main(root):
    pages, problems = {}, []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".html"):
                path = os.path.join(dirpath, f)
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                p = Page()
                p.feed(text)
                pages[os.path.normpath(path)] = (p, text)
    if not pages:
        return [f"no HTML pages under {root}"]
    for path, (page, text) in pages.items():
        rel = os.path.relpath(path, root)
        if rel in ("print.html", "404.html", "toc.html"):
            continue
        if "{{#" in text:
            problems.append(f"{rel}: an mdbook include or directive was not expanded")
        if "katex-error" in text or "ParseError" in text:
            problems.append(f"{rel}: math failed to render")
        # Markdown emphasis inside a formula's TeX annotation breaks the HTML around the MathML (write
        # ` _` inside such a formula so the underscores cannot pair).
        if re.search(r'<annotation encoding="application/x-tex">[^<]*<(em|strong)>', text):
            problems.append(f"{rel}: markdown emphasis inside a formula's TeX (underscores paired)")
        m = LOCAL_PATH.search(text)
        if m:
            problems.append(f"{rel}: a local file path appears in the page ({m.group(0)})")
        for link in page.links:
            u = urlsplit(link)
            if u.scheme or link.startswith("//") or link.startswith("mailto:"):
                continue
            target = path if not u.path else os.path.normpath(os.path.join(os.path.dirname(path), unquote(u.path)))
            if not os.path.exists(target):
                problems.append(f"{rel}: broken link {link}")
            elif u.fragment and target in pages and u.fragment not in pages[target][0].ids:
                problems.append(f"{rel}: link {link} names a missing anchor")
    problems += check_sources(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "book"))
    return problems


def check_sources(book_dir):
    """A control character in a chapter's source is almost always an escape that went wrong (a TeX
    `\\times` written through a string that turned `\\t` into a tab): KaTeX renders the rest without an
    error, so the rendered page cannot show it."""
    problems = []
    for dirpath, _, files in os.walk(book_dir):
        for f in files:
            if not f.endswith(".md"):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    bad = [c for c in line.rstrip("\n") if ord(c) < 32]
                    if bad:
                        rel = os.path.relpath(path, os.path.dirname(book_dir))
                        problems.append(f"{rel}:{n}: control character {bad[0]!r} in the source")
    return problems


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "target/book"
    problems = main(root)
    for p in problems:
        print("BROKEN", p)
    print(f"checked the book under {root}: {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)
