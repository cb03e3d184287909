"""Intake: outbox events (record changes, form submissions, manual runs, webhooks) become rule runs.

Each event's trigger type (formwork.automation.triggers) finds the rules it may start and matches them.

Writers queue events with ``emit_event`` in their own transaction, so a rollback fires nothing. The
worker claims due events (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the single ``BEGIN IMMEDIATE``
writer on SQLite) and runs every matching rule **in the same transaction** that marks the event done,
so the database effects of a rule happen exactly once. A failing event is retried with backoff.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.changes import changed_fields, resolve_changed
from formwork.automation.delivery import backoff_delay
from formwork.automation.runs import (
    RuleRunner,
    RunRequest,
    StepFailed,
    close_runs,
    find_rule,
    insert_runs_statement,
    run_row,
)
from formwork.automation.scheduler import Scheduler
from formwork.automation.triggers.base import trigger_types
from formwork.automation.triggers.events import Manual
from formwork.errors import Conflict, NotFound
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.metadata.fieldtypes.base import QueryContext
from formwork.metadata.query import FilterCompiler
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader

log = logging.getLogger("formwork.automation")

Candidate = tuple[AppDef, dict[str, Any]]


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


def _rule_index(cat: Catalog) -> dict[tuple[int, str], list[Candidate]]:
    """Enabled rules by (table id, trigger type), built once per schema version."""
    def build() -> dict[tuple[int, str], list[Candidate]]:
        out: dict[tuple[int, str], list[Candidate]] = {}
        for app in cat.apps:
            for rule in app.automations:
                trig = rule["trigger"]
                t = app.tables_by_key.get(trig.get("table", ""))
                if rule.get("enabled", True) and t is not None:
                    out.setdefault((t.id, trig["type"]), []).append((app, rule))
        return out

    return cat.cached(("automation_index",), build)


class Intake:
    """Claims outbox events and starts the runs they trigger."""

    def __init__(self, runner: RuleRunner) -> None:
        self.runner = runner
        self.settings = runner.settings
        self._users: dict[int, dict[str, Any] | None] = {}  # trigger.user by id, for one batch

    def process_events(self, limit: int = 100) -> int:
        """Claim up to ``limit`` due outbox events and run their rules; one transaction for the batch.

        Conditions without "changed" tests are evaluated for the whole batch in one query per rule. The
        runs those conditions started are logged with one multi-row insert and closed with one update per
        outcome, after the batch; each event that writes anything gets its own savepoint, so one failing
        event does not undo others (its runs are taken out of the log again and it is retried).
        Events of a record that another worker is still handling wait for the next round (order per record).
        """
        ob = db.outbox
        self.runner.reset_caches()
        self._users.clear()
        with db.transaction(self.runner.engine) as conn:
            rows = conn.execute(select(ob).where(ob.c.status == "pending", ob.c.next_attempt_at <= db.utcnow())
                                .order_by(ob.c.id).limit(limit).with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            rows = self._in_record_order(conn, rows)
            if not rows:
                return 0
            cat = self.runner.catalogs.get(conn)
            plans = [(ev, self.candidates(cat, ev)) for ev in rows]
            known = self._prefilter(conn, cat, plans)
            plans = [(ev, [c for c in cands if known.get((c[1]["id"], ev.record_id), True)]) for ev, cands in plans]
            started = self._start_known(conn, cat, plans, known)
            closing: list[dict[str, Any]] = []
            done: list[int] = []
            for ev, cands in plans:
                late = self.late_triggers(cat, ev)
                if not cands and not late:
                    done.append(ev.id)
                    continue
                mine = started.get(ev.id, {})
                writes = bool(late) or any(c[1]["id"] not in mine or c[1].get("actions") for c in cands)
                try:
                    with conn.begin_nested() if writes else nullcontext():
                        if cands:
                            self.handle_event(conn, cat, ev, cands, known, mine, closing)
                        for trigger in late:  # reminders whose time passed before the record was saved
                            trigger.fire_late(self.runner, Scheduler.claim, conn, cat, ev)
                    done.append(ev.id)
                except Exception as e:  # noqa: BLE001 - one bad event must not block the queue
                    log.exception("automation event %s failed", ev.id)
                    gone = [run_id for run_id, _req, _access in mine.values()]
                    if gone:  # logged before its savepoint: out of the log again, the retry logs them anew
                        conn.execute(delete(db.automation_runs).where(db.automation_runs.c.id.in_(gone)))
                        closing[:] = [c for c in closing if c["run_id"] not in gone]
                    attempts = ev.attempts + 1
                    final = attempts >= self.settings.max_attempts
                    delay = backoff_delay(attempts, self.settings.retry_base, self.settings.retry_cap)
                    conn.execute(update(ob).where(ob.c.id == ev.id).values(
                        status="failed" if final else "pending", attempts=attempts, error=str(e)[:2000],
                        next_attempt_at=db.utcnow() + dt.timedelta(seconds=delay)))
            close_runs(conn, closing)
            now = db.utcnow()
            for i in range(0, len(done), 500):
                conn.execute(update(ob).where(ob.c.id.in_(done[i:i + 500])).values(
                    status="done", processed_at=now, attempts=ob.c.attempts + 1, error=None))
            return len(rows)

    @staticmethod
    def _in_record_order(conn: Connection, rows: Sequence[Any]) -> Sequence[Any]:
        """Leave out events of a record with an earlier event that is due but not in this batch.

        Claims go in id order and skip locked rows, so such an earlier event is being handled by another
        worker right now: its record's later events wait for the next round, and every record's events
        run in the order they happened, whichever worker runs them. (SQLite has one writer at a time:
        a worker's batch holds the write lock from its first statement, so no batch runs beside it.)
        """
        if conn.dialect.name == "sqlite":
            return rows
        ob = db.outbox
        ours = {r.id for r in rows}
        first: dict[tuple[int, int], int] = {}
        for r in rows:
            if r.record_id is not None and r.table_id is not None:
                first.setdefault((r.table_id, r.record_id), r.id)
        if not first:
            return rows
        # due, pending and below our last id but not ours: locked by another worker's batch
        others = conn.execute(select(ob.c.id, ob.c.table_id, ob.c.record_id).where(
            ob.c.status == "pending", ob.c.next_attempt_at <= db.utcnow(), ob.c.id < max(ours))).all()
        blocked = {(e.table_id, e.record_id) for e in others
                   if e.id not in ours and e.id < first.get((e.table_id, e.record_id), -1)}
        if not blocked:
            return rows
        return [r for r in rows if (r.table_id, r.record_id) not in blocked]

    @staticmethod
    def late_triggers(cat: Catalog, ev: Any) -> list[Any]:
        """Timed triggers with rules on the event's table, for a record created or changed."""
        if ev.event not in ("record_created", "record_updated") or ev.table_id is None:
            return []
        index = _rule_index(cat)
        return cat.cached(("automation_late", ev.table_id), lambda: [
            tr for tr in trigger_types.all() if tr.timed and index.get((ev.table_id, tr.type))])

    def candidates(self, cat: Catalog, ev: Any) -> list[Candidate]:
        """Rules this event may start, before their conditions are looked at: the event's trigger type
        finds them (by the rule the event names, or by table and type) and matches each rule's trigger."""
        t = cat.tables_by_id.get(ev.table_id) if ev.table_id is not None else None
        trigger = trigger_types.find(ev.event)
        if t is None or trigger is None:
            return []
        payload = ev.payload or {}
        if trigger.addressed:
            found = find_rule(cat, int(payload.get("automation_id") or 0))
            rules = [found] if found is not None and found[1].get("enabled", True) else []
        else:
            rules = _rule_index(cat).get((t.id, ev.event), [])
        out = []
        for app, rule in rules:
            if ev.origin is not None and ev.origin == rule["key"]:
                continue  # a rule's own change never triggers it again
            if not trigger.matches(rule["trigger"], payload):
                continue
            out.append((app, rule))
        return out

    def _prefilter(self, conn: Connection, cat: Catalog,
                   plans: list[tuple[Any, list[Candidate]]]) -> dict[tuple[int, int], bool]:
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
                access = self.runner.access_for(conn, rule)
            except StepFailed:
                continue  # start() logs the failure
            qctx = QueryContext(catalog=cat, dialect=conn.dialect.name, user_id=access.user_id,
                                timezone=access.timezone)
            cond = FilterCompiler(t, qctx).compile(resolve_changed(rule["condition"], None))
            scope = access.scope(cat, t, t.sa, "read")
            ordered = sorted(ids)
            hits: set[int] = set()
            for i in range(0, len(ordered), 500):
                part = ordered[i:i + 500]
                if part[-1] - part[0] < 2 * len(part):  # nearly consecutive ids: one index range, no long IN list
                    q = select(t.sa.c.id).where(t.sa.c.id.between(part[0], part[-1]), cond)
                else:
                    q = select(t.sa.c.id).where(t.sa.c.id.in_(part), cond)
                if scope is not None:
                    q = q.where(scope)
                hits.update(r[0] for r in conn.execute(q))
            for rid in ids:
                known[(rule_id, rid)] = rid in hits
        return known

    def _start_known(self, conn: Connection, cat: Catalog, plans: list[tuple[Any, list[Candidate]]],
                     known: dict[tuple[int, int], bool]) -> dict[int, dict[int, tuple[int, RunRequest, Access]]]:
        """Log, in one multi-row insert, the runs whose start needs no further check: the batch query
        found the condition true (or there is none), no loop or rate limit applies and the rule's user
        is known. Returns ``{event id: {rule id: (run id, request, access)}}``; the rest go through
        ``start`` one by one."""
        pending: list[tuple[int, int, RunRequest, Access]] = []
        for ev, cands in plans:
            if ev.depth >= self.settings.max_depth:
                continue
            for app, rule in cands:
                if rule.get("rate_limit_per_minute"):
                    continue
                if rule.get("condition") and known.get((rule["id"], ev.record_id)) is not True:
                    continue  # a "changed" test, or no record: start() checks it
                try:
                    access = self.runner.access_for(conn, rule)
                except StepFailed:
                    continue  # start() logs the failure
                pending.append((ev.id, rule["id"], self.request(conn, cat, ev, app, rule), access))
        out: dict[int, dict[int, tuple[int, RunRequest, Access]]] = {}
        for i in range(0, len(pending), 500):
            part = pending[i:i + 500]
            ids = conn.execute(insert_runs_statement(), [run_row(req, "running") for _e, _r, req, _a in part]).scalars()
            for (ev_id, rule_id, req, access), run_id in zip(part, ids, strict=True):
                out.setdefault(ev_id, {})[rule_id] = (int(run_id), req, access)
        return out

    def request(self, conn: Connection, cat: Catalog, ev: Any, app: AppDef, rule: dict[str, Any]) -> RunRequest:
        """The run request of one rule for one outbox event."""
        payload = ev.payload or {}
        trigger = trigger_types.find(ev.event)
        changes = trigger.event_changes(payload) if trigger is not None else None
        user = _user_json(conn, ev.user_id, self._users)
        return RunRequest(app=app, rule=rule, trigger=ev.event, table=cat.table_by_id(ev.table_id),
                          record_id=ev.record_id, depth=ev.depth, changes=changes, outbox_id=ev.id,
                          trigger_ctx={"type": ev.event, "rule": rule["key"], "user": user,
                                       "changes": changes or {}, "form": payload.get("form"),
                                       "data": payload.get("data")},
                          deleted_fields=payload.get("fields"))

    def handle_event(self, conn: Connection, cat: Catalog, ev: Any, cands: list[Candidate] | None = None,
                     known: dict[tuple[int, int], bool] | None = None,
                     started: dict[int, tuple[int, RunRequest, Access]] | None = None,
                     closing: list[dict[str, Any]] | None = None) -> int:
        """Run the event's rules in order: those already logged (``started``) are driven at once, the
        others start (checks, condition) here; ``closing`` collects the run logs' final updates."""
        if cands is None:
            cands = self.candidates(cat, ev)
        if not cands:
            return 0
        runs = 0
        for app, rule in cands:
            if started and rule["id"] in started:
                run_id, req, access = started[rule["id"]]
                self.runner.drive(conn, cat, req, run_id, access, {}, None, fresh=True, closing=closing)
                runs += 1
                continue
            req = self.request(conn, cat, ev, app, rule)
            runs += self.runner.start(conn, cat, req, checked=(known or {}).get((rule["id"], ev.record_id)) is True)
        return runs


_USER = select(db.users.c.id, db.users.c.name, db.users.c.email, db.users.c.username).where(
    db.users.c.id == bindparam("uid"))


def _user_json(conn: Connection, user_id: int | None,
               cache: dict[int, dict[str, Any] | None] | None = None) -> dict[str, Any] | None:
    """The acting user as templates see it (``trigger.user``); ``cache`` keeps it for one batch."""
    if user_id is None:
        return None
    if cache is not None and user_id in cache:
        return cache[user_id]
    u = conn.execute(_USER, {"uid": user_id}).first()
    out = {"id": u.id, "name": u.name, "email": u.email, "username": u.username} if u else None
    if cache is not None:
        cache[user_id] = out
    return out


def queue_manual_run(conn: Connection, cat: Catalog, access: Access, app: AppDef, rule: dict[str, Any],
                     record_ids: list[int]) -> int:
    """Queue one ``manual`` event per record for a rule started by hand; returns how many were queued.

    409 unless the rule is an enabled manual rule; 404 (naming the first) for a record the caller may
    not read or that does not exist. The worker runs the rule, as it does for any other event.
    """
    key, trigger = rule["key"], rule["trigger"]["type"]
    if trigger != Manual.type:
        raise Conflict(f"automation '{key}' is not started by hand (its trigger is {trigger})")
    if not rule.get("enabled", True):
        raise Conflict(f"automation '{key}' is disabled")
    t = app.table(rule["trigger"]["table"])
    conds = RecordReader(cat, conn, access).where(t)
    found = {r[0] for r in conn.execute(select(t.sa.c.id).where(t.sa.c.id.in_(record_ids), *conds))}
    missing = [i for i in record_ids if i not in found]
    if missing:
        raise NotFound(f"no record {missing[0]} in '{t.key}'")
    for rid in record_ids:
        emit_event(conn, t, rid, Manual.type, user_id=access.user_id, payload={"automation_id": rule["id"]})
    return len(record_ids)
