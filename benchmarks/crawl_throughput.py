"""Crawler throughput: the whole crawler (`cllm crawl`: fetch, extract, filter, dedup, write
shards) on the python3.11-doc site served on 127.0.0.1, side by side with trafilatura
extraction alone over the same pages read from disk, on every core (one process a core, the
pages dealt out among them) and in one process. Alternating runs, medians, the ratios, and
the peak memory of each; the median of each round's own ratios (a crawl beside the
extraction run straight after it, under the same load); and each side's start-up (a
one-page run) with the CPU a page once started (the whole run less the one-page run).

    .venv/bin/python benchmarks/crawl_throughput.py [--repeats 3] [--against CHECKOUT]

`--against` runs the crawler of another checkout too (`git worktree add /tmp/before HEAD~1`),
in the same rounds, and gives each round's ratio of the two: a change to the crawler
measured side by side, under the same load.

Extraction alone is trafilatura as it ships, what a user would run without the crawler: the
crawler's extraction evaluates eleven of its XPath expressions in Python (text/discard.py:
the same text, 1.8x as fast), so part of the crawler's ratio is that saving. Extraction on
every core imports trafilatura once and forks the other processes from there (as a
multiprocessing pool on Linux would), so they share its modules; its memory is the
peak sum of the proportional set sizes (PSS) of all its processes, as the crawler's is of
all of its own (the crawl, the workers' starter, the workers).

Politeness is off for the crawler (no delay, no AutoThrottle) and its network guard lets in
127.0.0.1/32: the server is local and the question is what the crawler's own work costs
next to extraction. Needs Debian's python3.11-doc (apt-get install -y python3.11-doc).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
from machine import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYDOC = Path("/usr/share/doc/python3.11/html")
CLLM = Path(sys.executable).with_name("cllm")


def run_measured(cmd: list[str], env: dict,
                 cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run a command; return its result, the peak memory of its process tree (the sum of its
    processes' proportional set sizes, sampled every 0.1 s) and the CPU seconds the tree
    used, start-up included (a machine shared with other work changes wall time more than
    CPU time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = psutil.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process] + process.children(recursive=True)
            # PSS: shared pages (libraries) are split between the processes, not counted twice.
            peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        time.sleep(0.1)
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return subprocess.CompletedProcess(cmd, 0, out, err), peak, cpu


def crawl_env(home: Path) -> dict:
    """`cllm crawl`'s environment: the home, politeness off, 127.0.0.1 let in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")} | {
        "CLLM_HOME": str(home), "CLLM_CRAWL_DELAY": "0", "CLLM_CRAWL_AUTOTHROTTLE": "false",
        "CLLM_LOG_FORMAT": "json", "CLLM_CRAWL_ALLOWED_NETWORKS": "127.0.0.1/32"}


def crawler_run(url: str, max_pages: int = 0, code: Path = ROOT) -> dict:
    """`cllm crawl` from `url`: every page it reaches, or the first `max_pages`; the crawler
    of the checkout `code` (this one by default), in this environment's Python."""
    limit = ["--max-pages", str(max_pages)] if max_pages else []
    with tempfile.TemporaryDirectory() as home:
        env = crawl_env(Path(home)) | {"PYTHONPATH": str(code)}
        result, peak, cpu = run_measured(
            [sys.executable, "-m", "cli", "crawl", "--json", "--seeds", url, *limit], env,
            cwd=code)
    report = json.loads(result.stdout)
    return {"pages": report["pages_fetched"], "seconds": report["seconds"],
            "pages_per_s": report["pages_fetched"] / report["seconds"],
            "docs": report["docs_written"], "peak_mb": peak / 2**20, "cpu_s": cpu,
            "cpu_ms_per_page": cpu / report["pages_fetched"] * 1000}


def extraction_run(processes: int, site: Path = PYDOC, pages: int = 0) -> dict:
    result, peak, cpu = run_measured([sys.executable, __file__, "--extract-only", str(site),
                                      "--processes", str(processes), "--pages", str(pages)],
                                     dict(os.environ))
    run = json.loads(result.stdout)
    return run | {"peak_mb": peak / 2**20, "cpu_s": cpu,
                  "cpu_ms_per_page": cpu / run["pages"] * 1000}


def after_start_up(cpu_s: float, pages: float, start_cpu_s: float, start_pages: float) -> float:
    """CPU ms a page once started: a whole run's CPU less that of a run that only starts
    (and fetches `start_pages`), over the pages between them."""
    return (cpu_s - start_cpu_s) / (pages - start_pages) * 1000


