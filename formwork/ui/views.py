"""Pages for the browser: server-rendered Jinja, htmx for partial updates.

Every page goes through the same services and permission checks as the API (RecordReader, RecordService,
MetadataService, Access); the session cookie and CSRF token are the API's. State of a grid (view,
search, filter, sort) lives in the URL, so every fragment can be re-requested and every page bookmarked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_htmx import HTMX  # type: ignore[import-untyped]
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    FormworkError,
    NotFound,
    PreconditionFailed,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from formwork.metadata.catalog import AppDef, Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import BOOL, MULTI
from formwork.metadata.fieldtypes.link import is_many
from formwork.runtime import auth
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, RecordService
from formwork.ui import i18n
from formwork.ui.render import CellRenderer, choice_map, local_datetime
from formwork.web import SESSION_COOKIE, client_ip, current_access, unit

ui = Blueprint("ui", __name__)
htmx = HTMX()
LOCALE_COOKIE = "fw_locale"
PAGE_SIZE = 50
COUNT_CAP = 1000
KANBAN_CARDS = 50
NO_INPUT_TYPES = ("attachment",)


@ui.record_once
def _setup(state: Any) -> None:
    htmx.init_app(state.app)
    state.app.jinja_env.add_extension("jinja2.ext.do")
    state.app.jinja_env.globals["input_value"] = input_value


# --- request context --------------------------------------------------------------------------------
def secret() -> bytes:
    return str(current_app.config["SECRET_KEY"]).encode()


def signer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.config["SECRET_KEY"]), salt=salt)


def page_locale(access: Access | None = None) -> str:
    if access is not None and access.user_id is not None:
        return i18n.normalize(access.locale)
    return i18n.normalize(request.cookies.get(LOCALE_COOKIE) or request.accept_languages.best_match(
        ["en", "zh-CN", "zh"]) or "en")


@dataclass
class Page:
    """Who is looking, in which language, through which transaction and catalog."""

    access: Access
    conn: Connection
    cat: Catalog
    locale: str
    tz: str
    extra: dict[str, Any] = field(default_factory=dict)

    def t(self, key: str, **kw: Any) -> str:
        return i18n.translate(self.locale, key, **kw)

    def label(self, value: Any) -> str:
        return label_text(value, self.locale)

    def reader(self) -> RecordReader:
        return RecordReader(self.cat, self.conn, self.access, secret=secret())

    def service(self) -> RecordService:
        return RecordService(self.cat, self.conn, self.access, secret=secret())

    def renderer(self, app_key: str) -> CellRenderer:
        return CellRenderer(self.cat, self.locale, self.tz, app_key)


def make_page(conn: Connection, cat: Catalog, access: Access) -> Page:
    return Page(access, conn, cat, page_locale(access), access.timezone or "UTC")


def render(p: Page | None, template: str, status: int = 200, **ctx: Any) -> Response:
    locale = p.locale if p is not None else page_locale()
    base: dict[str, Any] = {
        "_": lambda key, **kw: i18n.translate(locale, key, **kw),
        "L": lambda value: label_text(value, locale),
        "locale": locale, "locales": i18n.LOCALES,
        "csrf_token": g.get("csrf_token") or "",
        "access": p.access if p is not None else None,
        "htmx_request": bool(htmx),
    }
    if p is not None and p.access.user_id is not None and not bool(htmx) and not template.startswith("_"):
        base.update(chrome(p))
    base.update(ctx)
    resp = make_response(render_template(template, **base), status)
    return resp


def chrome(p: Page) -> dict[str, Any]:
    """What the page frame shows: the user's name, the unread notification count, the apps menu."""
    u = p.conn.execute(select(db.users.c.name).where(db.users.c.id == p.access.user_id)).first()
    n = db.notifications
    unread = p.conn.execute(select(func.count()).select_from(n).where(
        n.c.user_id == p.access.user_id, n.c.read_at.is_(None))).scalar() or 0
    return {"user_name": u.name if u else p.access.username, "unread": int(unread),
            "can_build": p.access.can_build(), "nav_apps": visible_apps(p)}


def visible_apps(p: Page) -> list[AppDef]:
    a = p.access
    return [app for app in p.cat.apps
            if a.is_admin or a.can_build() or any(a.can_see_table(p.cat, t) for t in app.tables)]


def visible_app(p: Page, app_key: str) -> AppDef:
    app = p.cat.app(app_key)
    if app not in visible_apps(p):
        raise NotFound(f"no app '{app_key}'")
    return app


def visible_tables(p: Page, app: AppDef) -> list[TableDef]:
    return [t for t in app.tables if p.access.can_see_table(p.cat, t)]


def visible_table(p: Page, app_key: str, table_key: str) -> TableDef:
    app = visible_app(p, app_key)
    t = app.table(table_key)
    if not p.access.can_see_table(p.cat, t):
        raise NotFound(f"no table '{table_key}' in app '{app_key}'")
    return t


def shown_fields(p: Page, t: TableDef, keys: list[str] | None = None) -> list[FieldDef]:
    """Fields this viewer may see (on at least some rows), in the view's order when it names them."""
    vis = p.access.field_visibility(p.cat, t, t.sa)
    fields = [t.fields_by_key[k] for k in keys if k in t.fields_by_key] if keys else list(t.fields)
    return [f for f in fields if vis.get(f.id, True) is not False]


def writable(p: Page, t: TableDef, f: FieldDef) -> bool:
    return not f.ftype.read_only and f.type not in NO_INPUT_TYPES and p.access.field_writable(p.cat, t, f) \
        and not (f.type == "link" and f.options.get("side") == "reverse" and not is_many(f))


