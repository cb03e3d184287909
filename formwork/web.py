"""HTTP plumbing shared by the API and the pages: the engine, the catalog, who is asking, one error shape.

No route lives here and no route module is imported: ``create_app`` wires the blueprints.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection, Engine
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from formwork import db
from formwork.errors import BadRequest, Forbidden, FormworkError, NotFound, Unauthorized
from formwork.metadata.catalog import Catalog, CatalogCache
from formwork.runtime import auth
from formwork.runtime.permissions import Access

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SESSION_COOKIE = "fw_session"
VIEW_AS_HEADER = "X-Formwork-View-As"


class RouteSet:
    """The routes one module declares, without touching any blueprint.

    A route module builds ``routes = RouteSet()`` and decorates its views with ``@routes.get(...)``;
    importing it registers nothing. ``create_app`` adds every module's set to its blueprint from one
    explicit table, so every URL is findable in one place. The endpoint is the view's name (or
    ``endpoint=``), so ``url_for("api.login")`` keeps meaning what it did.
    """

    def __init__(self) -> None:
        self.rules: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []

    def route(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            self.add(rule, view, **options)
            return view

        return decorator

    def add(self, rule: str, view: Callable[..., Any], endpoint: str | None = None, **options: Any) -> None:
        self.rules.append((rule, endpoint or view.__name__, view, options))

    def get(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, methods=["GET"], **options)

    def post(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, methods=["POST"], **options)

    def put(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, methods=["PUT"], **options)

    def patch(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, methods=["PATCH"], **options)

    def delete(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route(rule, methods=["DELETE"], **options)

    def register(self, bp: Any) -> None:
        for rule, endpoint, view, options in self.rules:
            bp.add_url_rule(rule, endpoint, view, **options)


@dataclass
class Platform:
    engine: Engine
    catalogs: CatalogCache


def platform() -> Platform:
    return current_app.extensions["formwork"]


@contextmanager
def unit(write: bool | None = None) -> Iterator[tuple[Connection, Catalog]]:
    """One transaction for the request's work, with the catalog current as of its start."""
    if write is None:
        write = request.method not in SAFE_METHODS
    p = platform()
    with db.transaction(p.engine, write=write) as conn:
        yield conn, p.catalogs.get(conn)


def json_body(max_bytes: int | None = None, *, strict_type: bool = True) -> Any:
    """The request's JSON body, checked for what no column can hold.

    A JSON body must say so (``Content-Type: application/json``): a cross-site form or ``text/plain``
    post can't carry a browser's cookies into a JSON endpoint. Incoming webhooks, authenticated by their
    secret URL and sent by systems that don't always label their bodies, pass ``strict_type=False``.
    """
    if max_bytes is not None and (request.content_length or 0) > max_bytes:
        from formwork.errors import TooLarge

        raise TooLarge(f"the body is larger than {max_bytes // 1024 // 1024} MB")
    raw = request.get_data(cache=True)
    if not raw:
        raise BadRequest("the body must be JSON")
    if strict_type and not request.is_json:
        from formwork.errors import UnsupportedMediaType

        raise UnsupportedMediaType("send the body as JSON with the header Content-Type: application/json")
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"malformed JSON: {str(e)[:200]}") from None
    check_input(value)
    return value


MAX_INPUT_INT = 2**62


def check_input(value: Any, what: str = "the body") -> None:
    """Refuse (400) what no column can hold, before it reaches a query: NUL characters (PostgreSQL
    text can't), lone surrogates (not encodable as UTF-8) and integers beyond ±2**62 (64-bit columns)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            _check_text(v, what)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise BadRequest(f"{what} holds NaN or Infinity, which are not numbers JSON allows")
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if not -MAX_INPUT_INT <= v <= MAX_INPUT_INT:
                raise BadRequest(f"{what} holds a whole number too large to store (limit ±2**62)")
        elif isinstance(v, dict):
            for k, item in v.items():
                _check_text(k, what)
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise BadRequest(f"{what} holds a NUL character (\\u0000), which text can't contain")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} holds an unpaired surrogate (\\ud800-\\udfff), which is not valid text") \
            from None


SESSION_MAX_AGE = 7 * 24 * 3600


def set_session_cookie(resp: Any, token: str) -> None:
    """The session cookie a login hands out, the same for the API and the pages."""
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=request.is_secure,
                    max_age=SESSION_MAX_AGE, path="/")


def end_session(resp: Any, access: Access) -> None:
    """Log out: the caller's session row dies (when it came with the cookie) and the cookie is cleared."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and g.get("auth_kind") == "session":
        with unit(write=True) as (conn, _):
            auth.logout(conn, cookie)
            auth.audit(conn, "logout", user_id=access.user_id, username=access.username, ip=client_ip())
    resp.delete_cookie(SESSION_COOKIE, path="/")


