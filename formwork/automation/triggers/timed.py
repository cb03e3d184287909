"""Timed triggers, fired by the scheduler (formwork.automation.scheduler): ``schedule`` (cron or
friendly schedules, once per firing or once per matching record) and ``date_reached`` (reminders a
number of days before or after a date field)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from formwork.automation.changes import resolve_changed
from formwork.automation.runs import RunRequest, StepFailed, aware, insert_run, naive, notify_owner
from formwork.automation.schedule import ScheduleError, due_firings, parse_schedule
from formwork.automation.triggers.base import KEY, Firer, Trigger, TriggerCheck
from formwork.errors import FormworkError, ValidationFailed
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.metadata.query import FilterCompiler
from formwork.runtime.aggregate import Aggregator
from formwork.runtime.records import RecordReader

MAX_SCHEDULED_RECORDS = 1000
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b}
METRIC: dict[str, Any] = {"type": "string",
                          "pattern": "^(count|(count_distinct|sum|avg|min|max):[a-z][a-z0-9_]{0,62})$"}
FILTER: dict[str, Any] = {"$ref": "common.json#/$defs/filter"}


class Schedule(Trigger):
    """Fires on a schedule; with a ``table``, once per record matching the condition (at most 1000).

    An ``aggregate_condition`` (a metric, optionally divided by another, compared with a threshold)
    gates each firing; its result is the trigger's ``aggregate`` in templates."""

    type = "schedule"
    label = "On a schedule"
    needs_table = False
    timed = True
    properties = {
        "schedule": {"type": "object"},
        "aggregate_condition": {
            "type": "object", "required": ["table", "op", "value"], "additionalProperties": False,
            "properties": {
                "table": KEY, "metric": METRIC, "filter": FILTER,
                "divide_by": {"type": "object", "required": ["table"], "additionalProperties": False,
                              "properties": {"table": KEY, "metric": METRIC, "filter": FILTER}},
                "op": {"enum": list(COMPARE)},
                "value": {"type": "number"},
            }},
    }

    def check(self, trig: dict[str, Any], chk: TriggerCheck) -> None:
        super().check(trig, chk)
        try:
            parse_schedule(trig.get("schedule") or {})
        except ScheduleError as e:
            chk.err("/trigger/schedule", str(e))
        if trig.get("aggregate_condition") is not None:
            self._check_aggregate(trig["aggregate_condition"], chk)

    @staticmethod
    def _check_aggregate(spec: dict[str, Any], chk: TriggerCheck) -> None:
        """Tables, metric fields and filters must exist."""
        app, catalog = chk.app, chk.cat
        for ptr, part in (("/trigger/aggregate_condition", spec),
                          ("/trigger/aggregate_condition/divide_by", spec.get("divide_by"))):
            if part is None:
                continue
            t = app.tables_by_key.get(part["table"])
            if t is None:
                chk.err(f"{ptr}/table", f"no table '{part['table']}' in app '{app.key}'")
                continue
            fn, _, key = (part.get("metric") or "count").partition(":")
            if key:
                f = t.fields_by_key.get(key)
                if f is None:
                    chk.err(f"{ptr}/metric", f"no field '{key}' in '{t.key}'")
                elif fn in ("sum", "avg") and f.ftype.value_kind(f, catalog) != "number":
                    chk.err(f"{ptr}/metric", f"'{key}' is not a number, so it has no {fn}")
            if part.get("filter") is not None:
                try:
                    FilterCompiler.check(t, catalog, part["filter"], f"{ptr}/filter")
                except ValidationFailed as e:
                    for k, v in (e.details or {}).items():
                        for msg in v:
                            chk.err(k, msg)

    def fire(self, sch: Firer, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
             table: TableDef | None, last: dt.datetime, now: dt.datetime) -> int:
        """Each due firing: once for the rule, or once per matching record when the trigger names a table."""
        trig = rule["trigger"]
        runs = 0
        cron = cat.cached(("schedule", rule["id"]), lambda: parse_schedule(trig["schedule"]))
        for due in due_firings(cron, last, now, sch.settings.grace):
            key = f"s:{rule['id']}:{due.isoformat()}"
            if not sch.claim(conn, rule, key, due):
                continue
            ctx = {"type": "schedule", "rule": rule["key"], "due_at": due.isoformat(), "user": None,
                   "changes": {}}
            if trig.get("aggregate_condition"):
                try:
                    ctx["aggregate"] = self.aggregate_condition(sch, conn, cat, app, rule, due)
                except (StepFailed, FormworkError) as e:
                    msg = f"aggregate condition: {getattr(e, 'message', None) or e}"
                    req = RunRequest(app=app, rule=rule, trigger="schedule", table=None, record_id=None,
                                     trigger_ctx=ctx, firing_key=key)
                    notify_owner(conn, req, insert_run(conn, req, "failed", error=msg), msg)
                    runs += 1
                    continue
                if not ctx["aggregate"]["matched"]:
                    continue
            if table is None:
                runs += sch.runner.start(conn, cat, RunRequest(app=app, rule=rule, trigger="schedule", table=None,
                                                               record_id=None, trigger_ctx=ctx, firing_key=key))
            else:
                for rid in self._scheduled_records(sch, conn, cat, table, rule):
                    runs += sch.runner.start(conn, cat, RunRequest(app=app, rule=rule, trigger="schedule",
                                                                   table=table, record_id=rid, trigger_ctx=ctx,
                                                                   firing_key=key))
        return runs

    @staticmethod
    def aggregate_condition(sch: Firer, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
                            due: dt.datetime) -> dict[str, Any]:
        """The aggregate condition as of the firing time: value (a ratio with ``divide_by``), the parts,
        and whether ``value op threshold`` holds. Computed as the rule's user sees the data."""
        spec = rule["trigger"]["aggregate_condition"]
        access = sch.runner.access_for(conn, rule)

        def measure(part: dict[str, Any]) -> Any:
            agg = Aggregator(conn, cat, access)
            agg.ctx.now = naive(due)  # relative dates ("last_month") as of the firing
            metric = part.get("metric") or "count"
            rows = agg.run(app.table(part["table"]), [], [metric], part.get("filter"))
            return rows[0].get(metric) if rows else None

        numerator = measure(spec)
        out: dict[str, Any] = {"numerator": numerator}
        value = numerator
        if spec.get("divide_by"):
            denominator = measure(spec["divide_by"])
            out["denominator"] = denominator
            value = None if not denominator or numerator is None else round(numerator / denominator, 10)
        threshold = spec["value"]
        out.update(value=value, threshold=threshold, op=spec["op"],
                   matched=value is not None and COMPARE[spec["op"]](value, threshold))
        return out

    @staticmethod
    def _scheduled_records(sch: Firer, conn: Connection, cat: Catalog, t: TableDef,
                           rule: dict[str, Any]) -> list[int]:
        access = sch.runner.access_for(conn, rule)
        reader = RecordReader(cat, conn, access)
        conds = reader.base_conditions(t)
        if rule.get("condition"):
            conds.append(FilterCompiler(t, reader.ctx).compile(resolve_changed(rule["condition"], None)))
        rows = conn.execute(select(t.sa.c.id).where(*conds).order_by(t.sa.c.id).limit(MAX_SCHEDULED_RECORDS)).all()
        return [r[0] for r in rows]


