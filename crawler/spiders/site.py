"""The `site` spider: from seed URLs, follow links within the allowed domains and read each
site's sitemap.xml; hand every HTML, plain-text or PDF page to the item pipelines.

    scrapy crawl site -a seeds=http://127.0.0.1:8000/ [-a allowed_domains=a.org,b.org]

(`cllm crawl` runs the same spider with locking, resume and a report; see crawler/run.py.)

The spider only decides: every page and sitemap is parsed in the extraction workers
(crawler/parsing.py, crawler/workers.py), which send back its links and its document, so the
thread that drives the downloads never parses anything. Every URL found goes through the URL
policy and the crawl's bounds (crawler/urls.py); each one skipped is counted by reason.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timezone
from urllib.parse import urljoin

import scrapy
from scrapy import signals
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)
from scrapy.spidermiddlewares.httperror import HttpError

from core.config import load
from core.warc import Fetched
from crawler.config import CrawlConfig, CrawlerConfig, crawl_config, new_crawl_id, scrapy_settings
from crawler.guard import Skipped
from crawler.items import HTML_TYPES, Page, request_done
from crawler.pipelines import revalidated
from crawler.state import UrlLog, UrlRecord
from crawler.urls import Bounds, UrlPolicy, canonical_url, domain_of
from crawler.workers import ThreadPool, WorkerFailed, WorkerPool
from text.document import Document

MEDIA_TYPES = HTML_TYPES | {"text/plain", "application/pdf"}


def failure_stat(failure) -> str:
    """Where a failed request is counted: `skipped/<reason>` (never sent, or refused) or
    `error/<kind>`."""
    if failure.check(Skipped):
        return f"skipped/{failure.value.reason}"
    if failure.check(HttpError):
        return f"error/http_{failure.value.response.status}"
    if failure.check(DownloadConnectionRefusedError, CannotResolveHostError):
        return "error/unreachable"
    if failure.check(DownloadTimeoutError):
        return "error/timeout"
    if failure.check(DownloadCancelledError):
        return "error/too_large"  # the only cancel is DOWNLOAD_MAXSIZE's
    if failure.check(IgnoreRequest):
        message = str(failure.value)
        if "robots.txt" in message:
            return "skipped/robots"
        if "redirections" in message:
            return "error/redirect_loop"
        if "DOWNLOAD_MAXSIZE" in message:  # a compressed body inflating past the limit
            return "error/too_large"
        return "error/ignored"
    return f"error/{failure.type.__name__}"


def reports_done(callback):
    """A callback that tells when it is over, and after how many pages (`request_done`)."""
    @functools.wraps(callback)
    async def wrapper(self, response):
        items = 0
        try:
            async for out in callback(self, response):
                items += isinstance(out, Page)
                yield out
        finally:
            self.done(response.request, items)
    return wrapper


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, seeds: list[str] | str = "", allowed_domains: list[str] | str = "",
                 **kwargs):
        super().__init__(**kwargs)
        # `-a seeds=a,b` on the scrapy command line gives strings; crawler.run gives lists.
        self.seeds = seeds.split(",") if isinstance(seeds, str) else list(seeds)
        self.seeds = [canonical_url(s) for s in self.seeds if s]
        if isinstance(allowed_domains, str):
            allowed_domains = [d for d in allowed_domains.split(",") if d]
        # Scrapy's offsite middleware reads this attribute too (for redirects).
        self.allowed_domains = allowed_domains or sorted({domain_of(s) for s in self.seeds})
        # URLs judged in this crawl: navigation repeats the same links on every page, and
        # each is judged once (the scheduler's dupefilter still guards across resumes).
        self.urls_seen: set[str] = set()
        self.sitemaps: dict[str, int] = {}  # sitemaps requested per host

    @classmethod
    def update_settings(cls, settings) -> None:
        super().update_settings(settings)
        if settings.get("CLLM_HOME") is None:  # `scrapy crawl site`: cllm.toml and CLLM_*
            config = load(CrawlerConfig)
            settings.setdict(scrapy_settings(config.crawl, config.home, new_crawl_id(),
                                             config.database_url),
                             priority="cmdline")

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.config = config = crawl_config(crawler.settings)
        spider.policy = UrlPolicy.of(config, spider.allowed_domains)
        spider.bounds = Bounds(config.max_pages_per_host, config.max_queries_per_path)
        spider.url_log = UrlLog(crawler.settings["CLLM_HOME"],
                                crawler.settings.get("CLLM_DATABASE_URL", ""))
        spider.pool = start_pool(config)
        crawler.signals.connect(spider.closed_, signal=signals.spider_closed)
        return spider

    def closed_(self, spider, reason) -> None:
        self.pool.close()
        self.stat("workers_replaced", self.pool.replaced)
        self.url_log.close()

    def done(self, request, items: int = 0) -> None:
        self.crawler.signals.send_catch_log(signal=request_done, request=request, items=items)

    def stat(self, key: str, count: int = 1) -> None:
        if count:
            self.crawler.stats.inc_value(f"cllm/{key}", count)

    async def start(self):
        for origin in sorted({urljoin(seed, "/") for seed in self.seeds}):
            if request := self.follow_sitemap(urljoin(origin, "/sitemap.xml"), level=1):
                yield request
        for seed in self.seeds:
            self.urls_seen.add(seed)
            self.bounds.take(seed)
            yield self.page_request(seed)

    def page_request(self, url: str) -> scrapy.Request:
        """A page's request; conditional when the page was processed before with validators,
        so an unchanged page is answered 304 Not Modified without its body."""
        record = self.url_log.lookup(url)
        headers = {}
        if record is not None and record.etag:
            headers["If-None-Match"] = record.etag
        if record is not None and record.last_modified:
            headers["If-Modified-Since"] = record.last_modified
        meta = {"handle_httpstatus_list": [304]} if headers else {}
        if record is None:
            meta["unknown_url"] = True  # see `known_record`
        return scrapy.Request(url, callback=self.parse, errback=self.failed, headers=headers,
                              meta=meta)

    def known_record(self, response, url: str) -> UrlRecord | None:
        """What the URL log says of the page's URL now. A URL it did not know when its request
        was made, answered without a redirect, is not looked up again: this crawl records a
        URL only once its page is processed. (Another crawler of a fleet may have processed it
        meanwhile: then the page is extracted again, and dedup drops its twin.)"""
        if response.meta.get("unknown_url") and "redirect_urls" not in response.meta:
            return None
        return self.url_log.lookup(url)

    def judge(self, url: str) -> str | None:
        """The reason to skip a URL not seen before in this crawl; "" when it was seen."""
        if url in self.urls_seen:
            return ""
        self.urls_seen.add(url)
        return self.policy.reason_to_skip(url)

    def follow(self, url: str, depth: int):
        """A request for a canonical URL, or None when it was seen or is skipped (counted
        once per URL by reason)."""
        reason = self.judge(url)
        if reason is None and self.config.max_depth and depth > self.config.max_depth:
            reason = "max_depth"
        if reason is None and (reason := self.bounds.take(url)) is None:
            return self.page_request(url)
        if reason:
            self.stat(f"skipped/{reason}")
        return None

    def follow_sitemap(self, url: str, level: int):
        """A request for a sitemap `level` deep (sitemap.xml is 1, what an index names 2),
        within the URL policy and the sitemap bounds."""
        reason = self.judge(url)
        host = domain_of(url)
        if reason is None and level > self.config.max_sitemap_depth:
            reason = "sitemap_depth"
        if reason is None and self.sitemaps.get(host, 0) >= self.config.max_sitemaps_per_host:
            reason = "sitemap_budget"
        if reason is None:
            self.sitemaps[host] = self.sitemaps.get(host, 0) + 1
            return scrapy.Request(url, callback=self.parse_sitemap, errback=self.sitemap_failed,
                                  meta={"sitemap_level": level})
        if reason:
            self.stat(f"skipped/{reason}")
        return None

    async def in_worker(self, header: dict, body: bytes) -> dict:
        """The worker's replies as one dict; `drop` says why a page has no document."""
        try:
            replies = await self.pool.run(header, body)
        except WorkerFailed as failed:
            self.stat("workers_replaced")
            replies = [*failed.replies, {"drop": failed.reason}]
        reply = {k: v for r in replies for k, v in r.items()}
        if "error" in reply:
            self.logger.warning("parsing %s failed: %s", header["url"], reply["error"])
            reply["drop"], reply["detail"] = "extract_error", str(reply["error"])[:500]
        return reply

    @reports_done
    async def parse(self, response):
        self.stat("pages_fetched")
        url = canonical_url(response.url)
        depth = response.meta.get("depth", 0) + 1
        if response.status == 304:  # no body: the page as it was, its links as they were
            self.stat("unchanged")
            self.stat("not_modified")
            record = self.url_log.lookup(url)
            for link in (record.links if record else None) or ():
                if (request := self.follow(link, depth)) is not None:
                    yield request
            return
        media_type = (response.headers.get("Content-Type") or b"").decode("latin-1")
        media_type = media_type.split(";")[0].strip().lower()
        if media_type not in MEDIA_TYPES:
            self.stat("skipped/content_type")
            return
        body_sha256 = hashlib.sha256(response.body).hexdigest()
        record = self.known_record(response, url)
        unchanged = record is not None and record.body_sha256 == body_sha256
        if unchanged:
            self.stat("unchanged")
            if media_type not in HTML_TYPES:
                return
        reply = await self.in_worker({
            "kind": "page", "url": response.url, "media_type": media_type, "extract": not unchanged,
            "content_type": (response.headers.get("Content-Type") or b"").decode("latin-1"),
            "content_language": (response.headers.get("Content-Language") or b"").decode("latin-1"),
        }, response.body)
        etag, last_modified = (_header(response, name) for name in ("ETag", "Last-Modified"))
        links = reply.get("links", [])
        if unchanged:
            again = UrlRecord(record.body_sha256, record.doc_id, etag, last_modified, links)
            if again != record:  # validators or links not known yet: remember them
                self.crawler.signals.send_catch_log(revalidated, url=url, record=again)
        else:
            self.stat("extracted", int(bool(reply.get("extracted"))))
            fields = reply.get("doc") or {}
            fields["minhash"] = bytes.fromhex(fields.get("minhash", ""))  # the dedup's signature
            fetched_at = datetime.now(timezone.utc)
            yield Page(doc=Document(url=response.url, content_type=media_type, **fields),
                       canonical_url=url, domain=domain_of(response.url), status=response.status,
                       fetched_at=fetched_at, body_sha256=body_sha256,
                       drop=reply.get("drop") or ("" if fields else "no_text"),
                       detail=reply.get("detail", ""), etag=etag, last_modified=last_modified,
                       links=links,
                       fetched=fetched(response, fetched_at) if self.config.keep_warc else None)
        for link in links:
            if (request := self.follow(link, depth)) is not None:
                yield request
        self.stat("skipped/links_per_page", reply.get("more_links", 0))

    @reports_done
    async def parse_sitemap(self, response):
        reply = await self.in_worker({"kind": "sitemap", "url": response.url}, response.body)
        if not reply.get("type"):  # not XML, or it could not be read: as good as none
            self.stat("sitemap_missing")
            return
        level, depth = response.meta["sitemap_level"], response.meta.get("depth", 0) + 1
        for url in reply["urls"]:
            if reply["type"] == "sitemapindex":
                request = self.follow_sitemap(url, level + 1)
            else:
                request = self.follow(url, depth)
            if request is not None:
                yield request

    def sitemap_failed(self, failure):
        # Many sites have no sitemap: not an error of the crawl.
        stat = failure_stat(failure)
        self.stat(stat if stat.startswith("skipped/") else "sitemap_missing")
        self.done(failure.request)

    def failed(self, failure):
        stat = failure_stat(failure)
        self.stat(stat)
        if stat.startswith("error/"):
            self.logger.info("failed %s: %s", failure.request.url, stat[len("error/"):])
        self.done(failure.request)


def fetched(response, fetched_at: datetime) -> Fetched:
    """The response as the raw archive keeps it (under its request's URL)."""
    headers = [(k.decode("latin-1"), v.decode("latin-1"))
               for k, values in response.headers.items() for v in values]
    return Fetched(response.request.url, fetched_at, response.status, headers, response.body,
                   getattr(response, "protocol", None) or "HTTP/1.1")


def _header(response, name: str) -> str | None:
    value = response.headers.get(name)
    return value.decode("latin-1") if value else None


def start_pool(config: CrawlConfig) -> WorkerPool | ThreadPool:
    """The processes (or, with extract_workers 0, the thread) that parse pages."""
    setup = {"crawl": config.as_dict()}
    if config.extract_workers:
        return WorkerPool("crawler.parsing", setup, config.extract_workers, config.extract_timeout)
    return ThreadPool("crawler.parsing", setup)
