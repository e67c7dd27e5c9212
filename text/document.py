"""A document, the way a step says no (`Drop`), and the runner of a list of steps (`Steps`).

A step is any callable that takes a `Document` and returns it (changed or not), or raises
`Drop(reason)` to filter it out. `Steps` runs a list of them in order and counts what each
reason dropped, so whoever runs the steps (a crawl, a pass over existing shards) reports
drops from one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Document:
    url: str = ""
    text: str = field(default="", repr=False)
    title: str = ""
    language: str = "und"  # identified from the text (text/language.py): en, fr, ...; und
    language_score: float = 0.0  # the identifier's probability of `language`
    declared_language: str = ""  # <html lang> or Content-Language primary subtag, or und
    doc_id: str = ""  # sha256 of the text, set by extraction
    # A fetched page, before extraction (text/extract.py frees body and html after it)
    content_type: str = ""  # media type only, lower case: text/html, text/plain, application/pdf
    body: bytes = field(default=b"", repr=False)
    html: str = field(default="", repr=False)  # the body decoded by its fetcher
    content_language: str = ""  # the Content-Language header, if any
    pii: dict[str, int] = field(default_factory=dict)  # replacements by kind (text/pii.py)
    minhash: bytes = field(default=b"", repr=False)  # its signature, once made (text/minhash.py)


class Drop(Exception):
    """Raised by a step to filter a document out; `reason` is what reports count, `detail`
    what an auditor reads (the measure that failed: "words 12 < 50", "fr 0.99")."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


Step = Callable[[Document], Document]


class Steps:
    def __init__(self, steps: Iterable[Step]):
        self.steps = list(steps)
        self.dropped: Counter[str] = Counter()

    def __call__(self, doc: Document) -> Document:
        """The document through every step in order; a `Drop` is counted and raised on."""
        with self.counting():
            for step in self.steps:
                doc = step(doc)
        return doc

    def filter(self, docs: Iterable[Document]) -> Iterator[Document]:
        """The documents that pass every step; the others are only counted."""
        for doc in docs:
            try:
                yield self(doc)
            except Drop:
                continue

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Count a `Drop` raised in the block, and let it go on. For a caller that runs a
        step in parts (the crawl extracts in worker processes between two of them)."""
        try:
            yield
        except Drop as drop:
            self.dropped[drop.reason] += 1
            raise


def split_at_blank_lines(text: str, size: int) -> list[str]:
    """A long text (a book, a play) cut into documents of about `size` characters, at blank
    lines."""
    docs: list[str] = []
    current: list[str] = []  # joined once a document is full: linear, whatever the sizes
    length = 0
    for paragraph in text.split("\n\n"):
        current.append(paragraph + "\n\n")
        length += len(paragraph) + 2
        if length >= size:
            docs.append("".join(current).strip())
            current, length = [], 0
    return docs

