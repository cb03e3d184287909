"""The browser UI (htmx pages): the ``ui`` blueprint, built from the page modules' route sets.

Each page module declares ``routes = RouteSet()``; importing one registers nothing. ``create_app``'s route
table lists them and :func:`make_blueprint` builds the blueprint with the hooks every page
shares (security headers, refusing NUL characters, the error pages, the htmx and Jinja set-up).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, g, make_response, redirect, render_template, request, url_for
from jinja2 import pass_context

from formwork.errors import FormworkError, RateLimited, Unauthorized
from formwork.ui import engine_messages, i18n
from formwork.ui.context import htmx, page_locale
from formwork.ui.inputs import input_value
from formwork.web import RouteSet


def make_blueprint(route_sets: Iterable[RouteSet]) -> Blueprint:
    """A fresh ``ui`` blueprint holding the given route sets (endpoints stay ``ui.<view name>``)."""
    ui = Blueprint("ui", __name__)
    ui.record_once(_setup)
    ui.after_request(security_headers)
    ui.before_request(refuse_nul)
    ui.register_error_handler(Unauthorized, to_login)
    ui.register_error_handler(FormworkError, domain_error)
    ui.register_error_handler(RateLimited, rate_limited)
    for routes in route_sets:
        routes.register(ui)
    return ui


@pass_context
def say_in_context(context: Any, message: Any) -> str:
    """``{{ msg|say }}``: an engine message in the page's language (formwork.ui.engine_messages)."""
    return engine_messages.say(message, str(context.get("locale") or "en"))


def _setup(state: Any) -> None:
    htmx.init_app(state.app)
    state.app.jinja_env.add_extension("jinja2.ext.do")
    state.app.jinja_env.globals["input_value"] = input_value
    state.app.jinja_env.globals["csp_nonce"] = csp_nonce
    state.app.jinja_env.globals["has_endpoint"] = lambda name: name in state.app.view_functions
    state.app.jinja_env.filters["say"] = say_in_context


def csp_nonce() -> str:
    """This response's script nonce (the policy allows our own files and scripts carrying it, nothing else)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return str(g.csp_nonce)


def content_security_policy() -> str:
    """Scripts only from this origin (or carrying this response's nonce): no inline handlers, no eval, no
    plugins, no other sites; forms post only here; pages can't be framed. Styles may be inline (charts and
    htmx set them), which runs no code."""
    return ("default-src 'self'; "
            f"script-src 'self' 'nonce-{csp_nonce()}'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def security_headers(resp: Response) -> Response:
    """Pages may not be framed (clickjacking), run scripts from anywhere else, be sniffed into another type,
    or leak paths to other sites."""
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Content-Security-Policy", content_security_policy())
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    return resp


def refuse_nul() -> Response | None:
    """A NUL character can't be stored or compared as text (PostgreSQL refuses it): a 400, not a 500."""
    if any("\x00" in k or "\x00" in v for src in (request.args, request.form) for k, v in src.items(multi=True)):
        return make_response("the request holds a NUL character", 400)
    return None


def to_login(err: Unauthorized) -> Response:
    """Not logged in: to the login page, coming back here after (htmx requests redirect the whole page)."""
    target = url_for("ui.login", next=request.full_path if request.method == "GET" else None)
    if htmx:
        resp = Response(status=204)
        resp.headers["HX-Redirect"] = target
        return resp
    return redirect(target)  # type: ignore[return-value]


def domain_error(err: FormworkError) -> Response:
    """A refused request: a toast for htmx requests, an error page otherwise."""
    locale = page_locale(g.get("access"))
    if htmx:
        resp = make_response(render_template(
            "_toast.html", message=err.message, kind="error",
            _=lambda key, **kw: i18n.translate(locale, key, **kw)), err.status)
        resp.headers["HX-Retarget"] = "#toast"
        resp.headers["HX-Reswap"] = "innerHTML"
        return resp
    title = {403: "forbidden", 404: "not_found"}.get(err.status, "error")
    return make_response(render_template(
        "error.html", _=lambda key, **kw: i18n.translate(locale, key, **kw), locale=locale,
        locales=i18n.LOCALES, title=i18n.translate(locale, title), message=err.message, status=err.status,
        csrf_token=g.get("csrf_token") or "", access=None), err.status)


def rate_limited(err: RateLimited) -> Response:
    locale = page_locale(g.get("access"))
    return make_response(render_template(
        "error.html", _=lambda key, **kw: i18n.translate(locale, key, **kw), locale=locale, locales=i18n.LOCALES,
        title=i18n.translate(locale, "error"), message=i18n.translate(locale, "rate_limited"), status=429,
        csrf_token="", access=None), 429)


__all__ = ["make_blueprint"]
