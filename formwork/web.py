"""HTTP plumbing shared by the API and the pages: the engine, the catalog, who is asking, one error shape.

No route lives here and no route module is imported: ``create_app`` wires the blueprints.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
class Known:
    """A token's or session's answer, cached in one process while ``auth_version`` stays the same."""

    auth_version: int
    valid_until: dt.datetime | None  # the token's expiry or the session's idle limit
    kind: str
    csrf: str | None
    user: tuple[Any, ...]  # the Access fields: user id, username, is_admin, timezone, locale
    roles: list[dict[str, Any]]
    team_user_ids: list[int]
    team_ids: list[int]

    def access(self) -> Access:
        uid, username, is_admin, timezone, locale = self.user
        return Access(user_id=uid, username=username, is_admin=is_admin, timezone=timezone, locale=locale,
                      roles=list(self.roles), team_user_ids=list(self.team_user_ids), team_ids=list(self.team_ids))


class AuthCache:
    """Per-process answers for tokens and sessions, keyed by the secret's digest (never the secret).

    An answer is used only while the database's ``auth_version`` equals the one it was computed at: the
    triggers of migration 0008 bump it on every write to users, teams, roles, role membership, tokens and
    sessions, and every request reads it (in the one query that also reads the schema version), so a
    revoked token, a deactivated user or a changed role stops working in every process on its next
    request. Only positive answers are kept; any doubt goes to the database.
    """

    MAX = 10_000

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], Known] = {}
        self._lock = threading.Lock()
        self._newest = 0
        self._names: dict[int, Any] = {}
        self._names_version: int | None = None

    def get(self, key: tuple[str, str], version: int | None, now: dt.datetime) -> Known | None:
        if version is None:
            return None
        if version < self._newest:  # the counter went back (a restored database): forget everything
            self.clear()
            return None
        k = self._known.get(key)
        if k is None or k.auth_version != version or (k.valid_until is not None and now >= k.valid_until):
            return None
        return k

    def put(self, key: tuple[str, str], known: Known) -> None:
        with self._lock:
            if known.auth_version > self._newest:
                self._newest = known.auth_version
                # answers of older versions can never be used again
                self._known = {k: v for k, v in self._known.items() if v.auth_version == known.auth_version}
            elif known.auth_version < self._newest:
                return
            if len(self._known) >= self.MAX:
                self._known.clear()
            self._known[key] = known

    def clear(self) -> None:
        with self._lock:
            self._known = {}
            self._newest = 0
            self._names = {}

    def user_names(self, version: int | None) -> dict[int, Any] | None:
        """User id → display name, shared by this process's requests at one auth version (a rename bumps it);
        None when this request's version is not the newest (it then reads names itself)."""
        if version is None or version < self._newest:
            return None
        with self._lock:
            if self._names_version != version or len(self._names) > 100_000:
                self._names = {}
                self._names_version = version
            return self._names


@dataclass
class Platform:
    engine: Engine
    catalogs: CatalogCache
    auth: AuthCache = field(default_factory=AuthCache)


def platform() -> Platform:
    return current_app.extensions["formwork"]


# both versions in one constant statement (no user input; sent to the driver as is, nothing to compile)
_VERSIONS = "SELECT name, value FROM fw_state WHERE name IN ('schema_version', 'auth_version')"
assert db.state.name == "fw_state" and (db.SCHEMA_VERSION, db.AUTH_VERSION) == ("schema_version", "auth_version")


class _Pending:
    """The request's transaction opened by the authentication step, handed to the first ``unit``."""

    def __init__(self, engine: Engine, write: bool) -> None:
        self.conn = engine.connect()
        self.conn.info["write"] = write
        self.write = write
        self.tx: Any = None
        try:
            self.tx = self.conn.begin()
            versions = {r[0]: r[1] for r in self.conn.exec_driver_sql(_VERSIONS)}
        except BaseException:
            self.close()
            raise
        self.schema_version = int(versions.get(db.SCHEMA_VERSION) or 0)
        av = versions.get(db.AUTH_VERSION)
        self.auth_version: int | None = None if av is None else int(av)

    def close(self) -> None:
        try:
            if self.tx is not None and self.tx.is_active:
                self.tx.rollback()  # nothing was written in it: the work happens in ``unit``
        finally:
            self.conn.info["write"] = False
            self.conn.close()


def _reuses_write_transaction(engine: Engine) -> bool:
    """Whether an unsafe request may keep the authentication transaction for its work.

    PostgreSQL takes no lock at BEGIN, so it may. SQLite may not: its write transactions take the write
    lock at BEGIN (IMMEDIATE), and holding it from authentication on would block any code in the handler
    that opens its own transaction (jobs, imports) — so there a changing request authenticates in a short
    read transaction of one query and works in a second one.
    """
    return engine.dialect.name != "sqlite"


