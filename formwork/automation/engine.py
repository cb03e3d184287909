"""The automation engine: outbox events and schedule firings in, rule runs and side effects out.

Guarantees and how they are met:

* Events: the worker claims outbox rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the single
  ``BEGIN IMMEDIATE`` writer on SQLite) and runs every matching rule **in the same transaction** that
  marks the event done, so the database effects of a rule happen exactly once.
* Each rule run is a savepoint: a failing action undoes the run's own changes, the run is logged as
  failed (steps, error, duration) and the rule's owner gets a notification.
* Email and webhooks never happen inside that transaction: the run inserts *delivery intents*
  (``fw_delivery``) keyed ``fw-<run id>-<action path>``; after commit the worker sends them.  A delivery
  is marked ``written`` as soon as its bytes were handed to the peer (before the answer), and ``sent``
  on success.  After a crash a ``pending`` intent is sent (nothing went out), a ``written`` one is not
  sent again but marked ``unconfirmed``, so a restart never duplicates; only a crash inside the
  sub-millisecond gap between the socket write and that commit can repeat a delivery, and then with
  the same idempotency key (Message-ID / ``X-Formwork-Idempotency-Key``) so receivers can drop it.
* Schedules: a unique firing key per rule and due time (``fw_firing``), inserted in the transaction
  that runs the firing, makes each firing run once across workers.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from formwork import db
from formwork.automation.delivery import (
    DeliveryError,
    SmtpSettings,
    backoff_delay,
    call_webhook,
    send_email,
)
from formwork.automation.rules import (
    RECORD_ACTIONS,
    changed_fields,
    changed_test,
    resolve_changed,
    wait_seconds,
)
from formwork.automation.schedule import due_firings, parse_schedule
from formwork.automation.templating import TemplateError, render_value
from formwork.errors import FormworkError, NotFound, ValidationFailed
from formwork.metadata.catalog import AppDef, Catalog, CatalogCache, TableDef
from formwork.metadata.fieldtypes.base import QueryContext
from formwork.metadata.query import FilterCompiler
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, RecordService

log = logging.getLogger("formwork.automation")

USER_TYPES = ("user", "created_by", "updated_by")
OPEN_DELIVERY = ("pending", "written")
MAX_SCHEDULED_RECORDS = 1000


@dataclass
class Settings:
    """Engine knobs, from the Flask config (``AUTOMATION_*``) and the worker's command line."""

    smtp: SmtpSettings
    allow_private: bool = False
    max_depth: int = 5
    max_attempts: int = 5
    retry_base: float = 30.0
    retry_cap: float = 3600.0
    grace: dt.timedelta = dt.timedelta(hours=1)
    lease: float = 30.0
    secret: bytes = b"formwork"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        env = os.environ
        smtp = SmtpSettings(host=config.get("SMTP_HOST", "localhost"), port=int(config.get("SMTP_PORT", 25)),
                            username=config.get("SMTP_USERNAME"), password=config.get("SMTP_PASSWORD"),
                            tls=config.get("SMTP_TLS", "none"), mail_from=config.get("MAIL_FROM", "formwork@localhost"),
                            helo_name=config.get("SMTP_HELO") or env.get("FORMWORK_SMTP_HELO")
                            or ("localhost" if config.get("TESTING") else None))

        def num(key: str, default: float) -> float:
            return float(config.get(key) or env.get(f"FORMWORK_{key}") or default)

        return cls(smtp=smtp, allow_private=bool(config.get("WEBHOOK_ALLOW_PRIVATE")),
                   max_depth=int(num("AUTOMATION_MAX_DEPTH", 5)),
                   max_attempts=int(num("AUTOMATION_MAX_ATTEMPTS", 5)),
                   retry_base=num("AUTOMATION_RETRY_BASE", 30), retry_cap=num("AUTOMATION_RETRY_CAP", 3600),
                   grace=dt.timedelta(seconds=num("AUTOMATION_GRACE_SECONDS", 3600)),
                   lease=num("AUTOMATION_LEASE_SECONDS", 30),
                   secret=str(config.get("SECRET_KEY", "formwork")).encode())


class StepFailed(Exception):
    """An action could not be done; the run stops and its changes are undone."""


@dataclass
class Park:
    """The run stops here for now: resumed by the worker at ``resume_at`` or by an approval decision."""

    status: str
    path: list[Any]
    resume_at: dt.datetime | None = None


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


def emit_event(conn: Connection, table: TableDef, record_id: int | None, event: str, *,
               user_id: int | None = None, payload: dict[str, Any] | None = None) -> None:
    """Queue an outbox event in the caller's transaction (so a rollback fires nothing)."""
    conn.execute(insert(db.outbox).values(app_id=table.app_id, table_id=table.id, record_id=record_id, event=event,
                                          user_id=user_id, payload=payload or {}, depth=0, status="pending",
                                          attempts=0, next_attempt_at=db.utcnow()))


def emit_form_submitted(conn: Connection, table: TableDef, record_id: int, *, form: str | None = None,
                        user_id: int | None = None) -> None:
    """Call after a public form created ``record_id`` (same transaction): fires ``form_submitted`` rules.

    ``form`` is the form view's key; a rule whose trigger names a ``view`` only fires for that form.
    """
    emit_event(conn, table, record_id, "form_submitted", user_id=user_id, payload={"form": form})


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


def notify(conn: Connection, user_ids: list[int], kind: str, title: str, body: str | None = None,
           link: dict[str, Any] | None = None) -> None:
    ids = sorted(set(user_ids))
    if ids:
        now = db.utcnow()
        conn.execute(insert(db.notifications), [{"user_id": u, "kind": kind, "title": title[:2000],
                                                  "body": (body or "")[:20000], "link": link, "created_at": now}
                                                 for u in ids])


