"""Quality filters in the spirit of Gopher (MassiveText), C4 and FineWeb.

`quality_problem(text, config)` names the first rule a text fails, or returns None. Every
threshold is a `[crawl]` setting. The rules are written for prose; verse passes because
stanzas end in terminal punctuation often enough.
"""

from __future__ import annotations

import re
from collections import Counter

from crawler.config import CrawlConfig

STOPWORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}  # Gopher's list
TERMINAL_PUNCT = tuple('.!?"\'\u201d\u2019)]:;\u2026')
# C4's boilerplate markers, plus the cookie and rights lines every site footer carries.
BOILERPLATE_LINE = re.compile(
    r"^.*\b(cookies?|javascript|privacy policy|terms of (use|service)|all rights reserved|"
    r"lorem ipsum|subscribe|sign up|log in)\b.*$", re.IGNORECASE | re.MULTILINE)
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
_ALPHA_TOKEN = re.compile(r"\S*[^\W\d_]\S*")  # a whitespace-separated token with a letter


def quality_problem(text: str, c: CrawlConfig) -> str | None:
    words = _WORD.findall(text)
    n = len(words)
    if n < c.min_words:
        return "too_short"
    if n > c.max_words:
        return "too_long"
    mean = sum(map(len, words)) / n
    if not c.min_mean_word_length <= mean <= c.max_mean_word_length:
        return "word_length"
    tokens = text.split()
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    if symbols / len(tokens) > c.max_symbol_ratio:
        return "symbols"
    if len(_ALPHA_TOKEN.findall(text)) / len(tokens) < c.min_alpha_word_ratio:
        return "non_alphabetic"
    if len(STOPWORDS & set(map(str.lower, words))) < c.min_stopwords:
        return "no_stopwords"
    lines = [line for line in text.split("\n") if line.strip()]
    counts = Counter(lines)
    duplicate_lines = sum(k for k in counts.values() if k > 1)
    if duplicate_lines / len(lines) > c.max_duplicate_line_ratio:
        return "repetition"
    if sum(1 for line in lines if line.endswith(TERMINAL_PUNCT)) / len(lines) < c.min_terminal_punct_ratio:
        return "no_terminal_punctuation"
    if sum(1 for line in lines if len(line) < 30) / len(lines) > c.max_short_line_ratio:
        return "short_lines"
    if len(BOILERPLATE_LINE.findall(text)) / len(lines) > c.max_boilerplate_line_ratio:
        return "boilerplate"
    return None
