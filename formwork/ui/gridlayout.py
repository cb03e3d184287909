"""How one user sees a table's grid: which columns show and in what order, their widths, how many are frozen,
the row height and the grouping field, and the user's personal views.

Both live on the server in the user's settings (``fw_user_setting``, one entry per table, key
``grid:<table id>``), never in a view document: a personal view is visible to its creator only because it is
stored under their own user id, which comes from the session, never from the request. Shared views are the
table's view documents (builders make them, everyone who reads the table sees them)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from formwork.errors import BadRequest, NotFound
from formwork.metadata.catalog import AppDef, Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import BOOL, DATE, LINK_ONE, SELECT, TEXT, USER
from formwork.runtime import notifications
from formwork.runtime.permissions import Access
from formwork.ui.context import ALL_RECORDS, GridState, Page, current_view, make_page, shown_fields, visible_table

HEIGHTS = ("short", "medium", "tall")
PERSONAL_PREFIX = "my-"
MAX_VIEWS = 30
MAX_FREEZE = 3
MIN_WIDTH, MAX_WIDTH = 40, 2000
GROUP_KINDS = (TEXT, BOOL, SELECT, USER, LINK_ONE, DATE)


def setting_key(t: TableDef) -> str:
    return f"grid:{t.id}"


def load(p: Page, t: TableDef) -> dict[str, Any]:
    """The user's stored grid settings of a table (``{"prefs": {view key: {...}}, "views": [...]}``)."""
    uid = p.access.user_id
    if uid is None:
        return {}
    value = notifications.get_setting(p.conn, uid, setting_key(t), {})
    return value if isinstance(value, dict) else {}


def store(p: Page, t: TableDef, data: dict[str, Any]) -> None:
    uid = p.access.user_id
    if uid is None:
        return
    notifications.set_setting(p.conn, uid, setting_key(t), data or None)


def personal_views(p: Page, t: TableDef) -> list[dict[str, Any]]:
    views = load(p, t).get("views")
    return [v for v in views if isinstance(v, dict) and isinstance(v.get("key"), str)] if isinstance(views, list) \
        else []


def is_personal(key: str | None) -> bool:
    return bool(key) and str(key).startswith(PERSONAL_PREFIX)


def resolve_view(p: Page, t: TableDef, key: str | None) -> dict[str, Any] | None:
    """The view a grid shows: one of the user's personal views (``my-…``), a shared view, or None for
    "All records"."""
    if is_personal(key):
        for v in personal_views(p, t):
            if v["key"] == key:
                return clean_view(p, t, v)
        raise NotFound(f"no view '{str(key)[:100]}' in table '{t.key}'")
    return current_view(t, key)


@dataclass
class TableContext:
    """What a table route works on: the page, the app and table the user sees, the grid's query from the
    request and the view it names (None: "All records")."""

    p: Page
    app: AppDef
    t: TableDef
    state: GridState
    view: dict[str, Any] | None


def table_context(conn: Connection, cat: Catalog, access: Access, app_key: str, table_key: str,
                  view_type: str | None = None) -> TableContext:
    """The preamble of a table route: the page, the visible app and table (404 otherwise), the request's
    grid state and the view it names (``view`` in the query or the form; the table's first view when none).
    With ``view_type`` the view must be of that type (400 otherwise)."""
    p = make_page(conn, cat, access)
    t = visible_table(p, app_key, table_key)
    state = GridState.from_request()
    view = resolve_view(p, t, state.view)
    if view_type is not None and (view is None or view.get("type", "grid") != view_type):
        raise BadRequest(f"not a {view_type} view")
    if view is not None and state.view is None:
        state.view = view["key"]
    return TableContext(p, cat.app(app_key), t, state, view)


def clean_view(p: Page, t: TableDef, v: dict[str, Any]) -> dict[str, Any]:
    """A stored personal view with the fields that no longer exist left out (a field may be deleted later)."""
    out = dict(v)
    keys = t.fields_by_key
    out["fields"] = [k for k in v.get("fields") or [] if k in keys]
    out["sort"] = [s for s in v.get("sort") or [] if isinstance(s, str) and s.lstrip("-") in keys]
    out["group_by"] = [k for k in v.get("group_by") or [] if k in keys]
    opts = dict(v.get("options") or {})
    opts["column_widths"] = {k: w for k, w in (opts.get("column_widths") or {}).items() if k in keys}
    out["options"] = opts
    out["type"] = "grid"
    if not out.get("filter"):
        out.pop("filter", None)
    return out


def new_personal_key(existing: list[dict[str, Any]]) -> str:
    taken = {v["key"] for v in existing}
    while True:
        key = PERSONAL_PREFIX + secrets.token_hex(4)
        if key not in taken:
            return key


def view_label(p: Page, v: dict[str, Any]) -> str:
    return label_text(v.get("label"), p.locale) or ""


@dataclass
class Layout:
    """The grid's columns as this user sees them now."""

    cols: list[FieldDef]
    every: list[tuple[FieldDef, bool]]  # every readable field, in order, with whether it shows
    widths: dict[str, int] = field(default_factory=dict)
    freeze: int = 0
    height: str = "short"
    group: FieldDef | None = None
    mine: bool = False  # the user's own changes are applied over the view's layout

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.cols]


def pref_key(view: dict[str, Any] | None) -> str:
    return view["key"] if view else ALL_RECORDS


