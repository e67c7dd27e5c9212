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
"""

from __future__ import annotations

import io
import lzma
from array import array
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.files import atomic_dir, cache_folder, file_sha256
from text.document import Document, Drop

# Enough text to be sure of a language, and a bound on the time a huge document takes
# (the identifier walks every byte in Python): the first MAX_CHARS characters.
MAX_CHARS = 10_000
UNDETERMINED = "und"
ARRAYS = ("ptc", "pc", "classes", "nextmove", "nextmove_row", "out_feat")  # py3langid's file


@lru_cache(maxsize=1)  # one model a process
def identifier():
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    model = _model(MODEL_DIR / MODEL_FILE)
    # as py3langid's own loader hands them over: its byte loop indexes plain arrays
    return LanguageIdentifier(
        model["ptc"], model["pc"], model["classes"].tolist(), _plain(model["nextmove"]),
        model["out_feat"].tolist(), norm_probs=True, tk_row=_plain(model["nextmove_row"]))


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
    # its pages are the page cache's, shared by every process that reads the model
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}


def _plain(values) -> array:
    return array({2: "H", 4: "I", 8: "L"}[values.dtype.itemsize], values.tobytes())


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