def safe_next(value: str | None) -> str:
    """Where to go after login: a path on this site only. Browsers drop tabs and newlines from URLs and
    read a backslash as a slash, so ``/\t/evil.com`` would become ``//evil.com``: anything with control
    characters, whitespace, backslashes, a scheme or a host goes to the home page instead."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F or c.isspace() for c in value):
        return "/"
    try:
        parts = urlsplit(value)
    except ValueError:
        return "/"
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return "/"
    return value


@ui.after_request
def _security_headers(resp: Response) -> Response:
    """Pages may not be framed (clickjacking), sniffed into another type, or leak paths to other sites."""
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    return resp


@ui.before_request
def _refuse_nul() -> Response | None:
    """A NUL character can't be stored or compared as text (PostgreSQL refuses it): a 400, not a 500."""
    if any("\x00" in k or "\x00" in v for src in (request.args, request.form) for k, v in src.items(multi=True)):
        return make_response("the request holds a NUL character", 400)
    return None


# --- errors -----------------------------------------------------------------------------------------
@ui.errorhandler(Unauthorized)
def _to_login(err: Unauthorized) -> Response:
    target = url_for("ui.login", next=request.full_path if request.method == "GET" else None)
    if htmx:
        resp = Response(status=204)
        resp.headers["HX-Redirect"] = target
        return resp
    return redirect(target)  # type: ignore[return-value]


@ui.errorhandler(FormworkError)
def _domain_error(err: FormworkError) -> Response:
    locale = page_locale(g.get("access"))
    if htmx:
        resp = make_response(render_template("_toast.html", message=err.message, kind="error"), err.status)
        resp.headers["HX-Retarget"] = "#toast"
        resp.headers["HX-Reswap"] = "innerHTML"
        return resp
    title = {403: "forbidden", 404: "not_found"}.get(err.status, "error")
    return make_response(render_template(
        "error.html", _=lambda key, **kw: i18n.translate(locale, key, **kw), locale=locale,
        locales=i18n.LOCALES, title=i18n.translate(locale, title), message=err.message, status=err.status,
        csrf_token=g.get("csrf_token") or "", access=None), err.status)


# --- login ------------------------------------------------------------------------------------------
@ui.get("/login")
def login() -> Response:
    return render(None, "login.html", next=safe_next(request.args.get("next")),
                  form_token=signer("login").dumps("login"))


@ui.post("/login")
def login_post() -> Response:
    from formwork.runtime.ratelimit import login_limiter

    locale = page_locale()
    username = request.form.get("username", "").strip()
    nxt = safe_next(request.form.get("next"))

    def again(key: str, status: int) -> Response:
        return render(None, "login.html", status, error=i18n.translate(locale, key), username=username, next=nxt,
                      form_token=signer("login").dumps("login"))

    try:
        signer("login").loads(request.form.get("form_token", ""), max_age=24 * 3600)
    except BadSignature:
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
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=request.is_secure,
                    max_age=7 * 24 * 3600, path="/")
    return resp  # type: ignore[return-value]


@ui.post("/logout")
def logout() -> Response:
    access = current_access()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and g.get("auth_kind") == "session":
        with unit(write=True) as (conn, _):
            auth.logout(conn, cookie)
            auth.audit(conn, "logout", user_id=access.user_id, username=access.username, ip=client_ip())
    resp = redirect(url_for("ui.login"))
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp  # type: ignore[return-value]


@ui.post("/locale")
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
    resp = redirect(safe_next(request.form.get("next") or request.referrer and _path_of(request.referrer)))
    resp.set_cookie(LOCALE_COOKIE, locale, max_age=365 * 24 * 3600, samesite="Lax", path="/")
    return resp  # type: ignore[return-value]


