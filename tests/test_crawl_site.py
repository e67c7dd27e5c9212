"""End to end: the real `cllm crawl` against the embedded demo site served on 127.0.0.1."""

from __future__ import annotations

import json
import os
from collections import Counter
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.catalog import Catalog
from core.shards import SCHEMA
from crawler.config import CrawlConfig
from crawlkit import FAST, SITE, cllm_env, SITE_UPDATE, SiteServer, crawl, overlap, shard_rows

pytestmark = pytest.mark.slow

# The same text three times: a page, its print view (exact duplicate) and a "modernised"
# edition (near duplicate). Which one is kept depends on fetch order; exactly one is.
SAME_TEXT = {"/works/paradise-lost/1.html", "/print/paradise-lost/1.html",
             "/editions/paradise-lost-1-modernised.html"}
JUNK = {"/tags.html", "/coming-soon.html", "/concordance.html", "/index.html", "/",
        "/about.html", "/privacy.html", "/terms.html"}
BOILERPLATE = ["Other works by Milton", "Newsletter", "We use cookies", "Accept all cookies",
               "Privacy policy", "All rights reserved", "Browse by tag", "Milton Reading Room",
               "Previous | Contents", "Print this page", "Terms of use"]


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def text_pages(root: Path) -> set[str]:
    """The pages of the works: what a good crawl of the site keeps."""
    return {"/" + p.relative_to(root).as_posix() for p in root.glob("works/*/*.html")
            if p.name != "index.html"}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A copy of the site (tests change it), served, and crawled once."""
    tmp = tmp_path_factory.mktemp("site")
    root = tmp / "site"
    shutil.copytree(SITE, root)
    server = SiteServer([root])
    home = tmp / "home"
    report, result = crawl(home, "--seeds", server.url)
    yield {"root": root, "server": server, "home": home, "report": report, "log": result.stderr,
           "docs": shard_rows(home), "requested": list(server.requested),
           "timings": list(server.timings), "bytes": server.bytes_sent}
    server.close()


def test_the_site_gives_the_expected_documents(first):
    urls = [path_of(d["url"]) for d in first["docs"]]
    assert len(urls) == len(set(urls))
    kept_same_text = set(urls) & SAME_TEXT
    assert len(kept_same_text) == 1
    expected = text_pages(first["root"]) - SAME_TEXT
    assert set(urls) - SAME_TEXT == expected
    # Pages linked from nowhere but sitemap.xml are found too.
    assert any(u.startswith("/works/shorter-poems/") for u in urls)
    report = first["report"]
    assert report["docs_written"] == len(urls) == report["shards"][0]["rows"]
    assert report["errors"] == {"http_404": 2}  # the site's two broken "print" links
    assert report["finish_reason"] == "finished" and report["pages_per_second"] > 0
    assert '"event": "crawl_progress"' in first["log"]  # progress while crawling


def test_the_site_has_at_most_its_concurrency_of_requests_with_no_delay(first):
    """These crawls run with `[crawl] delay = 0`: the site still never had more than
    `concurrency_per_domain` (2) of them at once. Scrapy's own downloader let a site's whole
    queue through under asyncio (crawler/downloader.py)."""
    assert overlap(first["timings"]) <= CrawlConfig().concurrency_per_domain


def test_the_disallowed_path_is_never_requested(first):
    requested = first["requested"]
    assert "/robots.txt" in requested
    assert not [p for p in requested if p.startswith("/private/")]
    assert first["report"]["skipped"]["robots"] == 1


def test_duplicates_and_junk_are_dropped_with_their_reasons(first):
    report = first["report"]
    assert report["duplicates_exact"] + report["duplicates_near"] == 2
    assert report["duplicates_near"] >= 1  # the modernised edition, or what it shadows
    assert {"too_short", "no_stopwords", "word_length"} <= set(report["dropped"])
    urls = {path_of(d["url"]) for d in first["docs"]}
    assert not urls & JUNK


def test_navigation_and_boilerplate_are_absent_from_text(first):
    for doc in first["docs"]:
        for phrase in BOILERPLATE:
            assert phrase not in doc["text"], (phrase, doc["url"])
        assert doc["title"] and len(doc["text"]) > 1500


def test_shards_read_back_in_the_architecture_schema(first):
    home = first["home"]
    paths = sorted(home.glob("shards/*/part-*.parquet"))
    assert [p.name for p in paths] == ["part-00001.parquet"]
    assert not list(home.glob("shards/*/.*"))  # no temp file left behind
    table = pq.read_table(paths[0])
    assert table.schema.remove_metadata() == SCHEMA.remove_metadata()
    meta = table.schema.metadata
    assert meta[b"cllm.schema_version"] == b"3" and meta[b"cllm.crawler_version"]
    column = pq.ParquetFile(paths[0]).metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"
    for doc in table.to_pylist():
        assert doc["n_chars"] == len(doc["text"]) and doc["http_status"] == 200
        assert doc["language"] == "en" and doc["content_type"] == "text/html"
        assert doc["language_score"] > 0.9 and doc["declared_language"] == "en"
        assert doc["domain"] == "127.0.0.1" and doc["fetched_at"].tzinfo is not None
        assert doc["crawl_id"] == first["report"]["crawl_id"]
    with Catalog(home) as catalog:
        (shard,) = catalog.list_shards()
    assert (shard.path, shard.rows, shard.state) == (paths[0], table.num_rows, "new")
    assert shard.bytes == paths[0].stat().st_size


def test_every_dropped_page_is_recorded_with_its_reason_and_text(first):
    report = first["report"]
    (folder,) = (first["home"] / "crawl" / "dropped").iterdir()
    assert folder.name == report["crawl_id"]
    drops = pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pylist()
    reasons = Counter(d["reason"] for d in drops)
    assert reasons == Counter(report["dropped"]) + Counter(
        duplicate_exact=report["duplicates_exact"], duplicate_near=report["duplicates_near"])
    assert report["languages"] == {"en": report["docs_written"]}
    junk = {path_of(d["url"]): d for d in drops}
    assert set(junk) >= {"/tags.html", "/coming-soon.html", "/concordance.html"}
    for drop in drops:  # fewer than 20 of each reason: every text that was found is kept
        assert drop["text"] is not None or drop["reason"] == "no_text", drop
        assert drop["crawl_id"] == report["crawl_id"]
    assert junk["/coming-soon.html"]["detail"].endswith("words (from 50 to 200000)")


def test_recrawls_add_only_what_is_new(first):
    home, root, server = first["home"], first["root"], first["server"]
    before = len(shard_rows(home))

    # 1. Nothing changed: nothing new, and no page is extracted again, nor even downloaded:
    # each is asked for with its ETag and answered 304 Not Modified, its stored links followed.
    sent, asked = server.bytes_sent, len(server.requested)
    report, _ = crawl(home, "--seeds", server.url)
    assert report["docs_written"] == 0 and report["shards"] == []
    assert report["extracted"] == 0 and report["unchanged"] == report["pages_fetched"] > 50
    assert report["not_modified"] == report["pages_fetched"]
    assert set(server.requested[asked:]) == set(first["requested"])  # every page reached
    assert server.bytes_sent - sent < first["bytes"] / 20  # robots.txt, sitemap.xml, headers

    # 2. One page rewritten (a new passage) and one with a word changed (a near duplicate).
    rewritten = root / "works/areopagitica/3.html"
    passage = (SITE_UPDATE / "works/paradise-regained/2.html").read_text(encoding="utf-8")
    passage = passage.split("<article>", 1)[1].split("</article>", 1)[0]
    rewritten.write_text(rewritten.read_text(encoding="utf-8").replace("</article>", passage + "</article>"),
                         encoding="utf-8")
    tweaked = root / "works/paradise-lost/7.html"
    html = tweaked.read_text(encoding="utf-8")
    tweaked.write_text(html.replace(" the ", " thee ", 1), encoding="utf-8")
    report, _ = crawl(home, "--seeds", server.url)
    assert report["docs_written"] == 1 and report["duplicates_near"] == 1
    assert report["extracted"] == 2 and report["not_modified"] == report["pages_fetched"] - 2
    new_docs = shard_rows(home)[before:]
    assert [path_of(d["url"]) for d in new_docs] == ["/works/areopagitica/3.html"]

    # 3. New pages appear on the site (data/site-update/): the crawl finds only them.
    server.publish(SITE_UPDATE)
    report, _ = crawl(home, "--seeds", server.url)
    new_pages = text_pages(SITE_UPDATE)
    assert report["docs_written"] == len(new_pages) == 9
    added = {path_of(d["url"]) for d in shard_rows(home)[before + 1:]}
    assert added == new_pages

    doc_ids = [d["doc_id"] for d in shard_rows(home)]
    assert len(doc_ids) == len(set(doc_ids))


# What the crawl DAG and `cllm crawl` call, with the progress bar and its log events off.
CRAWL_QUIETLY = """
import json, sys
from core.log import configure_logging
from crawler.config import CrawlConfig
from crawler.run import crawl