def find_rule(cat: Catalog, automation_id: int) -> tuple[AppDef, dict[str, Any]] | None:
    for app in cat.apps:
        for rule in app.automations:
            if rule["id"] == automation_id:
                return app, rule
    return None


def _rule_index(cat: Catalog) -> dict[tuple[int, str], list[tuple[AppDef, dict[str, Any]]]]:
    """Enabled rules by (table id, trigger type), built once per schema version."""
    def build() -> dict[tuple[int, str], list[tuple[AppDef, dict[str, Any]]]]:
        out: dict[tuple[int, str], list[tuple[AppDef, dict[str, Any]]]] = {}
        for app in cat.apps:
            for rule in app.automations:
                trig = rule["trigger"]
                t = app.tables_by_key.get(trig.get("table", ""))
                if rule.get("enabled", True) and t is not None:
                    out.setdefault((t.id, trig["type"]), []).append((app, rule))
        return out

    return cat.cached(("automation_index",), build)  # type: ignore[no-any-return]


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


class AutomationEngine:
    """Runs rules; one instance per worker (or per request for dry runs and decisions)."""

    def __init__(self, engine: Engine, catalogs: CatalogCache, settings: Settings,
                 worker_id: str = "web") -> None:
        self.engine = engine
        self.catalogs = catalogs
        self.settings = settings
        self.worker_id = worker_id
        self._access: dict[Any, Access] = {}

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

    # --- events ----------------------------------------------------------------------------------
    def process_events(self, limit: int = 100) -> int:
        """Claim up to ``limit`` due outbox events and run their rules; one transaction for the batch.

        Conditions without "changed" tests are evaluated for the whole batch in one query per rule;
        each event that starts runs gets its own savepoint, so one failing event does not undo others.
        """
        ob = db.outbox
        self.reset_caches()
        with db.transaction(self.engine) as conn:
            rows = conn.execute(select(ob).where(ob.c.status == "pending", ob.c.next_attempt_at <= db.utcnow())
                                .order_by(ob.c.id).limit(limit).with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            cat = self.catalogs.get(conn)
            plans = [(ev, self.candidates(cat, ev)) for ev in rows]
            known = self._prefilter(conn, cat, plans)
            done: list[int] = []
            for ev, cands in plans:
                cands = [c for c in cands if known.get((c[1]["id"], ev.record_id), True)]
                if not cands:
                    done.append(ev.id)
                    continue
                try:
                    with conn.begin_nested():
                        self.handle_event(conn, cat, ev, cands, known)
                    done.append(ev.id)
                except Exception as e:  # noqa: BLE001 - one bad event must not block the queue
                    log.exception("automation event %s failed", ev.id)
                    attempts = ev.attempts + 1
                    final = attempts >= self.settings.max_attempts
                    delay = backoff_delay(attempts, self.settings.retry_base, self.settings.retry_cap)
                    conn.execute(update(ob).where(ob.c.id == ev.id).values(
                        status="failed" if final else "pending", attempts=attempts, error=str(e)[:2000],
                        next_attempt_at=db.utcnow() + dt.timedelta(seconds=delay)))
            now = db.utcnow()
            for i in range(0, len(done), 500):
                conn.execute(update(ob).where(ob.c.id.in_(done[i:i + 500])).values(
                    status="done", processed_at=now, attempts=ob.c.attempts + 1, error=None))
            return len(rows)

    def candidates(self, cat: Catalog, ev: Any) -> list[tuple[AppDef, dict[str, Any]]]:
        """Rules this event may start, before their conditions are looked at."""
        t = cat.tables_by_id.get(ev.table_id) if ev.table_id is not None else None
        if t is None:
            return []
        payload = ev.payload or {}
        if ev.event in ("manual", "webhook"):
            found = find_rule(cat, int(payload.get("automation_id") or 0))
            rules = [found] if found is not None and found[1].get("enabled", True) else []
        else:
            rules = _rule_index(cat).get((t.id, ev.event), [])
        out = []
        for app, rule in rules:
            trig = rule["trigger"]
            if ev.origin is not None and ev.origin == rule["key"]:
                continue  # a rule's own change never triggers it again
            if ev.event == "record_updated" and not self._trigger_filters(trig, payload.get("changes") or {}):
                continue
            if ev.event == "form_submitted" and trig.get("view") and trig["view"] != payload.get("form"):
                continue
            out.append((app, rule))
        return out

    def _prefilter(self, conn: Connection, cat: Catalog,
                   plans: list[tuple[Any, list[tuple[AppDef, dict[str, Any]]]]]) -> dict[tuple[int, int], bool]:
        """Evaluate plain conditions (no "changed" tests) for all records of the batch at once."""
        by_rule: dict[int, tuple[dict[str, Any], TableDef, set[int]]] = {}
        for ev, cands in plans:
            for _app, rule in cands:
                cond = rule.get("condition")
                if not cond or ev.record_id is None or ev.depth >= self.settings.max_depth or changed_fields(cond):
                    continue
                entry = by_rule.setdefault(rule["id"], (rule, cat.table_by_id(ev.table_id), set()))
                entry[2].add(ev.record_id)
        known: dict[tuple[int, int], bool] = {}
        for rule_id, (rule, t, ids) in by_rule.items():
            try:
                access = self.access_for(conn, rule)
            except StepFailed:
                continue  # start() logs the failure
            qctx = QueryContext(catalog=cat, dialect=conn.dialect.name, user_id=access.user_id,
                                timezone=access.timezone)
            cond = FilterCompiler(t, qctx).compile(resolve_changed(rule["condition"], None))
            scope = access.scope(cat, t, t.sa, "read")
            ordered = sorted(ids)
            hits: set[int] = set()
            for i in range(0, len(ordered), 500):
                q = select(t.sa.c.id).where(t.sa.c.id.in_(ordered[i:i + 500]), cond)
                if scope is not None:
                    q = q.where(scope)
                hits.update(r[0] for r in conn.execute(q))
            for rid in ids:
                known[(rule_id, rid)] = rid in hits
        return known

    def handle_event(self, conn: Connection, cat: Catalog, ev: Any,
                     cands: list[tuple[AppDef, dict[str, Any]]] | None = None,
                     known: dict[tuple[int, int], bool] | None = None) -> int:
        if cands is None:
            cands = self.candidates(cat, ev)
        if not cands:
            return 0
        t = cat.table_by_id(ev.table_id)
        payload = ev.payload or {}
        changes = payload.get("changes") if ev.event == "record_updated" else None
        user = self._user_json(conn, ev.user_id)
        runs = 0
        for app, rule in cands:
            req = RunRequest(app=app, rule=rule, trigger=ev.event, table=t, record_id=ev.record_id, depth=ev.depth,
                             changes=changes, outbox_id=ev.id,
                             trigger_ctx={"type": ev.event, "rule": rule["key"], "user": user,
                                          "changes": changes or {}, "form": payload.get("form"),
                                          "data": payload.get("data")},
                             deleted_fields=payload.get("fields"))
            runs += self.start(conn, cat, req, checked=(known or {}).get((rule["id"], ev.record_id)) is True)
        return runs

    @staticmethod
    def _trigger_filters(trig: dict[str, Any], changes: dict[str, Any]) -> bool:
        if trig.get("fields") and not set(trig["fields"]) & set(changes):
            return False
        for c in trig.get("changes", []):
            if c["field"] not in changes:
                return False
            if "from" in c and not changed_test({"field": c["field"], "op": "changed_from", "value": c["from"]},
                                                changes):
                return False
            if "to" in c and not changed_test({"field": c["field"], "op": "changed_to", "value": c["to"]}, changes):
                return False
        return True

    def _user_json(self, conn: Connection, user_id: int | None) -> dict[str, Any] | None:
        if user_id is None:
            return None
        u = conn.execute(select(db.users.c.id, db.users.c.name, db.users.c.email, db.users.c.username)
                         .where(db.users.c.id == user_id)).first()
        return {"id": u.id, "name": u.name, "email": u.email, "username": u.username} if u else None

    # --- starting a run ----------------------------------------------------------------------------
    def start(self, conn: Connection, cat: Catalog, req: RunRequest, checked: bool = False) -> int:
        """Check loop/rate limits and the condition, then run the rule; returns 1 if a run was logged."""
        rule = req.rule
        if req.depth >= self.settings.max_depth:
            msg = (f"stopped: this change comes from a chain of {req.depth} automations "
                   f"(limit {self.settings.max_depth}); rules are probably triggering each other")
            log.error("automation %s: %s", rule["key"], msg)
            run_id = self._insert_run(conn, req, "failed", error=msg)
            self._notify_owner(conn, req, run_id, msg)
            return 1
        limit = rule.get("rate_limit_per_minute")
        if limit:
            r = db.automation_runs
            recent = conn.execute(select(func.count()).select_from(r).where(
                r.c.automation_id == rule["id"], r.c.started_at > db.utcnow() - dt.timedelta(minutes=1),
                r.c.status != "skipped")).scalar() or 0
            if recent >= limit:
                self._insert_run(conn, req, "skipped", error=f"rate limit: at most {limit} runs per minute")
                return 1
        try:
            access = self.access_for(conn, rule)
        except StepFailed as e:
            run_id = self._insert_run(conn, req, "failed", error=str(e))
            self._notify_owner(conn, req, run_id, str(e))
            return 1
        if rule.get("condition") and req.record_id is not None and req.table is not None and not checked:
            if not self.matches(conn, cat, access, req.table, req.record_id, rule["condition"], req.changes):
                return 0
        run_id = self._insert_run(conn, req, "running")
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

    def _insert_run(self, conn: Connection, req: RunRequest, status: str, error: str | None = None) -> int:
        now = db.utcnow()
        done = status in ("failed", "skipped")
        return int(conn.execute(insert(db.automation_runs).values(
            app_id=req.app.id, automation_id=req.rule["id"], automation_key=req.rule["key"], trigger=req.trigger,
            table_id=req.table.id if req.table else None, record_id=req.record_id, outbox_id=req.outbox_id,
            firing_key=req.firing_key, status=status, depth=req.depth, started_at=now,
            finished_at=now if done else None, duration_ms=0 if done else None, error=error,
            state=self._initial_state(req),
        ).returning(db.automation_runs.c.id)).scalar_one())

    @staticmethod
    def _initial_state(req: RunRequest) -> dict[str, Any]:
        return {"trigger": req.trigger_ctx, "changes": req.changes, "deleted_fields": req.deleted_fields}

    def _notify_owner(self, conn: Connection, req: RunRequest, run_id: int, message: str) -> None:
        owner = rule_owner(conn, req.rule["id"])
        if owner is not None:
            notify(conn, [owner], "automation_failed", f"Automation '{req.rule['key']}' failed", message,
                   {"app": req.app.key, "automation": req.rule["key"], "run_id": run_id})

    # --- running -----------------------------------------------------------------------------------
    def drive(self, conn: Connection, cat: Catalog, req: RunRequest, run_id: int, access: Access,
              outputs: dict[str, Any], resume: list[Any] | None, fresh: bool = False) -> str:
        """Run (or continue) the rule's actions in a savepoint and log the outcome; returns the status."""
        started = time.perf_counter()
        ex = Executor(self, conn, cat, req, access, run_id=run_id, outputs=outputs)
        error: str | None = None
        park: Park | None = None
        try:
            with conn.begin_nested():
                park = ex.run_list(req.rule.get("actions") or [], [], resume)
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
            prev_ms, prev_state = 0, self._initial_state(req)
        else:
            prev = conn.execute(select(r.c.duration_ms, r.c.state).where(r.c.id == run_id)).first()
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
            values.update(self._final_status(conn, run_id))
        conn.execute(update(r).where(r.c.id == run_id).values(**values))
        if values["status"] == "failed":
            self._notify_owner(conn, req, run_id, values.get("error") or "failed")
        return str(values["status"])

    def _final_status(self, conn: Connection, run_id: int) -> dict[str, Any]:
        d = db.deliveries
        counts = dict(conn.execute(select(d.c.status, func.count()).where(d.c.run_id == run_id)
                                   .group_by(d.c.status)).all())
        if any(counts.get(s) for s in OPEN_DELIVERY):
            return {"status": "delivering"}
        if counts.get("failed"):
            err = conn.execute(select(d.c.error).where(d.c.run_id == run_id, d.c.status == "failed")
                               .order_by(d.c.id).limit(1)).scalar()
            return {"status": "failed", "error": f"a delivery failed: {err}", "finished_at": db.utcnow()}
        return {"status": "succeeded", "finished_at": db.utcnow(), "resume_at": None}

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

    # --- deliveries --------------------------------------------------------------------------------
    def process_deliveries(self, limit: int = 10, stop: Callable[[], bool] | None = None) -> int:
        """Send due email/webhook intents; see the module docstring for the crash rules."""
        d = db.deliveries
        now = db.utcnow()
        with db.transaction(self.engine) as conn:
            free = or_(d.c.locked_until.is_(None), d.c.locked_until < now)
            rows = conn.execute(select(d).where(or_(
                and_(d.c.status == "pending", d.c.next_attempt_at <= now, free),
                and_(d.c.status == "written", d.c.locked_until < now))).order_by(d.c.id).limit(limit)
                .with_for_update(skip_locked=True)).all()
            for row in rows:
                timeout = float((row.request or {}).get("timeout") or 10)
                conn.execute(update(d).where(d.c.id == row.id).values(
                    locked_by=self.worker_id,
                    locked_until=now + dt.timedelta(seconds=self.settings.lease + timeout)))
        done = 0
        for row in rows:
            if stop is not None and stop():
                self.release_leases()
                break
            self.deliver(row)
            done += 1
        return done

    def deliver(self, row: Any) -> None:
        d = db.deliveries
        if row.status == "written":
            self._finish_delivery(row, "unconfirmed", row.response,
                                  "the worker stopped after handing this over and before the answer; "
                                  "not sent again so that it is not duplicated")
            return
        req = row.request

        def mark_written() -> None:
            with db.transaction(self.engine) as c:
                c.execute(update(d).where(d.c.id == row.id, d.c.locked_by == self.worker_id)
                          .values(status="written"))

        try:
            if row.kind == "email":
                mid = send_email(self.settings.smtp, req["to"], req["subject"], req.get("body") or "",
                                 body_html=req.get("html"), cc=req.get("cc") or None,
                                 idempotency_key=row.idempotency_key, on_written=mark_written)
                self._finish_delivery(row, "sent", {"message_id": mid}, None)
            else:
                res = call_webhook(req["url"], req.get("payload"), secret=req.get("secret"),
                                   idempotency_key=row.idempotency_key, timeout=float(req.get("timeout") or 10),
                                   allow_private=self.settings.allow_private, on_written=mark_written)
                self._finish_delivery(row, "sent", {"status": res.status, "body": res.body[:2000]}, None)
        except DeliveryError as e:
            attempts = row.attempts + 1
            if e.retryable and attempts < self.settings.max_attempts:
                delay = max(backoff_delay(attempts, self.settings.retry_base, self.settings.retry_cap),
                            min(e.retry_after or 0, self.settings.retry_cap))
                with db.transaction(self.engine) as c:
                    c.execute(update(d).where(d.c.id == row.id, d.c.locked_by == self.worker_id).values(
                        status="pending", attempts=attempts, error=e.message[:2000], locked_by=None,
                        locked_until=None, next_attempt_at=db.utcnow() + dt.timedelta(seconds=delay)))
                    self._update_step(c, row.id, "retrying", None, f"attempt {attempts}: {e.message}")
            else:
                self._finish_delivery(row, "failed", None, e.message, attempts=attempts)

    def _finish_delivery(self, row: Any, status: str, response: Any, error: str | None,
                         attempts: int | None = None) -> None:
        d = db.deliveries
        with db.transaction(self.engine) as conn:
            res = conn.execute(update(d).where(d.c.id == row.id, d.c.locked_by == self.worker_id).values(
                status=status, response=response, error=error, locked_by=None, locked_until=None,
                attempts=attempts if attempts is not None else row.attempts + (status != "unconfirmed"),
                sent_at=db.utcnow() if status in ("sent", "unconfirmed") else None))
            if res.rowcount != 1:
                return  # another worker took the delivery over after our lease ran out
            self._update_step(conn, row.id, status, response, error)
            self.settle_run(conn, row.run_id)

    @staticmethod
    def _update_step(conn: Connection, delivery_id: int, status: str, output: Any, error: str | None) -> None:
        s = db.automation_steps
        values: dict[str, Any] = {"status": status, "error": error}
        if output is not None:
            values["output"] = output
        conn.execute(update(s).where(s.c.delivery_id == delivery_id).values(**values))

    def settle_run(self, conn: Connection, run_id: int) -> None:
        """A run waiting only for its deliveries ends when the last one is settled."""
        r = db.automation_runs
        q = select(r).where(r.c.id == run_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        run = conn.execute(q).first()
        if run is None or run.status != "delivering":
            return
        values = self._final_status(conn, run_id)
        if values["status"] == "delivering":
            return
        conn.execute(update(r).where(r.c.id == run_id).values(**values))
        if values["status"] == "failed":
            cat = self.catalogs.get(conn)
            found = find_rule(cat, run.automation_id)
            owner = rule_owner(conn, run.automation_id)
            if owner is not None:
                notify(conn, [owner], "automation_failed", f"Automation '{run.automation_key}' failed",
                       values.get("error"), {"app": found[0].key if found else None,
                                             "automation": run.automation_key, "run_id": run_id})

    def release_leases(self) -> None:
        d = db.deliveries
        with db.transaction(self.engine) as conn:
            conn.execute(update(d).where(d.c.locked_by == self.worker_id, d.c.status == "pending")
                         .values(locked_by=None, locked_until=None))

    # --- schedules ---------------------------------------------------------------------------------
    def tick(self, now: dt.datetime | None = None) -> int:
        """Fire due schedule and date_reached rules (each firing once, across workers)."""
        now = aware(now or dt.datetime.now(dt.UTC))
        self.reset_caches()
        cat = self.catalogs.get()
        runs = 0
        for app in cat.apps:
            for rule in app.automations:
                if rule["trigger"]["type"] not in ("schedule", "date_reached") or not rule.get("enabled", True):
                    continue
                try:
                    with db.transaction(self.engine) as conn:
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
                last = conn.execute(q).scalar()
        return aware(last)

    def _tick_rule(self, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any], now: dt.datetime) -> int:
        last = self._last_tick(conn, rule)
        if last >= now:
            return 0
        trig = rule["trigger"]
        table = app.tables_by_key.get(trig.get("table", ""))
        runs = 0
        if trig["type"] == "schedule":
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
                        self._notify_owner(conn, req, self._insert_run(conn, req, "failed", error=msg), msg)
                        runs += 1
                        continue
                    if not ctx["aggregate"]["matched"]:
                        continue
                if table is None:
                    runs += self.start(conn, cat, RunRequest(app=app, rule=rule, trigger="schedule", table=None,
                                                             record_id=None, trigger_ctx=ctx, firing_key=key))
                else:
                    for rid in self._scheduled_records(conn, cat, table, rule):
                        runs += self.start(conn, cat, RunRequest(app=app, rule=rule, trigger="schedule", table=table,
                                                                 record_id=rid, trigger_ctx=ctx, firing_key=key))
        elif table is not None:
            for rid, due in self._date_due(conn, table, rule, last, now):
                key = f"d:{rule['id']}:{rid}:{due.isoformat()}"
                if self._claim_firing(conn, rule, key, due):
                    ctx = {"type": "date_reached", "rule": rule["key"], "due_at": due.isoformat(), "user": None,
                           "changes": {}}
                    runs += self.start(conn, cat, RunRequest(app=app, rule=rule, trigger="date_reached", table=table,
                                                             record_id=rid, trigger_ctx=ctx, firing_key=key))
        conn.execute(update(db.automation_state).where(db.automation_state.c.automation_id == rule["id"])
                     .values(last_tick=naive(now)))
        return runs

    def aggregate_condition(self, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
                            due: dt.datetime) -> dict[str, Any]:
        """A schedule's aggregate condition as of the firing time: value (a ratio with ``divide_by``),
        the parts, and whether ``value op threshold`` holds. Computed as the rule's user sees the data."""
        from formwork.runtime.aggregate import Aggregator

        spec = rule["trigger"]["aggregate_condition"]
        access = self.access_for(conn, rule)

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
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b}
        out.update(value=value, threshold=threshold, op=spec["op"],
                   matched=value is not None and ops[spec["op"]](value, threshold))
        return out

    def _claim_firing(self, conn: Connection, rule: dict[str, Any], key: str, due: dt.datetime) -> bool:
        try:
            with conn.begin_nested():
                conn.execute(insert(db.firings).values(automation_id=rule["id"], firing_key=key, due_at=naive(due),
                                                       created_at=db.utcnow()))
            return True
        except IntegrityError:
            return False

    def _scheduled_records(self, conn: Connection, cat: Catalog, t: TableDef, rule: dict[str, Any]) -> list[int]:
        access = self.access_for(conn, rule)
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
        conds = [t.sa.c.deleted_at.is_(None)]
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

    # --- dry run -----------------------------------------------------------------------------------
    def dry_run(self, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
                record_ids: list[int] | None, limit: int, viewer: Access | None = None) -> dict[str, Any]:
        """Which records match and what each action would do; the caller rolls the transaction back.

        ``viewer`` (the person asking) limits the records to those they may read themselves: a record
        outside their scope is reported exactly like one that does not exist.
        """
        trig = rule["trigger"]
        t = app.tables_by_key.get(trig.get("table", ""))
        access = self.access_for(conn, rule)
        results: list[dict[str, Any]] = []
        ctx = {"type": trig["type"], "rule": rule["key"], "user": None, "changes": {}, "dry_run": True}
        seen: list[ColumnElement[bool]] = []
        if t is not None:
            seen = RecordReader(cat, conn, viewer).base_conditions(t) if viewer is not None \
                else [t.sa.c.deleted_at.is_(None)]
        if t is None:
            ids: list[int | None] = [None]
        elif record_ids is not None:
            ids = list(record_ids)[:limit]
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
                if rule.get("condition") and not self.matches(conn, cat, access, t, rid, rule["condition"], None):
                    entry["matched"] = False
                    results.append(entry)
                    continue
            entry["matched"] = True
            req = RunRequest(app=app, rule=rule, trigger=trig["type"], table=t, record_id=rid, trigger_ctx=ctx)
            ex = Executor(self, conn, cat, req, access, run_id=0, outputs={}, dry=True)
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


