"""My account: profile (name, email, language, time zone), password, personal API tokens; and the public
page where a one-time link from an administrator sets a password."""

from __future__ import annotations

from typing import Any

from flask import Response, g, redirect, request, url_for
from sqlalchemy import select

from formwork import db
from formwork.errors import FormworkError, NotFound, ValidationFailed
from formwork.runtime import admin, auth, passwords
from formwork.runtime.ratelimit import login_limiter
from formwork.ui import i18n
from formwork.ui.admin import password_error, translate_error
from formwork.ui.context import LOCALE_COOKIE, Page, make_page, render
from formwork.ui.timezones import zone_choices
from formwork.web import SESSION_COOKIE, RouteSet, client_ip, current_access, unit

routes = RouteSet()
TOKEN_DAYS = (30, 90, 365)
FLASH = {"saved": "acct_saved", "revoked": "acct_revoked"}


def _account(p: Page, status: int = 200, **ctx: Any) -> Response:
    u = p.conn.execute(select(db.users).where(db.users.c.id == p.access.user_id)).one()
    team = p.conn.execute(select(db.teams.c.name).where(db.teams.c.id == u.team_id)).scalar() if u.team_id else None
    roles = [p.label(r.doc.get("label") or r.key) for r in p.conn.execute(
        select(db.roles).join(db.user_roles, db.user_roles.c.role_id == db.roles.c.id)
        .where(db.user_roles.c.user_id == u.id).order_by(db.roles.c.key))]
    base: dict[str, Any] = {
        "u": u, "team": team, "roles": roles, "zones": zone_choices(p.locale, u.timezone),
        "tokens": auth.list_tokens(p.conn, u.id),
        "token_days": TOKEN_DAYS, "values": {"name": u.name, "email": u.email or "", "locale": u.locale,
                                             "timezone": u.timezone},
        "errors": {}, "pw_errors": {}, "token_errors": {}, "min_password": passwords.MIN_LENGTH,
        "email_copy": _email_copy(p), "flash": None,
    }
    done = request.args.get("done")
    if done in FLASH:
        base["flash"] = p.t(FLASH[done])
    base.update(ctx)
    return render(p, "account.html", status, **base)


def _email_copy(p: Page) -> bool | None:
    """The per-user "email copy of notifications" preference, when this installation has one."""
    from formwork.runtime import notifications

    if p.access.user_id is None:
        return None
    return notifications.email_copy(p.conn, p.access.user_id)


@routes.get("/account")
def account_page() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        return _account(make_page(conn, cat, access))


@routes.post("/account/profile")
def account_profile() -> Response:
    access = current_access()
    f = request.form
    values = {k: f.get(k, "").strip() for k in ("name", "email", "locale", "timezone")}
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        errors: dict[str, str] = {}
        if not values["name"]:
            errors["name"] = p.t("admin_err_required")
        data: dict[str, Any] = {"name": values["name"], "email": values["email"] or None,
                                "locale": i18n.normalize(values["locale"]), "timezone": values["timezone"]}
        if not errors:
            try:
                with conn.begin_nested():
                    admin.update_own_account(conn, access, data, client_ip())
                    if "email_copy" in f or "email_copy_sent" in f:
                        _set_email_copy(conn, access.user_id, f.get("email_copy") == "on")
            except FormworkError as e:
                errors = translate_error(p, e)
        if errors:
            return _account(p, 422, values=values, errors=errors)
    resp = redirect(url_for("ui.account_page", done="saved"))
    resp.set_cookie(LOCALE_COOKIE, data["locale"], max_age=365 * 24 * 3600, samesite="Lax", path="/")
    return resp  # type: ignore[return-value]


def _set_email_copy(conn: Any, user_id: int | None, on: bool) -> None:
    from formwork.runtime import notifications

    if user_id is not None:
        notifications.set_email_copy(conn, user_id, on)