configure_logging("json")
report = crawl([sys.argv[1]], sys.argv[2],
               CrawlConfig(delay=0, autothrottle=False, allowed_networks="127.0.0.1/32"),
               progress=False)
print(json.dumps(report.to_dict()))
"""


def test_dropped_pages_are_counted_by_reason_with_progress_off(first, site, tmp_path):
    result = subprocess.run([sys.executable, "-c", CRAWL_QUIETLY, site.url, str(tmp_path / "home")],
                            cwd=Path(__file__).parent.parent, env=os.environ | FAST,
                            check=True, capture_output=True, text=True, timeout=300)
    assert "crawl_progress" not in result.stderr
    report = json.loads(result.stdout)
    assert report["dropped"] == first["report"]["dropped"]  # the same site, progress on
    assert {"too_short", "no_stopwords", "word_length"} <= set(report["dropped"])
    assert report["duplicates_exact"] + report["duplicates_near"] == 2


def test_scrapy_crawl_works_inside_the_project(tmp_path):
    server = SiteServer([SITE])
    env = cllm_env(tmp_path / "home")
    try:
        subprocess.run([str(Path(sys.executable).with_name("scrapy")), "crawl", "site",
                        "-a", f"seeds={server.url}"], cwd=Path(__file__).parent.parent, env=env,
                       check=True, capture_output=True, timeout=300)
    finally:
        server.close()
    assert len(shard_rows(tmp_path / "home")) == len(text_pages(SITE))  # one per text
    with Catalog(tmp_path / "home") as catalog:
        assert len(catalog.list_shards(state="new")) == 1
