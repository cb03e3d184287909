"""Dashboards: every widget's numbers as one viewer sees them, under the dashboard's own filters.

A dashboard may declare filters that apply to every widget (a period with presets, an owner or team, any
field the builder adds); the viewer's choice is a :class:`Selection`. Each widget stays ONE grouped
statement (``Aggregator.run``): the dashboard's filters are folded into the widget's own filter tree, so
the row scope, hidden fields and the SQL shape are exactly those of ``GET .../aggregate``. A comparison
(previous period, same period last year) runs the same statement once more over the shifted period.

``drill_tree`` gives the filter of the records behind one bar, slice, cell or KPI (the widget's filter,
the dashboard's filters and the group's key), which the pages open as a filtered grid.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from formwork.db import users
from formwork.errors import BadRequest, Forbidden
from formwork.metadata.catalog import Catalog, TableDef
from formwork.metadata.fieldtypes.base import BOOL, DATE, DATETIME, LINK_ONE, MULTI, NUMBER, USER
from formwork.metadata.query import relative_range
from formwork.runtime.aggregate import Aggregator, HiddenField
from formwork.runtime.permissions import Access

#: the period presets a dashboard offers (relative to today in the viewer's time zone)
PERIODS = ("this_week", "last_week", "this_month", "last_month", "this_quarter", "last_quarter", "this_year",
           "last_year", "last_7_days", "last_30_days", "last_90_days", "last_365_days")
COMPARES = ("previous_period", "previous_year")
SINGLE = ("kpi", "gauge")  # widgets that show one number
MAX_VALUE = 200


def shared_with(access: Access, doc: dict[str, Any]) -> bool:
    """Per-dashboard sharing: a dashboard naming roles is seen by those roles (and by builders)."""
    roles = doc.get("roles") or []
    if not roles or access.is_admin or access.can_build():
        return True
    mine = {r.get("key") for r in access.roles}
    return any(r in mine for r in roles)


def _shift_months(d: dt.date, months: int) -> dt.date:
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    last = (dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(y, m, min(d.day, last))


def _month_end(d: dt.date) -> dt.date:
    return _shift_months(d.replace(day=1), 1) - dt.timedelta(days=1)


def preset_range(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    if name.startswith("last_") and name.endswith("_days"):
        n = int(name[5:-5])
        return today - dt.timedelta(days=n - 1), today
    return relative_range({"relative": name}, today)


def shifted(lo: dt.date, hi: dt.date, compare: str) -> tuple[dt.date, dt.date]:
    """The period a comparison reads: the same period a year before, or the one just before it."""
    if compare == "previous_year":
        end = _month_end(_shift_months(hi.replace(day=1), -12)) if hi == _month_end(hi) else _shift_months(hi, -12)
        return _shift_months(lo, -12), end
    if lo.day == 1 and hi == _month_end(hi):  # whole months: the same number of months before
        months = (hi.year - lo.year) * 12 + hi.month - lo.month + 1
        return _shift_months(lo, -months), _month_end(_shift_months(lo, -1))
    days = (hi - lo).days + 1
    return lo - dt.timedelta(days=days), lo - dt.timedelta(days=1)


@dataclass
class Selection:
    """What the viewer chose on a dashboard: a period, a comparison, an owner or team, field values."""

    period: str | None = None  # a preset, "custom", or None for all time
    start: dt.date | None = None
    end: dt.date | None = None
    compare: str | None = None
    owner: int | None = None
    team: int | None = None
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, args: Any, doc: dict[str, Any]) -> Selection:
        """From query parameters (``period``, ``from``, ``to``, ``compare``, ``owner``, ``team``,
        ``f_<filter key>``); a dashboard's default period applies when none is chosen."""
        period_filter = next((f for f in doc.get("filters") or [] if f.get("type") == "period"), None)
        s = cls()
        period = args.get("period")
        if period is None and period_filter is not None:
            period = period_filter.get("default")
        if period and period != "all":
            if period == "custom":
                try:
                    s.start = dt.date.fromisoformat(args.get("from") or "") if args.get("from") else None
                    s.end = dt.date.fromisoformat(args.get("to") or "") if args.get("to") else None
                except ValueError:
                    raise BadRequest("from and to are dates such as 2026-01-31") from None
                if s.start and s.end and s.start > s.end:
                    raise BadRequest("from is after to")
            elif period not in PERIODS:
                raise BadRequest(f"unknown period '{str(period)[:40]}'; use one of: all, custom, {', '.join(PERIODS)}")
            s.period = period
        compare = args.get("compare") or None
        if compare is not None and compare not in COMPARES:
            raise BadRequest(f"unknown comparison '{str(compare)[:40]}'; use one of: {', '.join(COMPARES)}")
        s.compare = compare
        for name in ("owner", "team"):
            raw = args.get(name)
            if raw:
                try:
                    setattr(s, name, int(raw))
                except ValueError:
                    raise BadRequest(f"{name} takes a user or team id") from None
        for f in doc.get("filters") or []:
            if f.get("type") == "field" and args.get(f"f_{f['key']}"):
                s.values[f["key"]] = str(args.get(f"f_{f['key']}"))[:MAX_VALUE]
        return s

    def range(self, today: dt.date) -> tuple[dt.date, dt.date] | None:
        if self.period == "custom":
            if self.start is None and self.end is None:
                return None
            return self.start or dt.date(1900, 1, 1), self.end or dt.date(9999, 12, 31)
        if self.period:
            return preset_range(self.period, today)
        return None

    def params(self) -> list[tuple[str, str]]:
        """The selection as query parameters (links keep it)."""
        out: list[tuple[str, str]] = [("period", self.period or "all")]
        if self.period == "custom":
            out += [(k, v.isoformat()) for k, v in (("from", self.start), ("to", self.end)) if v is not None]
        if self.compare:
            out.append(("compare", self.compare))
        out += [(k, str(v)) for k, v in (("owner", self.owner), ("team", self.team)) if v is not None]
        out += [(f"f_{k}", v) for k, v in self.values.items()]
        return out