@routes.post("/account/password")
def account_password() -> Response:
    access = current_access()
    f = request.form
    current, new, again = f.get("current_password", ""), f.get("new_password", ""), f.get("repeat_password", "")
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        errors: dict[str, str] = {}
        problem = password_error(p, new, access.username)
        if not current:
            errors["current_password"] = p.t("admin_err_required")
        if problem:
            errors["new_password"] = problem
        elif new != again:
            errors["repeat_password"] = p.t("acct_mismatch")
        elif new == current:
            errors["new_password"] = p.t("acct_same")
        n = 0
        if not errors:
            keep = request.cookies.get(SESSION_COOKIE) if g.get("auth_kind") == "session" else None
            try:
                login_limiter.check(client_ip() or "-")
                with conn.begin_nested():
                    n = admin.change_own_password(conn, access, current, new, keep, client_ip())
            except ValidationFailed as e:
                if "current_password" in (e.details or {}):
                    errors["current_password"] = p.t("acct_wrong_current")
                else:
                    errors = {("new_password" if k == "password" else k): v
                              for k, v in translate_error(p, e).items()}
        if errors:
            return _account(p, 422, pw_errors=errors)
        return _account(p, flash=p.t("acct_password_changed", n=n))


@routes.post("/account/tokens")
def account_token_create() -> Response:
    access = current_access()
    name = request.form.get("token_name", "").strip()
    days = request.form.get("expires", "")
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        if not name or len(name) > 200:
            return _account(p, 422, token_errors={"token_name": p.t("admin_err_required")}, token_name=name)
        expires = int(days) if days.isdigit() and int(days) in TOKEN_DAYS else None
        token = auth.create_token(conn, access.user_id or 0, name, expires)
        auth.audit(conn, "token_created", user_id=access.user_id, username=access.username,
                   target=f"token:{token['id']}", ip=client_ip())
        return _account(p, new_token=token)


@routes.post("/account/tokens/<int:token_id>/revoke")
def account_token_revoke(token_id: int) -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        auth.revoke_token(conn, access.user_id or 0, token_id)
        auth.audit(conn, "token_revoked", user_id=access.user_id, username=access.username,
                   target=f"token:{token_id}", ip=client_ip())
    return redirect(url_for("ui.account_page", done="revoked"))  # type: ignore[return-value]


# --- set a password with a one-time link (no login) ---------------------------------------------------
@routes.get("/set-password/<token>")
def set_password_page(token: str) -> Response:
    with unit() as (conn, _cat):
        row = admin.link_user(conn, token)
    resp = render(None, "account_set_password.html", 200 if row else 404, valid=row is not None,
                  name=row.name if row else "", token=token, errors={}, min_password=passwords.MIN_LENGTH)
    resp.headers["Referrer-Policy"] = "no-referrer"  # the secret is in the address: never pass it on
    resp.headers["Cache-Control"] = "no-store"
    return resp


@routes.post("/set-password/<token>")
def set_password_post(token: str) -> Response:
    from formwork.ui.context import page_locale

    locale = page_locale()
    new, again = request.form.get("new_password", ""), request.form.get("repeat_password", "")
    login_limiter.check(client_ip() or "-")
    with unit(write=True) as (conn, _cat):
        row = admin.link_user(conn, token)
        errors: dict[str, str] = {}
        if row is not None:
            code = passwords.problem(new, row.username)
            if code:
                errors["new_password"] = i18n.translate(locale, f"admin_pw_{code}", n=passwords.MIN_LENGTH)
            elif new != again:
                errors["repeat_password"] = i18n.translate(locale, "acct_mismatch")
            else:
                try:
                    admin.use_password_link(conn, token, new, client_ip())
                except NotFound:
                    row = None
    if row is None or errors:
        resp = render(None, "account_set_password.html", 404 if row is None else 422, valid=row is not None,
                      name=row.name if row else "", token=token, errors=errors, min_password=passwords.MIN_LENGTH)
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp
    resp = render(None, "account_set_password.html", valid=True, done=True, name=row.name, token="", errors={},
                  min_password=passwords.MIN_LENGTH)
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp
