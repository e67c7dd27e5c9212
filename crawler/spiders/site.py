"""The `site` spider: from seed URLs, follow links within the allowed domains and read each
site's sitemap.xml; hand every HTML, plain-text or PDF page to the item pipelines.

    scrapy crawl site -a seeds=http://127.0.0.1:8000/ [-a allowed_domains=a.org,b.org]

(`cllm crawl` runs the same spider with locking, resume and a report; see crawler/run.py.)
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from urllib.parse import urljoin

import scrapy
from lxml.etree import XMLSyntaxError
from scrapy import signals
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)
from scrapy.http import TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.response import get_base_url
from scrapy.utils.sitemap import Sitemap

from core.config import load
from crawler.config import CrawlerConfig, crawl_config, new_crawl_id, scrapy_settings
from crawler.items import Page
from crawler.state import UrlLog
from crawler.urls import UrlPolicy, canonical_url, domain_of
from text.document import Document

MEDIA_TYPES = {"text/html", "application/xhtml+xml", "text/plain", "application/pdf"}


def failure_kind(failure) -> str:
    """A short name for why a request failed, as counted in the report."""
    if failure.check(HttpError):
        return f"http_{failure.value.response.status}"
    if failure.check(DownloadConnectionRefusedError, CannotResolveHostError):
        return "unreachable"
    if failure.check(DownloadTimeoutError):
        return "timeout"
    if failure.check(DownloadCancelledError):
        return "too_large"  # the only cancel is DOWNLOAD_MAXSIZE's
    if failure.check(IgnoreRequest):
        message = str(failure.value)
        if "robots.txt" in message:
            return "robots"
        if "redirections" in message:
            return "redirect_loop"
        return "ignored"
    return failure.type.__name__


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
        # Links and URLs seen in this crawl: navigation repeats the same links on every page,
        # and each is judged once (the scheduler's dupefilter still guards across resumes).
        self.links_seen: set[tuple[str, str]] = set()
        self.urls_seen: set[str] = set()

    @classmethod
    def update_settings(cls, settings) -> None:
        super().update_settings(settings)
        if settings.get("CLLM_HOME") is None:  # `scrapy crawl site`: cllm.toml and CLLM_*
            config = load(CrawlerConfig)
            settings.setdict(scrapy_settings(config.crawl, config.home, new_crawl_id()),
                             priority="cmdline")

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        config = crawl_config(crawler.settings)
        spider.policy = UrlPolicy.build(spider.allowed_domains, config.deny_domains, config.blocklist)
        spider.url_log = UrlLog(crawler.settings["CLLM_HOME"])
        crawler.signals.connect(spider.url_log.close, signal=signals.spider_closed)
        return spider

    async def start(self):
        origins = {urljoin(seed, "/") for seed in self.seeds}
        for origin in sorted(origins):
            yield scrapy.Request(urljoin(origin, "/sitemap.xml"), callback=self.parse_sitemap,
                                 errback=self.sitemap_failed)
        for seed in self.seeds:
            yield scrapy.Request(seed, callback=self.parse, errback=self.failed)

    def follow(self, url: str):
        """A request for a URL not seen before in this crawl, or None when it was seen or
        the URL policy skips it (counted once per URL by reason)."""
        if url in self.urls_seen:
            return None
        self.urls_seen.add(url)
        url = canonical_url(url)
        reason = self.policy.reason_to_skip(url)
        if reason is None:
            return scrapy.Request(url, callback=self.parse, errback=self.failed)
        self.crawler.stats.inc_value(f"cllm/skipped/{reason}")
        return None

    def parse(self, response):
        stats = self.crawler.stats
        stats.inc_value("cllm/pages_fetched")
        media_type = (response.headers.get("Content-Type") or b"").decode("latin-1")
        media_type = media_type.split(";")[0].strip().lower()
        if media_type not in MEDIA_TYPES:
            stats.inc_value("cllm/skipped/content_type")
            return
        url = canonical_url(response.url)
        body_sha256 = hashlib.sha256(response.body).hexdigest()
        if self.url_log.unchanged(url, body_sha256):
            stats.inc_value("cllm/unchanged")
        else:
            doc = Document(
                url=response.url, content_type=media_type, body=response.body,
                html=response.text if isinstance(response, TextResponse) else "",
                content_language=(response.headers.get("Content-Language") or b"").decode("latin-1"))
            yield Page(doc=doc, canonical_url=url, domain=domain_of(response.url),
                       status=response.status, fetched_at=datetime.now(timezone.utc),
                       body_sha256=body_sha256)
        if media_type in ("text/html", "application/xhtml+xml"):
            yield from self.follow_links(response)

    def follow_links(self, response):
        # lxml directly: parsel would wrap each of the page's hundreds of hrefs in an object.
        hrefs = response.selector.root.xpath("//a[not(@rel='nofollow')]/@href")
        base = get_base_url(response)
        directory = urljoin(base, ".")
        # Each link once, in page order, without its fragment (a place within a page).
        for href in dict.fromkeys(h.split("#", 1)[0].strip() for h in hrefs):
            if not href:  # this same page
                continue
            # A relative link means the same URL from every page of a directory, and sibling
            # pages share most of their navigation: each is resolved and judged once.
            key = (base if href.startswith("?") else directory, href)
            if key in self.links_seen:
                continue
            if len(self.links_seen) > 500_000:  # a cache: bounded, whatever the site's size
                self.links_seen.clear()
            self.links_seen.add(key)
            if (request := self.follow(urljoin(base, href))) is not None:
                yield request

    def parse_sitemap(self, response):
        try:
            sitemap = Sitemap(response.body)
        except (XMLSyntaxError, StopIteration):  # not XML at all: as good as no sitemap
            self.crawler.stats.inc_value("cllm/sitemap_missing")
            return
        for entry in sitemap:
            # Locations should be absolute; relative ones are resolved, not dropped.
            url = urljoin(response.url, entry["loc"])
            if sitemap.type == "sitemapindex":
                yield scrapy.Request(url, callback=self.parse_sitemap, errback=self.sitemap_failed)
            elif (request := self.follow(url)) is not None:
                yield request

    def sitemap_failed(self, failure):
        # Many sites have no sitemap: not an error of the crawl.
        self.crawler.stats.inc_value("cllm/sitemap_missing")

    def failed(self, failure):
        kind = failure_kind(failure)
        if kind == "robots":
            self.crawler.stats.inc_value("cllm/skipped/robots")
        else:
            self.crawler.stats.inc_value(f"cllm/error/{kind}")
            self.logger.info("failed %s: %s", failure.request.url, kind)