def filter_field(flt: dict[str, Any], w: dict[str, Any], t: TableDef) -> str | None:
    """The field of ``t`` a dashboard filter applies to in widget ``w`` (None: the widget ignores it)."""
    if flt.get("type") == "period" and w.get("date_field"):
        return str(w["date_field"])
    key = (flt.get("fields") or {}).get(t.key) or flt.get("field")
    return key if key in t.fields_by_key else None


def team_members(conn: Connection, team: int) -> list[int]:
    return [r[0] for r in conn.execute(select(users.c.id).where(users.c.team_id == team))]


def dashboard_nodes(conn: Connection, cat: Catalog, doc: dict[str, Any], w: dict[str, Any], t: TableDef,
                    sel: Selection, rng: tuple[dt.date, dt.date] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The dashboard's filters as filter-tree nodes on ``t``, and the keys of the filters applied."""
    nodes: list[dict[str, Any]] = []
    applied: list[str] = []
    for flt in doc.get("filters") or []:
        key = filter_field(flt, w, t)
        if key is None:
            continue
        f = t.fields_by_key[key]
        kind = f.ftype.value_kind(f, cat)
        typ = flt.get("type")
        if typ == "period":
            if kind not in (DATE, DATETIME):
                continue
            applied.append(flt["key"])
            if rng is not None:
                nodes.append({"field": key, "op": "between", "value": [rng[0].isoformat(), rng[1].isoformat()]})
        elif typ == "owner":
            if kind != USER:
                continue
            applied.append(flt["key"])
            if sel.owner is not None:
                nodes.append({"field": key, "op": "eq", "value": sel.owner})
            elif sel.team is not None:
                nodes.append({"field": key, "op": "in", "value": team_members(conn, sel.team) or [0]})
        elif typ == "field":
            applied.append(flt["key"])
            raw = sel.values.get(flt["key"])
            if raw is None:
                continue
            value: Any = raw
            if kind == BOOL:
                value = raw == "true"
            elif kind in (USER, LINK_ONE):
                value = int(raw) if raw.isdigit() else 0
            elif kind == NUMBER:
                try:
                    value = float(raw)
                except ValueError:
                    continue
            nodes.append({"field": key, "op": "has_any" if kind == MULTI else "eq",
                          "value": [value] if kind == MULTI else value})
    return nodes, applied


def combine(*trees: Any) -> dict[str, Any] | None:
    parts = [x for x in trees if x]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"and": parts}