def client_ip() -> str | None:
    return request.remote_addr


def current_access() -> Access:
    """The caller, from a bearer token or the session cookie; raises 401 when there is none.

    A session cookie must name a live server-side session (a value planted before login never is one),
    and unsafe methods under a session need the CSRF token (header or form field). Administrators may send
    ``X-Formwork-View-As: <user id>`` on GET requests and get exactly what that user would get.
    """
    if "access" in g:
        return g.access
    header = request.headers.get("Authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    view_as = request.headers.get(VIEW_AS_HEADER)
    p = platform()
    with db.transaction(p.engine, write=False) as conn:
        u = None
        if header.startswith("Bearer "):
            u = _token_user(conn, header[7:].strip())
            g.auth_kind = "token"
        elif cookie:
            found = _session_user(conn, cookie)
            if found is not None:
                u, csrf = found
                g.auth_kind = "session"
                g.csrf_token = csrf
        if u is None:
            raise Unauthorized("log in or send an API token")
        if u.id is None or not u.active:
            raise Unauthorized("this account is disabled")
        access = Access.for_row(conn, u)
        if g.get("auth_kind") == "session" and request.method not in SAFE_METHODS:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
            if not hmac.compare_digest(sent.encode(), g.csrf_token.encode()):
                raise Forbidden("the CSRF token is missing or wrong; reload the page")
        if view_as is not None:
            access = _view_as(conn, access, view_as)
    g.access = access
    return access


_USER_COLUMNS = (db.users.c.id, db.users.c.username, db.users.c.active, db.users.c.is_admin, db.users.c.timezone,
                 db.users.c.locale, db.users.c.team_id)


_TOKEN_USER = (select(db.api_tokens.c.token_hash, db.api_tokens.c.revoked_at, db.api_tokens.c.expires_at,
                      *_USER_COLUMNS)
               .outerjoin(db.users, db.users.c.id == db.api_tokens.c.user_id)
               .where(db.api_tokens.c.token_hash == bindparam("digest")))
_SESSION_USER = (select(db.sessions.c.last_seen, db.sessions.c.csrf_token, *_USER_COLUMNS)
                 .outerjoin(db.users, db.users.c.id == db.sessions.c.user_id)
                 .where(db.sessions.c.id == bindparam("digest")))


def _token_user(conn: Connection, token: str) -> Any:
    """The token's user row in one query (token joined to its user); 401 for an unknown, revoked or expired one.

    A user row whose ``id`` is None means the token's user is gone (reported as a disabled account).
    """
    digest = auth.sha256(token)
    row = conn.execute(_TOKEN_USER, {"digest": digest}).first()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at < db.utcnow()) \
            or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorized("the API token is invalid, expired or revoked")
    return row


def _session_user(conn: Connection, cookie: str) -> tuple[Any, str] | None:
    """The live session's user row and CSRF token in one query; None for an unknown or idle session."""
    row = conn.execute(_SESSION_USER, {"digest": auth.sha256(cookie)}).first()
    if row is None or row.last_seen < db.utcnow() - auth.SESSION_IDLE:
        return None
    return row, row.csrf_token


def _view_as(conn: Connection, real: Access, value: str) -> Access:
    if request.method not in ("GET", "HEAD"):
        raise BadRequest(f"{VIEW_AS_HEADER} is honoured on GET requests only")
    if not real.is_admin:
        raise Forbidden("only administrators may view as another user")
    value = value.strip()
    if not value.isdigit() or len(value) > 12:
        raise BadRequest(f"{VIEW_AS_HEADER} must be a user id")
    if conn.execute(db.users.select().where(db.users.c.id == int(value))).first() is None:
        raise NotFound(f"no user {value}")
    g.real_access = real
    return Access.for_user(conn, int(value))


def error_response(err: FormworkError) -> Response:
    resp = jsonify(err.to_dict())
    resp.status_code = err.status
    return resp


def init_web(app: Flask) -> None:
    """The engine (migrated when AUTO_MIGRATE), the catalog cache and the one error shape; no routes."""
    from formwork.migrations import upgrade

    engine = db.make_engine(app.config["DATABASE_URL"])
    if app.config.get("AUTO_MIGRATE", True):
        upgrade(engine)
    app.extensions["formwork"] = Platform(engine, CatalogCache(engine))

    @app.errorhandler(FormworkError)
    def _domain_error(err: FormworkError) -> Response:
        return error_response(err)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(err: RequestEntityTooLarge) -> Response:
        from formwork.errors import TooLarge

        return error_response(TooLarge("the request body is too large"))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return err
        code = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "bad_request",
                409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                429: "rate_limited"}.get(err.code or 500, "error")
        resp = jsonify({"error": {"code": code, "message": err.description or err.name}})
        resp.status_code = err.code or 500
        return resp
