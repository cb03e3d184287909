"""Many rows in one go: COPY on PostgreSQL, the driver's own executemany on SQLite.

Both skip SQLAlchemy's per-row statement machinery (a parameter dict per row, compiled parameters,
RETURNING bookkeeping) but not the columns' bind processing, so a value is stored exactly as an INSERT
through Core stores it. Rows are tuples in the order of ``names``; a column named in ``json_text`` takes
JSON already written as text (or None for SQL NULL), which spares encoding the same value twice.
Constraint errors surface as SQLAlchemy's IntegrityError, as from an INSERT.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError


def _processors(conn: Connection, table: Table, names: Sequence[str], json_text: Collection[str]) -> list[Any]:
    dialect = conn.dialect
    return [None if n in json_text else table.c[n].type.dialect_impl(dialect).bind_processor(dialect)
            for n in names]


def _processed(rows: Iterable[Sequence[Any]], procs: list[Any]) -> Iterable[Sequence[Any]]:
    active = [(i, p) for i, p in enumerate(procs) if p is not None]
    if not active:
        return rows
    out = []
    last: dict[int, tuple[Any, Any]] = {}  # per column the last value and its result: stamps repeat on every row
    for row in rows:
        values = list(row)
        for i, p in active:
            v = values[i]
            if v is not None:
                hit = last.get(i)
                if hit is not None and hit[0] is v:
                    values[i] = hit[1]
                else:
                    values[i] = p(v)
                    last[i] = (v, values[i])
        out.append(tuple(values))
    return out


def insert_rows(conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]],
                json_text: Collection[str] = ()) -> None:
    """Insert ``rows`` (tuples in ``names`` order) into ``table`` in the caller's transaction."""
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    cols = ", ".join(quote(n) for n in names)
    procs = _processors(conn, table, names, json_text)
    if conn.dialect.name == "postgresql":
        sql = f"COPY {quote(table.name)} ({cols}) FROM STDIN"
        raw = conn.connection.driver_connection
        import psycopg

        try:
            with raw.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
                for row in _processed(rows, procs):
                    copy.write_row(row)
        except psycopg.errors.IntegrityError as e:  # as INSERT would report it (a unique value clash)
            raise IntegrityError(sql, None, e) from None
        return
    marks = ", ".join("?" for _ in names)
    sql = f"INSERT INTO {quote(table.name)} ({cols}) VALUES ({marks})"  # noqa: S608 - quoted identifiers only
    conn.exec_driver_sql(sql, [tuple(r) for r in _processed(rows, procs)])


def insert_rows_ids(conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
    """SQLite: insert ``rows`` and return their new ids in row order.

    The writer holds SQLite's write lock (BEGIN IMMEDIATE), and each new row takes an id above every id
    in the table (the next rowid, or the AUTOINCREMENT sequence's), one after another: the ids above the
    largest one before the insert are exactly the new rows', in order.
    """
    before = conn.execute(select(func.max(table.c.id))).scalar() or 0
    insert_rows(conn, table, names, rows)
    return [int(r[0]) for r in conn.execute(select(table.c.id).where(table.c.id > before).order_by(table.c.id))]