def groupable(p: Page, f: FieldDef) -> bool:
    return f.ftype.value_kind(f, p.cat) in GROUP_KINDS and not f.ftype.is_many_lookup(f, p.cat)


def layout(p: Page, t: TableDef, view: dict[str, Any] | None, prefs: dict[str, Any] | None = None) -> Layout:
    """The view's column layout with the user's own preferences for it laid over (a personal view keeps
    its layout in itself, so it has no separate preferences)."""
    readable = shown_fields(p, t)
    by_key = {f.key: f for f in readable}
    opts = (view or {}).get("options") or {}
    vfields = [k for k in (view or {}).get("fields") or [] if k in by_key]
    order = vfields + [f.key for f in readable if f.key not in vfields]
    hidden = {f.key for f in readable if f.key not in vfields} if vfields else set()
    widths = {k: int(w) for k, w in (opts.get("column_widths") or {}).items() if k in by_key}
    freeze = int(opts.get("frozen_columns") or 0)
    height = opts.get("row_height") or "short"
    gkeys = (view or {}).get("group_by") or []
    group = gkeys[0] if gkeys else ""
    mine = False
    if prefs is None and not is_personal(pref_key(view)):
        prefs = (load(p, t).get("prefs") or {}).get(pref_key(view))
    if isinstance(prefs, dict) and prefs:
        mine = True
        if isinstance(prefs.get("order"), list):
            seen = [k for k in prefs["order"] if k in by_key]
            order = list(dict.fromkeys(seen + order))
        if isinstance(prefs.get("hidden"), list):
            known = set(prefs.get("order") or []) if isinstance(prefs.get("order"), list) else set()
            # a field the user's layout doesn't know yet (added later) keeps the view's choice
            hidden = {k for k in prefs["hidden"] if k in by_key} | {k for k in hidden if k not in known}
        if isinstance(prefs.get("widths"), dict):
            widths.update({k: int(w) for k, w in prefs["widths"].items() if k in by_key and isinstance(w, int)})
        if isinstance(prefs.get("freeze"), int):
            freeze = prefs["freeze"]
        if prefs.get("height") in HEIGHTS:
            height = prefs["height"]
        if isinstance(prefs.get("group"), str):
            group = prefs["group"]
    cols = [by_key[k] for k in order if k not in hidden]
    if not cols and readable:  # never an empty grid: the first column stays
        cols = [by_key[order[0]]]
        hidden.discard(order[0])
    gf = by_key.get(group) if group else None
    if gf is not None and not groupable(p, gf):
        gf = None
    return Layout(cols=cols, every=[(by_key[k], k not in hidden) for k in order],
                  widths={k: max(MIN_WIDTH, min(MAX_WIDTH, w)) for k, w in widths.items()},
                  freeze=max(0, min(MAX_FREEZE, freeze, len(cols))), height=height if height in HEIGHTS else "short",
                  group=gf, mine=mine)


def prefs_from_form(p: Page, t: TableDef, form: Any, current: Layout) -> dict[str, Any]:
    """The preferences a column-panel post describes; only fields the user can read are kept, and values out
    of range are clamped (bad input changes nothing it shouldn't)."""
    readable = {f.key for f in shown_fields(p, t)}
    out: dict[str, Any] = {}
    if "order" in form:
        out["order"] = [k for k in dict.fromkeys(form.getlist("order")) if k in readable][:500]
        shown = set(form.getlist("show"))
        out["hidden"] = [k for k in out["order"] if k not in shown]
        if len(out["hidden"]) == len(out["order"]) and out["order"]:  # at least one column stays
            out["hidden"] = out["hidden"][1:]
    else:
        out["order"] = [f.key for f, _ in current.every]
        out["hidden"] = [f.key for f, s in current.every if not s]
    widths = dict(current.widths)
    for k, v in form.items():
        if k.startswith("w.") and k[2:] in readable:
            try:
                widths[k[2:]] = max(MIN_WIDTH, min(MAX_WIDTH, int(float(v))))
            except ValueError:
                continue
    out["widths"] = widths
    try:
        out["freeze"] = max(0, min(MAX_FREEZE, int(form.get("freeze", current.freeze))))
    except ValueError:
        out["freeze"] = current.freeze
    h = form.get("height", current.height)
    out["height"] = h if h in HEIGHTS else current.height
    g = form.get("group", current.group.key if current.group else "")
    gf = t.fields_by_key.get(g) if g in readable else None
    out["group"] = gf.key if gf is not None and groupable(p, gf) else ""
    return out


def layout_into_view(lay: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    """A view document (or personal view) patched with a layout: its columns, widths, frozen columns, row
    height and grouping."""
    hidden = set(lay.get("hidden") or [])
    fields = [k for k in lay.get("order") or [] if k not in hidden]
    opts = dict(view.get("options") or {})
    if lay.get("widths"):
        opts["column_widths"] = dict(lay["widths"])
    else:
        opts.pop("column_widths", None)
    if lay.get("freeze"):
        opts["frozen_columns"] = int(lay["freeze"])
    else:
        opts.pop("frozen_columns", None)
    opts["row_height"] = lay.get("height") or "short"
    out = {**view, "fields": fields, "options": opts}
    out["group_by"] = [lay["group"]] if lay.get("group") else []
    return out


def group_key(value: Any, kind: str) -> str:
    """A grouping value as a string that matches between a record's value and the aggregate's group key."""
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, dict):
        return str(value.get("id"))
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(group_key(v, kind) for v in value)
    return str(value)[:10] if kind == DATE else str(value)
