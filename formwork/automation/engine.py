"""The automation engine: starts, drives and resumes rule runs, and coordinates the parts around them.

* Intake (formwork.automation.intake) turns outbox events into runs, exactly once per event.
* The scheduler (formwork.automation.scheduler) turns schedule and date firings into runs, once per firing.
* A run executes its actions (formwork.automation.steps, actions from formwork.automation.actions) in a
  savepoint: a failing action undoes the run's own changes, the run is logged as failed (steps, error,
  duration) and the rule's owner gets a notification. A wait or an approval parks the run; it resumes
  later from the path it stopped at.
* Email and webhooks never happen inside that transaction: runs queue delivery intents that the
  dispatcher (formwork.automation.dispatch) sends after commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from formwork import db
from formwork.automation.changes import resolve_changed
from formwork.automation.dispatch import Dispatcher
from formwork.automation.intake import Intake
from formwork.automation.runs import (
    Park,
    RunRequest,
    StepFailed,
    close_run,
    final_status,
    find_rule,
    initial_state,
    insert_run,
    naive,
    notify_owner,
    rule_editor,
)
from formwork.automation.scheduler import Scheduler
from formwork.automation.settings import Settings
from formwork.automation.steps import Executor
from formwork.errors import BadRequest
from formwork.metadata.catalog import AppDef, Catalog, CatalogCache, TableDef
from formwork.metadata.fieldtypes.base import QueryContext
from formwork.metadata.query import FilterCompiler
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader

log = logging.getLogger("formwork.automation")


class AutomationEngine:
    """Runs rules; one instance per worker (or per request for dry runs and decisions)."""

    def __init__(self, engine: Engine, catalogs: CatalogCache, settings: Settings,
                 worker_id: str = "web") -> None:
        self.engine = engine
        self.catalogs = catalogs
        self.settings = settings
        self.worker_id = worker_id
        self._access: dict[Any, Access] = {}
        self.intake = Intake(self)
        self.scheduler = Scheduler(self)
        self.dispatcher = Dispatcher(self)

    # --- the worker's entry points ---------------------------------------------------------------
    def process_events(self, limit: int = 100) -> int:
        return self.intake.process_events(limit)

    def tick(self, now: dt.datetime | None = None) -> int:
        from formwork.automation import reports

        fired = self.scheduler.tick(now)
        return fired + reports.tick(self.engine, self.catalogs.get(), now)

    def process_deliveries(self, limit: int = 10, stop: Callable[[], bool] | None = None) -> int:
        return self.dispatcher.process_deliveries(limit, stop)

    def release_leases(self) -> None:
        self.dispatcher.release_leases()

    # --- who a rule acts as ----------------------------------------------------------------------
    def access_for(self, conn: Connection, rule: dict[str, Any]) -> Access:
        """The rule's ``run_as`` user (by username), else the user who last saved it, else the system.

        Only administrators may save a rule whose run_as names someone else (rules.check_run_as)."""
        key = (rule["id"], rule.get("run_as"))
        if key in self._access:
            return self._access[key]
        uid: int | None
        if rule.get("run_as"):
            uid = conn.execute(select(db.users.c.id).where(db.users.c.username == rule["run_as"],
                                                           db.users.c.active.is_(True))).scalar()
            if uid is None:
                raise StepFailed(f"run_as user '{rule['run_as']}' does not exist or is disabled")
        else:
            uid = rule_editor(conn, rule["id"])
        access = Access.for_user(conn, uid) if uid is not None else Access.system()
        self._access[key] = access
        return access

    def reset_caches(self) -> None:
        self._access.clear()

    # --- starting a run ----------------------------------------------------------------------------
    def start(self, conn: Connection, cat: Catalog, req: RunRequest, checked: bool = False) -> int:
        """Check loop/rate limits and the condition, then run the rule; returns 1 if a run was logged."""
        rule = req.rule
        if req.depth >= self.settings.max_depth:
            msg = (f"stopped: this change comes from a chain of {req.depth} automations "
                   f"(limit {self.settings.max_depth}); rules are probably triggering each other")
            log.error("automation %s: %s", rule["key"], msg)
            run_id = insert_run(conn, req, "failed", error=msg)
            notify_owner(conn, req, run_id, msg)
            return 1
        limit = rule.get("rate_limit_per_minute")
        if limit:
            r = db.automation_runs
            recent = conn.execute(select(func.count()).select_from(r).where(
                r.c.automation_id == rule["id"], r.c.started_at > db.utcnow() - dt.timedelta(minutes=1),
                r.c.status != "skipped")).scalar() or 0
            if recent >= limit:
                insert_run(conn, req, "skipped", error=f"rate limit: at most {limit} runs per minute")
                return 1
        try:
            access = self.access_for(conn, rule)
        except StepFailed as e:
            run_id = insert_run(conn, req, "failed", error=str(e))
            notify_owner(conn, req, run_id, str(e))
            return 1
        if rule.get("condition") and req.record_id is not None and req.table is not None and not checked:
            if not self.matches(conn, cat, access, req.table, req.record_id, rule["condition"], req.changes):
                return 0
        run_id = insert_run(conn, req, "running")
        self.drive(conn, cat, req, run_id, access, {}, None, fresh=True)
        return 1

    def matches(self, conn: Connection, cat: Catalog, access: Access, t: TableDef, record_id: int, tree: Any,
                changes: dict[str, Any] | None) -> bool:
        """The condition, evaluated in SQL on the record ("changed" tests from the event)."""
        qctx = QueryContext(catalog=cat, dialect=conn.dialect.name, user_id=access.user_id, timezone=access.timezone)
        conds = [t.sa.c.id == record_id, FilterCompiler(t, qctx).compile(resolve_changed(tree, changes))]
        scope = access.scope(cat, t, t.sa, "read")
        if scope is not None:
            conds.append(scope)
        return conn.execute(select(t.sa.c.id).where(*conds)).first() is not None

    # --- running -----------------------------------------------------------------------------------
    def drive(self, conn: Connection, cat: Catalog, req: RunRequest, run_id: int, access: Access,
              outputs: dict[str, Any], resume: list[Any] | None, fresh: bool = False,
              closing: list[dict[str, Any]] | None = None) -> str:
        """Run (or continue) the rule's actions in a savepoint and log the outcome; returns the status.

        With ``closing`` (a batch's list) the run log's final update is collected there and applied by
        the caller after the batch (runs.close_runs), instead of one statement per run."""
        started = time.perf_counter()
        ex = Executor(self, conn, cat, req, access, run_id=run_id, outputs=outputs)
        error: str | None = None
        park: Park | None = None
        actions = req.rule.get("actions") or []
        try:
            if actions:  # a savepoint only where there is something to undo
                with conn.begin_nested():
                    park = ex.run_list(actions, [], resume)
        except (StepFailed, IndexError, KeyError, TypeError) as e:
            error = str(e) if isinstance(e, StepFailed) else f"the rule changed while the run was waiting ({e})"
            for s in ex.steps:
                if s["status"] in ("ok", "queued"):
                    s["status"] = "rolled_back"
                    s["delivery_id"] = None
        if ex.steps:
            conn.execute(insert(db.automation_steps), [dict(s, run_id=run_id) for s in ex.steps])
        r = db.automation_runs
        if fresh:
            prev_ms, prev_state = 0, initial_state(req)
        else:
            prev = conn.execute(select(r.c.duration_ms, r.c.state).where(r.c.id == run_id)).one()
            prev_ms, prev_state = prev.duration_ms or 0, prev.state or {}
        duration = int(prev_ms + (time.perf_counter() - started) * 1000)
        state = dict(prev_state, outputs=ex.outputs)
        values: dict[str, Any] = {"duration_ms": duration, "state": state}
        if error is not None:
            values.update(status="failed", error=error[:4000], finished_at=db.utcnow())
        elif park is not None:
            state["path"] = park.path
            values.update(status=park.status, resume_at=naive(park.resume_at) if park.resume_at else None)
        elif fresh and not ex.queued:
            values.update(status="succeeded", finished_at=db.utcnow())
        else:
            values.update(final_status(conn, run_id))
        if closing is not None:
            closing.append({"run_id": run_id, **values})
        else:
            close_run(conn, run_id, values)
        if values["status"] == "failed":
            notify_owner(conn, req, run_id, values.get("error") or "failed")
        return str(values["status"])

    # --- parked runs -------------------------------------------------------------------------------
    def resume_runs(self, limit: int = 20) -> int:
        """Continue runs whose wait is over (or whose approval was decided)."""
        r = db.automation_runs
        self.reset_caches()
        with db.transaction(self.engine) as conn:
            rows = conn.execute(select(r).where(r.c.status == "waiting", r.c.resume_at <= db.utcnow())
                                .order_by(r.c.resume_at, r.c.id).limit(limit).with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            cat = self.catalogs.get(conn)
            for run in rows:
                self.resume(conn, cat, run)
            return len(rows)

    def resume(self, conn: Connection, cat: Catalog, run: Any) -> None:
        r = db.automation_runs
        found = find_rule(cat, run.automation_id)
        if found is None or not found[1].get("enabled", True):
            conn.execute(update(r).where(r.c.id == run.id).values(
                status="failed", finished_at=db.utcnow(), error="the rule was deleted or disabled while waiting"))
            return
        app, rule = found
        state = run.state or {}
        req = RunRequest(app=app, rule=rule, trigger=run.trigger,
                         table=cat.tables_by_id.get(run.table_id) if run.table_id else None,
                         record_id=run.record_id, depth=run.depth, changes=state.get("changes"),
                         trigger_ctx=state.get("trigger") or {}, deleted_fields=state.get("deleted_fields"))
        try:
            access = self.access_for(conn, rule)
        except StepFailed as e:
            conn.execute(update(r).where(r.c.id == run.id).values(status="failed", error=str(e),
                                                                  finished_at=db.utcnow()))
            return
        conn.execute(update(r).where(r.c.id == run.id).values(status="running", resume_at=None))
        self.drive(conn, cat, req, run.id, access, dict(state.get("outputs") or {}), list(state.get("path") or []))

    # --- dry run -----------------------------------------------------------------------------------
    def dry_run(self, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
                record_ids: list[int] | None, limit: int, viewer: Access | None = None) -> dict[str, Any]:
        """Which records match and what each action would do; the caller rolls the transaction back.

        ``viewer`` (the person asking) limits the records to those they may read themselves: a record
        outside their scope is reported exactly like one that does not exist. The actions' templates read
        the record as the viewer reads it (a field hidden from them is absent), and a condition on a field
        hidden from them is not evaluated, so the output never shows what they may not see.
        """
        trig = rule["trigger"]
        t = app.tables_by_key.get(trig.get("table", ""))
        access = self.access_for(conn, rule)
        results: list[dict[str, Any]] = []
        ctx = {"type": trig["type"], "rule": rule["key"], "user": None, "changes": {}, "dry_run": True}
        seen: list[ColumnElement[bool]] = []
        restricted = viewer if viewer is not None and not viewer.is_admin else None
        if t is not None:
            seen = RecordReader(cat, conn, viewer).base_conditions(t) if viewer is not None \
                else [t.sa.c.deleted_at.is_(None)]
        if t is None:
            ids: list[int | None] = [None]
        elif record_ids is not None:
            ids = [rid for rid in record_ids[:limit]]
        else:
            own = RecordReader(cat, conn, access).base_conditions(t)
            ids = [r[0] for r in conn.execute(select(t.sa.c.id).where(*own, *seen)
                                              .order_by(t.sa.c.id.desc()).limit(limit)).all()]
        for rid in ids:
            entry: dict[str, Any] = {"record_id": rid}
            if rid is not None and t is not None:
                if conn.execute(select(t.sa.c.id).where(t.sa.c.id == rid, *seen)).first() is None:
                    entry.update(matched=False, error="no such record")
                    results.append(entry)
                    continue
                if rule.get("condition") and restricted is not None:
                    try:
                        restricted.check_query_fields(cat, t, rule["condition"])
                    except BadRequest:
                        entry.update(matched=None, error="the condition uses fields you may not see, so the "
                                                         "dry run can't tell whether this record matches")
                        results.append(entry)
                        continue
                if rule.get("condition") and not self.matches(conn, cat, access, t, rid, rule["condition"], None):
                    entry["matched"] = False
                    results.append(entry)
                    continue
            entry["matched"] = True
            req = RunRequest(app=app, rule=rule, trigger=trig["type"], table=t, record_id=rid, trigger_ctx=ctx)
            ex = Executor(self, conn, cat, req, access, run_id=0, outputs={}, dry=True, reader=restricted)
            try:
                with conn.begin_nested() as sp:
                    park = ex.run_list(rule.get("actions") or [], [], None)
                    sp.rollback()
                if park is not None:
                    entry["stops"] = park.status
            except StepFailed as e:
                entry["error"] = str(e)
            entry["actions"] = [{k: v for k, v in s.items() if k not in ("delivery_id", "started_at")}
                                for s in ex.steps]
            results.append(entry)
        return {"checked": len(results), "matched": [r["record_id"] for r in results if r.get("matched")],
                "results": results}
