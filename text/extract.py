"""Main text and title of a fetched page: HTML through trafilatura, plain text, PDF.

`Extract` is the step (a fetched page in, a document with its text out); `extract` is the
work itself, a function of plain data so that it can run in other processes (the crawl
extracts in worker processes beside its event loop, see crawler/pipelines.py).
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass

import trafilatura
from pypdf import PdfReader
from pypdf.errors import PdfReadError
from trafilatura.utils import load_html

from text.document import Document, Drop

# The options the crawler extracts with; the benchmark uses the same ones.
TRAFILATURA_OPTIONS = dict(
    fast=True,  # no readability/justext fallback: 2-3x faster, little lost on real pages
    include_comments=False,
    include_tables=True,
    include_links=False,
    include_images=False,
    # trafilatura's metadata (dates, authors, ...) costs more than the text itself; the
    # title comes from <title> and the language from <html lang>.
    with_metadata=False,
    deduplicate=False,  # duplicates are the dedup stage's job, across the whole crawl
    # ARIA landmarks that are never main text, whatever trafilatura's heuristics make of
    # them (Sphinx, for one, marks its sidebars and navigation bars this way).
    prune_xpath=[f"//*[@role='{role}']" for role in
                 ("navigation", "search", "banner", "contentinfo", "complementary")],
)

_LANG = re.compile(rb"<html[^>]*\blang=[\"']?([a-zA-Z]{2,3})", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_CONTROL_BYTES = bytes([*range(9), *range(14, 32)])  # not tab, newline, CR, form feed


@dataclass
class Extracted:
    title: str
    text: str


def normalize_text(text: str) -> str:
    """NFC, no control or zero-width characters, single spaces, at most one blank line."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def looks_binary(body: bytes) -> bool:
    """A body that is not text whatever its Content-Type says (NUL bytes, control bytes)."""
    head = body[:4096]
    if b"\x00" in head:
        return True
    control = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return control > len(head) * 0.05


def html_language(body: bytes, content_language: str = "") -> str:
    """The <html lang> or Content-Language primary subtag; 'und' (undetermined) if neither."""
    match = _LANG.search(body[:4096])
    if match:
        return match.group(1).decode("ascii").lower()
    if content_language:
        return content_language.split(",")[0].split("-")[0].strip().lower() or "und"
    return "und"


def extract(content_type: str, body: bytes, html: str, url: str) -> Extracted | None:
    """The document in a page by its media type; None when it has no text. Runs in the
    extraction worker processes, so it takes and returns plain data."""
    if content_type == "application/pdf":
        return extract_pdf(body)
    if content_type == "text/plain":
        return extract_plain(html)
    return extract_html(html, url)


def extract_html(html: str, url: str) -> Extracted | None:
    tree = load_html(html)
    if tree is None:
        return None
    title = tree.findtext(".//title") or ""
    doc = trafilatura.bare_extraction(tree, url=url, **TRAFILATURA_OPTIONS)
    if doc is None or not doc.text:
        return None
    return Extracted(title=normalize_text(title), text=normalize_text(doc.text))


def extract_pdf(body: bytes) -> Extracted | None:
    try:
        reader = PdfReader(io.BytesIO(body))
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError):
        return None
    text = normalize_text(text)
    return Extracted(title=normalize_text(str(title)), text=text) if text else None


def extract_plain(text: str) -> Extracted | None:
    text = normalize_text(text)
    if not text:
        return None
    first_line = text.split("\n", 1)[0]
    return Extracted(title=first_line[:200], text=text)


class Extract:
    """The step: title and main text of a fetched page, normalised, its declared language
    (<html lang>, else Content-Language) and `doc_id`, the sha256 of the text. Drops a body
    that is really binary (`binary`) and a page without text (`no_text`).

    Calling it extracts in this process. A caller with worker processes runs it in parts:
    `extract(*step.arguments(doc))` in a worker, then `step.finish(doc, extracted)`.
    """

    def __call__(self, doc: Document) -> Document:
        return self.finish(doc, extract(*self.arguments(doc)))

    def arguments(self, doc: Document) -> tuple[str, bytes, str, str]:
        """What `extract` needs of the page."""
        if looks_binary(doc.body):
            raise Drop("binary")
        # Only PDF needs the raw bytes; HTML and text travel decoded.
        body = doc.body if doc.content_type == "application/pdf" else b""
        return doc.content_type, body, doc.html, doc.url

    def finish(self, doc: Document, extracted: Extracted | None) -> Document:
        if extracted is None or not extracted.text:
            raise Drop("no_text")
        doc.title, doc.text = extracted.title, extracted.text
        doc.language = html_language(doc.body, doc.content_language)
        doc.body, doc.html = b"", ""  # the raw page is not needed further: free it early
        doc.doc_id = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
        return doc
