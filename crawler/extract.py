"""Main text and title of a fetched page: HTML through trafilatura, plain text, PDF."""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass

import trafilatura
from pypdf import PdfReader
from pypdf.errors import PdfReadError
from trafilatura.utils import load_html

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