class Executor:
    """Runs one rule's actions for one record, collecting step log entries."""

    def __init__(self, eng: AutomationEngine, conn: Connection, cat: Catalog, req: RunRequest, access: Access, *,
                 run_id: int, outputs: dict[str, Any], dry: bool = False) -> None:
        self.eng = eng
        self.conn = conn
        self.cat = cat
        self.req = req
        self.rule = req.rule
        self.app = req.app
        self.t = req.table
        self.rid = req.record_id
        self.access = access
        self.run_id = run_id
        self.outputs = outputs
        self.dry = dry
        self.steps: list[dict[str, Any]] = []
        self._record: dict[str, Any] | None = None
        self._delivery_id: int | None = None
        self.queued = 0

    # --- context ---------------------------------------------------------------------------------
    def service(self) -> RecordService:
        return RecordService(self.cat, self.conn, self.access, origin=self.rule["key"], depth=self.req.depth + 1,
                             secret=self.eng.settings.secret)

    def record(self) -> dict[str, Any]:
        if self._record is None:
            self._record = self._load_record()
        return self._record

    def _load_record(self) -> dict[str, Any]:
        if self.t is None or self.rid is None:
            return {}
        reader = RecordReader(self.cat, self.conn, self.access)
        try:
            rec = reader.get(self.t, self.rid, trashed=self.req.trigger == "record_deleted")
        except NotFound:
            if self.req.deleted_fields is not None:
                return {"id": self.rid, **self.req.deleted_fields}
            raise StepFailed(f"record {self.rid} is gone or not visible to the rule's user") from None
        users: dict[int, dict[str, Any]] = {}
        out = self._expand(reader, self.t, rec, users, 0)
        if users:
            for u in self.conn.execute(select(db.users.c.id, db.users.c.email).where(db.users.c.id.in_(users))):
                for holder in users[u.id]["holders"]:
                    holder["email"] = u.email
        return out

    def _expand(self, reader: RecordReader, t: TableDef, rec: dict[str, Any],
                users: dict[int, dict[str, Any]], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": rec["id"]}
        for k, v in rec["fields"].items():
            f = t.fields_by_key.get(k)
            if f is not None and f.type == "link" and depth == 0 and v:
                target = self.cat.table_by_id(f.options["target"])
                items = v if isinstance(v, list) else [v]
                expanded = []
                for item in items[:50]:
                    try:
                        linked = reader.get(target, item["id"])
                        expanded.append(dict(self._expand(reader, target, linked, users, 1), display=item["display"]))
                    except NotFound:
                        expanded.append(item)
                out[k] = expanded if isinstance(v, list) else expanded[0]
            elif f is not None and f.type in USER_TYPES and v:
                vals = [dict(x) for x in (v if isinstance(v, list) else [v])]
                for x in vals:
                    users.setdefault(x["id"], {"holders": []})["holders"].append(x)
                    x.setdefault("email", None)
                out[k] = vals if isinstance(v, list) else vals[0]
            else:
                out[k] = v
        return out

    def context(self, **extra: Any) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        return {"record": self.record(), "trigger": self.req.trigger_ctx, "actions": self.outputs, "now": now,
                "today": now.astimezone(ZoneInfo(self.access.timezone or "UTC")).date(), **extra}

    def render(self, value: Any, **extra: Any) -> Any:
        try:
            return plain(render_value(value, self.context(**extra)))
        except TemplateError as e:
            raise StepFailed(f"template: {e.message}") from None

    # --- the action list ---------------------------------------------------------------------------
    def run_list(self, actions: list[dict[str, Any]], base: list[Any], resume: list[Any] | None) -> Park | None:
        start = 0
        if resume:
            start = int(resume[0])
            if len(resume) > 1:
                park = self.run_list(actions[start].get(resume[1]) or [], [*base, start, resume[1]], resume[2:])
                if park is not None:
                    return park
                start += 1
        for i in range(start, len(actions)):
            park = self.action(actions[i], [*base, i])
            if park is not None:
                return park
        return None

    def action(self, a: dict[str, Any], path: list[Any]) -> Park | None:
        kind = a["type"]
        started = time.perf_counter()
        step: dict[str, Any] = {"path": path_text(path), "action": kind, "status": "ok", "output": None,
                                "error": None, "started_at": db.utcnow(), "delivery_id": None}
        self.steps.append(step)
        self._delivery_id = None
        if kind in RECORD_ACTIONS and self.rid is None:
            step.update(status="failed", error=f"'{kind}' needs a record; this run has none")
            raise StepFailed(f"step {step['path']} ({kind}): needs a record")
        try:
            result = getattr(self, f"do_{kind}")(a, path)
        except StepFailed as e:
            step.update(status="failed", error=str(e), duration_ms=int((time.perf_counter() - started) * 1000))
            raise StepFailed(f"step {step['path']} ({kind}): {e}") from None
        except ValidationFailed as e:
            msg = e.message + (f" {e.details}" if e.details else "")
            step.update(status="failed", error=msg, duration_ms=int((time.perf_counter() - started) * 1000))
            raise StepFailed(f"step {step['path']} ({kind}): {msg}") from None
        except FormworkError as e:
            step.update(status="failed", error=e.message, duration_ms=int((time.perf_counter() - started) * 1000))
            raise StepFailed(f"step {step['path']} ({kind}): {e.message}") from None
        step["duration_ms"] = int((time.perf_counter() - started) * 1000)
        if isinstance(result, Park):
            if kind != "branch":
                step["status"] = result.status if not self.dry else "would_stop"
            return result
        step["output"] = result
        if self._delivery_id is not None:
            step.update(status="queued", delivery_id=self._delivery_id)
        elif self.dry:
            step["status"] = "would_run"
        if kind not in ("branch",):
            self.outputs[a.get("key") or path_text(path)] = result
        return None

    # --- actions -----------------------------------------------------------------------------------
    def do_update_record(self, a: dict[str, Any], path: list[Any]) -> Any:
        assert self.t is not None and self.rid is not None
        fields = self.render(a["fields"])
        if self.dry:
            return {"id": self.rid, "would_set": fields}
        rec = self.service().update(self.t, self.rid, fields)
        self._record = None
        return {"id": rec["id"], "fields": rec["fields"]}

    def do_create_record(self, a: dict[str, Any], path: list[Any]) -> Any:
        target = self.app.table(a["table"])
        fields = self.render(a["fields"])
        if self.dry:
            return {"table": target.key, "would_create": fields}
        rec = self.service().create(target, fields)
        return {"id": rec["id"], "table": target.key, "fields": rec["fields"]}

    def do_update_related(self, a: dict[str, Any], path: list[Any]) -> Any:
        assert self.t is not None
        f = self.t.field(a["link"])
        target = self.cat.table_by_id(f.options["target"])
        value = self.record().get(f.key)
        related = value if isinstance(value, list) else ([value] if value else [])
        done, svc = [], self.service()
        for item in related:
            fields = self.render(a["fields"], related=item)
            if not self.dry:
                svc.update(target, item["id"], fields)
            done.append({"id": item["id"], "fields": fields})
        if not self.dry:
            self._record = None
        return {"table": target.key, "updated" if not self.dry else "would_update": done}

    def _queue(self, kind: str, request: dict[str, Any], path: list[Any]) -> dict[str, Any]:
        key = f"fw-{self.run_id}-{path_text(path)}"
        shown = {k: v for k, v in request.items() if k != "secret"}
        if self.dry:
            return {"would_send": shown}
        self.queued += 1
        self._delivery_id = int(self.conn.execute(insert(db.deliveries).values(
            idempotency_key=key, run_id=self.run_id, kind=kind, request=request, status="pending", attempts=0,
            next_attempt_at=db.utcnow(), created_at=db.utcnow()).returning(db.deliveries.c.id)).scalar_one())
        return {"idempotency_key": key, **shown}

    @staticmethod
    def _addresses(value: Any) -> list[str]:
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            if isinstance(item, list):
                out += [str(x) for x in item if x]
            elif item:
                out += [part.strip() for part in str(item).split(",") if part.strip()]
        return out

    def _emails(self, user_ids: list[int]) -> list[str]:
        if not user_ids:
            return []
        return [r[0] for r in self.conn.execute(select(db.users.c.email).where(
            db.users.c.id.in_(sorted(set(user_ids))), db.users.c.email.is_not(None)).order_by(db.users.c.id))]

    def do_send_email(self, a: dict[str, Any], path: list[Any]) -> Any:
        to = self._addresses(self.render(a.get("to") or []))
        for role in a.get("roles") or []:
            to += self._emails(self._users_by_role(role))
        if a.get("owner"):
            owner = self._owner_id()
            to += self._emails([owner] if owner is not None else [])
        to = list(dict.fromkeys(to))
        if not to:
            raise StepFailed("the email has no recipient (the 'to' templates rendered empty and no role member "
                             "or owner has an email address)")
        request = {"to": to, "cc": self._addresses(self.render(a.get("cc") or [])),
                   "subject": str(self.render(a["subject"]) or ""), "body": str(self.render(a.get("body") or "")),
                   "html": self.render(a["html"]) if a.get("html") else None}
        return self._queue("email", request, path)

    def do_call_webhook(self, a: dict[str, Any], path: list[Any]) -> Any:
        payload = self.render(a["payload"]) if "payload" in a else plain(
            {"rule": self.rule["key"], "trigger": self.req.trigger_ctx, "record": self.record() or None})
        request = {"url": str(self.render(a["url"])), "payload": payload, "secret": a.get("secret"),
                   "timeout": float(a.get("timeout") or 10)}
        return self._queue("webhook", request, path)

    def _users_by_role(self, role_key: str) -> list[int]:
        u, ur, r = db.users, db.user_roles, db.roles
        return [x[0] for x in self.conn.execute(
            select(u.c.id).join(ur, ur.c.user_id == u.c.id).join(r, r.c.id == ur.c.role_id)
            .where(r.c.key == role_key, u.c.active.is_(True)).order_by(u.c.id))]

    def _resolve_users(self, names: list[Any]) -> list[int]:
        out = []
        for n in names:
            if isinstance(n, dict) and "id" in n:
                n = n["id"]
            text = str(n).strip()
            if not text:
                continue
            col = db.users.c.id if text.isdigit() else db.users.c.username
            uid = self.conn.execute(select(db.users.c.id).where(col == (int(text) if text.isdigit() else text),
                                                                db.users.c.active.is_(True))).scalar()
            if uid is None:
                raise StepFailed(f"no active user '{text[:100]}'")
            out.append(uid)
        return out

    def _owner_id(self) -> int | None:
        if self.t is None or self.rid is None:
            return None
        f = self.t.owner_field
        col = self.t.sa.c[f.column_name] if f is not None and f.stored else self.t.sa.c.created_by
        return self.conn.execute(select(col).where(self.t.sa.c.id == self.rid)).scalar()

    def do_notify(self, a: dict[str, Any], path: list[Any]) -> Any:
        users = self._resolve_users(self._addresses(self.render(a.get("users") or [])))
        for role in a.get("roles") or []:
            users += self._users_by_role(role)
        if a.get("owner"):
            owner = self._owner_id()
            if owner is not None:
                users.append(owner)
        title, body = str(self.render(a["title"])), str(self.render(a.get("body") or ""))
        link = {"app": self.app.key, "table": self.t.key if self.t else None, "record_id": self.rid}
        if not self.dry:
            notify(self.conn, users, "automation", title, body, link)
        return {"users": sorted(set(users)), "title": title}

    def do_assign_owner(self, a: dict[str, Any], path: list[Any]) -> Any:
        assert self.t is not None and self.rid is not None
        f = self.t.field(a.get("field") or (self.t.owner_field.key if self.t.owner_field else ""))
        if a.get("role"):
            candidates = self._users_by_role(a["role"])
        else:
            team = self.conn.execute(select(db.teams.c.id).where(db.teams.c.key == a.get("team"))).scalar()
            if team is None:
                raise StepFailed(f"no team '{a.get('team')}'")
            candidates = [x[0] for x in self.conn.execute(select(db.users.c.id).where(
                db.users.c.team_id == team, db.users.c.active.is_(True)).order_by(db.users.c.id))]
        if not candidates:
            raise StepFailed(f"no active users in {'role' if a.get('role') else 'team'} "
                             f"'{a.get('role') or a.get('team')}'")
        if a.get("strategy") == "least_loaded":
            col = self.t.sa.c[f.column_name]
            loads = dict(self.conn.execute(select(col, func.count()).where(col.in_(candidates),
                                                                           self.t.sa.c.deleted_at.is_(None))
                                           .group_by(col)).all())
            chosen = min(candidates, key=lambda uid: (loads.get(uid, 0), uid))
        else:
            chosen = self._round_robin(candidates, path_text(path))
        if not self.dry:
            self.service().update(self.t, self.rid, {f.key: chosen})
            self._record = None
        name = self.conn.execute(select(db.users.c.name).where(db.users.c.id == chosen)).scalar()
        return {"field": f.key, "user": {"id": chosen, "name": name}}

    def _round_robin(self, candidates: list[int], path: str) -> int:
        st = db.assign_state
        where = and_(st.c.automation_id == self.rule["id"], st.c.path == path)
        q = select(st.c.last_user_id).where(where)
        if self.conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        if row is None:
            try:
                with self.conn.begin_nested():
                    self.conn.execute(insert(st).values(automation_id=self.rule["id"], path=path, last_user_id=None))
            except IntegrityError:
                pass
            row = self.conn.execute(q).first()
        last = row.last_user_id if row is not None else None
        chosen = next((u for u in candidates if last is None or u > last), candidates[0])
        self.conn.execute(update(st).where(where).values(last_user_id=chosen))
        return chosen

    def do_request_approval(self, a: dict[str, Any], path: list[Any]) -> Any:
        assert self.t is not None
        spec = a.get("approvers") or {}
        approvers = self._resolve_users(self._addresses(self.render(spec.get("users") or [])))
        if spec.get("role"):
            approvers += self._users_by_role(spec["role"])
        if spec.get("manager"):
            owner = self._owner_id()
            team = self.conn.execute(select(db.users.c.team_id).where(db.users.c.id == owner)).scalar() \
                if owner is not None else None
            manager = self.conn.execute(select(db.teams.c.manager_id).where(db.teams.c.id == team)).scalar() \
                if team is not None else None
            if manager is None:
                raise StepFailed("the record owner has no team manager to approve")
            approvers.append(manager)
        approvers = sorted(set(approvers))
        if not approvers:
            raise StepFailed("nobody to approve: the approver list is empty")
        title = str(self.render(a.get("title") or f"Approval: {self.rule['key']}"))
        mode = a.get("mode") or "any"
        if self.dry:
            return Park("awaiting_approval", [*path])
        aid = int(self.conn.execute(insert(db.approvals).values(
            run_id=self.run_id, automation_id=self.rule["id"], app_id=self.app.id, table_id=self.t.id,
            record_id=self.rid, path=path_text(path), mode=mode, title=title, approvers=approvers, status="pending",
            created_at=db.utcnow()).returning(db.approvals.c.id)).scalar_one())
        notify(self.conn, approvers, "approval", title, None,
               {"approval_id": aid, "app": self.app.key, "table": self.t.key, "record_id": self.rid})
        self.outputs[a.get("key") or path_text(path)] = {"approval_id": aid, "status": "pending"}
        self.steps[-1]["output"] = {"approval_id": aid, "approvers": approvers, "mode": mode}
        return Park("awaiting_approval", [*path])

    def do_wait(self, a: dict[str, Any], path: list[Any]) -> Any:
        seconds = wait_seconds(a)
        resume_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        self.steps[-1]["output"] = {"until": plain(resume_at)}
        if self.dry:
            return {"would_wait_seconds": seconds}
        return Park("waiting", [*path[:-1], path[-1] + 1], resume_at)

    def do_recycle_to_pool(self, a: dict[str, Any], path: list[Any]) -> Any:
        """Return stale records of a pool table to the pool (see formwork.runtime.pool), as of the firing."""
        from formwork.runtime.pool import recycle

        due = self.req.trigger_ctx.get("due_at")
        now = naive(dt.datetime.fromisoformat(due)) if isinstance(due, str) else None
        return recycle(self.conn, self.cat, self.app.table(a["table"]), now=now, origin=self.rule["key"],
                       depth=self.req.depth + 1, dry=self.dry)

    def do_branch(self, a: dict[str, Any], path: list[Any]) -> Any:
        assert self.t is not None and self.rid is not None
        taken = "then" if self.eng.matches(self.conn, self.cat, self.access, self.t, self.rid, a["condition"],
                                           self.req.changes) else "else"
        self.steps[-1]["output"] = {"branch": taken}
        park = self.run_list(a.get(taken) or [], [*path, taken], None)
        return park if park is not None else {"branch": taken}
