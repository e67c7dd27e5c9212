"""The databases of the shard catalog and the crawl state, on SQLAlchemy Core: SQLite files
under the home by default, or one PostgreSQL database for a fleet of crawlers
(`database_url`), with the same tables and statements on both.

    db = Database(config.database_url, home.catalog, METADATA)
    db.write(lambda conn: conn.execute(db.insert(table).values(...).on_conflict_do_nothing()))
    rows = db.read(lambda conn: conn.execute(select(table)).all())

Each table has a schema (`catalog`, `crawl`): PostgreSQL namespaces them by it, SQLite
files (one per schema) leave it out. A write is one transaction: SQLite's BEGIN IMMEDIATE
takes the file's write lock first, so writers of several processes are serialised, never
deadlocked. A PostgreSQL connection that drops (the server restarted, the backend
terminated) is found before use (pool_pre_ping) or fails the transaction, which rolls back
and runs again whole, a few times with back-off: never half applied. The work functions are
therefore written to be run again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from core.errors import Unavailable, UserError

log = structlog.get_logger()
T = TypeVar("T")
TRIES = 6  # about 10 s of back-off in all: a restarting server is back by then
URL_HELP = "give postgresql://user:password@host:port/database, or leave it empty for " \
           "the SQLite files under the home"


class epoch_now(sa.sql.functions.FunctionElement):
    """The database's clock in seconds since 1970 (one clock for every crawler of a fleet)."""

    type = sa.Float()
    inherit_cache = True


@compiles(epoch_now, "postgresql")
def _epoch_now_pg(element, compiler, **kw):
    return "extract(epoch from clock_timestamp())::float8"


@compiles(epoch_now, "sqlite")
def _epoch_now_sqlite(element, compiler, **kw):
    return "((julianday('now') - 2440587.5) * 86400.0)"


def _engine(url: str, path: Path) -> sa.Engine:
    if not url:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi, record):
            dbapi.isolation_level = None  # transactions are ours (BEGIN below), not the driver's
            dbapi.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            # Each commit is durable against a killed process; against a power cut, the
            # last ones may be lost, which the next crawl redoes or absorbs (no fsync each).
            dbapi.execute("PRAGMA synchronous=NORMAL")
            # A claim is a commit of a few pages: the log is copied back every 100 kB or so
            # (not SQLite's 4 MB), so it never takes much room on a nearly full disk.
            dbapi.execute("PRAGMA wal_autocheckpoint=25")

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read")
                                 else "BEGIN IMMEDIATE")

        return engine.execution_options(schema_translate_map={"catalog": None, "crawl": None})
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError:
        raise UserError(f"database_url {url!r} is not a database URL: {URL_HELP}") from None
    if parsed.get_backend_name() != "postgresql":
        raise UserError(f"database_url {parsed.render_as_string()} is not PostgreSQL: {URL_HELP}")
    if parsed.drivername == "postgresql":  # SQLAlchemy 2.1's default is psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg2")
    try:
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=2, connect_args={
            "connect_timeout": 10, "application_name": "cllm"})
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as e:
        raise UserError(f"database_url {parsed.render_as_string()}: {e}: {URL_HELP}") from None


def _transient(error: BaseException) -> bool:
    """A dropped or refused PostgreSQL connection, a deadlock, a serialization failure:
    worth running the transaction again. (SQLite's errors are not: its lock waits inside.)"""
    if not isinstance(error, exc.DBAPIError):
        return False
    postgres = type(error.orig).__module__.startswith("psycopg")
    return error.connection_invalidated or (isinstance(error, exc.OperationalError) and postgres)


class Database:
    """One database: the SQLite file `path`, or the PostgreSQL database of `url`; the tables
    of `metadata` are made (and columns added since, to a file of an older version)."""

    def __init__(self, url: str, path: Path, metadata: sa.MetaData):
        self.engine = _engine(url, path)
        self.where = f"database_url {self.engine.url.render_as_string()}" if url else str(path)
        self.dialect = self.engine.dialect.name
        self.write(lambda conn: self._create(conn, metadata))

    def insert(self, table: sa.Table):
        """The dialect's INSERT, with its `on_conflict_do_nothing` / `on_conflict_do_update`."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def compiled(self, statement: sa.Executable) -> Callable[[sa.Connection, dict], int]:
        """`statement` compiled once: `run(conn, params)` executes it and returns its rowcount.
        For the statements SQLAlchemy cannot cache (an INSERT of several VALUES rows), which
        it would compile again on every execution, a millisecond each."""
        translate = self.engine.get_execution_options().get("schema_translate_map")
        compiled = statement.compile(dialect=self.engine.dialect,
                                     schema_translate_map=translate,
                                     render_schema_translate=bool(translate))

        def run(conn: sa.Connection, params: dict) -> int:
            values = compiled.construct_params(params)
            if compiled.positiontup is not None:  # SQLite's "?" placeholders
                values = tuple(values[name] for name in compiled.positiontup)
            return conn.exec_driver_sql(compiled.string, values).rowcount

        return run

    def write(self, work: Callable[[sa.Connection], T]) -> T:
        """`work(conn)` in one transaction: all of it or none, run again on a dropped
        connection."""
        return self._run(work, {})

    def read(self, work: Callable[[sa.Connection], T]) -> T:
        return self._run(work, {"read": True})

    def _run(self, work: Callable[[sa.Connection], T], options: dict) -> T:
        try:
            for attempt in Retrying(retry=retry_if_exception(_transient), reraise=True,
                                    stop=stop_after_attempt(TRIES),
                                    wait=wait_exponential(multiplier=0.2, max=4),
                                    before_sleep=self._retrying):
                with attempt, self.engine.connect().execution_options(**options) as conn:
                    with conn.begin():
                        return work(conn)
        except exc.DBAPIError as e:
            if not _transient(e):
                raise
            line = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
            raise Unavailable(f"{self.where} cannot be reached ({line}) after {TRIES} tries: "
                              "start the PostgreSQL server or fix database_url "
                              f"({URL_HELP})") from None

    def _retrying(self, state) -> None:
        log.warning("database_retry", database=self.where, attempt=state.attempt_number,
                    error=str(state.outcome.exception()).splitlines()[0])

    def _create(self, conn: sa.Connection, metadata: sa.MetaData) -> None:
        if self.dialect == "postgresql":
            # Several crawlers starting at once: one makes the schemas, the others wait.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('cllm-schema'))"))
            for schema in {t.schema for t in metadata.tables.values()}:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        metadata.create_all(conn)
        _add_missing_columns(conn, metadata)

    def close(self) -> None:
        self.engine.dispose()


def _add_missing_columns(conn: sa.Connection, metadata: sa.MetaData) -> None:
    """Columns a table of an older version lacks (all nullable or with a default)."""
    inspector = sa.inspect(conn)
    for table in metadata.tables.values():
        schema = table.schema if conn.dialect.name == "postgresql" else None
        have = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
        for column in table.columns:
            if column.name not in have:
                ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                name = f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'
                conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN {ddl}"))
