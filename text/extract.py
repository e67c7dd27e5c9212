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
from itertools import chain, islice

import trafilatura
from lxml.html import HtmlElement
from trafilatura.utils import load_html

from text import discard
from text.document import Document, Drop

# The options the crawler extracts with; the benchmark uses the same ones.
TRAFILATURA_OPTIONS = dict(
    fast=True,  # no readability/justext fallback: 2-3x faster, little lost on real pages
    include_comments=False,
    include_tables=True,
    include_links=False,
    include_images=False,
    # trafilatura's metadata (dates, authors, ...) costs more than the text itself; the
    # title comes from <title>, the declared language from <html lang>.
    with_metadata=False,
    deduplicate=False,  # duplicates are the dedup stage's job, across the whole crawl
    # ARIA landmarks that are never main text, whatever trafilatura's heuristics make of
    # them (Sphinx, for one, marks its sidebars and navigation bars this way).
    prune_xpath=[f"//*[@role='{role}']" for role in
                 ("navigation", "search", "banner", "contentinfo", "complementary")],
)

_LANG = re.compile(rb"<html[^>]*\blang=[\"']?([a-zA-Z]{2,3})", re.IGNORECASE)
# C0 (but tab, newline, CR), DEL, C1, zero-width space, byte-order mark
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_CONTROL_BYTES = bytes([*range(9), *range(14, 32)])  # not tab, newline, CR, form feed


@dataclass
class Extracted:
    title: str
    text: str


def _non_starters() -> re.Pattern:
    """Runs of more than MAX_NON_STARTERS characters that decompose into combining marks
    (canonical combining class not 0): Unicode puts all of them below U+20000 or in plane
    14; U+0F73, U+0F75 and U+0F81 are of class 0 but decompose into two marks each."""
    code_points = [c for c in chain(range(0x20000), range(0xE0000, 0xE1000))
                   if unicodedata.combining(chr(c))] + [0x0F73, 0x0F75, 0x0F81]
    ranges: list[list[int]] = []
    for c in sorted(code_points):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    members = "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "")
                      for a, b in ranges)
    return re.compile(f"[{members}]{{{MAX_NON_STARTERS + 1},}}")


# Unicode's stream-safe limit (UAX #15): no real text stacks more marks on one character.
# CPython's normalisation sorts a run of marks by insertion, quadratic in its length (200 KB
# of U+0F73 took 150 s), so longer runs are cut to this before NFC.
MAX_NON_STARTERS = 30
_NON_STARTERS = _non_starters()
# Marks are not ASCII: a run of them lies inside a run of non-ASCII characters as long, which
# this far smaller class finds several times faster (most text is mostly ASCII).
_LONG_NON_ASCII = re.compile(f"[^\\x00-\\x7f]{{{MAX_NON_STARTERS + 1},}}")


def _cut_mark_runs(text: str) -> str:
    return _LONG_NON_ASCII.sub(lambda run: _NON_STARTERS.sub(
        lambda marks: marks.group()[:MAX_NON_STARTERS], run.group()), text)


