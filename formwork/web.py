"""HTTP plumbing shared by the API and the pages: the engine, the catalog, who is asking, one error shape."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
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


@dataclass
class Platform:
    engine: Engine
    catalogs: CatalogCache


def platform() -> Platform:
    return current_app.extensions["formwork"]  # type: ignore[no-any-return]


@contextmanager
def unit(write: bool | None = None) -> Iterator[tuple[Connection, Catalog]]:
    """One transaction for the request's work, with the catalog current as of its start."""
    if write is None:
        write = request.method not in SAFE_METHODS
    p = platform()
    with db.transaction(p.engine, write=write) as conn:
        yield conn, p.catalogs.get(conn)


def json_body(max_bytes: int | None = None) -> Any:
    if max_bytes is not None and (request.content_length or 0) > max_bytes:
        from formwork.errors import TooLarge

        raise TooLarge(f"the body is larger than {max_bytes // 1024 // 1024} MB")
    raw = request.get_data(cache=True)
    if not raw:
        raise BadRequest("the body must be JSON")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


def client_ip() -> str | None:
    return request.remote_addr


def current_access() -> Access:
    """The caller, from a bearer token or the session cookie; raises 401 when there is none.

    A session cookie must name a live server-side session (a value planted before login never is one),
    and unsafe methods under a session need the CSRF token (header or form field). Administrators may send
    ``X-Formwork-View-As: <user id>`` on GET requests and get exactly what that user would get.
    """
    if "access" in g:
        return g.access  # type: ignore[no-any-return]
    header = request.headers.get("Authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    view_as = request.headers.get(VIEW_AS_HEADER)
    p = platform()
    with db.transaction(p.engine, write=False) as conn:
        user_id = None
        if header.startswith("Bearer "):
            user_id = auth.resolve_token(conn, header[7:].strip())
            if user_id is None:
                raise Unauthorized("the API token is invalid, expired or revoked")
            g.auth_kind = "token"
        elif cookie:
            found = auth.resolve_session(conn, cookie)
            if found is not None:
                user_id, csrf = found
                g.auth_kind = "session"
                g.csrf_token = csrf
        if user_id is None:
            raise Unauthorized("log in or send an API token")
        u = conn.execute(db.users.select().where(db.users.c.id == user_id)).first()
        if u is None or not u.active:
            raise Unauthorized("this account is disabled")
        access = Access.for_user(conn, user_id)
        if g.get("auth_kind") == "session" and request.method not in SAFE_METHODS:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
            if not hmac.compare_digest(sent.encode(), g.csrf_token.encode()):
                raise Forbidden("the CSRF token is missing or wrong; reload the page")
        if view_as is not None:
            access = _view_as(conn, access, view_as)
    g.access = access
    return access


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
                409: "conflict", 413: "too_large", 429: "rate_limited"}.get(err.code or 500, "error")
        resp = jsonify({"error": {"code": code, "message": err.description or err.name}})
        resp.status_code = err.code or 500
        return resp

    from formwork.runtime.api import api

    app.register_blueprint(api, url_prefix="/api/v1")
    from formwork.ui import ui

    app.register_blueprint(ui)
