"""A fleet crawl end to end: three real `cllm crawl` processes on one crawl id and one Redis
frontier against a site on 127.0.0.1; one SIGKILLed midway and Redis restarted while they
crawl. The survivors crawl what the killed one held, the fleet ends by itself, and the
documents are exactly those of a single-process crawl, each once, with politeness held
across the fleet."""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import time

import pyarrow.parquet as pq
import pytest
import redis

from core.net import free_port
from crawler.fleet import Fleet
from crawlkit import CLLM, SITE, SiteServer, cllm_env, crawl, overlap
from pipeline.services import Redis

pytestmark = pytest.mark.slow
DELAY, SLOTS = 0.15, 2


def assert_polite(timings: list[tuple[str, float, float]], delay: float = DELAY) -> None:
    """The site's own record of (path, start, end): never more than SLOTS requests at once,
    robots.txt asked for once, and the requests kept `delay` apart. A request's way from the
    slot taken in Redis to the site varies with the machine's load (on a loaded 2-core
    machine by up to 120 ms), so single gaps may come out shorter; but three processes each
    polite on its own would come three times as often: most gaps a third."""
    timings = sorted(timings, key=lambda t: t[1])
    assert overlap(timings) <= SLOTS
    assert [t[0] for t in timings].count("/robots.txt") == 1  # once per crawl
    gaps = sorted(b[1] - a[1] for a, b in zip(timings, timings[1:]))
    assert gaps[len(gaps) // 10] >= delay * 2 / 3, gaps[:10]
    assert statistics.median(gaps) >= delay * 0.9, statistics.median(gaps)


def holding_requests(fleet: Fleet, candidates: list) -> subprocess.Popen | None:
    """One of the `candidates` (Popen) that holds requests in flight now, or None."""
    for process in fleet.redis.hkeys(fleet.key("info")):
        pid = int(process.decode().split("-")[-2])  # process ids are host-pid-random
        if fleet.redis.hlen(fleet.key(f"inflight:{process.decode()}")):
            for candidate in candidates:
                if candidate.pid == pid:
                    return candidate
    return None


def assert_crawled_once(home, reports: list[dict], expected: list[str]) -> None:
    """The fleet ended by itself, every page crawled once: nothing lost, nothing twice."""
    assert all(r["finish_reason"] == "finished" and r["complete"] for r in reports)
    got = doc_ids(home)
    assert sorted(got) == sorted(expected) and len(set(got)) == len(got)
    assert sum(r["docs_written"] for r in reports) == len(expected)


# The site's duplicate pages (a print view, a modernised edition) removed: which copy a
# fleet keeps is a matter of the crawl state's cross-process dedup, not of the frontier.
DUPLICATES = ["print", "editions"]


def doc_ids(home) -> list[str]:
    return [d for p in sorted(home.glob("shards/*/part-*.parquet"))
            for d in pq.read_table(p, columns=["doc_id"]).column("doc_id").to_pylist()]


def test_a_fleet_loses_nothing_to_a_kill_or_a_redis_restart_and_stays_polite(tmp_path):
    root = tmp_path / "site"
    shutil.copytree(SITE, root)
    for name in DUPLICATES:
        shutil.rmtree(root / name)
    reference = SiteServer([root])
    single, _ = crawl(tmp_path / "single", "--seeds", reference.url)
    reference.close()
    expected = doc_ids(tmp_path / "single")

    frontier = Redis(tmp_path / "redis").start()
    try:
        fleet_crawl(tmp_path, root, frontier, expected)
    finally:
        frontier.stop()  # (restarted in place by fleet_crawl)


def fleet_crawl(tmp_path, root, frontier, expected) -> None:
    site = SiteServer([root])
    home = tmp_path / "fleet"
    env = cllm_env(home, {"CLLM_CRAWL_FRONTIER": frontier.url, "CLLM_CRAWL_IDLE_TIMEOUT": "3",
                          "CLLM_CRAWL_FRONTIER_LEASE": "3", "CLLM_CRAWL_DELAY": str(DELAY),
                          "CLLM_CRAWL_CONCURRENCY_PER_DOMAIN": str(SLOTS),
                          "CLLM_CRAWL_EXTRACT_WORKERS": "0"})
    command = [str(CLLM), "crawl", "--json", "--seeds", site.url, "--crawl-id", "f1"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        fleet = Fleet(redis.Redis.from_url(frontier.url), "f1")
        victim = other = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:  # one holding requests, midway
            time.sleep(0.05)
            if other is None and len(site.timings) >= 5:
                # A different crawl on the fleet's home, while the fleet runs: refused.
                other = subprocess.Popen([str(CLLM), "crawl", "--seeds", site.url],
                                         env=cllm_env(home), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            if len(site.timings) < 20:
                continue
            victim = holding_requests(fleet, processes[1:])
        assert victim is not None, "no process held requests midway"
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        frontier.stop()  # Redis restarted: its append-only file keeps the frontier
        frontier.start()
        assert other.wait(60) == 2 and "fleet crawl f1 is running" in other.stderr.read()
        survivors = [p for p in processes if p is not victim]
        reports = []
        for process in survivors:
            out, err = process.communicate(timeout=180)
            assert process.returncode == 0, err[-3000:]
            reports.append(json.loads(out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        site.close()

    assert_crawled_once(home, reports, expected)
    assert not list(home.glob("shards/f1/.*.tmp"))
    assert all(p.name.startswith("part-") and p.name.count("-") >= 3
               for p in home.glob("shards/f1/*.parquet"))
    names = {p.name for p in (home / "crawl" / "reports").glob("f1.*.json")}
    assert names == {f"f1.{r['process']}.json" for r in reports}
    assert_polite(site.timings)  # across the fleet, by the site's own log
    # A finished crawl id is not started again.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "has finished: give a new --crawl-id" in again.stderr


def test_an_unreachable_frontier_is_one_line_and_exit_2(tmp_path):
    url = f"redis://127.0.0.1:{free_port(0)}/0"
    _, result = crawl(tmp_path / "home", "--seeds", "http://127.0.0.1:9/", "--crawl-id", "x",
                      env={"CLLM_CRAWL_FRONTIER": url}, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"cllm crawl: error: [crawl] frontier {url}: Redis does not answer")
    _, result = crawl(tmp_path / "home", "--seeds", "http://127.0.0.1:9/",
                      env={"CLLM_CRAWL_FRONTIER": url}, check=False)
    assert result.returncode == 2 and "needs --crawl-id" in result.stderr
