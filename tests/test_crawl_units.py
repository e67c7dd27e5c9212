"""The crawler's parts on their own: URL hygiene, extraction, quality filters, the text
steps outside a crawl, the crawl state, the shard writer and the shard catalog."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.catalog import Catalog
from core.config import load
from core.db import Database
from core.errors import UserError
from core.shards import SCHEMA, ShardWriter, remove_temp_files
from crawler.config import CrawlConfig, CrawlerConfig
from crawler.steps import quality_steps, text_steps
from crawler.urls import UrlPolicy, canonical_url, check_seed
from crawlkit import SITE
from text import dedup
from text.document import Document, Drop, Steps
from text.extract import Extract, extract, looks_binary, normalize_text

PROSE = (SITE.parent / "text/milton/areopagitica.txt").read_text(encoding="utf-8")
PARAGRAPHS = [p.replace("\n", " ") for p in PROSE.split("\n\n") if len(p) > 400]


def quality_problem(text: str, config: CrawlConfig) -> str | None:
    """The reason the crawler's quality steps drop a text, or None when it passes."""
    try:
        Steps(quality_steps(config))(Document(text=text))
    except Drop as drop:
        return drop.reason
    return None


def test_canonical_urls_drop_tracking_parameters_and_fragments():
    assert canonical_url("http://Example.org/a?utm_source=x&b=2&a=1&fbclid=9#top") == \
        "http://example.org/a?a=1&b=2"
    assert check_seed(" https://example.org ") == "https://example.org/"
    for bad in ["example.org", "ftp://example.org/", "http://", "htp:/x"]:
        with pytest.raises(UserError, match="is not an http"):
            check_seed(bad)


def test_the_url_policy_keeps_to_allowed_domains(tmp_path):
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# spam\nads.example.org\nhttp://example.org/private/\n")
    policy = UrlPolicy.build(["example.org"], "old.example.org", str(blocklist))
    assert policy.reason_to_skip("http://www.example.org/page.html") is None
    assert policy.reason_to_skip("http://example.org/paper.pdf") is None
    assert policy.reason_to_skip("http://other.org/") == "offsite"
    assert policy.reason_to_skip("http://old.example.org/") == "denied_domain"
    assert policy.reason_to_skip("http://ads.example.org/x") == "denied_domain"
    assert policy.reason_to_skip("http://example.org/private/a") == "blocklisted"
    assert policy.reason_to_skip("http://example.org/photo.JPG") == "file_type"
    assert policy.reason_to_skip("mailto:a@example.org") == "scheme"


def test_text_is_normalised():
    assert normalize_text("  a\u00a0 b\t c \r\n\r\n\r\n\r\nd\x00e\u200b ") == "a b c\n\nde"
    assert normalize_text("Cafe\u0301") == "Café"  # NFC
    assert looks_binary(bytes(range(256)))
    assert not looks_binary("Café, naïve “quotes”".encode())


def test_extraction_keeps_the_article_and_leaves_the_chrome():
    html = (SITE / "works/areopagitica/2.html").read_text(encoding="utf-8")
    doc = extract("text/html", b"", html, "http://x/works/areopagitica/2.html")
    assert doc.title == "Areopagitica, part 2 | The Milton Reading Room"
    assert "We use cookies" not in doc.text and "Other works by Milton" not in doc.text
    assert len(doc.text) > 5000
    assert extract("text/plain", b"", "Title line\n\nbody", "http://x/") .title == "Title line"
    assert extract("application/pdf", b"not a pdf", "", "http://x/a.pdf") is None


@pytest.mark.parametrize("text, reason", [
    ("Too short to keep.", "too_short"),
    (" ".join(["Supercalifragilisticexpialidociously"] * 60) + ".", "word_length"),
    (PARAGRAPHS[0] + " #liberty #printing" * 20, "symbols"),
    (PARAGRAPHS[0] + " 1674.03" * 120, "non_alphabetic"),
    (" ".join(["lorem ipsum dolor sit amet"] * 30), "no_stopwords"),
    ("\n".join(["The same line of the text, and again."] * 30), "repetition"),
    ("\n".join(f"The item number {i} of the list and more words here" for i in range(30)),
     "no_terminal_punctuation"),
    ("\n".join(f"Read the end of chapter {i}." for i in range(80)), "short_lines"),
    ("\n".join([PARAGRAPHS[0]] + [f"We use cookies to improve the site, with care {i}." for i in range(8)]),
     "boilerplate"),
])
def test_quality_filters_name_their_reason(text, reason):
    assert quality_problem(text, CrawlConfig()) == reason


def test_prose_and_verse_pass_the_quality_filters():
    assert quality_problem("\n\n".join(PARAGRAPHS[:5]), CrawlConfig()) is None
    verse = (SITE.parent / "text/milton/paradise_lost.txt").read_text(encoding="utf-8")[:8000]
    assert quality_problem(normalize_text(verse), CrawlConfig()) is None


