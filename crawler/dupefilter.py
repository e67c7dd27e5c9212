"""Scrapy's duplicate-request filter, counting redirect loops on the way."""

from __future__ import annotations

from scrapy.dupefilters import RFPDupeFilter


def count_loop(stats, request) -> None:
    """A redirect back to a URL of its own redirect chain (a -> b -> a, or a -> a) is a loop:
    it is dropped like any request seen before, and the report counts it."""
    if request.url in request.meta.get("redirect_urls", ()):
        stats.inc_value("cllm/error/redirect_loop")


class DupeFilter(RFPDupeFilter):
    """The embedded crawl's (JOBDIR); a fleet's is in Redis (crawler/frontier.py)."""

    @classmethod
    def from_crawler(cls, crawler):
        dupefilter = super().from_crawler(crawler)
        dupefilter.stats = crawler.stats
        return dupefilter

    def request_seen(self, request) -> bool:
        seen = super().request_seen(request)
        if seen:
            count_loop(self.stats, request)
        return seen
