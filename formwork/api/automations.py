"""Automations at work: run logs, dry runs, manual runs, incoming webhooks; notifications and approvals.

Nothing here runs a rule's actions: web requests only queue outbox events or resume parked runs
(formwork.automation.approvals); the worker does the rest.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Response, current_app, request
from sqlalchemy import delete, insert, select

from formwork import db
from formwork.api.common import bool_arg, ok, require_meta_right, visible_app
from formwork.automation import approvals
from formwork.automation.engine import AutomationEngine
from formwork.automation.intake import emit_event
from formwork.automation.runs import StepFailed, find_rule
from formwork.automation.settings import Settings
from formwork.errors import BadRequest, Conflict, NotFound
from formwork.metadata.catalog import Catalog
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime import auth, notifications
from formwork.runtime.permissions import Access
from formwork.runtime.ratelimit import SlidingWindow
from formwork.runtime.records import RecordReader, RecordService
from formwork.web import RouteSet, current_access, json_body, platform, unit

routes = RouteSet()
hook_limiter = SlidingWindow(limit=120, seconds=60)
MAX_MANUAL = 1000


def _engine() -> AutomationEngine:
    p = platform()
    return AutomationEngine(p.engine, p.catalogs, Settings.from_config(current_app.config), "web")


def _rule(cat: Catalog, access: Access, app_key: str, key: str) -> tuple[Any, dict[str, Any]]:
    app = visible_app(cat, access, app_key)
    for rule in app.automations:
        if rule["key"] == key:
            return app, rule
    raise NotFound(f"no automation '{key}' in app '{app_key}'")


def _ids(value: Any, name: str, limit: int) -> list[int]:
    if not isinstance(value, list) or not value or len(value) > limit:
        raise BadRequest(f"'{name}' must be a list of 1 to {limit} record ids")
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**62 for v in value):
        raise BadRequest(f"'{name}' must hold record ids (positive whole numbers)")
    return list(dict.fromkeys(value))


# --- run log ----------------------------------------------------------------------------------------
@routes.get("/meta/apps/<app_key>/automations/<key>/runs")
def automation_runs(app_key: str, key: str) -> Response:
    access = current_access()
    require_meta_right(access, "automation")
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
@routes.post("/meta/apps/<app_key>/automations/<key>/test")
def automation_test(app_key: str, key: str) -> Response:
    access = current_access()
    require_meta_right(access, "automation")
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
@routes.post("/meta/apps/<app_key>/automations/<key>/run")
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
@routes.post("/meta/apps/<app_key>/automations/<key>/webhook-token")
def automation_hook_token(app_key: str, key: str) -> Response:
    access = current_access()
    require_meta_right(access, "automation")
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


@routes.post("/hooks/<token>")
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
@routes.get("/notifications")
def list_notifications() -> Response:
    access = current_access()
    unread_only = bool_arg("unread")
    with unit() as (conn, _cat):
        rows = notifications.list_for(conn, access.user_id, unread_only=unread_only)
        unread = notifications.unread_count(conn, access.user_id)
    return ok({"unread": unread, "notifications": [notifications.to_json(r) for r in rows]})


@routes.post("/notifications/<int:notification_id>/read")
def read_notification(notification_id: int) -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        notifications.mark_read(conn, access.user_id, notification_id)
    return ok({"ok": True})


# --- approvals --------------------------------------------------------------------------------------
@routes.get("/approvals")
def list_approvals() -> Response:
    access = current_access()
    mine = bool_arg("mine")
    status = request.args.get("status", "pending")
    with unit() as (conn, cat):
        return ok({"approvals": approvals.list_approvals(conn, cat, access, status, mine)})


@routes.get("/data/<app_key>/<table_key>/<int:record_id>/approvals")
def record_approvals(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        RecordReader(cat, conn, access).get(t, record_id, fields=[t.fields[0].key] if t.fields else None)
        return ok({"approvals": approvals.record_approvals(conn, cat, t, record_id)})


@routes.post("/approvals/<int:approval_id>/decide")
def decide_approval(approval_id: int) -> Response:
    access = current_access()
    body = json_body(64 * 1024)
    if not isinstance(body, dict) or set(body) - {"decision", "comment"}:
        raise BadRequest("send {\"decision\": \"approve|reject|return\", \"comment\"?}")
    decision, comment = body.get("decision"), body.get("comment")
    approvals.check_decision(decision, comment)
    with unit() as (conn, cat):
        status = approvals.decide(conn, cat, access, approval_id, decision, comment)
    return ok({"id": approval_id, "status": status})
