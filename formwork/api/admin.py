"""Administration: users, teams, roles, the audit log and "explain".

Only administrators and holders of ``manage_users`` get past ``admin.require_user_admin``; the finer rules
against privilege escalation live in formwork.runtime.admin. There are no routes that change the audit log.
"""

from __future__ import annotations

from flask import Response, request

from formwork.api.common import MAX_JSON, ok
from formwork.runtime import admin
from formwork.web import RouteSet, client_ip, current_access, json_body, unit

routes = RouteSet()


def _args() -> dict[str, str]:
    return {k: request.args[k] for k in request.args}


# --- users --------------------------------------------------------------------------------------------
@routes.get("/admin/users")
def admin_list_users() -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    with unit() as (conn, _):
        return ok(admin.list_users(conn, _args()))


@routes.post("/admin/users")
def admin_create_user() -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    body = json_body(MAX_JSON)
    with unit() as (conn, _):
        return ok(admin.create_user(conn, actor, body, client_ip()), 201)


@routes.get("/admin/users/<user_id>")
def admin_get_user(user_id: str) -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    with unit() as (conn, _):
        return ok(admin.get_user(conn, user_id))


@routes.patch("/admin/users/<user_id>")
def admin_update_user(user_id: str) -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    body = json_body(MAX_JSON)
    with unit() as (conn, _):
        return ok(admin.update_user(conn, actor, user_id, body, client_ip()))


@routes.delete("/admin/users/<user_id>")
def admin_deactivate_user(user_id: str) -> Response:
    actor = current_access()
    with unit() as (conn, _):
        admin.deactivate_user(conn, actor, user_id, client_ip())
    return Response(status=204)


@routes.post("/admin/users/<user_id>/password")
def admin_reset_password(user_id: str) -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    body = json_body(64 * 1024)
    with unit() as (conn, _):
        admin.reset_password(conn, actor, user_id, body, client_ip())
    return Response(status=204)


# --- teams --------------------------------------------------------------------------------------------
@routes.get("/admin/teams")
def admin_list_teams() -> Response:
    admin.require_user_admin(current_access())
    with unit() as (conn, _):
        return ok(admin.list_teams(conn))


@routes.post("/admin/teams")
def admin_create_team() -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    body = json_body(MAX_JSON)
    with unit() as (conn, _):
        return ok(admin.create_team(conn, actor, body, client_ip()), 201)


@routes.get("/admin/teams/<key>")
def admin_get_team(key: str) -> Response:
    admin.require_user_admin(current_access())
    with unit() as (conn, _):
        return ok(admin.get_team(conn, key))


@routes.patch("/admin/teams/<key>")
def admin_update_team(key: str) -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    body = json_body(MAX_JSON)
    with unit() as (conn, _):
        return ok(admin.update_team(conn, actor, key, body, client_ip()))


@routes.delete("/admin/teams/<key>")
def admin_delete_team(key: str) -> Response:
    actor = current_access()
    with unit() as (conn, _):
        admin.delete_team(conn, actor, key, client_ip())
    return Response(status=204)


# --- roles --------------------------------------------------------------------------------------------
@routes.get("/admin/roles")
def admin_list_roles() -> Response:
    admin.require_user_admin(current_access())
    with unit() as (conn, cat):
        return ok(admin.list_roles(conn, cat))


@routes.post("/admin/roles")
def admin_create_role() -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        return ok(admin.create_role(conn, actor, cat, body, client_ip()), 201)


@routes.get("/admin/roles/<key>")
def admin_get_role(key: str) -> Response:
    admin.require_user_admin(current_access())
    with unit() as (conn, cat):
        return ok(admin.get_role(conn, cat, key))


@routes.patch("/admin/roles/<key>")
def admin_update_role(key: str) -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        return ok(admin.update_role(conn, actor, cat, key, body, client_ip()))


@routes.delete("/admin/roles/<key>")
def admin_delete_role(key: str) -> Response:
    actor = current_access()
    with unit() as (conn, _):
        admin.delete_role(conn, actor, key, client_ip())
    return Response(status=204)


# --- audit and explain --------------------------------------------------------------------------------
@routes.get("/admin/audit")
def admin_audit() -> Response:
    admin.require_user_admin(current_access())
    with unit() as (conn, _):
        return ok(admin.list_audit(conn, _args()))


@routes.get("/admin/explain")
def admin_explain() -> Response:
    admin.require_user_admin(current_access())
    with unit() as (conn, cat):
        return ok(admin.explain(conn, cat, _args()))