def normalize_text(text: str) -> str:
    """NFC, no control or zero-width characters, single spaces, at most one blank line,
    at most MAX_NON_STARTERS combining marks in a row. Linear in the text, and idempotent:
    controls go before NFC (one between a letter and its accent would block composing them
    until a second pass), and runs of marks are cut again after it (U+0344 and the Tibetan
    vowels decompose into two marks each)."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _cut_mark_runs(unicodedata.normalize("NFC", _cut_mark_runs(text)))
    lines = [line.strip() for line in _SPACES.sub(" ", text).split("\n")]
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


# libxml2 (2.14) compares each attribute of a tag with all the others: 40,000 distinct ones in
# one tag (400 KB) took 44 s to parse. Tags with more than MAX_ATTRIBUTES lose the rest
# before parsing (no real page comes near). To find the tags as libxml2 does, its HTML5
# tokenizer is followed: comments, bogus comments and doctypes, the raw text of script,
# style and the like, then start and end tags with their attributes (separated by HTML
# whitespace or '/', or following a quoted value). Should some construct be read otherwise,
# the crawl's per-page extraction time limit is what ends the parse.
MAX_ATTRIBUTES = 100
_WS = "\t\n\f\r "
_ATTRIBUTE = (f"[{_WS}/]*+[^{_WS}/>][^{_WS}/>=]*+"
              f"(?:[{_WS}]*+=[{_WS}]*+(?:\"[^\"]*+\"?|'[^']*+'?|[^{_WS}>]*+))?+")
_RAW = "script|style|textarea|title|xmp|iframe|noembed|noframes|plaintext"
_MARKUP = re.compile(  # "<" first, so that re skips to the next "<" (twice as fast)
    f"<(?:!--(?:-?>|.*?(?:--!?>|\\Z))|[!?][^>]*+>?|/(?![a-z])[^>]*+>?"  # comments
    f"|(?:(?=(?P<raw>{_RAW})[{_WS}/>]))?"  # a tag, and the raw text after some start tags
    f"/?[a-z][^{_WS}/>]*+(?P<attributes>(?:{_ATTRIBUTE})*+)"
    f"(?(raw)[{_WS}/]*+>.*?(?:</(?P=raw)(?=[{_WS}/>])|\\Z)))", re.IGNORECASE | re.DOTALL)
_ATTRIBUTES = re.compile(_ATTRIBUTE)


def cap_attributes(html: str) -> str:
    """The page with at most MAX_ATTRIBUTES attributes a tag (linear, unchanged if none has
    more)."""
    parts, done = [], 0
    for tag in _MARKUP.finditer(html):
        start, end = tag.span("attributes")
        if end - start < 2 * MAX_ATTRIBUTES:  # each attribute but one takes 2 characters
            continue
        attributes = _ATTRIBUTES.finditer(html, start, end)
        kept = list(islice(attributes, MAX_ATTRIBUTES))
        if len(kept) == MAX_ATTRIBUTES and next(attributes, None) is not None:
            parts.append(html[done:kept[-1].end()])
            done = end
    return "".join(parts) + html[done:] if parts else html


def parse_html(html: str) -> HtmlElement | None:
    """The page's tree as trafilatura reads it (None: not HTML at all), its tags capped at
    MAX_ATTRIBUTES. The crawl's workers take the page's links from this same tree."""
    return load_html(cap_attributes(html))


def extract_html(html: str, url: str) -> Extracted | None:
    return extract_tree(parse_html(html), url)


def extract_tree(tree: HtmlElement | None, url: str) -> Extracted | None:
    """The document in a tree of `parse_html` (which trafilatura changes: read it first)."""
    if tree is None:
        return None
    title = tree.findtext(".//title") or ""
    doc = trafilatura.bare_extraction(tree, url=url, **TRAFILATURA_OPTIONS)
    if doc is None or not doc.text:
        return None
    return Extracted(title=normalize_text(title), text=normalize_text(doc.text))


def extract_pdf(body: bytes) -> Extracted | None:
    from pypdf import PdfReader  # here: 70 ms of every extraction worker's start otherwise

    try:
        reader = PdfReader(io.BytesIO(body))
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception:  # noqa: BLE001 - pypdf on a broken file raises anything: its own
        # PdfReadError and LimitReachedError (a decompression bomb, a huge array),
        # NotImplementedError (an unknown filter), ValueError, KeyError, RecursionError, ...
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
    (<html lang>, else Content-Language: text/language.py identifies the real one) and
    `doc_id`, the sha256 of the text. Drops a body that is really binary (`binary`) and a
    page without text (`no_text`).

    Calling it extracts in this process. A caller with worker processes runs it in parts:
    `extract(*step.arguments(doc))` in a worker, then `step.finish(doc, extracted)`.

    Making one sets up the process for extraction: trafilatura's boilerplate expressions
    are evaluated in Python from then on (text/discard.py): the same text, 1.8x as fast.
    """

    def __init__(self) -> None:
        discard.install()

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
        doc.declared_language = html_language(doc.body, doc.content_language)
        doc.body, doc.html = b"", ""  # the raw page is not needed further: free it early
        doc.doc_id = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
        return doc
