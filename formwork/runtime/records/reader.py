"""Reading records of user tables as one caller sees them.

RecordReader builds one SELECT per page (computed fields, link displays, row scopes and field visibility
included) plus one batched query per to-many field, then turns each value into JSON through its field
type's serializer (plain function calls: marshmallow only serialised here, and cost ~20 % of a page).
Select lists and serializer maps that don't depend on the reader are reused from a per-catalog cache.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import String, bindparam, case, cast, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from formwork import db
from formwork.errors import BadRequest, NotFound
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import LINK_ONE, USER, QueryContext
from formwork.metadata.fieldtypes.link import relation
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.metadata.query import (
    FilterCompiler,
    SortKey,
    keyset_condition,
    keyset_ranges,
    make_cursor,
    order_by,
    parse_sort,
    read_cursor,
    search_condition,
    sort_keys,
)
from formwork.runtime.permissions import Access
from formwork.runtime.records.cache import catalog_cache
from formwork.runtime.records.params import parse_id, parse_limit
from formwork.runtime.records.schemas import serializer


def reader_independent(f: FieldDef, catalog: Catalog, depth: int = 0) -> bool:
    """Whether a field's select expression is the same for every reader and every moment.

    Formulas bind NOW()/TODAY(), a rollup's filter may use relative dates or "me"; a lookup, a rollup
    and a link's display are as independent as the field they read (row scopes are checked apart).
    """
    if depth > 4:
        return False
    if f.ftype.varies_by_reader(f):
        return False
    inner = f.ftype.embeds_field(f, catalog)
    return inner is None or reader_independent(inner, catalog, depth + 1)


_USER_NAMES = select(db.users.c.id, db.users.c.name).where(db.users.c.id.in_(bindparam("ids", expanding=True)))


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


class RecordReader:
    """Records of user tables as one caller (its Access) may read them."""

    def __init__(self, catalog: Catalog, conn: Connection, access: Access | None = None,
                 user_id: int | None = None, secret: bytes = b"formwork") -> None:
        self.cat = catalog
        self.conn = conn
        self.access = access or Access.system()
        self.secret = secret
        self._display_hidden: dict[int, bool] = {}
        self.names: dict[int, dict[str, Any]] = {}  # user id → {"id", "name"}, within this unit of work
        # user id → name shared by the requests of one process while the auth version stays (formwork.web)
        self.shared_names: dict[int, Any] | None = None
        self.ctx = QueryContext(catalog=catalog, dialect=conn.dialect.name,
                                user_id=self.access.user_id if access else user_id,
                                timezone=self.access.timezone, row_scope=self.read_scope)

    def read_scope(self, t: TableDef, alias: Any) -> ColumnElement[bool] | None:
        """The caller's row scope for reading ``t`` (through ``alias``); None when every row is readable."""
        return self.access.scope(self.cat, t, alias, "read")

    # --- building blocks ---------------------------------------------------------------------------
    def base_conditions(self, t: TableDef, trashed: bool = False) -> list[ColumnElement[bool]]:
        sa = t.sa
        conds: list[ColumnElement[bool]] = [sa.c.deleted_at.is_not(None) if trashed else sa.c.deleted_at.is_(None)]
        scope = self.read_scope(t, sa)
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
            # a saved view's conditions on fields this reader may not see are left out for them
            tree = self.access.visible_filter(self.cat, t, view["filter"])
            if tree:
                conds.append(FilterCompiler(t, self.ctx).compile(tree))
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
        cache = catalog_cache(self.cat, "columns")
        if uniform:
            hit: _ColumnSet | None = cache.get(key)
            if hit is not None and all(self.read_scope(self.cat.table_by_id(tid), self.cat.table_by_id(tid).sa) is None
                                       and not self.display_hidden(self.cat.table_by_id(tid))
                                       for tid in hit.scoped_tables):
                return hit.cols, vis
        scoped: set[int] = set()
        restricted = False

        def scope(target: TableDef, alias: Any) -> ColumnElement[bool] | None:
            nonlocal restricted
            s = self.read_scope(target, alias)
            scoped.add(target.id)
            restricted = restricted or s is not None or self.display_hidden(target)
            return s

        ctx = replace(self.ctx, row_scope=scope)
        cols: builtins.list[Any] = [sa.c.id, sa.c.version, sa.c.created_at, sa.c.updated_at]
        for f in fields:
            v = vis.get(f.id, True)
            if v is False or f.ftype.many_values(f, self.cat):
                continue
            expr = f.ftype.read_expression(f, sa, ctx)
            if v is not True:
                cols.append(case((v, literal(True)), else_=literal(False)).label(f"v{f.id}"))
            cols.append(expr.label(f"c{f.id}"))
            if _shows_record(f, self.cat):
                cols.append(self.display_expr(f, sa.c[f.column_name], ctx).label(f"d{f.id}"))
        if uniform and not restricted and all(
                self.cat.cached(("independent", f.id), functools.partial(reader_independent, f, self.cat))
                for f in fields):
            cache.put(key, _ColumnSet(cols, frozenset(scoped)))
        return cols, vis

    def display_expr(self, f: FieldDef, id_expr: Any, ctx: QueryContext | None = None) -> Any:
        """The display text of the record a to-one link points at (a scalar subquery on ``id_expr``),
        ``#<id>`` when the target's display field is hidden, NULL for a trashed or unreadable target."""
        ctx = ctx or self.ctx
        target = self.cat.table_by_id(f.options["target"])
        ta = target.sa.alias()
        value = self.display_value(target, ta, ctx)
        conds = [ta.c.id == id_expr, ta.c.deleted_at.is_(None)]
        scope = ctx.row_scope(target, ta) if ctx.row_scope else None
        if scope is not None:
            conds.append(scope)
        return select(value).where(*conds).scalar_subquery()

    def display_value(self, target: TableDef, ta: Any, ctx: QueryContext, depth: int = 0) -> Any:
        """A record's display as SQL: its display field's value, an autonumber as shown ("SO-000004"),
        a link's own display (never the linked id), and with ``display_parent`` the parent's display
        first ("SO-000004 · 云端CRM企业版"); ``#<id>`` when the display field is hidden from this reader."""
        disp = target.display_field
        if disp is not None and self.display_hidden(target):
            return literal("#") + cast(ta.c.id, String)
        own = self._field_display(disp, ta, ctx, depth) if disp is not None else cast(ta.c.id, String)
        parent = target.fields_by_key.get(target.doc.get("display_parent") or "")
        if parent is None or depth > 2 or not _shows_record(parent, self.cat) or parent is disp:
            return own
        before = self._field_display(parent, ta, ctx, depth)
        return func.coalesce(cast(before, String) + literal(" · "), literal("")) + \
            func.coalesce(cast(own, String), literal(""))

    def _field_display(self, f: FieldDef, ta: Any, ctx: QueryContext, depth: int) -> Any:
        if _shows_record(f, self.cat) and f.stored and depth < 3:
            nested = self.cat.table_by_id(f.options["target"])
            na = nested.sa.alias()
            conds = [na.c.id == ta.c[f.column_name], na.c.deleted_at.is_(None)]
            scope = ctx.row_scope(nested, na) if ctx.row_scope else None
            if scope is not None:
                conds.append(scope)
            return select(self.display_value(nested, na, ctx, depth + 1)).where(*conds).scalar_subquery()
        expr = f.ftype.expression(f, ta, replace(ctx, depth=1))
        if f.type == "autonumber":
            return numbered_text(expr, f.options.get("prefix") or "", int(f.options.get("digits") or 0),
                                 self.conn.dialect.name)
        return expr

    def display_is_text(self, target: TableDef) -> bool:
        """Is the display built as text here (no serializer needed)?"""
        disp = target.display_field
        return disp is None or disp.type == "autonumber" or _shows_record(disp, self.cat) \
            or bool(target.doc.get("display_parent"))

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
            if f is not None and _shows_record(f, self.cat) and f.stored \
                    and self.display_hidden(self.cat.table_by_id(f.options["target"])):
                k = SortKey(f, k.desc, f.ftype.read_expression(f, t.sa, self.ctx))
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
        ranges = None
        if cursor:
            if offset:
                raise BadRequest("use either cursor or offset, not both")
            values = read_cursor(self.secret, signature, cursor, len(keys))
            ranges = keyset_ranges(keys, values)
            if ranges is None:
                q = q.where(keyset_condition(keys, values))
        elif offset not in (None, ""):
            try:
                off = int(offset)
            except (TypeError, ValueError):
                raise BadRequest("offset must be a whole number") from None
            if off < 0 or off > 10_000_000:
                raise BadRequest("offset is out of range")
            q = q.offset(off)
        q = q.order_by(*order_by(keys))
        if ranges is None:
            rows = self.conn.execute(q.limit(n + 1)).all()
        else:  # one index range after another (the rows with a value, then the empty ones) until the page fills
            rows = []
            for cond in ranges:
                rows += self.conn.execute(q.where(cond).limit(n + 1 - len(rows))).all()
                if len(rows) > n:
                    break
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

    def visible_by_ids(self, t: TableDef, ids: builtins.list[int], fields: Any = None) -> builtins.list[dict[str, Any]]:
        """The records among ``ids`` this reader may see (trash and row scope applied), in the order given,
        in one statement; ids it may not see are left out, as ``get`` would refuse them one by one."""
        if not ids or not self.access.can_see_table(self.cat, t):
            return []
        fdefs = self.pick_fields(t, fields)
        cols, vis = self._columns(t, fdefs)
        rows = self.conn.execute(select(*cols).where(t.sa.c.id.in_(ids), *self.base_conditions(t))).all()
        by_id = {r.id: r for r in rows}
        return self.to_records(t, [by_id[i] for i in ids if i in by_id], fdefs, vis)

    def by_ids(self, t: TableDef, ids: builtins.list[int]) -> builtins.list[dict[str, Any]]:
        """Records by id, in the order given, every field as this reader sees it.

        No trash or row-scope condition: a writer reads back what it just wrote even when the write
        took a record out of its sight.
        """
        fdefs = list(t.fields)
        cols, vis = self._columns(t, fdefs)
        entry: _ColumnSet | None = catalog_cache(self.cat, "columns").get((t, tuple(f.id for f in fdefs)))
        if entry is not None and entry.cols is cols:
            if entry.by_ids is None:
                entry.by_ids = select(*cols).where(t.sa.c.id.in_(bindparam("ids", expanding=True)))
            rows = self.conn.execute(entry.by_ids, {"ids": ids}).all()
        else:
            rows = self.conn.execute(select(*cols).where(t.sa.c.id.in_(ids))).all()
        by_id = {r.id: r for r in rows}
        ordered = [by_id[i] for i in ids if i in by_id]
        return self.to_records(t, ordered, fdefs, vis)

    def to_records(self, t: TableDef, rows: Sequence[Any], fdefs: builtins.list[FieldDef],
                   vis: dict[int, Any]) -> builtins.list[dict[str, Any]]:
        cat = self.cat
        to_json: dict[str, Any] = catalog_cache(cat, "serializers").get_or_build(
            (t, tuple(f.id for f in fdefs)), lambda: {f.key: serializer(f, cat) for f in fdefs})
        ids = [r.id for r in rows]
        many: dict[int, dict[int, builtins.list[Any]]] = {}
        for f in fdefs:
            if vis.get(f.id, True) is False:
                continue
            if f.ftype.many_values(f, self.cat):
                many[f.id] = self._many_values(f, ids) if ids else {}
        user_ids: set[int] = set()
        user_keys = {f.key for f in fdefs if f.ftype.kind == USER}  # user ids, shown with the user's name
        # per field: (key, id, label of the value, label of the row visibility or None, link display label)
        plan = []
        for f in fdefs:
            visible = vis.get(f.id, True)
            if visible is False:
                continue
            plan.append((f.key, f.id, f"c{f.id}", None if visible is True else f"v{f.id}",
                         f"d{f.id}" if _shows_record(f, self.cat) else None, f.key in user_keys))
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
        return [{"id": r.id, "version": r.version, "created_at": iso_utc(r.created_at),
                 "updated_at": iso_utc(r.updated_at), "fields": {k: to_json[k](v) for k, v in raw.items()}}
                for r, raw in zip(rows, raw_rows, strict=True)]

    def _user_names(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        missing = ids.difference(self.names)
        shared = self.shared_names
        if missing and shared is not None:
            for i in [i for i in missing if i in shared]:
                self.names[i] = {"id": i, "name": shared.get(i)}
                missing.discard(i)
        if missing:
            rows = self.conn.execute(_USER_NAMES, {"ids": sorted(missing)}).all()
            self.names.update({r.id: {"id": r.id, "name": r.name} for r in rows})
            if shared is not None:
                shared.update({r.id: r.name for r in rows})
        return self.names

    def _many_values(self, f: FieldDef, ids: builtins.list[int]) -> dict[int, builtins.list[Any]]:
        """All linked records (or looked-up values) of one to-many field for a page, in one query."""
        records = f.ftype.is_link  # a link lists records ({"id", "display"}), a lookup the values it shows
        if records:
            link, target = f, self.cat.table_by_id(f.options["target"])
            value_f = target.display_field
        else:
            through = f.ftype.looked_up_through(f, self.cat)
            assert through is not None, f"{f.key} holds no list of values"
            link, value_f = through
            target = self.cat.table_by_id(value_f.table_id)
        rel = relation(link, self.cat)
        ra = rel.table.alias()
        ta = target.sa.alias()
        as_text = records and self.display_is_text(target)
        if as_text:
            value = self.display_value(target, ta, self.ctx)
        else:
            value = value_f.ftype.expression(value_f, ta, replace(self.ctx, depth=1)) if value_f else ta.c.id
        conds: builtins.list[ColumnElement[bool]] = [ra.c[rel.this].in_(ids), ta.c.deleted_at.is_(None)]
        src: Any
        if rel.trash and rel.table is not target.sa:
            conds.append(ra.c.deleted_at.is_(None))
        scope = self.read_scope(target, ta)
        if scope is not None:
            conds.append(scope)
        if rel.table is target.sa and rel.other == "id":
            src, this_col = ta, ta.c[rel.this]
            conds[0] = this_col.in_(ids)
        else:
            src, this_col = ra.join(ta, ta.c.id == ra.c[rel.other]), ra.c[rel.this]
        q = select(this_col.label("this"), ta.c.id.label("tid"), value.label("v")).select_from(src).where(*conds)
        out: dict[int, builtins.list[Any]] = {}
        hidden = records and self.display_hidden(target)
        for r in self.conn.execute(q.order_by(this_col, ta.c.id)):
            if records:
                disp = f"#{r.tid}" if hidden else r.v if as_text or value_f is None \
                    else serializer(value_f, self.cat)(r.v)
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


def numbered_text(expr: Any, prefix: str, digits: int, dialect: str) -> Any:
    """An autonumber as text the way it is shown: the prefix, then the number padded to ``digits``."""
    if digits > 0:
        if dialect == "sqlite":
            num: Any = func.printf(f"%0{int(digits)}d", expr)
        else:  # lpad cuts a longer text down to the width: leave those as they are
            s = cast(expr, String)
            num = case((func.length(s) >= digits, s), else_=func.lpad(s, digits, "0"))
    else:
        num = cast(expr, String)
    return literal(prefix) + num if prefix else num


def _shows_record(f: FieldDef, catalog: Catalog) -> bool:
    """A to-one link: its page column is the target's id, with the target's display beside it."""
    return f.ftype.is_link and f.ftype.value_kind(f, catalog) == LINK_ONE


def _display_text(value: Any) -> str:
    """A link's display value as text (a user's name, a date in ISO form, a whole float without ".0")."""
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
