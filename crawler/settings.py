"""Scrapy settings of the crawler project.

What a user tunes (delay, user agent, limits, concurrency, retries) lives in the `[crawl]`
section of cllm.toml (crawler/config.py) and is applied over these by
`crawler.config.scrapy_settings`; what stays here is how the crawler is put together.
"""

from scrapy.settings import default_settings


def without(defaults: dict, *names: str) -> dict:
    """Scrapy's own components of a `*_BASE` setting less `names`: taken out there, not set to
    None in the setting beside it, whose every name Scrapy imports to merge the two
    (CookiesMiddleware imports tldextract, RemoteControl aiohttp: 0.2 s of a crawl's start)."""
    return {k: v for k, v in defaults.items() if k not in names}


BOT_NAME = "crystalline"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"

# Politeness: robots.txt, one site at a time gently, back off when a site slows down.
ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 1.0
DOWNLOAD_DELAY_JITTER = 0.5  # +-50%, so requests do not come in lockstep
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
COOKIES_ENABLED = False  # a crawler has no session to keep

# Retries with back-off on rate limiting and server errors (crawler/middlewares.py).
RETRY_ENABLED = True
RETRY_TIMES = 2
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]
RETRY_BACKOFF_BASE = 2.0  # seconds before the first retry, doubled for each next one
RETRY_BACKOFF_MAX = 60.0
DOWNLOADER_MIDDLEWARES = {
    # First: refused addresses and schemes, and redirects through the URL policy, before
    # anything (robots.txt included) is sent.
    "crawler.guard.GuardMiddleware": 40,
    "crawler.middlewares.BackoffRetryMiddleware": 550,  # where Scrapy's own one sat
}
DOWNLOADER_MIDDLEWARES_BASE = without(
    default_settings.DOWNLOADER_MIDDLEWARES_BASE,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware",  # BackoffRetryMiddleware instead
    # A <meta> refresh is found by the workers with the links (it decodes the whole body).
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware",
    # A proxy would resolve the addresses the network guard must check.
    "scrapy.downloadermiddlewares.httpproxy.HttpProxyMiddleware",
    "scrapy.downloadermiddlewares.cookies.CookiesMiddleware",  # COOKIES_ENABLED is off
)
REDIRECT_MAX_TIMES = 10

# The network guard's resolver (crawler/guard.py): every connection's addresses checked.
TWISTED_DNS_RESOLVER = "crawler.guard.GuardedResolver"
# http and https only: no file://, data:, s3:// or ftp:// whatever a page links to.
DOWNLOAD_HANDLERS = {"file": None, "data": None, "s3": None, "ftp": None}
# A site's concurrency held with no delay too (Scrapy's own let a whole queue through).
DOWNLOADER = "crawler.downloader.Downloader"
# The spider applies max_depth and max_url_length itself, and counts what they skip.
DEPTH_LIMIT = 0
SPIDER_MIDDLEWARES = {"scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None}

# Limits per response.
DOWNLOAD_TIMEOUT = 30
DOWNLOAD_MAXSIZE = 10 * 2**20
DOWNLOAD_WARNSIZE = 0  # DOWNLOAD_MAXSIZE already reports the pages it cancels

# Breadth-first, so a page limit covers a site's top levels rather than one deep branch.
# JOBDIR's request queue is marshal, not pickle: nothing read back from disk is unpickled.
DEPTH_PRIORITY = 1
SCHEDULER_DISK_QUEUE = "scrapy.squeues.MarshalFifoDiskQueue"
SCHEDULER_MEMORY_QUEUE = "scrapy.squeues.FifoMemoryQueue"

DUPEFILTER_CLASS = "crawler.dupefilter.DupeFilter"  # counts redirect loops too
SCHEDULER = "crawler.scheduler.Scheduler"  # a full disk under JOBDIR stops the crawl

# Pages parsed at once (in the extraction workers) are bounded by the size of the responses
# being processed (Scrapy's SCRAPER_SLOT_MAX_ACTIVE_SIZE, 5 MB), so a crawl of large pages
# does not hold hundreds of them in memory.
CONCURRENT_ITEMS = 16

ITEM_PIPELINES = {
    "crawler.pipelines.TextPipeline": 200,  # drops counted, then dedup
    "crawler.pipelines.ShardWriterPipeline": 300,
}
EXTENSIONS = {"crawler.extensions.CrawlProgress": 500}
EXTENSIONS_BASE = without(
    default_settings.EXTENSIONS_BASE,
    "scrapy.extensions.spiderstate.SpiderState",  # pickles spider.state into JOBDIR
    # Scrapy 2.19's default: an HTTP server that runs any Python sent to it, in a process that
    # reads hostile pages, and a job file per crawl left in ~/.local/state
    "scrapy.extensions.remote_control.RemoteControl",
)

# Scrapy's own log only for problems; progress comes from crawler.extensions, the
# report from crawler.run.
LOG_LEVEL = "WARNING"
DEFAULT_DROPITEM_LOG_LEVEL = "DEBUG"
TELNETCONSOLE_ENABLED = False
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
