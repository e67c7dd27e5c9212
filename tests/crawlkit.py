"""Helpers for the crawler tests: run the real `cllm crawl`, read the shards it wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq

import conftest
from crawler.site import SITE, SITE_UPDATE, SiteServer

CLLM = conftest.CLLM
# Tests crawl at full speed: no politeness delay against our own 127.0.0.1 servers.
FAST = {"CLLM_CRAWL_DELAY": "0", "CLLM_CRAWL_AUTOTHROTTLE": "false", "CLLM_LOG_FORMAT": "json",
        "CLLM_CRAWL_ALLOWED_NETWORKS": "127.0.0.1/32"}  # the network guard lets only it in


def cllm_env(home: Path, env: dict | None = None) -> dict:
    """conftest's, with the crawl at full speed."""
    return conftest.cllm_env(home, FAST | (env or {}))


def crawl(home: Path, *args, env: dict | None = None, check: bool = True):
    """`cllm crawl --json ARGS...`; returns (report dict or None, CompletedProcess)."""
    result = subprocess.run([str(CLLM), "crawl", "--json", *map(str, args)], cwd=home.parent,
                            env=cllm_env(home, env), capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"cllm crawl {' '.join(map(str, args))} exited "
                             f"{result.returncode}:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return report, result


def shard_rows(home: Path) -> list[dict]:
    """Every document in every shard under the home."""
    rows = []
    for path in sorted(home.glob("shards/*/part-*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def overlap(timings: list[tuple[str, float, float]]) -> int:
    """The most requests a SiteServer was answering at one time, from its `timings`."""
    events = sorted([(s, 1) for _, s, _ in timings] + [(e, -1) for _, _, e in timings])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most
