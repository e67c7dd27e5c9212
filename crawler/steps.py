"""The crawler's text steps (text/), built from its `[crawl]` configuration: the same list
runs in a crawl (crawler/parsing.py in its workers, crawler/pipelines.py for dedup) and over
shards already written.

    steps = Steps(text_steps(crawl, index))    # language, quality, personal data, dedup
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crawler.config import CrawlConfig
from text.document import Step
from text.language import Language
from text.minhash import Signature
from text.pii import ScrubPII
from text.quality import (
    AlphabeticWords,
    BoilerplateLines,
    MeanWordLength,
    RepeatedLines,
    ShortLines,
    Stopwords,
    SymbolRatio,
    TerminalPunctuation,
    WordCount,
)

if TYPE_CHECKING:
    from text.dedup import DedupIndex


def quality_steps(c: CrawlConfig) -> list[Step]:
    """The quality filters with the configured thresholds, in Gopher's order: the cheap
    and telling first."""
    return [
        WordCount(c.min_words, c.max_words),
        MeanWordLength(c.min_mean_word_length, c.max_mean_word_length),
        SymbolRatio(c.max_symbol_ratio),
        AlphabeticWords(c.min_alpha_word_ratio),
        Stopwords(c.min_stopwords),
        RepeatedLines(c.max_duplicate_line_ratio),
        TerminalPunctuation(c.min_terminal_punct_ratio),
        ShortLines(c.max_short_line_ratio),
        BoilerplateLines(c.max_boilerplate_line_ratio),
    ]


def document_steps(c: CrawlConfig) -> list[Step]:
    """The steps of one document on its own (the crawl runs them in its workers): its
    language identified (and filtered, as datatrove's pipelines, before the rules written
    for prose), the quality filters, personal data replaced in what passed, then its MinHash
    signature, the half of dedup that needs no other document."""
    steps = [Language(frozenset(c.language_list)), *quality_steps(c)]
    scrub = [ScrubPII(c.pii_kinds)] if c.pii_kinds else []
    return [*steps, *scrub, Signature(c.minhash_perm)]


def text_steps(c: CrawlConfig, index: DedupIndex) -> list[Step]:
    """What an extracted document goes through before it is written: `document_steps`, then
    deduplication against `index` (on the text that is written)."""
    from text.dedup import Dedup  # here: its SQLAlchemy, which the workers never need

    return [*document_steps(c), Dedup(index)]
