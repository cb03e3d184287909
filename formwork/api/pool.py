"""The public pool (公海): where the caller stands, claim, release, assign (rules in runtime.pool); and the
record buttons tables declare (runtime.buttons), the pool's among them."""

from __future__ import annotations

from flask import Response, request

from formwork.api.common import ok
from formwork.automation import intake
from formwork.errors import BadRequest, NotFound
from formwork.runtime import buttons, pool
from formwork.runtime.records import RecordReader
from formwork.web import RouteSet, current_access, json_body, unit

routes = RouteSet()


@routes.get("/data/<app_key>/<table_key>/pool")
def pool_status(app_key: str, table_key: str) -> Response:
    """The table's pool settings and where the caller stands: how many they own, their limit."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.status(conn, cat, access, cat.table(app_key, table_key)))


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/claim")
def claim_record(app_key: str, table_key: str, record_id: int) -> Response:
    """Take an unowned record from the pool (limit per role, cooldown for the previous owner)."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.claim(conn, cat, access, cat.table(app_key, table_key), record_id))


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/release")
def release_record(app_key: str, table_key: str, record_id: int) -> Response:
    """Give a record back to the pool."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.release(conn, cat, access, cat.table(app_key, table_key), record_id))


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/assign")
def assign_record(app_key: str, table_key: str, record_id: int) -> Response:
    """Hand a pool record to a member of a team the caller manages: ``{"user": id}``."""
    access = current_access()
    body = json_body(1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"user\": <user id>}")
    with unit() as (conn, cat):
        return ok(pool.assign(conn, cat, access, cat.table(app_key, table_key), record_id, body.get("user")))


# --- record buttons (declared in the table document; the pool's are built in) ---------------------------
@routes.get("/data/<app_key>/<table_key>/<int:record_id>/buttons")
def record_buttons(app_key: str, table_key: str, record_id: int) -> Response:
    """The buttons the caller sees on this record now: ``{"buttons": [{"key", "label", "action"|"automation"}]}``."""
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        RecordReader(cat, conn, access).get(t, record_id, fields=[])
        shown = buttons.visible(conn, cat, access, t, record_id)
        return ok({"buttons": [{"key": b.key, "label": b.label, "action": b.action, "automation": b.automation}
                               for b in shown]})


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/buttons/<key>")
def press_button(app_key: str, table_key: str, record_id: int, key: str) -> Response:
    """Press a record button: a built-in runs now (the record as it is after), an automation is queued (202)."""
    access = current_access()
    body = json_body(1024) if request.get_data(cache=True) else None
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        b = buttons.find(t, key)
        result = buttons.press(conn, cat, access, t, record_id, key,
                               (body or {}).get("user") if isinstance(body, dict) else None)
        if b is not None and b.get("automation"):
            app = cat.app(app_key)
            rule = next((r for r in app.automations if r.get("key") == b["automation"]), None)
            if rule is None:
                raise NotFound(f"no automation '{b['automation']}'")
            intake.queue_manual_run(conn, cat, access, app, rule, [record_id])
            return ok({"queued": 1, "automation": b["automation"]}, 202)
        return ok(result)
