"""The shard format: Parquet files in the architecture's schema, written so no reader sees
half of one, and the check that a file still is one.

A shard is `$CLLM_HOME/shards/<crawl_id>/part-NNNNN.parquet`, or `part-<process>-NNNNN.parquet`
when the processes of a fleet write into one folder (the process id is unique). Rows are written to a hidden
temp file (`.part-NNNNN.parquet.tmp`) one row group at a time; once the file reaches the
size limit, or the writer is closed, it is closed, synced and renamed into place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from core.files import atomic_path, file_sha256, publish, sync_file

if TYPE_CHECKING:  # warcio (and fsspec under it) only where a crawl archives
    from core.warc import Fetched, WarcFile

# 2: language identified from the text, its score, the declared one; 3: its WARC record
SCHEMA_VERSION = "3"
SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("canonical_url", pa.string()),
        ("domain", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("declared_language", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("http_status", pa.int16()),
        ("content_type", pa.string()),
        ("n_chars", pa.int32()),
        ("crawl_id", pa.string()),
        # the page's response in the raw archive (core/warc.py): the file, relative to the
        # home, and the byte offset of its record; null without `keep_warc`
        ("warc_file", pa.string()),
        ("warc_offset", pa.int64()),
    ],
    metadata={"cllm.schema_version": SCHEMA_VERSION,
              "cllm.crawler_version": version("crystalline")},
)
# columns added since schema 1: a shard of an older schema is still one
SINCE_2 = {"language_score", "declared_language"}
SINCE_3 = {"warc_file", "warc_offset"}
# A crawl's dropped documents (crawl/dropped/<crawl_id>/part-NNNNN.parquet, crawler/drops.py):
# each with its reason and detail, the text of a sample of them (null for the others).
DROPS_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("text", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("crawl_id", pa.string()),
    ],
    metadata={"cllm.schema_version": "1", "cllm.crawler_version": version("crystalline")},
)
PARQUET_MAGIC = b"PAR1"
WARC_SUFFIX = ".warc.gz"
REPROCESSED = "reprocess-"  # the crawl id of shards rewritten by `cllm reprocess`


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    rows: int
    bytes: int
    sha256: str


def shard_files(home: Path) -> list[Path]:
    """Every complete shard under a home, oldest crawl first."""
    return sorted(Path(home).glob("shards/*/part-*.parquet"))


def remove_temp_files(crawl_dir: Path, process: str = "") -> None:
    """Half-written shards (or archives) of a crawl that was killed (or of one process of a
    fleet): never visible, now gone."""
    for tmp in crawl_dir.glob(f".part-{process + '-' if process else ''}*.tmp"):
        tmp.unlink()


def settle_temp_files(crawl_dir: Path, warc_dir: Path | None,
                      committed: Callable[[Path], bool], process: str = "") -> list[Path]:
    """What a killed writer (or one process of a fleet) left under temp names: a shard whose
    commit went through (`committed(final path)`, see `ShardWriter`) is complete, so it is
    renamed into place, its archive first; every other temp file is removed. Returns the
    shards put in place."""
    placed = []
    for tmp in sorted(crawl_dir.glob(f".part-{process + '-' if process else ''}*.parquet.tmp")):
        final = crawl_dir / tmp.name[1:-len(".tmp")]
        if not committed(final):
            continue
        warc = warc_dir / f".{final.stem}{WARC_SUFFIX}.tmp" if warc_dir is not None else None
        if warc is not None and warc.exists():
            publish(warc, warc.with_name(warc.name[1:-len(".tmp")]))
        publish(tmp, final)
        placed.append(final)
    remove_temp_files(crawl_dir, process)
    if warc_dir is not None:
        remove_temp_files(warc_dir, process)
    return placed


def is_parquet(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == PARQUET_MAGIC


def describe(path: Path) -> ShardInfo:
    return ShardInfo(path, pq.ParquetFile(path).metadata.num_rows, path.stat().st_size,
                     file_sha256(path))


def text_row(text: str, crawl_id: str, url: str, title: str = "") -> dict:
    """A row of the schema for a document that was not fetched (text brought in from
    elsewhere): status 200, plain text, language undetermined, dated now."""
    return {"doc_id": hashlib.sha256(text.encode("utf-8")).hexdigest(), "url": url,
            "canonical_url": url, "domain": urlsplit(url).hostname or "", "title": title,
            "text": text, "language": "und", "language_score": 0.0, "declared_language": "und",
            "fetched_at": datetime.now(timezone.utc),
            "http_status": 200, "content_type": "text/plain", "n_chars": len(text),
            "crawl_id": crawl_id}


class _NoPandas:
    """An import finder that refuses pandas."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas":
            raise ImportError("pandas is not for this process")


def without_pandas() -> None:
    """Have pyarrow take this process's rows without looking for pandas objects among them.
    Its first conversion of Python objects imports pandas only to recognise its types: 40 MB
    and 0.2 s a process, where a crawl hands it none. pandas stays importable, and pyarrow
    imports it after all on the first `to_pandas()`. For a process that never makes pandas
    objects (the crawl); a no-op where pandas is imported already."""
    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _NoPandas)  # pyarrow's one try fails, and it goes without
    try:
        pa.array([], pa.string())
    finally:
        sys.meta_path.remove(_NoPandas)


def write_shard(path: Path, rows: list[dict], schema: pa.Schema = SCHEMA) -> ShardInfo:
    """Rows as one complete shard at `path` (or a file of another `schema`), written whole
    (see `ShardWriter` for a shard that grows as a crawl goes)."""
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
    return describe(path)


