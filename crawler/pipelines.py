"""The item pipelines, in order (see ITEM_PIPELINES in settings.py):

extract (main text) -> quality filter -> dedup (exact, near, across crawls) -> shard writer.

A pipeline drops a page by raising `DropItem(reason)`; `crawler.extensions.CrawlProgress`
counts drops by that reason. When the writer has renamed a shard into place and catalogued
it, it sends `shard_committed`, on which the dedup stage makes what it learned permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import structlog
from scrapy import signals
from scrapy.exceptions import DropItem

from crawler.config import CrawlConfig
from crawler.extract import extract, html_language, looks_binary, normalize_text
from crawler.items import Page
from crawler.quality import quality_problem
from crawler.shards import ShardInfo, ShardWriter, describe, remove_temp_files, shard_files
from crawler.store import DedupIndex
from pipeline.catalog import Catalog

log = structlog.get_logger()
shard_committed = object()  # signal: a shard is in place and catalogued (args: shard)


def crawl_config(settings) -> CrawlConfig:
    return CrawlConfig(**settings.getdict("CLLM_CRAWL"))


class ExtractPipeline:
    """Title and main text of the page, normalised; `doc_id` is the sha256 of that text.

    Extraction is most of a crawl's CPU time, so it runs in `extract_workers` processes
    while Scrapy's event loop goes on fetching; 0 extracts in the crawl's own process.
    """

    def __init__(self, stats, workers: int):
        self.stats, self.workers = stats, workers
        self.pool: ProcessPoolExecutor | None = None

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler.stats, crawl_config(crawler.settings).extract_workers)

    def open_spider(self) -> None:
        if self.workers:
            # spawn, not fork: the workers must not inherit the running event loop. They
            # ignore Ctrl-C, which the terminal sends them too: the crawl decides when to stop.
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                            initializer=signal.signal,
                                            initargs=(signal.SIGINT, signal.SIG_IGN))
            for _ in range(self.workers):  # start them and their imports while Scrapy starts
                self.pool.submit(normalize_text, "")

    async def process_item(self, item: Page) -> Page:
        if looks_binary(item.body):
            raise DropItem("binary")
        # Only PDF needs the raw bytes; HTML and text travel decoded.
        args = (item.content_type, item.body if item.content_type == "application/pdf" else b"",
                item.html, item.url)
        if self.pool is None:
            extracted = extract(*args)
        else:
            extracted = await asyncio.wrap_future(self.pool.submit(extract, *args))
        if extracted is None or not extracted.text:
            raise DropItem("no_text")
        item.title, item.text = extracted.title, extracted.text
        item.language = html_language(item.body, item.content_language)
        item.body, item.html = b"", ""  # the raw page is not needed further: free it early
        item.doc_id = hashlib.sha256(item.text.encode("utf-8")).hexdigest()
        self.stats.inc_value("cllm/extracted")
        return item

    def close_spider(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


class QualityPipeline:
    def __init__(self, config: CrawlConfig):
        self.config = config

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawl_config(crawler.settings))

    def process_item(self, item: Page) -> Page:
        problem = quality_problem(item.text, self.config)
        if problem:
            raise DropItem(problem)
        return item


class DedupPipeline:
    """Drops documents seen before, in this crawl or an earlier one, exactly or nearly;
    remembers every processed URL with its body hash."""

    def __init__(self, home: Path, config: CrawlConfig):
        self.home, self.config = home, config
        self.index: DedupIndex | None = None

    @classmethod
    def from_crawler(cls, crawler):
        pipeline = cls(Path(crawler.settings["CLLM_HOME"]), crawl_config(crawler.settings))
        crawler.signals.connect(pipeline.shard_committed, signal=shard_committed)
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        return pipeline

    def open_spider(self) -> None:
        self.index = DedupIndex(self.home, self.config.minhash_perm, self.config.near_dup_threshold)
        absorbed = self.index.absorb(shard_files(self.home))
        if absorbed:
            log.warning("crawl_state_recovered", shards_absorbed=absorbed)

    def process_item(self, item: Page) -> Page:
        duplicate = self.index.check(item.doc_id, item.text)
        if duplicate:
            raise DropItem(duplicate)
        self.index.record_url(item.canonical_url, item.body_sha256, item.doc_id)
        return item

    def item_dropped(self, item: Page, response, exception, spider) -> None:
        # A dropped page stays dropped until it changes: no need to extract it again.
        self.index.record_url(item.canonical_url, item.body_sha256)

    def shard_committed(self, shard: ShardInfo) -> None:
        self.index.commit(shard.path.relative_to(self.home).as_posix())

    def close_spider(self) -> None:
        # Runs after the writer's close_spider (Scrapy closes pipelines in reverse order):
        # only URLs of dropped pages can be pending here.
        self.index.commit()
        self.index.close()


class ShardWriterPipeline:
    """Writes documents into Parquet shards and catalogues each complete shard."""

    def __init__(self, crawler, home: Path, crawl_id: str, config: CrawlConfig):
        self.crawler, self.home, self.crawl_id, self.config = crawler, home, crawl_id, config
        self.writer: ShardWriter | None = None
        self.catalog: Catalog | None = None

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        return cls(crawler, Path(settings["CLLM_HOME"]), settings["CLLM_CRAWL_ID"],
                   crawl_config(settings))

    def open_spider(self) -> None:
        self.catalog = Catalog(self.home)
        crawl_dir = self.home / "shards" / self.crawl_id
        crawl_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(crawl_dir)
        for path in shard_files(self.home):  # renamed just before a crash, never catalogued
            if not self.catalog.has_shard(path):
                self._catalogue(path)
        self.writer = ShardWriter(crawl_dir, int(self.config.shard_max_mb * 2**20),
                                  self.config.row_group_rows, self._committed)

    def _catalogue(self, path: Path) -> None:
        info = describe(path)
        self.catalog.add_shard(path, path.parent.name, info.rows, info.bytes, info.sha256)

    def _committed(self, shard: ShardInfo) -> None:
        self.catalog.add_shard(shard.path, self.crawl_id, shard.rows, shard.bytes, shard.sha256)
        stats = self.crawler.stats
        stats.inc_value("cllm/shards")
        stats.inc_value("cllm/shard_bytes", shard.bytes)
        self.crawler.signals.send_catch_log(signal=shard_committed, shard=shard)

    def process_item(self, item: Page) -> Page:
        self.writer.add({
            "doc_id": item.doc_id,
            "url": item.url,
            "canonical_url": item.canonical_url,
            "domain": item.domain,
            "title": item.title,
            "text": item.text,
            "language": item.language,
            "fetched_at": item.fetched_at,
            "http_status": item.status,
            "content_type": item.content_type,
            "n_chars": len(item.text),
            "crawl_id": self.crawl_id,
        })
        self.crawler.stats.inc_value("cllm/docs_written")
        return item

    def close_spider(self) -> None:
        self.writer.close()
        self.catalog.close()
