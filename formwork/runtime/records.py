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
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import marshmallow as ma
from sqlalchemy import (
    and_,
    case,
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
from formwork.metadata.fieldtypes.link import is_many, relation
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime.permissions import Access
from formwork.runtime.query import (
    FilterCompiler,
    keyset_condition,
    link_value,
    make_cursor,
    order_by,
    parse_sort,
    read_cursor,
    search_condition,
    sort_keys,
)

MAX_LIMIT = 1000
MAX_BATCH = 1000
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


def output_schema(table: TableDef, catalog: Catalog) -> ma.Schema:
    def build() -> ma.Schema:
        attrs: dict[str, ma.fields.Field[Any]] = {
            f.key: _ValueField(f, serializer(f, catalog), data_key=f.key) for f in table.fields}
        cls = ma.Schema.from_dict(attrs, name=f"Out{table.id}")
        return cls()

    return catalog.cached(("out_schema", table.id), build)  # type: ignore[no-any-return]


def input_schema(table: TableDef, catalog: Catalog) -> ma.Schema:
    def build() -> ma.Schema:
        attrs: dict[str, ma.fields.Field[Any]] = {
            f.key: _ValueField(f, serializer(f, catalog), data_key=f.key, allow_none=True) for f in table.fields}
        cls = ma.Schema.from_dict(attrs, name=f"In{table.id}")
        return cls(unknown=ma.RAISE)

    return catalog.cached(("in_schema", table.id), build)  # type: ignore[no-any-return]


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
            conds.append(search_condition(t, self.ctx, search))
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

    def _columns(self, t: TableDef, fields: list[FieldDef]) -> tuple[list[Any], dict[int, Any]]:
        sa = t.sa
        cols: list[Any] = [sa.c.id, sa.c.version, sa.c.created_at, sa.c.updated_at]
        vis = self.access.field_visibility(self.cat, t, sa)
        for f in fields:
            v = vis.get(f.id, True)
            if v is False or (f.type == "link" and is_many(f)):
                continue
            if f.type == "lookup" and f.ftype.many(f, self.cat):  # type: ignore[attr-defined]
                continue
            expr = link_value(f, sa, self.ctx) if f.type == "link" else f.ftype.expression(f, sa, self.ctx)
            if v is not True:
                cols.append(case((v, literal(True)), else_=literal(False)).label(f"v{f.id}"))
            cols.append(expr.label(f"c{f.id}"))
            if f.type == "link" and not is_many(f):
                cols.append(self._display_expr(f, sa.c[f.column_name]).label(f"d{f.id}"))
        return cols, vis

    def _display_expr(self, f: FieldDef, id_expr: Any) -> Any:
        target = self.cat.table_by_id(f.options["target"])
        disp = target.display_field
        ta = target.sa.alias()
        value = disp.ftype.expression(disp, ta, replace(self.ctx, depth=1)) if disp else ta.c.id
        conds = [ta.c.id == id_expr, ta.c.deleted_at.is_(None)]
        scope = self._scope_for(target, ta)
        if scope is not None:
            conds.append(scope)
        return select(value).where(*conds).scalar_subquery()

    # --- reading -----------------------------------------------------------------------------------
    def list(self, t: TableDef, *, filter_tree: Any = None, sort: Any = None, search: str | None = None,
             fields: Any = None, limit: Any = None, cursor: str | None = None, offset: Any = None,
             count: bool = False, view: dict[str, Any] | None = None) -> dict[str, Any]:
        n = parse_limit(limit)
        conds = self.where(t, filter_tree, search, view)
        spec = parse_sort(sort) or parse_sort(view.get("sort") if view else None)
        self.access.check_query_fields(self.cat, t, sort_keys=[k for k, _ in parse_sort(sort)])
        keys = sort_keys(t, self.ctx, spec)
        fdefs = self.pick_fields(t, fields, view)
        cols, vis = self._columns(t, fdefs)
        sort_cols = [k.expr.label(f"s{i}") for i, k in enumerate(keys)]
        q = select(*cols, *sort_cols).where(*conds)
        # a cursor only fits the query it came from: same table, schema, sort, filter, search and view
        query = json.dumps([filter_tree, search, view.get("key") if view else None], sort_keys=True, default=str)
        signature = (f"{t.id}:{self.cat.version}:{','.join(('-' if d else '') + k for k, d in spec)}:"
                     f"{hashlib.sha256(query.encode()).hexdigest()[:16]}")
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
        schema = output_schema(t, self.cat)
        ids = [r.id for r in rows]
        many: dict[int, dict[int, builtins.list[Any]]] = {}
        for f in fdefs:
            if vis.get(f.id, True) is False:
                continue
            if (f.type == "link" and is_many(f)) or (f.type == "lookup" and f.ftype.many(f, self.cat)):  # type: ignore[attr-defined]
                many[f.id] = self._many_values(f, ids) if ids else {}
        user_ids: set[int] = set()
        user_fields = [f for f in fdefs if f.ftype.value_kind(f, self.cat) in (USER, MULTI)
                       and f.type in ("user", "created_by", "updated_by")]
        raw_rows = []
        for r in rows:
            m = r._mapping
            raw: dict[str, Any] = {}
            for f in fdefs:
                visible = vis.get(f.id, True)
                if visible is False or (visible is not True and not m.get(f"v{f.id}")):
                    continue
                if f.id in many:
                    raw[f.key] = many[f.id].get(r.id, [])
                    continue
                val = m[f"c{f.id}"]
                if f.type == "link":
                    val = None if val is None else {"id": val, "display": _display_text(m[f"d{f.id}"])}
                raw[f.key] = val
                if f in user_fields and val is not None:
                    user_ids.update(val if isinstance(val, list) else [val])
            raw_rows.append(raw)
        names = self._user_names(user_ids) if user_ids else {}
        out = []
        for r, raw in zip(rows, raw_rows, strict=True):
            for f in user_fields:
                if f.key in raw and raw[f.key] is not None:
                    v = raw[f.key]
                    raw[f.key] = [names.get(i, {"id": i, "name": None}) for i in v] if isinstance(v, list) \
                        else names.get(v, {"id": v, "name": None})
            data = schema.dump(raw)
            out.append({"id": r.id, "version": r.version, "created_at": iso_utc(r.created_at),
                        "updated_at": iso_utc(r.updated_at),
                        "fields": {k: v for k, v in data.items() if k in raw}})
        return out

    def _user_names(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        rows = self.conn.execute(select(db.users.c.id, db.users.c.name).where(db.users.c.id.in_(ids)))
        return {r.id: {"id": r.id, "name": r.name} for r in rows}

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
        for r in self.conn.execute(q.order_by(this_col, ta.c.id)):
            if f.type == "link":
                disp = serializer(value_f, self.cat)(r.v) if value_f else r.tid
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
        cols: dict[str, Any] = {}
        links: dict[FieldDef, list[int]] = {}
        for key, v in values.items():
            f = t.fields_by_key[key]
            if f.type == "link" and is_many(f):
                links[f] = v or []
            elif f.stored:
                cols[f.column_name] = v
        return cols, links

    def _write_links(self, t: TableDef, rid: int, links: dict[FieldDef, list[int]]) -> None:
        for f, ids in links.items():
            rel = relation(f, self.cat)
            rt = rel.table
            if rt is self.cat.table_by_id(f.options["target"]).sa:
                # reverse of a to-one link: point the other records' column at this record
                fwd = self.cat.field_by_id(f.options["pair"])
                col = rt.c[fwd.column_name]
                self.conn.execute(update(rt).where(col == rid, rt.c.id.not_in(ids) if ids else literal(True))
                                  .values({col.name: None}))
                if ids:
                    self.conn.execute(update(rt).where(rt.c.id.in_(ids)).values(
                        {col.name: rid, "version": rt.c.version + 1, "updated_at": db.utcnow(),
                         "updated_by": self.access.user_id}))
                continue
            self.conn.execute(delete(rt).where(rt.c[rel.this] == rid))
            if ids:
                self.conn.execute(insert(rt), [{rel.this: rid, rel.other: i} for i in ids])

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
            self.conn.execute(insert(db.history), [dict(e, table_id=t.id, user_id=self.access.user_id)
                                                   for e in entries])

    def _events(self, t: TableDef, events: list[dict[str, Any]]) -> None:
        if events:
            self.conn.execute(insert(db.outbox), [
                dict(e, app_id=t.app_id, table_id=t.id, user_id=self.access.user_id, depth=self.depth,
                     origin=self.origin) for e in events])

    # --- create ------------------------------------------------------------------------------------
    def create(self, t: TableDef, data: Any) -> dict[str, Any]:
        return self.create_many(t, [data], single=True)[0]

    def create_many(self, t: TableDef, items: Any, single: bool = False) -> list[dict[str, Any]]:
        self.access.require(self.cat, t, "create")
        if not isinstance(items, list) or not items:
            raise BadRequest("'records' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch takes at most {MAX_BATCH} records")
        ctx = WriteContext(self.cat, self.conn, self.access.user_id)
        loaded: list[dict[str, Any]] = []
        details: dict[str, list[str]] = {}
        for i, item in enumerate(items):
            try:
                loaded.append(self._load(t, item, creating=True, ctx=ctx))
            except ValidationFailed as e:
                if single:
                    raise
                for k, v in (e.details or {}).items():
                    details[f"records/{i}/{k}" if k else f"records/{i}"] = v
        if details:
            raise ValidationFailed.from_details(details)
        seen: dict[str, set[Any]] = {}
        for i, values in enumerate(loaded):
            self._check_unique(t, values, None, None if single else f"records/{i}/")
            for key, v in values.items():
                if t.fields_by_key[key].unique and v is not None:
                    if v in seen.setdefault(key, set()):
                        raise Conflict(f"{key}: the value '{str(v)[:100]}' appears twice in the batch",
                                       {f"records/{i}/{key}": ["repeats a value earlier in the batch"]})
                    seen[key].add(v)
        now = db.utcnow()
        numbers = self._autonumbers(t, len(loaded))
        ids: list[int] = []
        for i, values in enumerate(loaded):
            cols, links = self._split(t, values)
            row = {"version": 1, "created_at": now, "updated_at": now, "created_by": self.access.user_id,
                   "updated_by": self.access.user_id, **cols}
            for col, nums in numbers.items():
                row[col] = nums[i]
            try:
                rid = self.conn.execute(insert(t.sa).values(row).returning(t.sa.c.id)).scalar_one()
            except IntegrityError:
                raise Conflict("a unique value is already used by another record") from None
            self._write_links(t, rid, links)
            ids.append(rid)
        self._check_rules(t, ids, None if single else {rid: f"records/{i}" for i, rid in enumerate(ids)})
        records = self._read_back(t, ids)
        self._history(t, [{"record_id": r["id"], "at": now, "action": "create",
                           "changes": {k: {"old": None, "new": v} for k, v in r["fields"].items()
                                       if k in loaded[i] and v not in (None, [], False)}}
                          for i, r in enumerate(records)])
        self._events(t, [{"record_id": r["id"], "event": "record_created", "payload": {"fields": r["fields"]}}
                         for r in records])
        return records

    def _read_back(self, t: TableDef, ids: list[int]) -> list[dict[str, Any]]:
        """The written records as the writer now sees them (system access if the writer lost sight)."""
        reader = self.reader
        fdefs = list(t.fields)
        cols, vis = reader._columns(t, fdefs)
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
        ctx = WriteContext(self.cat, self.conn, self.access.user_id)
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
        # bad values are reported by field key, once, before any record is touched
        self._load(t, data, creating=False, ctx=WriteContext(self.cat, self.conn, self.access.user_id))
        ids = self.matching_ids(t, filter_tree, "update")
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
        return {"entries": entries}

