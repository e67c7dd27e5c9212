"""The raw archive: every page the crawl processed, kept or dropped, is a WARC response record
(gzip per record) in the archive of the shard written meanwhile; each document points to its
record, whose body extracts to the document's text again; without `keep_warc` there is none;
a killed crawl leaves no half-written archive in sight."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from core.shards import SCHEMA, SINCE_3, shard_problem
from core.files import file_sha256
from core.warc import read_record
from crawler.config import CrawlConfig
from crawler.parsing import start
from crawlkit import CLLM, cllm_env, crawl, shard_rows


def records(path: Path) -> list[tuple[str, str]]:
    """(type, URL) of every record of a WARC file, read through to the end."""
    with open(path, "rb") as f:
        return [(r.rec_type, r.rec_headers.get_header("WARC-Target-URI"))
                for r in ArchiveIterator(f) if r.content_stream().read() is not None]


def dropped(home: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in home.glob("crawl/dropped/*/part-*.parquet"))


def extracted_text(url: str, content_type: str, body: bytes) -> str | None:
    """The text the crawl's own extraction and text steps make of a body."""
    handle = start({"crawl": CrawlConfig().as_dict()})
    header = {"kind": "page", "url": url, "media_type": content_type.split(";")[0].strip(),
              "extract": True, "content_type": content_type, "content_language": ""}
    reply = {k: v for r in handle(header, body) for k, v in r.items()}
    return (reply.get("doc") or {}).get("text")


@pytest.mark.slow
def test_every_processed_page_is_archived_and_each_document_points_to_its_record(site, tmp_path):
    home = tmp_path / "home"
    crawl(home, "--seeds", site.url)
    warcs = sorted(home.glob("warc/*/*.warc.gz"))
    shards = sorted(home.glob("shards/*/part-*.parquet"))
    assert warcs and {w.name.removesuffix(".warc.gz") for w in warcs} >= \
        {s.stem for s in shards}  # every shard has its archive
    found = [r for w in warcs for r in records(w)]
    rows = shard_rows(home)
    assert {kind for kind, _ in found} == {"response"}
    assert len(found) == len(rows) + dropped(home)  # kept and dropped pages alike
    for row in rows:
        url, content_type, body = read_record(home / row["warc_file"], row["warc_offset"])
        assert url == row["url"]
        assert extracted_text(url, content_type, body) == row["text"]
    assert not list(home.glob("warc/*/.*"))  # no temp file left


@pytest.mark.slow
def test_keep_warc_false_archives_nothing(site, tmp_path):
    home = tmp_path / "home"
    crawl(home, "--seeds", site.url, env={"CLLM_CRAWL_KEEP_WARC": "false"})
    rows = shard_rows(home)
    assert rows and not (home / "warc").exists()
    assert all(r["warc_file"] is None and r["warc_offset"] is None for r in rows)


def test_a_shard_of_schema_2_without_the_archive_columns_is_still_valid(tmp_path):
    schema = pa.schema([f for f in SCHEMA if f.name not in SINCE_3])
    path = tmp_path / "part-00001.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=schema), path)
    assert shard_problem(path, file_sha256(path)) is None


@pytest.mark.slow
def test_a_killed_crawl_leaves_no_half_written_archive_in_sight(site, tmp_path):
    home = tmp_path / "home"
    slow = {"CLLM_CRAWL_DELAY": "0.1", "CLLM_CRAWL_CONCURRENCY_PER_DOMAIN": "1",
            "CLLM_CRAWL_ROW_GROUP_ROWS": "5", "CLLM_CRAWL_SHARD_MAX_MB": "0.001"}
    process = subprocess.Popen([str(CLLM), "crawl", "--json", "--seeds", site.url],
                               cwd=home.parent, env=cllm_env(home, slow),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    # killed mid-way through an archive (hidden while it is written)
    while len(list(home.glob("shards/*/part-*.parquet"))) < 2 or \
            not list(home.glob("warc/*/.part-*.tmp")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for path in home.glob("warc/*/*.warc.gz"):
        records(path)  # whatever is visible is whole: read to its end
    for shard in home.glob("shards/*/part-*.parquet"):
        assert (home / "warc" / shard.parent.name / f"{shard.stem}.warc.gz").is_file()

    crawl(home, "--seeds", site.url, env=slow | {"CLLM_CRAWL_DELAY": "0"})
    assert not list(home.glob("warc/*/.*"))  # the resumed crawl removed the half-written one
    for row in shard_rows(home):
        assert read_record(home / row["warc_file"], row["warc_offset"])[0] == row["url"]
