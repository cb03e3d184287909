"""The home page, app pages and table pages: the grid, its rows and count, the filter builder, inline
editing, quick add and bulk delete. A table page shows its current view, whatever its type."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request, url_for

from formwork.errors import BadRequest, Conflict, FormworkError, PreconditionFailed, ValidationFailed
from formwork.metadata.catalog import AppDef, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import FILES, NUMBER
from formwork.ui import conditions, i18n
from formwork.ui.boards import calendar_data, gallery_data, kanban_data
from formwork.ui.context import (
    FILTER_NAME,
    PAGE_SIZE,
    GridState,
    Page,
    htmx,
    make_page,
    parse_version,
    render,
    visible_app,
    visible_apps,
    visible_dashboards,
    visible_table,
    visible_tables,
    writable,
)
from formwork.ui.engine_messages import refusal
from formwork.ui.gridlayout import Layout, group_key, layout, resolve_view, table_context
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
    view = resolve_view(p, t, state.view)
    if view is not None and state.view is None:
        state.view = view["key"]
    vtype = view.get("type", "grid") if view else "grid"
    if vtype == "form":
        return redirect(url_for("ui.form_page", app_key=app.key, table_key=t.key,  # type: ignore[return-value]
                                view_key=view["key"]))  # type: ignore[index]
    from formwork.ui import gridlayout

    ctx: dict[str, Any] = {"app": app, "t": t, "view": view, "vtype": vtype, "state": state,
                           "can_build": p.access.can_build(), "personal_views": gridlayout.personal_views(p, t),
                           "panel_open": False,
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
    """The columns shown: the view's, with the user's own show/hide and order laid over."""
    return layout(p, t, view).cols


def grid_sort(state: GridState, lay: Layout) -> str | None:
    """The rows' order: grouped rows come by their group first, then the chosen sort."""
    if lay.group is None:
        return state.sort or None
    rest = [s for s in state.sort.split(",") if s and s.lstrip("-") != lay.group.key]
    if not rest and not state.sort:
        return lay.group.key  # the view's own sort is then lost; the group order matters more
    return ",".join([lay.group.key, *rest])


def group_totals(p: Page, t: TableDef, view: dict[str, Any] | None, state: GridState,
                 lay: Layout) -> dict[str, dict[str, Any]]:
    """Per group of the grouping field: the count and the sums of the shown number columns, over every
    record the filter matches (one GROUP BY)."""
    from formwork.runtime.aggregate import aggregate

    gf = lay.group
    if gf is None:
        return {}
    nums = [f for f in lay.cols if f.ftype.value_kind(f, p.cat) == NUMBER and not f.ftype.is_many_lookup(f, p.cat)]
    spec = gf.key + (":day" if gf.ftype.value_kind(gf, p.cat) == "date" else "")
    try:
        rows = aggregate(p.conn, p.cat, p.access, t, group_by=[spec],
                         metrics=["count", *[f"sum:{f.key}" for f in nums]], filter_tree=state.tree(p, t),
                         view=view, search=state.search or None, limit=1000)
    except BadRequest:
        return {}
    kind = gf.ftype.value_kind(gf, p.cat)
    return {group_key(r["key"].get(gf.key), kind): r for r in rows}


def group_head(p: Page, r: Any, lay: Layout, gval: Any, gk: str, totals: dict[str, Any]) -> str:
    """The header row of one group: the group's value, its record count and the sums of number columns,
    each under its column; the toggle button collapses the group."""
    from markupsafe import escape

    gf = lay.group
    assert gf is not None
    label = r.cell(gf, gval) if gk else escape(p.t("empty_group"))
    text = r.text(gf, gval) if gk else p.t("empty_group")
    count = totals.get("count", 0)
    cells = [f'<td class="sel"><button type="button" class="group-toggle" aria-expanded="true" '
             f'aria-label="{escape(p.t("gv_toggle_group", group=text))}">▾</button></td>']
    for i, f in enumerate(lay.cols):
        if i == 0:
            cells.append(f'<td class="group-label"><span class="gv">{label}</span> <span class="group-count">'
                         f'{escape(p.t("gv_group_count", n=f"{count:,}"))}</span></td>')
        elif f.ftype.value_kind(f, p.cat) == NUMBER and totals.get(f"sum:{f.key}") is not None:
            cells.append(f'<td class="num group-sum" title="{escape(p.t("gv_sum_of", field=p.label(f.label)))}">'
                         f'Σ {r.cell(f, totals[f"sum:{f.key}"])}</td>')
        else:
            cells.append("<td></td>")
    return f'<tr class="group-head" data-g="{escape(gk)}">{"".join(cells)}</tr>'


