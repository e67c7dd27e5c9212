"""The shard catalog: one row per complete Parquet shard, in `$CLLM_HOME/catalog.sqlite` or
(with `database_url`) the table `catalog.shards` of the fleet's PostgreSQL database.

The crawler adds a row (state `new`) only after the shard file has been renamed into place,
so every row names a complete, readable file. Training marks the shards it used `consumed`
with the model version. `cllm reprocess` (pipeline/reprocess.py) marks the shards it rewrote
`retired`, `replaced_by` the shard that took each one's place: out of every plan, still in
the lineage of the versions that learned it. Paths are stored relative to the home, so a home
can be moved.

    with Catalog(home, database_url) as catalog:     # or Catalog.of(config)
        for shard in catalog.list_shards(state="new"):
            ...  # shard.path is absolute
        catalog.mark_consumed([s.path for s in shards], version="3")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from core.db import Database
from core.errors import UserError
from core.home import Home
from core.shards import ShardInfo, text_row, write_shard

STATES = ("new", "consumed", "retired")
_KNOWN_STATES = f"state IN ({', '.join(repr(s) for s in STATES)})"

METADATA = sa.MetaData()
SHARDS = sa.Table(
    "shards", METADATA,
    # relative to the home: shards/<crawl_id>/part-NNNNN.parquet
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("crawl_id", sa.Text, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("created", sa.Text, nullable=False),  # ISO 8601, UTC
    sa.Column("state", sa.Text, nullable=False, server_default="new"),
    sa.Column("consumed_by", sa.Text),  # the model version that trained on it
    sa.Column("replaced_by", sa.Text),  # retired: the shard (path) rewritten from it
    sa.CheckConstraint(_KNOWN_STATES, name="shards_state_known"),
    sa.Index("shards_state", "state"),
    schema="catalog",
)


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
    replaced_by: str | None = None


def _allow_all_states(conn: sa.Connection) -> None:
    """A catalog made before a state was added checks for the old list: checked anew."""
    schema = "catalog" if conn.dialect.name == "postgresql" else None
    checks = sa.inspect(conn).get_check_constraints("shards", schema=schema)
    if all("retired" in c["sqltext"] for c in checks):
        return
    if schema:
        conn.execute(sa.text("ALTER TABLE catalog.shards DROP CONSTRAINT shards_state_known"))
        conn.execute(sa.text("ALTER TABLE catalog.shards ADD CONSTRAINT shards_state_known "
                             f"CHECK ({_KNOWN_STATES})"))
        return
    # SQLite changes no constraint: the table is made again, its rows copied over
    columns = ", ".join(c.name for c in SHARDS.columns)
    conn.exec_driver_sql("DROP INDEX IF EXISTS shards_state")
    conn.exec_driver_sql("ALTER TABLE shards RENAME TO shards_old")
    SHARDS.create(conn)
    conn.exec_driver_sql(f"INSERT INTO shards ({columns}) SELECT {columns} FROM shards_old")
    conn.exec_driver_sql("DROP TABLE shards_old")


class Catalog:
    def __init__(self, home: Path | Home, database_url: str = ""):
        self.home = Home(home)
        self.db = Database(database_url, self.home.catalog, METADATA)
        self.db.write(_allow_all_states)

    @classmethod
    def of(cls, config) -> Catalog:
        """The catalog of a loaded configuration (its `home` and `database_url`)."""
        return cls(config.home, config.database_url)

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
        row = {"path": self._relative(path), "crawl_id": crawl_id, "rows": rows, "bytes": size,
               "sha256": sha256, "created": created}
        insert = self.db.insert(SHARDS).values(row).on_conflict_do_nothing(index_elements=["path"])
        self.db.write(lambda conn: conn.execute(insert))

    def list_shards(self, state: str | None = None, crawl_id: str | None = None) -> list[Shard]:
        """Shards in the order they were added, optionally of one state or one crawl."""
        if state is not None and state not in STATES:
            raise UserError(f"shard state {state!r} is unknown: use one of {', '.join(STATES)}")
        query = sa.select(SHARDS).order_by(SHARDS.c.created, SHARDS.c.path)
        if state is not None:
            query = query.where(SHARDS.c.state == state)
        if crawl_id is not None:
            query = query.where(SHARDS.c.crawl_id == crawl_id)
        rows = self.db.read(lambda conn: conn.execute(query).all())
        return [Shard(self.home.root / r.path, r.path, *r[1:]) for r in rows]

    def has_shard(self, path: Path | str) -> bool:
        query = sa.select(SHARDS.c.path).where(SHARDS.c.path == self._relative(path))
        return self.db.read(lambda conn: conn.execute(query).first()) is not None

    def replace(self, replaced: list[tuple[Shard, ShardInfo | None]], crawl_id: str,
                added: list[ShardInfo] = ()) -> None:
        """Catalogue the shards of a reprocessing (`crawl_id`) and retire those they replace,
        in one transaction. A replacement (None: its documents all dropped) of a consumed
        shard is consumed by the same version: it holds none but documents learned. The
        `added` shards (documents no old shard held) are `new`."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")

        def insert(conn: sa.Connection, info: ShardInfo, consumed_by: str | None) -> None:
            conn.execute(SHARDS.insert().values(
                path=self._relative(info.path), crawl_id=crawl_id, rows=info.rows,
                bytes=info.bytes, sha256=info.sha256, created=created,
                state="consumed" if consumed_by else "new", consumed_by=consumed_by))

        def work(conn: sa.Connection) -> None:
            for info in added:
                insert(conn, info, None)
            for old, new in replaced:
                if new is not None:
                    insert(conn, new, old.consumed_by if old.state == "consumed" else None)
                conn.execute(SHARDS.update().where(SHARDS.c.path == old.name).values(
                    state="retired", replaced_by=new and self._relative(new.path)))

        self.db.write(work)

    def mark_consumed(self, paths: list[Path | str], version: str) -> None:
        """Mark shards consumed by a model version, all of them or (on an error) none."""
        relative = [self._relative(p) for p in paths]

        def mark(conn: sa.Connection) -> None:
            for rel in relative:
                done = conn.execute(SHARDS.update().where(SHARDS.c.path == rel)
                                    .values(state="consumed", consumed_by=str(version)))
                if done.rowcount == 0:
                    raise UserError(f"shard {rel} is not in the catalog ({self.db.where}): "
                                    "list shards with `cllm crawl` output or the catalog")

        self.db.write(mark)


def import_texts(home: Path | Home, crawl_id: str, texts: list[str], part: int = 1,
                 database_url: str = "") -> Path:
    """Plain texts (brought in from elsewhere, not crawled) as shard `part` of `crawl_id`,
    written whole and catalogued `new`, as a crawl does with the documents it keeps."""
    home = Home(home)
    path = home.crawl_shards(crawl_id) / f"part-{part:05d}.parquet"
    rows = [text_row(t, crawl_id, f"urn:cllm:{crawl_id}:{part}:{i}") for i, t in enumerate(texts)]
    info = write_shard(path, rows)
    with Catalog(home, database_url) as catalog:
        catalog.add_shard(path, crawl_id, info.rows, info.bytes, info.sha256)
    return path

