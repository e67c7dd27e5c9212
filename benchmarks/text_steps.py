"""Seconds per MB of each text step (text/) on adversarial inputs of growing size, and on
real prose: a step that is linear in its input keeps its seconds per MB flat as the input
grows; a quadratic one doubles it with each doubling of the size.

The inputs are text/bait.py's (runs of punctuation, one huge word, tiny words, repeated
lines, runs of combining marks, controls, hostile HTML and PDF files) and prose from
data/text (Shakespeare and Milton, concatenated to the size). Each cell is the median of
`--repeats` runs of the step on one input of that size; "growth" is the seconds per MB at the
largest size over that at the smallest (1.0: linear; 16 over 0.25 -> 4 MB: quadratic).
Extraction of HTML and PDF stops at 1 MB by default (trafilatura and pypdf take seconds a MB).

    .venv/bin/python benchmarks/text_steps.py               # print the report
    .venv/bin/python benchmarks/text_steps.py --append      # and add it to RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from machine import append_to_results, code_version, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crawler.config import CrawlConfig  # noqa: E402
from crawler.steps import quality_steps  # noqa: E402
from text import bait, quality  # noqa: E402
from core.db import Database  # noqa: E402
from text.dedup import METADATA, Dedup, DedupIndex  # noqa: E402
from text.document import Document, Drop, split_at_blank_lines  # noqa: E402
from text.extract import extract, normalize_text  # noqa: E402

MB = 1_000_000
FILTERS = quality_steps(CrawlConfig())  # the crawl's list, with its default thresholds
BASE = ["prose", "punctuation run", "many tiny words", "repeated line"]
TEXT_INPUTS = {  # step -> the bait it is timed on (BASE for every text step)
    "normalize_text": ["marks on one letter", "tibetan vowels", "controls", "spaces and tabs",
                       "blank lines", "mixed scripts"],
    "WordCount": ["one huge word", "apostrophe chain"],
    "MeanWordLength": ["one huge word"],
    "SymbolRatio": ["hashes and ellipses"],
    "AlphabeticWords": ["one huge word"],
    "Stopwords": ["distinct words"],
    "RepeatedLines": ["blank lines"],
    "TerminalPunctuation": ["blank lines"],
    "ShortLines": ["blank lines"],
    "BoilerplateLines": ["boilerplate keyword", "keyword prefixes", "blank lines"],
    "Dedup": ["distinct words", "one huge word"],
    "split_at_blank_lines": ["blank lines"],
    "extract text/plain": ["marks on one letter"],
}
HTML_INPUTS = ["prose page", *bait.HTML_UNITS]
PDF_INPUTS = list(bait.PDF_UNITS)


def prose(size: int) -> str:
    texts = sorted((ROOT / "data" / "text").rglob("*.txt"))
    out, total = [], 0
    while total < size:
        for path in texts:
            out.append(path.read_text(encoding="utf-8"))
            total += len(out[-1])
            if total >= size:
                break
    return "".join(out)[:size]


def text_input(name: str, size: int) -> str:
    return prose(size) if name == "prose" else bait.text_bait(name, size)


def html_input(name: str, size: int) -> str:
    if name == "prose page":
        paragraphs = prose(size).split("\n\n")
        return ("<html lang='en'><head><title>Prose</title></head><body><article>"
                + "".join(f"<p>{p}</p>" for p in paragraphs) + "</article></body></html>")
    return bait.html_bait(name, size)


def filter_step(step: quality.Filter):
    def run(text: str) -> None:
        quality.reading.cache_clear()  # each run splits the text itself
        try:
            step(Document(text=text))
        except Drop:
            pass
    return run


def dedup_step():
    """Each run against an empty index of its own (made outside the timed call)."""
    def prepare():
        db = Database("", Path(":memory:"), METADATA)
        return Dedup(DedupIndex(db, num_perm=128, threshold=0.8))
    return prepare


def steps() -> list[tuple[str, str, object, object]]:
    """(step, input, the input of a size, the call): every row of the table."""
    calls = {type(f).__name__: filter_step(f) for f in FILTERS}
    calls |= {"normalize_text": normalize_text,
              "split_at_blank_lines": lambda text: split_at_blank_lines(text, 2000),
              "extract text/plain": lambda text: extract("text/plain", b"", text, "http://x/"),
              "Dedup": dedup_step()}
    rows = []
    for step, extra in TEXT_INPUTS.items():
        for name in BASE + extra:
            rows.append((step, name, lambda size, name=name: text_input(name, size), calls[step]))
    for name in HTML_INPUTS:
        rows.append(("extract text/html", name, lambda size, name=name: html_input(name, size),
                     lambda html: extract("text/html", b"", html, "http://x/")))
    for name in PDF_INPUTS:
        rows.append(("extract application/pdf", name,
                     lambda size, name=name: bait.pdf_bait(name, size),
                     lambda pdf: extract("application/pdf", pdf, "", "http://x/")))
    return rows


def time_once(step: str, call, data) -> float:
    if step == "Dedup":  # a fresh index each run
        dedup = call()
        call = lambda text: dedup(Document(text=text, doc_id="d"))  # noqa: E731
    gc.collect()
    start = time.perf_counter()
    try:
        call(data)
    except Drop:
        pass
    return time.perf_counter() - start


def measure(sizes: list[float], big_sizes: list[float], repeats: int, only: str | None):
    results = []
    for step, name, make, call in steps():
        if only and only not in step:
            continue
        row = {}
        for mb in (big_sizes if step.startswith("extract text/html") or "pdf" in step
                   else sizes):
            data = make(int(mb * MB))
            real_mb = len(data) / MB
            runs = [time_once(step, call, data) for _ in range(repeats)]
            row[mb] = statistics.median(runs) / real_mb
        results.append((step, name, row))
        print(f"{step:26s} {name:22s} " + " ".join(f"{v:8.4f}" for v in row.values()),
              file=sys.stderr, flush=True)
    return results


def format_report(results, started, load_before, load_after, seconds, repeats) -> str:
    all_sizes = sorted({mb for _, _, row in results for mb in row})
    command = " ".join([".venv/bin/python", "benchmarks/text_steps.py", *sys.argv[1:]])
    lines = [
        f"## Text steps: seconds per MB on adversarial inputs ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{command}` on {machine()}; code {code_version()}. Load average "
        f"{load_before:.2f} before, {load_after:.2f} after; {seconds / 60:.1f} min in all.",
        f"Each text step of text/ on text/bait.py's inputs and on prose (data/text), one "
        f"input of each size, median of {repeats} runs, in seconds per MB of input; growth is "
        f"seconds per MB at the largest size over the smallest (linear: about 1; quadratic: "
        f"the ratio of the sizes). Quality filters each on a text of their own (the splits "
        f"they need included), with the crawl's default thresholds; Dedup against an empty "
        f"index (shingles, MinHash of 128 permutations, LSH query and insert).",
        "",
        "| step | input | " + " | ".join(f"{mb:g} MB" for mb in all_sizes) + " | growth |",
        "| --- | --- | " + " | ".join("---:" for _ in all_sizes) + " | ---: |",
    ]
    superlinear = []
    for step, name, row in results:
        cells = [f"{row[mb]:.3g}" if mb in row else "" for mb in all_sizes]
        first, last = row[min(row)], row[max(row)]
        growth = last / first if first > 0 else float("nan")
        if growth > 2:
            superlinear.append(f"{step} on {name} ({growth:.1f}x)")
        lines.append(f"| {step} | {name} | " + " | ".join(cells) + f" | {growth:.2f} |")
    lines += ["", "Growth above 2 (seconds per MB more than doubled from the smallest size "
              "to the largest): " + (", ".join(superlinear) if superlinear else "none") + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1, 2, 4],
                        help="input sizes in MB (default 0.25 0.5 1 2 4)")
    parser.add_argument("--extract-sizes", type=float, nargs="+", default=[0.25, 0.5, 1],
                        help="sizes for HTML and PDF extraction (default 0.25 0.5 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="only the steps whose name contains this")
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # trafilatura and pypdf complain about every bait
    warnings.simplefilter("ignore")
    started, clock = datetime.now(timezone.utc), time.monotonic()
    load_before = os.getloadavg()[0]
    results = measure(args.sizes, args.extract_sizes, args.repeats, args.only)
    report = format_report(results, started, load_before, os.getloadavg()[0],
                           time.monotonic() - clock, args.repeats)
    if args.append:
        append_to_results(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
