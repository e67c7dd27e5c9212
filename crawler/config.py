"""The crawler's configuration: the `[crawl]` section of cllm.toml (politeness, limits,
filters, dedup and shard settings) and the Scrapy settings made from it.

Every key can also be set as `CLLM_CRAWL_<KEY>` (e.g. `CLLM_CRAWL_DELAY=0`). Scrapy's own
settings (`crawler/settings.py`) take their user-tunable values from here through
`scrapy_settings`; the pipelines read the section back with `crawl_config`. `scrapy crawl
site` loads `CrawlerConfig` (the general keys and this section only), so the crawler never
needs the configuration of the packages above it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from core.config import General
from core.errors import UserError
from core.home import Home
from text.pii import KINDS as PII_KINDS


@dataclass
class CrawlConfig:
    # What and when: `cllm crawl` without --seeds and the Airflow `crawl` DAG use these
    seeds: str = ""  # comma-separated seed URLs or files of them, one a line
    schedule: str = "@daily"  # the `crawl` DAG's cron or preset; "" runs it only when triggered
    # Politeness
    # Honest: who is crawling and why. Operators should add a contact URL or address.
    user_agent: str = "CrystallineBot/0.1 (continuous-learning research crawler)"
    delay: float = 1.0  # seconds between requests to one site (AutoThrottle adapts above it)
    concurrency_per_domain: int = 2
    obey_robots: bool = True
    autothrottle: bool = True
    # Limits per response
    max_response_mb: float = 10.0
    timeout: float = 30.0  # seconds per request
    retries: int = 2  # extra attempts on 429, 5xx and connection errors, with back-off
    retry_backoff: float = 2.0  # seconds before the first retry, doubled for each next one
    max_pages: int = 0  # HTTP responses per crawl; 0 = no limit
    # Network guard: loopback, private, link-local (cloud metadata), shared, multicast and
    # reserved addresses are refused unless inside one of these comma-separated CIDRs
    # (`127.0.0.1/32` for a site served on this machine); public addresses are always fine.
    allowed_networks: str = ""
    # Bounds that end a crawl of an endless site (calendars, faceted listings, link farms)
    # Link hops from a seed (0: no limit). Real sites keep their pages a few hops from the
    # front page (the Python docs: 3); 20 leaves room for long series, and ends a chain.
    max_depth: int = 20
    # Requests per host and crawl (0: no limit): about 3 hours of one site at delay 1 s.
    max_pages_per_host: int = 10_000
    max_links_per_page: int = 1000  # distinct links taken from a page, in page order
    max_url_length: int = 2000  # characters; what browsers and servers reliably take
    max_path_repeats: int = 2  # times one segment may occur in a path (/a/b/a/b/a/b: 3)
    max_query_params: int = 10  # parameters in one query (tracking ones removed first)
    max_queries_per_path: int = 1000  # distinct queries under one path (paging, filters)
    max_sitemap_depth: int = 2  # a sitemap index, and an index inside it
    max_sitemaps_per_host: int = 50  # sitemap files read per host
    # URL hygiene
    deny_domains: str = ""  # comma-separated; subdomains included
    blocklist: str = ""  # a file of domains or URL prefixes to skip, one a line, # comments
    # Extraction: processes parsing pages (text, links, sitemaps, quality filters) beside the
    # crawl; 0 parses in a thread of the crawl's own process, with no time limit.
    extract_workers: int = 2
    # Seconds a worker may spend on one page before it is killed and replaced; real pages
    # take well under one, a pathological one may take hours.
    extract_timeout: float = 30.0
    # Quality filters (Gopher / C4 / FineWeb style); a page failing one is dropped by reason
    min_words: int = 50
    max_words: int = 200_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1  # '#' and '...' per word
    min_alpha_word_ratio: float = 0.7  # words with at least one letter
    min_stopwords: int = 2  # of the, be, to, of, and, that, have, with
    max_duplicate_line_ratio: float = 0.3
    # Lines ending in . ! ? " etc. FineWeb uses 0.12, which drops much blank verse (8-20%).
    min_terminal_punct_ratio: float = 0.05
    max_short_line_ratio: float = 0.67  # lines under 30 characters (FineWeb)
    max_boilerplate_line_ratio: float = 0.3  # cookie, javascript, copyright lines (C4)
    # Language: every document's is identified from its text (text/language.py); with a
    # comma-separated list of codes (en, fr, de: ISO 639-1), documents in others are dropped.
    languages: str = ""
    # Personal data replaced in what is written (text/pii.py): any of email, ip, phone; "" none
    scrub_pii: str = "email,ip,phone"
    # Every dropped document is recorded (URL, reason, detail) under crawl/dropped/<crawl>/;
    # the text too of the first `keep_dropped` of each reason, and of this share of the rest
    # (chosen by URL, so a crawl run again keeps the same pages: 1.0 keeps every text).
    keep_dropped: int = 20
    keep_dropped_share: float = 0.0
    # Every processed page's response (kept or dropped) in a WARC file beside its shard
    # (warc/<crawl>/<shard>.warc.gz, core/warc.py); each document points to its record.
    keep_warc: bool = True
    # Deduplication
    near_dup_threshold: float = 0.8  # estimated Jaccard similarity of word 5-grams
    minhash_perm: int = 128
    # Shards
    shard_max_mb: float = 64.0  # a shard is closed once its file reaches this size
    # ... or this long after the last one, so a crawl killed outright loses at most this
    # much work (the crawl state is committed with each shard).
    shard_max_minutes: float = 10.0
    row_group_rows: int = 1000
    # A fleet: a Redis URL (redis://host:6379/0) makes every `cllm crawl --crawl-id ID` with
    # the same frontier one crawl, on any number of machines (crawler/frontier.py); empty
    # crawls in this process alone, its queue under the home (JOBDIR).
    frontier: str = ""
    # Seconds the whole fleet must have nothing to do before every process ends.
    idle_timeout: float = 30.0
    # Seconds without a heartbeat after which a process is given up and its requests
    # crawled by the others (a stalled process, a lost machine).
    frontier_lease: float = 30.0

    @property
    def seed_list(self) -> list[str]:
        return _items(self.seeds)

    @property
    def language_list(self) -> list[str]:
        return [code.lower() for code in _items(self.languages)]

    @property
    def pii_kinds(self) -> tuple[str, ...]:
        kinds = tuple(_items(self.scrub_pii))
        if unknown := [k for k in kinds if k not in PII_KINDS]:
            raise UserError(f"crawl setting scrub_pii: unknown kind(s) {', '.join(unknown)}: "
                            f"give any of {', '.join(PII_KINDS)}, or \"\" to scrub nothing")
        return kinds

    def validate(self) -> None:
        positive = ["concurrency_per_domain", "max_response_mb", "timeout", "minhash_perm",
                    "shard_max_mb", "row_group_rows", "max_words", "max_links_per_page",
                    "max_url_length", "max_path_repeats", "max_query_params",
                    "max_queries_per_path", "max_sitemap_depth", "max_sitemaps_per_host",
                    "extract_timeout", "shard_max_minutes", "idle_timeout", "frontier_lease"]
        non_negative = ["delay", "retries", "retry_backoff", "max_pages", "max_depth",
                        "max_pages_per_host", "extract_workers", "min_words", "min_stopwords",
                        "min_mean_word_length", "keep_dropped"]
        ratios = ["max_symbol_ratio", "min_alpha_word_ratio", "max_duplicate_line_ratio",
                  "min_terminal_punct_ratio", "max_short_line_ratio",
                  "max_boilerplate_line_ratio", "near_dup_threshold", "keep_dropped_share"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"crawl setting {name} must be positive, not {getattr(self, name)}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"crawl setting {name} must be 0 or more, not {getattr(self, name)}")
        for name in ratios:
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"crawl setting {name} must be between 0 and 1, "
                                f"not {getattr(self, name)}")
        if not 0 < self.near_dup_threshold < 1:
            raise UserError("crawl setting near_dup_threshold must be between 0 and 1 (exclusive)")
        if self.min_mean_word_length > self.max_mean_word_length:
            raise UserError("crawl setting min_mean_word_length must not exceed max_mean_word_length")
        if not self.user_agent.strip():
            raise UserError("crawl setting user_agent must not be empty: name your crawler honestly")
        parse_networks(self.allowed_networks)
        self.pii_kinds  # noqa: B018 - each a known kind, or a UserError
        if self.language_list:
            from text.language import known_languages  # loads the model: only when asked

            if unknown := sorted(set(self.language_list) - known_languages()):
                raise UserError(f"crawl setting languages: unknown code(s) {', '.join(unknown)}:"
                                " give ISO 639-1 codes such as en, fr, de")
        if self.blocklist and not Path(self.blocklist).is_file():
            raise UserError(f"crawl blocklist file {self.blocklist} does not exist: "
                            "fix the path or leave blocklist empty")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of a comma-separated CIDR list, or a UserError naming the bad entry."""
    networks = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as e:
            raise UserError(f"crawl setting allowed_networks: {entry!r} is not a network "
                            f"({e}): give CIDRs such as 127.0.0.1/32 or 10.0.0.0/8") from None
    return networks