def extract_only(site: Path, processes: int, pages: int = 0) -> None:
    """Child mode: trafilatura over every page of the site (or its first `pages`), read from
    disk, by `processes` processes (this one and processes - 1 forked from it), each its
    share of the pages."""
    import trafilatura

    from text.extract import TRAFILATURA_OPTIONS

    files = sorted(site.rglob("*.html"))[:pages or None]
    start = time.perf_counter()
    share, children = 0, []
    for i in range(1, processes):
        if (pid := os.fork()) == 0:
            share = i
            break
        children.append(pid)
    for path in files[share::processes]:
        html = path.read_text(encoding="utf-8", errors="replace")
        trafilatura.bare_extraction(html, url=path.as_uri(), **TRAFILATURA_OPTIONS)
    if share:
        os._exit(0)
    for pid in children:
        os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    print(json.dumps({"pages": len(files), "seconds": seconds, "pages_per_s": len(files) / seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="another checkout's crawler, run in the same rounds")
    parser.add_argument("--extract-only", type=Path, metavar="SITE", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--pages", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.extract_only:
        return extract_only(args.extract_only, args.processes, args.pages)
    if not (PYDOC / "index.html").is_file():
        raise SystemExit("needs Debian's python3.11-doc: apt-get install -y python3.11-doc")
    if args.against and not (args.against / "cli" / "__main__.py").is_file():
        raise SystemExit(f"--against {args.against}: not a checkout of this project (no "
                         "cli/__main__.py); make one with git worktree add")
    from crawler.site import SiteServer

    server = SiteServer([PYDOC])
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    crawls, every_core, one, starts, others = [], [], [], [], []
    try:
        for i in range(args.repeats):
            crawls.append(crawler_run(server.url + "index.html"))
            if args.against:
                others.append(crawler_run(server.url + "index.html", code=args.against))
            every_core.append(extraction_run(cores))
            one.append(extraction_run(1))
            starts.append((crawler_run(server.url + "index.html", max_pages=1),
                           extraction_run(cores, pages=1)))
            print(f"run {i + 1}: crawler {crawls[-1]['pages_per_s']:.2f} pages/s, extraction "
                  f"alone {every_core[-1]['pages_per_s']:.2f} ({cores} processes), "
                  f"{one[-1]['pages_per_s']:.2f} (1)", file=sys.stderr)
    finally:
        server.close()

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"pages: crawler fetched {crawls[0]['pages']} (wrote {crawls[0]['docs']} documents), "
          f"extraction read {one[0]['pages']} from disk; {args.repeats} runs each, alternating")
    print("| | pages/s (median) | runs | CPU ms per page (median) | peak memory, PSS (median) |")
    print("| --- | --- | --- | --- | --- |")
    rows = [("crawler (cllm crawl)", crawls),
            *([(f"crawler of {args.against}", others)] if others else []),
            (f"trafilatura extraction alone ({cores} processes)", every_core),
            ("trafilatura extraction alone (1 process)", one)]
    for name, runs in rows:
        rates = ", ".join(f"{r['pages_per_s']:.2f}" for r in runs)
        print(f"| {name} | {median(runs, 'pages_per_s'):.2f} | {rates} | "
              f"{median(runs, 'cpu_ms_per_page'):.0f} | {median(runs, 'peak_mb'):.0f} MB |")
    for label, base in [(f"{cores} processes", every_core), ("1 process", one)]:
        rate = median(crawls, "pages_per_s") / median(base, "pages_per_s")
        cpu = median(crawls, "cpu_ms_per_page") / median(base, "cpu_ms_per_page")
        memory = median(crawls, "peak_mb") / median(base, "peak_mb")
        print(f"crawler / extraction alone ({label}): pages/s {rate:.2f}x (target >= 0.85x), "
              f"CPU per page {cpu:.2f}x (target <= 1.15x), memory {memory:.2f}x (target <= 2x)")
    # On a shared machine the load changes from minute to minute: a crawl and the extraction
    # run right after it meet the same load more often than two medians do.
    paired = {key: [c[key] / e[key] for c, e in zip(crawls, every_core)]
              for key in ("pages_per_s", "cpu_ms_per_page", "peak_mb")}
    print(f"each round's crawler / extraction alone ({cores} processes), the median of the "
          "rounds: " + ", ".join(
              f"{name} {statistics.median(paired[key]):.2f}x "
              f"({', '.join(f'{r:.2f}' for r in paired[key])})"
              for name, key in [("pages/s", "pages_per_s"), ("CPU per page", "cpu_ms_per_page"),
                                ("memory", "peak_mb")]))
    if others:
        versus = {key: [c[key] / o[key] for c, o in zip(crawls, others)]
                  for key in ("pages_per_s", "cpu_ms_per_page", "peak_mb")}
        print(f"each round's crawler / crawler of {args.against}, the median of the rounds: " +
              ", ".join(f"{name} {statistics.median(versus[key]):.3f}x "
                        f"({', '.join(f'{r:.3f}' for r in versus[key])})"
                        for name, key in [("pages/s", "pages_per_s"),
                                          ("CPU per page", "cpu_ms_per_page"),
                                          ("memory", "peak_mb")]))
    # A crawl's start (Scrapy, the databases, the workers' models) is paid once: over the 530
    # pages here it is several ms a page, over a crawl of thousands next to nothing.
    crawl_start = statistics.median(c["cpu_s"] for c, _ in starts)
    extraction_start = statistics.median(e["cpu_s"] for _, e in starts)

    def once_started(full: dict, first: dict) -> float:
        return after_start_up(full["cpu_s"], full["pages"], first["cpu_s"], first["pages"])

    crawl_page = statistics.median(once_started(full, first)
                                   for full, (first, _) in zip(crawls, starts))
    extraction_page = statistics.median(once_started(full, first)
                                        for full, (_, first) in zip(every_core, starts))
    print(f"start-up (a one-page run), CPU s (median): crawler {crawl_start:.2f}, extraction "
          f"alone ({cores} processes) {extraction_start:.2f}; CPU ms a page after start-up "
          f"(the whole run less the one-page run, median): crawler {crawl_page:.1f}, "
          f"extraction alone {extraction_page:.1f}: {crawl_page / extraction_page:.2f}x")


if __name__ == "__main__":
    main()