def test_crawl_settings_come_from_file_and_environment(tmp_path):
    toml = tmp_path / "cllm.toml"
    toml.write_text("[crawl]\ndelay = 2.5\nmin_words = 10\n")
    config = load(CrawlerConfig, toml, environ={"CLLM_CRAWL_MAX_PAGES": "7"})
    assert (config.crawl.delay, config.crawl.min_words, config.crawl.max_pages) == (2.5, 10, 7)
    toml.write_text("[crawl]\nnear_dup_threshold = 1.5\n")
    with pytest.raises(UserError, match="near_dup_threshold must be between 0 and 1"):
        load(CrawlerConfig, toml, environ={})
    with pytest.raises(UserError, match="unknown setting 'delai'"):
        load(CrawlerConfig, None, environ={"CLLM_CRAWL_DELAI": "1"})


def test_the_text_steps_run_and_count_outside_a_crawl(tmp_path):
    """What a pass over existing shards or an imported corpus does: the crawler's steps on
    plain documents, drops counted by reason, the dedup index in a database of its own."""
    html = (SITE / "works/areopagitica/2.html").read_text(encoding="utf-8")
    short = "Too short to keep."
    pages = [
        Document(url="http://x/a", content_type="text/html", body=html.encode(), html=html),
        Document(url="http://x/copy", content_type="text/html", body=html.encode(), html=html),
        Document(url="http://x/bin", content_type="text/html", body=bytes(range(256)) * 8),
        Document(url="http://x/short", content_type="text/plain", body=short.encode(), html=short),
        Document(url="http://x/empty", content_type="text/html", body=b"<html></html>",
                 html="<html></html>"),
    ]
    db = Database("", tmp_path / "dedup.sqlite", dedup.METADATA)
    index = dedup.DedupIndex(db, num_perm=128, threshold=0.8)
    steps = Steps([Extract(), *text_steps(CrawlConfig(), index)])
    (kept,) = steps.filter(pages)
    assert kept.url == "http://x/a" and kept.title.startswith("Areopagitica, part 2")
    assert kept.language == "en" and (kept.body, kept.html) == (b"", "")
    assert kept.doc_id == hashlib.sha256(kept.text.encode()).hexdigest()
    assert steps.dropped == {"duplicate_exact": 1, "binary": 1, "too_short": 1, "no_text": 1}

    db.write(lambda conn: index.save(conn, "shards/c1/part-00001.parquet"))
    index.saved()
    again = Steps(text_steps(CrawlConfig(), dedup.DedupIndex(db, num_perm=128, threshold=0.8)))
    with pytest.raises(Drop, match="duplicate_exact"):
        again(Document(text=kept.text, doc_id=kept.doc_id))
    assert again.dropped == {"duplicate_exact": 1}


def test_the_quality_filters_pass_prose_with_a_long_run_of_punctuation():
    # `\S*[^\W\d_]\S*` over the text backtracked quadratically on such a run, for longer
    # than the suite's timeout (about 17 minutes for this one); counting the tokens with a
    # letter takes milliseconds. (Speed itself is measured in benchmarks, not here.)
    text = " ".join(PARAGRAPHS[:3]) + " " + "-" * 200_000 + " end."
    assert quality_problem(text, CrawlConfig()) is None


def rows(n: int, start: int = 0) -> list[dict]:
    from datetime import datetime, timezone

    return [{"doc_id": f"{i:064d}", "url": f"http://x/{i}", "canonical_url": f"http://x/{i}",
             "domain": "x", "title": f"Page {i}", "text": PARAGRAPHS[i % len(PARAGRAPHS)],
             "language": "en", "fetched_at": datetime.now(timezone.utc), "http_status": 200,
             "content_type": "text/html", "n_chars": len(PARAGRAPHS[i % len(PARAGRAPHS)]),
             "crawl_id": "c1"} for i in range(start, start + n)]


def test_the_shard_writer_rotates_by_size_and_renames_complete_files(tmp_path):
    committed = []
    crawl_dir = tmp_path / "shards" / "c1"
    writer = ShardWriter(crawl_dir, max_bytes=2_000, row_group_rows=10,
                         on_commit=committed.append)
    for row in rows(25):
        writer.add(row)
        # Until a shard is complete it is a hidden temp file: no reader sees part of one.
        assert sorted(p.name for p in crawl_dir.glob("part-*")) == [s.path.name for s in committed]
    writer.close()
    assert [s.path.name for s in committed] == ["part-00001.parquet", "part-00002.parquet",
                                                 "part-00003.parquet"]
    assert [s.rows for s in committed] == [10, 10, 5]
    assert not list(crawl_dir.glob(".*"))
    table = pq.read_table(committed[0].path)
    assert table.schema.equals(SCHEMA, check_metadata=True)
    # A later writer in the same crawl directory goes on numbering.
    writer = ShardWriter(crawl_dir, 1 << 20, 1000, committed.append)
    (crawl_dir / ".part-00004.parquet.tmp").write_bytes(b"half a shard")
    remove_temp_files(crawl_dir)
    writer.add(rows(1, 30)[0])
    writer.close()
    assert committed[-1].path.name == "part-00004.parquet"


