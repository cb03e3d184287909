"""Log in and out, who am I, API tokens."""

from __future__ import annotations

from flask import Response, g, request

from formwork import db
from formwork.api.common import ok
from formwork.errors import BadRequest
from formwork.runtime import admin, auth
from formwork.runtime.ratelimit import login_limiter
from formwork.web import (
    SESSION_COOKIE,
    RouteSet,
    client_ip,
    current_access,
    end_session,
    json_body,
    set_session_cookie,
    unit,
)

routes = RouteSet()


@routes.post("/auth/login")
def login() -> Response:
    body = json_body(64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"username\", \"password\"}")
    login_limiter.check(client_ip() or "-")
    with unit(write=True) as (conn, _cat):
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            auth.logout(conn, old)  # session fixation: whatever id came in dies; the login gets a new one
        try:
            token, csrf, u = auth.login(conn, body.get("username"), body.get("password"), client_ip())
        except Exception:
            conn.commit()  # keep the failure count and the audit entry
            raise
        roles = auth.role_keys(conn, u.id)
    resp = ok({"user": auth.user_json(u, roles), "csrf_token": csrf})
    set_session_cookie(resp, token)
    return resp


@routes.post("/auth/logout")
def logout() -> Response:
    access = current_access()
    resp = ok({"ok": True})
    end_session(resp, access)
    return resp


@routes.get("/me")
def me() -> Response:
    access = current_access()
    with unit() as (conn, _):
        u = conn.execute(db.users.select().where(db.users.c.id == access.user_id)).one()
        data = auth.user_json(u, auth.role_keys(conn, u.id))
    data["csrf_token"] = g.get("csrf_token")
    return ok(data)


@routes.patch("/me")
def update_me() -> Response:
    """Change one's own name, email, language or time zone."""
    access = current_access()
    body = json_body(64 * 1024)
    with unit() as (conn, _):
        return ok(admin.update_own_account(conn, access, body, client_ip()))


@routes.post("/auth/password")
def change_password() -> Response:
    """Change one's own password: ``{"current_password", "password"}``; every other session ends."""
    access = current_access()
    body = json_body(64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"current_password\", \"password\"}")
    keep = request.cookies.get(SESSION_COOKIE) if g.get("auth_kind") == "session" else None
    login_limiter.check(client_ip() or "-")
    with unit() as (conn, _):
        n = admin.change_own_password(conn, access, body.get("current_password"), body.get("password"), keep,
                                      client_ip())
    return ok({"sessions_ended": n})


@routes.post("/auth/password-link")
def use_password_link() -> Response:
    """Set a password with a one-time link from an administrator: ``{"token", "password"}`` (no login)."""
    body = json_body(64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"token\", \"password\"}")
    login_limiter.check(client_ip() or "-")
    with unit(write=True) as (conn, _):
        admin.use_password_link(conn, body.get("token"), body.get("password"), client_ip())
    return Response(status=204)


@routes.post("/auth/tokens")
def create_token() -> Response:
    access = current_access()
    body = json_body(64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"name\", \"expires_in_days\"?}")
    with unit() as (conn, _):
        data = auth.create_token(conn, access.user_id or 0, body.get("name"), body.get("expires_in_days"))
        auth.audit(conn, "token_created", user_id=access.user_id, username=access.username,
                   target=f"token:{data['id']}", ip=client_ip())
    return ok(data, 201)


@routes.get("/auth/tokens")
def list_tokens() -> Response:
    access = current_access()
    with unit() as (conn, _):
        return ok({"tokens": auth.list_tokens(conn, access.user_id or 0)})


@routes.delete("/auth/tokens/<token_id>")
def revoke_token(token_id: str) -> Response:
    access = current_access()
    with unit() as (conn, _):
        auth.revoke_token(conn, access.user_id or 0, token_id)
        auth.audit(conn, "token_revoked", user_id=access.user_id, username=access.username,
                   target=f"token:{token_id}", ip=client_ip())
    return Response(status=204)
