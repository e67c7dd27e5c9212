"""Quality filters in the spirit of Gopher (MassiveText), C4 and FineWeb, one step each.

Each step takes its thresholds as constructor arguments and drops a document under one
reason (`WordCount` under two); in a list, the first rule a text fails names it (the
crawler's list, in Gopher's order, is `crawler.steps.quality_steps`). The rules are written
for prose; verse passes because stanzas end in terminal punctuation often enough.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cached_property, lru_cache

from text.document import Document, Drop

STOPWORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's list
TERMINAL_PUNCT = tuple('.!?"\'\u201d\u2019)]:;\u2026')
# C4's boilerplate markers, plus the cookie and rights lines every site footer carries.
BOILERPLATE_LINE = re.compile(
    r"^.*\b(cookies?|javascript|privacy policy|terms of (use|service)|all rights reserved|"
    r"lorem ipsum|subscribe|sign up|log in)\b.*$", re.IGNORECASE | re.MULTILINE)
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
_LETTER = re.compile(r"[^\W\d_]")


class Reading:
    """The words, tokens and lines of a text, each split once however many filters ask."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def words(self) -> list[str]:
        return _WORD.findall(self.text)

    @cached_property
    def tokens(self) -> list[str]:
        return self.text.split()  # whitespace-separated, punctuation included

    @cached_property
    def lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]


@lru_cache(maxsize=1)  # the filters of one document run one after another
def reading(text: str) -> Reading:
    return Reading(text)


class Filter:
    """A quality step: keeps the document, or drops it for the reason `problem` names, with
    the measure that failed (`detail`, computed only for a drop)."""

    def __call__(self, doc: Document) -> Document:
        r = reading(doc.text)
        reason = self.problem(r)
        if reason:
            raise Drop(reason, self.detail(r))
        return doc

    def problem(self, r: Reading) -> str | None:
        raise NotImplementedError

    def detail(self, r: Reading) -> str:
        raise NotImplementedError


class WordCount(Filter):
    def __init__(self, min_words: int, max_words: int):
        self.min_words, self.max_words = min_words, max_words

    def problem(self, r: Reading) -> str | None:
        if len(r.words) < self.min_words:
            return "too_short"
        if len(r.words) > self.max_words:
            return "too_long"
        return None

    def detail(self, r: Reading) -> str:
        return f"{len(r.words)} words (from {self.min_words} to {self.max_words})"


class MeanWordLength(Filter):
    """Gibberish and run-together text are words too short or too long on average."""

    def __init__(self, min_mean: float, max_mean: float):
        self.min_mean, self.max_mean = min_mean, max_mean

    def problem(self, r: Reading) -> str | None:
        return None if self.min_mean <= self.mean(r) <= self.max_mean else "word_length"

    def mean(self, r: Reading) -> float:
        return sum(map(len, r.words)) / len(r.words) if r.words else 0.0

    def detail(self, r: Reading) -> str:
        return f"mean {self.mean(r):.2f} (from {self.min_mean} to {self.max_mean})"


class Stopwords(Filter):
    """Real sentences use a few of the commonest words."""

    def __init__(self, min_stopwords: int, stopwords: frozenset[str] = STOPWORDS):
        self.min_stopwords, self.stopwords = min_stopwords, stopwords

    def problem(self, r: Reading) -> str | None:
        return "no_stopwords" if len(self.found(r)) < self.min_stopwords else None

    def found(self, r: Reading) -> set[str]:
        return self.stopwords & set(map(str.lower, r.words))

    def detail(self, r: Reading) -> str:
        return f"{len(self.found(r))} of {len(self.stopwords)} stopwords (at least " \
               f"{self.min_stopwords})"


class Share(Filter):
    """A filter on a share of the text's tokens or lines (`share`): above `limit`, or with
    `at_least`, below it, the document goes under `reason`."""

    reason: str
    at_least = False

    def __init__(self, limit: float):
        self.limit = limit

    def problem(self, r: Reading) -> str | None:
        share = self.share(r)
        failed = share < self.limit if self.at_least else share > self.limit
        return self.reason if failed else None

    def share(self, r: Reading) -> float:
        raise NotImplementedError

    def detail(self, r: Reading) -> str:
        return f"{self.share(r):.3f} {'<' if self.at_least else '>'} {self.limit}"


def fraction(part: int, whole: int) -> float:
    """part / whole; 0.0 of nothing (a text without tokens or lines: on its own a filter
    must not fail on it with ZeroDivisionError, and WordCount drops it first in a list)."""
    return part / whole if whole else 0.0


class SymbolRatio(Share):
    reason = "symbols"  # hashtags and ellipses per token: tag clouds, truncated teasers

    def share(self, r: Reading) -> float:
        symbols = r.text.count("#") + r.text.count("...") + r.text.count("\u2026")
        return fraction(symbols, len(r.tokens))


class AlphabeticWords(Share):
    reason, at_least = "non_alphabetic", True  # tokens with a letter: numbers, code are not prose

    def share(self, r: Reading) -> float:
        # One search per token, not one regex over the text: on a long run of punctuation
        # `\S*[^\W\d_]\S*` backtracks quadratically.
        return fraction(sum(1 for token in r.tokens if _LETTER.search(token)), len(r.tokens))


class RepeatedLines(Share):
    reason = "repetition"  # lines that occur more than once: navigation, listings, spam

    def share(self, r: Reading) -> float:
        return fraction(sum(k for k in Counter(r.lines).values() if k > 1), len(r.lines))


class ShortLines(Share):
    reason = "short_lines"  # menus, lists of links and tag lines are many short lines

    def __init__(self, limit: float, min_length: int = 30):
        super().__init__(limit)
        self.min_length = min_length

    def share(self, r: Reading) -> float:
        return fraction(sum(1 for line in r.lines if len(line) < self.min_length), len(r.lines))


class TerminalPunctuation(Share):
    reason, at_least = "no_terminal_punctuation", True  # lines that end a sentence

    def share(self, r: Reading) -> float:
        return fraction(sum(1 for line in r.lines if line.endswith(TERMINAL_PUNCT)),
                        len(r.lines))


class BoilerplateLines(Share):
    reason = "boilerplate"  # cookie notices, rights lines, sign-up calls (C4)

    def share(self, r: Reading) -> float:
        # Linear: `^` fails at once but at a line's start, and there `.*` backtracks over
        # that line only, trying the words at each character.
        return fraction(len(BOILERPLATE_LINE.findall(r.text)), len(r.lines))
