"""The query compiler: filter trees, sorts, keyset cursors and search, into SQLAlchemy Core.

Every value is a bound parameter and every column comes from the catalog; a bad tree is a 400 that
names the condition at fault.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.sql.elements import ColumnElement

from formwork.db import users
from formwork.errors import BadRequest, ValidationFailed
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import (
    BOOL,
    DATE,
    DATETIME,
    FILES,
    LINK_MANY,
    LINK_ONE,
    MULTI,
    NUMBER,
    OPERATORS_BY_KIND,
    SELECT,
    TEXT,
    USER,
    FieldValueError,
    QueryContext,
)
from formwork.metadata.fieldtypes.link import is_many, relation
from formwork.metadata.fieldtypes.numeric import parse_number
from formwork.metadata.fieldtypes.temporal import parse_date, parse_datetime

MAX_DEPTH = 32
MAX_CONDITIONS = 500
RELATIVE = ("today", "yesterday", "tomorrow", "this_week", "last_week", "next_week", "this_month",
            "last_month", "next_month", "this_quarter", "last_quarter", "this_year", "last_year",
            "last_n_days", "next_n_days")


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _month_start(d: dt.date, delta: int = 0) -> dt.date:
    m = d.month - 1 + delta
    return dt.date(d.year + m // 12, m % 12 + 1, 1)


def relative_range(spec: dict[str, Any], today: dt.date) -> tuple[dt.date, dt.date]:
    """Inclusive [first, last] day of a relative date such as this_month or last_n_days."""
    name = spec.get("relative")
    n = spec.get("n", 7)
    if name not in RELATIVE:
        raise ValueError(f"unknown relative date '{str(name)[:40]}'; use one of: {', '.join(RELATIVE)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 36500:
        raise ValueError("n must be a whole number of days between 0 and 36500")
    one = dt.timedelta(days=1)
    if name == "today":
        return today, today
    if name == "yesterday":
        return today - one, today - one
    if name == "tomorrow":
        return today + one, today + one
    if name.endswith("_week"):
        start = today - dt.timedelta(days=today.weekday())
        start += dt.timedelta(days={"this_week": 0, "last_week": -7, "next_week": 7}[name])
        return start, start + dt.timedelta(days=6)
    if name.endswith("_month"):
        delta = {"this_month": 0, "last_month": -1, "next_month": 1}[name]
        start = _month_start(today, delta)
        return start, _month_start(start, 1) - one
    if name.endswith("_quarter"):
        q0 = _month_start(today, -((today.month - 1) % 3))
        start = _month_start(q0, -3 if name == "last_quarter" else 0)
        return start, _month_start(start, 3) - one
    if name.endswith("_year"):
        y = today.year - (1 if name == "last_year" else 0)
        return dt.date(y, 1, 1), dt.date(y, 12, 31)
    if name == "last_n_days":
        return today - dt.timedelta(days=n), today
    return today, today + dt.timedelta(days=n)


@dataclass
class Resolved:
    field: FieldDef  # the field named by the condition (for messages)
    source: FieldDef  # the field whose values the condition compares (a lookup's target, recursively)
    expr: ColumnElement[Any] | None  # None for to-many links, which are tested with EXISTS
    kind: str
    path: str
    many_lookup: tuple[Any, ...] | None = None  # (relation, relation alias, target alias, target) for EXISTS


MANY_VALUED = (MULTI, LINK_MANY, FILES)


def link_value(f: FieldDef, t: Any, ctx: QueryContext) -> ColumnElement[Any]:
    """A to-one link's target id, or NULL when the target is in the trash or hidden from the reader."""
    target = ctx.catalog.table_by_id(f.options["target"])
    ta = target.sa.alias()
    conds = [ta.c.id == t.c[f.column_name], ta.c.deleted_at.is_(None)]
    scope = ctx.row_scope(target, ta) if ctx.row_scope else None
    if scope is not None:
        conds.append(scope)
    return select(ta.c.id).where(*conds).correlate_except(ta).scalar_subquery()