def grid_rows(p: Page, app: AppDef, t: TableDef, view: dict[str, Any] | None, state: GridState,
              cursor: str | None = None, lay: Layout | None = None) -> dict[str, Any]:
    """One page of rows, cells rendered, plus the next cursor; a bad filter becomes a message. Grouped, a
    header row comes before each group's first row (the page after repeats none: grid.js drops a header
    that continues the group above)."""
    from markupsafe import Markup, escape

    lay = lay or layout(p, t, view)
    cols = lay.cols
    keys = [f.key for f in cols]
    if lay.group is not None and lay.group.key not in keys:
        keys.append(lay.group.key)
    try:
        result = p.reader().list(t, filter_tree=state.tree(p, t), sort=grid_sort(state, lay),
                                 search=state.search or None, fields=keys or None,
                                 limit=PAGE_SIZE, cursor=cursor, view=view)
    except BadRequest as e:
        return {"rows": [], "next_cursor": None, "cols": cols, "grid_error": e.message, "lay": lay}
    r = p.renderer(app.key)
    editable = {f.key for f in cols if writable(p, t, f)}
    base = f"/apps/{app.key}/{t.key}"
    primary = t.display_field.key if t.display_field else None
    open_label = p.t("gv_open_record")
    rows: list[Any] = []
    tails = upload_tails(p, t, cols)
    if lay.group is not None:
        gf = lay.group
        kind = gf.ftype.value_kind(gf, p.cat)
        totals = group_totals(p, t, view, state, lay)
        last: str | None = None
        for rec in result["records"]:
            gval = rec["fields"].get(gf.key)
            gk = group_key(gval, kind)
            if gk != last:
                rows.append(Markup(group_head(p, r, lay, gval, gk, totals.get(gk, {}))))
                last = gk
            rows.append(r.row(cols, rec, editable, base, primary, open_label, f' data-g="{escape(gk)}"', tails))
    else:
        rows = [r.row(cols, rec, editable, base, primary, open_label, "", tails) for rec in result["records"]]
    return {"rows": rows, "next_cursor": result["next_cursor"], "cols": cols, "editable": editable,
            "grid_error": None, "can_update": p.access.can_see_table(p.cat, t), "lay": lay}


def upload_tails(p: Page, t: TableDef, cols: list[FieldDef]) -> dict[str, str]:
    """The upload button of each attachment column the user may change (grid.js sends the chosen, dropped
    or pasted files to :func:`cell_upload`); its description names the field's limits."""
    from markupsafe import escape

    from formwork.ui.attachments import limits

    if not p.access.can(p.cat, t, "update"):
        return {}
    out = {}
    for f in cols:
        if f.ftype.kind != FILES or not f.stored or f.ftype.read_only or not p.access.field_writable(p.cat, t, f):
            continue
        lim = limits(f)
        sep = "" if p.locale.startswith("zh") else " "  # the Chinese wordings carry their own punctuation
        text = p.t("builder_file_limits", n=lim["max_files"])
        if lim["max_mb"]:
            text += sep + p.t("builder_file_limit_size", mb=lim["max_mb"])
        if lim["types"]:
            text += sep + p.t("builder_file_limit_types", types=", ".join(lim["types"]))
        label = p.label(f.label)
        data = ""
        if lim["max_size"]:
            too_big = p.t("builder_file_size", name="{name}", mb=lim["max_mb"])
            data += f' data-max-size="{int(lim["max_size"])}" data-too-big="{escape(too_big)}"'
        if lim["types"]:
            bad_type = p.t("builder_file_type", name="{name}", types=", ".join(lim["types"]))
            data += f' data-types="{escape(",".join(lim["types"]))}" data-bad-type="{escape(bad_type)}"'
        name = p.t("gv_upload_to", field=label)
        out[f.key] = (f'<button type="button" class="cell-upload" aria-label="{escape(name)}" '
                      f'title="{escape(p.t("gv_upload_limits", field=label, limits=text))}"{data}>+</button>')
    return out