class DashboardRun:
    """Computes a dashboard's widgets for one viewer and one selection."""

    def __init__(self, conn: Connection, catalog: Catalog, access: Access, app: Any, doc: dict[str, Any],
                 sel: Selection | None = None) -> None:
        self.conn, self.cat, self.access, self.app, self.doc = conn, catalog, access, app, doc
        self.sel = sel or Selection()
        self.agg = Aggregator(conn, catalog, access)
        self.today = self.agg.ctx.today
        self.rng = self.sel.range(self.today)
        self.prev = shifted(*self.rng, self.sel.compare) if self.rng and self.sel.compare else None

    def table(self, w: dict[str, Any]) -> TableDef | None:
        return self.app.tables_by_key.get(w.get("table") or "")

    def tree(self, w: dict[str, Any], t: TableDef, rng: tuple[dt.date, dt.date] | None) -> tuple[Any, list[str]]:
        nodes, applied = dashboard_nodes(self.conn, self.cat, self.doc, w, t, self.sel, rng)
        return combine(w.get("filter"), *nodes), applied

    def group_tree(self, w: dict[str, Any], t: TableDef, key: dict[str, Any]) -> dict[str, Any] | None:
        """The filter of the records behind one group (one bar, slice, cell; an empty key: the KPI)."""
        base, _ = self.tree(w, t, self.rng)
        nodes = []
        for spec in w.get("group_by") or []:
            name, _, bucket = spec.partition(":")
            if name not in key:
                continue
            nodes.append(key_node(self.cat, t, name, bucket or None, key[name]))
        return combine(base, *nodes)

    def widgets(self) -> list[dict[str, Any]]:
        return [self.widget(w) for w in self.doc.get("widgets", [])]

    def widget(self, w: dict[str, Any]) -> dict[str, Any]:
        """One widget's numbers as the viewer sees them; a widget the viewer can't read says so alone."""
        head = {"key": w["key"], "type": w["type"], "label": w.get("label", w["key"])}
        t = self.table(w)
        if t is None:
            return {**head, "error": "not_found", "message": f"no table '{w['table']}' (it may be in the trash)"}
        if not self.access.can_see_table(self.cat, t):
            return {"key": w["key"], "type": w["type"], "error": "forbidden"}
        tree, applied = self.tree(w, t, self.rng)
        ratio = w.get("ratio")
        filters = [tree] + ([ratio["numerator"], ratio["denominator"]] if ratio else [])
        if not filters_readable(self.agg, t, filters):
            return {"key": w["key"], "type": w["type"], "error": "forbidden"}
        try:
            out = self._compute(w, t, tree, head)
            if self.prev is not None and w["type"] in (*SINGLE, "line", "area") and applied_period(self.doc, applied):
                prev_tree, _ = self.tree(w, t, self.prev)
                before = self._compute(w, t, prev_tree, head)
                out["compare"] = {"kind": self.sel.compare, "from": self.prev[0].isoformat(),
                                  "to": self.prev[1].isoformat(),
                                  **({"value": before.get("value")} if "value" in before else
                                     {"groups": before.get("groups", [])})}
        except HiddenField:
            return {"key": w["key"], "type": w["type"], "error": "forbidden"}
        except BadRequest as e:  # the definition no longer fits the table (e.g. a field was deleted)
            return {**head, "error": "invalid", "message": e.message}
        if self.rng is not None and applied_period(self.doc, applied):
            out["period"] = {"from": self.rng[0].isoformat(), "to": self.rng[1].isoformat()}
        out["filtered_by"] = applied
        return out

    def _compute(self, w: dict[str, Any], t: TableDef, tree: Any, head: dict[str, Any]) -> dict[str, Any]:
        metrics = list(w.get("metrics") or ["count"])
        single = w["type"] in SINGLE
        group_by = [] if single else list(w.get("group_by") or [])
        ratio, ratio_of = w.get("ratio"), list(w.get("ratio_of") or [])
        extra = None
        if ratio:
            extra = [("numerator", metrics[0], ratio["numerator"]), ("denominator", metrics[0], ratio["denominator"])]
            metrics = metrics[:1]
        elif ratio_of:
            metrics = list(dict.fromkeys(ratio_of))
        rows = self.agg.run(t, group_by, metrics, tree, sort=w.get("sort"), limit=w.get("limit"), extra=extra)
        if ratio or ratio_of:
            a, b = ("numerator", "denominator") if ratio else (str(ratio_of[0]), str(ratio_of[-1]))
            for r in rows:
                num, den = r.get(a), r.get(b)
                r["value"] = None if not den or num is None else round(num / den, 10)
                if ratio_of:
                    r["numerator"], r["denominator"] = num, den
        if single:
            row = rows[0] if rows else {}
            value = row.get("value") if (ratio or ratio_of) else row.get(metrics[0])
            out = {**head, "metric": metrics[0], "value": value}
            if ratio or ratio_of:
                out.update(numerator=row.get("numerator"), denominator=row.get("denominator"))
            if w["type"] == "gauge":
                out["goal"] = self.goal(w)
            return out
        out = {**head, "group_by": group_by, "metrics": metrics, "groups": rows}
        if w.get("target"):
            out["targets"] = self.targets(w, group_by)
        return out

    # --- targets ----------------------------------------------------------------------------------
    def _target_table(self, w: dict[str, Any]) -> tuple[TableDef, dict[str, Any]] | None:
        spec = w.get("target") or {}
        tt = self.app.tables_by_key.get(spec.get("table") or "")
        if tt is None:
            raise BadRequest(f"target: no table '{str(spec.get('table'))[:100]}'")
        if not self.access.can_see_table(self.cat, tt):
            raise HiddenField("target: the targets table is not readable")
        return tt, spec

    def _target_tree(self, tt: TableDef, spec: dict[str, Any]) -> Any:
        nodes: list[dict[str, Any]] = []
        if spec.get("date") and self.rng is not None:
            nodes.append({"field": spec["date"], "op": "between",
                          "value": [self.rng[0].isoformat(), self.rng[1].isoformat()]})
        if spec.get("owner"):
            if self.sel.owner is not None:
                nodes.append({"field": spec["owner"], "op": "eq", "value": self.sel.owner})
            elif self.sel.team is not None:
                nodes.append({"field": spec["owner"], "op": "in",
                              "value": team_members(self.conn, self.sel.team) or [0]})
        return combine(*nodes)

    def goal(self, w: dict[str, Any]) -> float | None:
        """A gauge's goal: a fixed number, or the sum of the targets table's amounts in the period."""
        if w.get("goal") is not None:
            return float(w["goal"])
        if not w.get("target"):
            return None
        tt, spec = self._target_table(w)  # type: ignore[misc]
        rows = self.agg.run(tt, [], [f"sum:{spec['amount']}"], self._target_tree(tt, spec))
        return rows[0].get(f"sum:{spec['amount']}") if rows else None

    def targets(self, w: dict[str, Any], group_by: list[str]) -> dict[str, Any]:
        """Targets beside the actual numbers: per owner when the widget groups by owner, else one total."""
        tt, spec = self._target_table(w)  # type: ignore[misc]
        metric = f"sum:{spec['amount']}"
        by_owner = bool(spec.get("owner")) and len(group_by) == 1
        rows = self.agg.run(tt, [spec["owner"]] if by_owner else [], [metric], self._target_tree(tt, spec))
        if not by_owner:
            return {"total": rows[0].get(metric) if rows else None}
        out = {}
        for r in rows:
            k = r["key"].get(spec["owner"])
            out[str(k["id"]) if isinstance(k, dict) else ""] = r.get(metric)
        return {"by_owner": out}


