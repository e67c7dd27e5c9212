"""Build data/language/paragraphs.jsonl, the labelled set of the language identification
benchmark and tests: paragraphs of known language from Debian packages, fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into a temporary folder (nothing is
installed). Run again to rebuild (needs Debian's package lists: `apt-get update`):

    .venv/bin/python data/language/make_set.py

- debian-reference-{en,de,es,fr,it,pt,ja,zh-cn} 2.100: the Debian Reference in HTML, the
  <p> paragraphs of each translation. A paragraph its translators left in English (the same
  text as in the English edition) is not taken.
- manpages-{ru,pl,nl} 4.18.1: translated man pages (groff), the prose between `.PP`
  and similar requests, with the font escapes removed.

A paragraph of another language with many English words (the, and, of, ...: a sentence
left untranslated) is not taken either.

Each language gets PER_LANGUAGE paragraphs of MIN_CHARS to MAX_CHARS characters, taken in
the order of their sha256 (a fixed, spread-out sample).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import tempfile
from pathlib import Path

import lxml.html

OUT = Path(__file__).resolve().parent / "paragraphs.jsonl"
REFERENCE = {"en": "en", "de": "de", "es": "es", "fr": "fr", "it": "it", "pt": "pt",
             "ja": "ja", "zh": "zh-cn"}  # ISO 639-1 code: the package's suffix
MANPAGES = ["ru", "pl", "nl"]
PER_LANGUAGE, MIN_CHARS, MAX_CHARS = 40, 80, 800
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
# Words of English that none of the other languages of the set uses: a paragraph its
# translators left (partly) in English has many.
ENGLISH = frozenset("the and of are you this that with for can be by which from there when "
                    "should".split())
_GROFF_ESCAPE = re.compile(r"\\f(?:\[[^]]*\]|\(..|.)|\\[&/,%:]|\\\(..|\\\*.")


def fetch(packages: list[str], into: Path) -> None:
    debs = into / "debs"
    debs.mkdir()
    subprocess.run(["apt-get", "download", *packages], cwd=debs, check=True,
                   capture_output=True)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into / "root")], check=True)


def reference_paragraphs(root: Path, suffix: str) -> list[str]:
    paragraphs = []
    for page in sorted((root / "usr/share/debian-reference").glob(f"*.{suffix}.html")):
        tree = lxml.html.fromstring(page.read_bytes())
        paragraphs += [" ".join(p.text_content().split()) for p in tree.iter("p")]
    return paragraphs


def groff_paragraphs(root: Path, language: str) -> list[str]:
    paragraphs = []
    for page in sorted((root / "usr/share/man" / language).glob("man*/*.gz")):
        current: list[str] = []
        for line in gzip.decompress(page.read_bytes()).decode("utf-8", "replace").splitlines():
            if line.startswith((".", "'")):  # a request (.PP, .TP, .SH, comments): a break
                paragraphs.append(" ".join(current))
                current = []
            else:
                current.append(_GROFF_ESCAPE.sub("", line).replace("\\-", "-").replace("\\e", "\\"))
        paragraphs.append(" ".join(current))
    return [" ".join(p.split()) for p in paragraphs]


def prose(text: str, language: str) -> bool:
    """A paragraph of running text: long enough, mostly letters, in its own script."""
    if not MIN_CHARS <= len(text) <= MAX_CHARS:
        return False
    letters = sum(c.isalpha() for c in text)
    if letters < 0.6 * len(text) if language not in ("ja", "zh") else \
            len(CJK.findall(text)) < 0.3 * len(text):
        return False
    if "\\" in text or "$ " in text:  # leftover markup, shell sessions
        return False
    words = re.findall(r"\w+", text.lower())
    return language == "en" or sum(w in ENGLISH for w in words) < 0.05 * len(words)


def sample(paragraphs: list[str], language: str, exclude: set[str]) -> list[str]:
    unique = {p for p in paragraphs if prose(p, language) and p not in exclude}
    return sorted(unique, key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:PER_LANGUAGE]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fetch([f"debian-reference-{s}" for s in REFERENCE.values()] +
              [f"manpages-{m}" for m in MANPAGES], Path(tmp))
        root = Path(tmp) / "root"
        english = set(reference_paragraphs(root, "en"))
        for code, suffix in REFERENCE.items():
            exclude = set() if code == "en" else english
            rows += [{"language": code, "source": f"debian-reference-{suffix} 2.100", "text": p}
                     for p in sample(reference_paragraphs(root, suffix), code, exclude)]
        for code in MANPAGES:
            rows += [{"language": code, "source": f"manpages-{code} 4.18.1", "text": p}
                     for p in sample(groff_paragraphs(root, code), code, set())]
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    print(f"{len(rows)} paragraphs in {OUT}")


if __name__ == "__main__":
    main()
