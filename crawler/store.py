"""Crawl state that lasts across crawls: `$CLLM_HOME/crawl/state.sqlite`.

- `docs`: every document ever written (its `doc_id`) with its MinHash signature, so exact
  and near duplicates are caught in later crawls too. The LSH index is rebuilt in memory
  from the stored signatures (numpy uint64 bytes, no pickle) when a crawl opens.
- `urls`: every URL processed, with the sha256 of its body, so an unchanged page is not
  extracted again.
- `shards`: the shards whose documents are in `docs`.

What a crawl learns is held pending in memory and committed in one transaction when a
shard is complete (and the URLs of dropped pages when the crawl closes). A crawl killed
before that commits nothing, so its pages are processed again on the next run instead of
being lost. `absorb` brings the state up to date with a shard written just before a kill.
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datasketch import LeanMinHash, MinHash, MinHashLSH

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (doc_id TEXT PRIMARY KEY, minhash BLOB NOT NULL, shard TEXT);
CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, body_sha256 TEXT, doc_id TEXT);
CREATE TABLE IF NOT EXISTS shards (path TEXT PRIMARY KEY);
"""
_WORD = re.compile(r"\w+")
SHINGLE = 5  # words per shingle, as in FineWeb's MinHash
SCHEME = "affine32"  # datasketch's hashing scheme; stored signatures are only valid with it


def state_db(home: Path) -> Path:
    path = Path(home) / "crawl" / "state.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def connect(home: Path) -> sqlite3.Connection:
    db = sqlite3.connect(state_db(home), timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


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
    # The shingle hashes are already hashes: datasketch only applies its permutations.
    m = MinHash(num_perm=num_perm, scheme=SCHEME, hashfunc=int)
    m.update_batch(shingle_hashes(text))
    return m


class UrlLog:
    """Read side for the spider: was this URL processed before with this exact body?"""

    def __init__(self, home: Path):
        self.db = connect(home)

    def unchanged(self, url: str, body_sha256: str) -> bool:
        row = self.db.execute("SELECT body_sha256 FROM urls WHERE url = ?", (url,)).fetchone()
        return row is not None and row[0] == body_sha256

    def close(self) -> None:
        self.db.close()


class DedupIndex:
    """Exact and near-duplicate detection across crawls, plus the URL log's write side."""

    def __init__(self, home: Path, num_perm: int, threshold: float):
        self.home = Path(home)
        self.num_perm = num_perm
        self.db = connect(home)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.doc_ids: set[str] = set()
        self.pending_docs: list[tuple[str, bytes]] = []
        self.pending_urls: dict[str, tuple[str | None, str | None]] = {}
        for doc_id, blob in self.db.execute("SELECT doc_id, minhash FROM docs"):
            self._index(doc_id, np.frombuffer(blob, dtype=np.uint64))

    def _index(self, doc_id: str, hashvalues: np.ndarray) -> None:
        self.doc_ids.add(doc_id)
        if len(hashvalues) == self.num_perm:  # signatures of another width cannot be compared
            self.lsh.insert(doc_id, LeanMinHash(seed=1, hashvalues=hashvalues, scheme=SCHEME),
                            check_duplication=False)

    def check(self, doc_id: str, text: str) -> str | None:
        """'duplicate_exact', 'duplicate_near', or None after recording the new document."""
        if doc_id in self.doc_ids:
            return "duplicate_exact"
        m = minhash_of(text, self.num_perm)
        if self.lsh.query(m):
            return "duplicate_near"
        self._index(doc_id, m.hashvalues)
        self.pending_docs.append((doc_id, m.hashvalues.astype(np.uint64).tobytes()))
        return None

    def record_url(self, url: str, body_sha256: str | None, doc_id: str | None = None) -> None:
        self.pending_urls[url] = (body_sha256, doc_id)

    def commit(self, shard: str | None = None) -> None:
        """Make the pending documents (those in `shard`) and URLs permanent, all at once."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR IGNORE INTO docs VALUES (?, ?, ?)",
                            [(d, blob, shard) for d, blob in self.pending_docs])
        self.db.executemany("INSERT OR REPLACE INTO urls VALUES (?, ?, ?)",
                            [(u, h, d) for u, (h, d) in self.pending_urls.items()])
        if shard is not None:
            self.db.execute("INSERT OR IGNORE INTO shards VALUES (?)", (shard,))
        self.db.execute("COMMIT")
        self.pending_docs.clear()
        self.pending_urls.clear()

    def absorb(self, shard_files: list[Path]) -> int:
        """Add the documents of shards the state does not know yet (written just before a
        crash); returns how many shards were absorbed."""
        known = {row[0] for row in self.db.execute("SELECT path FROM shards")}
        absorbed = 0
        for path in shard_files:
            rel = path.relative_to(self.home).as_posix()
            if rel in known:
                continue
            table = pq.read_table(path, columns=["doc_id", "canonical_url", "text"]).to_pydict()
            for doc_id, url, text in zip(table["doc_id"], table["canonical_url"], table["text"]):
                if doc_id not in self.doc_ids:
                    m = minhash_of(text, self.num_perm)
                    self._index(doc_id, m.hashvalues)
                    self.pending_docs.append((doc_id, m.hashvalues.astype(np.uint64).tobytes()))
                self.record_url(url, None, doc_id)
            self.commit(rel)
            absorbed += 1
        return absorbed

    def close(self) -> None:
        self.db.close()