def grid_data(p: Page, app: AppDef, t: TableDef, view: dict[str, Any] | None, state: GridState) -> dict[str, Any]:
    from formwork.ui import gridlayout

    lay = layout(p, t, view)
    data = grid_rows(p, app, t, view, state, lay=lay)
    data["sort_spec"] = {s.lstrip("-"): ("desc" if s.startswith("-") else "asc")
                         for s in state.sort.split(",") if s}
    data["group_fields"] = [f for f, _ in lay.every if gridlayout.groupable(p, f)]
    data["personal"] = gridlayout.is_personal(view["key"] if view else None)
    return data


@routes.get("/apps/<app_key>/<table_key>/rows")
def rows_fragment(app_key: str, table_key: str) -> Response:
    """The grid's rows only (for "load more" and refreshes): one SELECT plus one per to-many field."""
    access = current_access()
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key)
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        data = grid_rows(p, app, t, view, state, cursor=request.args.get("cursor") or None)
        return render(p, "_rows.html", app=app, t=t, view=view, state=state, **data)


@routes.get("/apps/<app_key>/<table_key>/count")
def count_fragment(app_key: str, table_key: str) -> Response:
    """A capped count ("1,000+"): the page never waits for an exact count of a big table."""
    access = current_access()
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key)
        p, t, state, view = c.p, c.t, c.state, c.view
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
        c = table_context(conn, cat, access, app_key, table_key)
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
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
                      message: str | None = None, raw: Any = None, version: int | None = None,
                      refused: list[str] | None = None) -> Response:
    """One grid row (a ``<tr>``), optionally with one cell open for editing, a message under it or what an
    upload into one of its cells was refused for."""
    from markupsafe import escape

    lay = layout(p, t, view)
    cols = lay.cols
    keys = [f.key for f in cols] + ([lay.group.key] if lay.group is not None and lay.group not in cols else [])
    rec = p.reader().get(t, rid, fields=keys or None)
    if editing and version is not None and version != rec["version"]:
        editing, message = None, p.t("stale")
    r = p.renderer(app.key)
    editable = {f.key for f in cols if writable(p, t, f)}
    gattr = ""
    if lay.group is not None:
        gk = group_key(rec["fields"].get(lay.group.key), lay.group.ftype.value_kind(lay.group, p.cat))
        gattr = f' data-g="{escape(gk)}"'
    row = {"rec": rec, "cells": [r.cell(f, rec["fields"].get(f.key)) for f in cols], "gattr": gattr,
           "html": r.row(cols, rec, editable, f"/apps/{app.key}/{t.key}",
                         t.display_field.key if t.display_field else None, p.t("gv_open_record"), gattr,
                         upload_tails(p, t, cols))}
    edit_field = t.fields_by_key.get(editing) if editing else None
    edit_value = raw if raw is not None else (rec["fields"].get(editing) if editing else None)
    return render(p, "_row.html", app=app, t=t, view=view, row=row, cols=cols, state=GridState(
        view=view["key"] if view else None), editing=editing, edit_field=edit_field, edit_value=edit_value,
        edit_version=version, errors=errors or {}, message=message, refused=refused,
        options=input_options(p, t, [edit_field] if edit_field else []))


@routes.get("/apps/<app_key>/<table_key>/<int:rid>/row")
def grid_row(app_key: str, table_key: str, rid: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key)
        p, app, t, view = c.p, c.app, c.t, c.view
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
        c = table_context(conn, cat, access, app_key, table_key)
        p, app, t, view = c.p, c.app, c.t, c.view
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


@routes.post("/apps/<app_key>/<table_key>/<int:rid>/cell/<field_key>/files")
def cell_upload(app_key: str, table_key: str, rid: int, field_key: str) -> Response:
    """Files chosen, dropped or pasted onto an attachment cell: the record page's upload path (its limits,
    all or nothing, one update the history names, the field and record editable by the user); answers the
    row with the new thumbnails, or (422) the row with the refusal naming the limit under it."""
    from formwork.ui import attachments

    access = current_access()
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key)
        f = attachments.file_field(c.t, field_key)
        errors = attachments.add_files(c.p, c.t, rid, f, attachments.posted_files())
        resp = grid_row_response(c.p, c.app, c.t, rid, c.view, refused=errors or None)
        if errors:
            resp.status_code = 422
        return resp


