"""A crawl killed outright (SIGKILL) or stopped with Ctrl-C resumes cleanly: the same
documents as an uninterrupted crawl, none twice, and never a partial shard in sight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.catalog import Catalog
from crawlkit import CLLM, cllm_env, crawl, shard_rows

pytestmark = pytest.mark.slow

# Slow enough to interrupt mid-way, and a shard committed every 5 documents.
SLOW = {"CLLM_CRAWL_DELAY": "0.1", "CLLM_CRAWL_CONCURRENCY_PER_DOMAIN": "1",
        "CLLM_CRAWL_ROW_GROUP_ROWS": "5", "CLLM_CRAWL_SHARD_MAX_MB": "0.001"}
SAME_TEXT = {"/works/paradise-lost/1.html", "/print/paradise-lost/1.html",
             "/editions/paradise-lost-1-modernised.html"}


@pytest.fixture(scope="module")
def reference(site, tmp_path_factory):
    """The URLs an uninterrupted crawl keeps."""
    home = tmp_path_factory.mktemp("reference") / "home"
    crawl(home, "--seeds", site.url, env=SLOW | {"CLLM_CRAWL_DELAY": "0"})
    return urls_kept(home)


def urls_kept(home: Path) -> set[str]:
    # One of three same-text pages is kept, which one depends on timing: compare the rest.
    return {"/" + d["url"].split("/", 3)[3] for d in shard_rows(home)} - SAME_TEXT


def start(home: Path, url: str) -> subprocess.Popen:
    # A session of its own, like a job on a terminal: signals go to the whole group,
    # the extraction workers included.
    return subprocess.Popen([str(CLLM), "crawl", "--json", "--seeds", url], cwd=home.parent,
                            env=cllm_env(home, SLOW), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_shards(home: Path, n: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while len(list(home.glob("shards/*/part-*.parquet"))) < n:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the crawl wrote no shards"
        time.sleep(0.05)


def assert_consistent(home: Path) -> None:
    """Every visible shard is complete and catalogued; no document appears twice."""
    paths = sorted(home.glob("shards/*/part-*.parquet"))
    for path in paths:
        pq.read_table(path)  # complete: the footer is there
    with Catalog(home) as catalog:
        assert sorted(s.path for s in catalog.list_shards()) == paths
    doc_ids = [d["doc_id"] for d in shard_rows(home)]
    assert len(doc_ids) == len(set(doc_ids))


def test_a_killed_crawl_resumes_with_the_same_documents_once(site, reference, tmp_path):
    home = tmp_path / "home"
    process = start(home, site.url)
    wait_for_shards(home, 3, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    process.stderr.close()
    visible = sorted(home.glob("shards/*/part-*.parquet"))
    for path in visible:
        pq.read_table(path)  # whatever is visible after a kill is a complete shard

    report, _ = crawl(home, "--seeds", site.url, env=SLOW | {"CLLM_CRAWL_DELAY": "0"})
    assert report["resumed"] and report["finish_reason"] == "finished"
    assert report["unchanged"] > 0  # pages already in shards were not processed again
    assert_consistent(home)
    assert urls_kept(home) == reference
    assert len({p.parent for p in home.glob("shards/*/part-*.parquet")}) == 1  # one crawl id


def test_ctrl_c_pauses_and_the_same_command_resumes(site, reference, tmp_path):
    home = tmp_path / "home"
    process = start(home, site.url)
    wait_for_shards(home, 2, process)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "paused: run the same command again to resume" in err
    paused = json.loads(out)
    assert paused["finish_reason"] == "shutdown"
    assert_consistent(home)
    job = json.loads(next(home.glob("crawl/jobs/*/job.json")).read_text())
    assert job["status"] == "paused"

    report, _ = crawl(home, "--seeds", site.url, env=SLOW | {"CLLM_CRAWL_DELAY": "0"})
    assert report["resumed"] and report["crawl_id"] == paused["crawl_id"]
    assert report["unchanged"] == 0  # Scrapy's JOBDIR queue went on where it stopped
    assert_consistent(home)
    assert urls_kept(home) == reference
