"""Administration: users, teams, roles, the audit log and "explain".

Only administrators and holders of ``manage_users`` get past ``admin.require_user_admin``; the finer rules
against privilege escalation live in formwork.runtime.admin. There are no routes that change the audit log.
"""

from __future__ import annotations

from flask import Response, request, url_for

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
        out = admin.create_user(conn, actor, body, client_ip())
    if "password_link" in out:
        out["password_link"]["url"] = url_for("ui.set_password_page", token=out["password_link"]["token"],
                                              _external=True)
    return ok(out, 201)


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


# --- sessions and set-password links ------------------------------------------------------------------
@routes.post("/admin/users/<user_id>/signout")
def admin_sign_out_user(user_id: str) -> Response:
    actor = current_access()
    admin.require_user_admin(actor)
    with unit() as (conn, _):
        return ok({"sessions_ended": admin.sign_out_everywhere(conn, actor, user_id, client_ip())})


@routes.post("/admin/users/<user_id>/password-link")
def admin_password_link(user_id: str) -> Response:
    """A one-time set-password link for the user (shown once: hand it to them; 72 hours)."""
    actor = current_access()
    admin.require_user_admin(actor)
    with unit() as (conn, _):
        link = admin.create_password_link(conn, actor, user_id, client_ip())
    return ok({**link, "url": url_for("ui.set_password_page", token=link["token"], _external=True)}, 201)
