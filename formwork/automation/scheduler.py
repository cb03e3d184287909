"""Time-based rules: ``schedule`` (cron or friendly schedules) and ``date_reached`` (date reminders).

The worker's APScheduler job calls ``tick`` every few seconds. Each rule remembers its last tick
(``fw_automation_state``); a firing due in (last tick, now] runs once across workers thanks to a
unique firing key per rule and due time (``fw_firing``), inserted in the transaction that runs it.
Firings older than the grace period (a worker that was down) are skipped, not replayed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from formwork import db
from formwork.automation.rules import resolve_changed
from formwork.automation.runs import (
    RuleRunner,
    RunRequest,
    StepFailed,
    aware,
    insert_run,
    naive,
    notify_owner,
)
from formwork.automation.schedule import due_firings, parse_schedule
from formwork.errors import FormworkError
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.metadata.query import FilterCompiler
from formwork.runtime.aggregate import Aggregator
from formwork.runtime.records import RecordReader

log = logging.getLogger("formwork.automation")

TIMED_TRIGGERS = ("schedule", "date_reached")
MAX_SCHEDULED_RECORDS = 1000
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b}


class Scheduler:
    """Fires due schedule and date_reached rules."""

    def __init__(self, runner: RuleRunner) -> None:
        self.runner = runner
        self.settings = runner.settings

    def tick(self, now: dt.datetime | None = None) -> int:
        """Fire due schedule and date_reached rules (each firing once, across workers)."""
        now = aware(now or dt.datetime.now(dt.UTC))
        self.runner.reset_caches()
        cat = self.runner.catalogs.get()
        runs = 0
        for app in cat.apps:
            for rule in app.automations:
                if rule["trigger"]["type"] not in TIMED_TRIGGERS or not rule.get("enabled", True):
                    continue
                try:
                    with db.transaction(self.runner.engine) as conn:
                        runs += self._tick_rule(conn, cat, app, rule, now)
                except Exception:  # noqa: BLE001 - one broken rule must not stop the others
                    log.exception("automation %s: schedule tick failed", rule["key"])
        return runs

    def _last_tick(self, conn: Connection, rule: dict[str, Any]) -> dt.datetime:
        st = db.automation_state
        q = select(st.c.last_tick).where(st.c.automation_id == rule["id"])
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        last = conn.execute(q).scalar()
        if last is None:
            mc = db.meta_changes
            created = conn.execute(select(mc.c.at).where(mc.c.kind == "automation", mc.c.object_id == rule["id"],
                                                         mc.c.action == "create").limit(1)).scalar()
            last = created or db.utcnow()
            try:
                with conn.begin_nested():
                    conn.execute(insert(st).values(automation_id=rule["id"], last_tick=last))
            except IntegrityError:
                last = conn.execute(q).scalar_one()
        return aware(last)

    def _tick_rule(self, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any], now: dt.datetime) -> int:
        last = self._last_tick(conn, rule)
        if last >= now:
            return 0
        trig = rule["trigger"]
        table = app.tables_by_key.get(trig.get("table", ""))
        runs = 0
        if trig["type"] == "schedule":
            runs += self._fire_schedule(conn, cat, app, rule, table, last, now)
        elif table is not None:
            for rid, due in self._date_due(conn, table, rule, last, now):
                key = f"d:{rule['id']}:{rid}:{due.isoformat()}"
                if self._claim_firing(conn, rule, key, due):
                    ctx = {"type": "date_reached", "rule": rule["key"], "due_at": due.isoformat(), "user": None,
                           "changes": {}}
                    runs += self.runner.start(conn, cat, RunRequest(app=app, rule=rule, trigger="date_reached",
                                                                    table=table, record_id=rid, trigger_ctx=ctx,
                                                                    firing_key=key))
        conn.execute(update(db.automation_state).where(db.automation_state.c.automation_id == rule["id"])
                     .values(last_tick=naive(now)))
        return runs

    def _fire_schedule(self, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
                       table: TableDef | None, last: dt.datetime, now: dt.datetime) -> int:
        """Each due firing: once for the rule, or once per matching record when the trigger names a table."""
        trig = rule["trigger"]
        runs = 0
        cron = cat.cached(("schedule", rule["id"]), lambda: parse_schedule(trig["schedule"]))
        for due in due_firings(cron, last, now, self.settings.grace):
            key = f"s:{rule['id']}:{due.isoformat()}"
            if not self._claim_firing(conn, rule, key, due):
                continue
            ctx = {"type": "schedule", "rule": rule["key"], "due_at": due.isoformat(), "user": None,
                   "changes": {}}
            if trig.get("aggregate_condition"):
                try:
                    ctx["aggregate"] = self.aggregate_condition(conn, cat, app, rule, due)
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
                runs += self.runner.start(conn, cat, RunRequest(app=app, rule=rule, trigger="schedule", table=None,
                                                                record_id=None, trigger_ctx=ctx, firing_key=key))
            else:
                for rid in self._scheduled_records(conn, cat, table, rule):
                    runs += self.runner.start(conn, cat, RunRequest(app=app, rule=rule, trigger="schedule",
                                                                    table=table, record_id=rid, trigger_ctx=ctx,
                                                                    firing_key=key))
        return runs

    def aggregate_condition(self, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
                            due: dt.datetime) -> dict[str, Any]:
        """A schedule's aggregate condition as of the firing time: value (a ratio with ``divide_by``),
        the parts, and whether ``value op threshold`` holds. Computed as the rule's user sees the data."""
        spec = rule["trigger"]["aggregate_condition"]
        access = self.runner.access_for(conn, rule)

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
    def _claim_firing(conn: Connection, rule: dict[str, Any], key: str, due: dt.datetime) -> bool:
        try:
            with conn.begin_nested():
                conn.execute(insert(db.firings).values(automation_id=rule["id"], firing_key=key, due_at=naive(due),
                                                       created_at=db.utcnow()))
            return True
        except IntegrityError:
            return False

    def _scheduled_records(self, conn: Connection, cat: Catalog, t: TableDef, rule: dict[str, Any]) -> list[int]:
        access = self.runner.access_for(conn, rule)
        reader = RecordReader(cat, conn, access)
        conds = reader.base_conditions(t)
        if rule.get("condition"):
            conds.append(FilterCompiler(t, reader.ctx).compile(resolve_changed(rule["condition"], None)))
        rows = conn.execute(select(t.sa.c.id).where(*conds).order_by(t.sa.c.id).limit(MAX_SCHEDULED_RECORDS)).all()
        return [r[0] for r in rows]

    def _date_due(self, conn: Connection, t: TableDef, rule: dict[str, Any], last: dt.datetime,
                  now: dt.datetime) -> list[tuple[int, dt.datetime]]:
        """Records whose date field + offset, at the rule's time of day, falls in (last, now] (set-based)."""
        trig = rule["trigger"]
        zone = ZoneInfo(trig.get("timezone") or "UTC")
        hour, minute = (int(x) for x in (trig.get("at") or "09:00").split(":"))
        offset = dt.timedelta(days=int(trig.get("offset_days") or 0))
        lower = max(last, now - self.settings.grace)
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
