"""Intake: outbox events (record changes, form submissions, manual runs, webhooks) become rule runs.

Writers queue events with ``emit_event`` in their own transaction, so a rollback fires nothing. The
worker claims due events (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the single ``BEGIN IMMEDIATE``
writer on SQLite) and runs every matching rule **in the same transaction** that marks the event done,
so the database effects of a rule happen exactly once. A failing event is retried with backoff.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.delivery import backoff_delay
from formwork.automation.rules import changed_fields, changed_test, resolve_changed
from formwork.automation.runs import RuleRunner, RunRequest, StepFailed, find_rule
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.metadata.fieldtypes.base import QueryContext
from formwork.metadata.query import FilterCompiler

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


def trigger_filters(trig: dict[str, Any], changes: dict[str, Any]) -> bool:
    """An update trigger's ``fields`` and ``changes`` (from/to) filters against the event's changes."""
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


class Intake:
    """Claims outbox events and starts the runs they trigger."""

    def __init__(self, runner: RuleRunner) -> None:
        self.runner = runner
        self.settings = runner.settings

    def process_events(self, limit: int = 100) -> int:
        """Claim up to ``limit`` due outbox events and run their rules; one transaction for the batch.

        Conditions without "changed" tests are evaluated for the whole batch in one query per rule;
        each event that starts runs gets its own savepoint, so one failing event does not undo others.
        """
        ob = db.outbox
        self.runner.reset_caches()
        with db.transaction(self.runner.engine) as conn:
            rows = conn.execute(select(ob).where(ob.c.status == "pending", ob.c.next_attempt_at <= db.utcnow())
                                .order_by(ob.c.id).limit(limit).with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            cat = self.runner.catalogs.get(conn)
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

    def candidates(self, cat: Catalog, ev: Any) -> list[Candidate]:
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
            if ev.event == "record_updated" and not trigger_filters(trig, payload.get("changes") or {}):
                continue
            if ev.event == "form_submitted" and trig.get("view") and trig["view"] != payload.get("form"):
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
                q = select(t.sa.c.id).where(t.sa.c.id.in_(ordered[i:i + 500]), cond)
                if scope is not None:
                    q = q.where(scope)
                hits.update(r[0] for r in conn.execute(q))
            for rid in ids:
                known[(rule_id, rid)] = rid in hits
        return known

    def handle_event(self, conn: Connection, cat: Catalog, ev: Any, cands: list[Candidate] | None = None,
                     known: dict[tuple[int, int], bool] | None = None) -> int:
        if cands is None:
            cands = self.candidates(cat, ev)
        if not cands:
            return 0
        t = cat.table_by_id(ev.table_id)
        payload = ev.payload or {}
        changes = payload.get("changes") if ev.event == "record_updated" else None
        user = _user_json(conn, ev.user_id)
        runs = 0
        for app, rule in cands:
            req = RunRequest(app=app, rule=rule, trigger=ev.event, table=t, record_id=ev.record_id, depth=ev.depth,
                             changes=changes, outbox_id=ev.id,
                             trigger_ctx={"type": ev.event, "rule": rule["key"], "user": user,
                                          "changes": changes or {}, "form": payload.get("form"),
                                          "data": payload.get("data")},
                             deleted_fields=payload.get("fields"))
            runs += self.runner.start(conn, cat, req, checked=(known or {}).get((rule["id"], ev.record_id)) is True)
        return runs


def _user_json(conn: Connection, user_id: int | None) -> dict[str, Any] | None:
    if user_id is None:
        return None
    u = conn.execute(select(db.users.c.id, db.users.c.name, db.users.c.email, db.users.c.username)
                     .where(db.users.c.id == user_id)).first()
    return {"id": u.id, "name": u.name, "email": u.email, "username": u.username} if u else None
