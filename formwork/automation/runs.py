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

from sqlalchemy import bindparam, func, insert, select, update
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

    def drive(self, conn: Connection, cat: Catalog, req: RunRequest, run_id: int, access: Access,
              outputs: dict[str, Any], resume: list[Any] | None, fresh: bool = False,
              closing: list[dict[str, Any]] | None = None) -> str: ...

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


# one statement object for every run: its cache key and compiled form are built once, not per run
_INSERT_RUN = insert(db.automation_runs).returning(db.automation_runs.c.id)


def run_row(req: RunRequest, status: str, error: str | None = None) -> dict[str, Any]:
    """The ``fw_automation_runs`` row that starts a run (``status`` running, or failed/skipped at once)."""
    now = db.utcnow()
    done = status in ("failed", "skipped")
    return {"app_id": req.app.id, "automation_id": req.rule["id"], "automation_key": req.rule["key"],
            "trigger": req.trigger, "table_id": req.table.id if req.table else None, "record_id": req.record_id,
            "outbox_id": req.outbox_id, "firing_key": req.firing_key, "status": status, "depth": req.depth,
            "started_at": now, "finished_at": now if done else None, "duration_ms": 0 if done else None,
            "error": error, "state": initial_state(req)}


def insert_run(conn: Connection, req: RunRequest, status: str, error: str | None = None) -> int:
    return int(conn.execute(_INSERT_RUN, run_row(req, status, error)).scalar_one())


_INSERT_RUNS = insert(db.automation_runs).returning(db.automation_runs.c.id, sort_by_parameter_order=True)


def insert_runs_statement() -> Any:
    """The many-rows form of ``insert_run``: executed with a list of ``run_row``s, it returns their ids
    in the order of the list."""
    return _INSERT_RUNS


# the run's closing update: one statement object (its SET clause comes from the parameters' keys)
_UPDATE_RUN = update(db.automation_runs).where(db.automation_runs.c.id == bindparam("run_id"))


def close_run(conn: Connection, run_id: int, values: dict[str, Any]) -> None:
    conn.execute(_UPDATE_RUN, {"run_id": run_id, **values})


def close_runs(conn: Connection, closing: list[dict[str, Any]]) -> None:
    """Apply run closings collected over a batch (each ``{"run_id", column: value...}``): one
    executemany per set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for c in closing:
        groups.setdefault(tuple(sorted(c)), []).append(c)
    for rows in groups.values():
        conn.execute(_UPDATE_RUN, rows)


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
            limit: int = 50, only: list[int] | None = None) -> list[dict[str, Any]]:
    """A rule's latest runs (newest first, optionally in one status), each with its steps, as the API shows them."""
    r, s = db.automation_runs, db.automation_steps
    q = select(r).where(r.c.automation_id == rule["id"])
    if only is not None:
        q = q.where(r.c.id.in_(only))
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
        "error": x.error, "retry_of": (x.state or {}).get("retry_of"), "steps": steps.get(x.id, [])} for x in runs]


def app_run_log(conn: Connection, cat: Catalog, app: AppDef, automation_ids: list[int] | None = None,
                status: str | None = None, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
    """The latest runs of an app's rules (newest first), optionally of some rules or in one status, each
    with its steps and its rule's key; ``before`` (a run id) pages on to older runs."""
    r = db.automation_runs
    q = select(r.c.id, r.c.automation_id).where(r.c.app_id == app.id)
    if automation_ids is not None:
        q = q.where(r.c.automation_id.in_(automation_ids))
    if status:
        q = q.where(r.c.status == status)
    if before is not None:
        q = q.where(r.c.id < before)
    rows = conn.execute(q.order_by(r.c.id.desc()).limit(limit)).all()
    out: list[dict[str, Any]] = []
    for aid in dict.fromkeys(x.automation_id for x in rows):
        ids = [x.id for x in rows if x.automation_id == aid]
        for entry in run_log(conn, cat, {"id": aid}, None, len(ids), only=ids):
            out.append(dict(entry, automation_id=aid))
    out.sort(key=lambda e: -int(e["id"]))
    return out


def rule_summaries(conn: Connection, app: AppDef, days: int = 7) -> dict[int, dict[str, Any]]:
    """Per rule of the app: its last run (status and start) and how many runs failed in the last ``days``."""
    r = db.automation_runs
    ids = [rule["id"] for rule in app.automations]
    if not ids:
        return {}
    out: dict[int, dict[str, Any]] = {i: {"last": None, "failures": 0} for i in ids}
    last_ids = select(func.max(r.c.id)).where(r.c.automation_id.in_(ids)).group_by(r.c.automation_id)
    for x in conn.execute(select(r.c.automation_id, r.c.status, r.c.started_at).where(r.c.id.in_(last_ids))):
        out[x.automation_id]["last"] = {"status": x.status, "started_at": iso_utc(x.started_at)}
    since = db.utcnow() - dt.timedelta(days=days)
    for aid, n in conn.execute(select(r.c.automation_id, func.count()).where(
            r.c.automation_id.in_(ids), r.c.status == "failed", r.c.started_at >= since)
            .group_by(r.c.automation_id)):
        out[aid]["failures"] = int(n)
    return out


class RetryRefused(Exception):
    """Only a failed run of an existing rule can be tried again."""


def retry_run(conn: Connection, rule: dict[str, Any], run_id: int) -> int:
    """Queue a new run of ``rule`` that does what failed run ``run_id`` was asked to do: the same trigger,
    record and changes, its actions from the start. The worker picks it up as a run whose wait is over
    (status ``waiting``, due now), so a web request never runs actions itself. Returns the new run's id.

    The condition is not checked again (it held when the run started); a run can be retried more than
    once, each retry is a run of its own whose state names the run it retries (``retry_of``)."""
    r = db.automation_runs
    old = conn.execute(select(r).where(r.c.id == run_id, r.c.automation_id == rule["id"])).first()
    if old is None:
        raise LookupError(run_id)
    if old.status != "failed":
        raise RetryRefused(f"run {run_id} did not fail (it is {old.status}); only failed runs can be retried")
    if not rule.get("enabled", True):
        raise RetryRefused(f"automation '{rule['key']}' is disabled; enable it to retry its runs")
    prev = old.state or {}
    state = {"trigger": prev.get("trigger") or {}, "changes": prev.get("changes"),
             "deleted_fields": prev.get("deleted_fields"), "outputs": {}, "path": [], "retry_of": old.id}
    now = db.utcnow()
    return int(conn.execute(insert(r).values(
        app_id=old.app_id, automation_id=old.automation_id, automation_key=rule["key"], trigger=old.trigger,
        table_id=old.table_id, record_id=old.record_id, outbox_id=None, firing_key=None, status="waiting",
        depth=old.depth, started_at=now, finished_at=None, duration_ms=0, error=None, resume_at=now, state=state,
    ).returning(r.c.id)).scalar_one())
