"""The token cache: each shard encoded once per tokenizer, memory-mapped ever after.

    $CLLM_HOME/tokens/<tokenizer sha256[:16]>/shards/<shard sha256[:16]>-v<val_fraction>/
        train.bin  val.bin  meta.json

A shard is keyed by its content hash from the catalog, so a renamed or moved home still finds
its arrays, and a tokenizer of another lineage never reads them. The held-out split is
`engine.data.split_tokens`: each document is keyed by the sha256 of its text, which is the
shard's `doc_id`, so the split is stable and per shard; old and new data can be evaluated
apart. A folder is written under a temporary name and renamed whole: a reader (or a run
killed midway) never finds half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crawler.shards import SCHEMA
from engine.data import is_parquet, read_parquet_texts, split_tokens, write_array
from engine.errors import UserError


@dataclass
class ShardTokens:
    train: np.ndarray  # memory-mapped
    val: np.ndarray
    meta: dict


def shard_problem(path: Path, sha256: str) -> str | None:
    """Why a catalogued shard cannot be trained on, or None when it can."""
    if not path.is_file():
        return "the file is missing"
    if path.stat().st_size < 8 or not is_parquet(path):
        return "not a Parquet file"
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        return f"unreadable Parquet ({e})"
    for field in SCHEMA:
        if field.name not in schema.names:
            return f"does not match the shard schema: no column {field.name!r}"
        found = schema.field(field.name).type
        if found != field.type:
            return (f"does not match the shard schema: column {field.name!r} is {found}, "
                    f"not {field.type}")
    if _file_sha256(path) != sha256:
        return "its content changed since it was catalogued (sha256 differs)"
    return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_folder(cache_root: Path, tokenizer_sha256: str, shard_sha256: str,
                 val_fraction: float) -> Path:
    return cache_root / tokenizer_sha256[:16] / "shards" / f"{shard_sha256[:16]}-v{val_fraction}"


def shard_tokens(path: Path, sha256: str, tokenizer, cache_root: Path,
                 val_fraction: float) -> ShardTokens:
    """The shard's train and held-out tokens, encoded now if the cache lacks them."""
    folder = entry_folder(cache_root, tokenizer.sha256, sha256, val_fraction)
    if not (folder / "meta.json").is_file():
        _build(path, folder, tokenizer, val_fraction)
    meta = json.loads((folder / "meta.json").read_text())
    return ShardTokens(train=_open(folder / "train.bin", meta["dtype"], meta["train_tokens"]),
                       val=_open(folder / "val.bin", meta["dtype"], meta["val_tokens"]),
                       meta=meta)


def _open(path: Path, dtype: str, length: int) -> np.ndarray:
    # np.memmap refuses an empty file; a shard whose documents are all held out has one
    return np.memmap(path, dtype=dtype, mode="r") if length else np.zeros(0, dtype)


def _build(path: Path, folder: Path, tokenizer, val_fraction: float) -> None:
    began = time.perf_counter()
    documents = read_parquet_texts(path)
    train, val = split_tokens(documents, tokenizer, val_fraction)
    seconds = time.perf_counter() - began
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    write_array(tmp / "train.bin", train)
    write_array(tmp / "val.bin", val)
    meta = {"shard": str(path), "documents": len(documents), "dtype": np.dtype(train.dtype).name,
            "train_tokens": len(train), "val_tokens": len(val),
            "bytes": sum(len(d.encode("utf-8")) for d in documents),
            "encode_seconds": round(seconds, 4), "tokenizer_sha256": tokenizer.sha256}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        tmp.rename(folder)
    except OSError:  # another process finished the same entry first: theirs is as good
        shutil.rmtree(tmp)
        if not (folder / "meta.json").is_file():
            raise


def concat(arrays: list[np.ndarray], dtype) -> np.ndarray:
    """One array of several shards' tokens (each already ends its documents with EOT)."""
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def require_tokens(tokens: np.ndarray, needed: int, what: str) -> None:
    if len(tokens) < needed:
        raise UserError(f"{what} hold only {len(tokens)} tokens, fewer than the {needed} one "
                        "batch of windows needs: crawl more text before training")
