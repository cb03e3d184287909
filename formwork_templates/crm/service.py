"""The CRM's service desk rule that needs code: a ticket's SLA due time follows from its priority.

``settings.sla_hours`` of the app maps each priority to hours (the template: urgent 4, high 24, normal 72,
low 120). A ticket created without an SLA due time gets creation time + those hours; changing the priority
(without giving a due time) moves it to the ticket's creation time + the new priority's hours. A due time
given explicitly is kept (an agreed exception).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from formwork import db
from formwork.metadata.catalog import TableDef
from formwork.runtime import guards
from formwork.runtime.guards import PlannedWrite
from formwork.runtime.records import RecordService


def _hours(svc: RecordService, t: TableDef) -> dict[str, Any] | None:
    if t.key != "tickets" or "sla_due" not in t.fields_by_key or "priority" not in t.fields_by_key:
        return None
    hours = (svc.cat.app_by_id(t.app_id).doc.get("settings") or {}).get("sla_hours")
    return hours if isinstance(hours, dict) else None


def sla_guard(svc: RecordService, t: TableDef, op: str, writes: list[PlannedWrite]) -> None:
    hours = _hours(svc, t)
    if hours is None:
        return
    for w in writes:
        if w.values.get("sla_due") is not None:
            continue
        if op == "create":
            start = db.utcnow()
        elif "priority" in w.values:
            start = svc.conn.execute(select(t.sa.c.created_at).where(t.sa.c.id == w.record_id)).scalar() or db.utcnow()
        else:
            continue
        n = hours.get(str(w.values.get("priority") or "normal"))
        if isinstance(n, int | float) and not isinstance(n, bool):
            due = start + dt.timedelta(hours=float(n))
            w.values["sla_due"] = due.replace(tzinfo=None, microsecond=0)


def register() -> None:
    guards.register("crm_sla", sla_guard)