def _path_of(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# --- apps -------------------------------------------------------------------------------------------
@ui.get("/")
def home() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        apps = []
        for app in visible_apps(p):
            tables = visible_tables(p, app)
            apps.append({"app": app, "tables": tables})
        return render(p, "home.html", apps=apps)


@ui.get("/apps/<app_key>")
def app_page(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        tables = visible_tables(p, app)
        if tables:
            return table_page_response(p, app, tables[0])
        return render(p, "app_empty.html", app=app, tables=[])


# --- grid state -------------------------------------------------------------------------------------
@dataclass
class GridState:
    """A grid's query as URL parameters: view, search, sort and quick-filter conditions."""

    view: str | None = None
    search: str = ""
    sort: str = ""
    conds: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def from_request(cls) -> GridState:
        a = request.values
        conds = [(f, o, v) for f, o, v in zip(a.getlist("ff"), a.getlist("fo"), a.getlist("fv"), strict=False)
                 if f and o]
        return cls(view=a.get("view") or None, search=(a.get("search") or "").strip()[:200],
                   sort=(a.get("sort") or "").strip()[:300], conds=conds[:20])

    def params(self, **over: Any) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        values = {"view": self.view, "search": self.search, "sort": self.sort, **over}
        for k in ("view", "search", "sort", "cursor", "month"):
            if values.get(k):
                items.append((k, str(values[k])))
        for f, o, v in self.conds:
            items += [("ff", f), ("fo", o), ("fv", v)]
        return items

    def qs(self, **over: Any) -> str:
        return urlencode(self.params(**over))

    def tree(self, p: Page, t: TableDef) -> dict[str, Any] | None:
        if not self.conds:
            return None
        out = []
        for key, op, raw in self.conds:
            f = t.fields_by_key.get(key.split(".")[0])
            if f is None:
                raise BadRequest(f"filter: no field '{key[:100]}'")
            node: dict[str, Any] = {"field": key, "op": op}
            if op not in ("is_empty", "is_not_empty"):
                node["value"] = filter_value(f.ftype.value_kind(f, p.cat), op, raw)
            out.append(node)
        return {"and": out}


def filter_value(kind: str, op: str, raw: str) -> Any:
    raw = raw.strip()
    if op in ("in", "not_in", "has_any", "has_all", "has_none", "between"):
        parts = [x.strip() for x in raw.replace("，", ",").split(",") if x.strip()]
        return parts
    if kind == BOOL:
        return raw.lower() in ("true", "1", "yes", "on", "是")
    if kind == MULTI and op == "eq":
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw


# --- table pages ------------------------------------------------------------------------------------
def current_view(t: TableDef, key: str | None) -> dict[str, Any] | None:
    if key:
        return t.view(key)
    for v in t.views:
        if v.get("type") != "form":
            return v
    return None


@ui.get("/apps/<app_key>/<table_key>")
def table_page(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        return table_page_response(p, app, t)


def table_page_response(p: Page, app: AppDef, t: TableDef) -> Response:
    state = GridState.from_request()
    view = current_view(t, state.view)
    if view is not None and state.view is None:
        state.view = view["key"]
    vtype = view.get("type", "grid") if view else "grid"
    if vtype == "form":
        return redirect(url_for("ui.form_page", app_key=app.key, table_key=t.key,  # type: ignore[return-value]
                                view_key=view["key"]))  # type: ignore[index]
    ctx: dict[str, Any] = {"app": app, "t": t, "view": view, "vtype": vtype, "state": state,
                           "tables": visible_tables(p, app), "can_create": p.access.can(p.cat, t, "create"),
                           "dashboards": app.dashboards, "filter_fields": filter_fields(p, t)}
    if vtype == "kanban":
        ctx.update(kanban_data(p, app, t, view or {}, state))
        template = "_kanban.html" if htmx.target == "board" else "table.html"
    elif vtype == "calendar":
        ctx.update(calendar_data(p, app, t, view or {}, state))
        template = "_calendar.html" if htmx.target == "calendar" else "table.html"
    elif vtype == "gallery":
        ctx.update(gallery_data(p, app, t, view or {}, state))
        template = "_gallery.html" if htmx.target == "gallery" else "table.html"
    else:
        ctx.update(grid_data(p, app, t, view, state))
        template = "_grid.html" if htmx.target == "grid" else "table.html"
    resp = render(p, template, **ctx)
    if htmx and htmx.target in ("grid", "board", "calendar", "gallery"):
        resp.headers["HX-Push-Url"] = f"{request.path}?{state.qs()}"
    return resp


def filter_fields(p: Page, t: TableDef) -> list[dict[str, Any]]:
    """Fields the viewer may filter on, with their operators (what the filter builder offers)."""
    hidden = p.access.unreadable_fields(p.cat, t)
    out = []
    for f in t.fields:
        if f.key in hidden:
            continue
        out.append({"key": f.key, "label": p.label(f.label), "ops": list(f.ftype.operators(f, p.cat)),
                    "kind": f.ftype.value_kind(f, p.cat), "choices": choice_map(f, p.locale)
                    if f.type in ("single_select", "multi_select") else {}})
    return out


def grid_columns(p: Page, t: TableDef, view: dict[str, Any] | None) -> list[FieldDef]:
    return shown_fields(p, t, view.get("fields") if view else None)


def grid_rows(p: Page, app: AppDef, t: TableDef, view: dict[str, Any] | None, state: GridState,
              cursor: str | None = None) -> dict[str, Any]:
    """One page of rows, cells rendered, plus the next cursor; a bad filter becomes a message."""
    cols = grid_columns(p, t, view)
    try:
        result = p.reader().list(t, filter_tree=state.tree(p, t), sort=state.sort or None,
                                 search=state.search or None, fields=[f.key for f in cols] or None,
                                 limit=PAGE_SIZE, cursor=cursor, view=view)
    except BadRequest as e:
        return {"rows": [], "next_cursor": None, "cols": cols, "grid_error": e.message}
    r = p.renderer(app.key)
    editable = {f.key for f in cols if writable(p, t, f)}
    base = f"/apps/{app.key}/{t.key}"
    rows = [r.row(cols, rec, editable, base) for rec in result["records"]]
    return {"rows": rows, "next_cursor": result["next_cursor"], "cols": cols, "editable": editable,
            "grid_error": None, "can_update": p.access.can_see_table(p.cat, t)}


def grid_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any] | None, state: GridState) -> dict[str, Any]:
    data = grid_rows(p, app, t, view, state)
    data["sort_spec"] = {s.lstrip("-"): ("desc" if s.startswith("-") else "asc")
                         for s in state.sort.split(",") if s}
    return data


@ui.get("/apps/<app_key>/<table_key>/rows")
def rows_fragment(app_key: str, table_key: str) -> Response:
    """The grid's rows only (for "load more" and refreshes): one SELECT plus one per to-many field."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        state = GridState.from_request()
        view = current_view(t, state.view)
        if view is not None and state.view is None:
            state.view = view["key"]
        data = grid_rows(p, app, t, view, state, cursor=request.args.get("cursor") or None)
        return render(p, "_rows.html", app=app, t=t, view=view, state=state, **data)


@ui.get("/apps/<app_key>/<table_key>/count")
def count_fragment(app_key: str, table_key: str) -> Response:
    """A capped count ("1,000+"): the page never waits for an exact count of a big table."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        state = GridState.from_request()
        view = current_view(t, state.view)
        reader = p.reader()
        try:
            conds = reader.where(t, state.tree(p, t), state.search or None, view)
        except BadRequest:
            return Response("", mimetype="text/html")
        n = reader.count(t, conds, cap=COUNT_CAP + 1)
        text = p.t("count_more", n=f"{COUNT_CAP:,}") if n > COUNT_CAP else f"{n:,}"
        return Response(f"{text} {p.t('records')}", mimetype="text/html")


@ui.get("/apps/<app_key>/<table_key>/filter-row")
def filter_row(app_key: str, table_key: str) -> Response:
    """One condition of the filter builder, its operators fitting the chosen field."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        fields = filter_fields(p, t)
        key = request.args.get("ff") or (fields[0]["key"] if fields else "")
        chosen = next((f for f in fields if f["key"] == key), fields[0] if fields else None)
        return render(p, "_filter_row.html", app_key=app_key, t=t, filter_fields=fields, chosen=chosen,
                      cond=(chosen["key"] if chosen else "", request.args.get("fo", ""), ""),
                      op_label=lambda op: i18n.operator_label(p.locale, op))


# --- inline editing ---------------------------------------------------------------------------------
def grid_row_response(p: Page, app: AppDef, t: TableDef, rid: int, view: dict[str, Any] | None,
                      editing: str | None = None, errors: dict[str, list[str]] | None = None,
                      message: str | None = None, raw: Any = None, version: int | None = None) -> Response:
    """One grid row (a ``<tr>``), optionally with one cell open for editing or a message under it."""
    cols = grid_columns(p, t, view)
    rec = p.reader().get(t, rid, fields=[f.key for f in cols] or None)
    if editing and version is not None and version != rec["version"]:
        editing, message = None, p.t("stale")
    r = p.renderer(app.key)
    editable = {f.key for f in cols if writable(p, t, f)}
    row = {"rec": rec, "cells": [r.cell(f, rec["fields"].get(f.key)) for f in cols],
           "html": r.row(cols, rec, editable, f"/apps/{app.key}/{t.key}")}
    edit_field = t.fields_by_key.get(editing) if editing else None
    edit_value = raw if raw is not None else (rec["fields"].get(editing) if editing else None)
    return render(p, "_row.html", app=app, t=t, view=view, row=row, cols=cols, state=GridState(
        view=view["key"] if view else None), editing=editing, edit_field=edit_field, edit_value=edit_value,
        edit_version=version, errors=errors or {}, message=message,
        options=input_options(p, t, [edit_field] if edit_field else []))


@ui.get("/apps/<app_key>/<table_key>/<int:rid>/row")
def grid_row(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        view = current_view(t, request.args.get("view"))
        editing = request.args.get("edit")
        if editing is not None:
            f = t.field(editing)
            if not writable(p, t, f):
                editing = None
        return grid_row_response(p, app, t, rid, view, editing=editing, version=_int(request.args.get("v")))


@ui.post("/apps/<app_key>/<table_key>/<int:rid>/cell/<field_key>")
def save_cell(app_key: str, table_key: str, rid: int, field_key: str) -> Response:
    """Save one cell with the row's version (If-Match); a stale version says so instead of overwriting."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        view = current_view(t, request.form.get("view"))
        f = t.field(field_key)
        version = _int(request.form.get("version"))
        data = parse_form(p, t, [f], request.form)
        try:
            with conn.begin_nested():
                p.service().update(t, rid, data, if_match=version)
        except PreconditionFailed:
            return grid_row_response(p, app, t, rid, view, message=p.t("stale"))
        except ValidationFailed as e:
            return grid_row_response(p, app, t, rid, view, editing=field_key, errors=e.details or {},
                                     raw=data.get(field_key), version=version)
        except Conflict as e:
            return grid_row_response(p, app, t, rid, view, editing=field_key,
                                     errors=e.details or {field_key: [e.message]}, raw=data.get(field_key),
                                     version=version)
        return grid_row_response(p, app, t, rid, view)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        raise BadRequest("version must be a whole number") from None


@ui.post("/apps/<app_key>/<table_key>/quick-add")
def quick_add(app_key: str, table_key: str) -> Response:
    """Add a record from the grid by its display field; the new row is prepended."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        df = t.display_field
        value = (request.form.get("value") or "").strip()
        if df is None or not value:
            raise BadRequest(p.t("fix_errors"))
        data = parse_form(p, t, [df], {df.key: value})
        try:
            with conn.begin_nested():
                rec = p.service().create(t, data)
        except (ValidationFailed, Conflict) as e:
            details = e.details or {}
            msg = "; ".join(f"{p.label(t.fields_by_key[k].label) if k in t.fields_by_key else k}: {', '.join(v)}"
                            for k, v in details.items()) or e.message
            raise BadRequest(msg) from None
        return grid_row_response(p, app, t, rec["id"], current_view(t, request.form.get("view")))


@ui.post("/apps/<app_key>/<table_key>/bulk-delete")
def bulk_delete(app_key: str, table_key: str) -> Response:
    access = current_access()
    ids = []
    for raw in request.form.getlist("ids"):
        if not raw.isdigit():
            raise BadRequest("ids must be record ids")
        ids.append(int(raw))
    if not ids:
        raise BadRequest("select records first")
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        p.service().delete_many(t, sorted(set(ids)))
    resp = Response(status=204)
    resp.headers["HX-Refresh"] = "true"
    return resp


# --- form values ------------------------------------------------------------------------------------
def parse_form(p: Page, t: TableDef, fields: list[FieldDef], form: Any) -> dict[str, Any]:
    """Turn posted form values into API field values (the services coerce and validate them)."""
    out: dict[str, Any] = {}

    def getlist(key: str) -> list[str]:
        return form.getlist(key) if hasattr(form, "getlist") else ([form[key]] if key in form else [])

    for f in fields:
        key, typ = f.key, f.type
        if typ == "checkbox":
            out[key] = bool(form.get(key))
            continue
        if typ == "multi_select" or (typ == "user" and f.options.get("multiple")):
            vals = [v for v in getlist(key) if v]
            out[key] = [int(v) if typ == "user" and v.isdigit() else v for v in vals]
            continue
        if typ == "link":
            vals = [v for v in getlist(key) if v]
            ids = []
            for v in vals:
                if not v.strip().isdigit():
                    raise BadRequest(f"{key}: record ids only")
                ids.append(int(v))
            out[key] = ids if is_many(f) else (ids[0] if ids else None)
            continue
        raw = form.get(key)
        if raw is None:
            continue
        raw = str(raw)
        if typ == "user":
            out[key] = int(raw) if raw.isdigit() else (raw or None)
        elif typ == "datetime":
            out[key] = local_to_iso(raw, p.tz) if raw else None
        elif raw.strip() == "" and typ not in ("text", "long_text"):
            out[key] = None
        else:
            out[key] = raw if raw != "" else None
    return out


def local_to_iso(value: str, tz: str) -> str:
    """A datetime-local input ("2026-05-01T09:30") in the viewer's time zone, as ISO 8601 with offset."""
    try:
        d = dt.datetime.fromisoformat(value)
    except ValueError:
        return value  # the field type reports the bad value
    if d.tzinfo is None:
        try:
            d = d.replace(tzinfo=ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            d = d.replace(tzinfo=dt.UTC)
    return d.isoformat()


def input_options(p: Page, t: TableDef, fields: list[FieldDef]) -> dict[str, Any]:
    """What the inputs need: choices of selects, the active users for user pickers (one query)."""
    out: dict[str, Any] = {"choices": {}, "users": [], "tz": p.tz,
                           "base": f"/apps/{p.cat.app_by_id(t.app_id).key}/{t.key}"}
    for f in fields:
        if f.type in ("single_select", "multi_select"):
            out["choices"][f.key] = choice_map(f, p.locale)
    if any(f.type == "user" for f in fields):
        out["users"] = [{"id": r.id, "name": r.name} for r in p.conn.execute(
            select(db.users.c.id, db.users.c.name).where(db.users.c.active.is_(True)).order_by(db.users.c.name)
            .limit(1000))]
    return out


def input_value(f: FieldDef, value: Any, tz: str) -> Any:
    """A JSON value as an input's value attribute."""
    if value is None:
        return ""
    if f.type == "datetime" and isinstance(value, str):
        d = local_datetime(value, tz)
        return d.strftime("%Y-%m-%dT%H:%M") if d else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- record pages -----------------------------------------------------------------------------------
def record_context(p: Page, app: AppDef, t: TableDef, rec: dict[str, Any]) -> dict[str, Any]:
    fields = shown_fields(p, t)
    shown = [f for f in fields if f.key in rec["fields"]]
    r = p.renderer(app.key)
    reverse = [f for f in shown if f.type == "link" and f.options.get("side") == "reverse"]
    edit = [f for f in shown if writable(p, t, f) and f not in reverse]
    history = p.service().history(t, rec["id"], limit=100)["entries"]
    labels = {f.key: p.label(f.label) for f in t.fields}
    for e in history:
        e["rows"] = [{"label": labels.get(k, k), "old": r.cell(t.fields_by_key[k], v.get("old"))
                      if k in t.fields_by_key else v.get("old"),
                      "new": r.cell(t.fields_by_key[k], v.get("new")) if k in t.fields_by_key else v.get("new")}
                     for k, v in (e.get("changes") or {}).items() if isinstance(v, dict)]
        d = local_datetime(e["at"], p.tz)
        e["when"] = d.strftime("%Y-%m-%d %H:%M") if d else e["at"]
    return {"app": app, "t": t, "rec": rec, "fields": [f for f in shown if f not in reverse],
            "cells": {f.key: r.cell(f, rec["fields"].get(f.key)) for f in shown}, "edit_fields": edit,
            "reverse": [(f, rec["fields"].get(f.key) or [], p.cat.tables_by_id[f.options["target"]])
                        for f in reverse if f.options.get("target") in p.cat.tables_by_id],
            "history": history, "approvals": record_approvals(p, t, rec["id"]),
            "options": input_options(p, t, edit), "tables": visible_tables(p, app),
            "title": r.text(t.display_field, rec["fields"].get(t.display_field.key)) if t.display_field else "",
            "can_delete": _allowed(p, t, rec["id"], "delete"), "dashboards": app.dashboards}


def _allowed(p: Page, t: TableDef, rid: int, op: str) -> bool:
    scope = p.access.scope(p.cat, t, t.sa, op)
    q = select(t.sa.c.id).where(t.sa.c.id == rid)
    if scope is not None:
        q = q.where(scope)
    return p.conn.execute(q).first() is not None


def record_approvals(p: Page, t: TableDef, rid: int) -> list[dict[str, Any]]:
    from formwork.automation.approvals import approval_json as _approval_json

    a = db.approvals
    rows = p.conn.execute(select(a).where(a.c.table_id == t.id, a.c.record_id == rid).order_by(a.c.id)).all()
    return _approval_json(p.conn, p.cat, list(rows))


@ui.get("/apps/<app_key>/<table_key>/<int:rid>")
def record_page(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        try:
            rec = p.reader().get(t, rid)
        except NotFound:
            deleted = p.reader().get(t, rid, trashed=True)  # 404 unless it is in the trash and readable
            return render(p, "record_trashed.html", app=app, t=t, rec=deleted, tables=visible_tables(p, app),
                          dashboards=app.dashboards)
        return render(p, "record.html", **record_context(p, app, t, rec), errors={},
                      saved=request.args.get("saved") == "1")


@ui.post("/apps/<app_key>/<table_key>/<int:rid>")
def record_save(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        keys = set(request.form.getlist("_fields"))
        fields = [f for f in t.fields if f.key in keys and writable(p, t, f)]
        data = parse_form(p, t, fields, request.form)
        try:
            with conn.begin_nested():
                p.service().update(t, rid, data, if_match=_int(request.form.get("version")))
        except PreconditionFailed:
            rec = p.reader().get(t, rid)
            return render(p, "record.html", 412, **record_context(p, app, t, rec), errors={}, stale=True)
        except (ValidationFailed, Conflict) as e:
            rec = p.reader().get(t, rid)
            rec["fields"].update(data)
            return render(p, "record.html", 422, **record_context(p, app, t, rec),
                          errors=e.details or {"": [e.message]}, submitted=True)
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid,  # type: ignore[return-value]
                            saved=1))


@ui.post("/apps/<app_key>/<table_key>/<int:rid>/delete")
def record_delete(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        p.service().delete(t, rid)
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid))  # type: ignore[return-value]


@ui.post("/apps/<app_key>/<table_key>/<int:rid>/restore")
def record_restore(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        p.service().restore(t, rid)
    return redirect(url_for("ui.record_page", app_key=app_key, table_key=table_key, rid=rid))  # type: ignore[return-value]


@ui.route("/apps/<app_key>/<table_key>/new", methods=["GET", "POST"])
def record_new(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        p.access.require(p.cat, t, "create")
        fields = [f for f in shown_fields(p, t) if writable(p, t, f)
                  and not (f.type == "link" and f.options.get("side") == "reverse")]
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        if request.method == "POST":
            values = parse_form(p, t, fields, request.form)
            try:
                with conn.begin_nested():
                    rec = p.service().create(t, values)
                return redirect(url_for("ui.record_page", app_key=app_key,  # type: ignore[return-value]
                                        table_key=table_key, rid=rec["id"]))
            except (ValidationFailed, Conflict) as e:
                errors = e.details or {"": [e.message]}
        return render(p, "record_new.html", 422 if errors else 200, app=app, t=t, fields=fields, values=values,
                      errors=errors, options=input_options(p, t, fields), tables=visible_tables(p, app),
                      dashboards=app.dashboards)


@ui.get("/apps/<app_key>/<table_key>/link-search/<field_key>")
def link_search(app_key: str, table_key: str, field_key: str) -> Response:
    """Records of a link's target table matching ``q`` by their display field (for the link picker)."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        f = t.field(field_key)
        if f.type != "link" or f not in shown_fields(p, t):
            raise NotFound(f"no link field '{field_key}'")
        target = cat.table_by_id(f.options["target"])
        disp = target.display_field
        q = (request.args.get("_q") or request.args.get("q") or "").strip()[:200]
        items: list[dict[str, Any]] = []
        if access.can_see_table(cat, target):
            res = p.reader().list(target, search=q or None, fields=[disp.key] if disp else None, limit=10)
            r = p.renderer(app_key)
            items = [{"id": rec["id"], "label": (r.text(disp, rec["fields"].get(disp.key)) if disp else "")
                      or f"#{rec['id']}"} for rec in res["records"]]
        return render(p, "_link_results.html", items=items, field=f)


# --- kanban -----------------------------------------------------------------------------------------
def kanban_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any], state: GridState) -> dict[str, Any]:
    from formwork.runtime.aggregate import aggregate

    gkey = (view.get("options") or {}).get("group_field")
    gf = t.fields_by_key.get(gkey or "")
    if gf is None or gf not in shown_fields(p, t):
        return {"columns": [], "board_error": p.t("forbidden")}
    title_key = (view.get("options") or {}).get("title_field") or (t.display_field.key if t.display_field else None)
    extra = [f for f in shown_fields(p, t, view.get("fields")) if f.key not in (title_key, gkey)][:3]
    tree = state.tree(p, t)
    try:
        counts = aggregate(p.conn, p.cat, p.access, t, group_by=[gkey], metrics=["count"], filter_tree=tree,
                           view=view, search=state.search or None)
    except BadRequest as e:
        return {"columns": [], "board_error": e.message}
    r = p.renderer(app.key)
    columns: list[dict[str, Any]] = []
    if gf.type == "single_select":
        by_value = {g["key"].get(gkey): g["count"] for g in counts}
        for value, (label, color) in choice_map(gf, p.locale).items():
            columns.append({"value": value, "label": label, "color": color, "count": by_value.get(value, 0)})
    else:
        for g in counts:
            k = g["key"].get(gkey)
            if k is not None:
                columns.append({"value": str(k["id"]), "label": k.get("name") or f"#{k['id']}", "color": "gray",
                                "count": g["count"]})
    empty = next((g["count"] for g in counts if g["key"].get(gkey) is None), 0)
    columns.append({"value": "", "label": p.t("empty_group"), "color": "gray", "count": empty})
    keys = [k for k in [title_key, *[f.key for f in extra], gkey] if k]
    reader = p.reader()
    for col in columns:
        col["cards"] = []
        if not col["count"]:
            continue
        cond: dict[str, Any] = {"field": gkey, "op": "is_empty"} if col["value"] == "" else \
            {"field": gkey, "op": "eq", "value": col["value"]}
        full = {"and": [cond, tree]} if tree else cond
        res = reader.list(t, filter_tree=full, search=state.search or None, fields=keys, limit=KANBAN_CARDS,
                          view=view)
        for rec in res["records"]:
            tf = t.fields_by_key.get(title_key or "")
            col["cards"].append({"rec": rec, "title": (r.text(tf, rec["fields"].get(tf.key)) if tf else "")
                                 or f"#{rec['id']}",
                                 "extra": [(p.label(f.label), r.cell(f, rec["fields"].get(f.key))) for f in extra
                                           if rec["fields"].get(f.key) not in (None, "", [])]})
    movable = writable(p, t, gf)
    return {"columns": columns, "group_field": gf, "movable": movable, "board_error": None}


@ui.post("/apps/<app_key>/<table_key>/<int:rid>/move")
def kanban_move(app_key: str, table_key: str, rid: int) -> Response:
    """Drop a card on another column: set the group field (If-Match on the card's version)."""
    access = current_access()
    message = None
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        view = current_view(t, request.form.get("view"))
        if view is None or view.get("type") != "kanban":
            raise BadRequest("not a kanban view")
        gf = t.field(view["options"]["group_field"])
        value = request.form.get("value", "")
        data = {gf.key: (int(value) if gf.type == "user" and value.isdigit() else value) or None}
        try:
            with conn.begin_nested():
                p.service().update(t, rid, data, if_match=_int(request.form.get("version")))
        except PreconditionFailed:
            message = p.t("stale")
        except (ValidationFailed, Conflict) as e:
            message = "; ".join(m for v in (e.details or {}).values() for m in v) or e.message
        app = p.cat.app(app_key)
        state = GridState.from_request()
        return render(p, "_kanban.html", app=app, t=t, view=view, state=state, board_message=message,
                      **kanban_data(p, app, t, view or {}, state))


# --- calendar and gallery ---------------------------------------------------------------------------
def calendar_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any], state: GridState) -> dict[str, Any]:
    opts = view.get("options") or {}
    df = t.fields_by_key.get(opts.get("date_field", ""))
    ef = t.fields_by_key.get(opts.get("end_field", "") or "")
    try:
        today = dt.datetime.now(ZoneInfo(p.tz)).date()
    except (ZoneInfoNotFoundError, ValueError):
        today = dt.datetime.now(dt.UTC).date()
    month_arg = request.args.get("month", "")
    try:
        first = dt.date.fromisoformat(month_arg + "-01") if month_arg else today.replace(day=1)
    except ValueError:
        raise BadRequest("month must look like 2026-05") from None
    nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    prev = (first - dt.timedelta(days=1)).replace(day=1)
    start = first - dt.timedelta(days=first.weekday())
    days = [start + dt.timedelta(days=i) for i in range(42)]
    if days[35] >= nxt:
        days = days[:35]
    events: dict[dt.date, list[dict[str, Any]]] = {d: [] for d in days}
    error = None
    if df is None or df not in shown_fields(p, t):
        error = p.t("forbidden")
    else:
        tf = t.fields_by_key.get(opts.get("title_field") or "") or t.display_field
        last = days[-1]
        within: dict[str, Any] = {"field": df.key, "op": "between", "value": [days[0].isoformat(), last.isoformat()]}
        if ef is not None and ef in shown_fields(p, t):
            within = {"or": [within, {"and": [
                {"field": df.key, "op": "lte", "value": last.isoformat()},
                {"field": ef.key, "op": "gte", "value": days[0].isoformat()}]}]}
        tree = state.tree(p, t)
        keys = [k.key for k in (tf, df, ef) if k is not None]
        try:
            res = p.reader().list(t, filter_tree={"and": [within, tree]} if tree else within, sort=df.key,
                                  fields=keys, limit=1000, view=view, search=state.search or None)
        except BadRequest as err:
            res, error = {"records": []}, err.message
        r = p.renderer(app.key)
        for rec in res["records"]:
            s = _day(rec["fields"].get(df.key), p.tz)
            if s is None:
                continue
            end = _day(rec["fields"].get(ef.key), p.tz) if ef is not None else None
            end = end if end is not None and end >= s else s
            title = (r.text(tf, rec["fields"].get(tf.key)) if tf else "") or f"#{rec['id']}"
            d = max(s, days[0])
            while d <= min(end, days[-1]):
                events[d].append({"id": rec["id"], "title": title})
                d += dt.timedelta(days=1)
    return {"cal_days": days, "cal_events": events, "cal_month": first, "cal_prev": prev.strftime("%Y-%m"),
            "cal_next": nxt.strftime("%Y-%m"), "cal_today": today, "cal_error": error,
            "month_names": p.t("month_names").split(","), "weekdays": p.t("weekdays").split(",")}


def _day(value: Any, tz: str) -> dt.date | None:
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    d = local_datetime(value, tz)
    return d.date() if d else None


def gallery_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any], state: GridState) -> dict[str, Any]:
    opts = view.get("options") or {}
    shown = shown_fields(p, t, view.get("fields"))
    tf = t.fields_by_key.get(opts.get("title_field") or "") or t.display_field
    cover = t.fields_by_key.get(opts.get("cover_field") or "") or next(
        (f for f in shown if f.type == "attachment"), None)
    if cover is not None and cover not in shown_fields(p, t):
        cover = None
    extra = [f for f in shown if f not in (tf, cover)][:4]
    keys = [f.key for f in [tf, cover, *extra] if f is not None]
    try:
        res = p.reader().list(t, filter_tree=state.tree(p, t), search=state.search or None, fields=keys,
                              limit=PAGE_SIZE, view=view, sort=state.sort or None)
    except BadRequest as e:
        return {"cards": [], "gallery_error": e.message}
    r = p.renderer(app.key)
    cards = []
    for rec in res["records"]:
        img = None
        if cover is not None:
            for item in rec["fields"].get(cover.key) or []:
                if isinstance(item, dict) and str(item.get("mime", "")).startswith("image/"):
                    img = item.get("url")
                    break
        cards.append({"rec": rec, "title": (r.text(tf, rec["fields"].get(tf.key)) if tf else "") or f"#{rec['id']}",
                      "cover": img, "extra": [(p.label(f.label), r.cell(f, rec["fields"].get(f.key))) for f in extra
                                              if rec["fields"].get(f.key) not in (None, "", [])]})
    return {"cards": cards, "gallery_error": None}


