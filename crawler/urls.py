"""URL hygiene: canonical form (tracking parameters and session ids stripped), the policy of
which URLs a crawl may request (domains, file types, the shape of a URL), and the bounds
that end a crawl of an endless site (`Bounds`: pages per host, queries per path)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from w3lib.url import canonicalize_url, url_query_cleaner

from core.errors import UserError

# Query parameters that identify a campaign or a visitor, never the content.
TRACKING_PARAMS = {
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id",
    "gclid", "dclid", "fbclid", "msclkid", "mc_cid", "mc_eid", "yclid", "_ga", "_hsenc",
    "_hsmi", "igshid", "ref_src", "sessionid", "phpsessid", "sid",
}


# A session id in the path (`/cart;jsessionid=...`): one page under endless names.
_PATH_SESSION = re.compile(r";(?:jsessionid|phpsessid|sessionid|sid|aspsessionid\w*)=[^/?#;]*",
                           re.IGNORECASE)


@cache
def skipped_extensions() -> frozenset[str]:
    """Scrapy's list of binary extensions, minus PDF, which the crawler reads (imported here:
    checking a seed, as the web application does, needs no Scrapy)."""
    from scrapy.linkextractors import IGNORED_EXTENSIONS

    return frozenset({"." + e for e in IGNORED_EXTENSIONS if e != "pdf"}
                     | {".js", ".json", ".woff", ".woff2", ".ttf"})


def canonical_url(url: str) -> str:
    """One spelling per page: sorted query, no fragment, no tracking parameters or session
    ids."""
    if ";" in url:
        url = _PATH_SESSION.sub("", url)
    parts = urlsplit(url)
    if parts.query:
        url = url_query_cleaner(url, TRACKING_PARAMS, remove=True, keep_fragments=True)
    return canonicalize_url(url)


def check_seed(url: str) -> str:
    """The seed as a canonical http(s) URL, or a UserError naming it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"seed {url!r} is not an http(s) URL: give a full URL such as "
                        "https://example.org/ or a file of them, one a line")
    return canonical_url(url.strip())


def domain_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _under(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


@dataclass
class UrlPolicy:
    """Which URLs a crawl may request: allowed domains (with subdomains), denied domains,
    a blocklist of domains or URL prefixes, no binary file types, and no URL of a shape that
    only traps generate: too long, a path segment repeated (/a/b/a/b/a/b), too many query
    parameters."""

    allowed_domains: list[str]
    deny_domains: list[str] = field(default_factory=list)
    blocked_prefixes: list[str] = field(default_factory=list)
    max_url_length: int = 2000
    max_path_repeats: int = 2
    max_query_params: int = 10

    @classmethod
    def build(cls, allowed_domains: list[str], deny_domains: str, blocklist: str,
              **bounds: int) -> UrlPolicy:
        deny = [d.strip().lower() for d in deny_domains.split(",") if d.strip()]
        prefixes = []
        if blocklist:
            for line in Path(blocklist).read_text(encoding="utf-8").splitlines():
                entry = line.split("#", 1)[0].strip().lower()
                if not entry:
                    continue
                if "://" in entry:
                    prefixes.append(entry)
                else:
                    deny.append(entry)
        return cls([d.lower() for d in allowed_domains], deny, prefixes, **bounds)

    @classmethod
    def of(cls, crawl, allowed_domains: list[str]) -> UrlPolicy:
        """The policy of a `[crawl]` section (crawler.config.CrawlConfig)."""
        return cls.build(allowed_domains, crawl.deny_domains, crawl.blocklist,
                         max_url_length=crawl.max_url_length,
                         max_path_repeats=crawl.max_path_repeats,
                         max_query_params=crawl.max_query_params)

    def reason_to_skip(self, url: str) -> str | None:
        """None when the URL may be requested, else the reason it is skipped."""
        if len(url) > self.max_url_length:
            return "url_length"
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https"):
            return "scheme"
        if self.allowed_domains and not any(_under(host, d) for d in self.allowed_domains):
            return "offsite"
        if any(_under(host, d) for d in self.deny_domains):
            return "denied_domain"
        if any(url.lower().startswith(p) for p in self.blocked_prefixes):
            return "blocklisted"
        path = parts.path.lower()
        if any(path.endswith(ext) for ext in skipped_extensions()):
            return "file_type"
        segments = Counter(s for s in path.split("/") if s)
        if segments and max(segments.values()) > self.max_path_repeats:
            return "repeated_path"
        if parts.query and parts.query.count("&") + 1 > self.max_query_params:
            return "query_params"
        return None


class Bounds:
    """What one crawl may take of a host: `max_pages` requests per host, `max_queries`
    distinct queries under one path (sorting, filtering and paging parameters multiply
    without end). 0 pages: no limit."""

    def __init__(self, max_pages: int, max_queries: int):
        self.max_pages, self.max_queries = max_pages, max_queries
        self.pages: Counter[str] = Counter()
        self.queries: Counter[tuple[str, str]] = Counter()

    def take(self, url: str) -> str | None:
        """Count a new URL against the bounds: None when it may be requested, else the
        reason it is skipped (and then it is not counted)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if self.max_pages and self.pages[host] >= self.max_pages:
            return "host_budget"
        if parts.query:
            key = (host, parts.path)
            if self.queries[key] >= self.max_queries:
                return "query_explosion"
            self.queries[key] += 1
        self.pages[host] += 1
        return None
