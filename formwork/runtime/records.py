"""Reading and writing records of user tables.

RecordReader builds one SELECT per page (computed fields, link displays and permissions included) plus
one batched query per to-many field; RecordService is the only writer of user tables: it checks
permissions, coerces and validates values through their field types, writes the row, its history and
its outbox events in the caller's transaction.
"""

from __future__ import annotations

import builtins
import contextvars
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import marshmallow as ma
from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    literal,
    not_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from formwork import db
from formwork.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    TooLarge,
    ValidationFailed,
)
from formwork.metadata.catalog import Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import (
    DATE,
    DATETIME,
    MULTI,
    USER,
    FieldValueError,
    QueryContext,
    WriteContext,
)
from formwork.metadata.fieldtypes.computed import json_for_kind
from formwork.metadata.fieldtypes.link import (
    existing_ids,
    is_many,
    known_links_key,
    parse_ids,
    relation,
    set_writer_scope,
)
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.metadata.query import (
    FilterCompiler,
    SortKey,
    keyset_condition,
    link_value,
    make_cursor,
    order_by,
    parse_sort,
    read_cursor,
    search_condition,
    sort_keys,
)
from formwork.runtime.permissions import Access

MAX_LIMIT = 1000
_HISTORY_INSERT = insert(db.history)
_OUTBOX_INSERT = insert(db.outbox)
MAX_BATCH = 1000
COPY_FROM = 50  # PostgreSQL: batches from this size are written with COPY (one statement, no SQL to parse)
_write_ctx: contextvars.ContextVar[WriteContext] = contextvars.ContextVar("formwork_write_ctx")


