"""Progress while crawling: a bar on a terminal, periodic log events elsewhere. It only shows
counts (documents written, pages dropped) that the pipelines keep in the crawl stats."""

from __future__ import annotations

from scrapy import signals

from core.progress import Progress


class CrawlProgress:
    """Advances on every page fetched. The total is the page limit, or else the pages known
    so far (fetched, downloading or waiting in the scheduler), so it moves as links turn up."""

    def __init__(self, crawler):
        self.crawler = crawler
        self.limit = crawler.settings.getint("CLOSESPIDER_PAGECOUNT")
        self.progress: Progress | None = None
        crawler.signals.connect(self.opened, signal=signals.spider_opened)
        crawler.signals.connect(self.response, signal=signals.response_received)
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def opened(self, spider) -> None:
        self.progress = Progress(total=self.limit or 1, desc="crawl", event="crawl_progress",
                                 unit="page", enabled=self.crawler.settings.getbool("CLLM_PROGRESS"))

    def response(self, response, request, spider) -> None:
        stats = self.crawler.stats
        if not self.limit:
            engine = self.crawler.engine
            pending = len(engine.scheduler) + len(engine.downloader.active)
            self.progress.total = self.progress.count + 1 + pending  # this page included
            if self.progress.bar is not None:
                self.progress.bar.total = self.progress.total
        self.progress.update(1, docs=stats.get_value("cllm/docs_written", 0),
                             dropped=sum(v for k, v in stats.get_stats().items()
                                         if k.startswith("cllm/dropped/")))

    def closed(self, spider, reason) -> None:
        self.progress.close()
