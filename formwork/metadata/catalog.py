"""An immutable in-memory snapshot of all live definitions at one schema version.

It holds the SQLAlchemy ``Table`` objects of user tables (physical names ``t_<id>``, ``f_<id>``,
``j_<field id>``), so queries are built from Column objects looked up here, never from user text.
Each process keeps the newest snapshot and rebuilds it when ``fw_state.schema_version`` moves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    select,
)
from sqlalchemy.engine import Connection, Engine

from formwork import db
from formwork.errors import NotFound
from formwork.metadata.fieldtypes import FieldType, field_types

_T = TypeVar("_T")

def label_text(label: Any, locale: str = "en") -> str:
    if isinstance(label, dict):
        return str(label.get(locale) or label.get("en") or label.get("zh-CN") or next(iter(label.values()), ""))
    return str(label or "")


@dataclass(eq=False)
class FieldDef:
    id: int
    table_id: int
    key: str
    type: str
    doc: dict[str, Any]  # the stored document; options hold ids for cross-references
    position: int

    @property
    def ftype(self) -> FieldType:
        return field_types.get(self.type)

    @property
    def options(self) -> dict[str, Any]:
        return self.doc.get("options") or {}

    @property
    def label(self) -> Any:
        return self.doc.get("label", self.key)

    @property
    def required(self) -> bool:
        return bool(self.doc.get("required"))

    @property
    def unique(self) -> bool:
        return bool(self.doc.get("unique"))

    @property
    def column_name(self) -> str:
        gen = self.doc.get("_gen")  # bumped by each type change, which writes a fresh column
        return f"f_{self.id}_{gen}" if gen else f"f_{self.id}"

    @property
    def stored(self) -> bool:
        return self.ftype.column_type(self) is not None


@dataclass(eq=False)
class TableDef:
    id: int
    app_id: int
    key: str
    doc: dict[str, Any]
    position: int
    fields: list[FieldDef] = field(default_factory=list)
    fields_by_key: dict[str, FieldDef] = field(default_factory=dict)
    # the physical table is built on first use: metadata operations reload the catalog often and
    # touch only a few tables, so building every Table up front would dominate their cost
    _sa: Table | None = None
    _builder: Any = None

    @property
    def sa(self) -> Table:
        if self._sa is None:
            self._sa = self._builder()
        return self._sa
    views: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"t_{self.id}"

    @property
    def label(self) -> Any:
        return self.doc.get("label", self.key)

    @property
    def display_field(self) -> FieldDef | None:
        key = self.doc.get("display_field")
        if key and key in self.fields_by_key:
            return self.fields_by_key[key]
        return self.fields[0] if self.fields else None

    @property
    def owner_field(self) -> FieldDef | None:
        key = self.doc.get("owner_field")
        if key and key in self.fields_by_key:
            return self.fields_by_key[key]
        for f in self.fields:
            if f.ftype.can_own_records(f):
                return f
        return None

    def field(self, key: str) -> FieldDef:
        f = self.fields_by_key.get(key)
        if f is None:
            raise NotFound(f"no field '{key}' in table '{self.key}'")
        return f

    def view(self, key: str) -> dict[str, Any]:
        for v in self.views:
            if v["key"] == key:
                return v
        raise NotFound(f"no view '{key}' in table '{self.key}'")


@dataclass(eq=False)
class AppDef:
    id: int
    key: str
    doc: dict[str, Any]
    position: int
    tables: list[TableDef] = field(default_factory=list)
    tables_by_key: dict[str, TableDef] = field(default_factory=dict)
    automations: list[dict[str, Any]] = field(default_factory=list)
    dashboards: list[dict[str, Any]] = field(default_factory=list)

    def table(self, key: str) -> TableDef:
        t = self.tables_by_key.get(key)
        if t is None:
            raise NotFound(f"no table '{key}' in app '{self.key}'")
        return t


def system_columns() -> list[Column[Any]]:
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("version", Integer, nullable=False, default=1),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Column("created_by", Integer),
        Column("updated_by", Integer),
        Column("deleted_at", DateTime),
    ]


def build_user_table(md: MetaData, table: TableDef, all_fields: list[FieldDef]) -> Table:
    """The physical table for ``table``: system columns plus one column per stored field."""
    cols: list[Any] = system_columns()
    for f in all_fields:
        cols.extend(f.ftype.columns(f))
    t = Table(table.name, md, *cols)
    Index(f"ix_{table.name}_created", t.c.created_at)
    Index(f"ix_{table.name}_deleted", t.c.deleted_at)
    for f in all_fields:
        f.ftype.indexes(f, t)
        if f.unique and f.stored:
            Index(f"ux_{table.name}_{f.column_name}", t.c[f.column_name], unique=True)
    return t


def build_junction(md: MetaData, field_id: int) -> Table:
    t = Table(
        f"j_{field_id}", md,
        Column("src", Integer, nullable=False),
        Column("dst", Integer, nullable=False),
        PrimaryKeyConstraint("src", "dst"),
    )
    Index(f"ix_j_{field_id}_dst", t.c.dst)
    return t


class Catalog:
    def __init__(self, version: int) -> None:
        self.version = version
        self.md = MetaData()
        self.apps: list[AppDef] = []
        self.apps_by_key: dict[str, AppDef] = {}
        self.apps_by_id: dict[int, AppDef] = {}
        self.tables_by_id: dict[int, TableDef] = {}
        self.fields_by_id: dict[int, FieldDef] = {}
        self.junctions: dict[int, Table] = {}
        self._junction_ids: set[int] = set()
        self._cache: dict[Any, Any] = {}
        self._lock = threading.RLock()  # builds may memoise what they need (schemas → formula types)

    # --- look-ups -------------------------------------------------------------------------------
    def app(self, key: str) -> AppDef:
        a = self.apps_by_key.get(key)
        if a is None:
            raise NotFound(f"no app '{key}'")
        return a

    def app_by_id(self, app_id: int) -> AppDef:
        return self.apps_by_id[app_id]

    def table(self, app_key: str, table_key: str) -> TableDef:
        return self.app(app_key).table(table_key)

    def table_by_id(self, table_id: int) -> TableDef:
        return self.tables_by_id[table_id]

    def field_by_id(self, field_id: int) -> FieldDef:
        return self.fields_by_id[field_id]

    def junction(self, field_id: int) -> Table:
        with self._lock:
            if field_id not in self.junctions:
                if field_id not in self._junction_ids:
                    raise KeyError(field_id)
                self.junctions[field_id] = build_junction(self.md, field_id)
            return self.junctions[field_id]

    def _table_builder(self, t: TableDef, stored_all: list[FieldDef]) -> Any:
        def build() -> Table:
            with self._lock:
                if t._sa is None:
                    t._sa = build_user_table(self.md, t, stored_all)
                return t._sa

        return build

    def cached(self, key: Hashable, build: Callable[[], _T]) -> _T:
        """Memoise derived objects (serializer schemas, parsed formulas) for this schema version."""
        try:
            return self._cache[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def parsed_formula(self, f: FieldDef) -> Any:
        from formwork.metadata import formula as fl

        return self.cached(("formula", f.id), lambda: fl.parse(f.options["formula"]))

    def formula_result_type(self, f: FieldDef) -> str:
        def build() -> str:
            from formwork.metadata import formula as fl
            from formwork.metadata.fieldtypes.base import QueryContext

            ctx = QueryContext(catalog=self, dialect="sqlite")
            try:
                return str(f.ftype.compile(f, self.table_by_id(f.table_id).sa, ctx)[1])  # type: ignore[attr-defined]
            except (fl.FormulaError, Exception):  # a broken formula (e.g. a deleted reference) reads as text
                return "text"

        return str(self.cached(("formula_type", f.id), build))

    # --- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, conn: Connection) -> Catalog:
        version = current_version(conn)
        cat = cls(version)
        for r in conn.execute(select(db.apps).where(db.apps.c.deleted_at.is_(None)).order_by(
                db.apps.c.position, db.apps.c.id)):
            a = AppDef(r.id, r.key, r.doc, r.position)
            cat.apps.append(a)
            cat.apps_by_key[a.key] = a
            cat.apps_by_id[a.id] = a
        table_rows = conn.execute(select(db.tables).where(db.tables.c.deleted_at.is_(None)).order_by(
            db.tables.c.position, db.tables.c.id)).all()
        field_rows = conn.execute(select(db.fields).order_by(db.fields.c.position, db.fields.c.id)).all()
        all_fields_by_table: dict[int, list[FieldDef]] = {}
        for fr in field_rows:
            fd = FieldDef(fr.id, fr.table_id, fr.key, fr.type, fr.doc, fr.position)
            # trashed fields keep their columns: the physical table must still declare them
            all_fields_by_table.setdefault(fr.table_id, []).append(fd)
            if fr.deleted_at is None:
                cat.fields_by_id[fd.id] = fd
        live_tables = {tr.id for tr in table_rows if tr.app_id in cat.apps_by_id}
        _hide_dangling(cat.fields_by_id, live_tables)
        for tr in table_rows:
            app = cat.apps_by_id.get(tr.app_id)
            if app is None:
                continue
            t = TableDef(tr.id, tr.app_id, tr.key, tr.doc, tr.position)
            live = [f for f in all_fields_by_table.get(t.id, []) if f.id in cat.fields_by_id]
            t.fields = live
            t.fields_by_key = {f.key: f for f in live}
            app.tables.append(t)
            app.tables_by_key[t.key] = t
            cat.tables_by_id[t.id] = t
        for t in cat.tables_by_id.values():
            stored_all = [f for f in all_fields_by_table.get(t.id, []) if f.type in field_types]
            t._builder = cat._table_builder(t, stored_all)
            for f in stored_all:
                if f.ftype.needs_junction(f):
                    cat._junction_ids.add(f.id)
        for r in conn.execute(select(db.views).where(db.views.c.deleted_at.is_(None)).order_by(
                db.views.c.position, db.views.c.id)):
            owner = cat.tables_by_id.get(r.table_id)
            if owner is not None:
                owner.views.append(dict(r.doc, id=r.id))
        for kind, tbl in (("automations", db.automations), ("dashboards", db.dashboards)):
            for r in conn.execute(select(tbl).where(tbl.c.deleted_at.is_(None)).order_by(tbl.c.position,
                                                                                         tbl.c.id)):
                holder = cat.apps_by_id.get(r.app_id)
                if holder is not None:
                    getattr(holder, kind).append(dict(r.doc, id=r.id))
        return cat


def _hide_dangling(fields: dict[int, FieldDef], live_tables: set[int]) -> None:
    """Drop live fields that stand on something in the trash (a link whose other table or twin is gone,
    a lookup or rollup through it), so that restoring tables in any order never shows a broken field.
    They reappear by themselves once what they need is restored."""
    for fid in [fid for fid, f in fields.items() if f.table_id not in live_tables]:
        del fields[fid]
    changed = True
    while changed:
        changed = False
        for fid, f in list(fields.items()):
            if f.type in field_types and not f.ftype.stands_on_live(f, live_tables, fields):
                del fields[fid]
                changed = True


# a constant statement (no user input), sent to the driver as is: nothing to build or compile per request
_SCHEMA_VERSION_SQL = "SELECT value FROM fw_state WHERE name = 'schema_version'"
assert db.state.name == "fw_state" and db.SCHEMA_VERSION == "schema_version"


def current_version(conn: Connection) -> int:
    v = conn.exec_driver_sql(_SCHEMA_VERSION_SQL).scalar()
    return int(v or 0)


class CatalogCache:
    """Per-process holder of the newest Catalog; one cheap query per request checks the version."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._catalog: Catalog | None = None
        self._lock = threading.Lock()

    def get(self, conn: Connection | None = None, version: int | None = None) -> Catalog:
        """The catalog at the database's schema version (``version``: already read in ``conn``'s transaction)."""
        if conn is None:
            with self.engine.connect() as c:
                return self.get(c)
        if version is None:
            version = current_version(conn)
        cat = self._catalog
        if cat is not None and cat.version == version:
            return cat
        with self._lock:
            cat = self._catalog
            if cat is None or cat.version != version:
                cat = Catalog.load(conn)
                if self._catalog is None or cat.version >= self._catalog.version:
                    self._catalog = cat
            return cat

    def adopt(self, cat: Catalog) -> None:
        """Take a catalog loaded by a schema change, once that change has committed (``db.after_commit``),
        so this process's next request does not load the version it just wrote. Only for a catalog loaded
        after the transaction's last metadata write (the caller vouches); a newer one is kept."""
        with self._lock:
            if self._catalog is None or cat.version > self._catalog.version:
                self._catalog = cat

    def invalidate(self) -> None:
        self._catalog = None

