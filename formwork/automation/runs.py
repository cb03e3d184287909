"""Runs of rules: what starts one, how it stops for now, and its log (``fw_automation_runs``).

A run is started by intake (an outbox event), the scheduler (a firing) or a resumption. Its state
(trigger context, outputs, where it stopped) lives in the run row, so a parked run (a wait, an
approval) continues in another transaction, even in another worker.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine

from formwork import db
from formwork.metadata.catalog import AppDef, Catalog, CatalogCache, TableDef
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime import notifications
from formwork.runtime.permissions import Access

if TYPE_CHECKING:
    from formwork.automation.settings import Settings

OPEN_DELIVERY = ("pending", "written")


class StepFailed(Exception):
    """An action could not be done; the run stops and its changes are undone."""


@dataclass
class Park:
    """The run stops here for now: resumed by the worker at ``resume_at`` or by an approval decision."""

    status: str
    path: list[Any]
    resume_at: dt.datetime | None = None


@dataclass
class RunRequest:
    """Everything that starts (or resumes) one run of one rule."""

    app: AppDef
    rule: dict[str, Any]
    trigger: str
    table: TableDef | None
    record_id: int | None
    depth: int = 0
    changes: dict[str, Any] | None = None
    trigger_ctx: dict[str, Any] = field(default_factory=dict)
    outbox_id: int | None = None
    firing_key: str | None = None
    deleted_fields: dict[str, Any] | None = None  # the event's snapshot, used once the record is deleted


class RuleRunner(Protocol):
    """What intake, the scheduler, the dispatcher and the step executor need of the engine."""

    engine: Engine
    catalogs: CatalogCache
    settings: Settings
    worker_id: str

    def reset_caches(self) -> None: ...

    def access_for(self, conn: Connection, rule: dict[str, Any]) -> Access: ...

    def start(self, conn: Connection, cat: Catalog, req: RunRequest, checked: bool = False) -> int: ...

    def matches(self, conn: Connection, cat: Catalog, access: Access, t: TableDef, record_id: int, tree: Any,
                changes: dict[str, Any] | None) -> bool: ...


def path_text(path: list[Any]) -> str:
    return ".".join(str(p) for p in path)


def plain(value: Any) -> Any:
    """Rendered template values as JSON-ready data (dates as ISO text, decimals as numbers)."""
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def find_rule(cat: Catalog, automation_id: int) -> tuple[AppDef, dict[str, Any]] | None:
    for app in cat.apps:
        for rule in app.automations:
            if rule["id"] == automation_id:
                return app, rule
    return None


def rule_owner(conn: Connection, automation_id: int) -> int | None:
    """The user who created the rule (from the metadata change log): gets failure notifications."""
    mc = db.meta_changes
    return conn.execute(select(mc.c.user_id).where(mc.c.kind == "automation", mc.c.object_id == automation_id,
                                                   mc.c.action == "create").order_by(mc.c.id).limit(1)).scalar()


def rule_editor(conn: Connection, automation_id: int) -> int | None:
    """The user who last saved (created, changed or restored) the rule: a rule without ``run_as`` acts as
    them, so changing someone else's rule never borrows that person's rights."""
    mc = db.meta_changes
    return conn.execute(select(mc.c.user_id).where(mc.c.kind == "automation", mc.c.object_id == automation_id,
                                                   mc.c.action.in_(("create", "update", "restore")))
                        .order_by(mc.c.id.desc()).limit(1)).scalar()


# --- the run log ------------------------------------------------------------------------------------
def initial_state(req: RunRequest) -> dict[str, Any]:
    return {"trigger": req.trigger_ctx, "changes": req.changes, "deleted_fields": req.deleted_fields}


def insert_run(conn: Connection, req: RunRequest, status: str, error: str | None = None) -> int:
    now = db.utcnow()
    done = status in ("failed", "skipped")
    return int(conn.execute(insert(db.automation_runs).values(
        app_id=req.app.id, automation_id=req.rule["id"], automation_key=req.rule["key"], trigger=req.trigger,
        table_id=req.table.id if req.table else None, record_id=req.record_id, outbox_id=req.outbox_id,
        firing_key=req.firing_key, status=status, depth=req.depth, started_at=now,
        finished_at=now if done else None, duration_ms=0 if done else None, error=error,
        state=initial_state(req),
    ).returning(db.automation_runs.c.id)).scalar_one())


def notify_owner(conn: Connection, req: RunRequest, run_id: int, message: str) -> None:
    owner = rule_owner(conn, req.rule["id"])
    if owner is not None:
        notifications.notify(conn, [owner], "automation_failed", f"Automation '{req.rule['key']}' failed", message,
               {"app": req.app.key, "automation": req.rule["key"], "run_id": run_id})


def final_status(conn: Connection, run_id: int) -> dict[str, Any]:
    """A run whose actions are done: delivering while a delivery is open, else failed or succeeded."""
    d = db.deliveries
    counts: dict[str, int] = dict(conn.execute(select(d.c.status, func.count()).where(d.c.run_id == run_id)
                               .group_by(d.c.status)).all())
    if any(counts.get(s) for s in OPEN_DELIVERY):
        return {"status": "delivering"}
    if counts.get("failed"):
        err = conn.execute(select(d.c.error).where(d.c.run_id == run_id, d.c.status == "failed")
                           .order_by(d.c.id).limit(1)).scalar()
        return {"status": "failed", "error": f"a delivery failed: {err}", "finished_at": db.utcnow()}
    return {"status": "succeeded", "finished_at": db.utcnow(), "resume_at": None}


def run_log(conn: Connection, cat: Catalog, rule: dict[str, Any], status: str | None = None,
            limit: int = 50) -> list[dict[str, Any]]:
    """A rule's latest runs (newest first, optionally in one status), each with its steps, as the API shows them."""
    r, s = db.automation_runs, db.automation_steps
    q = select(r).where(r.c.automation_id == rule["id"])
    if status:
        q = q.where(r.c.status == status)
    runs = conn.execute(q.order_by(r.c.id.desc()).limit(limit)).all()
    steps: dict[int, list[dict[str, Any]]] = {}
    if runs:
        for st in conn.execute(select(s).where(s.c.run_id.in_([x.id for x in runs])).order_by(s.c.id)):
            steps.setdefault(st.run_id, []).append({
                "path": st.path, "action": st.action, "status": st.status, "output": st.output,
                "error": st.error, "duration_ms": st.duration_ms})
    tables = {t.id: t.key for t in cat.tables_by_id.values()}
    return [{
        "id": x.id, "status": x.status, "trigger": x.trigger, "table": tables.get(x.table_id),
        "record_id": x.record_id, "depth": x.depth, "firing_key": x.firing_key,
        "started_at": iso_utc(x.started_at), "finished_at": iso_utc(x.finished_at) if x.finished_at else None,
        "resume_at": iso_utc(x.resume_at) if x.resume_at else None, "duration_ms": x.duration_ms,
        "error": x.error, "steps": steps.get(x.id, [])} for x in runs]
