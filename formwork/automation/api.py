"""Automation routes added to the /api/v1 blueprint (see formwork.runtime.api).

Run logs, dry runs, manual runs, incoming webhooks, notifications and approvals.  Nothing here runs
a rule's actions: web requests only queue outbox events or resume parked runs; the worker does the rest.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Response, current_app, request
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.engine import AutomationEngine
from formwork.automation.intake import emit_event
from formwork.automation.runs import StepFailed, find_rule, path_text
from formwork.automation.settings import Settings
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import Catalog
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime import auth
from formwork.runtime.api import _visible_app, api, bool_arg, ok
from formwork.runtime.permissions import Access
from formwork.runtime.ratelimit import SlidingWindow
from formwork.runtime.records import RecordReader, RecordService
from formwork.web import current_access, json_body, platform, unit

hook_limiter = SlidingWindow(limit=120, seconds=60)
MAX_MANUAL = 1000
DECISIONS = {"approve": "approved", "reject": "rejected", "return": "returned"}


def _engine() -> AutomationEngine:
    p = platform()
    return AutomationEngine(p.engine, p.catalogs, Settings.from_config(current_app.config), "web")


def _rule(cat: Catalog, access: Access, app_key: str, key: str) -> tuple[Any, dict[str, Any]]:
    app = _visible_app(cat, access, app_key)
    for rule in app.automations:
        if rule["key"] == key:
            return app, rule
    raise NotFound(f"no automation '{key}' in app '{app_key}'")


def _require_manage(access: Access) -> None:
    if not access.can_manage_automations():
        raise Forbidden("you may not manage automations")


def _ids(value: Any, name: str, limit: int) -> list[int]:
    if not isinstance(value, list) or not value or len(value) > limit:
        raise BadRequest(f"'{name}' must be a list of 1 to {limit} record ids")
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**62 for v in value):
        raise BadRequest(f"'{name}' must hold record ids (positive whole numbers)")
    return list(dict.fromkeys(value))


# --- run log ----------------------------------------------------------------------------------------
@api.get("/meta/apps/<app_key>/automations/<key>/runs")
def automation_runs(app_key: str, key: str) -> Response:
    access = current_access()
    _require_manage(access)
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise BadRequest("limit must be a whole number") from None
    if not 1 <= limit <= 500:
        raise BadRequest("limit must be between 1 and 500")
    status = request.args.get("status")
    with unit() as (conn, cat):
        _app, rule = _rule(cat, access, app_key, key)
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
        return ok({"runs": [{
            "id": x.id, "status": x.status, "trigger": x.trigger, "table": tables.get(x.table_id),
            "record_id": x.record_id, "depth": x.depth, "firing_key": x.firing_key,
            "started_at": iso_utc(x.started_at), "finished_at": iso_utc(x.finished_at) if x.finished_at else None,
            "resume_at": iso_utc(x.resume_at) if x.resume_at else None, "duration_ms": x.duration_ms,
            "error": x.error, "steps": steps.get(x.id, [])} for x in runs]})


# --- dry run ----------------------------------------------------------------------------------------
@api.post("/meta/apps/<app_key>/automations/<key>/test")
def automation_test(app_key: str, key: str) -> Response:
    access = current_access()
    _require_manage(access)
    body = json_body(1024 * 1024) if request.get_data() else {}
    if not isinstance(body, dict) or set(body) - {"record_ids", "limit"}:
        raise BadRequest("send {\"record_ids\"?: [...], \"limit\"?: n}")
    limit = body.get("limit", 20)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise BadRequest("limit must be a whole number from 1 to 100")
    ids = _ids(body["record_ids"], "record_ids", 100) if "record_ids" in body else None
    with unit() as (conn, cat):
        app, rule = _rule(cat, access, app_key, key)
        try:
            result = _engine().dry_run(conn, cat, app, rule, ids, limit, viewer=access)
        except StepFailed as e:
            raise Conflict(str(e)) from None
        finally:
            conn.rollback()
    return ok(result)


# --- manual trigger ---------------------------------------------------------------------------------
@api.post("/meta/apps/<app_key>/automations/<key>/run")
def automation_run(app_key: str, key: str) -> Response:
    access = current_access()
    body = json_body(1024 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"record_ids\": [...]}")
    ids = _ids(body.get("record_ids"), "record_ids", MAX_MANUAL)
    with unit() as (conn, cat):
        app, rule = _rule(cat, access, app_key, key)
        if rule["trigger"]["type"] != "manual":
            raise Conflict(f"automation '{key}' is not started by hand (its trigger is {rule['trigger']['type']})")
        if not rule.get("enabled", True):
            raise Conflict(f"automation '{key}' is disabled")
        t = app.table(rule["trigger"]["table"])
        reader = RecordReader(cat, conn, access)
        conds = reader.where(t)
        found = {r[0] for r in conn.execute(select(t.sa.c.id).where(t.sa.c.id.in_(ids), *conds))}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"no record {missing[0]} in '{t.key}'")
        for rid in ids:
            emit_event(conn, t, rid, "manual", user_id=access.user_id, payload={"automation_id": rule["id"]})
    return ok({"queued": len(ids)}, 202)


# --- incoming webhooks ------------------------------------------------------------------------------
@api.post("/meta/apps/<app_key>/automations/<key>/webhook-token")
def automation_hook_token(app_key: str, key: str) -> Response:
    access = current_access()
    _require_manage(access)
    with unit() as (conn, cat):
        _app, rule = _rule(cat, access, app_key, key)
        if rule["trigger"]["type"] != "webhook":
            raise Conflict(f"automation '{key}' is not started by an incoming webhook")
        token = "fwh_" + secrets.token_urlsafe(32)
        conn.execute(delete(db.hook_tokens).where(db.hook_tokens.c.automation_id == rule["id"]))
        conn.execute(insert(db.hook_tokens).values(automation_id=rule["id"], token_hash=auth.sha256(token),
                                                   prefix=token[:12], created_at=db.utcnow()))
        auth.audit(conn, "hook_token_created", user_id=access.user_id, username=access.username,
                   target=f"automation:{rule['id']}")
    return ok({"token": token, "url": f"/api/v1/hooks/{token}"}, 201)


@api.post("/hooks/<token>")
def incoming_hook(token: str) -> Response:
    if len(token) > 200:
        raise NotFound("no such hook")
    hashed = auth.sha256(token)
    hook_limiter.check(hashed)
    body = json_body(1024 * 1024)
    if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise BadRequest("send {\"fields\": {...}}")
    with unit(write=True) as (conn, cat):
        aid = conn.execute(select(db.hook_tokens.c.automation_id).where(db.hook_tokens.c.token_hash == hashed)).scalar()
        found = find_rule(cat, aid) if aid is not None else None
        if found is None or found[1]["trigger"]["type"] != "webhook" or not found[1].get("enabled", True):
            raise NotFound("no such hook")
        app, rule = found
        t = app.table(rule["trigger"]["table"])
        try:
            access = _engine().access_for(conn, rule)
        except StepFailed as e:
            raise Conflict(str(e)) from None
        svc = RecordService(cat, conn, access, secret=str(current_app.config["SECRET_KEY"]).encode())
        fields = body["fields"]
        match = rule["trigger"].get("match_field")
        existing = None
        if match and fields.get(match) is not None:
            conds = svc.reader.where(t, {"field": match, "op": "eq", "value": fields[match]})
            existing = conn.execute(select(t.sa.c.id).where(*conds).order_by(t.sa.c.id).limit(1)).scalar()
        rec = svc.update(t, existing, fields) if existing else svc.create(t, fields)
        emit_event(conn, t, rec["id"], "webhook", user_id=access.user_id,
                   payload={"automation_id": rule["id"], "data": body})
    return ok({"id": rec["id"], "created": existing is None}, 202)


# --- notifications ----------------------------------------------------------------------------------
@api.get("/notifications")
def list_notifications() -> Response:
    access = current_access()
    n = db.notifications
    q = select(n).where(n.c.user_id == access.user_id)
    if bool_arg("unread"):
        q = q.where(n.c.read_at.is_(None))
    with unit() as (conn, _cat):
        rows = conn.execute(q.order_by(n.c.id.desc()).limit(200)).all()
        unread = conn.execute(select(func.count()).select_from(n).where(n.c.user_id == access.user_id,
                                                                         n.c.read_at.is_(None))).scalar()
    return ok({"unread": unread, "notifications": [
        {"id": r.id, "kind": r.kind, "title": r.title, "body": r.body, "link": r.link,
         "created_at": iso_utc(r.created_at), "read_at": iso_utc(r.read_at) if r.read_at else None} for r in rows]})


@api.post("/notifications/<int:notification_id>/read")
def read_notification(notification_id: int) -> Response:
    access = current_access()
    n = db.notifications
    with unit() as (conn, _cat):
        res = conn.execute(update(n).where(n.c.id == notification_id, n.c.user_id == access.user_id)
                           .values(read_at=func.coalesce(n.c.read_at, db.utcnow())))
        if res.rowcount != 1:
            raise NotFound("no such notification")
    return ok({"ok": True})


# --- approvals --------------------------------------------------------------------------------------
def _approval_json(conn: Connection, cat: Catalog, rows: list[Any]) -> list[dict[str, Any]]:
    if not rows:
        return []
    d, u = db.approval_decisions, db.users
    trail: dict[int, list[dict[str, Any]]] = {}
    for x in conn.execute(select(d, u.c.name).join(u, u.c.id == d.c.user_id, isouter=True)
                          .where(d.c.approval_id.in_([r.id for r in rows])).order_by(d.c.id)):
        trail.setdefault(x.approval_id, []).append({"user": {"id": x.user_id, "name": x.name},
                                                    "decision": x.decision, "comment": x.comment,
                                                    "at": iso_utc(x.at)})
    ids = {i for r in rows for i in r.approvers}
    names = dict(conn.execute(select(u.c.id, u.c.name).where(u.c.id.in_(ids))).all()) if ids else {}
    out = []
    for r in rows:
        t = cat.tables_by_id.get(r.table_id)
        out.append({"id": r.id, "title": r.title, "status": r.status, "mode": r.mode,
                    "app": cat.apps_by_id[r.app_id].key if r.app_id in cat.apps_by_id else None,
                    "table": t.key if t else None, "record_id": r.record_id,
                    "approvers": [{"id": i, "name": names.get(i)} for i in r.approvers],
                    "decisions": trail.get(r.id, []), "created_at": iso_utc(r.created_at),
                    "decided_at": iso_utc(r.decided_at) if r.decided_at else None})
    return out


@api.get("/approvals")
def list_approvals() -> Response:
    access = current_access()
    mine = bool_arg("mine") or not access.is_admin
    status = request.args.get("status", "pending")
    if status not in ("pending", "approved", "rejected", "returned", "all"):
        raise BadRequest("status must be pending, approved, rejected, returned or all")
    a = db.approvals
    q = select(a)
    if status != "all":
        q = q.where(a.c.status == status)
    with unit() as (conn, cat):
        rows = conn.execute(q.order_by(a.c.id.desc()).limit(2000)).all()
        if mine:
            decided = {x[0] for x in conn.execute(select(db.approval_decisions.c.approval_id).where(
                db.approval_decisions.c.user_id == access.user_id))}
            rows = [r for r in rows if access.user_id in r.approvers
                    and (status != "pending" or r.id not in decided)]
        return ok({"approvals": _approval_json(conn, cat, rows[:200])})


@api.get("/data/<app_key>/<table_key>/<int:record_id>/approvals")
def record_approvals(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        RecordReader(cat, conn, access).get(t, record_id, fields=[t.fields[0].key] if t.fields else None)
        a = db.approvals
        rows = conn.execute(select(a).where(a.c.table_id == t.id, a.c.record_id == record_id)
                            .order_by(a.c.id)).all()
        return ok({"approvals": _approval_json(conn, cat, rows)})


def _action_at(actions: list[dict[str, Any]], path: list[Any]) -> dict[str, Any]:
    node: Any = actions
    for part in path:
        node = node[part]
    return node  # type: ignore[no-any-return]


@api.post("/approvals/<int:approval_id>/decide")
def decide_approval(approval_id: int) -> Response:
    access = current_access()
    body = json_body(64 * 1024)
    if not isinstance(body, dict) or set(body) - {"decision", "comment"}:
        raise BadRequest("send {\"decision\": \"approve|reject|return\", \"comment\"?}")
    decision = body.get("decision")
    comment = body.get("comment")
    details: dict[str, list[str]] = {}
    if decision not in DECISIONS:
        details["decision"] = ["must be approve, reject or return"]
    if comment is not None and (not isinstance(comment, str) or len(comment) > 5000):
        details["comment"] = ["must be text of at most 5000 characters"]
    if decision in ("reject", "return") and not (isinstance(comment, str) and comment.strip()):
        details["comment"] = ["is required to reject or return"]
    if details:
        raise ValidationFailed.from_details(details)
    a, d = db.approvals, db.approval_decisions
    with unit() as (conn, cat):
        q = select(a).where(a.c.id == approval_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None or (access.user_id not in row.approvers and not access.is_admin):
            raise NotFound("no such approval")
        if access.user_id not in row.approvers:
            raise Forbidden("you are not an approver of this request")
        if row.status != "pending":
            raise Conflict(f"this approval is already {row.status}")
        if conn.execute(select(d.c.id).where(d.c.approval_id == row.id, d.c.user_id == access.user_id)).first():
            raise Conflict("you have already decided")
        conn.execute(insert(d).values(approval_id=row.id, user_id=access.user_id, decision=decision,
                                      comment=comment, at=db.utcnow()))
        outcome = None
        if decision != "approve":
            outcome = DECISIONS[decision]
        else:
            approved = {x[0] for x in conn.execute(select(d.c.user_id).where(d.c.approval_id == row.id,
                                                                             d.c.decision == "approve"))}
            if row.mode == "any" or set(row.approvers) <= approved:
                outcome = "approved"
        if outcome is not None:
            conn.execute(update(a).where(a.c.id == row.id).values(status=outcome, decided_at=db.utcnow()))
            _continue_run(conn, cat, row, outcome)
        status = outcome or "pending"
    return ok({"id": approval_id, "status": status})


def _continue_run(conn: Connection, cat: Catalog, row: Any, outcome: str) -> None:
    """Hand the parked run back to the worker on the branch the decision chose."""
    r, d = db.automation_runs, db.approval_decisions
    run = conn.execute(select(r).where(r.c.id == row.run_id)).first()
    if run is None or run.status != "awaiting_approval":
        return
    path = [int(p) if p.isdigit() else p for p in row.path.split(".")]
    found = find_rule(cat, row.automation_id)
    state = dict(run.state or {})
    comments = [{"user_id": x.user_id, "decision": x.decision, "comment": x.comment}
                for x in conn.execute(select(d).where(d.c.approval_id == row.id).order_by(d.c.id))]
    branch = {"approved": "on_approve", "rejected": "on_reject", "returned": "on_return"}[outcome]
    key = path_text(path)
    if found is not None:
        try:
            action = _action_at(found[1].get("actions") or [], path)
            key = action.get("key") or key
            if branch == "on_return" and "on_return" not in action:
                branch = "on_reject"
        except (IndexError, KeyError, TypeError):
            pass
    outputs = dict(state.get("outputs") or {})
    outputs[key] = {"approval_id": row.id, "status": outcome, "decisions": comments}
    state.update(outputs=outputs, path=[*path, branch, 0])
    conn.execute(update(r).where(r.c.id == run.id).values(status="waiting", resume_at=db.utcnow(), state=state))