def test_a_process_without_pandas_writes_shards_and_still_has_pandas_when_asked(tmp_path):
    """What the crawl does (crawler/run.py): pyarrow writes its shards without importing
    pandas (40 MB a process), and imports it after all for a `to_pandas()`."""
    script = f"""
import sys
from pathlib import Path
import pyarrow.parquet as pq
from core.shards import ShardWriter, without_pandas
from test_crawl_units import rows
without_pandas()
shards = []
writer = ShardWriter(Path({str(tmp_path)!r}), 1 << 20, 10, shards.append)
for row in rows(25):
    writer.add(row)
writer.close()
print("pandas" in sys.modules, len(pq.read_table(shards[0].path).to_pandas()))
"""
    tests = Path(__file__).resolve().parent
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=os.environ | {"PYTHONPATH": f"{tests.parent}:{tests}"})
    assert result.stdout.split() == ["False", "25"], result.stderr


def test_the_scrapy_components_turned_off_are_not_even_imported():
    """Scrapy imports every component that EXTENSIONS or DOWNLOADER_MIDDLEWARES names, one set
    to None too: those the crawl turns off are out of their *_BASE instead
    (crawler/settings.py), so RemoteControl's aiohttp and CookiesMiddleware's tldextract stay
    out of every crawl's start."""
    script = """
import sys
from scrapy.settings import Settings
from scrapy.utils.conf import build_component_list
from scrapy.utils.misc import load_object
settings = Settings()
settings.setmodule("crawler.settings", priority="project")
classes = [load_object(name).__name__ for kind in ("EXTENSIONS", "DOWNLOADER_MIDDLEWARES")
           for name in build_component_list(settings.get_component_priority_dict_with_base(kind))]
print(*[name in classes for name in ("CrawlProgress", "BackoffRetryMiddleware", "RemoteControl",
                                     "SpiderState", "CookiesMiddleware", "RetryMiddleware",
                                     "MetaRefreshMiddleware", "HttpProxyMiddleware")],
      *[name in sys.modules for name in ("aiohttp", "tldextract")])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.split() == ["True"] * 2 + ["False"] * 8, result.stderr


def test_the_catalog_marks_shards_consumed_all_or_nothing(tmp_path, database_url):
    shard_dir = tmp_path / "shards" / "c1"
    shard_dir.mkdir(parents=True)
    with Catalog(tmp_path, database_url) as catalog:
        for name in ["part-00001.parquet", "part-00002.parquet"]:
            catalog.add_shard(shard_dir / name, "c1", rows=10, size=100, sha256="ab")
        catalog.add_shard(shard_dir / "part-00001.parquet", "c1", rows=10, size=100, sha256="ab")
        assert [s.path.name for s in catalog.list_shards(state="new")] == \
            ["part-00001.parquet", "part-00002.parquet"]
        with pytest.raises(UserError, match="not in the catalog"):
            catalog.mark_consumed([shard_dir / "part-00001.parquet", shard_dir / "part-9.parquet"], "3")
        assert len(catalog.list_shards(state="new")) == 2  # nothing half-done
        catalog.mark_consumed(["shards/c1/part-00001.parquet"], version="3")
        (consumed,) = catalog.list_shards(state="consumed")
        assert (consumed.path, consumed.consumed_by) == (shard_dir / "part-00001.parquet", "3")
        with pytest.raises(UserError, match="shard state 'old' is unknown"):
            catalog.list_shards(state="old")
        assert catalog.has_shard(shard_dir / "part-00002.parquet")
    # On PostgreSQL (database_url) nothing is written under the home.
    assert (tmp_path / "catalog.sqlite").exists() == (database_url == "")


@pytest.mark.parametrize("reason, stats, lost", [
    ("finished", {}, ""),
    ("closespider_pagecount", {}, ""),  # a page limit: the crawl ran to its end
    ("shutdown", {}, ""),  # paused: nothing lost, resumed later
    ("unknown", {}, "the crawl ended with 'unknown', not a clean finish"),
    ("finished", {"cllm/item_errors": 2, "cllm/item_error": "KeyError: 'x'"},
     "2 page(s) failed in the pipelines, not written (the last: KeyError: 'x'); see the log"),
    ("finished", {"spider_exceptions/ValueError": 3},
     "3 page(s) failed in the spider, their links not followed; see the log"),
    ("lost", {"cllm/lost": "a shard was not written: No space left on device"},
     "a shard was not written: No space left on device"),
])
def test_a_crawl_says_what_it_lost(reason, stats, lost):
    from crawler.run import what_was_lost

    assert what_was_lost(reason, stats) == lost


def test_the_shard_writer_closes_a_shard_when_asked_mid_way(tmp_path):
    """What the crawl's time limit does: the shard so far is committed, the next row starts
    another."""
    committed = []
    writer = ShardWriter(tmp_path / "c1", 1 << 30, 1000, committed.append)
    assert not writer.pending
    writer.add(rows(1)[0])
    assert writer.pending
    writer.close()
    assert not writer.pending and [s.rows for s in committed] == [1]
    writer.add(rows(1, 1)[0])
    writer.close()
    assert [s.path.name for s in committed] == ["part-00001.parquet", "part-00002.parquet"]
