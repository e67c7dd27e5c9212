"""Downloader middleware: Scrapy's retries, with back-off."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import CannotResolveHostError

from crawler.guard import Skipped, refused_by_resolver


class BackoffRetryMiddleware(RetryMiddleware):
    """Retries what Scrapy retries (RETRY_HTTP_CODES such as 429 and 5xx, dropped
    connections, timeouts), but waits first: RETRY_BACKOFF_BASE seconds, doubled on each
    further attempt, or the server's Retry-After if it asks for longer, at most
    RETRY_BACKOFF_MAX. A struggling server gets time to recover instead of an instant repeat.
    A host the network guard refused is not retried: it is skipped as `blocked_address`."""

    def __init__(self, settings):
        super().__init__(settings)
        self.base = settings.getfloat("RETRY_BACKOFF_BASE")
        self.max = settings.getfloat("RETRY_BACKOFF_MAX")

    async def process_response(self, request, response, spider=None):
        result = super().process_response(request, response)
        if isinstance(result, Request):
            await self.wait(result, response.headers.get("Retry-After"))
        return result

    async def process_exception(self, request, exception, spider=None):
        if isinstance(exception, CannotResolveHostError) and \
                refused_by_resolver(urlsplit(request.url).hostname or ""):
            raise Skipped("blocked_address", request.url)  # the guard refused it: no retry
        result = super().process_exception(request, exception)
        if isinstance(result, Request):
            await self.wait(result, None)
        return result

    async def wait(self, retry: Request, retry_after: bytes | None) -> None:
        delay = self.base * 2 ** (retry.meta["retry_times"] - 1)
        if retry_after and retry_after.strip().isdigit():  # seconds; an HTTP date is ignored
            delay = max(delay, float(retry_after))
        await asyncio.sleep(min(delay, self.max))
