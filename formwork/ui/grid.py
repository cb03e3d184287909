"""The home page, app pages and table pages: the grid, its rows and count, the filter builder, inline
editing, quick add and bulk delete. A table page shows its current view, whatever its type."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request, url_for

from formwork.errors import BadRequest, Conflict, PreconditionFailed, ValidationFailed
from formwork.metadata.catalog import AppDef, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import NUMBER
from formwork.ui import conditions, i18n
from formwork.ui.boards import calendar_data, gallery_data, kanban_data
from formwork.ui.context import (
    FILTER_NAME,
    PAGE_SIZE,
    GridState,
    Page,
    current_view,
    htmx,
    make_page,
    parse_version,
    render,
    shown_fields,
    visible_app,
    visible_apps,
    visible_dashboards,
    visible_table,
    visible_tables,
    writable,
)
from formwork.ui.inputs import input_options, parse_form
from formwork.ui.render import choice_map
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()
COUNT_CAP = 1000


@routes.get("/")
def home() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        return home_response(make_page(conn, cat, access))


def home_response(p: Page, app_values: dict[str, Any] | None = None,
                  app_errors: dict[str, list[str]] | None = None) -> Response:
    """The apps; with the new-app form's values and errors when creating an app failed."""
    apps = [{"app": app, "tables": visible_tables(p, app)} for app in visible_apps(p)]
    return render(p, "home.html", 422 if app_errors else 200, apps=apps, app_values=app_values or {},
                  app_errors=app_errors or {})


@routes.get("/apps/<app_key>")
def app_page(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        tables = visible_tables(p, app)
        if tables:
            return table_page_response(p, app, tables[0])
        return render(p, "app_empty.html", app=app, tables=[])


@routes.get("/apps/<app_key>/<table_key>")
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
                           "dashboards": visible_dashboards(p, app), "filter_fields": filter_fields(p, t),
                           **filter_builder(p, t, state)}
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


def filter_builder(p: Page, t: TableDef, state: GridState) -> dict[str, Any]:
    """The grid's filter panel: the shared condition builder holding the URL's ``filter.*`` conditions,
    their mistakes shown next to the inputs."""
    from werkzeug.datastructures import MultiDict

    form = MultiDict(state.filter_items) if state.filter_items else None
    if form is None and (state.conds or state.filter):
        # conditions a link carried in (older ff/fo/fv rows, a dashboard's drill-down tree): shown in the
        # builder when it can say them exactly, so applying or exporting keeps them; otherwise carried as
        # they came, in hidden inputs
        try:
            tree = state.tree(p, t)
            shown = conditions.builder(p, t, tree, name=FILTER_NAME)
            if conditions.parse(p, t, MultiDict(conditions.form_items(shown)), name=FILTER_NAME) == tree:
                return {"cb": shown, "filter_error": None, "carry": []}
        except (conditions.ConditionError, BadRequest):
            pass
        carry = [(k, v) for f, o, v0 in state.conds for k, v in (("ff", f), ("fo", o), ("fv", v0))]
        if state.filter:
            carry.append(("filter", state.filter))
        return {"cb": conditions.builder(p, t, None, name=FILTER_NAME), "filter_error": None, "carry": carry}
    try:
        if form is not None:
            conditions.parse(p, t, form, name=FILTER_NAME)
        return {"cb": conditions.builder(p, t, None, name=FILTER_NAME, form=form), "filter_error": None,
                "carry": []}
    except conditions.ConditionError as e:
        return {"cb": conditions.builder(p, t, None, name=FILTER_NAME, form=form, errors=e.errors),
                "filter_error": e.message, "carry": []}
    except BadRequest as e:
        return {"cb": conditions.builder(p, t, None, name=FILTER_NAME), "filter_error": e.message, "carry": []}


def filter_fields(p: Page, t: TableDef) -> list[dict[str, Any]]:
    """Fields the viewer may filter on, with their operators (what the filter builder offers)."""
    hidden = p.access.unreadable_fields(p.cat, t)
    out = []
    for f in t.fields:
        if f.key in hidden:
            continue
        out.append({"key": f.key, "label": p.label(f.label), "ops": list(f.ftype.operators(f, p.cat)),
                    "kind": f.ftype.value_kind(f, p.cat), "choices": choice_map(f, p.locale)
                    if f.ftype.has_choices else {}})
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


@routes.get("/apps/<app_key>/<table_key>/rows")
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


