"""The item that travels through the pipelines: a fetched page and its document; and the
signal the spider sends when it is done with a response."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from text.document import Document

if TYPE_CHECKING:  # warcio: not for the workers, which import this module for HTML_TYPES
    from core.warc import Fetched

# The media types parsed as HTML (crawler/parsing.py, in the workers: the spider names them
# without importing what parses them)
HTML_TYPES = {"text/html", "application/xhtml+xml"}


@dataclass
class Page:
    # The page's document (url, content type, then its text), the text steps' part
    doc: Document
    # What only the crawl needs, set by the spider from the response
    canonical_url: str
    domain: str
    status: int
    fetched_at: datetime
    body_sha256: str  # what the page was, for "unchanged since the last crawl"
    drop: str = ""  # why the page has no document (extraction, quality), decided in a worker
    detail: str = ""  # what failed (the measure, the language), for the record of drops
    # For the next crawl: the response's validators (a conditional request) and the page's
    # links (followed again when the server answers 304 Not Modified)
    etag: str | None = None
    last_modified: str | None = None
    links: list[str] | None = None
    # The response for the raw archive (core/warc.py); None without `keep_warc`
    fetched: Fetched | None = None


# signal (args: request, items): a callback or errback is over, after `items` Pages; a
# fleet's frontier (crawler/frontier.py) keeps the request in flight until then.
request_done = object()
