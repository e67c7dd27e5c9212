"""Parquet shards in the architecture's schema, written so no reader sees half of one.

A shard is `$CLLM_HOME/shards/<crawl_id>/part-NNNNN.parquet`. Rows are written to a hidden
temp file (`.part-NNNNN.parquet.tmp`) one row group at a time; once the file reaches the
size limit, or the crawl ends, it is closed, synced and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

import crawler

SCHEMA_VERSION = "1"
SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("canonical_url", pa.string()),
        ("domain", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("http_status", pa.int16()),
        ("content_type", pa.string()),
        ("n_chars", pa.int32()),
        ("crawl_id", pa.string()),
    ],
    metadata={"cllm.schema_version": SCHEMA_VERSION, "cllm.crawler_version": crawler.__version__},
)
_PART = re.compile(r"part-(\d{5})\.parquet")


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    rows: int
    bytes: int
    sha256: str


def shard_files(home: Path) -> list[Path]:
    """Every complete shard under a home, oldest crawl first."""
    return sorted(Path(home).glob("shards/*/part-*.parquet"))


def remove_temp_files(crawl_dir: Path) -> None:
    """Half-written shards of a crawl that was killed: never visible, now gone."""
    for tmp in crawl_dir.glob(".part-*.parquet.tmp"):
        tmp.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(path: Path) -> ShardInfo:
    return ShardInfo(path, pq.ParquetFile(path).metadata.num_rows, path.stat().st_size, _sha256(path))


class ShardWriter:
    """Buffers rows, writes row groups of `row_group_rows`, rotates at `max_bytes`;
    `on_commit(ShardInfo)` runs after each shard is renamed into place."""

    def __init__(self, crawl_dir: Path, max_bytes: int, row_group_rows: int,
                 on_commit: Callable[[ShardInfo], None]):
        self.dir = crawl_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.row_group_rows, self.on_commit = max_bytes, row_group_rows, on_commit
        numbers = [int(m.group(1)) for p in self.dir.iterdir() if (m := _PART.fullmatch(p.name))]
        self.next_number = max(numbers, default=0) + 1
        self.rows: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.tmp: Path | None = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.row_group_rows:
            self._write_row_group()
            if self.tmp.stat().st_size >= self.max_bytes:
                self._commit()

    def close(self) -> None:
        """Write what is buffered and commit the last shard."""
        if self.rows:
            self._write_row_group()
        if self.writer is not None:
            self._commit()

    def _write_row_group(self) -> None:
        if self.writer is None:
            self.tmp = self.dir / f".part-{self.next_number:05d}.parquet.tmp"
            self.writer = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA),
                                row_group_size=self.row_group_rows)
        self.rows = []

    def _commit(self) -> None:
        self.writer.close()
        with self.tmp.open("rb") as f:
            os.fsync(f.fileno())
        final = self.dir / f"part-{self.next_number:05d}.parquet"
        os.replace(self.tmp, final)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
        self.writer, self.tmp = None, None
        self.next_number += 1
        self.on_commit(describe(final))
