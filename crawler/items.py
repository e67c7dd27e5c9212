"""The item that travels through the pipelines: a fetched page, then its document."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Page:
    # Set by the spider from the response
    url: str
    canonical_url: str
    domain: str
    status: int
    content_type: str  # media type only, lower case: text/html, text/plain, application/pdf
    body: bytes = field(repr=False)
    html: str = field(repr=False)  # the body decoded by Scrapy (headers, meta, BOM, sniffing)
    content_language: str
    fetched_at: datetime
    body_sha256: str  # what the page was, for "unchanged since the last crawl"
    # Set by the pipelines
    title: str = ""
    text: str = field(default="", repr=False)
    language: str = ""
    doc_id: str = ""  # sha256 of the cleaned text
