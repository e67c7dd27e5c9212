"""URL hygiene: canonical form, tracking parameters stripped, domain and file-type policy."""

from __future__ import annotations

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


@cache
def skipped_extensions() -> frozenset[str]:
    """Scrapy's list of binary extensions, minus PDF, which the crawler reads (imported here:
    checking a seed, as the web application does, needs no Scrapy)."""
    from scrapy.linkextractors import IGNORED_EXTENSIONS

    return frozenset({"." + e for e in IGNORED_EXTENSIONS if e != "pdf"}
                     | {".js", ".json", ".woff", ".woff2", ".ttf"})


def canonical_url(url: str) -> str:
    """One spelling per page: sorted query, no fragment, no tracking parameters."""
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
    a blocklist of domains or URL prefixes, and no binary file types."""

    allowed_domains: list[str]
    deny_domains: list[str] = field(default_factory=list)
    blocked_prefixes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, allowed_domains: list[str], deny_domains: str, blocklist: str) -> UrlPolicy:
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
        return cls([d.lower() for d in allowed_domains], deny, prefixes)

    def reason_to_skip(self, url: str) -> str | None:
        """None when the URL may be requested, else the reason it is skipped."""
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
        return None