@dataclass
class CrawlerConfig(General):
    """What `core.config.load` fills for the crawler: the general keys and `[crawl]`."""

    crawl: CrawlConfig = field(default_factory=CrawlConfig)


def new_crawl_id() -> str:
    """The UTC time to the second, so crawl ids sort by when each crawl began."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def scrapy_settings(crawl: CrawlConfig, home: Path | Home, crawl_id: str,
                    database_url: str = "", process: str = "") -> dict:
    """Scrapy settings from the `[crawl]` config; they override crawler/settings.py. With a
    frontier, `process` names this process in the fleet (default: a new id)."""
    fleet = fleet_settings(crawl, process) if crawl.frontier else {}
    return {
        "USER_AGENT": crawl.user_agent,
        "DOWNLOAD_DELAY": crawl.delay,
        "AUTOTHROTTLE_ENABLED": crawl.autothrottle,
        "AUTOTHROTTLE_START_DELAY": crawl.delay,
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency_per_domain,
        "ROBOTSTXT_OBEY": crawl.obey_robots,
        "DOWNLOAD_MAXSIZE": int(crawl.max_response_mb * 2**20),
        # Responses being parsed at once, in bytes: one of the largest may be in a worker
        # while the others go on (Scrapy pauses downloads above it).
        "SCRAPER_SLOT_MAX_ACTIVE_SIZE": max(5_000_000, int(2 * crawl.max_response_mb * 2**20)),
        "DOWNLOAD_TIMEOUT": crawl.timeout,
        "RETRY_TIMES": crawl.retries,
        "RETRY_BACKOFF_BASE": crawl.retry_backoff,
        "CLOSESPIDER_PAGECOUNT": crawl.max_pages,
        "CLLM_HOME": str(Home(home)),
        "CLLM_CRAWL_ID": crawl_id,
        "CLLM_DATABASE_URL": database_url,  # the catalog and crawl state (core/db.py)
        "CLLM_CRAWL": crawl.as_dict(),
    } | fleet


def fleet_settings(crawl: CrawlConfig, process: str) -> dict:
    """A fleet's frontier and politeness in Redis instead of JOBDIR and Scrapy's slots."""
    from crawler import settings
    from crawler.fleet import process_id

    middlewares = dict(settings.DOWNLOADER_MIDDLEWARES) | {
        "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
        "crawler.polite.FleetRobotsTxt": 100,  # where Scrapy's own one sits
        "crawler.polite.FleetPoliteness": 950,  # last before the download
    }
    return {"SCHEDULER": "crawler.frontier.Scheduler", "CLLM_FRONTIER": crawl.frontier,
            "CLLM_PROCESS": process or process_id(), "DOWNLOAD_DELAY": 0,
            "DOWNLOADER_MIDDLEWARES": middlewares}


def crawl_config(settings) -> CrawlConfig:
    """The `[crawl]` section back from Scrapy settings made by `scrapy_settings`."""
    return CrawlConfig(**settings.getdict("CLLM_CRAWL"))
