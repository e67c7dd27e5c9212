"""Language identification: the step that names a document's language from its text, and
keeps only the languages asked for.

The model is py3langid's (langid.py's naive Bayes over byte n-grams, 140 languages, ISO
639-1 codes where there is one), shipped inside the package: nothing is downloaded. Chosen over
CLD2 and Lingua on the labelled set in data/language/ (benchmarks/language_id.py, figures in
benchmarks/RESULTS.md): as accurate as Lingua (98.9% of 440 paragraphs in 11 languages),
13 to 34 times faster, loaded in a second, not 13 to 17, in 135 MB, not 1.3 GB (a 5 MB
wheel, not 96 MB); CLD2 is 10 times faster still but abstains or errs on one paragraph in 18.

The model ships LZMA-packed, and unpacking it is 0.45 s of CPU, most of what loading it
costs: so it is unpacked once into the cache folder (core/files.py `cache_folder`), named by
the packed file's digest, and every later process (each crawl's workers) maps it from there.
py3langid walks its Aho-Corasick automaton a byte at a time in Python; `Identifier` walks
every position of a long text at once in numpy, with the same features, and reads the
automaton's 40 MB table from the mapped file instead of copying it into each process (a
process's RSS after loading the model: 42 MB, not 81).
"""

from __future__ import annotations

import io
import lzma
from functools import lru_cache
from pathlib import Path

import numpy as np
from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

from core.files import atomic_dir, cache_folder, file_sha256
from text.document import Document, Drop

# Enough text to be sure of a language, and a bound on the time a huge document takes
# (a walk over every byte, and a sparse product): the first MAX_CHARS characters.
MAX_CHARS = 10_000
UNDETERMINED = "und"
SHORT_TEXT = 1_000  # bytes: py3langid's loop below, the numpy walk from here on
ARRAYS = ("ptc", "pc", "classes", "nextmove", "nextmove_row", "out_feat")  # py3langid's file


class Identifier(LanguageIdentifier):
    """py3langid's identifier, its automaton walked over all of a long text at once.

    The automaton's state after a byte is the longest suffix of the text so far that is one
    of its nodes (the n-gram prefixes, a prefix-closed set), so it is also the state reached
    from the start by the last w bytes alone, once w is as long as the longest node. Walking
    every position's last w bytes for w = 1, 2, ... (one numpy step each) reaches that: when
    a step changes no state, no position has a longer node to find (that node's prefix one
    byte shorter would have changed the state at the position before). A short text takes
    py3langid's own loop: numpy's fixed costs would outweigh its bytes."""

    def __init__(self, ptc, pc, classes, nextmove, out_feat, rows):
        # py3langid's loop indexes memoryviews of the mapped arrays, the walk the arrays
        super().__init__(ptc, pc, classes, memoryview(nextmove), memoryview(out_feat),
                         norm_probs=True, tk_row=memoryview(rows))
        self.moves, self.outputs = nextmove, out_feat
        self.row_starts = rows.astype(np.intp) << 8

    def _raw_score(self, text: bytes):
        if len(text) < SHORT_TEXT:
            return super()._raw_score(text)
        data = np.frombuffer(text, dtype=np.uint8)
        walk = np.zeros(len(data) + 1, dtype=np.intp)  # the start (state 0), then each byte's
        states = walk[1:]  # state after the byte's last w bytes: w = 0 here
        while True:
            longer = self.moves[self.row_starts[walk[:-1]] + data]
            if np.array_equal(longer, states):
                break
            states[:] = longer
        found = self.outputs[states]
        found = found[found >= 0]
        if not len(found):
            return super()._raw_score(b"")  # py3langid's score for no features
        # counted in the order py3langid's loop counts them, so its sums add up the same
        features, first, counts = np.unique(found, return_index=True, return_counts=True)
        order = np.argsort(first)
        return self._sparse_score(dict(zip(features[order].tolist(), counts[order].tolist())),
                                  self.nb_ptc)


@lru_cache(maxsize=1)  # one model a process
def identifier() -> Identifier:
    model = _model(MODEL_DIR / MODEL_FILE)
    return Identifier(model["ptc"], model["pc"], model["classes"].tolist(), model["nextmove"],
                      model["out_feat"], model["nextmove_row"])


def _model(packed: Path) -> dict[str, np.ndarray]:
    """The model's arrays, memory-mapped from the cache folder (unpacked there the first
    time), or unpacked into this process's memory where there is no cache to write."""
    cache = cache_folder("langid")
    folder = None if cache is None else cache / file_sha256(packed)[:16]
    if folder is not None and folder.is_dir():
        return _mapped(folder)
    with lzma.open(packed) as src, np.load(io.BytesIO(src.read())) as packed_model:
        model = {name: packed_model[name] for name in ARRAYS}
    if folder is None:
        return model
    try:
        with atomic_dir(folder, replace=False) as tmp:  # a racing process's copy may win
            for name, values in model.items():
                np.save(tmp / f"{name}.npy", values)
    except OSError:  # a full disk under the cache must not fail a crawl
        return model
    return _mapped(folder)


def _mapped(folder: Path) -> dict[str, np.ndarray]:
    # its pages are the page cache's, shared by every process that reads the model; plain
    # arrays over the maps (numpy's memmap class costs 20 us an indexing)
    return {name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r")) for name in ARRAYS}


def known_languages() -> set[str]:
    return set(identifier().labels)


def identify(text: str) -> tuple[str, float]:
    """The language of a text and the model's probability of it; `und` with 0.0 for a text
    without a letter (nothing to go on: the model would answer at random)."""
    sample = text[:MAX_CHARS]
    if not any(c.isalpha() for c in sample):
        return UNDETERMINED, 0.0
    language, score = identifier().classify(sample)
    return language, round(float(score), 4)


class Language:
    """The step: `language` and `language_score` from the text. With `keep` (codes), a
    document in any other language is dropped under `language` (detail: code and score)."""

    def __init__(self, keep: frozenset[str] = frozenset()):
        self.keep = keep

    def __call__(self, doc: Document) -> Document:
        doc.language, doc.language_score = identify(doc.text)
        if self.keep and doc.language not in self.keep:
            raise Drop("language", f"{doc.language} {doc.language_score:.2f}")
        return doc