@routes.post("/apps/<app_key>/<table_key>/quick-add")
def quick_add(app_key: str, table_key: str) -> Response:
    """Add a record from the grid by its display field; the new row is prepended."""
    access = current_access()
    with unit() as (conn, cat):
        c = table_context(conn, cat, access, app_key, table_key)
        p, app, t = c.p, c.app, c.t
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
        return grid_row_response(p, app, t, rec["id"], c.view)


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
            msgs = refusal(e, p.locale)
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


# --- the grid's layout, personal and shared views, paste -------------------------------------------------
@routes.post("/apps/<app_key>/<table_key>/grid-layout")
def grid_layout(app_key: str, table_key: str) -> Response:
    """Keep the user's column layout of this grid (order, shown, widths, frozen columns, row height,
    grouping) and show the grid with it. On a personal view the layout goes into the view itself; on a
    shared view or "All records" into the user's own preferences, so nobody else's grid changes.
    ``quiet=1`` (a column resize) answers 204."""
    from formwork.ui import gridlayout

    access = current_access()
    with unit() as (conn, cat):
        c = gridlayout.table_context(conn, cat, access, app_key, table_key)
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        data = gridlayout.load(p, t)
        if view is not None and gridlayout.is_personal(view["key"]):
            lay = gridlayout.prefs_from_form(p, t, request.form, layout(p, t, view))
            views = [gridlayout.layout_into_view(lay, v) if v.get("key") == view["key"] else v
                     for v in gridlayout.personal_views(p, t)]
            data["views"] = views
        else:
            prefs = dict(data.get("prefs") or {})
            if request.form.get("reset"):
                prefs.pop(gridlayout.pref_key(view), None)
            else:
                prefs[gridlayout.pref_key(view)] = gridlayout.prefs_from_form(p, t, request.form, layout(p, t, view))
            data["prefs"] = prefs
        gridlayout.store(p, t, data)
        if request.form.get("quiet"):
            return Response(status=204)
        resp = table_page_response(p, app, t)
        if "HX-Push-Url" in resp.headers:  # the address stays the table's, not this POST's
            resp.headers["HX-Push-Url"] = f"/apps/{app.key}/{t.key}?{state.qs()}"
        return resp


@routes.post("/apps/<app_key>/<table_key>/grid-layout/to-view")
def grid_layout_to_view(app_key: str, table_key: str) -> Response:
    """A builder saves the layout they see into the shared view, for everyone (through MetadataService:
    the build right, validation and the change log, as the API's view PATCH)."""
    from formwork.metadata.service import MetadataService
    from formwork.runtime import auth
    from formwork.runtime.previews import builder_actor
    from formwork.ui import gridlayout
    from formwork.web import client_ip

    access = current_access()
    with unit() as (conn, cat):
        c = gridlayout.table_context(conn, cat, access, app_key, table_key)
        p, t, view = c.p, c.t, c.view
        if view is None or gridlayout.is_personal(view["key"]) or not access.can_build():
            return render(p, "_toast.html", 403, kind="error", message=p.t("forbidden"))
        auth.audit_meta_change(conn, access, request.method, request.path, client_ip())
        svc = MetadataService(conn, builder_actor(access, client_ip()), cat)
        lay = gridlayout.prefs_from_form(p, t, request.form, layout(p, t, view))
        doc = gridlayout.layout_into_view(lay, {k: view[k] for k in ("fields", "options", "group_by") if k in view})
        with conn.begin_nested():
            svc.update_doc("view", app_key, view["key"], doc, t.key)
        data = gridlayout.load(p, t)  # the user's own layout of the view is now the view's
        prefs = dict(data.get("prefs") or {})
        prefs.pop(view["key"], None)
        data["prefs"] = prefs
        gridlayout.store(p, t, data)
        return Response(p.t("gv_saved_to_view"), mimetype="text/html")