# --- marshmallow schemas generated from metadata, cached per schema version ----------------------------
class _ValueField(ma.fields.Field):
    """Input: coerced by the field type; output: the type's JSON form."""

    def __init__(self, fdef: FieldDef, serialize: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.fdef = fdef
        self.to_json = serialize

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kw: Any) -> Any:
        return self.to_json(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Any:
        f = self.fdef
        if f.ftype.read_only:
            raise ma.ValidationError("is read-only")
        try:
            return f.ftype.coerce(value, f, _write_ctx.get())
        except FieldValueError as e:
            raise ma.ValidationError(e.message) from None


def serializer(f: FieldDef, catalog: Catalog) -> Any:
    """A function from the raw SQL value (as the reader selects it) to the JSON value."""
    kind = f.ftype.value_kind(f, catalog)
    if f.type == "formula":
        return lambda v: json_for_kind(kind, v)
    if f.type == "lookup":
        link, tf, _target = f.ftype.parts(f, catalog)  # type: ignore[attr-defined]
        inner = serializer(tf, catalog)
        if is_many(link):
            return lambda v: [inner(x) for x in (v or [])]
        return inner
    if kind in (DATE, DATETIME) and f.type not in ("date", "datetime", "created_at", "updated_at"):
        return lambda v: json_for_kind(kind, v)
    return lambda v: f.ftype.to_json(v, f)


def output_schema(table: TableDef, catalog: Catalog, picked: Sequence[FieldDef] | None = None) -> ma.Schema:
    """The dumping schema of a table, or of just the picked fields (a page dumps only what it selects)."""
    chosen = list(table.fields) if picked is None else list(picked)
    ids = tuple(f.id for f in chosen) if picked is not None else None

    def build() -> ma.Schema:
        attrs: dict[str, ma.fields.Field[Any]] = {
            f.key: _ValueField(f, serializer(f, catalog), data_key=f.key) for f in chosen}
        cls = ma.Schema.from_dict(attrs, name=f"Out{table.id}")
        return cls()

    if ids is None:
        return catalog.cached(("out_schema", table.id), build)  # type: ignore[no-any-return]
    return _lru(catalog, "out_schemas").get_or_build((table, ids), build)  # type: ignore[no-any-return]


def input_schema(table: TableDef, catalog: Catalog) -> ma.Schema:
    def build() -> ma.Schema:
        attrs: dict[str, ma.fields.Field[Any]] = {
            f.key: _ValueField(f, serializer(f, catalog), data_key=f.key, allow_none=True) for f in table.fields}
        cls = ma.Schema.from_dict(attrs, name=f"In{table.id}")
        return cls(unknown=ma.RAISE)

    return catalog.cached(("in_schema", table.id), build)  # type: ignore[no-any-return]


class _Lru:
    """A small bounded cache: keys such as a page's field list come from the request, so it must not grow."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_build(self, key: Any, build: Callable[[], Any]) -> Any:
        hit = self.get(key)
        if hit is None:
            hit = build()
            self.put(key, hit)
        return hit


def _lru(catalog: Catalog, name: str, size: int = 256) -> _Lru:
    """A bounded cache living as long as the catalog (so a schema change starts it afresh)."""
    return catalog.cached(("lru", name), lambda: _Lru(size))  # type: ignore[no-any-return]


def reader_independent(f: FieldDef, catalog: Catalog, depth: int = 0) -> bool:
    """Whether a field's select expression is the same for every reader and every moment.

    Formulas bind NOW()/TODAY(), a rollup's filter may use relative dates or "me"; a lookup, a rollup
    and a link's display are as independent as the field they read (row scopes are checked apart).
    """
    if depth > 4:
        return False
    if f.type == "formula" or (f.type == "rollup" and f.options.get("filter")):
        return False
    if f.type in ("lookup", "rollup") and f.options.get("field"):
        return reader_independent(catalog.field_by_id(f.options["field"]), catalog, depth + 1)
    if f.type == "link" and not is_many(f):
        disp = catalog.table_by_id(f.options["target"]).display_field
        return disp is None or reader_independent(disp, catalog, depth + 1)
    return True


@dataclass
class _ColumnSet:
    cols: list[Any]
    scoped_tables: frozenset[int]  # tables whose row scope the expressions would embed (none applied)
    by_ids: Any = None  # SELECT cols WHERE id IN :ids, built once: SQLAlchemy memoizes a statement's cache key


def query_signature(t: TableDef, version: int, spec: Sequence[tuple[str, bool]], filter_tree: Any,
                    search: str | None, view_key: str | None) -> str:
    """What a cursor is bound to: same table, schema, sort, filter, search and view."""
    query = json.dumps([filter_tree, search, view_key], sort_keys=True, default=str)
    return (f"{t.id}:{version}:{','.join(('-' if d else '') + k for k, d in spec)}:"
            f"{hashlib.sha256(query.encode()).hexdigest()[:16]}")


def _ma_details(err: ma.ValidationError) -> dict[str, list[str]]:
    msgs = err.messages if isinstance(err.messages, dict) else {"": err.messages}
    out: dict[str, list[str]] = {}
    for k, v in msgs.items():
        items = v if isinstance(v, list) else [str(v)]
        out[str(k)] = ["is not a field of this table" if m == "Unknown field." else str(m) for m in items]
    return out


def parse_limit(value: Any, default: int = 50) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest("limit must be a whole number") from None
    if n < 1 or n > MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return n


class RecordReader:
    def __init__(self, catalog: Catalog, conn: Connection, access: Access | None = None,
                 user_id: int | None = None, secret: bytes = b"formwork") -> None:
        self.cat = catalog
        self.conn = conn
        self.access = access or Access.system()
        self.secret = secret
        self._display_hidden: dict[int, bool] = {}
        self.names: dict[int, dict[str, Any]] = {}  # user id → {"id", "name"}, within this unit of work
        self.ctx = QueryContext(catalog=catalog, dialect=conn.dialect.name,
                                user_id=self.access.user_id if access else user_id,
                                timezone=self.access.timezone, row_scope=self._scope_for)

    def _scope_for(self, t: TableDef, alias: Any) -> ColumnElement[bool] | None:
        return self.access.scope(self.cat, t, alias, "read")

    # --- building blocks ---------------------------------------------------------------------------
    def base_conditions(self, t: TableDef, trashed: bool = False) -> list[ColumnElement[bool]]:
        sa = t.sa
        conds: list[ColumnElement[bool]] = [sa.c.deleted_at.is_not(None) if trashed else sa.c.deleted_at.is_(None)]
        scope = self._scope_for(t, sa)
        if scope is not None:
            conds.append(scope)
        return conds

    def where(self, t: TableDef, filter_tree: Any = None, search: str | None = None,
              view: dict[str, Any] | None = None) -> list[ColumnElement[bool]]:
        if not self.access.can_see_table(self.cat, t):
            raise NotFound(f"no table '{t.key}'")
        self.access.check_query_fields(self.cat, t, filter_tree)
        conds = self.base_conditions(t)
        if view and view.get("filter"):
            conds.append(FilterCompiler(t, self.ctx).compile(view["filter"]))
        if filter_tree:
            conds.append(FilterCompiler(t, self.ctx).compile(filter_tree))
        if search:
            conds.append(search_condition(t, self.ctx, search,
                                          visibility=self.access.field_visibility(self.cat, t, t.sa)))
        return conds

    def pick_fields(self, t: TableDef, keys: Any, view: dict[str, Any] | None = None) -> list[FieldDef]:
        if keys:
            names = keys.split(",") if isinstance(keys, str) else keys
            out = []
            for k in names:
                k = k.strip()
                if k not in t.fields_by_key:
                    raise BadRequest(f"fields: no field '{k[:100]}' in table '{t.key}'")
                out.append(t.fields_by_key[k])
            return out
        if view and view.get("fields"):
            return [t.fields_by_key[k] for k in view["fields"] if k in t.fields_by_key]
        return list(t.fields)

    def _columns(self, t: TableDef, fields: builtins.list[FieldDef]) -> tuple[builtins.list[Any], dict[int, Any]]:
        """The select list of a page (labels ``c<id>``, ``d<id>``, ``v<id>``) and the field visibility.

        Building it (aliases, scalar subqueries) costs more than running a page, so a list that does not
        depend on the reader is reused from a per-catalog cache.
        """
        sa = t.sa
        vis = self.access.field_visibility(self.cat, t, sa)
        uniform = all(v is True for v in vis.values())
        # keyed by the TableDef itself: a caller may hold a table of an older catalog than the reader's
        key = (t, tuple(f.id for f in fields))
        cache = _lru(self.cat, "columns")
        if uniform:
            hit: _ColumnSet | None = cache.get(key)
            if hit is not None and all(self._scope_for(self.cat.table_by_id(tid), self.cat.table_by_id(tid).sa) is None
                                       and not self.display_hidden(self.cat.table_by_id(tid))
                                       for tid in hit.scoped_tables):
                return hit.cols, vis
        scoped: set[int] = set()
        restricted = False

        def scope(target: TableDef, alias: Any) -> ColumnElement[bool] | None:
            nonlocal restricted
            s = self._scope_for(target, alias)
            scoped.add(target.id)
            restricted = restricted or s is not None or self.display_hidden(target)
            return s

        ctx = replace(self.ctx, row_scope=scope)
        cols: builtins.list[Any] = [sa.c.id, sa.c.version, sa.c.created_at, sa.c.updated_at]
        for f in fields:
            v = vis.get(f.id, True)
            if v is False or (f.type == "link" and is_many(f)):
                continue
            if f.type == "lookup" and f.ftype.many(f, self.cat):  # type: ignore[attr-defined]
                continue
            expr = link_value(f, sa, ctx) if f.type == "link" else f.ftype.expression(f, sa, ctx)
            if v is not True:
                cols.append(case((v, literal(True)), else_=literal(False)).label(f"v{f.id}"))
            cols.append(expr.label(f"c{f.id}"))
            if f.type == "link" and not is_many(f):
                cols.append(self._display_expr(f, sa.c[f.column_name], ctx).label(f"d{f.id}"))
        if uniform and not restricted and all(
                self.cat.cached(("independent", f.id), lambda f=f: reader_independent(f, self.cat)) for f in fields):
            cache.put(key, _ColumnSet(cols, frozenset(scoped)))
        return cols, vis

    def _display_expr(self, f: FieldDef, id_expr: Any, ctx: QueryContext | None = None) -> Any:
        ctx = ctx or self.ctx
        target = self.cat.table_by_id(f.options["target"])
        disp = target.display_field
        ta = target.sa.alias()
        if disp is not None and self.display_hidden(target):
            value: Any = literal("#") + cast(ta.c.id, String)  # the display field is hidden from this reader
        else:
            value = disp.ftype.expression(disp, ta, replace(ctx, depth=1)) if disp else ta.c.id
        conds = [ta.c.id == id_expr, ta.c.deleted_at.is_(None)]
        scope = ctx.row_scope(target, ta) if ctx.row_scope else None
        if scope is not None:
            conds.append(scope)
        return select(value).where(*conds).scalar_subquery()

    def display_hidden(self, target: TableDef) -> bool:
        """Is the target's display field not shown to this reader on every row? Then a link to one of
        its records displays as ``#<id>``: the display text would reveal the hidden field."""
        disp = target.display_field
        if disp is None or self.access.is_admin:
            return False
        memo = self._display_hidden
        if target.id not in memo:
            vis = self.access.field_visibility(self.cat, target, target.sa)
            memo[target.id] = vis.get(disp.id, True) is not True
        return memo[target.id]

    def hide_display_sorts(self, t: TableDef, keys: builtins.list[SortKey]) -> builtins.list[SortKey]:
        """Sort a to-one link whose target display is hidden by the linked id instead of the display text."""
        out = []
        for k in keys:
            f = k.field
            if f is not None and f.type == "link" and not is_many(f) and f.stored \
                    and self.display_hidden(self.cat.table_by_id(f.options["target"])):
                k = SortKey(f, k.desc, link_value(f, t.sa, self.ctx))
            out.append(k)
        return out

    # --- reading -----------------------------------------------------------------------------------
    def list(self, t: TableDef, *, filter_tree: Any = None, sort: Any = None, search: str | None = None,
             fields: Any = None, limit: Any = None, cursor: str | None = None, offset: Any = None,
             count: bool = False, view: dict[str, Any] | None = None) -> dict[str, Any]:
        n = parse_limit(limit)
        conds = self.where(t, filter_tree, search, view)
        spec = parse_sort(sort)
        self.access.check_query_fields(self.cat, t, sort_keys=[k for k, _ in spec])
        if not spec and view:
            # a saved view's sort on a field hidden from this reader is left out (the order and the
            # cursor would reveal its values); the view still opens
            hidden = self.access.unreadable_fields(self.cat, t)
            spec = [(k, d) for k, d in parse_sort(view.get("sort")) if k not in hidden]
        keys = self.hide_display_sorts(t, sort_keys(t, self.ctx, spec))
        fdefs = self.pick_fields(t, fields, view)
        cols, vis = self._columns(t, fdefs)
        sort_cols = [k.expr.label(f"s{i}") for i, k in enumerate(keys)]
        q = select(*cols, *sort_cols).where(*conds)
        # a cursor only fits the query it came from: same table, schema, sort, filter, search and view
        signature = query_signature(t, self.cat.version, spec, filter_tree, search, view.get("key") if view else None)
        if cursor:
            if offset:
                raise BadRequest("use either cursor or offset, not both")
            values = read_cursor(self.secret, signature, cursor, len(keys))
            q = q.where(keyset_condition(keys, values))
        elif offset not in (None, ""):
            try:
                off = int(offset)
            except (TypeError, ValueError):
                raise BadRequest("offset must be a whole number") from None
            if off < 0 or off > 10_000_000:
                raise BadRequest("offset is out of range")
            q = q.offset(off)
        rows = self.conn.execute(q.order_by(*order_by(keys)).limit(n + 1)).all()
        more = len(rows) > n
        rows = rows[:n]
        out: dict[str, Any] = {"records": self.to_records(t, rows, fdefs, vis)}
        out["next_cursor"] = make_cursor(self.secret, signature, [getattr(rows[-1], f"s{i}")
                                                                  for i in range(len(keys))]) if more else None
        if count:
            out["total"] = self.count(t, conds)
        return out

    def count(self, t: TableDef, conds: builtins.list[ColumnElement[bool]], cap: int | None = None) -> int:
        if cap is not None:
            inner = select(t.sa.c.id).where(*conds).limit(cap).subquery()
            return int(self.conn.execute(select(func.count()).select_from(inner)).scalar() or 0)
        return int(self.conn.execute(select(func.count()).select_from(t.sa).where(*conds)).scalar() or 0)

    def get(self, t: TableDef, record_id: Any, fields: Any = None, trashed: bool = False) -> dict[str, Any]:
        rid = parse_id(record_id)
        if not self.access.can_see_table(self.cat, t):
            raise NotFound(f"no table '{t.key}'")
        fdefs = self.pick_fields(t, fields)
        cols, vis = self._columns(t, fdefs)
        row = self.conn.execute(select(*cols).where(t.sa.c.id == rid, *self.base_conditions(t, trashed))).first()
        if row is None:
            raise NotFound(f"no record {rid} in '{t.key}'")
        return self.to_records(t, [row], fdefs, vis)[0]

    def to_records(self, t: TableDef, rows: Sequence[Any], fdefs: builtins.list[FieldDef],
                   vis: dict[int, Any]) -> builtins.list[dict[str, Any]]:
        schema = output_schema(t, self.cat, fdefs)
        ids = [r.id for r in rows]
        many: dict[int, dict[int, builtins.list[Any]]] = {}
        for f in fdefs:
            if vis.get(f.id, True) is False:
                continue
            if (f.type == "link" and is_many(f)) or (f.type == "lookup" and f.ftype.many(f, self.cat)):  # type: ignore[attr-defined]
                many[f.id] = self._many_values(f, ids) if ids else {}
        user_ids: set[int] = set()
        user_keys = {f.key for f in fdefs if f.type in ("user", "created_by", "updated_by")
                     and f.ftype.value_kind(f, self.cat) in (USER, MULTI)}
        # per field: (key, id, label of the value, label of the row visibility or None, link display label)
        plan = []
        for f in fdefs:
            visible = vis.get(f.id, True)
            if visible is False:
                continue
            plan.append((f.key, f.id, f"c{f.id}", None if visible is True else f"v{f.id}",
                         f"d{f.id}" if f.type == "link" else None, f.key in user_keys))
        raw_rows = []
        for r in rows:
            m = r._mapping
            raw: dict[str, Any] = {}
            for key, fid, col, vcol, dcol, is_user in plan:
                if vcol is not None and not m.get(vcol):
                    continue
                if fid in many:
                    raw[key] = many[fid].get(r.id, [])
                    continue
                val = m[col]
                if dcol is not None:
                    val = None if val is None else {"id": val, "display": _display_text(m[dcol])}
                raw[key] = val
                if is_user and val is not None:
                    user_ids.update(val if isinstance(val, list) else [val])
            raw_rows.append(raw)
        if user_ids:
            names = self._user_names(user_ids)
            for raw in raw_rows:
                for key in user_keys:
                    v = raw.get(key)
                    if v is not None:
                        raw[key] = [names.get(i, {"id": i, "name": None}) for i in v] if isinstance(v, list) \
                            else names.get(v, {"id": v, "name": None})
        dumped = schema.dump(raw_rows, many=True)
        return [{"id": r.id, "version": r.version, "created_at": iso_utc(r.created_at),
                 "updated_at": iso_utc(r.updated_at), "fields": {k: v for k, v in data.items() if k in raw}}
                for r, raw, data in zip(rows, raw_rows, dumped, strict=True)]

    def _user_names(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        missing = ids.difference(self.names)
        if missing:
            rows = self.conn.execute(select(db.users.c.id, db.users.c.name).where(db.users.c.id.in_(missing)))
            self.names.update({r.id: {"id": r.id, "name": r.name} for r in rows})
        return self.names

    def _many_values(self, f: FieldDef, ids: builtins.list[int]) -> dict[int, builtins.list[Any]]:
        """All linked records (or looked-up values) of one to-many field for a page, in one query."""
        if f.type == "link":
            link, target = f, self.cat.table_by_id(f.options["target"])
            value_f = target.display_field
        else:
            link, value_f, target = f.ftype.parts(f, self.cat)  # type: ignore[attr-defined]
        rel = relation(link, self.cat)
        ra = rel.table.alias()
        ta = target.sa.alias()
        value = value_f.ftype.expression(value_f, ta, replace(self.ctx, depth=1)) if value_f else ta.c.id
        conds: builtins.list[ColumnElement[bool]] = [ra.c[rel.this].in_(ids), ta.c.deleted_at.is_(None)]
        src: Any
        if rel.trash and rel.table is not target.sa:
            conds.append(ra.c.deleted_at.is_(None))
        scope = self._scope_for(target, ta)
        if scope is not None:
            conds.append(scope)
        if rel.table is target.sa and rel.other == "id":
            src, this_col = ta, ta.c[rel.this]
            conds[0] = this_col.in_(ids)
        else:
            src, this_col = ra.join(ta, ta.c.id == ra.c[rel.other]), ra.c[rel.this]
        q = select(this_col.label("this"), ta.c.id.label("tid"), value.label("v")).select_from(src).where(*conds)
        out: dict[int, builtins.list[Any]] = {}
        hidden = f.type == "link" and self.display_hidden(target)
        for r in self.conn.execute(q.order_by(this_col, ta.c.id)):
            if f.type == "link":
                disp = f"#{r.tid}" if hidden else serializer(value_f, self.cat)(r.v) if value_f else r.tid
                out.setdefault(r.this, []).append({"id": r.tid, "display": _display_text(disp)})
            else:
                out.setdefault(r.this, []).append(r.v)
        return out

    def iter_field_values(self, t: TableDef, f: FieldDef, batch: int = 5000) -> Iterator[tuple[int, Any]]:
        """Every record's value of one field as JSON, in id order (used by type conversions)."""
        last = 0
        while True:
            cols, vis = self._columns(t, [f])
            rows = self.conn.execute(select(*cols).where(t.sa.c.id > last).order_by(t.sa.c.id).limit(batch)).all()
            if not rows:
                return
            for rec in self.to_records(t, rows, [f], vis):
                yield rec["id"], rec["fields"].get(f.key)
            last = rows[-1].id


def _display_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("name") or value.get("display") or "")
    if isinstance(value, list):
        return ", ".join(_display_text(v) for v in value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_id(value: Any) -> int:
    """A record id: a whole number (or its digits as text); anything else names no record."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 2**62:
        raise NotFound(f"no record '{str(value)[:40]}'")
    return value


class RecordService:
    """The only writer of user tables."""

    def __init__(self, catalog: Catalog, conn: Connection, access: Access, *, origin: str | None = None,
                 depth: int = 0, secret: bytes = b"formwork") -> None:
        self.cat = catalog
        self.conn = conn
        self.access = access
        self.origin = origin  # the automation whose action makes this change (loop protection)
        self.depth = depth
        self.reader = RecordReader(catalog, conn, access, secret=secret)

    # --- input -------------------------------------------------------------------------------------
    def _write_context(self) -> WriteContext:
        """Coercion context carrying the writer's read scope: links and attachments only reach what the
        writer can see (an id outside it reads as "no record with id N")."""
        return set_writer_scope(WriteContext(self.cat, self.conn, self.access.user_id), self.reader._scope_for)

    def _load(self, t: TableDef, data: Any, creating: bool, ctx: WriteContext) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BadRequest("'fields' must be an object mapping field keys to values")
        details: dict[str, list[str]] = {}
        # read-only fields are refused whatever the value (marshmallow never looks at a null)
        for key in data:
            f = t.fields_by_key.get(key)
            if f is not None and f.ftype.read_only:
                details[key] = ["is read-only"]
        writable = {k: v for k, v in data.items() if k not in details}
        token = _write_ctx.set(ctx)
        try:
            values = input_schema(t, self.cat).load(writable, partial=True)
        except ma.ValidationError as e:
            details.update(_ma_details(e))
            values = dict(e.valid_data or {})  # type: ignore[call-overload]
        finally:
            _write_ctx.reset(token)
        for key, v in list(values.items()):
            if v is None:  # a null means "empty" in the type's own terms (false, no links, ...)
                f = t.fields_by_key[key]
                values[key] = f.ftype.coerce(None, f, ctx)
        for key in values:
            f = t.fields_by_key[key]
            if not self.access.field_writable(self.cat, t, f):
                details[key] = ["you may not change this field"]
        if creating:
            for f in t.fields:
                if f.key not in values and f.doc.get("default") is not None and f.ftype.supports_default:
                    token = _write_ctx.set(ctx)
                    try:
                        values[f.key] = f.ftype.coerce(f.doc["default"], f, ctx)
                    finally:
                        _write_ctx.reset(token)
        for f in t.fields:
            if f.required and f.key not in details and (f.key in values or creating) \
                    and f.ftype.is_empty(values.get(f.key)):
                details.setdefault(f.key, []).append("is required")
        if details:
            raise ValidationFailed.from_details(details)
        return values

    def _load_coerced(self, t: TableDef, data: dict[str, Any], ctx: WriteContext) -> dict[str, Any]:
        """A new record's values already coerced by their field types: the checks of ``_load`` without the parse."""
        details: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        for key, v in data.items():
            f = t.fields_by_key.get(key)
            if f is None:
                details[key] = ["is not a field of this table"]
            elif f.ftype.read_only:
                details[key] = ["is read-only"]
            elif not self.access.field_writable(self.cat, t, f):
                details[key] = ["you may not change this field"]
            else:
                values[key] = f.ftype.coerce(None, f, ctx) if v is None else v
        rules = self.cat.cached(("create_rules", t), lambda: (
            [f for f in t.fields if f.doc.get("default") is not None and f.ftype.supports_default],
            [f for f in t.fields if f.required]))
        for f in rules[0]:
            if f.key not in values:
                token = _write_ctx.set(ctx)
                try:
                    values[f.key] = f.ftype.coerce(f.doc["default"], f, ctx)
                finally:
                    _write_ctx.reset(token)
        for f in rules[1]:
            if f.key not in details and f.ftype.is_empty(values.get(f.key)):
                details.setdefault(f.key, []).append("is required")
        if details:
            raise ValidationFailed.from_details(details)
        return values

    def _check_unique(self, t: TableDef, values: dict[str, Any], exclude_id: int | None,
                      prefix: str | None = None) -> None:
        for key, v in values.items():
            f = t.fields_by_key[key]
            if f.unique and f.stored and v is not None:
                # the unique index covers trashed rows too (they keep their values for restore)
                q = select(t.sa.c.id, t.sa.c.deleted_at).where(t.sa.c[f.column_name] == v)
                if exclude_id is not None:
                    q = q.where(t.sa.c.id != exclude_id)
                hit = self.conn.execute(q.order_by(t.sa.c.deleted_at.is_not(None)).limit(1)).first()
                if hit is not None:
                    where = "a record in the trash" if hit.deleted_at is not None else "another record"
                    raise Conflict(f"{key}: the value is already used by {where}",
                                   {f"{prefix or ''}{key}": [f"is already used by {where}"]})

    def _check_rules(self, t: TableDef, ids: list[int], where: dict[int, str] | None = None) -> None:
        """Table validation rules on the written rows (as stored, computed fields included).

        Every broken rule of every row is reported at once; ``where`` names a row in the details
        (``records/3`` in a batch), a single write uses the rule's key alone.
        """
        rules = t.doc.get("validations") or []
        if not rules or not ids:
            return
        details: dict[str, list[str]] = {}
        first = ""
        for n, rule in enumerate(rules):
            fc = FilterCompiler(t, self.reader.ctx)
            # a condition that is NULL for a row (an empty value) does not hold
            holds = func.coalesce(fc.compile(rule["condition"]), false())
            broken = not_(holds)
            if rule.get("when"):
                broken = and_(func.coalesce(fc.compile(rule["when"]), false()), broken)
            rows = self.conn.execute(select(t.sa.c.id).where(t.sa.c.id.in_(ids), broken)
                                     .order_by(t.sa.c.id).limit(100)).all()
            msg = label_text(rule["message"], self.access.locale)
            name = rule.get("key") or f"validations/{n}"
            for row in rows:
                prefix = (where or {}).get(row.id)
                details.setdefault(f"{prefix}/{name}" if prefix else name, []).append(msg)
                first = first or msg
        if details:
            raise ValidationFailed(first if len(details) == 1 else f"{len(details)} validation rules are broken",
                                   details)

    def _split(self, t: TableDef, values: dict[str, Any]) -> tuple[dict[str, Any], dict[FieldDef, list[int]]]:
        # per field key: its column, or the field itself for a to-many link (junction rows); built once per catalog
        where = self.cat.cached(("split", t), lambda: {
            f.key: f if f.type == "link" and is_many(f) else (f.column_name if f.stored else None)
            for f in t.fields})
        cols: dict[str, Any] = {}
        links: dict[FieldDef, list[int]] = {}
        for key, v in values.items():
            target = where[key]
            if isinstance(target, str):
                cols[target] = v
            elif target is not None:
                links[target] = v or []
        return cols, links

    def _write_links(self, t: TableDef, rid: int, links: dict[FieldDef, list[int]]) -> None:
        """Set this record's to-many links, within the writer's sight.

        Only links to records the writer can read are added or removed: links to records hidden from
        the writer stay as they are (a form showing the visible links must not drop the others). Moving
        a to-one link from the other side changes those records, so it needs the writer's update right
        on each of them, and they get their own history entries and record_updated events.
        """
        for f, ids in links.items():
            rel = relation(f, self.cat)
            rt = rel.table
            target = self.cat.table_by_id(f.options["target"])
            wanted = set(ids)
            if rt is target.sa:
                # reverse of a to-one link: point the other records' column at this record
                fwd = self.cat.field_by_id(f.options["pair"])
                col = rt.c[fwd.column_name]
                seen = self.reader._scope_for(target, rt)
                current = {r[0] for r in self.conn.execute(select(rt.c.id).where(
                    col == rid, rt.c.deleted_at.is_(None), *([seen] if seen is not None else [])))}
                unlink, link = current - wanted, wanted - current
                changed = sorted(unlink | link)
                if not changed:
                    continue
                self._check_target_update(target, fwd, changed)
                before = self._read_back(target, changed)
                stamp = {"version": rt.c.version + 1, "updated_at": db.utcnow(), "updated_by": self.access.user_id}
                if unlink:
                    self.conn.execute(update(rt).where(rt.c.id.in_(sorted(unlink))).values({col.name: None, **stamp}))
                if link:
                    self.conn.execute(update(rt).where(rt.c.id.in_(sorted(link))).values({col.name: rid, **stamp}))
                self._log_target_changes(target, before)
                continue
            other = rt.c[rel.other]
            existing = {r[0] for r in self.conn.execute(select(other).where(rt.c[rel.this] == rid))}
            visible: set[int] = set()
            if existing:
                visible = {r[0] for r in self.conn.execute(select(target.sa.c.id).where(
                    target.sa.c.id.in_(sorted(existing)), *self.reader.base_conditions(target)))}
            drop, add = visible - wanted, wanted - existing
            if not drop and not add:
                continue
            pair = self.cat.fields_by_id.get(f.options.get("pair") or -1)
            changed = sorted(drop | add)
            before = self._read_back(target, changed) if pair is not None else []
            if drop:
                self.conn.execute(delete(rt).where(rt.c[rel.this] == rid, other.in_(sorted(drop))))
            if add:
                self.conn.execute(insert(rt), [{rel.this: rid, rel.other: i} for i in sorted(add)])
            if before:
                self._log_target_changes(target, before)

    def _check_target_update(self, target: TableDef, fwd: FieldDef, ids: list[int]) -> None:
        """Re-pointing another record's to-one link is an update of that record: the writer needs the
        update right on it and on the link field (403 naming the first record refused)."""
        if not self.access.field_writable(self.cat, target, fwd):
            raise Forbidden(f"you may not change '{fwd.key}' of records in '{target.key}'")
        scope = self.access.scope(self.cat, target, target.sa, "update")
        if scope is None:
            return
        allowed = {r[0] for r in self.conn.execute(select(target.sa.c.id).where(target.sa.c.id.in_(ids), scope))}
        refused = [i for i in ids if i not in allowed]
        if refused:
            raise Forbidden(f"you may not update record {refused[0]} in '{target.key}' (its '{fwd.key}' would change)")

    def _log_target_changes(self, target: TableDef, before: list[dict[str, Any]]) -> None:
        """History entries and record_updated events for linked records whose side of a link changed."""
        now = db.utcnow()
        hist, events = [], []
        after = {r["id"]: r for r in self._read_back(target, [r["id"] for r in before])}
        for old_rec in before:
            rec = after.get(old_rec["id"])
            if rec is None:
                continue
            old = old_rec["fields"]
            changes = {k: {"old": old.get(k), "new": v} for k, v in rec["fields"].items()
                       if old.get(k) != v and not target.fields_by_key[k].ftype.computed}
            if changes:
                hist.append({"record_id": rec["id"], "at": now, "action": "update", "changes": changes})
                events.append({"record_id": rec["id"], "event": "record_updated",
                               "payload": {"changes": changes, "fields": rec["fields"]}})
        self._history(target, hist)
        self._events(target, events)

    def _autonumbers(self, t: TableDef, n: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for f in t.fields:
            if f.type == "autonumber":
                res = self.conn.execute(update(db.counters).where(db.counters.c.field_id == f.id)
                                        .values(value=db.counters.c.value + n).returning(db.counters.c.value))
                top = res.scalar()
                if top is None:
                    top = n
                    self.conn.execute(insert(db.counters).values(field_id=f.id, value=n))
                out[f.column_name] = list(range(int(top) - n + 1, int(top) + 1))
        return out

    def _history(self, t: TableDef, entries: list[dict[str, Any]]) -> None:
        if entries:
            self.conn.execute(_HISTORY_INSERT, [dict(e, table_id=t.id, user_id=self.access.user_id)
                                                   for e in entries])

    def _events(self, t: TableDef, events: list[dict[str, Any]]) -> None:
        if events:
            self.conn.execute(_OUTBOX_INSERT, [
                dict(e, app_id=t.app_id, table_id=t.id, user_id=self.access.user_id, depth=self.depth,
                     origin=self.origin) for e in events])

    # --- create ------------------------------------------------------------------------------------
    def create(self, t: TableDef, data: Any) -> dict[str, Any]:
        return self.create_many(t, [data], single=True)[0]

    def create_many(self, t: TableDef, items: Any, single: bool = False,
                    coerced: bool = False) -> list[dict[str, Any]]:
        """Create records in one pass: batched look-ups and checks, one multi-row INSERT … RETURNING.

        ``coerced``: the items hold values their field types already coerced (imports, which parse cells
        leniently with the same types); they skip the second parse but not the other checks.
        """
        self.access.require(self.cat, t, "create")
        if not isinstance(items, list) or not items:
            raise BadRequest("'records' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch takes at most {MAX_BATCH} records")
        ctx = self._write_context()
        if not coerced:
            self._prefetch_links(t, items, ctx)
        loaded: list[dict[str, Any]] = []
        details: dict[str, list[str]] = {}
        for i, item in enumerate(items):
            try:
                loaded.append(self._load_coerced(t, item, ctx) if coerced
                              else self._load(t, item, creating=True, ctx=ctx))
            except ValidationFailed as e:
                if single:
                    raise
                for k, v in (e.details or {}).items():
                    details[f"records/{i}/{k}" if k else f"records/{i}"] = v
        if details:
            raise ValidationFailed.from_details(details)
        self._check_unique_batch(t, loaded, single)
        now = db.utcnow()
        numbers = self._autonumbers(t, len(loaded))
        rows: list[dict[str, Any]] = []
        link_sets: list[dict[FieldDef, list[int]]] = []
        columns: set[str] = set()
        for i, values in enumerate(loaded):
            cols, links = self._split(t, values)
            row = {"version": 1, "created_at": now, "updated_at": now, "created_by": self.access.user_id,
                   "updated_by": self.access.user_id, **cols}
            for col, nums in numbers.items():
                row[col] = nums[i]
            columns.update(row)
            rows.append(row)
            link_sets.append(links)
        for row in rows:  # one statement needs one column list; an absent value is NULL either way
            for col in columns.difference(row):
                row[col] = None
        try:
            ids = self._insert_rows(t, rows)
        except IntegrityError:
            raise Conflict("a unique value is already used by another record") from None
        self._write_links_many(t, ids, link_sets)
        self._check_rules(t, ids, None if single else {rid: f"records/{i}" for i, rid in enumerate(ids)})
        records = self._read_back(t, ids)
        self._history(t, [{"record_id": r["id"], "at": now, "action": "create",
                           "changes": {k: {"old": None, "new": v} for k, v in r["fields"].items()
                                       if k in loaded[i] and v not in (None, [], False)}}
                          for i, r in enumerate(records)])
        self._events(t, [{"record_id": r["id"], "event": "record_created", "payload": {"fields": r["fields"]}}
                         for r in records])
        return records

    def _insert_rows(self, t: TableDef, rows: list[dict[str, Any]]) -> list[int]:
        """Multi-row INSERT … RETURNING id; the ids in the order of ``rows``.

        SQLAlchemy keeps RETURNING in parameter order on PostgreSQL with a sentinel, but on SQLite asking
        for that order falls back to one statement per row. There the writer holds the write lock
        (BEGIN IMMEDIATE) and each new row gets the next rowid in VALUES order, so sorted ids are in order.
        """
        if len(rows) == 1:
            stmt = self.cat.cached(("insert_returning", t), lambda: insert(t.sa).returning(t.sa.c.id))
            return [int(self.conn.execute(stmt, rows[0]).scalar_one())]
        if self.conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM:
            return self._copy_rows(t, rows)
        if self.conn.dialect.name == "sqlite":
            ids = sorted(int(r) for r in self.conn.execute(insert(t.sa).returning(t.sa.c.id), rows).scalars())
        else:
            ids = [int(r) for r in self.conn.execute(
                insert(t.sa).returning(t.sa.c.id, sort_by_parameter_order=True), rows).scalars()]
        if len(ids) != len(rows):
            raise RuntimeError("the insert returned a different number of ids than rows")
        return ids

    def _copy_rows(self, t: TableDef, rows: list[dict[str, Any]]) -> list[int]:
        """PostgreSQL, larger batches: ids drawn from the table's sequence, then one COPY in this transaction.

        The same guarantees as INSERT: constraints (unique indexes) hold, and the caller's savepoint or
        transaction takes the rows back on any error. Values pass through the columns' own bind processing.
        """
        seq = self.conn.execute(select(func.pg_get_serial_sequence(t.name, "id"))).scalar_one()
        ids = sorted(int(r[0]) for r in self.conn.execute(
            select(func.nextval(seq)).select_from(func.generate_series(1, len(rows)))))
        names = list(rows[0])
        dialect = self.conn.dialect
        procs = [t.sa.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
        quote = dialect.identifier_preparer.quote
        sql = f"COPY {quote(t.name)} (id, {', '.join(quote(n) for n in names)}) FROM STDIN"
        raw = self.conn.connection.driver_connection
        import psycopg

        try:
            with raw.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
                for rid, row in zip(ids, rows, strict=True):
                    copy.write_row([rid, *(p(row[n]) if p is not None and row[n] is not None else row[n]
                                           for n, p in zip(names, procs, strict=True))])
        except psycopg.errors.IntegrityError as e:  # as INSERT would report it (a unique value clash)
            raise IntegrityError(sql, None, e) from None
        return ids

    def _prefetch_links(self, t: TableDef, items: list[Any], ctx: WriteContext) -> None:
        """One existence query per link field for the whole batch (coercion then answers from the cache)."""
        wanted: dict[int, set[int]] = {}
        people: set[int] = set()
        for item in items:
            if not isinstance(item, dict):
                continue
            for key, value in item.items():
                f = t.fields_by_key.get(key)
                if f is not None and f.type == "user":
                    people.update(v for v in (value if isinstance(value, list) else [value])
                                  if type(v) is int and 0 < v <= 2**62)
                if f is None or f.type != "link" or value is None:
                    continue
                try:
                    ids = parse_ids(value)
                except FieldValueError:
                    continue  # coercion reports it
                wanted.setdefault(f.options["target"], set()).update(ids)
        if people:
            self._prefetch_users(people, ctx)
        for target_id, ids in wanted.items():
            target = self.cat.table_by_id(target_id)
            checked = sorted(i for i in ids if isinstance(i, int) and 0 < i <= 2**62)
            found: set[int] = set()
            for n in range(0, len(checked), MAX_BATCH):
                found |= existing_ids(ctx, target, checked[n:n + MAX_BATCH])
            ctx.cache[known_links_key(target_id)] = (set(checked), found)

    def _prefetch_users(self, ids: set[int], ctx: WriteContext) -> None:
        """User ids of a batch in one query: seeds the coercion cache (active users only, as resolve_user
        looks them up) and the names the read-back shows."""
        u = db.users
        known: dict[Any, int | None] = ctx.cache.setdefault("users", {})
        found = {r.id: r for r in self.conn.execute(select(u.c.id, u.c.name, u.c.active).where(u.c.id.in_(ids)))}
        for i in ids:
            row = found.get(i)
            known[i] = i if row is not None and row.active else None
        self.reader.names.update({r.id: {"id": r.id, "name": r.name} for r in found.values()})

    def _check_unique_batch(self, t: TableDef, loaded: list[dict[str, Any]], single: bool) -> None:
        """Unique fields: one query per field for the batch; a hit falls back to the row-by-row report."""
        clash = False
        for f in t.fields:
            if not (f.unique and f.stored):
                continue
            values = [v[f.key] for v in loaded if v.get(f.key) is not None]
            col = t.sa.c[f.column_name]
            for n in range(0, len(values), MAX_BATCH):
                if self.conn.execute(select(t.sa.c.id).where(col.in_(values[n:n + MAX_BATCH])).limit(1)).first():
                    clash = True
        seen: dict[str, set[Any]] = {}
        for i, values in enumerate(loaded):
            if clash:
                self._check_unique(t, values, None, None if single else f"records/{i}/")
            for key, v in values.items():
                if t.fields_by_key[key].unique and v is not None:
                    if v in seen.setdefault(key, set()):
                        raise Conflict(f"{key}: the value '{str(v)[:100]}' appears twice in the batch",
                                       {f"records/{i}/{key}": ["repeats a value earlier in the batch"]})
                    seen[key].add(v)

    def _write_links_many(self, t: TableDef, ids: list[int], link_sets: list[dict[FieldDef, list[int]]]) -> None:
        """Junction rows of new records, one DELETE and one INSERT per to-many link field."""
        by_field: dict[FieldDef, list[tuple[int, list[int]]]] = {}
        for rid, links in zip(ids, link_sets, strict=True):
            for f, targets in links.items():
                by_field.setdefault(f, []).append((rid, targets))
        for f, pairs in by_field.items():
            rel = relation(f, self.cat)
            rt = rel.table
            if rt is self.cat.table_by_id(f.options["target"]).sa:
                for rid, targets in pairs:  # the reverse of a to-one link moves other records
                    self._write_links(t, rid, {f: targets})
                continue
            self.conn.execute(delete(rt).where(rt.c[rel.this].in_([rid for rid, _ in pairs])))
            rows = [{rel.this: rid, rel.other: i} for rid, targets in pairs for i in targets]
            if rows:
                self.conn.execute(insert(rt), rows)

    def _read_back(self, t: TableDef, ids: list[int]) -> list[dict[str, Any]]:
        """The written records as the writer now sees them (system access if the writer lost sight)."""
        reader = self.reader
        fdefs = list(t.fields)
        cols, vis = reader._columns(t, fdefs)
        entry: _ColumnSet | None = _lru(self.cat, "columns").get((t, tuple(f.id for f in fdefs)))
        if entry is not None and entry.cols is cols:
            if entry.by_ids is None:
                entry.by_ids = select(*cols).where(t.sa.c.id.in_(bindparam("ids", expanding=True)))
            rows = self.conn.execute(entry.by_ids, {"ids": ids}).all()
        else:
            rows = self.conn.execute(select(*cols).where(t.sa.c.id.in_(ids))).all()
        by_id = {r.id: r for r in rows}
        ordered = [by_id[i] for i in ids if i in by_id]
        return reader.to_records(t, ordered, fdefs, vis)

    # --- update ------------------------------------------------------------------------------------
    def _current(self, t: TableDef, rid: int, op: str) -> Any:
        """The row to change, locked, within the caller's update/delete scope (404/403 otherwise)."""
        sa = t.sa
        read = self.reader.base_conditions(t)
        q = select(sa.c.id, sa.c.version).where(sa.c.id == rid, *read)
        if self.conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        if row is None:
            raise NotFound(f"no record {rid} in '{t.key}'")
        scope = self.access.scope(self.cat, t, sa, op)
        if scope is not None:
            ok = self.conn.execute(select(sa.c.id).where(sa.c.id == rid, scope)).first()
            if ok is None:
                raise Forbidden(f"you may not {op} this record")
        return row

    def update(self, t: TableDef, record_id: Any, data: Any, if_match: int | None = None) -> dict[str, Any]:
        return self.update_many(t, [{"id": record_id, "fields": data}], if_match=if_match, single=True)[0]

    def update_many(self, t: TableDef, items: Any, if_match: int | None = None,
                    single: bool = False, where: dict[int, str] | None = None) -> list[dict[str, Any]]:
        if not isinstance(items, list) or not items:
            raise BadRequest("'records' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch takes at most {MAX_BATCH} records")
        ctx = self._write_context()
        self._prefetch_links(t, [i.get("fields") for i in items if isinstance(i, dict)], ctx)
        plan: list[tuple[int, int, dict[str, Any]]] = []
        details: dict[str, list[str]] = {}
        seen_ids: set[int] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item:
                raise BadRequest(f"records[{i}] needs an 'id' and 'fields'")
            rid = parse_id(item["id"])
            if rid in seen_ids:
                raise BadRequest(f"record {rid} appears twice in the batch")
            seen_ids.add(rid)
            row = self._current(t, rid, "update")
            expected = item.get("version", if_match)
            if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
                raise BadRequest(f"records[{i}]: 'version' must be the record's version number")
            if expected is not None and expected != row.version:
                raise PreconditionFailed(f"record {rid} was changed by someone else (version {row.version})",
                                         current=self.reader.get(t, rid))
            try:
                values = self._load(t, item.get("fields", {}), creating=False, ctx=ctx)
            except ValidationFailed as e:
                if single:
                    raise
                for k, v in (e.details or {}).items():
                    details[f"records/{i}/{k}"] = v
                continue
            plan.append((rid, row.version, values))
        if details:
            raise ValidationFailed.from_details(details)
        before = {r["id"]: r for r in self._read_back(t, [p[0] for p in plan])}
        now = db.utcnow()
        for i, (rid, version, values) in enumerate(plan):
            self._check_unique(t, values, rid, None if single else f"records/{i}/")
            cols, links = self._split(t, values)
            stmt = update(t.sa).where(t.sa.c.id == rid, t.sa.c.version == version).values(
                version=version + 1, updated_at=now, updated_by=self.access.user_id, **cols)
            try:
                res = self.conn.execute(stmt)
            except IntegrityError:
                raise Conflict("a unique value is already used by another record") from None
            if res.rowcount != 1:
                raise PreconditionFailed(f"record {rid} was changed by someone else",
                                         current=self.reader.get(t, rid))
            self._write_links(t, rid, links)
        ids = [p[0] for p in plan]
        self._check_rules(t, ids, where or (None if single else {rid: f"records/{i}" for i, rid in enumerate(ids)}))
        after = self._read_back(t, ids)
        hist, events = [], []
        for rec in after:
            old = before[rec["id"]]["fields"]
            changes = {k: {"old": old.get(k), "new": v} for k, v in rec["fields"].items()
                       if old.get(k) != v and not t.fields_by_key[k].ftype.computed}
            if not changes:
                continue
            hist.append({"record_id": rec["id"], "at": now, "action": "update", "changes": changes})
            events.append({"record_id": rec["id"], "event": "record_updated",
                           "payload": {"changes": changes, "fields": rec["fields"]}})
        self._history(t, hist)
        self._events(t, events)
        return after

    # --- delete / restore --------------------------------------------------------------------------
    def delete(self, t: TableDef, record_id: Any) -> None:
        self.delete_many(t, [parse_id(record_id)])

    def delete_many(self, t: TableDef, ids: list[int]) -> int:
        if len(ids) > 100_000:
            raise TooLarge("too many records at once")
        for rid in ids:
            self._current(t, rid, "delete")
        self._check_delete_blocks(t, ids)
        now = db.utcnow()
        before = self._read_back(t, ids)
        self.conn.execute(update(t.sa).where(t.sa.c.id.in_(ids)).values(
            deleted_at=now, version=t.sa.c.version + 1, updated_by=self.access.user_id))
        self._history(t, [{"record_id": r["id"], "at": now, "action": "delete", "changes": None} for r in before])
        self._events(t, [{"record_id": r["id"], "event": "record_deleted", "payload": {"fields": r["fields"]}}
                         for r in before])
        return len(ids)

    def _check_delete_blocks(self, t: TableDef, ids: list[int]) -> None:
        """Links marked on_delete=block keep their targets from being deleted while linked."""
        for f in self.cat.fields_by_id.values():
            if f.type != "link" or f.options.get("on_delete") != "block" or f.options.get("target") != t.id:
                continue
            pair = self.cat.fields_by_id.get(f.options.get("pair") or -1)
            if pair is None:
                continue
            rel = relation(pair, self.cat)
            ra = rel.table.alias()
            conds = [ra.c[rel.this].in_(ids)]
            if rel.trash:
                conds.append(ra.c.deleted_at.is_(None))
            hit = self.conn.execute(select(ra.c[rel.this]).where(*conds).limit(1)).first()
            if hit is not None:
                src = self.cat.table_by_id(f.table_id)
                raise Conflict(f"record {hit[0]} is still linked from '{src.key}.{f.key}'; unlink it first")

    def restore(self, t: TableDef, record_id: Any) -> dict[str, Any]:
        rid = parse_id(record_id)
        self.access.require(self.cat, t, "create")
        sa = t.sa
        conds = [sa.c.id == rid, sa.c.deleted_at.is_not(None)]
        scope = self.access.scope(self.cat, t, sa, "delete")
        if scope is not None:
            conds.append(scope)
        res = self.conn.execute(update(sa).where(*conds).values(deleted_at=None, version=sa.c.version + 1,
                                                                updated_at=db.utcnow()))
        if res.rowcount != 1:
            raise NotFound(f"no deleted record {rid} in '{t.key}'")
        for f in t.fields:
            if f.unique and f.stored:
                v = self.conn.execute(select(sa.c[f.column_name]).where(sa.c.id == rid)).scalar()
                if v is not None:
                    self._check_unique(t, {f.key: v}, rid)
        rec = self._read_back(t, [rid])[0]
        self._history(t, [{"record_id": rid, "at": db.utcnow(), "action": "restore", "changes": None}])
        self._events(t, [{"record_id": rid, "event": "record_created", "payload": {"fields": rec["fields"],
                                                                                    "restored": True}}])
        return rec

    # --- by filter ---------------------------------------------------------------------------------
    def matching_ids(self, t: TableDef, filter_tree: Any, op: str, limit: int = 100_000) -> list[int]:
        if not isinstance(filter_tree, dict):
            raise BadRequest("a bulk change needs a 'filter' (use {\"and\": []} for every record)")
        conds = self.reader.where(t, filter_tree)
        scope = self.access.scope(self.cat, t, t.sa, op)
        if scope is not None:
            conds.append(scope)
        rows = self.conn.execute(select(t.sa.c.id).where(*conds).order_by(t.sa.c.id).limit(limit + 1)).all()
        if len(rows) > limit:
            raise TooLarge(f"the filter matches more than {limit} records")
        return [r[0] for r in rows]

    def bulk_update(self, t: TableDef, filter_tree: Any, data: Any) -> int:
        """Change the same fields on every record the filter matches (one transaction, history each)."""
        ids = self.matching_ids(t, filter_tree, "update")
        if not ids:  # nothing the caller may update matches: nothing to check or change
            return 0
        # bad values are reported by field key, once, before any record is touched
        self._load(t, data, creating=False, ctx=self._write_context())
        for i in range(0, len(ids), MAX_BATCH):
            chunk = ids[i:i + MAX_BATCH]
            self.update_many(t, [{"id": rid, "fields": data} for rid in chunk],
                             where={rid: f"record:{rid}" for rid in chunk})
        return len(ids)

    def bulk_delete(self, t: TableDef, filter_tree: Any) -> int:
        ids = self.matching_ids(t, filter_tree, "delete")
        return self.delete_many(t, ids) if ids else 0

    def history(self, t: TableDef, record_id: Any, limit: int = 200) -> dict[str, Any]:
        rid = parse_id(record_id)
        sa = t.sa
        visible = self.conn.execute(select(sa.c.id).where(sa.c.id == rid, *self.reader.base_conditions(t))).first()
        if visible is None:
            raise NotFound(f"no record {rid} in '{t.key}'")
        vis = self.access.field_visibility(self.cat, t, sa)
        if any(v is not True for v in vis.values()):
            row_vis = {}
            for f in t.fields:
                v = vis.get(f.id, True)
                if v is True or v is False:
                    row_vis[f.key] = v
                else:
                    row_vis[f.key] = self.conn.execute(select(sa.c.id).where(sa.c.id == rid, v)).first() is not None
        else:
            row_vis = None
        h = db.history
        rows = self.conn.execute(select(h, db.users.c.name.label("user_name")).outerjoin(
            db.users, db.users.c.id == h.c.user_id).where(h.c.table_id == t.id, h.c.record_id == rid)
            .order_by(h.c.id.desc()).limit(limit)).all()
        entries = []
        for r in rows:
            changes = r.changes
            if changes and row_vis is not None:
                changes = {k: v for k, v in changes.items() if row_vis.get(k, False)}
            entries.append({"at": iso_utc(r.at), "user": {"id": r.user_id, "name": r.user_name} if r.user_id else None,
                            "action": r.action, "changes": changes or {}})
        self._recheck_history_links(t, entries)
        return {"entries": entries}

    def _recheck_history_links(self, t: TableDef, entries: list[dict[str, Any]]) -> None:
        """Linked records in history show their stored display text only if the reader can read them now
        (and sees the target's display field); otherwise ``{"id": n, "display": null}``."""
        links = {f.key: f for f in t.fields if f.type == "link"}
        wanted: dict[int, set[int]] = {}
        for e in entries:
            for key, change in e["changes"].items():
                if key in links and isinstance(change, dict):
                    for side in (change.get("old"), change.get("new")):
                        for item in side if isinstance(side, list) else [side]:
                            if isinstance(item, dict) and isinstance(item.get("id"), int):
                                wanted.setdefault(links[key].options["target"], set()).add(item["id"])
        readable: dict[int, set[int]] = {}
        for target_id, ids in wanted.items():
            target = self.cat.table_by_id(target_id)
            readable[target_id] = {r[0] for r in self.conn.execute(select(target.sa.c.id).where(
                target.sa.c.id.in_(sorted(ids)), *self.reader.base_conditions(target)))}

        def shown(item: Any, target_id: int) -> Any:
            if not isinstance(item, dict) or not isinstance(item.get("id"), int):
                return item
            if item["id"] not in readable.get(target_id, set()):
                return {"id": item["id"], "display": None}
            if self.reader.display_hidden(self.cat.table_by_id(target_id)):
                return {"id": item["id"], "display": f"#{item['id']}"}
            return item

        for e in entries:
            for key, change in list(e["changes"].items()):
                if key in links and isinstance(change, dict):
                    tid = links[key].options["target"]
                    e["changes"][key] = {side: [shown(i, tid) for i in v] if isinstance(v, list) else shown(v, tid)
                                         for side, v in change.items()}

