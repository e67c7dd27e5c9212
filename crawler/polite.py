"""Politeness across a fleet (`[crawl] frontier`): every process of the crawl asks Redis
before it sends a request, so one site never sees more than `concurrency_per_domain`
requests at once nor two closer than `delay` seconds, however many processes crawl it; and
a site's robots.txt is fetched once for the whole crawl.

Scrapy's own download slots still apply inside each process (its delay is 0 in a fleet:
the fleet's slot is the delay); AutoThrottle, when on, only slows a process further.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler

from crawler.config import crawl_config
from crawler.fleet import FULL, Fleet, connect

TOKEN = "cllm_slot"  # request.meta: the fleet slot a request holds
ROBOTS_WAIT = 60.0  # seconds a process waits for another's robots.txt before fetching it
# Seconds between asking for a slot of a site whose slots are all in use, doubled each time:
# requests waiting in every process of a fleet would otherwise poll Redis 100 times a second.
FIRST_BACKOFF, MAX_BACKOFF = 0.01, 0.32


def fleet_of(crawler) -> Fleet:
    settings = crawler.settings
    return Fleet(connect(settings["CLLM_FRONTIER"]), settings["CLLM_CRAWL_ID"],
                 settings["CLLM_PROCESS"])


class FleetPoliteness:
    """Downloader middleware, last before the download: takes a fleet-wide slot of the
    request's site (waiting as long as Redis says), gives it back with the response. A slot
    held by a process that died is freed when its lease (the request timeout) ends."""

    def __init__(self, crawler):
        config = crawl_config(crawler.settings)
        self.fleet = fleet_of(crawler)
        self.delay, self.slots = config.delay, config.concurrency_per_domain
        self.lease = config.timeout + 10

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    async def process_request(self, request, spider=None):
        host = urlsplit(request.url).hostname or ""
        token = secrets.token_hex(8)
        backoff = FIRST_BACKOFF
        while (wait := self.fleet.slot(host, self.delay, self.slots, token, self.lease)) != 0:
            if wait == FULL:  # asked less often the longer the site stays busy
                wait, backoff = backoff, min(2 * backoff, MAX_BACKOFF)
            await asyncio.sleep(wait)
        request.meta[TOKEN] = (host, token)

    def release(self, request) -> None:
        if slot := request.meta.pop(TOKEN, None):
            self.fleet.free_slot(*slot)

    def process_response(self, request, response, spider=None):
        self.release(request)
        return response

    def process_exception(self, request, exception, spider=None):
        self.release(request)


class FleetRobotsTxt(RobotsTxtMiddleware):
    """Scrapy's robots.txt middleware, with one fetch of each site's robots.txt per crawl:
    the first process to claim it fetches it and keeps the body in Redis; the others parse
    that body (or, if it never comes, fetch it themselves)."""

    def __init__(self, crawler):
        super().__init__(crawler)
        self.fleet = fleet_of(crawler)

    async def robot_parser(self, request):
        netloc = urlparse_cached(request).netloc
        if netloc not in self._parsers and not self.fleet.claim_robots(netloc, ROBOTS_WAIT):
            for _ in range(int(ROBOTS_WAIT * 10)):
                if (body := self.fleet.robots(netloc)) is not None or netloc in self._parsers:
                    break
                await asyncio.sleep(0.1)
            if netloc not in self._parsers and body is not None:
                self._parsers[netloc] = build_from_crawler(self._parserimpl, self.crawler, body)
                self._stats.inc_value("robotstxt/from_fleet")
        return await super().robot_parser(request)

    async def _parse_robots(self, response, netloc, request):
        self.fleet.keep_robots(netloc, response.body)
        await super()._parse_robots(response, netloc, request)

    def _robots_error(self, exc, netloc):
        self.fleet.keep_robots(netloc, b"")  # none to be had: everything allowed, as Scrapy does
        super()._robots_error(exc, netloc)