def value_source(f: FieldDef, catalog: Catalog) -> FieldDef:
    """The stored field whose values a computed field shows: choices and prefixes come from it."""
    for _ in range(8):
        shown = f.ftype.shown_field(f, catalog)
        if shown is None:
            break
        f = shown
    return f


class FilterCompiler:
    """Compiles one filter tree for one table (or an alias of it)."""

    def __init__(self, table: TableDef, ctx: QueryContext, alias: Any = None) -> None:
        self.table = table
        self.ctx = ctx
        self.cat: Catalog = ctx.catalog
        self.t = alias if alias is not None else table.sa
        self.count = 0

    @classmethod
    def check(cls, table: TableDef, catalog: Catalog, tree: Any, pointer: str) -> None:
        """Validate a stored filter (views, rules, widgets): problems are 422s at ``pointer``."""
        try:
            cls(table, QueryContext(catalog=catalog, dialect="sqlite")).compile(tree)
        except BadRequest as e:
            raise ValidationFailed.from_details({pointer: [e.message]}) from None

    def compile(self, tree: Any) -> ColumnElement[bool]:
        if tree is None or tree == {}:
            return true()
        return self._node(tree, 0, "filter")

    def _node(self, node: Any, depth: int, where: str) -> ColumnElement[bool]:
        # checked before descending, so a tree thousands of levels deep never reaches Python's recursion limit
        if depth > MAX_DEPTH:
            raise BadRequest(f"the filter is nested more than {MAX_DEPTH} levels deep")
        if not isinstance(node, dict):
            raise BadRequest(f"{where}: a filter node must be an object")
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise BadRequest(f"the filter has more than {MAX_CONDITIONS} conditions")
        for group in ("and", "or"):
            if group in node:
                if len(node) != 1 or not isinstance(node[group], list):
                    raise BadRequest(f"{where}: '{group}' takes a list of conditions and nothing else")
                parts = [self._node(child, depth + 1, f"{where}.{group}[{i}]")
                         for i, child in enumerate(node[group])]
                if not parts:
                    return true()
                return and_(*parts) if group == "and" else or_(*parts)
        if "not" in node:
            if len(node) != 1:
                raise BadRequest(f"{where}: 'not' takes one condition and nothing else")
            # SQL's NULL would make "not" drop rows whose values are empty; the complement is meant
            return not_(func.coalesce(self._node(node["not"], depth + 1, f"{where}.not"), false()))
        return self._condition(node, where)

    # --- conditions ------------------------------------------------------------------------------
    def resolve(self, path: Any, where: str) -> Resolved:
        if not isinstance(path, str) or not path:
            raise BadRequest(f"{where}: 'field' must be a field key")
        parts = path.split(".")
        if len(parts) > 2:
            raise BadRequest(f"{where}: '{path[:100]}' goes through more than one link")
        f = self.table.fields_by_key.get(parts[0])
        if f is None:
            raise BadRequest(f"{where}: no field '{parts[0][:100]}' in table '{self.table.key}'")
        kind = f.ftype.value_kind(f, self.cat)
        if len(parts) == 1:
            if f.ftype.is_many_lookup(f, self.cat):
                link, tf, target = f.ftype.parts(f, self.cat)  # type: ignore[attr-defined]
                return self._many_lookup(f, link, tf, target, path)
            if kind == LINK_MANY:
                return Resolved(f, f, None, kind, path)
            if kind == LINK_ONE and f.ftype.is_link:
                return Resolved(f, f, link_value(f, self.t, self.ctx), kind, path)
            return Resolved(f, value_source(f, self.cat), f.ftype.expression(f, self.t, self.ctx), kind, path)
        if not f.ftype.is_link:
            raise BadRequest(f"{where}: '{f.key}' is not a link, so '{path[:100]}' is not a field")
        target = self.cat.table_by_id(f.options["target"])
        tf = target.fields_by_key.get(parts[1])
        if tf is None:
            raise BadRequest(f"{where}: no field '{parts[1][:100]}' in table '{target.key}'")
        tkind = tf.ftype.value_kind(tf, self.cat)
        if tkind in MANY_VALUED or tf.ftype.is_many_lookup(tf, self.cat):
            raise BadRequest(f"{where}: '{path[:100]}' holds several values per linked record; "
                             f"filter on '{tf.key}' in '{target.key}' instead")
        if is_many(f):
            return self._many_lookup(tf, f, tf, target, path)
        ta = target.sa.alias()
        inner = tf.ftype.expression(tf, ta, replace(self.ctx, depth=self.ctx.depth + 1))
        conds = [ta.c.id == self.t.c[f.column_name], ta.c.deleted_at.is_(None)]
        scope = self.ctx.row_scope(target, ta) if self.ctx.row_scope else None
        if scope is not None:
            conds.append(scope)
        expr = select(inner).where(*conds).scalar_subquery()
        return Resolved(tf, value_source(tf, self.cat), expr, tkind, path)

    def _many_lookup(self, shown: FieldDef, link: FieldDef, tf: FieldDef, target: TableDef,
                     path: str) -> Resolved:
        rel = relation(link, self.cat)
        ra = rel.table.alias()
        ta = target.sa.alias()
        expr = tf.ftype.expression(tf, ta, replace(self.ctx, depth=self.ctx.depth + 1))
        return Resolved(shown, value_source(tf, self.cat), expr, tf.ftype.value_kind(tf, self.cat), path,
                        (rel, ra, ta, target))

    def _condition(self, c: dict[str, Any], where: str) -> ColumnElement[bool]:
        extra = set(c) - {"field", "op", "value"}
        if extra:
            raise BadRequest(f"{where}: unknown keys {sorted(extra)[:5]} in a condition")
        r = self.resolve(c.get("field"), where)
        op = c.get("op")
        allowed = OPS_BY_KIND.get(r.kind, ())
        if op not in allowed:
            raise BadRequest(f"{where}: operator '{str(op)[:30]}' is not allowed for '{r.path}' "
                             f"({r.field.type}); use one of: {', '.join(allowed)}")
        value = c.get("value")
        if op not in ("is_empty", "is_not_empty") and value is None:
            raise BadRequest(f"{where}: '{op}' on '{r.path}' needs a 'value' (use is_empty for empty values)")
        try:
            if r.many_lookup is not None:
                return self._through_many(r, op, value)
            return self._apply(r, op, value)
        except (FieldValueError, ValueError) as e:
            msg = e.message if isinstance(e, FieldValueError) else str(e)
            raise BadRequest(f"{where}: value for '{r.path}' {op}: {msg}") from None

    def _through_many(self, r: Resolved, op: str, value: Any) -> ColumnElement[bool]:
        """Any linked record matches (negative operators: none of them matches the positive one)."""
        rel, ra, ta, target = r.many_lookup  # type: ignore[misc]
        negative = {"ne": "eq", "not_in": "in", "not_contains": "contains", "is_empty": "is_not_empty"}
        pos_op = negative.get(op, op)
        inner = Resolved(r.field, r.source, r.expr, r.kind, r.path)
        conds = [ta.c.deleted_at.is_(None), self._apply(inner, pos_op, value)]
        scope = self.ctx.row_scope(target, ta) if self.ctx.row_scope else None
        if scope is not None:
            conds.append(scope)
        if rel.table is target.sa:  # the reverse of a to-one link: the linked rows are the target's rows
            src: Any = ta
            conds.append(ta.c[rel.this] == self.t.c.id)
        else:
            src = ra.join(ta, ta.c.id == ra.c[rel.other])
            conds.append(ra.c[rel.this] == self.t.c.id)
        found = exists(select(literal(1)).select_from(src).where(and_(*conds)))
        return not_(found) if op in negative else found

    def _value(self, r: Resolved, v: Any) -> Any:
        """Coerce one filter value to what the column holds."""
        k = r.kind
        src = r.source
        people = k == USER or (k == MULTI and src.ftype.holds_users)
        if isinstance(v, dict) and "var" in v:
            if v["var"] == "me" and people:
                return self.ctx.user_id if self.ctx.user_id is not None else -1
            if v["var"] == "now" and k in (DATE, DATETIME):
                return self.ctx.now if k == DATETIME else self.ctx.today
            if v["var"] == "today" and k in (DATE, DATETIME):
                return self.ctx.today
            raise ValueError(f"the variable '{str(v['var'])[:30]}' does not apply here")
        if isinstance(v, dict | list):
            raise ValueError("must be a single value")
        if k == TEXT:
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ValueError("must be text")
            return str(v)
        if k == NUMBER:
            v = src.ftype.filter_value(v, src)
            d = parse_number(v)
            if d == d.to_integral_value():
                return int(d)
            # exact on PostgreSQL's NUMERIC (a float 0.1 is not 0.1 there); SQLite stores REALs
            return float(d) if self.ctx.dialect == "sqlite" else d
        if k == DATE:
            return parse_date(v)
        if k == DATETIME:
            return parse_datetime(v, self.ctx.timezone)
        if k == BOOL:
            if not isinstance(v, bool):
                raise ValueError("must be true or false")
            return v
        if people:
            return self._user_value(v)
        if k in (SELECT, MULTI):
            values = [ch["value"] for ch in src.options.get("choices", [])]
            if not isinstance(v, str) or v not in values:
                raise ValueError(f"'{str(v)[:80]}' is not one of: {', '.join(values[:20])}")
            return v
        if k in (LINK_ONE, LINK_MANY):
            if isinstance(v, str) and v.strip().isdigit():
                v = int(v.strip())
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError("must be a record id")
            return v
        raise ValueError("cannot be compared")

    def _user_value(self, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip():
            if v.strip().isdigit():
                return int(v.strip())
            return select(users.c.id).where(users.c.username == v.strip()).scalar_subquery()
        raise ValueError("must be a user id, a username or {\"var\": \"me\"}")

    def _list(self, r: Resolved, value: Any) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise ValueError("must be a non-empty list")
        if len(value) > 1000:
            raise ValueError("takes at most 1000 values")
        return [self._value(r, v) for v in value]

    def _range(self, r: Resolved, value: Any) -> tuple[Any, Any] | None:
        """A relative date or a plain date on a datetime field means a range of instants/days."""
        if isinstance(value, dict) and "relative" in value:
            extra = set(value) - {"relative", "n"}
            if extra:
                raise ValueError(f"unknown keys {sorted(extra)[:5]} in a relative date")
            first, last = relative_range(value, self.ctx.today)
        elif r.kind == DATETIME and isinstance(value, str) and len(value.strip()) <= 11 \
                and "T" not in value and ":" not in value:
            first = last = parse_date(value)
        elif r.kind == DATETIME and isinstance(value, dict) and value.get("var") == "today":
            first = last = self.ctx.today
        else:
            return None
        if r.kind == DATETIME:
            tz = ZoneInfo(self.ctx.timezone)

            def instant(d: dt.date) -> dt.datetime:
                return dt.datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(dt.UTC).replace(tzinfo=None)

            return instant(first), instant(last + dt.timedelta(days=1))
        return first, last + dt.timedelta(days=1)  # half-open [first, next day)

    def _apply(self, r: Resolved, op: str, value: Any) -> ColumnElement[bool]:
        k = r.kind
        if op in ("is_empty", "is_not_empty"):
            cond = self._empty(r)
            return cond if op == "is_empty" else not_(cond)
        if k in (MULTI, LINK_MANY):
            vals = self._list(r, value if isinstance(value, list) else [value])
            return self._multi(r, op, vals)
        e = r.expr
        assert e is not None
        if k in (DATE, DATETIME) and op in ("eq", "ne", "lt", "lte", "gt", "gte"):
            rng = self._range(r, value)
            if rng is not None:
                lo, hi = rng
                return {"eq": and_(e >= lo, e < hi), "ne": or_(e < lo, e >= hi, e.is_(None)),
                        "lt": e < lo, "lte": e < hi, "gt": e >= hi, "gte": e >= lo}[op]
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError("takes a list of two values [from, to]")
            lo_r = self._range(r, value[0]) if k in (DATE, DATETIME) else None
            hi_r = self._range(r, value[1]) if k in (DATE, DATETIME) else None
            lo = lo_r[0] if lo_r else self._value(r, value[0])
            if hi_r:
                return and_(e >= lo, e < hi_r[1])
            return and_(e >= lo, e <= self._value(r, value[1]))
        if k == TEXT and op in ("eq", "ne", "in", "not_in"):
            # text compares case-insensitively; lower() runs on both sides in SQL so both agree
            vals = self._list(r, value) if op in ("in", "not_in") else [self._value(r, value)]
            low = func.lower(e)
            cond = low == func.lower(literal(vals[0], String())) if len(vals) == 1 else \
                low.in_([func.lower(literal(v, String())) for v in vals])
            return cond if op in ("eq", "in") else or_(not_(cond), e.is_(None))
        if op in ("in", "not_in"):
            vals = self._list(r, value)
            cond = e.in_(vals)
            return cond if op == "in" else or_(not_(cond), e.is_(None))
        if op in ("contains", "not_contains", "starts_with", "ends_with"):
            text = self._value(r, value)
            if text == "":
                raise ValueError("must not be empty")
            pat = {"contains": "%{}%", "not_contains": "%{}%", "starts_with": "{}%", "ends_with": "%{}"}[op]
            like = e.ilike(pat.format(escape_like(text)), escape="\\")
            return or_(not_(like), e.is_(None)) if op == "not_contains" else like
        v = self._value(r, value)
        if k == BOOL:
            cond = func.coalesce(e, false()) == v
            return cond if op == "eq" else not_(cond)
        if op == "eq":
            return e == v
        if op == "ne":
            return or_(e != v, e.is_(None))
        return {"lt": e < v, "lte": e <= v, "gt": e > v, "gte": e >= v}[op]

    def _json_length(self, e: Any) -> Any:
        return func.json_array_length(e) if self.ctx.dialect == "sqlite" else func.jsonb_array_length(e)

    def _empty(self, r: Resolved) -> ColumnElement[bool]:
        if r.kind == LINK_MANY:
            return not_(self._link_exists(r.field, None))
        e = r.expr
        assert e is not None
        if r.kind == TEXT:
            return or_(e.is_(None), e == "")
        if r.kind in (MULTI, FILES):
            return or_(e.is_(None), self._json_length(e) == 0)
        if r.kind == BOOL:
            return func.coalesce(e, false()) == false()
        return e.is_(None)

    def _link_exists(self, f: FieldDef, ids: list[Any] | None) -> ColumnElement[bool]:
        """Some live linked record (among ``ids``) exists for the row."""
        rel = relation(f, self.cat)
        target = self.cat.table_by_id(f.options["target"])
        ta = target.sa.alias()
        if rel.table is target.sa:  # reverse of a to-one link: the target rows point at this row
            conds = [ta.c[rel.this] == self.t.c.id, ta.c.deleted_at.is_(None)]
            src: Any = ta
        else:
            ra = rel.table.alias()
            conds = [ra.c[rel.this] == self.t.c.id, ta.c.deleted_at.is_(None)]
            src = ra.join(ta, ta.c.id == ra.c[rel.other])
        if ids is not None:
            conds.append(ta.c.id.in_(ids))
        scope = self.ctx.row_scope(target, ta) if self.ctx.row_scope else None
        if scope is not None:
            conds.append(scope)
        return exists(select(literal(1)).select_from(src).where(*conds))

    def _multi(self, r: Resolved, op: str, vals: list[Any]) -> ColumnElement[bool]:
        if r.kind == LINK_MANY:
            if op == "has_any":
                return self._link_exists(r.field, vals)
            if op == "has_none":
                return not_(self._link_exists(r.field, vals))
            return and_(*[self._link_exists(r.field, [v]) for v in dict.fromkeys(vals)])
        e = r.expr
        assert e is not None
        if self.ctx.dialect == "sqlite":
            je = func.json_each(e).table_valued("value")
            wanted = vals
        else:
            je = func.jsonb_array_elements_text(e).table_valued("value")
            wanted = [cast(v, String()) if isinstance(v, ColumnElement) else str(v) for v in vals]
        elem = je.c.value
        plain = list(dict.fromkeys(v for v in wanted if not isinstance(v, ColumnElement)))
        exprs = [v for v in wanted if isinstance(v, ColumnElement)]
        n = len(plain) + len(exprs)
        matches = select(func.count(func.distinct(elem))).select_from(je).where(elem.in_([*plain, *exprs]))
        if op == "has_any":
            return and_(e.is_not(None), matches.scalar_subquery() > 0)
        if op == "has_none":
            return or_(e.is_(None), matches.scalar_subquery() == 0)
        if op == "has_all":
            return and_(e.is_not(None), matches.scalar_subquery() == n)
        return and_(e.is_not(None), matches.scalar_subquery() == n, self._json_length(e) == n)


OPS_BY_KIND = OPERATORS_BY_KIND


# --- sorting and keyset cursors ---------------------------------------------------------------------
@dataclass
class SortKey:
    field: FieldDef | None  # None: the id tiebreak
    desc: bool
    expr: ColumnElement[Any]


def parse_sort(spec: Any) -> list[tuple[str, bool]]:
    if spec is None or spec == "":
        return []
    items = spec.split(",") if isinstance(spec, str) else spec
    if not isinstance(items, list) or len(items) > 10:
        raise BadRequest("sort takes at most 10 comma-separated field keys")
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise BadRequest("sort takes field keys such as -amount,name")
        item = item.strip()
        out.append((item.lstrip("-"), item.startswith("-")))
    return out


def sort_keys(table: TableDef, ctx: QueryContext, spec: list[tuple[str, bool]], t: Any = None) -> list[SortKey]:
    t = t if t is not None else table.sa
    keys: list[SortKey] = []
    for key, desc in spec:
        if key == "id":
            keys.append(SortKey(None, desc, t.c.id))
            break
        f = table.fields_by_key.get(key)
        if f is None:
            raise BadRequest(f"cannot sort by '{key[:100]}': no such field in '{table.key}'")
        if not f.ftype.sortable(f, ctx.catalog):
            raise BadRequest(f"cannot sort by '{key}' ({f.type}): it holds several values")
        keys.append(SortKey(f, desc, sort_expression(f, t, ctx)))
    if not keys or keys[-1].field is not None:
        keys.append(SortKey(None, False, t.c.id))  # stable tiebreak (id ascending: docs/api-records.md)
    return keys


def sort_expression(f: FieldDef, t: Any, ctx: QueryContext) -> ColumnElement[Any]:
    kind = f.ftype.value_kind(f, ctx.catalog)
    expr = f.ftype.expression(f, t, ctx)
    if kind == LINK_ONE and f.ftype.is_link:
        target = ctx.catalog.table_by_id(f.options["target"])
        disp = target.display_field
        if disp is not None and disp.ftype.sortable(disp, ctx.catalog):
            # by the target's display text, but only of targets the reader can see: the order (and the
            # cursor, which carries the sort values) must not reveal the name of a hidden record
            ta = target.sa.alias()
            conds = [ta.c.id == expr, ta.c.deleted_at.is_(None)]
            scope = ctx.row_scope(target, ta) if ctx.row_scope else None
            if scope is not None:
                conds.append(scope)
            return select(disp.ftype.expression(disp, ta, replace(ctx, depth=ctx.depth + 1))).where(
                *conds).scalar_subquery()
    if kind == USER and f.ftype.holds_users:
        return select(users.c.name).where(users.c.id == expr).scalar_subquery()
    src = value_source(f, ctx.catalog)
    if kind == SELECT and src.ftype.has_choices:
        # choices sort in their defined order (lead, qualified, ... won), as users arrange them;
        # a lookup of a single select sorts like the field it shows
        values = [c["value"] for c in src.options.get("choices", [])]
        if values:
            return case({v: i for i, v in enumerate(values)}, value=expr, else_=None)
    return expr


def order_by(keys: list[SortKey]) -> list[Any]:
    out = []
    for k in keys:
        col = k.expr.desc() if k.desc else k.expr.asc()
        out.append(col.nulls_last() if k.field is not None else col)
    return out


def keyset_condition(keys: list[SortKey], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys`` (NULLs last in both directions)."""
    k, v = keys[0], values[0]
    rest = keyset_condition(keys[1:], values[1:]) if len(keys) > 1 else None
    e = k.expr
    if v is None:
        return and_(e.is_(None), rest) if rest is not None else false()
    after = (e < v) if k.desc else (e > v)
    if k.field is not None:
        after = or_(after, e.is_(None))
    if rest is None:
        return after
    return or_(after, and_(e == v, rest))


def keyset_ranges(keys: list[SortKey], values: list[Any]) -> list[ColumnElement[bool]] | None:
    """The rows after ``values`` as index ranges to read one after the other, or None (use keyset_condition).

    For one sort field plus the id tiebreak (what ``sort_keys`` builds for a one-field sort), each part
    is one range of an index on (field, id) in the sort's directions (a saved view's index), where the
    OR-expanded condition of ``keyset_condition`` makes the planner scan the index from its start:

    * ascending: the row-value range ``(field, id) > (v, id0)``, then the empty fields (NULLs sort last);
    * descending (ties still by id ascending, as documented): ``field = v AND id > id0``, then
      ``field < v``, then the empty fields — the mixed directions have no single row-value range.

    A cursor inside the empty rows continues with ``field IS NULL AND id > id0``.
    """
    if len(keys) != 2 or keys[0].field is None or keys[1].field is not None or keys[1].desc:
        return None
    (k, tie), (v, last) = keys, values
    if last is None:
        return None
    e, ident = k.expr, tie.expr
    if v is None:
        return [and_(e.is_(None), ident > last)]
    value = literal(v, e.type)
    if not k.desc:
        return [tuple_(e, ident) > tuple_(value, literal(last, ident.type)), e.is_(None)]
    return [and_(e == value, ident > last), e < value, e.is_(None)]


def _enc(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return {"t": v.isoformat()}
    if isinstance(v, dt.date):
        return {"d": v.isoformat()}
    if isinstance(v, Decimal):
        return {"n": str(v)}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        if "t" in v:
            return dt.datetime.fromisoformat(v["t"])
        if "d" in v:
            return dt.date.fromisoformat(v["d"])
        if "n" in v:
            return Decimal(v["n"])
        raise ValueError("bad cursor value")
    if isinstance(v, list):
        raise ValueError("bad cursor value")
    return v


def make_cursor(secret: bytes, signature: str, values: list[Any]) -> str:
    body = json.dumps({"s": signature, "v": [_enc(x) for x in values]}, separators=(",", ":"),
                      ensure_ascii=False).encode()
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def read_cursor(secret: bytes, signature: str, cursor: str, n: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mac, body = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()[:12]):
            raise ValueError("signature")
        data = json.loads(body)
        if data["s"] != signature or len(data["v"]) != n:
            raise ValueError("sort")
        return [_dec(x) for x in data["v"]]
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the cursor is invalid or belongs to a different query; start from the first page") \
            from None


def search_condition(table: TableDef, ctx: QueryContext, text: str, t: Any = None,
                     visibility: dict[int, Any] | None = None) -> ColumnElement[bool]:
    """Rows where some searchable field contains ``text``.

    ``visibility`` (Access.field_visibility of the reader) keeps hidden fields out: a match on a value the
    reader can't see would reveal it one guess at a time. A field shown only on some rows matches only there.
    """
    t = t if t is not None else table.sa
    text = text.strip()
    if not text:
        return true()
    if len(text) > 200:
        raise BadRequest("search text is longer than 200 characters")
    if "\x00" in text:
        raise BadRequest("search text holds a NUL character")
    pat = f"%{escape_like(text)}%"
    conds: list[ColumnElement[bool]] = []

    def shown(f: FieldDef, cond: ColumnElement[bool]) -> None:
        v = True if visibility is None else visibility.get(f.id, True)
        if v is True:
            conds.append(cond)
        elif v is not False:
            conds.append(and_(v, cond))

    for f in table.fields:
        if f.ftype.searchable and f.stored:
            shown(f, f.ftype.expression(f, t, ctx).ilike(pat, escape="\\"))
        if f.ftype.number_searchable and text.isascii() and text.isdigit() and len(text) <= 18:
            shown(f, t.c[f.column_name] == int(text))
    return or_(*conds) if conds else false()
