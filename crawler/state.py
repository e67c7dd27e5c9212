"""Crawl state that lasts across crawls: `$CLLM_HOME/crawl/state.sqlite`.

- `docs`: every document ever written (its `doc_id`) with its MinHash signature, so exact
  and near duplicates are caught in later crawls too (the table and its index are
  text/dedup.py's).
- `urls`: every URL processed, with the sha256 of its body, so an unchanged page is not
  extracted again.
- `shards`: the shards whose documents are in `docs`.

What a crawl learns is held pending in memory and committed in one transaction when a
shard is complete (and the URLs of dropped pages every `shard_max_minutes` and when the
crawl closes). A crawl killed before that commits nothing, so its pages are processed again
on the next run instead of being lost; nor does a crawl whose shard could not be written
(`discard`). `absorb` brings the state up to date with a shard written just before a kill.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq

from core.db import connect, transaction
from core.home import Home
from text import dedup

_SCHEMA = dedup.SCHEMA + """
CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, body_sha256 TEXT, doc_id TEXT);
CREATE TABLE IF NOT EXISTS shards (path TEXT PRIMARY KEY);
"""


def _connect(home: str | os.PathLike) -> sqlite3.Connection:
    return connect(Home(home).crawl_state, _SCHEMA)


class UrlLog:
    """Read side for the spider: was this URL processed before with this exact body?"""

    def __init__(self, home: str | os.PathLike):
        self.db = _connect(home)

    def unchanged(self, url: str, body_sha256: str) -> bool:
        row = self.db.execute("SELECT body_sha256 FROM urls WHERE url = ?", (url,)).fetchone()
        return row is not None and row[0] == body_sha256

    def close(self) -> None:
        self.db.close()


class CrawlState:
    """The dedup index over every document written so far, and the URL log's write side."""

    def __init__(self, home: str | os.PathLike, num_perm: int, threshold: float):
        self.home = Home(home)
        self.db = _connect(self.home)
        self.index = dedup.DedupIndex(self.db, num_perm, threshold)
        self.pending_urls: dict[str, tuple[str | None, str | None]] = {}

    def record_url(self, url: str, body_sha256: str | None, doc_id: str | None = None) -> None:
        self.pending_urls[url] = (body_sha256, doc_id)

    def forget(self, url: str, doc_id: str | None) -> None:
        """A page that was recorded but not written (it failed on its way to a shard): the
        next crawl processes it again."""
        self.pending_urls.pop(url, None)
        self.index.pending[:] = [p for p in self.index.pending if p[0] != doc_id]

    def discard(self) -> None:
        """What is pending will not be written (a shard was lost): forget it all."""
        self.pending_urls.clear()
        self.index.pending.clear()

    def commit(self, shard: str | None = None) -> None:
        """Make the pending documents (those in `shard`) and URLs permanent, all at once."""
        with transaction(self.db):
            self.index.save(shard)
            self.db.executemany("INSERT OR REPLACE INTO urls VALUES (?, ?, ?)",
                                [(u, h, d) for u, (h, d) in self.pending_urls.items()])
            if shard is not None:
                self.db.execute("INSERT OR IGNORE INTO shards VALUES (?)", (shard,))
        self.pending_urls.clear()

    def absorb(self, shard_files: list[Path]) -> int:
        """Add the documents of shards the state does not know yet (written just before a
        crash); returns how many shards were absorbed."""
        known = {row[0] for row in self.db.execute("SELECT path FROM shards")}
        absorbed = 0
        for path in shard_files:
            rel = self.home.relative(path)
            if rel in known:
                continue
            table = pq.read_table(path, columns=["doc_id", "canonical_url", "text"]).to_pydict()
            for doc_id, url, text in zip(table["doc_id"], table["canonical_url"], table["text"]):
                self.index.add(doc_id, text)
                self.record_url(url, None, doc_id)
            self.commit(rel)
            absorbed += 1
        return absorbed

    def close(self) -> None:
        self.db.close()
