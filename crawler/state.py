"""Crawl state that lasts across crawls, shared by every crawler of a fleet: the tables of
schema `crawl` in `$CLLM_HOME/crawl/state.sqlite`, or in the `database_url` database.

- `docs`, `bands`, `lsh`: the dedup index (text/dedup.py): every document kept or claimed,
  with its MinHash signature and LSH bands, so exact and near duplicates are caught in later
  crawls and across the processes of one crawl.
- `urls`: every URL processed, with the sha256 of its body (an unchanged page is not
  extracted again), its ETag and Last-Modified (the next crawl asks with If-None-Match /
  If-Modified-Since) and its links (followed again when the server answers 304).
- `shards`: the shards whose documents are in `docs`.
- `crawlers`: each crawler process (`owner`, a fresh id), its crawl, host, pid and heartbeat.

A new document is claimed in the database at once (`docs.owner`), so no other process keeps
its twin; everything else a crawl learns is held pending in memory and committed in one
transaction when a shard is complete (the claims become kept documents of that shard), and
the URLs of dropped pages every `shard_max_minutes` and when the crawl closes. A crawl killed
before that commits nothing, so its pages are processed again on the next run instead of
being lost; nor does a crawl whose shard could not be written (`discard`). Its claims are
released by the next crawler that looks (`release_dead`: at start and with each heartbeat)
once their owner is gone: its pid is not running on this host, or its heartbeat is older than
the lease. A shard's commit comes before its rename into place (crawler/pipelines.py), so
`committed_shards` says which temp shards a killed process left complete; `absorb` brings
the state up to date with shards it never committed (written by an older version, or copied
into the home).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import sqlalchemy as sa
import structlog

from core.db import Database, epoch_now
from core.home import Home
from core.locks import process_alive
from text import dedup

log = structlog.get_logger()
LEASE = 120.0  # seconds without a heartbeat after which a crawler's claims are released
METADATA = dedup.METADATA  # the crawl state's tables: the dedup index's and these
URLS = sa.Table(
    "urls", METADATA,
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("body_sha256", sa.Text),
    sa.Column("doc_id", sa.Text),
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    sa.Column("links", sa.Text),  # JSON list of the page's links, for a 304
    schema="crawl",
)
SHARDS = sa.Table("shards", METADATA, sa.Column("path", sa.Text, primary_key=True),
                  schema="crawl")
CRAWLERS = sa.Table(
    "crawlers", METADATA,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("crawl_id", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),  # the database's clock, seconds
    schema="crawl",
)


def open_state(home: str | os.PathLike, database_url: str) -> Database:
    return Database(database_url, Home(home).crawl_state, METADATA)


def committed_shards(db: Database) -> set[str]:
    """The shards (paths relative to the home) whose documents the state holds."""
    return set(db.read(lambda conn: conn.execute(sa.select(SHARDS.c.path)).scalars().all()))


@dataclass(frozen=True)
class UrlRecord:
    body_sha256: str | None
    doc_id: str | None
    etag: str | None
    last_modified: str | None
    links: list[str] | None


class UrlLog:
    """Read side for the spider: what was this URL when it was last processed?"""

    def __init__(self, home: str | os.PathLike, database_url: str = ""):
        self.db = open_state(home, database_url)
        self.query = sa.select(URLS).where(URLS.c.url == sa.bindparam("url"))  # built once

    def lookup(self, url: str) -> UrlRecord | None:
        row = self.db.read(lambda conn: conn.execute(self.query, {"url": url}).first())
        if row is None:
            return None
        links = json.loads(row.links) if row.links else None
        return UrlRecord(row.body_sha256, row.doc_id, row.etag, row.last_modified, links)

    def close(self) -> None:
        self.db.close()


def _running_here(host: str, pid: int) -> bool:
    # another machine's process is judged by its heartbeat alone
    return host != socket.gethostname() or process_alive(pid)


class CrawlState:
    """One crawler process's view of the state: the dedup index over every document kept or
    claimed so far, and the URL log's write side."""

    def __init__(self, home: str | os.PathLike, num_perm: int, threshold: float,
                 database_url: str = "", crawl_id: str = "", lease: float = LEASE):
        self.home, self.lease = Home(home), lease
        self.db = open_state(home, database_url)
        self.owner = uuid.uuid4().hex
        me = {"owner": self.owner, "crawl_id": crawl_id, "host": socket.gethostname(),
              "pid": os.getpid(), "heartbeat": epoch_now()}
        self.db.write(lambda conn: conn.execute(CRAWLERS.insert().values(me)))
        self.index = dedup.DedupIndex(self.db, num_perm, threshold, owner=self.owner,
                                      on_claimed=self.heartbeat)
        self.pending_urls: dict[str, dict] = {}
        self.heartbeat()

    def heartbeat(self) -> int:
        """This process is alive; the claims of those that are not are released (returns
        how many). Every `lease / 6` seconds at least, and with each commit."""
        released = self.db.write(self._beat)
        if released:
            log.warning("crawl_claims_released", documents=released,
                        message="claims of crawler processes gone before their shard")
        return released

    def _beat(self, conn: sa.Connection) -> int:
        now = conn.execute(sa.select(epoch_now())).scalar()
        conn.execute(CRAWLERS.update().where(CRAWLERS.c.owner == self.owner)
                     .values(heartbeat=now))
        dead = [r.owner for r in conn.execute(sa.select(CRAWLERS)).all()
                if r.owner != self.owner and
                (r.heartbeat < now - self.lease or not _running_here(r.host, r.pid))]
        if not dead:
            return 0
        released = self.index.release(conn, dedup.DOCS.c.owner.in_(dead))
        conn.execute(CRAWLERS.delete().where(CRAWLERS.c.owner.in_(dead)))
        return released

    def record_url(self, url: str, body_sha256: str | None, doc_id: str | None = None,
                   etag: str | None = None, last_modified: str | None = None,
                   links: list[str] | None = None) -> None:
        self.pending_urls[url] = {
            "url": url, "body_sha256": body_sha256, "doc_id": doc_id, "etag": etag,
            "last_modified": last_modified, "links": None if links is None else json.dumps(links)}

    def forget(self, url: str, doc_id: str | None) -> None:
        """A page that was recorded but not written (it failed on its way to a shard): the
        next crawl processes it again, and another crawler may keep its document."""
        self.pending_urls.pop(url, None)
        if doc_id:
            self.index.forget([doc_id])

    def discard(self) -> None:
        """What is pending will not be written (a shard was lost): forget it all."""
        self.pending_urls.clear()
        self.index.forget()

    def commit(self, shard: str | None = None) -> None:
        """Make the claims (documents of `shard`, if one was written) and the pending URLs
        permanent, all at once."""
        urls = list(self.pending_urls.values())

        def work(conn: sa.Connection) -> int:
            lost = self.index.save(conn, shard) if shard is not None else 0
            if urls:
                insert = self.db.insert(URLS)
                conn.execute(insert.on_conflict_do_update(index_elements=["url"], set_={
                    c: insert.excluded[c] for c in urls[0] if c != "url"}), urls)
            if shard is not None:
                conn.execute(self.db.insert(SHARDS).values(path=shard).on_conflict_do_nothing())
            return lost

        if lost := self.db.write(work):
            log.warning("crawl_claims_lost", documents=lost, shard=shard,
                        message="this crawler was taken for dead; its documents are kept")
        if shard is not None:
            self.index.saved()
        self.pending_urls.clear()
        self.heartbeat()

    def absorb(self, shard_files: list[Path]) -> int:
        """Add the documents of shards the state does not know yet; returns how many
        shards were absorbed."""
        known = committed_shards(self.db)
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
        """The end of this process's crawl: claims not written are given up (or, if that
        fails, released by the next crawler once this process is gone)."""
        try:
            self.index.forget()
            self.db.write(lambda conn: conn.execute(
                CRAWLERS.delete().where(CRAWLERS.c.owner == self.owner)))
        finally:
            self.db.close()
