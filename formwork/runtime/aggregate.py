"""The aggregation engine: grouped counts, sums and averages in one SQL GROUP BY statement.

Used by ``GET /data/{app}/{table}/aggregate``, dashboard widgets and kanban column counts. Rows come
through ``RecordReader.where`` so row-level permission scopes apply (a sum never includes a row the
caller can't read); values come from the field types' SQL expressions, so formulas, lookups and rollups
group and sum like stored fields. The statement is an inner SELECT of one row per record (group keys
and metric inputs) and an outer SELECT that groups it: group keys are then plain columns, which keeps
bound parameters (date formats, time zones) out of the GROUP BY clause on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    Float,
    Integer,
    Text,
    case,
    cast,
    false,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from formwork.db import users
from formwork.errors import BadRequest
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import (
    BOOL,
    DATE,
    DATETIME,
    LINK_ONE,
    MULTI,
    NUMBER,
    SELECT,
    TEXT,
    USER,
)
from formwork.metadata.fieldtypes.link import is_many
from formwork.metadata.fieldtypes.numeric import json_number
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.metadata.query import FilterCompiler
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader

BUCKETS = ("day", "week", "month", "quarter", "year")
FUNCTIONS = ("count", "count_distinct", "sum", "avg", "min", "max")
MAX_GROUP_FIELDS = 2
MAX_METRICS = 10
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


class HiddenField(BadRequest):
    """A field the caller may not see: reported exactly like an unknown field, so it doesn't leak."""


@dataclass
class Group:
    name: str  # the key in each group's "key" object: the field key
    field: FieldDef
    base: FieldDef  # the field whose values are shown (a lookup's target field, unwrapped)
    kind: str  # TEXT NUMBER BOOL SELECT USER LINK_ONE, or "bucket"
    bucket: str | None
    explode: bool


@dataclass
class Metric:
    name: str  # "count", "sum:amount", or a caller-chosen name for conditional metrics
    fn: str
    field: FieldDef | None
    kind: str = NUMBER
    condition: ColumnElement[bool] | None = None