@routes.post("/apps/<app_key>/<table_key>/views/save")
def save_grid_view(app_key: str, table_key: str) -> Response:
    """ "Save as view": the page's filter, sort, search-free query, grouping and columns as a new view: the
    user's own (stored under their id, seen by nobody else), or with "share" (builders only) a view document
    everyone who reads the table sees. Then the page opens it."""
    from formwork.metadata.keys import derive_key
    from formwork.metadata.service import MetadataService
    from formwork.runtime import auth
    from formwork.runtime.previews import builder_actor
    from formwork.ui import gridlayout
    from formwork.web import client_ip

    access = current_access()
    with unit() as (conn, cat):
        c = gridlayout.table_context(conn, cat, access, app_key, table_key)
        p, app, t, state, view = c.p, c.app, c.t, c.state, c.view
        label = (request.form.get("label") or "").strip()[:200]
        share = bool(request.form.get("share")) and access.can_build()
        base = f"/apps/{app.key}/{t.key}"

        def again(message: str) -> Response:
            return render(p, "_save_view.html", base=base, save_error=message, save_label=label,
                          save_share=share, can_build=access.can_build())

        if not label:
            return again(p.t("gv_view_name_needed"))
        try:
            tree = state.tree(p, t)
        except BadRequest as e:
            return again(e.message)
        lay = layout(p, t, view)
        parts = [y for x in ((view or {}).get("filter"), tree) if x
                 for y in (x["and"] if isinstance(x, dict) and list(x) == ["and"] else [x])]
        doc: dict[str, Any] = {"label": label, "type": "grid"}
        if parts:
            doc["filter"] = parts[0] if len(parts) == 1 else {"and": parts}
        sort = [s for s in state.sort.split(",") if s] or list((view or {}).get("sort") or [])
        if sort:
            doc["sort"] = sort
        doc = gridlayout.layout_into_view({"order": [f.key for f, _ in lay.every],
                                           "hidden": [f.key for f, shown in lay.every if not shown],
                                           "widths": lay.widths, "freeze": lay.freeze, "height": lay.height,
                                           "group": lay.group.key if lay.group else ""}, doc)
        if not doc["group_by"]:
            doc.pop("group_by")
        if share:
            auth.audit_meta_change(conn, access, request.method, request.path, client_ip())
            svc = MetadataService(conn, builder_actor(access, client_ip()), cat)
            taken = {v["key"] for v in t.views}
            key = derive_key(label, taken, "view")
            try:
                with conn.begin_nested():
                    saved = svc.create_doc("view", app.key, {"key": key, **doc}, t.key)
            except (ValidationFailed, Conflict, BadRequest) as e:
                return again(e.message)
            key = saved["key"]
        else:
            views = gridlayout.personal_views(p, t)
            if any(gridlayout.view_label(p, v) == label for v in views):
                return again(p.t("gv_view_exists"))
            if len(views) >= gridlayout.MAX_VIEWS:
                return again(p.t("gv_too_many_views"))
            try:  # the filter and sort must work before they are kept (a link may carry any filter tree)
                p.reader().list(t, limit=1, view={"key": "my-check", **doc}, fields=[f.key for f in lay.cols] or None)
            except BadRequest as e:
                return again(e.message)
            key = gridlayout.new_personal_key(views)
            data = gridlayout.load(p, t)
            data["views"] = [*views, {"key": key, **doc}]
            gridlayout.store(p, t, data)
        resp = Response(status=204)
        resp.headers["HX-Redirect"] = f"{base}?view={key}"
        return resp


@routes.post("/apps/<app_key>/<table_key>/views/<view_key>/forget")
def forget_grid_view(app_key: str, table_key: str, view_key: str) -> Response:
    """Delete one of the user's personal views (only their own exist for them)."""
    from formwork.ui import gridlayout

    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        t = visible_table(p, app_key, table_key)
        views = gridlayout.personal_views(p, t)
        if not gridlayout.is_personal(view_key) or not any(v["key"] == view_key for v in views):
            raise BadRequest(p.t("forbidden"))
        data = gridlayout.load(p, t)
        data["views"] = [v for v in views if v["key"] != view_key]
        gridlayout.store(p, t, data)
    return redirect(f"/apps/{app_key}/{table_key}?view=_all")  # type: ignore[return-value]


MAX_PASTE_CELLS = 2000
TRUE_WORDS = {"true", "1", "yes", "y", "on", "是", "✓", "✔", "x", "对"}


