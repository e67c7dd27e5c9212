"""Scrapy's duplicate-request filter, counting redirect loops on the way."""

from __future__ import annotations

from scrapy.dupefilters import RFPDupeFilter


class DupeFilter(RFPDupeFilter):
    """A redirect back to a URL of its own redirect chain (a -> b -> a, or a -> a) is a
    loop: the filter drops it like any request seen before, and the report counts it."""

    @classmethod
    def from_crawler(cls, crawler):
        dupefilter = super().from_crawler(crawler)
        dupefilter.stats = crawler.stats
        return dupefilter

    def request_seen(self, request) -> bool:
        seen = super().request_seen(request)
        if seen and request.url in request.meta.get("redirect_urls", ()):
            self.stats.inc_value("cllm/error/redirect_loop")
        return seen
