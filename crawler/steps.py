"""The crawler's text steps (text/), built from its `[crawl]` configuration: the same list
runs in a crawl (crawler/pipelines.py) and over shards already written.

    steps = Steps(text_steps(crawl, index))    # quality filters, then dedup
"""

from __future__ import annotations

from crawler.config import CrawlConfig
from text.dedup import Dedup, DedupIndex
from text.document import Step
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


def text_steps(c: CrawlConfig, index: DedupIndex) -> list[Step]:
    """What an extracted document goes through before it is written: the quality filters,
    then deduplication against `index`."""
    return [*quality_steps(c), Dedup(index)]
