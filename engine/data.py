"""Training data: documents from text files, folders or Parquet shards; token arrays on disk;
random windows drawn from them.

Every document is encoded and followed by the end-of-text token. The held-out split is
stable: a document's tokens are cut into segments of `SEGMENT` tokens, and a segment is
held out when the hash of (document, segment number) says so. Small documents are thus
held out whole, and a corpus of a few long files still gets a spread-out validation set.

The batch of a step is a pure function of (seed, step), so a resumed run draws exactly the
windows an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import UserError

SEGMENT = 2048
PARQUET_MAGIC = b"PAR1"


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


def is_parquet(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == PARQUET_MAGIC


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
    if not pa.types.is_string(table.schema.field("text").type) and not pa.types.is_large_string(
        table.schema.field("text").type
    ):
        raise UserError(f"Parquet shard {path}: column 'text' is not a string column")
    return [t for t in table.column("text").to_pylist() if t]


def iter_documents(paths: list[Path]) -> Iterator[str]:
    """Every document under `paths`: one per text file, one per Parquet row."""
    for path in list_files(paths):
        if is_parquet(path):
            yield from read_parquet_texts(path)
        else:
            text = read_text_file(path)
            if text.strip():
                yield text


def is_held_out(document_key: bytes, segment: int, val_fraction: float) -> bool:
    digest = hashlib.sha256(document_key + segment.to_bytes(8, "little")).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def split_tokens(documents: list[str], tokenizer, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Encode the documents and split their tokens into train and held-out arrays."""
    dtype = token_dtype(tokenizer.vocab_size)
    train_parts, val_parts = [], []
    for doc, ids in zip(documents, tokenizer.encode_batch(documents), strict=True):
        ids = np.asarray(ids + [tokenizer.eot_id], dtype=dtype)
        key = hashlib.sha256(doc.encode("utf-8")).digest()
        for n, start in enumerate(range(0, len(ids), SEGMENT)):
            target = val_parts if is_held_out(key, n, val_fraction) else train_parts
            target.append(ids[start : start + SEGMENT])
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    return join(train_parts), join(val_parts)


def write_array(path: Path, array: np.ndarray) -> None:
    """A raw token array, written under a temporary name and renamed when complete."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    array.tofile(tmp)
    tmp.replace(path)


@dataclass
class TokenData:
    train: np.ndarray  # memory-mapped token arrays
    val: np.ndarray

    @classmethod
    def open(cls, folder: Path) -> TokenData:
        meta = json.loads((folder / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        mm = lambda name: np.memmap(folder / name, dtype=dtype, mode="r")  # noqa: E731
        return cls(train=mm("train.bin"), val=mm("val.bin"))


def data_fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def build_token_cache(files: list[Path], documents: list[str], tokenizer, cache_root: Path,
                      val_fraction: float, min_tokens: int) -> Path:
    """Encode once and keep the arrays under cache_root/<tokenizer>/<data>/; reuse after.

    Checks the corpus is long enough before anything is written.
    """
    folder = cache_root / tokenizer.sha256[:16] / f"{data_fingerprint(files)}-v{val_fraction}"
    if (folder / "meta.json").is_file():
        return folder
    train, val = split_tokens(documents, tokenizer, val_fraction)
    if len(train) < min_tokens or len(val) < min_tokens:
        raise UserError(
            f"the data is too short: {len(train)} training and {len(val)} held-out tokens, "
            f"but one window needs {min_tokens}: add text or lower --seq-len"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_array(folder / "train.bin", train)
    write_array(folder / "val.bin", val)
    meta = {"dtype": np.dtype(train.dtype).name, "train_tokens": len(train), "val_tokens": len(val),
            "tokenizer_sha256": tokenizer.sha256, "files": [str(f) for f in files]}
    (folder / "meta.json.tmp").write_text(json.dumps(meta, indent=2))
    (folder / "meta.json.tmp").replace(folder / "meta.json")
    return folder


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
