"""The shard catalog: one SQLite row per complete Parquet shard, `$CLLM_HOME/catalog.sqlite`.

The crawler adds a row (state `new`) only after the shard file has been renamed into place,
so every row names a complete, readable file. Training marks the shards it used `consumed`
with the model version. Paths are stored relative to the home, so a home can be moved.

    with Catalog(home) as catalog:
        for shard in catalog.list_shards(state="new"):
            ...  # shard.path is absolute
        catalog.mark_consumed([s.path for s in shards], version="3")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.db import connect, transaction
from core.errors import UserError
from core.home import Home
from core.shards import text_row, write_shard

STATES = ("new", "consumed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    path TEXT PRIMARY KEY,           -- relative to the home: shards/<crawl_id>/part-NNNNN.parquet
    crawl_id TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created TEXT NOT NULL,           -- ISO 8601, UTC
    state TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'consumed')),
    consumed_by TEXT                 -- the model version that trained on it
);
CREATE INDEX IF NOT EXISTS shards_state ON shards (state);
"""


@dataclass(frozen=True)
class Shard:
    path: Path  # absolute
    name: str  # relative to the home, as plans and version tags name it
    crawl_id: str
    rows: int
    bytes: int
    sha256: str
    created: str
    state: str
    consumed_by: str | None


class Catalog:
    def __init__(self, home: Path | Home):
        self.home = Home(home)
        self.db = connect(self.home.catalog, _SCHEMA)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _relative(self, path: Path | str) -> str:
        path = Path(path)
        path = path if path.is_absolute() else self.home.root / path
        try:
            return self.home.relative(path)
        except ValueError:
            raise UserError(f"shard {path} is not under the home {self.home}: "
                            "shards must live in $CLLM_HOME/shards/") from None

    def add_shard(self, path: Path | str, crawl_id: str, rows: int, size: int, sha256: str) -> None:
        """Record a complete shard as `new`. Adding the same path again changes nothing."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.db.execute(
            "INSERT OR IGNORE INTO shards (path, crawl_id, rows, bytes, sha256, created) "
            "VALUES (?, ?, ?, ?, ?, ?)", (self._relative(path), crawl_id, rows, size, sha256, created))

    def list_shards(self, state: str | None = None, crawl_id: str | None = None) -> list[Shard]:
        """Shards in the order they were added, optionally of one state or one crawl."""
        if state is not None and state not in STATES:
            raise UserError(f"shard state {state!r} is unknown: use one of {', '.join(STATES)}")
        query, args = "SELECT * FROM shards WHERE 1=1", []
        if state is not None:
            query, args = query + " AND state = ?", args + [state]
        if crawl_id is not None:
            query, args = query + " AND crawl_id = ?", args + [crawl_id]
        rows = self.db.execute(query + " ORDER BY created, path", args).fetchall()
        return [Shard(self.home.root / r[0], *r) for r in rows]

    def has_shard(self, path: Path | str) -> bool:
        return self.db.execute("SELECT 1 FROM shards WHERE path = ?",
                               (self._relative(path),)).fetchone() is not None

    def mark_consumed(self, paths: list[Path | str], version: str) -> None:
        """Mark shards consumed by a model version, all of them or (on an error) none."""
        relative = [self._relative(p) for p in paths]
        with transaction(self.db):
            for rel in relative:
                cursor = self.db.execute(
                    "UPDATE shards SET state = 'consumed', consumed_by = ? WHERE path = ?",
                    (str(version), rel))
                if cursor.rowcount == 0:
                    raise UserError(f"shard {rel} is not in the catalog {self.home.catalog}: "
                                    "list shards with `cllm crawl` output or the catalog")


def import_texts(home: Path | Home, crawl_id: str, texts: list[str], part: int = 1) -> Path:
    """Plain texts (brought in from elsewhere, not crawled) as shard `part` of `crawl_id`,
    written whole and catalogued `new`, as a crawl does with the documents it keeps."""
    home = Home(home)
    path = home.crawl_shards(crawl_id) / f"part-{part:05d}.parquet"
    rows = [text_row(t, crawl_id, f"urn:cllm:{crawl_id}:{part}:{i}") for i, t in enumerate(texts)]
    info = write_shard(path, rows)
    with Catalog(home) as catalog:
        catalog.add_shard(path, crawl_id, info.rows, info.bytes, info.sha256)
    return path