def paste_value(p: Page, t: TableDef, f: FieldDef, text: str) -> tuple[dict[str, Any], str | None]:
    """A pasted cell's text as the field's value (API shape), or the reason it can't be: options are
    matched by their label in either language or their value; numbers may carry thousands separators."""
    from werkzeug.datastructures import MultiDict

    kind = f.ftype.input_kind
    text = text.strip()
    if not writable(p, t, f) or kind in (None, "records", "users"):
        return {}, p.t("gv_paste_readonly")
    if kind == "checkbox":
        return {f.key: text.lower() in TRUE_WORDS}, None
    if f.ftype.has_choices:
        by_label: dict[str, str] = {}
        for loc in ("en", "zh-CN"):
            for value, (label, _c) in choice_map(f, loc).items():
                by_label.setdefault(label.casefold(), value)
                by_label.setdefault(value.casefold(), value)
        parts = [x.strip() for x in text.replace("，", ",").split(",") if x.strip()] if kind == "checks" else \
            ([text] if text else [])
        values = []
        for part in parts:
            v = by_label.get(part.casefold())
            if v is None:
                return {}, p.t("gv_paste_not_option", value=part[:60])
            values.append(v)
        if kind == "checks":
            return {f.key: values}, None
        return {f.key: values[0] if values else None}, None
    if kind == "number" and text:
        cleaned = text.replace(",", "").replace("，", "").replace(" ", "").replace("¥", "").replace("$", "")
        try:
            float(cleaned.rstrip("%"))
        except ValueError:
            return {}, p.t("gv_not_number", value=text[:60])
        text = cleaned
    return parse_form(p, t, [f], MultiDict({f.key: text})), None


@routes.post("/apps/<app_key>/<table_key>/paste")
def paste_cells(app_key: str, table_key: str) -> Response:
    """Cells pasted from a spreadsheet (TSV split by grid.js into ``cell`` = "<record id>:<field key>" and
    ``value`` pairs): each row is one update through RecordService (permissions, validation, rules,
    history), in its own savepoint, so a row with any bad cell changes nothing and the others are saved.
    Answers JSON: the saved rows' new HTML and the refused cells' messages, by record id and field."""
    import json

    access = current_access()
    cells = request.form.getlist("cell")
    values = request.form.getlist("value")
    with unit() as (conn, cat):
        tc = table_context(conn, cat, access, app_key, table_key)
        p, app, t, view = tc.p, tc.app, tc.t, tc.view
        if not cells or len(cells) != len(values) or len(cells) > MAX_PASTE_CELLS:
            raise BadRequest(p.t("fix_errors"))
        by_row: dict[int, dict[str, str]] = {}
        for c, v in zip(cells, values, strict=True):
            raw_id, _, key = c.partition(":")
            if not raw_id.isdigit() or key not in t.fields_by_key:
                raise BadRequest(p.t("fix_errors"))
            by_row.setdefault(int(raw_id), {})[key] = v
        errors: dict[str, dict[str, list[str]]] = {}
        saved: list[int] = []
        svc = p.service()
        for rid, row in by_row.items():
            data: dict[str, Any] = {}
            errs: dict[str, list[str]] = {}
            for key, text in row.items():
                part, err = paste_value(p, t, t.fields_by_key[key], text)
                if err:
                    errs[key] = [err]
                data.update(part)
            if not errs:
                try:
                    with conn.begin_nested():
                        svc.update(t, rid, data)
                    saved.append(rid)
                except (ValidationFailed, Conflict) as e:
                    errs = {k: list(v) for k, v in (e.details or {}).items() if k in row} or \
                        {next(iter(row)): [e.message]}
                except FormworkError as e:  # a record gone, unreadable or not the user's to change
                    errs = {next(iter(row)): [e.message]}
            if errs:
                errors[str(rid)] = errs
        rows: dict[str, str] = {}
        for done in saved:
            rows[str(done)] = grid_row_response(p, app, t, done, view).get_data(as_text=True)
        message = p.t("gv_paste_bad") if errors else p.t("gv_pasted", n=len(saved))
        body = json.dumps({"rows": rows, "errors": errors, "message": message}, ensure_ascii=False)
        return Response(body, mimetype="application/json", status=200)
