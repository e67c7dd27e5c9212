"""Scrapy's scheduler, stopping the crawl when its queue on disk (JOBDIR) cannot be written."""

from __future__ import annotations

from scrapy.core.scheduler import Scheduler as ScrapyScheduler

from crawler.pipelines import lose, storage_line


class Scheduler(ScrapyScheduler):
    """A request that cannot be queued on a full disk would be lost without a word (Scrapy
    leaves the error to an asyncio task nobody awaits): the crawl stops and says so, and
    the next run starts again from the seeds."""

    def enqueue_request(self, request) -> bool:
        try:
            return super().enqueue_request(request)
        except OSError as e:
            if (problem := storage_line(e)) is None:
                raise
            lose(self.crawler, f"the crawl's request queue could not be written: {problem}")
            return False
