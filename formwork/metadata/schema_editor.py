"""The one place that runs DDL on user tables.

Every method runs on the caller's connection inside its transaction: on PostgreSQL and on SQLite
(transactional DDL is switched on in ``db.make_engine``) a failed change rolls back with its data.
"""

from __future__ import annotations

from typing import Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Index, Table, inspect, text
from sqlalchemy.engine import Connection


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

    def create_search_index(self, table: Table, column_names: list[str]) -> None:
        """PostgreSQL: a trigram index per text column so ``search=`` (ILIKE) stays indexed."""
        if self.dialect != "postgresql":
            return
        self.conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        for name in column_names:
            ix = Index(f"tg_{table.name}_{name}", table.c[name], postgresql_using="gin",
                       postgresql_ops={name: "gin_trgm_ops"})
            ix.create(self.conn, checkfirst=True)
            table.indexes.discard(ix)
