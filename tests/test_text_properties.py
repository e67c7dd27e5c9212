"""Property tests of each text step (text/) on generated inputs up to 1 MB: long runs of one
character, repeated lines, punctuation runs, tiny and huge words, mixed scripts, controls,
combining marks, hostile HTML and broken PDF files (text/bait.py has the named cases; each
is also an explicit example at 1 MB). The inputs, the bound each test asserts and the hang
guard that stands in for a bound on the work: tests/propertykit.py. Dedup's:
tests/test_dedup_properties.py.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from propertykit import BAIT_TEXTS, MB, PARAGRAPHS, PROPERTY, UNITS, texts, unit, with_bait
from trafilatura.utils import load_html

from crawler.config import CrawlConfig
from crawler.steps import quality_steps
from text import bait
from text.document import Document, Drop, split_at_blank_lines
from text.language import MAX_CHARS, identifier, identify, known_languages
from text.pii import PLACEHOLDERS, scrub
from text.extract import (
    MAX_ATTRIBUTES,
    MAX_NON_STARTERS,
    Extract,
    cap_attributes,
    extract,
    normalize_text,
)
from text.quality import BOILERPLATE_LINE, Reading, Share

pytestmark = pytest.mark.usefixtures("hang_guard")  # the hang guard: tests/conftest.py

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")  # tab and CR too


IS_MARK = np.array([unicodedata.combining(chr(c)) > 0 for c in range(0x110000)])


def longest_mark_run(text: str) -> int:
    """The most combining marks in a row once decomposed (NFD is linear on a clean text)."""
    decomposed = unicodedata.normalize("NFD", text).encode("utf-32-le", "surrogatepass")
    code_points = np.frombuffer(decomposed, dtype=np.uint32)
    marks = np.concatenate(([False], IS_MARK[code_points], [False]))
    edges = np.flatnonzero(np.diff(marks.astype(np.int8)))  # starts and ends of runs
    return int((edges[1::2] - edges[::2]).max(initial=0))


@PROPERTY
@given(texts)
@with_bait()
def test_normalize_text_is_idempotent_and_clean(text):
    clean = normalize_text(text)
    assert normalize_text(clean) == clean
    assert not CONTROL.search(clean)
    assert unicodedata.is_normalized("NFC", clean)
    assert "\n\n\n" not in clean and "  " not in clean and clean == clean.strip()
    assert all(line == line.strip() for line in clean.split("\n"))
    # The bound: NFC can at most triple a text, and what normalisation costs is quadratic
    # only in a run of marks, which is cut (two marks per cut character at most).
    assert len(clean) <= 3 * len(text)
    assert longest_mark_run(clean) <= 2 * MAX_NON_STARTERS


KNOWN_REASONS = {"WordCount": {"too_short", "too_long"}, "MeanWordLength": {"word_length"},
                 "Stopwords": {"no_stopwords"}}
FILTERS = quality_steps(CrawlConfig())


@PROPERTY
@given(texts, st.booleans())
@with_bait(False)
@example("", False)
@example(" \n\t\n ", False)
def test_each_quality_filter_keeps_or_names_its_reason(text, normalized):
    if normalized:
        text = normalize_text(text)
    r = Reading(text)
    # The bound on the work the filters share: each split is at most one item per character
    assert len(r.words) <= len(text) and sum(map(len, r.words)) <= len(text)
    assert len(r.tokens) <= len(text) and len(r.lines) <= text.count("\n") + 1
    for step in FILTERS:
        name = type(step).__name__
        reasons = KNOWN_REASONS.get(name) or {step.reason}
        doc = Document(text=text)
        try:
            assert step(doc) is doc and doc.text == text
        except Drop as drop:
            assert drop.reason in reasons, (name, drop.reason)
        if isinstance(step, Share):
            share = step.share(r)
            assert 0.0 <= share and (name == "SymbolRatio" or share <= 1.0), (name, share)


@PROPERTY
@given(st.lists(st.one_of(st.sampled_from(PARAGRAPHS), texts.map(lambda t: t[:2000]),
                          st.sampled_from(["We use cookies.", "All Rights Reserved",
                                           "Log in or sign up", "cookiesx", "subscribe"])),
                max_size=50).map("\n".join))
@with_bait()
def test_boilerplate_counts_the_lines_with_a_marker(text):
    # The one regex over the text counts what a search line by line counts.
    marker = re.compile(BOILERPLATE_LINE.pattern[3:-3], re.IGNORECASE)
    assert len(BOILERPLATE_LINE.findall(text)) == sum(
        1 for line in text.split("\n") if marker.search(line))


@PROPERTY
@given(texts)
@example(bait.text_bait("controls", MB))
def test_extract_plain_text_is_its_normal_form(text):
    extracted = extract("text/plain", b"", text, "http://x/")
    clean = normalize_text(text)
    if not clean:
        assert extracted is None
    else:
        assert extracted.text == clean and extracted.title == clean.split("\n")[0][:200]


TAGS = ["div", "span", "p", "b", "li", "td", "a", "article", "main", "table", "script"]
element = st.builds(lambda tag, depth, inner, closed: f"<{tag}>" * depth + inner
                    + (f"</{tag}>" * depth if closed else ""),
                    st.sampled_from(TAGS), st.integers(0, 30_000),
                    st.one_of(st.sampled_from(PARAGRAPHS), texts.map(lambda t: t[:20_000])),
                    st.booleans())
links = st.builds(lambda n, li: "".join((f'<li><a href="/p{i}">link {i}</a></li>' if li else
                                         f'<a href="/{i}">page {i}</a> ') for i in range(n)),
                  st.integers(0, 20_000), st.booleans())
pages = st.builds(lambda title, parts: f"<html><head><title>{title}</title></head><body>"
                  + "".join(parts)[:MB] + "</body></html>",
                  st.text(max_size=50), st.lists(st.one_of(element, links), max_size=4))


@settings(PROPERTY, max_examples=8)
@given(pages)
@example(bait.html_bait("deep nesting", 30_000 * 12))
@example(bait.html_bait("inline links", 20_000 * 30))
@example(bait.html_bait("list of links", MB))
@example(bait.html_bait("broken markup", MB))
def test_extract_html_gives_clean_text_or_nothing(html):
    extracted = extract("text/html", b"", html, "http://x/")
    if extracted is not None:
        assert extracted.text and normalize_text(extracted.text) == extracted.text
        assert normalize_text(extracted.title) == extracted.title
        assert len(extracted.text) <= 3 * len(html)  # the bound: text comes from the page
    doc = Document(url="http://x/", content_type="text/html", body=html.encode(), html=html)
    try:
        Extract()(doc)
    except Drop as drop:
        assert drop.reason in {"binary", "no_text"}
    else:
        assert doc.doc_id == hashlib.sha256(doc.text.encode()).hexdigest()
        assert doc.language in {"und", "en"} or re.fullmatch("[a-z]{2,3}", doc.language)
        assert not doc.body and not doc.html


BOMB = bait.flate_bomb(100 * MB)  # 100 MB of spaces in 100 KB: past pypdf's limit
# Pieces a hostile page puts around a tag of many attributes, to hide it from a scan that
# reads the page otherwise than libxml2: comments, raw text, stray quotes and brackets.
PIECES = ["<div ", "<p>", "</p ", "<script>", "</script>", "<title>", "</title >", "<!--", "-->",
          "--!>", "<!-->", "<![CDATA[", "]]>", "<?", "<textarea>", "</textarea>", "<noscript>",
          "<svg>", "<plaintext>", '"', "'", ">", "<", "/", " ", "=", "a", "\n", "\xa0", "\x00"]
attribute_runs = st.builds(
    lambda n, sep, value: sep.join(f"a{i}{value}" for i in range(n)),
    st.integers(0, 3000), st.sampled_from([" ", "/", "\n", ""]),
    st.sampled_from(['="v"', "='>'", "=v", "", '=">"', "=\"<div \""]))
hostile_markup = st.lists(st.one_of(st.sampled_from(PIECES), attribute_runs),
                          max_size=12).map("".join)


@settings(PROPERTY, max_examples=40)
@given(hostile_markup)
@example("<div " + " ".join(f'a{i}="v"' for i in range(3000)) + ">")
@example('<!-- <x a=" --> <div ' + " ".join(f"a{i}='>'" for i in range(3000)) + ">")
def test_no_parsed_tag_keeps_more_than_max_attributes(markup):
    # The bound on libxml2's work, which compares each attribute of a tag with the others.
    page = f"<html><body>{markup}</body></html>"
    capped = cap_attributes(page)
    assert cap_attributes(capped) == capped and len(capped) <= len(page)
    tree = load_html(capped)
    if tree is not None:
        assert max(len(e.attrib) for e in tree.iter()) <= MAX_ATTRIBUTES


GOOD_PDF = bait.pdf_document([b"BT /F1 12 Tf 72 720 Td (A page of plain prose.) Tj ET",
                              b"BT /F1 12 Tf 72 720 Td (And a second page.) Tj ET"])
HOSTILE = [b"[" * 50_000, b"<< /A " * 20_000, b"/Length 99999999999", b"/Filter /NoSuch",
           b"/Count 999999999", b"/Kids [1 0 R]", b"/Encrypt << /Filter /Standard /V 1 >>",
           b"stream\n", b"endobj", b"xref", b"\x00" * 100, b"(" * 10_000, b"9999999 0 R"]
mutation = st.one_of(
    st.builds(lambda at: ("truncate", at, b""), st.floats(0, 1)),
    st.builds(lambda at, junk: ("overwrite", at, junk), st.floats(0, 1), st.binary(max_size=64)),
    st.builds(lambda at, junk: ("insert", at, junk), st.floats(0, 1),
              st.one_of(st.sampled_from(HOSTILE), st.binary(max_size=64))))


def mutated(pdf: bytes, mutations) -> bytes:
    for kind, at, junk in mutations:
        i = int(at * len(pdf))
        pdf = (pdf[:i] if kind == "truncate" else
               pdf[:i] + junk + pdf[i + len(junk):] if kind == "overwrite" else
               pdf[:i] + junk + pdf[i:])
    return pdf


PDFS = {"good": GOOD_PDF, "flate bomb": BOMB} | {
    name: bait.pdf_bait(name, 20_000) for name in bait.PDF_UNITS}
PDFS_1MB = {"text operators, 1 MB": bait.pdf_bait("text operators", MB)}


@settings(PROPERTY, max_examples=25)
@given(st.sampled_from(sorted(PDFS)), st.lists(mutation, max_size=4))
@example("text operators, 1 MB", [])
@example("flate bomb", [])
@example("good", [("overwrite", 0.5, b"/Filter /NoSuchFilter")])
def test_extract_pdf_never_raises_on_a_broken_file(name, mutations):
    """Named, so that a failing example reads as a name and its mutations."""
    pdf = (PDFS | PDFS_1MB)[name]
    extracted = extract("application/pdf", mutated(pdf, mutations), "", "http://x/")
    if extracted is not None:
        assert extracted.text and normalize_text(extracted.text) == extracted.text
    if name == "good" and not mutations:
        assert extracted.text == "A page of plain prose.\n\nAnd a second page."


@PROPERTY
@given(texts, st.integers(1, 2 * MB))
@with_bait(50_000)
@example("\n\n" * 1000, 10)
def test_split_at_blank_lines_keeps_order_and_size(text, size):
    docs = split_at_blank_lines(text, size)
    # Each document took at least `size` characters of the text and its separators; what is
    # left was too short for one more.
    assert len(docs) <= (len(text) + 2) // size
    if not docs:
        assert len(text) + 2 < size
    assert sum(map(len, docs)) <= len(text)
    at = 0
    for doc in docs:  # each a piece of the text, in order, none overlapping
        found = text.find(doc, at)
        assert found >= 0 and doc == doc.strip()
        at = found + len(doc)


# Personal data: the units of addresses and numbers, and real ones among them.
PII_UNITS = [*UNITS, *bait.PII_UNITS.values(), "jane.doe@example.org ", "93.184.216.34 ",
             "2a00:1450::200e ", "+44 20 7946 0958 ", "(555) 123-4567 ", "3.11.7 ", "2026-12-01 "]
pii_texts = st.lists(st.builds(bait.repeat, st.one_of(st.sampled_from(PII_UNITS), unit),
                               st.integers(0, MB)), min_size=1, max_size=4).map(
    lambda runs: "".join(runs)[:MB])


@PROPERTY
@given(pii_texts)
@with_bait(only=tuple(BAIT_TEXTS))  # the personal data patterns' bait too
def test_scrubbing_replaces_each_find_once_and_leaves_nothing_to_find(text):
    clean, counts = scrub(text)
    assert scrub(clean) == (clean, {})  # idempotent: nothing it would replace is left
    for kind, placeholder in PLACEHOLDERS.items():
        assert clean.count(placeholder) == text.count(placeholder) + counts.get(kind, 0)
    # The bound: every replaced match is at least 6 characters (a@b.cc) and its placeholder
    # at most one more, so the text grows by at most a character a match.
    assert sum(counts.values()) <= len(text) / 6
    assert len(clean) <= len(text) + counts.get("email", 0)


@PROPERTY
@given(texts)
@with_bait()
@example("")
def test_language_is_a_known_code_from_a_bounded_sample(text):
    language, score = identify(text)
    assert language in known_languages() | {"und"} and 0.0 <= score <= 1.0
    assert identify(text[:MAX_CHARS]) == (language, score)  # the bound: the sample it reads


@lru_cache(maxsize=1)
def py3langid_as_it_ships():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@PROPERTY
@given(st.one_of(texts.map(lambda text: text[:MAX_CHARS]),
                 st.binary(max_size=2000).map(lambda raw: raw.decode("latin-1"))))
@with_bait()
@example("")
@example("a")
def test_the_numpy_walk_scores_as_py3langid_s_own_loop(text):
    """text/language.py walks py3langid's automaton in numpy (a text of 1,000 bytes or more)
    or in py3langid's loop over the mapped tables: the same language and the same
    probability, to the last bit, as py3langid as it ships on the same text."""
    text = text[:MAX_CHARS]
    assert identifier().classify(text) == py3langid_as_it_ships().classify(text)
