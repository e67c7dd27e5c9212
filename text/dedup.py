"""Exact and near-duplicate detection: `doc_id` (the sha256 of the text) for exact, MinHash
LSH over word 5-grams (as FineWeb) for near duplicates.

The signatures live in a `docs` table (`SCHEMA`) of an SQLite database opened with
`core.db.connect`: the crawl keeps it in its state (crawler/state.py), so duplicates of
earlier crawls are caught too; a pass over existing shards can keep one of its own. The LSH
index is rebuilt in memory from the stored signatures (numpy uint64 bytes, no pickle).

    db = connect(path, SCHEMA)
    index = DedupIndex(db, num_perm=128, threshold=0.8)
    steps = Steps([..., Dedup(index)])
    ...
    with transaction(db):
        index.save(shard)              # the new signatures, with whatever commits with them
"""

from __future__ import annotations

import re
import sqlite3
import zlib

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from text.document import Document, Drop

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (doc_id TEXT PRIMARY KEY, minhash BLOB NOT NULL, shard TEXT);
"""
_WORD = re.compile(r"\w+")
SHINGLE = 5  # words per shingle, as in FineWeb's MinHash
SCHEME = "affine32"  # datasketch's hashing scheme; stored signatures are only valid with it
BATCH = 4096  # shingle hashes permuted at once


def shingle_hashes(text: str) -> np.ndarray:
    """32-bit hashes of the text's word 5-grams, computed with numpy rather than one
    Python call per shingle (the crawl's main process hashes every document)."""
    words = _WORD.findall(text.lower())
    word_ids = {w: zlib.crc32(w.encode()) for w in set(words)}  # each distinct word once
    ids = np.fromiter(map(word_ids.__getitem__, words), dtype=np.uint64, count=len(words))
    n = max(1, len(ids) - SHINGLE + 1)
    hashes = np.zeros(n, dtype=np.uint64)
    for k in range(min(SHINGLE, len(ids))):
        hashes = hashes * np.uint64(1_000_003) + ids[k:k + n]  # wraps modulo 2**64
    return np.unique(hashes & np.uint64(0xFFFFFFFF))


def minhash_of(text: str, num_perm: int) -> MinHash:
    # The shingle hashes are already hashes: datasketch only applies its permutations. It
    # permutes a whole batch at once (num_perm values per hash), so a batch at a time keeps
    # memory bounded (1.4 MB of distinct words was 190 MB more in one batch); the minimum
    # over batches is the same signature.
    m = MinHash(num_perm=num_perm, scheme=SCHEME, hashfunc=int)
    hashes = shingle_hashes(text)
    for start in range(0, len(hashes), BATCH):
        m.update_batch(hashes[start:start + BATCH])
    return m


class DedupIndex:
    """The documents known so far: every stored one, then each new one as it is checked
    (held in `pending` until `save` writes it)."""

    def __init__(self, db: sqlite3.Connection, num_perm: int, threshold: float):
        self.db, self.num_perm = db, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.doc_ids: set[str] = set()
        self.pending: list[tuple[str, bytes]] = []  # (doc_id, signature) not yet saved
        for doc_id, blob in db.execute("SELECT doc_id, minhash FROM docs"):
            self._index(doc_id, np.frombuffer(blob, dtype=np.uint64))

    def _index(self, doc_id: str, hashvalues: np.ndarray) -> None:
        self.doc_ids.add(doc_id)
        if len(hashvalues) == self.num_perm:  # signatures of another width cannot be compared
            self.lsh.insert(doc_id, LeanMinHash(seed=1, hashvalues=hashvalues, scheme=SCHEME),
                            check_duplication=False)

    def _add(self, doc_id: str, m: MinHash) -> None:
        self._index(doc_id, m.hashvalues)
        self.pending.append((doc_id, m.hashvalues.astype(np.uint64).tobytes()))

    def check(self, doc_id: str, text: str) -> str | None:
        """'duplicate_exact', 'duplicate_near', or None after adding the new document."""
        if doc_id in self.doc_ids:
            return "duplicate_exact"
        m = minhash_of(text, self.num_perm)
        if self.lsh.query(m):
            return "duplicate_near"
        self._add(doc_id, m)
        return None

    def add(self, doc_id: str, text: str) -> None:
        """A document that is already kept elsewhere (in a shard), duplicate or not."""
        if doc_id not in self.doc_ids:
            self._add(doc_id, minhash_of(text, self.num_perm))

    def save(self, shard: str | None) -> None:
        """Write the pending signatures, as documents of `shard`, inside the caller's
        transaction (with whatever else must be permanent together with them)."""
        self.db.executemany("INSERT OR IGNORE INTO docs VALUES (?, ?, ?)",
                            [(doc_id, blob, shard) for doc_id, blob in self.pending])
        self.pending.clear()


class Dedup:
    """The step: drops a document seen before, exactly (`duplicate_exact`) or nearly
    (`duplicate_near`); a new one joins the index."""

    def __init__(self, index: DedupIndex):
        self.index = index

    def __call__(self, doc: Document) -> Document:
        reason = self.index.check(doc.doc_id, doc.text)
        if reason:
            raise Drop(reason)
        return doc