@routes.get("/apps/<app_key>/<table_key>/count")
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


SUMMARY_FUNCTIONS = ("sum", "avg", "min", "max")


@routes.get("/apps/<app_key>/<table_key>/summary")
def grid_summary(app_key: str, table_key: str) -> Response:
    """The grid's summary row over every record the filter matches (not only the page shown): per number
    column the chosen function (sum by default; ``fn_<key>`` picks avg, min or max), in one query."""
    from formwork.runtime.aggregate import aggregate

    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        state = GridState.from_request()
        view = current_view(t, state.view)
        cols = grid_columns(p, t, view)
        chosen: dict[str, str] = {}
        for f in cols:
            if f.ftype.value_kind(f, p.cat) == NUMBER and not f.ftype.is_many_lookup(f, p.cat):
                fn = request.args.get(f"fn_{f.key}", "sum")
                chosen[f.key] = fn if fn in SUMMARY_FUNCTIONS else "sum"
        try:
            rows = aggregate(p.conn, p.cat, p.access, t, metrics=["count", *[f"{fn}:{k}" for k, fn in chosen.items()]],
                             filter_tree=state.tree(p, t), view=view, search=state.search or None)
        except BadRequest:
            return Response("", mimetype="text/html")
        totals = rows[0] if rows else {}
        r = p.renderer(app.key)
        cells: list[dict[str, Any] | None] = []
        for f in cols:
            if f.key in chosen:
                value = totals.get(f"{chosen[f.key]}:{f.key}")
                cells.append({"key": f.key, "fn": chosen[f.key], "label": p.label(f.label),
                              "html": r.cell(f, value) if value is not None else ""})
            else:
                cells.append(None)
        return render(p, "_summary.html", app=app, t=t, state=state, cells=cells, count=totals.get("count", 0),
                      functions=[(fn, p.t(f"builder_fn_{fn}")) for fn in SUMMARY_FUNCTIONS])


@routes.get("/apps/<app_key>/<table_key>/filter-row")
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


@routes.get("/apps/<app_key>/<table_key>/<int:rid>/row")
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
        return grid_row_response(p, app, t, rid, view, editing=editing, version=parse_version(request.args.get("v")))


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/cell/<field_key>")
def save_cell(app_key: str, table_key: str, rid: int, field_key: str) -> Response:
    """Save one cell with the row's version (If-Match); a stale version says so instead of overwriting."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        view = current_view(t, request.form.get("view"))
        f = t.field(field_key)
        version = parse_version(request.form.get("version"))
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


@routes.post("/apps/<app_key>/<table_key>/quick-add")
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


def selected_ids() -> list[int]:
    ids = []
    for raw in request.form.getlist("ids"):
        if not raw.isdigit():
            raise BadRequest("ids must be record ids")
        ids.append(int(raw))
    return sorted(set(ids))


@routes.get("/apps/<app_key>/<table_key>/bulk-edit/input")
def bulk_edit_input(app_key: str, table_key: str) -> Response:
    """The value input of the bulk-edit bar, fitting the chosen field."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        f = t.fields_by_key.get(request.args.get("bulk_field") or "")
        if f is None or not writable(p, t, f):
            return Response("", mimetype="text/html")
        return render(p, "_bulk_input.html", app=app, t=t, f=f, options=input_options(p, t, [f]))


@routes.post("/apps/<app_key>/<table_key>/bulk-edit")
def bulk_edit(app_key: str, table_key: str) -> Response:
    """Set one field to one value on the selected records (each through RecordService: rules, history)."""
    access = current_access()
    ids = selected_ids()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        if not ids:
            raise BadRequest(p.t("builder_select_rows"))
        f = t.fields_by_key.get(request.form.get("bulk_field") or "")
        if f is None or not writable(p, t, f):
            raise BadRequest(p.t("builder_bulk_pick_field"))
        data = parse_form(p, t, [f], request.form)
        data.setdefault(f.key, None)
        try:
            with conn.begin_nested():
                p.service().update_many(t, [{"id": rid, "fields": data} for rid in ids])
        except (ValidationFailed, Conflict) as e:
            msgs = sorted({m for v in (e.details or {}).values() for m in v}) or [e.message]
            return render(p, "_toast.html", 422, kind="error", message="; ".join(msgs))
    resp = Response(status=204)
    resp.headers["HX-Refresh"] = "true"
    return resp


@routes.post("/apps/<app_key>/<table_key>/bulk-delete")
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
