"""The corpus of the seed's benchmark: real English prose from Debian packages, cut into
documents of about 40 kB and written as a small website (one page a document, linked from
section pages linked from the home page), for `benchmarks/seed_73mb.py`.

Sources, each used where it is on disk or, when the size asked for needs it, downloaded with
`apt-get download` and unpacked with `dpkg-deb -x` into the cache folder (nothing installed):

- python:  the reST sources of Debian's python3.11-doc (`_sources/`, installed), about 12 MB
- linux:   the kernel documentation's reST and text files (linux-doc-6.1), about 29 MB
- gcide:   the GNU Collaborative International Dictionary of English (dict-gcide), about 40 MB

The corpus takes the same share of every source it uses, in whole documents.
"""

from __future__ import annotations

import gzip
import html
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data"))
from make_site import paragraphs_html  # noqa: E402

PYDOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
DOC_CHARS = 40_000  # a document ends at the first blank line past this size ...
MIN_DOC_CHARS = 20_000  # ... or at the end of a file once it holds this much
SECTION_LINKS = 100  # document links on a section page (the crawler reads 1,000 at most)


@dataclass
class Source:
    name: str
    package: str  # the Debian package that holds it
    title: str

    def files(self, cache: Path) -> list[Path]:
        if self.name == "python":
            return sorted(PYDOC_SOURCES.rglob("*.rst.txt")) if PYDOC_SOURCES.is_dir() else []
        root = cache / "root"
        if self.name == "linux":
            docs = sorted((root / "usr/share/doc").glob("linux-doc-*/Documentation"))
            return sorted(p for d in docs for p in d.rglob("*")
                          if p.name.endswith((".rst", ".rst.gz", ".txt", ".txt.gz")))
        path = root / "usr/share/dictd/gcide.dict.dz"  # dictzip is gzip, readable as such
        return [path] if path.is_file() else []


SOURCES = [Source("python", "python3.11-doc", "Python documentation"),
           Source("linux", "linux-doc-6.1", "Linux kernel documentation"),
           Source("gcide", "dict-gcide", "GNU Collaborative International Dictionary of English")]
# what each source holds in UTF-8 bytes, roughly: whether a size needs it downloaded
SOURCE_MB = {"python": 12, "linux": 28, "gcide": 39}


def read(path: Path) -> str:
    data = path.read_bytes()
    data = gzip.decompress(data) if path.suffix in (".gz", ".dz") else data
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def download(sources: list[Source], cache: Path) -> None:
    """apt-get download the sources' packages into cache/debs, unpack them into cache/root."""
    debs, root = cache / "debs", cache / "root"
    missing = [s for s in sources if not s.files(cache)]
    if not missing:
        return
    debs.mkdir(parents=True, exist_ok=True)
    packages = [s.package for s in missing]
    print(f"downloading {', '.join(packages)} into {debs} ...", file=sys.stderr)
    try:
        result = subprocess.run(["apt-get", "download", *packages], cwd=debs,
                                capture_output=True, text=True)
        lines = result.stderr.strip().splitlines() or ["no output"]
        failed = result.returncode != 0 and lines[-1]
    except OSError as error:  # no apt-get at all
        failed = str(error)
    if failed:
        sys.exit(f"seed_73mb: error: apt-get download {' '.join(packages)} failed ({failed}): "
                 f"download them by hand into {debs}, or ask for a --size-mb that the "
                 f"sources on disk hold (python3.11-doc: {SOURCE_MB['python']})")
    for package in packages:
        for deb in sorted(debs.glob(f"{package}_*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def documents(source: Source, cache: Path) -> list[tuple[str, str]]:
    """(title, text) of every document of a source, in the order of its files."""
    docs, blocks, size, first = [], [], 0, None

    def close():
        nonlocal blocks, size, first
        if blocks:
            part = f" ({len(docs) + 1})"
            docs.append((f"{source.title}: {first}{part}", "\n\n".join(blocks)))
        blocks, size, first = [], 0, None

    for path in source.files(cache):
        name = path.name.split(".")[0]
        for block in read(path).split("\n\n"):
            if not block.strip():
                continue
            first = first or name
            blocks.append(block.strip("\n"))
            size += len(block) + 2
            if size >= DOC_CHARS:
                close()
        if size >= MIN_DOC_CHARS:
            close()
    close()
    return docs


def build(size_mb: float, cache: Path) -> list[tuple[str, str]]:
    """About `size_mb` MB of documents, the same share of each source; downloads the
    packages a size needs that are not on disk yet."""
    needed, held = [], 0
    for source in SOURCES:
        if held >= size_mb:
            break
        needed.append(source)
        held += SOURCE_MB[source.name]
    download([s for s in needed if s.name != "python"], cache)
    pools = {s.name: documents(s, cache) for s in needed}
    pools = {name: docs for name, docs in pools.items() if docs}
    if not pools:
        sys.exit(f"seed_73mb: error: no source text found (looked in {PYDOC_SOURCES} and "
                 f"{cache / 'root'}): apt-get install python3.11-doc")
    total = sum(len(t.encode()) for docs in pools.values() for _, t in docs)
    share = min(1.0, size_mb * 1e6 / total)
    chosen = []
    for docs in pools.values():
        budget = share * sum(len(t.encode()) for _, t in docs)
        for title, text in docs:
            if budget <= 0:
                break
            chosen.append((title, text))
            budget -= len(text.encode())
    return chosen


def page(title: str, body: str, links: list[tuple[str, str]]) -> str:
    nav = " | ".join(f'<a href="{href}">{html.escape(text)}</a>' for href, text in links)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title></head>\n<body>\n<nav>{nav}</nav>\n"
            f"<main><article>\n<h1>{html.escape(title)}</h1>\n{body}\n</article></main>\n"
            f"</body>\n</html>\n")


def write(path: Path, content: str) -> int:
    data = content.encode("utf-8")
    path.write_bytes(data)
    return len(data)


def write_site(docs: list[tuple[str, str]], root: Path) -> int:
    """The documents as pages under `root` (d/N.html), reached through section pages
    (s/N.html) from index.html; returns the bytes of HTML written."""
    (root / "d").mkdir(parents=True)
    (root / "s").mkdir()
    written = 0
    sections = [range(i, min(i + SECTION_LINKS, len(docs)))
                for i in range(0, len(docs), SECTION_LINKS)]
    for s, section in enumerate(sections):
        for i in section:
            links = [("/index.html", "Home"), (f"/s/{s}.html", f"Section {s + 1}")]
            links += [(f"/d/{i - 1}.html", "Previous")] if i > 0 else []
            links += [(f"/d/{i + 1}.html", "Next")] if i + 1 < len(docs) else []
            title, text = docs[i]
            content = page(title, paragraphs_html(text, prose=True), links)
            written += write(root / "d" / f"{i}.html", content)
        items = "\n".join(f'<li><a href="/d/{i}.html">{html.escape(docs[i][0])}</a></li>'
                          for i in section)
        content = page(f"Section {s + 1}", f"<ul>\n{items}\n</ul>", [("/index.html", "Home")])
        written += write(root / "s" / f"{s}.html", content)
    items = "\n".join(f'<li><a href="/s/{s}.html">Section {s + 1}</a></li>'
                      for s in range(len(sections)))
    content = page("A reading room of Debian's documentation",
                   f"<p>{len(docs)} documents.</p>\n<ul>\n{items}\n</ul>", [])
    written += write(root / "index.html", content)
    return written
