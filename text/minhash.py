"""MinHash signatures of documents, as text/dedup.py's index compares them: word 5-gram
shingles (as FineWeb's), datasketch's permutations, and the LSH banding for a threshold.
Numpy only, no database: a crawl's extraction workers sign each document they pass
(`Signature`, the last of the document steps), and the index in the crawl takes the
signature as it comes.

    doc = Signature(num_perm=128)(doc)      # doc.minhash: num_perm uint64 values, as bytes
"""

from __future__ import annotations

import functools
import re
import zlib

import numpy as np

from text.document import Document

_WORD = re.compile(r"\w+")
SHINGLE = 5  # words per shingle, as in FineWeb's MinHash
BATCH = 4096  # shingle hashes permuted at once


def shingle_hashes(text: str) -> np.ndarray:
    """32-bit hashes of the text's word 5-grams, computed with numpy rather than one
    Python call per shingle (a crawl hashes every document)."""
    words = _WORD.findall(text.lower())
    word_ids = {w: zlib.crc32(w.encode()) for w in set(words)}  # each distinct word once
    ids = np.fromiter(map(word_ids.__getitem__, words), dtype=np.uint64, count=len(words))
    n = max(1, len(ids) - SHINGLE + 1)
    hashes = np.zeros(n, dtype=np.uint64)
    for k in range(min(SHINGLE, len(ids))):
        hashes = hashes * np.uint64(1_000_003) + ids[k:k + n]  # wraps modulo 2**64
    # sorted and each once; np.unique does the same some 25 times as slowly here
    hashes = np.sort(hashes.astype(np.uint32))  # the low 32 bits
    first = np.ones(len(hashes), dtype=bool)
    np.not_equal(hashes[1:], hashes[:-1], out=first[1:])
    return hashes[first]


# MinHash and its banding are datasketch's ("affine32" permutations, seed 1; the bands and
# rows that minimise false positives plus false negatives), written out here because
# importing datasketch imports SciPy for that one integral: 50 MB and most of a second in
# every crawl process. tests/test_dedup_properties.py holds them equal to datasketch's.
@functools.cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(1)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    return a, gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer: spreads the shingle hashes before the affine permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signature_of(text: str, num_perm: int) -> bytes:
    """The MinHash signature as stored: numpy uint64 bytes. A batch of shingles at a time
    keeps memory bounded (num_perm values per shingle); the minimum over batches is the same."""
    a, b = _permutations(num_perm)
    values = np.full(num_perm, 0xFFFFFFFF, dtype=np.uint32)
    hashes = _fmix32(shingle_hashes(text))
    for start in range(0, len(hashes), BATCH):
        permuted = np.multiply(hashes[start:start + BATCH, None], a)  # wraps modulo 2**32
        permuted += b  # in place: a second array of the batch's size cost more than the sums
        np.minimum(values, permuted.min(axis=0), out=values)
    return values.astype(np.uint64).tobytes()


def banding(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the LSH banding whose false positives below `threshold` and false
    negatives above it, integrated over the similarity and weighed alike, are fewest. The
    integrands are polynomials of degree bands * rows <= num_perm, which Gauss-Legendre
    quadrature of num_perm / 2 + 1 points integrates exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    below = threshold / 2 * (nodes + 1)  # the nodes mapped onto [0, threshold] ...
    above = threshold + (1 - threshold) / 2 * (nodes + 1)  # ... and [threshold, 1]
    best, shape = np.inf, (0, 0)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = threshold / 2 * weights @ (1 - (1 - below ** rows) ** bands)
            false_negative = (1 - threshold) / 2 * weights @ ((1 - above ** rows) ** bands)
            if (error := 0.5 * false_positive + 0.5 * false_negative) < best:
                best, shape = error, (bands, rows)
    return shape


class Signature:
    """The step: the document's MinHash signature into `doc.minhash`, on the text as it will
    be written (so after the steps that change it)."""

    def __init__(self, num_perm: int):
        self.num_perm = num_perm

    def __call__(self, doc: Document) -> Document:
        doc.minhash = signature_of(doc.text, self.num_perm)
        return doc
