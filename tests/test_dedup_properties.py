"""Property tests of dedup (text/minhash.py, text/dedup.py) on generated texts up to 1 MB:
the shingle hashes against their definition, the MinHash signature and the LSH banding
against datasketch's, and the step's drops and bounds (tests/propertykit.py: the inputs, the
hang guard)."""

from __future__ import annotations

import hashlib
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from propertykit import PROPERTY, texts, with_bait

from core.db import Database
from crawler.config import CrawlConfig
from crawler.steps import document_steps
from text.dedup import METADATA, Dedup, DedupIndex
from text.document import Document, Drop, Steps
from text.minhash import SHINGLE, Signature, banding, shingle_hashes, signature_of

pytestmark = pytest.mark.usefixtures("hang_guard")  # the hang guard: tests/conftest.py


def reference_shingles(text: str) -> set[int]:
    """One shingle at a time in Python, as the definition reads (a text of fewer words
    than a shingle is one shingle)."""
    ids = [zlib.crc32(w.encode()) for w in re.findall(r"\w+", text.lower())]
    windows = [ids[i:i + SHINGLE] for i in range(max(1, len(ids) - SHINGLE + 1))]
    out = set()
    for window in windows:
        h = 0
        for i in window:
            h = (h * 1_000_003 + i) % 2**64
        out.add(h & 0xFFFFFFFF)
    return out


@PROPERTY
@given(texts.map(lambda t: t[:5000]))
def test_shingle_hashes_match_their_definition(text):
    assert set(shingle_hashes(text).tolist()) == reference_shingles(text)


@PROPERTY
@given(texts, st.sampled_from([16, 64, 128, 256]))
@with_bait(64, only=["prose", "distinct words", "many tiny words"])
def test_the_signature_is_datasketchs_minhash(text, num_perm):
    from datasketch import MinHash

    reference = MinHash(num_perm=num_perm, scheme="affine32", hashfunc=int)
    reference.update_batch(shingle_hashes(text).tolist())
    assert np.frombuffer(signature_of(text, num_perm), np.uint64).tolist() == \
        reference.hashvalues.tolist()


@pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
def test_the_banding_is_datasketchs(num_perm):
    from datasketch import MinHashLSH

    for threshold in np.arange(0.05, 1.0, 0.05):
        try:
            lsh = MinHashLSH(threshold=float(threshold), num_perm=num_perm)
        except ValueError:  # datasketch refuses a single band; a single band works here
            continue
        assert banding(float(threshold), num_perm) == (lsh.b, lsh.r), threshold


def new_index() -> DedupIndex:
    return DedupIndex(Database("", Path(":memory:"), METADATA), num_perm=64, threshold=0.8)


@PROPERTY
@given(texts)
@with_bait(only=["prose", "punctuation run", "one huge word", "many tiny words",
                 "distinct words", "repeated line", "mixed scripts"])
def test_dedup_marks_copies_and_bounds_its_signature(text):
    hashes = shingle_hashes(text)
    n_words = len(re.findall(r"\w+", text.lower()))
    # The bound: one hash per shingle at most, a signature of num_perm values whatever the text
    assert 1 <= len(hashes) <= max(1, n_words - SHINGLE + 1)
    assert np.all(np.diff(hashes.astype(np.int64)) > 0) and int(hashes.max()) < 2**32
    assert len(signature_of(text, 64)) == 64 * 8
    step = Dedup(new_index())
    doc = Document(text=text, doc_id=hashlib.sha256(text.encode()).hexdigest())
    assert step(doc) is doc
    for doc_id, reason in ((doc.doc_id, "duplicate_exact"), ("another id", "duplicate_near")):
        with pytest.raises(Drop) as drop:
            step(Document(text=text, doc_id=doc_id))
        assert drop.value.reason == reason
    assert list(step.index.claimed) == [doc.doc_id]  # the one claim, the copies refused


def test_the_index_takes_a_documents_signature_as_it_comes_and_remakes_one_of_another_width():
    """The workers sign each document (the last document step); the index compares that
    signature, not one of its own: a text signed as another's is that one's near duplicate.
    A signature of another width than the index's is made again from the text."""
    first, second = (" ".join(f"{word}{i}" for i in range(400)) for word in ("alpha", "omega"))
    step = Dedup(new_index())
    signed = Signature(64)(Document(text=first, doc_id="first"))
    assert signed.minhash == signature_of(first, 64)
    assert step(signed) is signed
    with pytest.raises(Drop, match="duplicate_near"):  # the second text, under the first's
        step(Document(text=second, doc_id="second", minhash=signed.minhash))
    narrow = Document(text=second, doc_id="third", minhash=signature_of(first, 16))
    assert step(narrow) is narrow  # signed again from its own text: no duplicate


def test_the_document_steps_sign_the_text_as_it_is_written():
    """The signature is made after personal data is replaced: of the text the shard gets."""
    milton = Path(__file__).resolve().parent.parent / "data/text/milton/areopagitica.txt"
    paragraphs = [" ".join(p.split()) for p in milton.read_text(encoding="utf-8").split("\n\n")
                  if len(p) > 400][10:14]
    text = "\n\n".join(paragraphs) + "\n\nLetters for the editor go to jane.doe@example.org."
    config = CrawlConfig()
    steps = document_steps(config)
    assert isinstance(steps[-1], Signature)
    doc = Steps(steps)(Document(text=text, doc_id=hashlib.sha256(text.encode()).hexdigest()))
    assert "<EMAIL>" in doc.text and doc.pii == {"email": 1}
    assert doc.minhash == signature_of(doc.text, config.minhash_perm) != \
        signature_of(text, config.minhash_perm)
