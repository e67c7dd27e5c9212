"""The shard catalog and the crawl state on their database (core/db.py): the SQLite files under
the home and a real PostgreSQL server (the `database_url` fixture runs a test on each): dedup
decisions atomic across OS processes, claims of a killed crawler released, a dropped
PostgreSQL connection retried whole, a bad database_url refused in one line, and the crawl
and the continual flow on a PostgreSQL catalog."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from conftest import ROOT
from continual_kit import TINY, documents, shard_states, write_shard
from core.catalog import Catalog
from core.db import Database
from crawler.state import CRAWLERS, CrawlState, UrlLog
from crawlkit import SITE, SiteServer, crawl, shard_rows
from test_crawl_site import SAME_TEXT, path_of, text_pages
from test_crawl_units import PARAGRAPHS
from text import dedup

SHARD = "shards/c1/part-00001.parquet"


WORDS = sorted(set(re.findall(r"[a-z]+", " ".join(PARAGRAPHS).lower())))


def texts(n: int) -> list[tuple[str, str]]:
    """n unrelated texts of 600 words and, for each, a near twin (one word changed): far
    above the threshold, so LSH misses a twin with a chance of about 1e-6."""
    out = []
    for i in range(n):
        words = random.Random(i).choices(WORDS, k=600)
        twin = words[:300] + ["changed"] + words[301:]
        out.append((" ".join(words), " ".join(twin)))
    return out


def test_dedup_claims_commit_and_later_crawls(tmp_path, database_url):
    (text, near), (other, _) = texts(2)
    state = CrawlState(tmp_path, num_perm=128, threshold=0.8, database_url=database_url)
    assert state.index.check("a", text) is None
    assert state.index.check("a", text) == "duplicate_exact"
    assert state.index.check("b", near) == "duplicate_near"
    assert state.index.check("c", other) is None
    state.index.forget(["c"])  # not written after all: free for others
    # Another process meanwhile sees the claim of "a", and "c" free.
    rival = CrawlState(tmp_path, num_perm=128, threshold=0.8, database_url=database_url)
    assert rival.index.check("a", text) == "duplicate_exact"
    assert rival.index.check("b2", near) == "duplicate_near"
    rival.close()
    state.record_url("http://x/a", "sha-a", "a", '"e1"', "Tue, 01 Dec 2026 10:00:00 GMT",
                     ["http://x/b"])
    state.commit(SHARD)
    state.close()

    again = CrawlState(tmp_path, num_perm=128, threshold=0.8, database_url=database_url)
    assert again.index.check("a", text) == "duplicate_exact"
    assert again.index.check("b", near) == "duplicate_near"
    assert again.index.check("c", other) is None
    again.close()  # "c" never reached a shard: its claim goes with the crawl
    assert CrawlState(tmp_path, 128, 0.8, database_url).index.check("c", other) is None
    urls = UrlLog(tmp_path, database_url)
    record = urls.lookup("http://x/a")
    assert (record.body_sha256, record.doc_id, record.etag, record.links) == \
        ("sha-a", "a", '"e1"', ["http://x/b"])
    assert urls.lookup("http://x/none") is None
    urls.close()


def test_a_changed_threshold_rebands_the_stored_signatures(tmp_path):
    words = random.Random(7).choices(WORDS, k=2000)
    text, twin = " ".join(words), " ".join(words[:1000] + ["changed"] + words[1001:])
    state = CrawlState(tmp_path, num_perm=128, threshold=0.8)
    assert state.index.check("a", text) is None
    state.commit(SHARD)
    state.close()
    stricter = CrawlState(tmp_path, num_perm=128, threshold=0.9)  # bands made again
    assert stricter.index.shape != state.index.shape
    assert stricter.index.check("a", text) == "duplicate_exact"
    assert stricter.index.check("b", twin) == "duplicate_near"  # from the stored signature
    stricter.close()


RACER = """
import json, sys, time
from pathlib import Path
from crawler.state import CrawlState
home, url, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
pairs = json.loads(Path(sys.argv[4]).read_text())
state = CrawlState(home, 128, 0.8, url)
while not go.exists():
    time.sleep(0.01)
