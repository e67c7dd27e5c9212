"""A hostile site (tests/hostile_site.py) crawled with the default bounds: the crawl ends,
exits 0, keeps the ordinary pages, counts every trap under its reason, and never connects
to 127.0.0.2, which it was not allowed (only 127.0.0.1/32 is)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from crawlkit import CLLM, cllm_env, crawl, shard_rows
from hostile_site import (
    CALENDAR_START,
    GOOD,
    HIDDEN,
    LIST_QUERIES,
    SITEMAP_SETS,
    TRAP_LINKS,
    HostileSite,
    Listener,
)

# Seconds, not bounds: the drip page times out in 3 s rather than 30, and the page that
# takes a minute to extract is given 10 s (ordinary pages take well under one).
QUICK = {"CLLM_CRAWL_TIMEOUT": "3", "CLLM_CRAWL_RETRIES": "1", "CLLM_CRAWL_RETRY_BACKOFF": "0.2",
         "CLLM_CRAWL_EXTRACT_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def forbidden():
    listener = Listener("127.0.0.2")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def hostile(forbidden, tmp_path_factory):
    site = HostileSite(forbidden)
    home = tmp_path_factory.mktemp("hostile") / "home"
    # Every host the traps name is an allowed domain: only the network guard stands between
    # the crawl and 127.0.0.2.
    report, result = crawl(home, "--seeds", site.url, "--allowed-domains", "127.0.0.1",
                           "127.0.0.2", "127.2", "::ffff:7f00:2", env=QUICK)
    yield {"report": report, "docs": shard_rows(home), "hits": site.hits, "log": result.stderr}
    site.close()


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_crawl_of_a_hostile_site_ends_and_keeps_the_good_pages(hostile, forbidden):
    report = hostile["report"]
    assert report["finish_reason"] == "finished" and report["complete"] and not report["lost"]
    paths = {path_of(d["url"]) for d in hostile["docs"]}
    assert {*GOOD, HIDDEN, "/utf16.html", "/utf32.txt"} <= paths  # HIDDEN: a slow page's link
    doc_ids = [d["doc_id"] for d in hostile["docs"]]
    assert len(doc_ids) == len(set(doc_ids))
    assert forbidden.connections == []


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_trap_is_counted_under_its_reason(hostile):
    report, hits = hostile["report"], hostile["hits"]
    skipped = report["skipped"]
    # 20,000 links: the first 1,000 taken (robots.txt then refuses /trap/), the rest counted.
    assert skipped["links_per_page"] == TRAP_LINKS - 1000
    # 1,200 queries under one path: 1,000 taken, 200 counted.
    assert skipped["query_explosion"] == LIST_QUERIES - 1000
    assert skipped["robots"] == 2000
    # The endless calendar: 20 months from the front page, then max_depth.
    assert skipped["max_depth"] == 1
    assert sum(1 for p in hits if p.startswith("/cal/")) == 20
    assert f"/cal/{CALENDAR_START[0]}/{CALENDAR_START[1]}" in hits
    # The 127.0.0.2 link and redirect, the same address as an IPv4-mapped IPv6 literal, as
    # `127.2` (which only the resolver sees as an address), and in the sitemap index.
    assert skipped["blocked_address"] == 5
    assert (skipped["url_length"], skipped["repeated_path"], skipped["query_params"]) == (1, 1, 1)
    # The sitemap index names 62 sitemaps; a host may have 50, an index one level of index.
    assert skipped["sitemap_budget"] == SITEMAP_SETS + 2 - 50 and skipped["sitemap_depth"] == 1
    assert "/sitemaps/deeper.xml" not in hits
    # The session id is not part of a URL: /good/1.html once.
    assert hits["/good/1.html"] == 1 and not [p for p in hits if "jsessionid" in p]
    assert report["errors"]["too_large"] == 1  # the gzip bomb
    assert report["errors"]["timeout"] == 1  # the drip, retried once
    assert hits["/drip.html"] == 2
    assert report["dropped"]["extract_timeout"] == 1 and report["workers_replaced"] == 1
    assert report["dropped"]["binary"] == 1  # the broken PDF
    assert report["dropped"]["no_text"] == 1  # the 30,000-deep nesting


@pytest.mark.slow
def test_the_bait_for_the_text_steps_is_read_or_dropped_by_reason(hostile):
    report = hostile["report"]
    paths = {path_of(d["url"]) for d in hostile["docs"]}
    bait = {p for p in hostile["hits"] if p.startswith("/bait/")}
    assert len(bait) == 4
    dropped = sum(report["dropped"].values())
    assert len(bait - paths) <= dropped  # each bait page not kept is counted
    assert "repetition" in report["dropped"]  # thousands of identical lines


def test_a_seed_on_a_refused_address_is_one_line_and_sends_nothing(forbidden, tmp_path):
    home = tmp_path / "home"
    report, result = crawl(home, "--seeds", forbidden.url + "/", check=False)
    assert result.returncode == 2 and report is None
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"cllm crawl: error: seed {forbidden.url}/ is on a refused "
                                    "address (127.0.0.2)")
    assert "allowed_networks" in result.stderr and "--allow-network" in result.stderr
    assert forbidden.connections == []
    assert not (home / "shards").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workers_killed_mid_crawl_are_counted_and_replaced(forbidden, tmp_path):
    """Both extraction workers SIGKILLed while one is on a page that takes a minute: that
    page is counted `extract_crashed`, its links (sent before its text) are still followed,
    new workers take the rest, and the crawl completes."""
    site = HostileSite(forbidden)
    home = tmp_path / "home"
    process = subprocess.Popen(
        [str(CLLM), "crawl", "--json", "--seeds", site.url + "slow.html"], cwd=tmp_path,
        env=cllm_env(home, {"CLLM_CRAWL_EXTRACT_TIMEOUT": "600"}), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        workers = []
        while len(workers) < 2:
            line = process.stderr.readline()
            assert line, "the crawl ended before its workers started"
            if '"extract_worker_started"' in line:
                workers.append(json.loads(line)["pid"])
        while not site.hits["/slow.html"]:
            time.sleep(0.05)
        time.sleep(2)  # the page is in a worker, for a minute
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        out, err = process.communicate(timeout=200)
    finally:
        process.kill()
        site.close()
    assert process.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert report["complete"] and report["dropped"] == {"extract_crashed": 1}
    assert report["workers_replaced"] == 2
    # The hidden page, linked only from the page lost, and the sitemap's pages.
    assert {path_of(d["url"]) for d in shard_rows(home)} == {HIDDEN, *GOOD}
