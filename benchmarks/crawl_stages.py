"""Where a crawled page's CPU goes, stage by stage, next to trafilatura alone: the work of an
extraction worker (crawler/parsing.py: decode, parse, links, extraction, each text step, the
MinHash signature among them) and the crawl process's own per-page work (dedup's claim; the
raw archive's record), over the python3.11-doc pages read from disk, in this one process
(no Scrapy, no network: what each stage costs, not how the crawl overlaps them). CPU time per
page, the median of `--repeats` passes over the pages, after one pass to warm up.

    .venv/bin/python benchmarks/crawl_stages.py [--pages 300] [--repeats 3] [--append]

benchmarks/crawl_throughput.py measures the whole crawler; this says where its time goes.
Needs Debian's python3.11-doc.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from crawl_throughput import PYDOC, ROOT
from machine import code_version, machine, print_report

sys.path.insert(0, str(ROOT))

import trafilatura  # noqa: E402
from trafilatura.utils import load_html  # noqa: E402

from core.warc import Fetched, WarcFile  # noqa: E402
from crawler import parsing  # noqa: E402
from crawler.config import CrawlConfig  # noqa: E402
from crawler.state import CrawlState  # noqa: E402
from crawler.steps import document_steps  # noqa: E402
from text import discard  # noqa: E402
from text.document import Document, Drop  # noqa: E402
from text.extract import TRAFILATURA_OPTIONS, Extract, cap_attributes, extract_tree  # noqa: E402


ALONE = "trafilatura alone (its own parse)"
AS_SHIPPED = "trafilatura alone, as it ships (its own parse)"


def one_pass(files: list[Path], home: Path) -> collections.Counter:
    """CPU seconds by stage over every page once (a fresh dedup index and archive)."""
    config = CrawlConfig()
    extract, steps = Extract(), document_steps(config)
    state = CrawlState(home / str(time.monotonic_ns()), config.minhash_perm,
                       config.near_dup_threshold)
    archive = WarcFile(home / f"{time.monotonic_ns()}.warc.gz")
    spent: collections.Counter = collections.Counter()

    def clock(stage: str, call, *args, **kwargs):
        start = time.process_time()
        result = call(*args, **kwargs)
        spent[stage] += time.process_time() - start
        return result

    for path in files:
        body = path.read_bytes()
        url = "http://127.0.0.1/" + str(path.relative_to(PYDOC))
        header = {"url": url, "media_type": "text/html", "extract": True,
                  "content_type": "text/html; charset=utf-8", "content_language": ""}
        discard.restore()  # trafilatura's own XPath expressions, not text/discard.py's
        clock(AS_SHIPPED, trafilatura.bare_extraction, body.decode("utf-8", "replace"), url,
              **TRAFILATURA_OPTIONS)
        discard.install()
        clock(ALONE, trafilatura.bare_extraction, body.decode("utf-8", "replace"), url,
              **TRAFILATURA_OPTIONS)
        response, body = clock("worker: decode", parsing.decoded, header, body)
        html = response.text
        tree = clock("worker: parse (load_html)", load_html,
                     clock("worker: cap_attributes", cap_attributes, html))
        clock("worker: links", parsing.links, response, tree, config.max_links_per_page)
        doc = Document(url=url, content_type="text/html", body=body, html=html)
        extract.arguments(doc)
        doc = extract.finish(doc, clock("worker: extraction (trafilatura on the tree, "
                                        "normalize_text)", extract_tree, tree, url))
        clock("crawl: archive record", archive.add,
              Fetched(url, datetime.now(timezone.utc), 200, [("Content-Type", "text/html")], body))
        try:
            for step in steps:
                doc = clock(f"worker: {type(step).__name__}", step, doc)
        except Drop:
            continue
        clock("crawl: dedup (the claim)", state.index.check, doc.doc_id, doc.text, doc.minhash)
    archive.close()
    state.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()
    if not (PYDOC / "index.html").is_file():
        raise SystemExit("needs Debian's python3.11-doc: apt-get install -y python3.11-doc")
    files = sorted(PYDOC.rglob("*.html"))[:args.pages]
    with tempfile.TemporaryDirectory() as tmp:
        one_pass(files, Path(tmp))  # imports, caches, the language model
        passes = [one_pass(files, Path(tmp)) for _ in range(args.repeats)]
    ms = {stage: statistics.median(p[stage] for p in passes) / len(files) * 1000
          for stage in passes[0]}
    alone, shipped = ms.pop(ALONE), ms.pop(AS_SHIPPED)
    ours = sum(ms.values())
    lines = [f"## Where a page's CPU goes (`benchmarks/crawl_stages.py`, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"`.venv/bin/python benchmarks/crawl_stages.py --pages {args.pages} --repeats "
             f"{args.repeats}` on {machine()}; code {code_version()}. CPU ms a page, the median "
             f"of {args.repeats} passes over {len(files)} python3.11-doc pages.", "",
             "| stage | CPU ms a page |", "| --- | ---: |",
             *[f"| {stage} | {value:.2f} |" for stage, value in
               sorted(ms.items(), key=lambda item: -item[1])],
             f"| **all of the above** | **{ours:.2f}** |",
             f"| trafilatura alone, from the page's text, as it ships | {shipped:.2f} |",
             f"| trafilatura alone, its pruning expressions in Python (text/discard.py) | "
             f"{alone:.2f} |", "",
             f"These stages: {ours / shipped:.2f}x trafilatura as it ships (Scrapy, the "
             f"workers' messages and the shard writer not included). text/discard.py makes "
             f"trafilatura {shipped / alone:.2f}x as fast.", ""]
    report = "\n".join(lines)
    print_report(report, args.append)


if __name__ == "__main__":
    main()