def split_list(value: Any, what: str) -> list[str]:
    """A comma-separated query parameter or a list of strings."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadRequest(f"{what} takes a comma-separated list")
    return [i.strip() for i in items if i.strip()]


def parse_limit(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest("limit must be a whole number") from None
    if not 1 <= n <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return n


def _local_time(value: Any, tz: str) -> str | None:
    """SQLite has no time zones: this UDF turns a stored naive-UTC timestamp into local wall time."""
    if value is None:
        return None
    try:
        d = dt.datetime.fromisoformat(str(value))
        return d.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, ZoneInfoNotFoundError):
        return None


class Aggregator:
    """One grouped query over one table, as one caller sees it."""

    def __init__(self, conn: Connection, catalog: Catalog, access: Access) -> None:
        self.conn = conn
        self.cat = catalog
        self.access = access
        self.reader = RecordReader(catalog, conn, access)
        self.ctx = self.reader.ctx
        self.pg = conn.dialect.name == "postgresql"
        try:
            ZoneInfo(access.timezone)
            self.tz = access.timezone
        except (ZoneInfoNotFoundError, ValueError):
            self.tz = "UTC"

    # --- parsing -------------------------------------------------------------------------------
    def _field(self, t: TableDef, key: str, vis: dict[int, Any], what: str) -> FieldDef:
        f = t.fields_by_key.get(key)
        if f is None:
            raise BadRequest(f"{what}: no field '{key[:100]}' in table '{t.key}'")
        if vis.get(f.id, True) is False:
            raise HiddenField(f"{what}: no field '{key[:100]}' in table '{t.key}'")
        return f

    def _unwrap(self, f: FieldDef, what: str) -> FieldDef:
        """Follow lookups through to-one links to the field that holds the values."""
        seen = 0
        while (through := f.ftype.looked_up_through(f, self.cat)) is not None:
            link, tf = through
            if is_many(link):
                raise BadRequest(f"{what}: '{f.key}' looks up values through a to-many link, so a record has "
                                 "several; group by the link's target table instead")
            f = tf
            seen += 1
            if seen > 6:
                raise BadRequest(f"{what}: lookups are nested too deeply")
        return f

    def parse_groups(self, t: TableDef, specs: list[str], vis: dict[int, Any]) -> list[Group]:
        if len(specs) > MAX_GROUP_FIELDS:
            raise BadRequest(f"group_by takes at most {MAX_GROUP_FIELDS} fields, got {len(specs)}")
        out: list[Group] = []
        for spec in specs:
            key, _, bucket = spec.partition(":")
            what = f"group_by '{spec[:100]}'"
            f = self._field(t, key, vis, what)
            if any(g.name == key for g in out):
                raise BadRequest(f"{what}: '{key}' is grouped twice")
            base = self._unwrap(f, what)
            kind = f.ftype.value_kind(f, self.cat)
            if bucket and bucket not in BUCKETS:
                raise BadRequest(f"{what}: unknown date bucket '{bucket[:30]}'; use one of: {', '.join(BUCKETS)}")
            if bucket and kind not in (DATE, DATETIME):
                raise BadRequest(f"{what}: '{key}' ({f.type}) is not a date, so it has no '{bucket}' bucket")
            if kind in (DATE, DATETIME):
                out.append(Group(key, f, base, "bucket", bucket or "day", False))
                continue
            if kind == MULTI:
                elem = USER if base.ftype.kind == USER else SELECT
                out.append(Group(key, f, base, elem, None, True))
                continue
            if kind == LINK_ONE or kind in (TEXT, NUMBER, BOOL, SELECT, USER):
                out.append(Group(key, f, base, kind, None, False))
                continue
            raise BadRequest(f"{what}: cannot group by '{key}' ({f.type}): a record holds several values or "
                             "files there")
        return out

    def parse_metrics(self, t: TableDef, specs: list[str], vis: dict[int, Any]) -> list[Metric]:
        if len(specs) > MAX_METRICS:
            raise BadRequest(f"metrics takes at most {MAX_METRICS} entries")
        out: list[Metric] = []
        for spec in dict.fromkeys(specs or ["count"]):
            fn, _, key = spec.partition(":")
            what = f"metric '{spec[:100]}'"
            if fn not in FUNCTIONS:
                raise BadRequest(f"{what}: unknown function '{fn[:30]}'; use one of: {', '.join(FUNCTIONS)}")
            if fn == "count":
                if key:
                    raise BadRequest(f"{what}: count takes no field (use count_distinct:{key[:60]})")
                out.append(Metric("count", "count", None))
                continue
            if not key:
                raise BadRequest(f"{what}: {fn} needs a field, as in {fn}:amount")
            f = self._field(t, key, vis, what)
            kind = f.ftype.value_kind(f, self.cat)
            many_lookup = f.ftype.is_many_lookup(f, self.cat)
            if fn in ("sum", "avg") and (kind != NUMBER or many_lookup):
                raise BadRequest(f"{what}: '{key}' ({f.type}) is not a number, so it has no {fn}")
            if fn in ("min", "max") and (kind not in (NUMBER, DATE, DATETIME) or many_lookup):
                raise BadRequest(f"{what}: '{key}' ({f.type}) is not a number or a date, so it has no {fn}")
            if fn == "count_distinct" and not f.ftype.sortable(f, self.cat):
                raise BadRequest(f"{what}: '{key}' ({f.type}) holds several values per record")
            out.append(Metric(spec, fn, f, kind))
        return out

    # --- expressions ---------------------------------------------------------------------------
    def _value(self, t: TableDef, f: FieldDef, vis: dict[int, Any]) -> ColumnElement[Any]:
        return self._visible(f, f.ftype.expression(f, t.sa, self.ctx), vis)

    @staticmethod
    def _visible(f: FieldDef, expr: ColumnElement[Any], vis: dict[int, Any]) -> ColumnElement[Any]:
        v = vis.get(f.id, True)
        if v is not True:  # shown only on some rows: the others contribute NULL
            expr = case((v, expr), else_=None)
        return expr

    def _local(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        if self.tz == "UTC":
            return expr
        if self.pg:
            return func.timezone(literal(self.tz, Text()), func.timezone(literal("UTC", Text()), expr))
        self.conn.connection.driver_connection.create_function(  # type: ignore[union-attr]
            "fw_local_time", 2, _local_time, deterministic=True)
        return func.fw_local_time(expr, literal(self.tz, Text()), type_=Text())

    def bucket(self, expr: ColumnElement[Any], bucket: str) -> ColumnElement[Any]:
        """The same bucket keys on both databases: 2026-01-05, 2026-W02, 2026-01, 2026-Q1, 2026."""
        if self.pg:
            fmt = {"day": "YYYY-MM-DD", "week": 'IYYY-"W"IW', "month": "YYYY-MM", "quarter": 'YYYY-"Q"Q',
                   "year": "YYYY"}[bucket]
            return func.to_char(expr, literal(fmt, Text()), type_=Text())

        def sf(fmt: str, x: Any, *mods: Any) -> ColumnElement[Any]:
            return func.strftime(literal(fmt, Text()), x, *mods, type_=Text())

        if bucket in ("day", "month", "year"):
            return sf({"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[bucket], expr)
        if bucket == "quarter":
            q = (cast(sf("%m", expr), Integer) + 2) // 3
            return sf("%Y", expr).concat(literal("-Q", Text())).concat(cast(q, Text))  # || keeps NULL NULL
        # ISO week: the week belongs to the year of its Thursday; Monday is the first day
        back = (cast(sf("%w", expr), Integer) + 6) % 7
        shift = literal("-", Text()).concat(cast(back, Text())).concat(literal(" days", Text()))
        thursday = func.date(expr, shift, literal("+3 days", Text()), type_=Text())
        week = (cast(sf("%j", thursday), Integer) - 1) // 7 + 1
        return sf("%Y", thursday).concat(literal("-W", Text())).concat(
            func.printf(literal("%02d", Text()), week, type_=Text()))

    # --- the query -----------------------------------------------------------------------------
    def run(self, t: TableDef, group_by: Any = None, metrics: Any = None, filter_tree: Any = None,
            view: Any = None, search: str | None = None, sort: Any = None, limit: Any = None,
            extra: list[tuple[str, str, Any]] | None = None) -> list[dict[str, Any]]:
        """Grouped rows as ``[{"key": {...}, "count": n, ...}]``.

        ``extra`` adds conditional metrics ``(name, metric spec, filter tree)``: the metric over the rows
        of each group that also match the filter (dashboards compute ratios with them, in the same query).
        """
        if isinstance(view, str):
            view = t.view(view)
        conds = self.reader.where(t, filter_tree, search, view)
        vis = self.access.field_visibility(self.cat, t, t.sa)
        groups = self.parse_groups(t, split_list(group_by, "group_by"), vis)
        mets = self.parse_metrics(t, split_list(metrics, "metrics"), vis)
        for name, spec, cond_tree in extra or []:
            m = self.parse_metrics(t, [spec], vis)[0]
            m.name = name
            m.condition = FilterCompiler(t, self.ctx).compile(cond_tree)
            mets.append(m)
        n = parse_limit(limit)

        source: Any = t.sa
        cols: list[Any] = []
        for i, g in enumerate(groups):
            # read as shown: a link to a trashed or unreadable record groups as empty
            value = self._visible(g.field, g.field.ftype.read_expression(g.field, t.sa, self.ctx), vis)
            if g.explode:
                arr = value
                if self.pg:
                    arr = case((func.jsonb_typeof(value) == literal("array", Text()), value), else_=None)
                    je = func.jsonb_array_elements_text(arr).table_valued("value").lateral()
                else:
                    je = func.json_each(arr).table_valued("value")
                source = source.outerjoin(je, true())
                value = je.c.value
                if g.kind == USER:
                    value = cast(value, Integer)
            elif g.kind == "bucket":
                kind = g.field.ftype.value_kind(g.field, self.cat)
                value = self.bucket(self._local(value) if kind == DATETIME else value, g.bucket or "day")
            elif g.kind == BOOL:
                value = func.coalesce(value, false())
            cols.append(value.label(f"g{i}"))
        for j, m in enumerate(mets):
            if m.field is not None:
                value = self._value(t, m.field, vis)
                if m.fn == "avg" and not self.pg:
                    value = cast(value, Float)
            else:
                value = literal(1, Integer)
            if m.condition is not None:
                value = case((m.condition, value), else_=None)
            if m.field is not None or m.condition is not None:
                cols.append(value.label(f"m{j}"))
        if not cols:
            cols.append(literal(1, Integer).label("one"))
        inner = select(*cols).select_from(source).where(*conds).subquery("rows")

        keys = [inner.c[f"g{i}"] for i in range(len(groups))]
        # names and display values are looked up once per group, from the grouped id
        displays: dict[int, Any] = {}
        for i, g in enumerate(groups):
            if g.kind == USER:
                displays[i] = select(users.c.name).where(users.c.id == keys[i]).scalar_subquery().label(f"d{i}")
            elif g.kind == LINK_ONE:
                displays[i] = self.reader.display_expr(g.base, keys[i]).label(f"d{i}")
        aggs: list[Any] = []
        for j, m in enumerate(mets):
            col: Any = inner.c.get(f"m{j}")
            if m.fn == "count":
                agg: Any = func.count(col) if col is not None else func.count()
            elif m.fn == "count_distinct":
                agg = func.count(col.distinct())
            elif m.fn == "sum":
                agg = func.coalesce(func.sum(col), 0)
            else:
                agg = getattr(func, m.fn)(col)
            aggs.append(agg.label(f"a{j}"))
        q = select(*keys, *displays.values(), *aggs).select_from(inner)
        if keys:
            q = q.group_by(*keys)
        q = q.order_by(*self._order(groups, mets, inner, displays, aggs, sort)).limit(n)
        rows = self.conn.execute(q).all()
        return [self._row(r._mapping, groups, mets) for r in rows]

    def _natural(self, g: Group, i: int, inner: Any, displays: dict[int, Any]) -> Any:
        col = inner.c[f"g{i}"]
        if i in displays:
            return displays[i]  # rendered as its label: ORDER BY d0
        if g.kind == SELECT and g.base.ftype.kind in (SELECT, MULTI):
            values = [c["value"] for c in g.base.options.get("choices", [])]
            if values:  # choices in their defined order: lead, qualified, ... won (funnels read so)
                return case({v: k for k, v in enumerate(values)}, value=col, else_=len(values))
        return col

    def _order(self, groups: list[Group], mets: list[Metric], inner: Any, displays: dict[int, Any],
               aggs: list[Any], sort: Any) -> list[Any]:
        out: list[Any] = []
        for item in split_list(sort, "sort"):
            name, desc = item.lstrip("-"), item.startswith("-")
            expr = None
            for i, g in enumerate(groups):
                if g.name == name:
                    expr = self._natural(g, i, inner, displays)
            for j, m in enumerate(mets):
                if m.name == name:
                    expr = aggs[j]  # rendered as its label: ORDER BY a0 DESC
            if expr is None:
                names = [g.name for g in groups] + [m.name for m in mets]
                raise BadRequest(f"sort: '{name[:100]}' is neither a group nor a metric; use one of: "
                                 f"{', '.join(names)}")
            out.append((expr.desc() if desc else expr.asc()).nulls_last())
        for i, g in enumerate(groups):
            out.append(self._natural(g, i, inner, displays).asc().nulls_last())
            out.append(inner.c[f"g{i}"].asc().nulls_last())
        return out

    def _row(self, m: Any, groups: list[Group], mets: list[Metric]) -> dict[str, Any]:
        key: dict[str, Any] = {}
        for i, g in enumerate(groups):
            v = m[f"g{i}"]
            if v is None:
                key[g.name] = None
            elif g.kind == USER:
                key[g.name] = {"id": int(v), "name": m[f"d{i}"]}
            elif g.kind == LINK_ONE:
                key[g.name] = {"id": int(v), "display": "" if m[f"d{i}"] is None else str(m[f"d{i}"])}
            elif g.kind == NUMBER:
                key[g.name] = json_number(v)
            elif g.kind == BOOL:
                key[g.name] = bool(v)
            else:
                key[g.name] = str(v)
        out: dict[str, Any] = {"key": key}
        for j, met in enumerate(mets):
            out[met.name] = metric_json(met, m[f"a{j}"])
        return out


def metric_json(m: Metric, v: Any) -> Any:
    if v is None:
        return None
    if m.fn in ("count", "count_distinct"):
        return int(v)
    if m.fn in ("min", "max") and m.kind == DATE:
        return v[:10] if isinstance(v, str) else v.isoformat()[:10]
    if m.fn in ("min", "max") and m.kind == DATETIME:
        return iso_utc(v)
    n = json_number(v)
    return round(n, 10) if isinstance(n, float) else n


def aggregate(conn: Connection, catalog: Catalog, access: Access, table: TableDef, group_by: Any = None,
              metrics: Any = None, filter_tree: Any = None, view: Any = None, sort: Any = None,
              limit: Any = None, search: str | None = None) -> list[dict[str, Any]]:
    """Grouped metrics over the rows ``access`` may read, e.g. kanban column counts:
    ``aggregate(conn, cat, access, t, group_by=["stage"], metrics=["count", "sum:amount"])``."""
    return Aggregator(conn, catalog, access).run(table, group_by, metrics, filter_tree, view, search, sort, limit)
