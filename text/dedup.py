"""Exact and near-duplicate detection: `doc_id` (the sha256 of the text) for exact, MinHash
LSH over word 5-grams (as FineWeb; the signatures and banding: text/minhash.py) for near
duplicates.

The index lives in a database (core/db.py, the tables of `METADATA`): `docs` holds every
document's signature (numpy uint64 bytes, no pickle), `bands` its LSH bands (the choice
of bands and rows for the threshold), one document per (band, hash). A new document is
claimed at once, in its own short transaction: its `docs` row (owned by the process that
claims it) and its band rows. Two processes racing with the same text meet at the primary
key of `docs`, with near-duplicate texts at a shared band's row: the database takes one, the
other is told `duplicate_*`. A claim becomes a kept document when its shard is written
(`save`, in the caller's transaction) or is given up (`release`). The crawl keeps the index
in its state (crawler/state.py), so duplicates of earlier crawls and of the other crawlers of
a fleet are caught too; a pass over existing shards can keep one of its own.

    db = Database("", path, METADATA)
    index = DedupIndex(db, num_perm=128, threshold=0.8)
    steps = Steps([..., Dedup(index)])         # or [..., Signature(128), Dedup(index)]
    ...
    db.write(lambda conn: index.save(conn, shard))  # with whatever commits with the shard
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import sqlalchemy as sa

from core.db import Database
from text.document import Document, Drop
from text.minhash import banding, signature_of

METADATA = sa.MetaData()
DOCS = sa.Table(
    "docs", METADATA,
    sa.Column("doc_id", sa.Text, primary_key=True),
    sa.Column("minhash", sa.LargeBinary, nullable=False),
    sa.Column("shard", sa.Text),  # the shard it is in (relative to the home)
    sa.Column("owner", sa.Text),  # the process holding the claim; NULL once kept
    sa.Index("docs_claims", "owner", sqlite_where=sa.text("owner IS NOT NULL"),
             postgresql_where=sa.text("owner IS NOT NULL")),
    schema="crawl",
)
BANDS = sa.Table(
    "bands", METADATA,
    sa.Column("band", sa.SmallInteger, primary_key=True),
    sa.Column("hash", sa.BigInteger, primary_key=True),  # of the band's signature values
    sa.Column("doc_id", sa.Text, nullable=False),
    schema="crawl",
)
LSH = sa.Table(  # the signature width and banding the `bands` rows were made with
    "lsh", METADATA,
    sa.Column("num_perm", sa.Integer, primary_key=True),
    sa.Column("bands", sa.Integer, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    schema="crawl",
)
class _Taken(Exception):
    """The new document's id or one of its bands is taken: its claim is rolled back.
    `by_claim`: what took it is another process's claim, not a kept document."""

    def __init__(self, reason: str, by_claim: bool):
        super().__init__(reason)
        self.reason, self.by_claim = reason, by_claim