class DateReached(Trigger):
    """Fires for each record whose ``date_field`` plus ``offset_days`` is today, at ``at`` in ``timezone``.

    Reminders are never silently lost (docs/automations.md, "When reminders fire"):

    * each (rule, record, due time) fires once: a unique firing key, shared by every path below;
    * the scheduler fires the due times in (last tick, now]; after a worker was down it fires those it
      missed, once each, back to ``Settings.date_catch_up`` (31 days);
    * a record created or changed when its due time is already past fires once at once
      (:meth:`fire_late`, from intake), as long as the reminder still means something: until the end of
      the date's own day for a reminder before it, until a day after the due time otherwise;
    * a record that does not meet the rule's condition at its due time is not marked fired, so a later
      change that makes it match (a contract approved after its reminder time) still fires it once.
    """

    type = "date_reached"
    label = "A date is reached"
    timed = True
    properties = {
        "date_field": KEY,
        "offset_days": {"type": "integer", "minimum": -3650, "maximum": 3650},
        "at": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
        "timezone": {"type": "string", "maxLength": 64},
    }

    def check(self, trig: dict[str, Any], chk: TriggerCheck) -> None:
        super().check(trig, chk)
        if chk.table is not None:
            df = chk.table.fields_by_key.get(trig.get("date_field", ""))
            if df is None or df.ftype.kind not in ("date", "datetime"):
                chk.err("/trigger/date_field", "must name a date field of the table")
        if trig.get("timezone"):
            try:
                ZoneInfo(trig["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                chk.err("/trigger/timezone", f"unknown time zone '{trig['timezone'][:64]}'")

    def fire(self, sch: Firer, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
             table: TableDef | None, last: dt.datetime, now: dt.datetime) -> int:
        if table is None:
            return 0
        runs = 0
        for rid, due in self._date_due(sch, conn, table, rule, last, now):
            runs += self._fire_one(sch.runner, sch.claim, conn, cat, app, rule, table, rid, due, late=False)
        return runs

    @staticmethod
    def _fire_one(runner: Any, claim: Callable[..., bool], conn: Connection, cat: Catalog, app: AppDef,
                  rule: dict[str, Any], table: TableDef, rid: int, due: dt.datetime, late: bool) -> int:
        """Start the rule for one record and due time, once: the condition first (a record that does not
        match is not marked fired), then the firing key."""
        if rule.get("condition"):
            try:
                access = runner.access_for(conn, rule)
            except StepFailed:
                access = None  # start() logs the failure
            if access is not None and not runner.matches(conn, cat, access, table, rid, rule["condition"], None):
                return 0
        key = f"d:{rule['id']}:{rid}:{due.isoformat()}"
        if not claim(conn, rule, key, due):
            return 0
        ctx = {"type": "date_reached", "rule": rule["key"], "due_at": due.isoformat(), "user": None,
               "changes": {}, "late": late}
        return int(runner.start(conn, cat, RunRequest(app=app, rule=rule, trigger="date_reached", table=table,
                                                      record_id=rid, trigger_ctx=ctx, firing_key=key),
                                checked=True))

    @staticmethod
    def due_time(trig: dict[str, Any], value: Any) -> dt.datetime | None:
        """When a record with this date value is due (aware UTC); None without a date."""
        if value is None:
            return None
        zone = ZoneInfo(trig.get("timezone") or "UTC")
        hour, minute = (int(x) for x in (trig.get("at") or "09:00").split(":"))
        day = aware(value).astimezone(zone).date() if isinstance(value, dt.datetime) else value
        if not isinstance(day, dt.date):
            return None
        day = day + dt.timedelta(days=int(trig.get("offset_days") or 0))
        return dt.datetime.combine(day, dt.time(hour, minute), zone).astimezone(dt.UTC)

    @staticmethod
    def late_until(trig: dict[str, Any], value: Any, due: dt.datetime) -> dt.datetime:
        """Until when a reminder whose due time passed still fires: the end of the date's own day (in the
        rule's zone) for a reminder before the date, and at least a day after the due time."""
        zone = ZoneInfo(trig.get("timezone") or "UTC")
        day = aware(value).astimezone(zone).date() if isinstance(value, dt.datetime) else value
        end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone).astimezone(dt.UTC)
        return max(end_of_day, due + dt.timedelta(days=1))

    def fire_late(self, runner: Any, claim: Callable[..., bool], conn: Connection, cat: Catalog, ev: Any,
                  now: dt.datetime | None = None) -> int:
        """A record was created or changed (outbox event ``ev``): fire, once and at once, each date rule
        of its table whose due time for it has already passed but still means something."""
        from formwork.automation.intake import _rule_index

        if ev.record_id is None or ev.table_id is None or ev.event not in ("record_created", "record_updated"):
            return 0
        rules = _rule_index(cat).get((ev.table_id, self.type), [])
        if not rules:
            return 0
        t = cat.table_by_id(ev.table_id)
        now = aware(now or dt.datetime.now(dt.UTC))
        runs = 0
        for app, rule in rules:
            if ev.origin is not None and ev.origin == rule["key"]:
                continue
            trig = rule["trigger"]
            f = t.fields_by_key.get(trig.get("date_field", ""))
            if f is None or not f.stored:
                continue
            value = conn.execute(select(t.sa.c[f.column_name]).where(
                t.sa.c.id == ev.record_id, t.sa.c.deleted_at.is_(None))).scalar()
            due = self.due_time(trig, value)
            if due is None or due > now or now >= self.late_until(trig, value, due):
                continue
            runs += self._fire_one(runner, claim, conn, cat, app, rule, t, ev.record_id, due, late=True)
        return runs

    @staticmethod
    def _date_due(sch: Firer, conn: Connection, t: TableDef, rule: dict[str, Any], last: dt.datetime,
                  now: dt.datetime) -> list[tuple[int, dt.datetime]]:
        """Records whose date field + offset, at the rule's time of day, falls in (last, now] (set-based);
        after downtime no further back than the date catch-up window."""
        trig = rule["trigger"]
        zone = ZoneInfo(trig.get("timezone") or "UTC")
        hour, minute = (int(x) for x in (trig.get("at") or "09:00").split(":"))
        offset = dt.timedelta(days=int(trig.get("offset_days") or 0))
        lower = max(last, now - max(sch.settings.date_catch_up, sch.settings.grace))
        if lower >= now:
            return []
        fire_dates: dict[dt.date, dt.datetime] = {}
        day = lower.astimezone(zone).date() - dt.timedelta(days=1)
        while day <= now.astimezone(zone).date():
            at = dt.datetime.combine(day, dt.time(hour, minute), zone).astimezone(dt.UTC)
            if lower < at <= now:
                fire_dates[day - offset] = at  # the record date that makes this day the firing day
            day += dt.timedelta(days=1)
        if not fire_dates:
            return []
        f = t.fields_by_key[trig["date_field"]]
        col = t.sa.c[f.column_name]
        conds: list[ColumnElement[bool]] = [t.sa.c.deleted_at.is_(None)]
        if f.ftype.kind == "date":
            conds.append(col.in_(sorted(fire_dates)))
        else:
            first, end = min(fire_dates), max(fire_dates) + dt.timedelta(days=1)
            conds += [col >= naive(dt.datetime.combine(first, dt.time(), zone)),
                      col < naive(dt.datetime.combine(end, dt.time(), zone))]
        out = []
        for rid, value in conn.execute(select(t.sa.c.id, col).where(*conds).order_by(t.sa.c.id)).all():
            local = value if not isinstance(value, dt.datetime) else aware(value).astimezone(zone).date()
            if local in fire_dates:
                out.append((rid, fire_dates[local]))
        return out