@contextmanager
def unit(write: bool | None = None) -> Iterator[tuple[Connection, Catalog]]:
    """One transaction for the request's work, with the catalog current as of its start.

    The first unit of an authenticated request continues the transaction the authentication step opened
    (one transaction per request) when that one can do the work; otherwise it opens its own.
    """
    if write is None:
        write = request.method not in SAFE_METHODS
    p = platform()
    units: list[Connection] = g.setdefault("_fw_units", [])
    pending: _Pending | None = g.pop("_fw_pending", None)
    if pending is not None:
        if pending.write or not write:
            units.append(pending.conn)
            committed = False
            try:
                with pending.tx:
                    yield pending.conn, p.catalogs.get(pending.conn, version=pending.schema_version)
                committed = True
            finally:
                units.pop()
                db.run_after_commit(pending.conn, committed)
                pending.close()
            return
        pending.close()
    with db.transaction(p.engine, write=write) as conn:
        units.append(conn)
        try:
            yield conn, p.catalogs.get(conn)
        finally:
            units.pop()


def _close_pending(_exc: BaseException | None = None) -> None:
    pending: _Pending | None = g.pop("_fw_pending", None)
    if pending is not None:
        pending.close()


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
    if header.startswith("Bearer "):
        kind, secret = "token", header[7:].strip()
    elif cookie:
        kind, secret = "session", cookie
    else:
        raise Unauthorized("log in or send an API token")
    p = platform()
    unsafe = request.method not in SAFE_METHODS
    keep = not unsafe or _reuses_write_transaction(p.engine)
    pending = _Pending(p.engine, write=unsafe and keep)
    try:
        conn = pending.conn
        key = (kind, auth.sha256(secret))
        now = db.utcnow()
        known = p.auth.get(key, pending.auth_version, now)
        if known is None:
            known = _resolve(conn, kind, key[1], pending.auth_version, now)
            if pending.auth_version is not None:
                p.auth.put(key, known)
        g.auth_version = pending.auth_version
        g.auth_kind = kind
        if known.csrf is not None:
            g.csrf_token = known.csrf
        access = known.access()
        if kind == "session" and unsafe:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
            if not hmac.compare_digest(sent.encode(), (known.csrf or "").encode()):
                raise Forbidden("the CSRF token is missing or wrong; reload the page")
        if view_as is not None:
            access = _view_as(conn, access, view_as)
    except BaseException:
        pending.close()
        raise
    if keep:
        _close_pending()
        g._fw_pending = pending
    else:
        pending.close()
    g.access = access
    return access


def _resolve(conn: Connection, kind: str, digest: str, version: int | None, now: dt.datetime) -> Known:
    """The answer for a token or session from the database (3 queries); 401 for none or a disabled user."""
    csrf: str | None = None
    if kind == "token":
        u = _token_user(conn, digest, now)
        until = u.expires_at
    else:
        found = _session_user(conn, digest, now)
        if found is None:
            raise Unauthorized("log in or send an API token")
        u, csrf = found
        until = u.last_seen + auth.SESSION_IDLE
    if u.id is None or not u.active:
        raise Unauthorized("this account is disabled")
    a = Access.for_row(conn, u)
    return Known(auth_version=version or 0, valid_until=until, kind=kind, csrf=csrf,
                 user=(a.user_id, a.username, a.is_admin, a.timezone, a.locale), roles=a.roles,
                 team_user_ids=a.team_user_ids, team_ids=a.team_ids)


# what a cached answer holds of the user: the UPDATE trigger on fw_user (migration 0008) must name every
# column read here, or a change to it would not reach other processes' caches
_USER_COLUMNS = (db.users.c.id, db.users.c.username, db.users.c.active, db.users.c.is_admin, db.users.c.timezone,
                 db.users.c.locale, db.users.c.team_id)


_TOKEN_USER = (select(db.api_tokens.c.token_hash, db.api_tokens.c.revoked_at, db.api_tokens.c.expires_at,
                      *_USER_COLUMNS)
               .outerjoin(db.users, db.users.c.id == db.api_tokens.c.user_id)
               .where(db.api_tokens.c.token_hash == bindparam("digest")))
_SESSION_USER = (select(db.sessions.c.last_seen, db.sessions.c.csrf_token, *_USER_COLUMNS)
                 .outerjoin(db.users, db.users.c.id == db.sessions.c.user_id)
                 .where(db.sessions.c.id == bindparam("digest")))


def _token_user(conn: Connection, digest: str, now: dt.datetime) -> Any:
    """The token's user row in one query (token joined to its user); 401 for an unknown, revoked or expired one.

    A user row whose ``id`` is None means the token's user is gone (reported as a disabled account).
    """
    row = conn.execute(_TOKEN_USER, {"digest": digest}).first()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now) \
            or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorized("the API token is invalid, expired or revoked")
    return row


def _session_user(conn: Connection, digest: str, now: dt.datetime) -> tuple[Any, str] | None:
    """The live session's user row and CSRF token in one query; None for an unknown or idle session."""
    row = conn.execute(_SESSION_USER, {"digest": digest}).first()
    if row is None or row.last_seen < now - auth.SESSION_IDLE:
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
    app.teardown_request(_close_pending)

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
