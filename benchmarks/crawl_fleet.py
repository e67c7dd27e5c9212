"""A fleet crawl's cost: pages/s and CPU seconds per page of `cllm crawl` alone (its queue
under the home) and of fleets of 1, 2 and 3 processes on one Redis frontier, on the
python3.11-doc site served on 127.0.0.1. Alternating runs, medians. Also three crawls alone
at once (a home each, each the whole site): the same contention for this machine's cores as
a fleet of 3, without the fleet, so that what the fleet itself costs shows apart from what
three processes on two cores cost.

    .venv/bin/python benchmarks/crawl_fleet.py [--repeats 3]

Politeness off (no delay, no AutoThrottle) and the network guard lets in 127.0.0.1/32, as in
benchmarks/crawl_throughput.py. `concurrency_per_domain` is 2 a process, so each process of a
fleet may keep as many requests open as a crawl alone. CPU counts every process of the run:
the crawl processes, their extraction workers and redis-server. A fleet waits
`idle_timeout` (3 s here) after its last page before it ends: that wait is taken off its
wall time. Each configuration is also run on a seed that does not exist (robots.txt, the
sitemap and the seed: 3 requests), which is its start-up and shutdown cost; what a page
costs beyond that is the steady state a long crawl runs at. Needs Debian's python3.11-doc
and redis-server.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
from crawl_throughput import CLLM, PYDOC, ROOT, after_start_up

IDLE = 3.0
# 1 billion pages a month, in pages per second
TARGET_RATE = 1e9 / (30 * 24 * 3600)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(url: str, processes: int, fleet: bool) -> dict:
    """One crawl of the site by a fleet of `processes`, or (not `fleet`) that many crawls
    alone at once, each of the whole site in a home of its own."""
    from pipeline.services import Redis

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")} | {
            "CLLM_HOME": f"{tmp}/home", "CLLM_CRAWL_DELAY": "0", "CLLM_CRAWL_AUTOTHROTTLE": "false",
            "CLLM_LOG_FORMAT": "json", "CLLM_CRAWL_ALLOWED_NETWORKS": "127.0.0.1/32"}
        command = [str(CLLM), "crawl", "--json", "--seeds", url]
        before = cpu_seconds()
        redis = None
        if fleet:
            redis = Redis(Path(tmp) / "redis").start()
            env |= {"CLLM_CRAWL_FRONTIER": redis.url, "CLLM_CRAWL_IDLE_TIMEOUT": str(IDLE),
                    "CLLM_CRAWL_CONCURRENCY_PER_DOMAIN": str(2 * processes)}
            command += ["--crawl-id", "bench"]
        start = time.monotonic()
        children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True,
                                     env=env if fleet else env | {"CLLM_HOME": f"{tmp}/home{i}"})
                    for i in range(processes)]
        reports = []
        for child in children:
            out, err = child.communicate()
            if child.returncode:
                raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
            reports.append(json.loads(out))
        wall = time.monotonic() - start - (IDLE if fleet else 0)
        redis_cpu = 0.0
        if redis is not None:
            times = psutil.Process(redis.process.pid).cpu_times()
            redis_cpu = times.user + times.system
            redis.stop()
        cpu = cpu_seconds() - before
    pages = sum(r["pages_fetched"] for r in reports)
    return {"pages": pages, "docs": sum(r["docs_written"] for r in reports),
            "pages_per_s": pages / wall, "cpu": cpu, "redis_cpu": redis_cpu,
            "cpu_ms_per_page": cpu / max(pages, 1) * 1000,  # a crawl of nothing: 0 pages
            "split": [r["pages_fetched"] for r in reports]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (PYDOC / "index.html").is_file():
        raise SystemExit("needs Debian's python3.11-doc: apt-get install -y python3.11-doc")
    sys.path.insert(0, str(ROOT))
    from crawler.site import SiteServer

    server = SiteServer([PYDOC])
    configs = {"alone (no frontier)": (1, False), "fleet of 1": (1, True),
               "fleet of 2": (2, True), "fleet of 3": (3, True),
               "3 crawls alone at once": (3, False)}
    fleets = [name for name, (_, fleet) in configs.items() if fleet]
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    empty: dict[str, list[dict]] = {name: [] for name in configs}
    load_before = os.getloadavg()
    try:
        for i in range(args.repeats):
            for name, config in configs.items():
                runs[name].append(run(server.url + "index.html", *config))
                last = runs[name][-1]
                empty[name].append(run(server.url + "no-such-page.html", *config))
                print(f"run {i + 1} {name}: {last['pages_per_s']:.2f} pages/s, "
                      f"{last['cpu_ms_per_page']:.0f} CPU ms/page, pages {last['split']}; "
                      f"start-up {empty[name][-1]['cpu']:.1f} CPU s", file=sys.stderr)
    finally:
        server.close()

    def median(name: str, key: str, of=runs) -> float:
        return statistics.median(r[key] for r in of[name])

    def steady(name: str) -> float:
        """CPU ms a page beyond start-up and shutdown."""
        return after_start_up(median(name, "cpu"), median(name, "pages"),
                              median(name, "cpu", empty), median(name, "pages", empty))

    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines()
        if line.startswith("Model name")), platform.processor())
    alone = median("alone (no frontier)", "cpu_ms_per_page")
    alone_steady = steady("alone (no frontier)")
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {os.cpu_count()} cores, {model}, Python {platform.python_version()}; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    first = runs["alone (no frontier)"][0]
    print(f"pages: {first['pages']} fetched, {first['docs']} documents; {args.repeats} runs "
          "each, alternating")
    print("| | pages/s (median) | runs | CPU ms per page, whole run (median) | vs alone | "
          "start-up CPU s | CPU ms per page beyond start-up | vs alone | of which redis-server, "
          "ms per page |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in configs:
        rates = ", ".join(f"{r['pages_per_s']:.2f}" for r in runs[name])
        cost = median(name, "cpu_ms_per_page")
        redis = statistics.median(r["redis_cpu"] / r["pages"] * 1000 for r in runs[name])
        print(f"| {name} | {median(name, 'pages_per_s'):.2f} | {rates} | {cost:.0f} | "
              f"{cost / alone:.2f}x | {median(name, 'cpu', empty):.1f} | {steady(name):.0f} | "
              f"{steady(name) / alone_steady:.2f}x | {redis:.1f} |")
    for what, ratio in [("whole runs", max(median(n, "cpu_ms_per_page") for n in fleets)
                         / alone),
                        ("beyond start-up", max(steady(n) for n in fleets) / alone_steady)]:
        print(f"fleet CPU per page, {what}: at most {ratio:.2f}x a crawl alone's (target "
              f"<= 1.1x: {'met' if ratio <= 1.1 else 'not met'})")
    together = "3 crawls alone at once"
    for what, ratio in [("whole runs", median("fleet of 3", "cpu_ms_per_page")
                         / median(together, "cpu_ms_per_page")),
                        ("beyond start-up", steady("fleet of 3") / steady(together))]:
        print(f"fleet of 3 against 3 crawls alone at once (the same contention), {what}: "
              f"{ratio:.2f}x")
    cores = TARGET_RATE * steady("fleet of 3") / 1000
    print(f"1 billion pages a month ({TARGET_RATE:.0f} pages/s) at the fleet of 3's cost: "
          f"{cores:.0f} cores busy, e.g. {math.ceil(cores / 16)} machines of 16 cores")


if __name__ == "__main__":
    main()