# --- form views -------------------------------------------------------------------------------------
def form_fields(p: Page, t: TableDef, view: dict[str, Any], public: bool) -> list[FieldDef]:
    keys = view.get("fields") or [f.key for f in t.fields]
    out = []
    for k in keys:
        f = t.fields_by_key.get(k)
        if f is None or f.ftype.read_only or f.type in NO_INPUT_TYPES:
            continue
        if f.type == "link" and (f.options.get("side") == "reverse"):
            continue
        if public and (f.type in ("link", "user")):
            continue  # a public visitor may not browse records or the user list
        if not public and not writable(p, t, f):
            continue
        out.append(f)
    return out


def form_view(t: TableDef, view_key: str) -> dict[str, Any]:
    view = t.view(view_key)
    if view.get("type") != "form":
        raise NotFound(f"no form '{view_key}'")
    return view


@ui.route("/apps/<app_key>/<table_key>/forms/<view_key>", methods=["GET", "POST"])
def form_page(app_key: str, table_key: str, view_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        view = form_view(t, view_key)
        p.access.require(cat, t, "create")
        fields = form_fields(p, t, view, public=False)
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        done = False
        if request.method == "POST":
            values = parse_form(p, t, fields, request.form)
            try:
                with conn.begin_nested():
                    p.service().create(t, values)
                done, values = True, {}
            except (ValidationFailed, Conflict) as e:
                errors = e.details or {"": [e.message]}
        return render(p, "form.html", 422 if errors else 200, app=app, t=t, view=view, fields=fields,
                      values=values, errors=errors, done=done, public=False,
                      options=input_options(p, t, fields), tables=visible_tables(p, app),
                      dashboards=app.dashboards, form_token="", action=request.path)


@ui.route("/f/<app_key>/<table_key>/<view_key>", methods=["GET", "POST"])
def public_form(app_key: str, table_key: str, view_key: str) -> Response:
    """A public lead-capture form: no login; rate-limited; a signed token stands in for the CSRF token;
    records are created by the system (created_by empty) and fire form_submitted automations."""
    from formwork.automation.intake import emit_form_submitted
    from formwork.runtime.ratelimit import form_limiter

    with unit() as (conn, cat):
        try:
            t = cat.table(app_key, table_key)
            view = form_view(t, view_key)
        except NotFound:
            raise NotFound("no such form") from None
        if not (view.get("options") or {}).get("public"):
            raise NotFound("no such form")
        system = Access.system()
        p = Page(system, conn, cat, page_locale(), "UTC")
        fields = form_fields(p, t, view, public=True)
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        done = False
        status = 200
        if request.method == "POST":
            form_limiter.check(f"{client_ip() or '-'}")
            try:
                payload = signer("public-form").loads(request.form.get("form_token", ""), max_age=6 * 3600)
            except BadSignature:
                payload = None
            if payload != view["id"]:
                errors, status = {"": [p.t("form_expired")]}, 400
            else:
                values = parse_form(p, t, fields, request.form)
                try:
                    with conn.begin_nested():
                        rec = RecordService(cat, conn, system, secret=secret()).create(t, values)
                        emit_form_submitted(conn, t, rec["id"], form=view["key"])
                    done, values = True, {}
                except (ValidationFailed, Conflict) as e:
                    errors, status = e.details or {"": [e.message]}, 422
        return render(p, "form.html", status, app=cat.app(app_key), t=t, view=view, fields=fields, values=values,
                      errors=errors, done=done, public=True, options=input_options(p, t, fields),
                      form_token=signer("public-form").dumps(view["id"]), action=request.path)


@ui.errorhandler(RateLimited)
def _rate_limited(err: RateLimited) -> Response:
    locale = page_locale(g.get("access"))
    return make_response(render_template(
        "error.html", _=lambda key, **kw: i18n.translate(locale, key, **kw), locale=locale, locales=i18n.LOCALES,
        title=i18n.translate(locale, "error"), message=i18n.translate(locale, "rate_limited"), status=429,
        csrf_token="", access=None), 429)


from formwork.ui import builder as _builder  # noqa: E402,F401  (adds builder, dashboard, notification routes)