def last_part(folder: Path, prefix: str = "part-", suffix: str = ".parquet") -> int:
    """The number of the highest <prefix>NNNNN<suffix> in a folder; 0 with none."""
    number = re.compile(rf"(\d{{5}}){re.escape(suffix)}")
    return max((int(m.group(1)) for p in folder.glob(f"{prefix}*{suffix}")
                if (m := number.fullmatch(p.name[len(prefix):]))), default=0)


def shard_problem(path: Path, sha256: str) -> str | None:
    """Why a catalogued shard cannot be read as one, or None when it can."""
    if not path.is_file():
        return "the file is missing"
    if not is_parquet(path):
        return "not a Parquet file"
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        return f"unreadable Parquet ({e})"
    for field in SCHEMA:
        if field.name not in schema.names:
            if field.name in SINCE_2 | SINCE_3:
                continue
            return f"does not match the shard schema: no column {field.name!r}"
        found = schema.field(field.name).type
        if found != field.type:
            return (f"does not match the shard schema: column {field.name!r} is {found}, "
                    f"not {field.type}")
    if file_sha256(path) != sha256:
        return "its content changed since it was catalogued (sha256 differs)"
    return None


class ShardWriter:
    """Buffers rows, writes row groups of `row_group_rows`, rotates at `max_bytes`.
    A complete shard is synced under its temp name, then `on_ready(ShardInfo)` (its final
    path) makes it count, then it is renamed into place and `on_commit(ShardInfo)` runs.
    `on_ready` is where the caller commits what the shard's documents settle (a crawl's
    state): a kill after that commit leaves a shard `settle_temp_files` renames, a kill
    before it one it removes. `on_ready` returns False when its commit failed: the temp file
    is left for `settle_temp_files` to judge, and nothing more is written. A caller with a
    time limit as well calls `close()` when it is up: the next row starts a new shard. With
    `process`, its shards are `part-<process>-NNNNN.parquet`. With `warc_dir`, `archive`
    writes responses into the shard's WARC file there (core/warc.py), renamed into place
    just before the shard."""

    def __init__(self, crawl_dir: Path, max_bytes: int, row_group_rows: int,
                 on_commit: Callable[[ShardInfo], None], process: str = "",
                 warc_dir: Path | None = None,
                 on_ready: Callable[[ShardInfo], bool] = lambda shard: True):
        self.dir, self.warc_dir = crawl_dir, warc_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.row_group_rows = max_bytes, row_group_rows
        self.on_ready, self.on_commit = on_ready, on_commit
        self.name = f"part-{process}-" if process else "part-"
        # an archive of drops only (the end of a crawl) takes a number without a shard
        self.next_number = max(last_part(self.dir, self.name),
                               last_part(warc_dir, self.name, WARC_SUFFIX) if warc_dir else 0) + 1
        self.rows: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.tmp: Path | None = None
        self.warc: WarcFile | None = None

    @property
    def stem(self) -> str:
        return f"{self.name}{self.next_number:05d}"

    def archive(self, fetched: Fetched) -> tuple[Path, int]:
        """A response into the archive of the shard being written: the archive's final path
        and the record's offset (for the rows that point to it)."""
        if self.warc is None:
            self.warc_dir.mkdir(parents=True, exist_ok=True)
            from core.warc import WarcFile

            self.warc = WarcFile(self.warc_dir / f".{self.stem}{WARC_SUFFIX}.tmp")
        return self.warc_dir / f"{self.stem}{WARC_SUFFIX}", self.warc.add(fetched)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.row_group_rows:
            self._write_row_group()
            if self.tmp.stat().st_size >= self.max_bytes:
                self._commit()

    @property
    def pending(self) -> bool:
        """Whether rows were added since the last shard was committed."""
        return bool(self.rows) or self.writer is not None

    def close(self) -> None:
        """Write what is buffered and commit the last shard (or the archive of the pages
        dropped since the last one)."""
        if self.rows:
            self._write_row_group()
        if self.writer is not None:
            self._commit()
        elif self.warc is not None:
            self._publish_warc()
            self.next_number += 1

    def remove_temp_files(self, process: str = "") -> None:
        """What is being written is lost (a full disk, a process given up)."""
        if self.warc is not None:
            self.warc.close()
            self.warc = None
        remove_temp_files(self.dir, process)
        if self.warc_dir is not None:
            remove_temp_files(self.warc_dir, process)

    def _write_row_group(self) -> None:
        if self.writer is None:
            self.tmp = self.dir / f".{self.stem}.parquet.tmp"
            self.writer = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA),
                                row_group_size=self.row_group_rows)
        self.rows = []

    def _publish_warc(self) -> None:
        self.warc.close()
        publish(self.warc.path, self.warc_dir / f"{self.stem}{WARC_SUFFIX}")
        self.warc = None

    def _commit(self) -> None:
        self.writer.close()
        sync_file(self.tmp)
        if self.warc is not None:
            self.warc.close()
            sync_file(self.warc.path)
        final = self.dir / f"{self.stem}.parquet"
        shard = dataclasses.replace(describe(self.tmp), path=final)
        tmp, self.writer, self.tmp = self.tmp, None, None
        if not self.on_ready(shard):
            self.warc = None
            self.next_number += 1
            return
        if self.warc is not None:  # first: a shard in place always has its archive
            self._publish_warc()
        publish(tmp, final)
        self.next_number += 1
        self.on_commit(shard)