def applied_period(doc: dict[str, Any], applied: list[str]) -> bool:
    return any(f.get("type") == "period" and f["key"] in applied for f in doc.get("filters") or [])


def bucket_range(bucket: str, value: str) -> tuple[dt.date, dt.date]:
    """The first and last day of a date bucket's key (2026-01-05, 2026-W02, 2026-01, 2026-Q1, 2026)."""
    if bucket == "day":
        d = dt.date.fromisoformat(value)
        return d, d
    if bucket == "week":
        y, w = value.split("-W")
        monday = dt.date.fromisocalendar(int(y), int(w), 1)
        return monday, monday + dt.timedelta(days=6)
    if bucket == "month":
        first = dt.date.fromisoformat(value + "-01")
        return first, _month_end(first)
    if bucket == "quarter":
        y, q = value.split("-Q")
        first = dt.date(int(y), 3 * int(q) - 2, 1)
        return first, _month_end(_shift_months(first, 2))
    return dt.date(int(value), 1, 1), dt.date(int(value), 12, 31)


def key_node(cat: Catalog, t: TableDef, name: str, bucket: str | None, value: Any) -> dict[str, Any]:
    """The condition that selects the records of one group's key value."""
    f = t.fields_by_key.get(name)
    if value is None:
        return {"field": name, "op": "is_empty"}
    kind = f.ftype.value_kind(f, cat) if f is not None else None
    if kind in (DATE, DATETIME):
        lo, hi = bucket_range(bucket or "day", str(value))
        return {"field": name, "op": "between", "value": [lo.isoformat(), hi.isoformat()]}
    if isinstance(value, dict):
        value = value.get("id")
    if kind == MULTI:
        return {"field": name, "op": "has_any", "value": [value]}
    return {"field": name, "op": "eq", "value": value}


