"""What the crawl's worker processes do with a fetched page (the task of crawler/workers.py):
everything that parses it, so that the thread driving the downloads never does.

- a page: its body decoded (the BOM, Content-Type or <meta> charset, as Scrapy decodes;
  UTF-16 and UTF-32 included), its links (and a <meta> refresh) as canonical URLs, at most
  `max_links_per_page`, sent first; then, unless the page is unchanged since the last crawl,
  the extraction step and the stateless text steps (language, quality, personal data, the
  MinHash signature: crawler/steps.py `document_steps`): a document, or the reason and
  detail of its drop with its text (the crawl keeps a sample for audit). Dedup's index
  needs every document of the crawl and stays in the crawl.
- a sitemap: its type and locations.

A page that makes a step raise is the worker's `error` reply (crawler/workers.py): the
crawl drops it as `extract_error` and the worker goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from urllib.parse import urljoin

import lxml.etree
from scrapy.http import TextResponse
from scrapy.utils.response import get_base_url, get_meta_refresh
from scrapy.utils.sitemap import Sitemap

from crawler.config import CrawlConfig
from crawler.items import HTML_TYPES
from crawler.steps import document_steps
from crawler.urls import canonical_url
from text.document import Document, Drop
from text.extract import Extract, cap_attributes, extract_tree, parse_html
from text.language import identifier
from text.pii import ScrubPII

_LINKS = lxml.etree.XPath("//a[not(contains(concat(' ', normalize-space(@rel), ' '), "
                          "' nofollow '))]/@href")
_MAX_REFRESH_DELAY = 100  # seconds: Scrapy's METAREFRESH_MAXDELAY; longer is not a redirect


def start(setup: dict) -> Callable[[dict, bytes], Iterator[dict]]:
    """The handler for this worker's jobs, from the crawl's `[crawl]` settings."""
    config = CrawlConfig(**setup["crawl"])
    extract, steps, scrub = Extract(), document_steps(config), ScrubPII(config.pii_kinds)
    identifier()  # the language model, loaded once in the starter the workers share it from

    def handle(header: dict, body: bytes) -> Iterator[dict]:
        if header["kind"] == "sitemap":
            yield sitemap(body, header["url"])
            return
        response, body = decoded(header, body)
        tree = None
        if header["media_type"] in HTML_TYPES:
            # parsed once: the links are read before extraction changes the tree
            tree = parse_html(response.text)
            yield links(response, tree, config.max_links_per_page)
        if header["extract"]:
            yield document(header, body, response, tree, extract, steps, scrub)

    return handle


def decoded(header: dict, body: bytes) -> tuple[TextResponse | None, bytes]:
    """The page as Scrapy decodes it, and the body the text steps get: a UTF-16 or UTF-32
    body re-encoded as UTF-8 (its NUL bytes would read as binary). PDF stays bytes."""
    if header["media_type"] == "application/pdf":
        return None, body
    response = TextResponse(header["url"], headers={"Content-Type": header["content_type"]},
                            body=body)
    if response.encoding.replace("_", "-").lower().startswith(("utf-16", "utf-32")):
        body = response.text.encode("utf-8")
    return response, body


def links(response: TextResponse, tree, limit: int) -> dict:
    """The page's links in page order, each once, canonical (no fragment): the first
    `limit`, and how many more there were. `tree` is the page's from `parse_html`; when
    that is None (not quite HTML to trafilatura) the page is parsed leniently for them."""
    urls: dict[str, None] = {}
    delay, refresh = get_meta_refresh(response)
    if refresh and delay is not None and delay <= _MAX_REFRESH_DELAY:
        urls[canonical_url(refresh)] = None
    if tree is None:
        # libxml2 compares each attribute of a tag with the others: thousands in one tag
        # would take it minutes (text/extract.py `cap_attributes`)
        tree = lxml.etree.HTML(cap_attributes(response.text).encode("utf-8"),
                               lxml.etree.HTMLParser(recover=True, encoding="utf-8"))
    base = get_base_url(response)
    for href in _LINKS(tree) if tree is not None else ():
        href = href.split("#", 1)[0].strip()
        if href:  # "" or "#...": this same page
            try:
                urls[_resolved(base, href)] = None
            except ValueError:  # a malformed URL (a bad IPv6 literal, a bad port)
                continue
    found = list(urls)
    return {"links": found[:limit], "more_links": max(0, len(found) - limit)}


@lru_cache(maxsize=2**16)
def _resolved(base: str, href: str) -> str:
    # the navigation of a site repeats the same few hundred links on every page
    return canonical_url(urljoin(base, href))


def document(header: dict, body: bytes, response: TextResponse | None, tree, extract: Extract,
             steps: list, scrub: ScrubPII) -> dict:
    """The document's fields; for a drop, its reason and detail too (and the fields of what
    extraction found, if it found text, without its personal data: the record of drops keeps
    a sample of texts). `extracted` tells whether extraction found text."""
    doc = Document(url=header["url"], content_type=header["media_type"], body=body,
                   html=response.text if response is not None else "",
                   content_language=header["content_language"])
    extracted = False
    try:
        if tree is None:
            doc = extract(doc)
        else:  # the tree the links were read from
            extract.arguments(doc)  # a binary body is dropped all the same
            doc = extract.finish(doc, extract_tree(tree, header["url"]))
        extracted = True
        for step in steps:
            doc = step(doc)
    except Drop as drop:
        return {"drop": drop.reason, "detail": drop.detail, "extracted": extracted} | \
            ({"doc": fields(scrub(doc))} if extracted else {})
    return {"extracted": True, "doc": fields(doc)}


def fields(doc: Document) -> dict:
    """What the crawl needs of a document (a Document's keyword arguments; its signature in
    hex, empty for a drop)."""
    return {"title": doc.title, "text": doc.text, "doc_id": doc.doc_id,
            "language": doc.language, "language_score": doc.language_score,
            "declared_language": doc.declared_language, "pii": doc.pii,
            "minhash": doc.minhash.hex()}


def sitemap(body: bytes, url: str) -> dict:
    """{"type": urlset or sitemapindex, "urls": [...]}, or type None when it is not XML."""
    try:
        parsed = Sitemap(body)
        urls = {}
        for entry in parsed:
            # Locations should be absolute; relative ones are resolved, not dropped.
            try:
                urls[canonical_url(urljoin(url, entry["loc"]))] = None
            except ValueError:
                continue
    except (lxml.etree.XMLSyntaxError, StopIteration):  # not XML at all: no sitemap
        return {"type": None, "urls": []}
    return {"type": parsed.type, "urls": list(urls)}
