"""The one place that runs DDL on user tables.

Every method runs on the caller's connection inside its transaction: on PostgreSQL and on SQLite
(transactional DDL is switched on in ``db.make_engine``) a failed change rolls back with its data.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Index, Table, create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from formwork import db

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog

log = logging.getLogger(__name__)


class SchemaEditor:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.ops = Operations(MigrationContext.configure(conn))

    def create_table(self, table: Table) -> None:
        table.create(self.conn)

    def add_column(self, table: Table, column: Column[Any]) -> None:
        self.ops.add_column(table.name, Column(column.name, column.type, nullable=True))

    def drop_column(self, table: Table, column_name: str) -> None:
        for ix in list(table.indexes):
            if any(c.name == column_name for c in ix.columns):
                self.drop_index(ix)
        if self.dialect == "sqlite":  # PostgreSQL drops an index with its column; SQLite refuses (e.g. views' indexes)
            for info in inspect(self.conn).get_indexes(table.name):
                if column_name in (info.get("column_names") or []) and info.get("name"):
                    handle = Index(str(info["name"]), table.c[column_name])
                    table.indexes.discard(handle)
                    self.drop_index(handle)
        self.ops.drop_column(table.name, column_name)

    def create_index(self, index: Index) -> None:
        index.create(self.conn)

    def drop_index(self, index: Index) -> None:
        index.drop(self.conn, checkfirst=True)

    def drop_table(self, table: Table) -> None:
        table.drop(self.conn, checkfirst=True)

    def create_search_index(self, table: Table, column_names: list[str], later: bool = False) -> None:
        """PostgreSQL: a trigram index per text column so ``search=`` (ILIKE) stays indexed.

        Building one reads every row. ``later`` builds it after the transaction commits, in a
        background thread (search works unindexed until it is there), so adding or converting a field on
        a big table does not wait for it. A build that never happened (the process stopped) is made up
        by ``ensure_search_indexes`` (the worker's tick).
        """
        if self.dialect != "postgresql":
            return
        if later:
            engine = self.conn.engine
            wanted = [(table.name, name) for name in column_names]

            def start() -> None:
                build_search_indexes_later(engine, wanted)

            db.after_commit(self.conn, start)
            return
        self.conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        for name in column_names:
            ix = Index(search_index_name(table.name, name), table.c[name], postgresql_using="gin",
                       postgresql_ops={name: "gin_trgm_ops"})
            ix.create(self.conn, checkfirst=True)
            table.indexes.discard(ix)


def search_index_name(table_name: str, column_name: str) -> str:
    return f"tg_{table_name}_{column_name}"


_builds: list[threading.Thread] = []
_builds_lock = threading.Lock()


def build_search_indexes_later(engine: Engine, wanted: list[tuple[str, str]]) -> threading.Thread:
    """Build trigram indexes ``(table, column)`` in a background thread (see ``create_search_index``)."""
    thread = threading.Thread(target=build_search_indexes, args=(engine, wanted), name="formwork-search-index",
                              daemon=True)
    with _builds_lock:
        _builds[:] = [t for t in _builds if t.is_alive()]
        _builds.append(thread)
    thread.start()
    return thread


def wait_for_search_indexes(timeout: float = 60) -> None:
    """Wait for the background builds this process started (tests; a clean shutdown)."""
    with _builds_lock:
        pending = list(_builds)
    for t in pending:
        t.join(timeout)


#: how long a background build waits for the table's writers before it gives up for now (it retries, and
#: writers that arrive meanwhile queue behind it for at most this long)
BUILD_LOCK_TIMEOUT_MS = 1000
BUILD_TRIES = 5


def build_search_indexes(engine: Engine, wanted: list[tuple[str, str]]) -> int:
    """Create the trigram indexes ``(table, column)`` that are missing or left invalid; a column or table
    that is gone by now is skipped. Returns how many were built.

    Not ``CONCURRENTLY``: a concurrent build holds its table lock while it waits for every older
    transaction, so a transaction that then changes the table's columns (the next field added) deadlocks
    with it. A plain build waits for the lock it needs only ``BUILD_LOCK_TIMEOUT_MS`` (then tries again,
    ``BUILD_TRIES`` times; the worker's tick after that), and holds it while it reads the column: writes to
    the table wait that long (≈ 65 ms per 100k rows here).
    """
    built = 0
    # a connection of its own (not from the app's pool): the app may dispose of its pool meanwhile
    own = create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with own.connect() as conn:
            prep = conn.dialect.identifier_preparer
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            conn.exec_driver_sql(f"SET lock_timeout = {int(BUILD_LOCK_TIMEOUT_MS)}")
            for table_name, column in wanted:
                name = search_index_name(table_name, column)
                state = conn.execute(text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = :n"), {"n": name}).first()
                if state is not None and state[0]:
                    continue
                if state is not None:  # an interrupted concurrent build (older versions) leaves it invalid
                    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prep.quote(name)}")
                for attempt in range(BUILD_TRIES):
                    present = conn.execute(text(
                        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND table_name = :t AND column_name = :c"), {"t": table_name, "c": column}).first()
                    if present is None:
                        break
                    try:
                        conn.exec_driver_sql(
                            f"CREATE INDEX IF NOT EXISTS {prep.quote(name)} ON {prep.quote(table_name)} "
                            f"USING gin ({prep.quote(column)} gin_trgm_ops)")
                        built += 1
                        break
                    except OperationalError as e:  # lock timeout (or the column went away meanwhile)
                        if attempt == BUILD_TRIES - 1:
                            raise
                        log.info("search index %s waits for its table (%s)", name, e.orig)
                        time.sleep(0.2 * (attempt + 1))
    except Exception:  # noqa: BLE001 - search still works without the index; the worker tries again
        log.warning("could not build search indexes %s", wanted, exc_info=True)
    finally:
        own.dispose()
    return built


def ensure_search_indexes(engine: Engine, catalog: Catalog) -> int:
    """Build every searchable field's trigram index that is missing or invalid (PostgreSQL)."""
    if engine.dialect.name != "postgresql":
        return 0
    wanted = [(t.name, f.column_name) for t in catalog.tables_by_id.values() for f in t.fields
              if f.ftype.searchable and f.stored]
    if not wanted:
        return 0
    with engine.connect() as conn:
        valid = {r[0] for r in conn.execute(text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indisvalid AND c.relname LIKE 'tg\\_%'"))}
    missing = [w for w in wanted if search_index_name(*w) not in valid]
    return build_search_indexes(engine, missing) if missing else 0
