"""What every page shares: who is looking (``Page``), in which language, what they may see, how a page is
rendered, and a grid's state as URL parameters.

Every page goes through the same services and permission checks as the API (RecordReader, RecordService,
MetadataService, Access); the session cookie and CSRF token are the API's. State of a grid (view,
search, filter, sort) lives in the URL, so every fragment can be re-requested and every page bookmarked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Response, current_app, g, make_response, render_template, request
from flask_htmx import HTMX
from itsdangerous import URLSafeTimedSerializer
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation import approvals, heartbeat
from formwork.errors import BadRequest, NotFound
from formwork.metadata.catalog import AppDef, Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import BOOL, MULTI
from formwork.runtime import notifications
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, RecordService
from formwork.ui import i18n
from formwork.ui.render import CellRenderer, local_datetime

htmx = HTMX()
LOCALE_COOKIE = "fw_locale"
PAGE_SIZE = 50


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
    """What the page frame shows: the user's name, the unread notification count, the apps menu, and to
    admins a warning when automations have no worker."""
    u = p.conn.execute(select(db.users.c.name).where(db.users.c.id == p.access.user_id)).first()
    unread = notifications.unread_count(p.conn, p.access.user_id)
    return {"user_name": u.name if u else p.access.username, "unread": unread,
            "can_build": p.access.can_build(), "nav_apps": visible_apps(p),
            "can_manage_users": p.access.can_manage_users(),
            "can_manage_automations": p.access.can_manage_automations(),
            "pending_approvals": pending_approvals(p),
            "worker_banner": worker_banner(p) if p.access.is_admin else None}


def pending_approvals(p: Page) -> int:
    """How many approval steps wait on this user (the count beside "My approvals")."""
    return approvals.pending_count(p.conn, p.access)


def worker_banner(p: Page) -> Markup | None:
    """The admins' warning that automations are enabled but no worker beat for a minute; None when fine."""
    status = heartbeat.worker_status(p.conn, p.cat)
    if status.status != heartbeat.MISSING:
        return None
    since = ""
    if status.last_seen is not None:
        local = local_datetime(status.last_seen.isoformat(), p.tz)
        since = local.strftime("%Y-%m-%d %H:%M") if local is not None else ""
    text = i18n.translate(p.locale, "worker_missing" if since else "worker_never_seen")
    return Markup(escape(text)).format(since=since, cmd=Markup("<code>formwork worker</code>"),
                                       run=Markup("<code>formwork run</code>"))


def visible_apps(p: Page) -> list[AppDef]:
    a = p.access
    return [app for app in p.cat.apps
            if a.is_admin or a.can_build() or any(a.can_see_table(p.cat, t) for t in app.tables)]


def visible_app(p: Page, app_key: str) -> AppDef:
    app = p.cat.app(app_key)
    if app not in visible_apps(p):
        raise NotFound(f"no app '{app_key}'")
    return app


def visible_dashboards(p: Page, app: AppDef) -> list[dict[str, Any]]:
    """The app's dashboards for the navigation: none without the right to view dashboards, and only those
    shared with one of the viewer's roles (a dashboard naming no roles is shared with all)."""
    from formwork.runtime.dashboards import shared_with

    if not p.access.can_view_dashboards():
        return []
    return [d for d in app.dashboards if shared_with(p.access, d)]


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
    """Whether this viewer edits the field in a form (a type without a form input, e.g. attachments, is not)."""
    return not f.ftype.read_only and f.ftype.input_kind is not None and p.access.field_writable(p.cat, t, f)


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


def path_of(url: str) -> str:
    """A URL's path and query, without scheme and host (to check it with :func:`safe_next`)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def parse_version(value: Any) -> int | None:
    """A record version posted by a form (If-Match); None when absent."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        raise BadRequest("version must be a whole number") from None


ALL_RECORDS = "_all"  # the "All records" tab: no saved view, every column
FILTER_NAME = "filter"  # the grid's condition builder posts filter.* parameters
MAX_FILTER_PARAMS = 400


@dataclass
class GridState:
    """A grid's query as URL parameters: view, search, sort, the condition builder's ``filter.*`` inputs,
    (older links) quick-filter conditions ``ff/fo/fv``, and ``filter``: a filter tree (API.md's JSON) for
    what a link carries in (a dashboard's drill-down)."""

    view: str | None = None
    search: str = ""
    sort: str = ""
    conds: list[tuple[str, str, str]] = field(default_factory=list)
    filter_items: list[tuple[str, str]] = field(default_factory=list)
    filter: str = ""

    @classmethod
    def from_request(cls) -> GridState:
        a = request.values
        conds = [(f, o, v) for f, o, v in zip(a.getlist("ff"), a.getlist("fo"), a.getlist("fv"), strict=False)
                 if f and o]
        items = [(k, str(v)[:1000]) for k, v in a.items(multi=True) if k.startswith(FILTER_NAME + ".")]
        return cls(view=a.get("view") or None, search=(a.get("search") or "").strip()[:200],
                   sort=(a.get("sort") or "").strip()[:300], conds=conds[:20],
                   filter_items=items[:MAX_FILTER_PARAMS], filter=(a.get("filter") or "").strip()[:4000])

    def params(self, **over: Any) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        values = {"view": self.view, "search": self.search, "sort": self.sort, **over}
        for k in ("view", "search", "sort", "cursor", "month", "mode", "day", "from_view"):
            if values.get(k):
                items.append((k, str(values[k])))
        for f, o, v in self.conds:
            items += [("ff", f), ("fo", o), ("fv", v)]
        items += self.filter_items
        if self.filter:
            items.append(("filter", self.filter))
        return items

    def qs(self, **over: Any) -> str:
        return urlencode(self.params(**over))

    @property
    def filter_count(self) -> int:
        return len(self.conds) + sum(1 for k, _v in self.filter_items if k.endswith(".field"))

    def tree(self, p: Page, t: TableDef) -> dict[str, Any] | None:
        out: list[Any] = []
        if self.filter:
            try:
                out.append(json.loads(self.filter))
            except ValueError:
                raise BadRequest("filter: not a filter tree") from None
        for key, op, raw in self.conds:
            f = t.fields_by_key.get(key.split(".")[0])
            if f is None:
                raise BadRequest(f"filter: no field '{key[:100]}'")
            node: dict[str, Any] = {"field": key, "op": op}
            if op not in ("is_empty", "is_not_empty"):
                node["value"] = filter_value(f.ftype.value_kind(f, p.cat), op, raw)
            out.append(node)
        if self.filter_items:
            from werkzeug.datastructures import MultiDict

            from formwork.ui import conditions

            try:
                built = conditions.parse(p, t, MultiDict(self.filter_items), name=FILTER_NAME)
            except conditions.ConditionError as e:
                raise BadRequest(e.message) from None
            if built is not None:
                out.append(built)
        if not out:
            return None
        return out[0] if len(out) == 1 and "and" in out[0] else {"and": out}


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


def current_view(t: TableDef, key: str | None) -> dict[str, Any] | None:
    if key == ALL_RECORDS:
        return None
    if key:
        return t.view(key)
    for v in t.views:
        if v.get("type") != "form":
            return v
    return None
