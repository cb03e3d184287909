"""Automations at work: run logs, dry runs, manual runs, incoming webhooks; notifications and approvals.

Thin views over formwork.automation (runs, intake, hooks, approvals): nothing here runs a rule's
actions; web requests only queue outbox events or resume parked runs, the worker does the rest.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from formwork.api import URL_PREFIX
from formwork.api.common import bool_arg, ok, require_meta_right, secret, visible_app
from formwork.automation import approvals, hooks, intake, runs
from formwork.automation.engine import AutomationEngine
from formwork.automation.settings import Settings
from formwork.errors import BadRequest, Conflict, NotFound
from formwork.metadata.catalog import Catalog
from formwork.runtime import notifications
from formwork.runtime.permissions import Access
from formwork.runtime.ratelimit import SlidingWindow
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
        return ok({"runs": runs.run_log(conn, cat, rule, status, limit)})


@routes.post("/meta/apps/<app_key>/automations/<key>/runs/<int:run_id>/retry")
def automation_retry(app_key: str, key: str, run_id: int) -> Response:
    """A failed run again, as a new run the worker starts (202); 409 for a run that did not fail."""
    access = current_access()
    require_meta_right(access, "automation")
    with unit(write=True) as (conn, cat):
        _app, rule = _rule(cat, access, app_key, key)
        try:
            new_id = runs.retry_run(conn, rule, run_id)
        except LookupError:
            raise NotFound(f"no run {run_id} of automation '{key}'") from None
        except runs.RetryRefused as e:
            raise Conflict(str(e)) from None
    return ok({"run_id": new_id, "retry_of": run_id, "status": "waiting"}, 202)


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
        except runs.StepFailed as e:
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
        queued = intake.queue_manual_run(conn, cat, access, app, rule, ids)
    return ok({"queued": queued}, 202)


# --- incoming webhooks ------------------------------------------------------------------------------
@routes.post("/meta/apps/<app_key>/automations/<key>/webhook-token")
def automation_hook_token(app_key: str, key: str) -> Response:
    access = current_access()
    require_meta_right(access, "automation")
    with unit() as (conn, cat):
        _app, rule = _rule(cat, access, app_key, key)
        token = hooks.create_token(conn, access, rule)
    return ok({"token": token, "url": f"{URL_PREFIX}/hooks/{token}"}, 201)


@routes.post("/hooks/<token>")
def incoming_hook(token: str) -> Response:
    hashed = hooks.token_hash(token)
    hook_limiter.check(hashed)
    body = json_body(1024 * 1024, strict_type=False)
    if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise BadRequest("send {\"fields\": {...}}")
    with unit(write=True) as (conn, cat):
        record_id, created = hooks.receive(_engine(), conn, cat, hashed, body, secret())
    return ok({"id": record_id, "created": created}, 202)


# --- notifications ----------------------------------------------------------------------------------
@routes.get("/notifications")
def list_notifications() -> Response:
    access = current_access()
    unread_only = bool_arg("unread")
    with unit() as (conn, _cat):
        rows = notifications.list_for(conn, access.user_id, unread_only=unread_only)
        unread = notifications.unread_count(conn, access.user_id)
    return ok({"unread": unread, "notifications": [notifications.to_json(r, access.locale) for r in rows]})


@routes.post("/notifications/read-all")
def read_all_notifications() -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        n = notifications.mark_all_read(conn, access.user_id)
    return ok({"marked": n})


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
        return ok({"approvals": approvals.record_approvals(conn, cat, t, record_id, viewer=access)})


@routes.post("/approvals/<int:approval_id>/decide")
def decide_approval(approval_id: int) -> Response:
    access = current_access()
    body = json_body(64 * 1024)
    if not isinstance(body, dict) or set(body) - {"decision", "comment"}:
        raise BadRequest("send {\"decision\": \"approve|reject|return\", \"comment\"?}")
    with unit() as (conn, cat):
        status = approvals.decide(conn, cat, access, approval_id, body.get("decision"), body.get("comment"))
    return ok({"id": approval_id, "status": status})
