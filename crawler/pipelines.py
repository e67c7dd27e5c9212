"""The item pipelines, in order (see ITEM_PIPELINES in settings.py): the text steps the crawl
runs itself, then the shard writer.

A page reaches them parsed: the extraction workers (crawler/parsing.py) extracted it and ran
the quality filters, and a page they dropped carries its reason (`Page.drop`). Here that
reason is counted, and a document goes through dedup (text/dedup.py: it needs every document
of this crawl and the earlier ones, so it runs in the crawl), then into a shard. A dropped
page raises Scrapy's `DropItem(reason)`, counted in the crawl stats (`cllm/dropped/<reason>`)
where the report and the progress bar read it, and is recorded (crawler/drops.py) with its
detail and, for a sample, its text. A written document counts its language
(`cllm/languages/<code>`) and the personal data replaced in it (`cllm/pii/<kind>`).
With `keep_warc`, every page's response, kept or dropped, goes into the raw archive of the
shard being written (core/warc.py), and a written document points to its record.

When the writer has a shard complete under its temp name (core/shards.py `ShardWriter`),
or when `shard_max_minutes` have passed, it sends `checkpoint`, on which the crawl state
(crawler/state.py) makes what the crawl learned permanent, the shard's path with it; then
`committed` (a fleet's frontier forgets the requests done), and only then is the shard
renamed into place and catalogued. So the crawl state decides: a process killed after its
commit leaves a temp shard the next start (or, in a fleet, the survivor that gives the
process up) renames into place; killed before, it leaves one that is removed, its pages
fetched again. A shard that cannot be written (a full disk) stops the crawl: its pages'
state is dropped, not committed, so the next run fetches them again, and the report says
what was lost (`cllm/lost`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

import structlog
from scrapy import signals
from scrapy.exceptions import DropItem
from scrapy.utils.defer import deferred_from_coro
from twisted.internet import task

from core.catalog import Catalog
from core.errors import Unavailable
from core.files import storage_problem
from core.home import Home
from core.shards import (
    REPROCESSED,
    ShardInfo,
    ShardWriter,
    describe,
    settle_temp_files,
    shard_files,
)
from crawler.config import CrawlConfig, crawl_config
from crawler.drops import DropLog
from crawler.items import Page
from crawler.state import LEASE, CrawlState, UrlRecord, committed_shards, open_state
from text.dedup import Dedup
from text.document import Drop, Steps

log = structlog.get_logger()
checkpoint = object()  # signal: a shard (or None: only time) is complete (args: shard)
committed = object()  # signal: the crawl state committed at a checkpoint
given_up = object()  # signal: a fleet's process is gone; its temp shards settle (args: process)
shard_failed = object()  # signal: a shard could not be written; what was pending is lost
revalidated = object()  # signal: a page unchanged since last time, with new validators or
# links to remember (args: url, record)
abandon = object()  # signal: the fleet gave this process up; its pending shard must not appear


def lose(crawler, what: str) -> None:
    """Stop the crawl for what it cannot go on without (the report keeps the first cause)."""
    if not crawler.stats.get_value("cllm/lost"):
        crawler.stats.set_value("cllm/lost", what)
    log.error("crawl_lost", lost=what)
    if crawler.engine is not None and crawler.engine.spider is not None:
        deferred_from_coro(crawler.engine.close_spider_async(reason="lost"))


def storage_line(error: Exception) -> str | None:
    """One line for a storage error (a full disk: the system's or SQLite's), else None."""
    if isinstance(error, sa.exc.OperationalError):
        error = error.orig
    if isinstance(error, OSError):
        return storage_problem(error)
    if isinstance(error, sqlite3.OperationalError) and \
            ("full" in str(error) or "disk I/O" in str(error)):
        return f"{error} (SQLite): free some space and run again"
    return None


class TextPipeline:
    """Drops counted by reason; dedup against every document of this crawl and earlier
    ones; every processed URL remembered with its body hash, kept or dropped."""

    def __init__(self, crawler, home: Home, config: CrawlConfig):
        self.crawler, self.stats, self.home, self.config = crawler, crawler.stats, home, config
        self.state: CrawlState | None = None
        self.failed = False  # a shard was lost: nothing more is committed
        self.database_url = crawler.settings.get("CLLM_DATABASE_URL", "")
        self.crawl_id = crawler.settings.get("CLLM_CRAWL_ID", "")
        self.heartbeat = task.LoopingCall(self.beat)

    @classmethod
    def from_crawler(cls, crawler):
        pipeline = cls(crawler, Home(crawler.settings["CLLM_HOME"]), crawl_config(crawler.settings))
        crawler.signals.connect(pipeline.checkpoint, signal=checkpoint)
        crawler.signals.connect(pipeline.shard_failed, signal=shard_failed)
        crawler.signals.connect(pipeline.revalidated, signal=revalidated)
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(pipeline.item_error, signal=signals.item_error)
        return pipeline

    def open_spider(self) -> None:
        self.state = CrawlState(self.home, self.config.minhash_perm,
                                self.config.near_dup_threshold, self.database_url, self.crawl_id)
        self.steps = Steps([Dedup(self.state.index)])
        self.drops = DropLog(self.home, self.crawler.settings["CLLM_CRAWL_ID"],
                             self.config.keep_dropped, self.config.keep_dropped_share)
        absorbed = self.state.absorb(shard_files(self.home))
        if absorbed:
            log.warning("crawl_state_recovered", shards_absorbed=absorbed)
        self.heartbeat.start(LEASE / 6, now=False)

    def beat(self) -> None:
        # Other crawlers see this one alive (and release the claims of those that are not).
        self.state.heartbeat()

    def process_item(self, item: Page) -> Page:
        reason, detail = item.drop, item.detail
        if not reason:
            try:
                item.doc = self.steps(item.doc)
            except Drop as drop:
                reason, detail = drop.reason, drop.detail
            except sa.exc.OperationalError as e:  # the claim not written (a full disk)
                if (problem := storage_line(e)) is None:
                    raise
                lose(self.crawler, problem)
                raise DropItem("lost") from None
        if reason:
            self.stats.inc_value(f"cllm/dropped/{reason}")
            self.drops.add(item.doc.url, reason, detail, item.doc.text or None, item.fetched_at)
            raise DropItem(reason)
        self.record(item, item.doc.doc_id)
        return item

    def record(self, item: Page, doc_id: str | None) -> None:
        self.state.record_url(item.canonical_url, item.body_sha256, doc_id, item.etag,
                              item.last_modified, item.links)

    def item_dropped(self, item: Page, response, exception, spider) -> None:
        # A dropped page stays dropped until it changes: no need to extract it again.
        self.record(item, None)

    def revalidated(self, url: str, record: UrlRecord) -> None:
        self.state.record_url(url, record.body_sha256, record.doc_id, record.etag,
                              record.last_modified, record.links)

    def item_error(self, item: Page, response, spider, failure) -> None:
        # Not in a shard: not remembered either, so the next crawl tries the page again.
        self.state.forget(item.canonical_url, item.doc.doc_id)
        self.stats.inc_value("cllm/item_errors")
        self.stats.set_value("cllm/item_error", f"{failure.type.__name__}: {failure.value}")

    def checkpoint(self, shard: ShardInfo | None) -> bool:
        """Whether the crawl state committed (the shard, if any, may go into place)."""
        if self.failed:
            return False
        try:
            self.drops.flush()  # first: a crash between records a drop twice, not never
            self.state.commit(self.home.relative(shard.path) if shard else None)
        except (OSError, sa.exc.OperationalError) as e:
            if (problem := storage_line(e)) is None:
                raise
            self.failed = True  # the shard stays a temp file: the next crawl settles it
            lose(self.crawler, problem)
            return False
        except Unavailable as e:  # the fleet's database, down for longer than the retries
            self.failed = True
            lose(self.crawler, f"the crawl state was not committed: {e}")
            return False
        self.crawler.signals.send_catch_log(signal=committed)
        return True

    def shard_failed(self) -> None:
        self.failed = True
        self.drops.discard()
        try:
            self.state.discard()
        except sa.exc.OperationalError as e:  # the claims stay until this crawl is gone
            if storage_line(e) is None:
                raise

    def close_spider(self) -> None:
        # Runs after the writer's close_spider (Scrapy closes pipelines in reverse order):
        # only URLs of dropped pages can be pending here.
        if self.heartbeat.running:
            self.heartbeat.stop()
        if self.state is not None:  # None: the crawl could not even open (a full disk)
            self.checkpoint(None)
            try:
                self.state.close()
            except sa.exc.OperationalError as e:
                if storage_line(e) is None:
                    raise


class ShardWriterPipeline:
    """Writes documents into Parquet shards and catalogues each complete shard; closes one
    every `shard_max_minutes` too."""

    def __init__(self, crawler, home: Home, crawl_id: str, config: CrawlConfig):
        self.crawler, self.home, self.crawl_id, self.config = crawler, home, crawl_id, config
        self.writer: ShardWriter | None = None
        self.catalog: Catalog | None = None
        self.timer = task.LoopingCall(self.rotate)
        self.failed = False
        # A process of a fleet (crawler/frontier.py): its own shard names, beside the others'
        self.process = crawler.settings.get("CLLM_PROCESS", "")

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        pipeline = cls(crawler, Home(settings["CLLM_HOME"]), settings["CLLM_CRAWL_ID"],
                       crawl_config(settings))
        crawler.signals.connect(pipeline.abandon, signal=abandon)
        crawler.signals.connect(pipeline.given_up, signal=given_up)
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        return pipeline

    def open_spider(self) -> None:
        database_url = self.crawler.settings.get("CLLM_DATABASE_URL", "")
        self.catalog = Catalog(self.home, database_url)
        self.state_db = open_state(self.home.root, database_url)
        self.crawl_dir = self.home.crawl_shards(self.crawl_id)
        self.crawl_dir.mkdir(parents=True, exist_ok=True)
        self.warc_dir = self.home.crawl_warc(self.crawl_id) if self.config.keep_warc else None
        if not self.process:  # a fleet's other processes are writing theirs
            self.settle()
        for path in shard_files(self.home):  # renamed just before a crash, never catalogued
            # (a reprocessing catalogues its shards all at once, or removes them)
            if not path.parent.name.startswith(REPROCESSED) and not self.catalog.has_shard(path):
                self._catalogue(path)
        self.writer = ShardWriter(self.crawl_dir, int(self.config.shard_max_mb * 2**20),
                                  self.config.row_group_rows, self._committed, self.process,
                                  self.warc_dir, self._ready)
        self.timer.start(self.config.shard_max_minutes * 60, now=False)

    def settle(self, process: str = "") -> None:
        """The temp shards a killed process (`process` of a fleet, or this crawl's last run)
        left: those its crawl state committed go into place, the rest are removed."""
        known = committed_shards(self.state_db)
        for path in settle_temp_files(self.crawl_dir, self.warc_dir,
                                      lambda final: self.home.relative(final) in known, process):
            log.warning("crawl_shard_settled", shard=str(path), process=process or None)
            self._catalogue(path)

    def given_up(self, process: str) -> None:
        self.settle(process)

    def _catalogue(self, path: Path) -> None:
        info = describe(path)
        self.catalog.add_shard(path, path.parent.name, info.rows, info.bytes, info.sha256)

    def _ready(self, shard: ShardInfo) -> bool:
        results = self.crawler.signals.send_catch_log(signal=checkpoint, shard=shard)
        if all(result is True for receiver, result in results):
            return True
        self.failed = True  # the state may have committed or not: the next start settles it
        return False

    def _committed(self, shard: ShardInfo) -> None:
        self.catalog.add_shard(shard.path, self.crawl_id, shard.rows, shard.bytes, shard.sha256)
        stats = self.crawler.stats
        stats.inc_value("cllm/shards")
        stats.inc_value("cllm/shard_bytes", shard.bytes)

    def rotate(self) -> None:
        """The time limit: the shard so far is closed (or, with none, the crawl state of
        the dropped pages committed)."""
        if self.writer.pending:
            self.writing(self.writer.close)
        elif not self.failed:
            self.crawler.signals.send_catch_log(signal=checkpoint, shard=None)

    def writing(self, write, *args) -> bool:
        """Run a write of the shard writer; on a storage error the shard so far is lost
        (its temp file removed), the crawl stops and the report says so."""
        if self.failed:
            return False
        try:
            write(*args)
            return True
        except (OSError, sa.exc.OperationalError) as e:
            if (problem := storage_line(e)) is None:
                raise
            # A shard renamed into place before the error is catalogued and absorbed by the
            # next crawl; the documents after it are fetched again.
            self.abandon()
            lose(self.crawler, f"a shard was not written: {problem}")
            return False

    def abandon(self) -> None:
        """The shard so far is not written (its temp file removed, the space back); its pages
        are fetched again."""
        self.failed = True
        self.writer.remove_temp_files(self.process)
        self.crawler.signals.send_catch_log(signal=shard_failed)

    def archive(self, item: Page) -> tuple[str | None, int | None]:
        """The page's response into the raw archive: where its record is (None, None
        without `keep_warc`, or when the archive could not be written)."""
        if item.fetched is None or self.failed:
            return None, None
        where = []
        if self.writing(lambda: where.extend(self.writer.archive(item.fetched))):
            return self.home.relative(where[0]), where[1]
        return None, None

    def item_dropped(self, item: Page, response, exception, spider) -> None:
        # A dropped page's response is archived too (with the shard written meanwhile).
        if str(exception) != "lost":
            self.archive(item)

    def process_item(self, item: Page) -> Page:
        doc = item.doc
        warc_file, warc_offset = self.archive(item)
        if not self.writing(self.writer.add, {
            "doc_id": doc.doc_id,
            "url": doc.url,
            "canonical_url": item.canonical_url,
            "domain": item.domain,
            "title": doc.title,
            "text": doc.text,
            "language": doc.language,
            "language_score": doc.language_score,
            "declared_language": doc.declared_language,
            "fetched_at": item.fetched_at,
            "http_status": item.status,
            "content_type": doc.content_type,
            "n_chars": len(doc.text),
            "crawl_id": self.crawl_id,
            "warc_file": warc_file,
            "warc_offset": warc_offset,
        }):
            raise DropItem("lost")  # not written: the next crawl fetches it again
        stats = self.crawler.stats
        stats.inc_value("cllm/docs_written")
        stats.inc_value(f"cllm/languages/{doc.language}")
        for kind, n in doc.pii.items():
            stats.inc_value(f"cllm/pii/{kind}", n)
        return item

    def close_spider(self) -> None:
        if self.timer.running:
            self.timer.stop()
        if self.writer is not None:  # None: the crawl could not even open (a full disk)
            self.writing(self.writer.close)
            self.catalog.close()
            self.state_db.close()