def _filter_paths(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        if isinstance(node.get("field"), str):
            out.add(node["field"])
        for child in (node.get("and"), node.get("or"), [node.get("not")]):
            for c in child if isinstance(child, list) else []:
                _filter_paths(c, out)
    return out


def filters_readable(agg: Aggregator, t: TableDef, trees: list[Any]) -> bool:
    """A widget filtering on a field the viewer can't see on every row would reveal it through counts."""
    cat, access = agg.cat, agg.access
    if access.is_admin:
        return True
    vis = access.field_visibility(cat, t, t.sa)
    paths: set[str] = set()
    for tree in trees:
        _filter_paths(tree, paths)
    for path in paths:
        key, _, sub = path.partition(".")
        f = t.fields_by_key.get(key)
        if f is None:
            continue  # reported by the engine as an invalid widget
        if vis.get(f.id, True) is not True:
            return False
        if sub and f.ftype.is_link:
            target = cat.tables_by_id.get(f.options.get("target", -1))
            if target is None or not access.can_see_table(cat, target):
                return False
            tf = target.fields_by_key.get(sub)
            if tf is not None and access.field_visibility(cat, target, target.sa).get(tf.id, True) is not True:
                return False
    return True


def check_view(access: Access, doc: dict[str, Any]) -> None:
    if not access.can_view_dashboards():
        raise Forbidden("you may not view dashboards")
    if not shared_with(access, doc):
        raise Forbidden("this dashboard is not shared with your roles")


def dashboard_data(conn: Connection, catalog: Catalog, access: Access, app: Any, doc: dict[str, Any],
                   sel: Selection | None = None) -> dict[str, Any]:
    """Every widget's data as this viewer may see it; viewing dashboards is a role flag of its own."""
    check_view(access, doc)
    run = DashboardRun(conn, catalog, access, app, doc, sel)
    out: dict[str, Any] = {"key": doc["key"], "label": doc.get("label"), "widgets": run.widgets()}
    if run.rng is not None:
        out["period"] = {"from": run.rng[0].isoformat(), "to": run.rng[1].isoformat()}
    if run.prev is not None:
        out["compare"] = {"kind": run.sel.compare, "from": run.prev[0].isoformat(), "to": run.prev[1].isoformat()}
    return out
