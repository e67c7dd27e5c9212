"""Scrapy's downloader, with a site's concurrency kept when its delay is 0.

Scrapy (2.19) counts a request as transferring when its download task starts, and under the
asyncio reactor a task starts only after the loop that hands a site's queued requests over
to downloads has ended; that loop stops when the site's transfers are taken. With a delay
between requests (the default, 1 s) it hands over one at a time anyway; with `[crawl] delay
= 0` it handed over the whole queue, and a site with `concurrency_per_domain = 2` had up to
11 of the crawl's requests at once (a local site of python3.11-doc, `benchmarks/RESULTS.md`,
2026-12-04). Here a request is transferring from the moment it leaves the site's queue.
"""

from __future__ import annotations

from collections import deque

from scrapy.core.downloader import Downloader as ScrapyDownloader


class _HandOver(deque):
    """A site's queue of (request, deferred): what is taken from it is transferring at once
    (Scrapy's download adds it again, a set, and removes it when it ends)."""

    def __init__(self, transferring: set, queued=()):
        super().__init__(queued)
        self.transferring = transferring

    def popleft(self):
        request, deferred = super().popleft()
        self.transferring.add(request)
        return request, deferred


class Downloader(ScrapyDownloader):
    def _get_slot(self, request, *spider):  # Scrapy warns when a spider is passed, even None
        key, slot = super()._get_slot(request, *spider)
        if not isinstance(slot.queue, _HandOver):
            slot.queue = _HandOver(slot.transferring, slot.queue)
        return key, slot
