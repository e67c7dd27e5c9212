"""Inputs built to be slow: for each text step, texts, pages and PDF files of a chosen size
on which a super-linear implementation shows (a run of punctuation once made the quality
filters quadratic; a run of combining marks made NFC quadratic). Plain data, no step runs
here: the benchmark (benchmarks/text_steps.py) times the steps on them, the property tests
(tests/propertykit.py) draw from them, and a hostile test site can serve them.

    text_bait("punctuation run", 1_000_000)      # 1 MB of "="
    html_bait("deep nesting", 1_000_000)         # a page of that size
    pdf_bait("text operators", 1_000_000)        # a valid PDF with a 1 MB content stream
"""

from __future__ import annotations

import zlib

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away. "

# Each a unit repeated to the size asked (after `prefix`): what it is bait for.
TEXT_UNITS: dict[str, tuple[str, str]] = {
    "punctuation run": ("", "="),  # regexes of \S* and \w (the old alphabetic filter)
    "one huge word": ("", "a"),  # word splitting, mean word length
    "apostrophe chain": ("", "a'"),  # the word regex's optional ('\w+)* group
    "many tiny words": ("", "a "),  # tokens, shingles: one Python object each
    "distinct words": ("", ""),  # shingles of distinct words: MinHash's batch
    "repeated line": ("", "The same line of the page, over and over.\n"),  # Counter of lines
    "blank lines": ("", "\n"),  # line splitting, blank-line collapsing
    "spaces and tabs": ("x", " \t\u00a0\u3000"),  # space collapsing
    "boilerplate keyword": ("", "cookies "),  # BOILERPLATE_LINE on one long line
    "keyword prefixes": ("", "coo"),  # BOILERPLATE_LINE trying the words everywhere
    "marks on one letter": ("a", "\u0316\u0301"),  # NFC's sort of combining marks
    "tibetan vowels": ("", "\u0f73"),  # NFC: each decomposes into two marks
    "controls": ("x", "\x00\u200b\x85"),  # control removal
    "mixed scripts": ("", "abc \u4e00\u05d0\u0627 \U0001f600 e\u0301 "),
    "hashes and ellipses": ("", "#..."),  # the symbol ratio
    "prose": ("", SENTENCE),
}


# Bait for the personal data patterns (text/pii.py): runs of what an address or a number is
# made of, where a pattern tried at every position would backtrack over the whole run.
PII_UNITS: dict[str, str] = {
    "dotted numbers": "1.",  # IPv4 octets
    "dotted words": "a.",  # e-mail local parts and domains
    "at signs": "a@",  # e-mail: an @ everywhere, never a domain
    "domain labels": "a@a.",
    "long labels": "@" + "a" * 70 + ".",  # labels past their 63 characters
    "colons": "1:",  # IPv6 groups
    "hex groups": "2001:db8::",
    "phone groups": "+1 ",  # international groups
    "trunk groups": "01 ",  # national numbers with a trunk 0
    "area codes": "(12) ",
    "hyphens": "1-1-",
}


def repeat(unit: str, size: int) -> str:
    """`unit` repeated to exactly `size` characters."""
    return (unit * (size // len(unit) + 1))[:size] if unit else ""


def text_bait(name: str, size: int) -> str:
    """The named adversarial text, `size` characters long."""
    prefix, unit = TEXT_UNITS[name]
    if name == "distinct words":
        words, total, i = [], 0, 0
        while total < size:  # base-26 numbers spelt in letters: every word different
            word, n = "", i
            while True:
                word, n = chr(97 + n % 26) + word, n // 26
                if not n:
                    break
            words.append(word)
            total, i = total + len(word) + 1, i + 1
        return " ".join(words)[:size]
    return prefix + repeat(unit, size - len(prefix))


# Each a function of a count: the page's body, about that many units of markup.
def _nesting(n: int) -> str:
    return "<div>" * n + f"<p>{SENTENCE * 20}</p>" + "</div>" * n


HTML_UNITS = {
    "deep nesting": (12, _nesting),  # 30,000 levels in 360 KB: lxml's depth limit
    "unclosed nesting": (6, lambda n: "<span>" * n + f"<p>{SENTENCE * 20}</p>"),
    "inline links": (30, lambda n: "".join(f'<a href="/p{i}">link {i}</a> ' for i in range(n))),
    "list of links": (40, lambda n: "<ul>" + "".join(f'<li><a href="/p{i}">link {i}</a></li>'
                                                        for i in range(n)) + "</ul>"),
    "table cells": (23, lambda n: "<table>" + "<tr><td>cell text</td><td>more text</td></tr>"
                    * (n // 2) + "</table>"),
    "paragraphs": (len(SENTENCE) + 7, lambda n: "".join(f"<p>{i} {SENTENCE}</p>"
                                                        for i in range(n))),
    "attributes": (10, lambda n: "<div " + " ".join(f'a{i}="v"' for i in range(n))
                   + f"><p>{SENTENCE * 20}</p></div>"),
    "broken markup": (15, lambda n: "<p>" + "<b <i a=\"'>&amp" * n + SENTENCE + "</p>"),
}


def html_bait(name: str, size: int) -> str:
    """The named adversarial page, about `size` bytes: a paragraph of prose around a body
    of hostile markup."""
    bytes_per_unit, body = HTML_UNITS[name]
    prose = f"<p>{SENTENCE * 20}</p>"
    return (f'<html lang="en"><head><title>Bait: {name}</title></head><body>{prose}'
            f"{body(max(1, size // bytes_per_unit))}{prose}</body></html>")


def pdf_document(contents: list[bytes], extra: bytes = b"") -> bytes:
    """A valid PDF of one page per content stream (Helvetica as /F1), with a correct
    cross-reference table; `extra` goes into the catalog."""
    n = len(contents)
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R %s>>" % extra,
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, content in enumerate(contents):
        objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                    b"/Resources << /Font << /F1 3 0 R >> >> >>" % (5 + 2 * i),
                    b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def _text_stream(unit: bytes, size: int) -> list[bytes]:
    return [b"BT /F1 12 Tf 72 720 Td " + unit * max(1, size // len(unit)) + b" ET"]


PDF_UNITS = {
    "text operators": lambda size: _text_stream(b"(ab) Tj ", size),
    "moves": lambda size: _text_stream(b"1 0 Td (a) Tj ", size),
    "one huge string": lambda size: [b"BT /F1 12 Tf (" + b"a" * size + b") Tj ET"],
    "many pages": lambda size: [b"BT /F1 12 Tf (page) Tj ET"] * max(1, size // 256),
    "unbalanced operators": lambda size: [b"BT q " * max(1, size // 5)],
}


def pdf_bait(name: str, size: int) -> bytes:
    """The named adversarial PDF file, about `size` bytes, valid as a file."""
    return pdf_document(PDF_UNITS[name](size))


def flate_bomb(size: int) -> bytes:
    """A PDF whose one content stream inflates to `size` bytes (pypdf refuses past its
    limit, LimitReachedError)."""
    data = zlib.compress(b"BT /F1 12 Tf (a) Tj ET\n" + b" " * size, 9)
    return pdf_document([data]).replace(b"/Length %d >>" % len(data),
                                        b"/Length %d /Filter /FlateDecode >>" % len(data))
