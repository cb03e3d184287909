"""Log in, log out, and the language switch."""

from __future__ import annotations

import hmac
import secrets

from flask import Response, redirect, request, url_for
from itsdangerous import BadSignature
from sqlalchemy import update

from formwork import db
from formwork.errors import BadRequest, Forbidden, RateLimited, Unauthorized
from formwork.runtime import auth
from formwork.ui import i18n
from formwork.ui.context import LOCALE_COOKIE, page_locale, path_of, render, safe_next, signer
from formwork.web import SESSION_COOKIE, RouteSet, client_ip, current_access, end_session, set_session_cookie, unit

routes = RouteSet()


LOGIN_COOKIE = "fw_login"
LOGIN_TOKEN_AGE = 2 * 3600


def _login_form(status: int = 200, **ctx: object) -> Response:
    """The login page, its form token bound to this browser: a random cookie the page sets once, signed into
    the token. A token lifted from another browser (login CSRF: signing the victim into the attacker's
    account) doesn't match the victim's cookie, and a token expires after two hours."""
    binding = request.cookies.get(LOGIN_COOKIE) or ""
    if not (16 <= len(binding) <= 64 and binding.isalnum()):
        binding = secrets.token_hex(16)
    resp = render(None, "login.html", status, form_token=signer("login").dumps({"b": binding}), **ctx)
    resp.set_cookie(LOGIN_COOKIE, binding, max_age=LOGIN_TOKEN_AGE, httponly=True, samesite="Lax", path="/login",
                    secure=request.is_secure)
    return resp


def _form_token_ok() -> bool:
    try:
        data = signer("login").loads(request.form.get("form_token", ""), max_age=LOGIN_TOKEN_AGE)
    except BadSignature:
        return False
    binding = request.cookies.get(LOGIN_COOKIE) or ""
    return isinstance(data, dict) and bool(binding) and hmac.compare_digest(str(data.get("b", "")), binding)


@routes.get("/login")
def login() -> Response:
    return _login_form(next=safe_next(request.args.get("next")))


@routes.post("/login")
def login_post() -> Response:
    from formwork.runtime.ratelimit import login_limiter

    locale = page_locale()
    username = request.form.get("username", "").strip()
    nxt = safe_next(request.form.get("next"))

    def again(key: str, status: int) -> Response:
        return _login_form(status, error=i18n.translate(locale, key), username=username, next=nxt)

    if not _form_token_ok():
        return again("form_expired", 400)
    if not username or not request.form.get("password"):
        return again("login_required", 400)
    try:
        login_limiter.check(client_ip() or "-")
        with unit(write=True) as (conn, _cat):
            old = request.cookies.get(SESSION_COOKIE)
            if old:
                auth.logout(conn, old)
            try:
                token, _csrf, _u = auth.login(conn, username, request.form.get("password"), client_ip())
            except Exception:
                conn.commit()  # keep the failure count and the audit entry
                raise
    except RateLimited:
        return again("locked", 429)
    except (Unauthorized, BadRequest):
        return again("wrong_password", 401)
    resp = redirect(nxt)
    set_session_cookie(resp, token)
    return resp  # type: ignore[return-value]


@routes.post("/logout")
def logout() -> Response:
    access = current_access()
    resp = redirect(url_for("ui.login"))
    end_session(resp, access)
    return resp  # type: ignore[return-value]


@routes.post("/locale")
def set_locale() -> Response:
    """Switch the language: stored on the user when logged in, in a cookie either way."""
    locale = i18n.normalize(request.form.get("locale"))
    if request.cookies.get(SESSION_COOKIE):
        try:
            access = current_access()
        except (Unauthorized, Forbidden):
            access = None  # no session, or no CSRF token: only the cookie changes
        if access is not None and access.user_id is not None:
            with unit(write=True) as (conn, _):
                conn.execute(update(db.users).where(db.users.c.id == access.user_id).values(locale=locale))
    resp = redirect(safe_next(request.form.get("next") or request.referrer and path_of(request.referrer)))
    resp.set_cookie(LOCALE_COOKIE, locale, max_age=365 * 24 * 3600, samesite="Lax", path="/")
    return resp  # type: ignore[return-value]
