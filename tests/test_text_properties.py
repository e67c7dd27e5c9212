"""Property tests of each text step (text/) on generated inputs up to 1 MB: long runs of one
character, repeated lines, punctuation runs, tiny and huge words, mixed scripts, controls,
combining marks, hostile HTML and broken PDF files (text/bait.py has the named cases; each
is also an explicit example at 1 MB).

The bound. Every test asserts a bound on the step's output that does not depend on the
machine: sizes and counts, and the two quantities that drive a known super-linear cost, the
combining marks in a row after normalize_text (Unicode normalisation sorts them) and the
attributes of a parsed tag (libxml2 compares each with the others). The work itself cannot be
counted: the super-linear risks are inside C code (the `re` engine, unicodedata, lxml), which
offers no step counter, and a timed assertion would only measure the machine. So a hang
guard stands in for it (`hang_guard`): a test still running after GUARD_S seconds ends the
run with every thread's stack, generous for a busy machine and far below what a quadratic
step needs on these inputs (the old alphabetic filter: hours on 300 KB; NFC on 1 MB of
combining marks: 14 to 60 minutes; libxml2 on 400 KB of attributes in one tag: 44 s, here
capped at 3,000 attributes so that an escaped tag shows as a count, not a wait). The seconds
per MB are measured in benchmarks/text_steps.py and recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import re
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trafilatura.utils import load_html

from core.db import Database
from crawler.config import CrawlConfig
from crawler.steps import quality_steps
from text import bait
from text.dedup import (METADATA, SHINGLE, Dedup, DedupIndex, banding, shingle_hashes,
                        signature_of)
from text.document import Document, Drop, split_at_blank_lines
from text.language import MAX_CHARS, identify, known_languages
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

MB = 1_000_000
TEXT = Path(__file__).resolve().parent.parent / "data" / "text"
PROSE = (TEXT / "milton/areopagitica.txt").read_text(encoding="utf-8")
PARAGRAPHS = [p for p in PROSE.split("\n\n") if len(p) > 200][:40]

GUARD_S = 240  # the hang guard (see above)


@pytest.fixture(scope="session")
def real_stderr(pytestconfig):
    """The terminal's stderr, not pytest's capture of it (lost when the process ends)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")  # None under -p no:capture
    if capture:
        capture.suspend_global_capture()
    try:
        stream = os.fdopen(os.dup(2), "w")
    finally:
        if capture:
            capture.resume_global_capture()
    yield stream
    stream.close()


@pytest.fixture(autouse=True)
def hang_guard(real_stderr):
    """Print every thread's stack and end the run if a test takes GUARD_S seconds. Not
    pytest-timeout: its signal and its timer thread both wait for the GIL, which a regex
    or a normalisation running in C keeps; faulthandler's watchdog is a thread of C."""
    faulthandler.dump_traceback_later(GUARD_S, exit=True, file=real_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
PROPERTY = settings(max_examples=12, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

# Units a text is made of: the named bait, hostile characters, prose, anything.
UNITS = [unit for prefix, unit in bait.TEXT_UNITS.values() if unit] + [
    "-", ".", "'", "\u2019", "#", "\u2026", " ", "\t", "\n\n", "\r\n", "\r", "\x07", "\x1b",
    "\x7f", "\ufeff", "\u2028", "\u0344", "\u0301", "e\u0301", "\x00\u0301", "the ", "word. ",
    "Sign up. ", "\U0001f600"]
unit = st.one_of(st.sampled_from(UNITS), st.sampled_from(PARAGRAPHS), st.text(min_size=1,
                                                                             max_size=8))
# A run: a unit repeated to a drawn length, built in one multiplication whatever the size.
run = st.builds(bait.repeat, unit, st.integers(0, MB))
texts = st.lists(run, min_size=1, max_size=4).map(lambda runs: "".join(runs)[:MB])
BAIT_TEXTS = {name: bait.text_bait(name, MB) for name in bait.TEXT_UNITS} | {
    name: bait.repeat(pii, MB) for name, pii in bait.PII_UNITS.items()}


def with_bait(*rest, only=tuple(bait.TEXT_UNITS)):
    """The test also on each named bait text of 1 MB (then `rest`), every run."""
    def decorate(test):
        for name in only:
            test = example(BAIT_TEXTS[name], *rest)(test)
        return test
    return decorate


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


def reference_shingles(text: str) -> set[int]:
    """One shingle at a time in Python, as the definition reads (a text of fewer words
    than a shingle is one shingle)."""
    ids = [zlib.crc32(w.encode()) for w in re.findall(r"\w+", text.lower())]
    windows = [ids[i:i + SHINGLE] for i in range(max(1, len(ids) - SHINGLE + 1))]
    out = set()
    for window in windows:
        h = 0
        for i in window:
            h = (h * 1_000_003 + i) % 2**64
        out.add(h & 0xFFFFFFFF)
    return out


@PROPERTY
@given(texts.map(lambda t: t[:5000]))
def test_shingle_hashes_match_their_definition(text):
    assert set(shingle_hashes(text).tolist()) == reference_shingles(text)


@PROPERTY
@given(texts, st.sampled_from([16, 64, 128, 256]))
@with_bait(64, only=["prose", "distinct words", "many tiny words"])
def test_the_signature_is_datasketchs_minhash(text, num_perm):
    from datasketch import MinHash

    reference = MinHash(num_perm=num_perm, scheme="affine32", hashfunc=int)
    reference.update_batch(shingle_hashes(text).tolist())
    assert np.frombuffer(signature_of(text, num_perm), np.uint64).tolist() == \
        reference.hashvalues.tolist()


@pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
def test_the_banding_is_datasketchs(num_perm):
    from datasketch import MinHashLSH

    for threshold in np.arange(0.05, 1.0, 0.05):
        try:
            lsh = MinHashLSH(threshold=float(threshold), num_perm=num_perm)
        except ValueError:  # datasketch refuses a single band; a single band works here
            continue
        assert banding(float(threshold), num_perm) == (lsh.b, lsh.r), threshold


def new_index() -> DedupIndex:
    return DedupIndex(Database("", Path(":memory:"), METADATA), num_perm=64, threshold=0.8)


@PROPERTY
@given(texts)
@with_bait(only=["prose", "punctuation run", "one huge word", "many tiny words",
                 "distinct words", "repeated line", "mixed scripts"])
def test_dedup_marks_copies_and_bounds_its_signature(text):
    hashes = shingle_hashes(text)
    n_words = len(re.findall(r"\w+", text.lower()))
    # The bound: one hash per shingle at most, a signature of num_perm values whatever the text
    assert 1 <= len(hashes) <= max(1, n_words - SHINGLE + 1)
    assert np.all(np.diff(hashes.astype(np.int64)) > 0) and int(hashes.max()) < 2**32
    assert len(signature_of(text, 64)) == 64 * 8
    step = Dedup(new_index())
    doc = Document(text=text, doc_id=hashlib.sha256(text.encode()).hexdigest())
    assert step(doc) is doc
    for doc_id, reason in ((doc.doc_id, "duplicate_exact"), ("another id", "duplicate_near")):
        with pytest.raises(Drop) as drop:
            step(Document(text=text, doc_id=doc_id))
        assert drop.value.reason == reason
    assert list(step.index.claimed) == [doc.doc_id]  # the one claim, the copies refused


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