class DedupIndex:
    """The documents claimed or kept so far in `db`, by every process that shares it.
    `owner` names this process's claims (a fresh id by default)."""

    def __init__(self, db: Database, num_perm: int, threshold: float, owner: str | None = None,
                 on_claimed=None):
        self.db, self.num_perm = db, num_perm
        self.owner = owner or uuid.uuid4().hex
        # called when another process's claim holds a document: releases the claims of
        # processes that are gone and says whether it released any (crawler/state.py)
        self.on_claimed = on_claimed
        bands, rows = banding(threshold, num_perm)
        self.ranges = [(i * rows, (i + 1) * rows) for i in range(bands)]
        self.shape = (num_perm, bands, rows)
        # One statement for every claim's bands, compiled once
        self.insert_bands = db.compiled(db.insert(BANDS).values([
            {"band": i, "hash": sa.bindparam(f"h{i}"), "doc_id": sa.bindparam("doc_id")}
            for i in range(bands)]).on_conflict_do_nothing())
        self.claimed: dict[str, bytes] = {}  # this process's claims not yet kept: signatures
        self.kept: dict[str, bytes] = {}  # documents of a shard (`add`), saved with it
        self.db.write(self._check_banding)

    def _hashes(self, signature: bytes) -> list[int]:
        values = np.frombuffer(signature, dtype=np.uint64)
        return [int.from_bytes(hashlib.blake2b(values[start:end].tobytes(), digest_size=8)
                               .digest(), "little", signed=True) for start, end in self.ranges]

    def _insert_bands(self, conn: sa.Connection, doc_id: str, signature: bytes) -> int:
        """How many of the document's bands were free (and are its own now)."""
        hashes = {f"h{i}": h for i, h in enumerate(self._hashes(signature))}
        return self.insert_bands(conn, {"doc_id": doc_id} | hashes)

    def _check_banding(self, conn: sa.Connection) -> None:
        """Bands of another width or threshold (or none: a state of an older version) are
        made again from the stored signatures."""
        if conn.execute(sa.select(LSH.c.num_perm, LSH.c.bands, LSH.c.rows)).all() == [self.shape]:
            return
        if conn.dialect.name == "postgresql":  # no claim meanwhile
            conn.execute(sa.text("LOCK TABLE crawl.bands IN SHARE ROW EXCLUSIVE MODE"))
        conn.execute(BANDS.delete())
        conn.execute(LSH.delete())
        conn.execute(LSH.insert().values(num_perm=self.shape[0], bands=self.shape[1],
                                         rows=self.shape[2]))
        width = self.num_perm * 8  # signatures of another width cannot be compared
        for doc_id, blob in conn.execute(sa.select(DOCS.c.doc_id, DOCS.c.minhash)).all():
            if len(blob) == width:
                self._insert_bands(conn, doc_id, blob)

    def check(self, doc_id: str, text: str, signature: bytes = b"") -> str | None:
        """'duplicate_exact', 'duplicate_near', or None: the document is claimed. `signature`:
        the text's, if it was computed already (one of another width is computed again)."""
        if doc_id in self.claimed or doc_id in self.kept:
            return "duplicate_exact"
        if len(signature) != self.num_perm * 8:
            signature = signature_of(text, self.num_perm)
        for first_try in (True, False):
            try:
                self.db.write(lambda conn: self._claim(conn, doc_id, signature))
            except _Taken as taken:
                # held by a claim of a process that may be gone (its requests crawled again
                # by the others): if its claims were released, the document is checked again
                if first_try and taken.by_claim and self.on_claimed and self.on_claimed():
                    continue
                return taken.reason
            self.claimed[doc_id] = signature
            return None

    def _claim(self, conn: sa.Connection, doc_id: str, signature: bytes) -> None:
        row = {"doc_id": doc_id, "minhash": signature, "owner": self.owner}
        if not conn.execute(self.db.insert(DOCS).values(row).on_conflict_do_nothing()).rowcount:
            owner = conn.execute(sa.select(DOCS.c.owner).where(DOCS.c.doc_id == doc_id)).scalar()
            if owner != self.owner:  # ours: an earlier try committed but its answer was lost
                raise _Taken("duplicate_exact", by_claim=owner is not None)
            return
        if self._insert_bands(conn, doc_id, signature) < len(self.ranges):
            raise _Taken("duplicate_near", by_claim=self._held_by_claims(conn, doc_id, signature))

    def _held_by_claims(self, conn: sa.Connection, doc_id: str, signature: bytes) -> bool:
        """Whether a band the document shares belongs to another process's claim."""
        shared = sa.or_(*[(BANDS.c.band == i) & (BANDS.c.hash == h)
                          for i, h in enumerate(self._hashes(signature))])
        query = (sa.select(DOCS.c.owner).join(BANDS, BANDS.c.doc_id == DOCS.c.doc_id)
                 .where(shared, BANDS.c.doc_id != doc_id, DOCS.c.owner.is_not(None)).limit(1))
        return conn.execute(query).first() is not None

    def add(self, doc_id: str, text: str) -> None:
        """A document that is already kept in a shard, duplicate or not (saved with it)."""
        if doc_id not in self.kept:
            self.kept[doc_id] = signature_of(text, self.num_perm)

    def save(self, conn: sa.Connection, shard: str) -> int:
        """In the caller's transaction: this process's claims and the added documents become
        documents of `shard`. Returns how many claims had been released meanwhile (this
        process was taken for dead) and were kept all the same: their documents are written."""
        kept = conn.execute(DOCS.update().where(DOCS.c.owner == self.owner)
                            .values(owner=None, shard=shard)).rowcount
        again = self.kept | (self.claimed if kept < len(self.claimed) else {})
        for doc_id, signature in again.items():
            conn.execute(self.db.insert(DOCS).values(doc_id=doc_id, minhash=signature, shard=shard)
                         .on_conflict_do_update(index_elements=["doc_id"],
                                                set_={"owner": None, "shard": shard}))
            self._insert_bands(conn, doc_id, signature)
        return len(self.claimed) - kept

    def saved(self) -> None:
        """The transaction of `save` committed."""
        self.claimed.clear()
        self.kept.clear()

    def release(self, conn: sa.Connection, claims: sa.ColumnElement[bool]) -> int:
        """In the caller's transaction: the claims `claims` selects (of `DOCS`) given up,
        whoever held them, their bands too; returns how many."""
        rows = conn.execute(sa.select(DOCS.c.doc_id, DOCS.c.minhash)
                            .where(claims, DOCS.c.owner.is_not(None))).all()
        for doc_id, blob in rows:
            hashes = self._hashes(blob) if len(blob) == self.num_perm * 8 else []
            for band, hash_ in enumerate(hashes):
                conn.execute(BANDS.delete().where(BANDS.c.band == band, BANDS.c.hash == hash_,
                                                  BANDS.c.doc_id == doc_id))
            conn.execute(DOCS.delete().where(DOCS.c.doc_id == doc_id))
        return len(rows)

    def forget(self, doc_ids: list[str] | None = None) -> None:
        """This process's claims that will not be written (all of them by default, and the
        added documents then too): others may keep those documents now."""
        mine = DOCS.c.owner == self.owner
        if doc_ids is None:
            self.claimed.clear()
            self.kept.clear()
            self.db.write(lambda conn: self.release(conn, mine))
        elif doc_ids := [d for d in doc_ids if self.claimed.pop(d, None) is not None]:
            self.db.write(lambda conn: self.release(conn, mine & DOCS.c.doc_id.in_(doc_ids)))


class Dedup:
    """The step: drops a document seen before, exactly (`duplicate_exact`) or nearly
    (`duplicate_near`); a new one joins the index."""

    def __init__(self, index: DedupIndex):
        self.index = index

    def __call__(self, doc: Document) -> Document:
        reason = self.index.check(doc.doc_id, doc.text, doc.minhash)
        if reason:
            raise Drop(reason)
        return doc
