"""Time-based rules: the triggers registered as ``timed`` (``schedule``, ``date_reached``).

Each trigger type knows how to fire itself (formwork.automation.triggers.timed); the scheduler keeps
the bookkeeping. The worker's APScheduler job calls ``tick`` every few seconds. Each rule remembers its
last tick (``fw_automation_state``); a firing due in (last tick, now] runs once across workers thanks to a
unique firing key per rule and due time (``fw_firing``), inserted in the transaction that runs it.
Firings older than the grace period (a worker that was down) are skipped, not replayed.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from formwork import db
from formwork.automation.runs import RuleRunner, aware, naive
from formwork.automation.triggers.base import trigger_types
from formwork.metadata.catalog import AppDef, Catalog

log = logging.getLogger("formwork.automation")


class Scheduler:
    """Fires due rules of timed triggers; each trigger fires through ``claim`` (its Firer)."""

    def __init__(self, runner: RuleRunner) -> None:
        self.runner = runner
        self.settings = runner.settings

    def tick(self, now: dt.datetime | None = None) -> int:
        """Fire due rules of timed triggers (each firing once, across workers)."""
        now = aware(now or dt.datetime.now(dt.UTC))
        self.runner.reset_caches()
        cat = self.runner.catalogs.get()
        runs = 0
        for app in cat.apps:
            for rule in app.automations:
                trigger = trigger_types.find(rule["trigger"]["type"])
                if trigger is None or not trigger.timed or not rule.get("enabled", True):
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
        runs = trigger_types.get(trig["type"]).fire(self, conn, cat, app, rule, table, last, now)
        conn.execute(update(db.automation_state).where(db.automation_state.c.automation_id == rule["id"])
                     .values(last_tick=naive(now)))
        return runs

    @staticmethod
    def claim(conn: Connection, rule: dict[str, Any], key: str, due: dt.datetime) -> bool:
        """Insert the firing's unique key; False when another worker (or an earlier tick) has it."""
        try:
            with conn.begin_nested():
                conn.execute(insert(db.firings).values(automation_id=rule["id"], firing_key=key, due_at=naive(due),
                                                       created_at=db.utcnow()))
            return True
        except IntegrityError:
            return False