print(json.dumps([state.index.check(doc_id, text) for doc_id, text in pairs]), flush=True)
state.commit("shards/" + sys.argv[5] + "/part-00001.parquet")
state.close()
"""


def test_two_processes_racing_never_both_keep_twins(tmp_path, database_url):
    pairs = texts(40)
    # Process one checks the texts, process two their twins (the first ten: the very same
    # text, an exact duplicate), in the opposite order, both at once.
    one = [(f"t{i}", text) for i, (text, _) in enumerate(pairs)]
    two = [(f"t{i}" if i < 10 else f"n{i}", text if i < 10 else near)
           for i, (text, near) in enumerate(pairs)][::-1]
    CrawlState(tmp_path, 128, 0.8, database_url).close()  # tables made before the race
    go = tmp_path / "go"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    racers = []
    for name, docs in [("a", one), ("b", two)]:
        (tmp_path / f"{name}.json").write_text(json.dumps(docs))
        racers.append(subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), database_url,
                                        str(go), str(tmp_path / f"{name}.json"), name],
                                       stdout=subprocess.PIPE, text=True, env=env))
    time.sleep(1.5)  # both started and waiting
    go.touch()
    first, second = (json.loads(r.communicate(timeout=120)[0]) for r in racers)
    second = second[::-1]
    for i, (a, b) in enumerate(zip(first, second)):
        assert [a, b].count(None) == 1, (i, a, b)  # exactly one of the twins kept
        assert (a or b) == ("duplicate_exact" if i < 10 else "duplicate_near"), (i, a, b)
    db = Database(database_url, tmp_path / "crawl" / "state.sqlite", dedup.METADATA)
    kept = db.read(lambda c: c.execute(sa.select(sa.func.count()).select_from(dedup.DOCS)
                                       .where(dedup.DOCS.c.owner.is_(None))).scalar())
    db.close()
    assert kept == 40


HOLDER = """
import sys, time
from crawler.state import CrawlState
state = CrawlState(sys.argv[1], 128, 0.8, sys.argv[2])
assert state.index.check("a", sys.argv[3]) is None
print("claimed", flush=True)
time.sleep(600)
"""


def test_the_claims_of_a_killed_crawler_are_released(tmp_path, database_url):
    (text, near), = texts(1)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), database_url, text],
                              stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "claimed"
    alive = CrawlState(tmp_path, 128, 0.8, database_url)
    assert alive.index.check("b", near) == "duplicate_near"  # a live claim holds
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert alive.heartbeat() == 1  # its pid is gone from this host: released
    assert alive.index.check("b", near) is None
    alive.close()

    # A crawler on another host is known dead only by its heartbeat, after the lease.
    other = CrawlState(tmp_path, 128, 0.8, database_url)
    assert other.index.check("a", text) is None
    other.db.write(lambda c: c.execute(CRAWLERS.update().where(CRAWLERS.c.owner == other.owner)
                                       .values(host="elsewhere", pid=1)))
    watcher = CrawlState(tmp_path, 128, 0.8, database_url, lease=1.0)
    assert watcher.index.check("a", text) == "duplicate_exact"
    time.sleep(1.5)
    assert watcher.heartbeat() == 1 and watcher.index.check("a", text) is None
    watcher.close()


# A crawl's shard writer killed around its commit: the documents are claimed, the shard
# complete under its temp name, then (argv[3]) the crawl state commits it or not, and the
# process dies before the rename.
KILLED_WRITER = """
import os, sys
from core.home import Home
from core.shards import ShardWriter, text_row
from crawler.state import CrawlState
home, url, when, texts = Home(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
state = CrawlState(home.root, 128, 0.8, url, "c1")
def ready(shard):
    if when == "after":
        state.commit(home.relative(shard.path))
    os._exit(9)
writer = ShardWriter(home.crawl_shards("c1"), 1 << 20, 100, print, on_ready=ready)
for i, text in enumerate(texts):
    row = text_row(text, "c1", f"http://x/{i}")
    assert state.index.check(row["doc_id"], text) is None
    state.record_url(row["url"], "sha", row["doc_id"])
    writer.add(row)
writer.close()
"""


@pytest.mark.parametrize(("database_url", "when"), [
    ("sqlite", "after"), ("postgresql", "after"), ("sqlite", "before")], indirect=["database_url"])
def test_a_crawl_killed_around_its_commit_settles_its_shard_on_the_next_start(
        tmp_path, database_url, when):
    """The crawl state's commit decides: committed, the temp shard goes into place (and into
    the catalog) when the next crawl starts, its documents still kept; not committed, it is
    removed and its documents' claims released, so they are crawled again."""
    pairs = texts(3)
    home = tmp_path / "home"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(home), database_url, when,
                             *(text for text, _ in pairs)], env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert killed.returncode == 9
    assert [p.name for p in (home / "shards" / "c1").iterdir()] == [".part-00001.parquet.tmp"]
    page = tmp_path / "site"
    page.mkdir()
    (page / "index.html").write_text("<html><body><p>A page.</p></body></html>")
    server = SiteServer([page])
    try:
        crawl(home, "--seeds", server.url, "--crawl-id", "c1",
              env={"CLLM_DATABASE_URL": database_url})
    finally:
        server.close()
    assert not list(home.glob("shards/c1/.*"))
    with Catalog(home, database_url) as catalog:
        catalogued = {s.name: s.rows for s in catalog.list_shards(crawl_id="c1")}
    state = CrawlState(home, 128, 0.8, database_url)
    if when == "after":
        assert catalogued == {"shards/c1/part-00001.parquet": 3}
        assert {d["text"] for d in shard_rows(home)} == {text for text, _ in pairs}
        assert [state.index.check(f"twin{i}", twin) for i, (_, twin) in enumerate(pairs)] == \
            ["duplicate_near"] * 3
    else:
        assert catalogued == {} and shard_rows(home) == []
        assert [state.index.check(f"twin{i}", twin) for i, (_, twin) in enumerate(pairs)] == \
            [None] * 3
    state.close()


