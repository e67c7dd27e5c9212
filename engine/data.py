"""Training data: documents from text files, folders or Parquet files; the token cache that
encodes each file once per tokenizer; random windows drawn from the tokens.

Every document is encoded and followed by the end-of-text token. The held-out split is
stable: a document's tokens are cut into segments of `SEGMENT` tokens, and a segment is
held out when the hash of (document, segment number) says so. Small documents are thus
held out whole, and a corpus of a few long files still gets a spread-out validation set.
A document is keyed by the sha256 of its text, which is a shard's `doc_id`.

The token cache keeps each file's two arrays, memory-mapped ever after:

    <cache>/<tokenizer sha256[:16]>/<file sha256[:16]>-v<val_fraction>/train.bin val.bin meta.json

keyed by the file's content, so a moved or renamed file still finds its arrays, and a
tokenizer of another lineage never reads them. `cllm train --data` and every
continuous-learning plan take their tokens from it.

The batch of a step is a pure function of (seed, step), so a resumed run draws exactly the
windows an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import UserError
from core.files import atomic_dir
from core.shards import is_parquet

SEGMENT = 2048


# --- documents ---------------------------------------------------------------------------


def list_files(paths: list[Path]) -> list[Path]:
    """The files named, and every file inside the folders named (hidden ones skipped)."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserError(f"data folder {path} holds no files: point --data at text or Parquet files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"data path {path} does not exist: check the --data argument")
    return files


def read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise UserError(f"data file {path} is binary, not text: pass UTF-8 text or Parquet shards")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"data file {path} is not UTF-8 text (byte {e.start}): "
                        "convert it to UTF-8 or leave it out") from None
    return text.replace("\r\n", "\n")


def read_parquet_texts(path: Path) -> list[str]:
    try:
        table = pq.read_table(path, columns=["text"])
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"Parquet shard {path} cannot be read ({e}): it is broken or has no "
                        "'text' column") from None
    kind = table.schema.field("text").type
    if not pa.types.is_string(kind) and not pa.types.is_large_string(kind):
        raise UserError(f"Parquet shard {path}: column 'text' is not a string column")
    return [t for t in table.column("text").to_pylist() if t]


def read_documents(path: Path) -> list[str]:
    """A file's documents: one per Parquet row, or the whole of a text file."""
    if is_parquet(path):
        return read_parquet_texts(path)
    text = read_text_file(path)
    return [text] if text.strip() else []


def iter_documents(paths: list[Path]) -> Iterator[str]:
    """Every document under `paths`."""
    for path in list_files(paths):
        yield from read_documents(path)


# --- tokens ------------------------------------------------------------------------------


def is_held_out(document_key: bytes, segment: int, val_fraction: float) -> bool:
    digest = hashlib.sha256(document_key + segment.to_bytes(8, "little")).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


def split_tokens(documents: list[str], tokenizer, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Encode the documents and split their tokens into train and held-out arrays."""
    dtype = tokenizer.dtype
    train_parts, val_parts = [], []
    for doc, ids in zip(documents, tokenizer.encode_batch(documents), strict=True):
        ids = np.asarray(ids + [tokenizer.eot_id], dtype=dtype)
        key = hashlib.sha256(doc.encode("utf-8")).digest()
        for n, start in enumerate(range(0, len(ids), SEGMENT)):
            target = val_parts if is_held_out(key, n, val_fraction) else train_parts
            target.append(ids[start : start + SEGMENT])
    return concat(train_parts, dtype), concat(val_parts, dtype)


def concat(arrays: list[np.ndarray], dtype) -> np.ndarray:
    """One array of several token arrays (each already ends its documents with EOT)."""
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


@dataclass
class TokenData:
    """What a training draws its windows from, and evaluates on."""

    train: np.ndarray
    val: np.ndarray

    def require(self, needed: int, what: str, hint: str) -> None:
        """A UserError unless both splits hold at least `needed` tokens."""
        if len(self.train) < needed or len(self.val) < needed:
            raise UserError(f"{what} too short: {len(self.train)} training and {len(self.val)} "
                            f"held-out tokens, but training needs {needed}: {hint}")


@dataclass
class FileTokens:
    """One file's tokens: memory-mapped from the cache, or (`pending`) just encoded, to be
    written by `TokenCache.save`."""

    folder: Path
    train: np.ndarray
    val: np.ndarray
    meta: dict = field(default_factory=dict)
    pending: bool = False


class TokenCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, tokenizer_sha256: str, file_sha256: str, val_fraction: float) -> Path:
        return self.root / tokenizer_sha256[:16] / f"{file_sha256[:16]}-v{val_fraction}"

    def tokens(self, path: Path, sha256: str, tokenizer, val_fraction: float) -> FileTokens:
        """The file's tokens, from the cache or encoded now (then pending until `save`)."""
        folder = self.folder(tokenizer.sha256, sha256, val_fraction)
        if (folder / "meta.json").is_file():
            meta = json.loads((folder / "meta.json").read_text())
            return FileTokens(folder, _open(folder / "train.bin", meta["dtype"], meta["train_tokens"]),
                              _open(folder / "val.bin", meta["dtype"], meta["val_tokens"]), meta)
        began = time.perf_counter()
        documents = read_documents(path)
        train, val = split_tokens(documents, tokenizer, val_fraction)
        meta = {"source": str(path), "documents": len(documents),
                "dtype": np.dtype(train.dtype).name, "train_tokens": len(train),
                "val_tokens": len(val), "bytes": sum(len(d.encode("utf-8")) for d in documents),
                "encode_seconds": round(time.perf_counter() - began, 4),
                "tokenizer_sha256": tokenizer.sha256}
        return FileTokens(folder, train, val, meta, pending=True)

    def save(self, entries: list[FileTokens]) -> None:
        """Write the entries encoded just now; each appears whole or not at all, and one that
        another process wrote first is kept."""
        for entry in entries:
            if not entry.pending:
                continue
            with atomic_dir(entry.folder, replace=False) as tmp:
                entry.train.tofile(tmp / "train.bin")
                entry.val.tofile(tmp / "val.bin")
                (tmp / "meta.json").write_text(json.dumps(entry.meta, indent=2))
            entry.pending = False

    def entries(self) -> list[dict]:
        """The meta of every entry in the cache (what was encoded, how fast)."""
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*/*/meta.json"))]


def _open(path: Path, dtype: str, length: int) -> np.ndarray:
    # np.memmap refuses an empty file; a file whose documents are all held out has one
    return np.memmap(path, dtype=dtype, mode="r") if length else np.zeros(0, dtype)


# --- windows -----------------------------------------------------------------------------


def batch_starts(n_tokens: int, seq_len: int, batch_size: int, seed: int, step: int,
                 parts: int = 1) -> np.ndarray:
    """Window start positions for one step: batch_size // parts from each of `parts` equal,
    disjoint slices of the data (distributed training gives each group its own slice).

    No two windows of a step share a start.
    """
    rng = np.random.default_rng([seed, step])
    span = n_tokens // parts
    per_part = batch_size // parts
    starts = []
    for part in range(parts):
        room = span - seq_len - 1  # windows stay inside the part, targets included
        if room < per_part:
            raise UserError(f"each of {parts} data parts holds {span} tokens, too few for "
                            f"{per_part} windows of {seq_len}: add data or lower --seq-len")
        starts.append(part * span + rng.choice(room + 1, size=per_part, replace=False))
    return np.concatenate(starts)


def windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-token targets (B, T) for windows at `starts`."""
    rows = np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts])
    return rows[:, :-1], rows[:, 1:]
