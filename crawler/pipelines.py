"""The item pipelines, in order (see ITEM_PIPELINES in settings.py): thin Scrapy adapters
over the text steps (text/, the list built by crawler/steps.py), then the shard writer.

extract (main text) -> text steps (quality filters, dedup across crawls) -> shard writer.

An adapter runs its steps on the item's document. A step drops it with `Drop(reason)`: the
adapter raises Scrapy's `DropItem(reason)` instead and puts the steps' count of that reason
into the crawl stats (`cllm/dropped/<reason>`), where the report and the progress bar read
it. When the writer has renamed a shard into place and catalogued it, it sends
`shard_committed`, on which the crawl state (crawler/state.py) makes what the dedup step
learned permanent.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import structlog
from scrapy import signals
from scrapy.exceptions import DropItem

from core.catalog import Catalog
from core.home import Home
from core.shards import ShardInfo, ShardWriter, describe, remove_temp_files, shard_files
from crawler.config import CrawlConfig, crawl_config
from crawler.items import Page
from crawler.state import CrawlState
from crawler.steps import text_steps
from text.document import Drop, Steps
from text.extract import Extract, extract, normalize_text

log = structlog.get_logger()
shard_committed = object()  # signal: a shard is in place and catalogued (args: shard)


class StepsPipeline:
    """What the adapters share: `steps` run on each item's document."""

    steps: Steps

    def __init__(self, stats):
        self.stats = stats

    def process_item(self, item: Page) -> Page:
        with self.dropping():
            item.doc = self.steps(item.doc)
        return item

    @contextmanager
    def dropping(self) -> Iterator[None]:
        """A `Drop` in the block, counted by the steps, goes into the stats as `DropItem`."""
        try:
            yield
        except Drop as drop:
            self.stats.set_value(f"cllm/dropped/{drop.reason}", self.steps.dropped[drop.reason])
            raise DropItem(drop.reason) from None


class ExtractPipeline(StepsPipeline):
    """The extraction step (text/extract.py).

    Extraction is most of a crawl's CPU time, so it runs in `extract_workers` processes
    while Scrapy's event loop goes on fetching; 0 extracts in the crawl's own process.
    """

    def __init__(self, stats, workers: int):
        super().__init__(stats)
        self.extract = Extract()
        self.steps = Steps([self.extract])
        self.workers = workers
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
        if self.pool is None:
            item = super().process_item(item)
        else:  # the step in its two parts, the work between them in a worker
            with self.dropping(), self.steps.counting():
                arguments = self.extract.arguments(item.doc)
            extracted = await asyncio.wrap_future(self.pool.submit(extract, *arguments))
            with self.dropping(), self.steps.counting():
                item.doc = self.extract.finish(item.doc, extracted)
        self.stats.inc_value("cllm/extracted")
        return item

    def close_spider(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


class TextPipeline(StepsPipeline):
    """The quality filters, then dedup against every document of this crawl and earlier
    ones; remembers every processed URL with its body hash, kept or dropped."""

    def __init__(self, stats, home: Home, config: CrawlConfig):
        super().__init__(stats)
        self.home, self.config = home, config
        self.state: CrawlState | None = None

    @classmethod
    def from_crawler(cls, crawler):
        pipeline = cls(crawler.stats, Home(crawler.settings["CLLM_HOME"]),
                       crawl_config(crawler.settings))
        crawler.signals.connect(pipeline.shard_committed, signal=shard_committed)
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        return pipeline

    def open_spider(self) -> None:
        self.state = CrawlState(self.home, self.config.minhash_perm, self.config.near_dup_threshold)
        self.steps = Steps(text_steps(self.config, self.state.index))
        absorbed = self.state.absorb(shard_files(self.home))
        if absorbed:
            log.warning("crawl_state_recovered", shards_absorbed=absorbed)

    def process_item(self, item: Page) -> Page:
        item = super().process_item(item)
        self.state.record_url(item.canonical_url, item.body_sha256, item.doc.doc_id)
        return item

    def item_dropped(self, item: Page, response, exception, spider) -> None:
        # A dropped page stays dropped until it changes: no need to extract it again.
        self.state.record_url(item.canonical_url, item.body_sha256)

    def shard_committed(self, shard: ShardInfo) -> None:
        self.state.commit(self.home.relative(shard.path))

    def close_spider(self) -> None:
        # Runs after the writer's close_spider (Scrapy closes pipelines in reverse order):
        # only URLs of dropped pages can be pending here.
        self.state.commit()
        self.state.close()


class ShardWriterPipeline:
    """Writes documents into Parquet shards and catalogues each complete shard."""

    def __init__(self, crawler, home: Home, crawl_id: str, config: CrawlConfig):
        self.crawler, self.home, self.crawl_id, self.config = crawler, home, crawl_id, config
        self.writer: ShardWriter | None = None
        self.catalog: Catalog | None = None

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        return cls(crawler, Home(settings["CLLM_HOME"]), settings["CLLM_CRAWL_ID"],
                   crawl_config(settings))

    def open_spider(self) -> None:
        self.catalog = Catalog(self.home)
        crawl_dir = self.home.crawl_shards(self.crawl_id)
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
        doc = item.doc
        self.writer.add({
            "doc_id": doc.doc_id,
            "url": doc.url,
            "canonical_url": item.canonical_url,
            "domain": item.domain,
            "title": doc.title,
            "text": doc.text,
            "language": doc.language,
            "fetched_at": item.fetched_at,
            "http_status": item.status,
            "content_type": doc.content_type,
            "n_chars": len(doc.text),
            "crawl_id": self.crawl_id,
        })
        self.crawler.stats.inc_value("cllm/docs_written")
        return item

    def close_spider(self) -> None:
        self.writer.close()
        self.catalog.close()