def terminate_backends(postgres, url: str, own: bool = False) -> None:
    name = sa.make_url(url).database
    mine = "" if own else " AND pid <> pg_backend_pid()"
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
                    "-tAc", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}'{mine}"], check=True, capture_output=True)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dropped_connection_is_retried_whole(tmp_path, database_url, postgres):
    (text, _), (other, _) = texts(2)
    state = CrawlState(tmp_path, 128, 0.8, database_url)
    assert state.index.check("a", text) is None
    terminate_backends(postgres, database_url)  # the pool's connections die
    state.record_url("http://x/a", "sha", "a")
    state.commit(SHARD)  # found dead before use, reconnected

    # A connection killed inside a transaction: the whole of it runs again, once applied.
    tries = []

    def work(conn):
        tries.append(1)
        conn.execute(CRAWLERS.update().values(crawl_id=CRAWLERS.c.crawl_id + "x"))
        if len(tries) == 1:
            conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))

    state.db.write(work)
    marks = state.db.read(lambda c: c.execute(sa.select(CRAWLERS.c.crawl_id)).scalars().all())
    assert len(tries) == 2 and marks == ["x"]

    # The server restarted under a commit: retried until it is back.
    postgres.stop()
    threading.Timer(1.0, postgres.start).start()
    assert state.index.check("c", other) is None
    state.commit(SHARD)
    state.close()
    assert CrawlState(tmp_path, 128, 0.8, database_url).index.check("c", other) == \
        "duplicate_exact"


@pytest.mark.parametrize("url, says", [
    ("mysql://u@127.0.0.1/x", "is not PostgreSQL"),
    ("not a url", "is not a database URL"),
    ("postgresql://u:secret@127.0.0.1:1/x", "cannot be reached"),
])
def test_a_bad_database_url_is_one_line_and_exit_2(home, url, says):
    _, result = crawl(home, "--seeds", "http://127.0.0.1:1/", env={"CLLM_DATABASE_URL": url},
                      check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("cllm crawl: error: database_url") and says in line, line
    assert "secret" not in result.stderr
    assert not (home / "catalog.sqlite").exists()


@pytest.mark.slow
def test_two_crawls_of_one_site_on_one_postgres_keep_each_document_once(tmp_path, postgres):
    """Two `cllm crawl` processes (homes of their own, one database): the shared dedup index
    lets each document into exactly one of their shards."""
    url = postgres.url("twocrawls", driver="postgresql")
    postgres.create("twocrawls")
    server = SiteServer([SITE])
    env = {"CLLM_DATABASE_URL": url}
    reports = {}

    def run(name: str) -> None:
        reports[name], _ = crawl(tmp_path / name, "--seeds", server.url, "--crawl-id", name,
                                 env=env)

    try:
        runs = [threading.Thread(target=run, args=(name,)) for name in ("one", "two")]
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join()
    finally:
        server.close()
    docs = shard_rows(tmp_path / "one") + shard_rows(tmp_path / "two")
    assert len({d["doc_id"] for d in docs}) == len(docs)
    urls = {path_of(d["url"]) for d in docs}
    assert len(urls & SAME_TEXT) == 1 and urls - SAME_TEXT == text_pages(SITE) - SAME_TEXT
    # Which crawl keeps a document is a race (one may keep them all); each crawl kept it,
    # refused it as the other's, or found its page unchanged since the other committed it
    # (the URL log is shared too)
    assert sum(r["docs_written"] for r in reports.values()) == len(docs)
    for report in reports.values():
        seen = (report["docs_written"] + report["duplicates_exact"] + report["duplicates_near"]
                + report["unchanged"])
        assert seen >= len(docs), report
    writers = {name for name, report in reports.items() if report["docs_written"]}
    with Catalog(tmp_path / "one", url) as catalog:  # one catalog for both homes
        assert {s.crawl_id for s in catalog.list_shards()} == writers
    assert not list(tmp_path.glob("*/catalog.sqlite"))
    assert not list(tmp_path.glob("*/crawl/*.sqlite"))


@pytest.mark.slow
def test_training_and_update_read_a_postgres_catalog(tmp_path, postgres, registry_template):
    from conftest import run_cllm
    from continual_kit import new_home

    url = postgres.url("continual", driver="postgresql")
    postgres.create("continual")
    home = new_home(tmp_path, registry_template)
    env = TINY | {"CLLM_DATABASE_URL": url}
    write_shard(home, "crawl-1", documents("hamlet", limit=40), database_url=url)
    run_cllm("train", "--from-scratch", home=home, env=env)
    write_shard(home, "crawl-2", documents("othello", limit=20), database_url=url)
    run_cllm("update", home=home, env=env)
    states = shard_states(home, url)
    assert states["shards/crawl-1/part-00001.parquet"] == ("consumed", "1")
    assert states["shards/crawl-2/part-00001.parquet"][0] == "consumed"
    assert not (home / "catalog.sqlite").exists()
