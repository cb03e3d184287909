"""The dashboard builder: create a dashboard, add, edit, duplicate, remove, reorder and resize widgets, set
the dashboard's filters, sharing and scheduled emails. Every change goes through MetadataService (the same
validation and rights as the API); its errors are shown next to the input that caused them."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, redirect, request, url_for
from sqlalchemy import select

from formwork import db
from formwork.errors import BadRequest, Conflict, Forbidden, FormworkError, NotFound, ValidationFailed
from formwork.metadata.catalog import AppDef
from formwork.metadata.fieldtypes.base import DATE, DATETIME, NUMBER, USER
from formwork.metadata.service import MetadataService
from formwork.runtime import auth
from formwork.runtime.aggregate import BUCKETS
from formwork.runtime.dashboards import PERIODS
from formwork.ui import conditions
from formwork.ui.charts import field_label, metric_label
from formwork.ui.context import Page, htmx, make_page, render, visible_app, visible_dashboards, visible_tables
from formwork.web import RouteSet, client_ip, current_access, unit

routes = RouteSet()
TYPES = ("kpi", "bar", "stacked_bar", "line", "area", "pie", "donut", "funnel", "table", "pivot", "gauge")
FUNCTIONS = ("count", "count_distinct", "sum", "avg", "min", "max")
WIDTHS = (3, 4, 6, 8, 12)
#: where a metadata error's JSON pointer (after /widgets/<i>/) is shown in the widget form
WIDGET_INPUTS = {"table": "table", "type": "type", "group_by": "g1", "metrics": "field", "ratio_of": "field2",
                 "date_field": "date_field", "filter": "filter", "sort": "sort", "limit": "limit", "goal": "goal",
                 "target": "target_table", "label": "label", "colors": "color", "width": "width", "height": "height"}


def builder(conn: Any, cat: Any, access: Any) -> tuple[Page, MetadataService]:
    if not access.can_build():
        raise Forbidden("you may not change app definitions")
    p = make_page(conn, cat, access)
    if request.method not in ("GET", "HEAD"):
        auth.audit_meta_change(conn, access, request.method, request.path, client_ip())
    return p, MetadataService(conn, access.actor(client_ip()), cat)


def dashboard_of(app: AppDef, key: str) -> dict[str, Any]:
    doc = next((d for d in app.dashboards if d["key"] == key), None)
    if doc is None:
        raise NotFound(f"no dashboard '{key[:100]}' in app '{app.key}'")
    return {k: v for k, v in doc.items() if k != "id"}


def new_key(base: str, taken: set[str], prefix: str) -> str:
    slug = re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_")[:40]
    slug = slug if slug and slug[0].isalpha() else prefix
    key, n = slug, 1
    while key in taken:
        n += 1
        key = f"{slug}_{n}"
    return key


def error_text(p: Page, e: FormworkError) -> str:
    """A metadata error in the reader's language: our own words, the engine's detail after them."""
    details = [m for msgs in (e.details or {}).values() for m in (msgs if isinstance(msgs, list) else [msgs])]
    return p.t("dashb_invalid", reason="; ".join(details) or e.message)


def widget_errors(p: Page, e: FormworkError, index: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for ptr, msgs in (e.details or {}).items():
        parts = [x for x in str(ptr).split("/") if x]
        name = ""
        if parts[:2] == ["widgets", str(index)] and len(parts) > 2:
            name = WIDGET_INPUTS.get(parts[2], "")
            if parts[2] in ("group_by",) and len(parts) > 3 and parts[3] == "1":
                name = "g2"
            if parts[2] == "metrics" and len(parts) > 3 and parts[3] == "1":
                name = "field2"
        text = p.t(f"dashb_err_{name}") if name else "; ".join(msgs if isinstance(msgs, list) else [str(msgs)])
        out[name] = (out[name] + " " if name in out else "") + text
    if not out:
        out[""] = error_text(p, e)
    return out


# --- forms ↔ widget documents ----------------------------------------------------------------------
def widget_values(w: dict[str, Any]) -> dict[str, Any]:
    gb = list(w.get("group_by") or [])
    metrics = list(w.get("ratio_of") or w.get("metrics") or ["count"])
    v: dict[str, Any] = {"label": w.get("label") if isinstance(w.get("label"), str) else
                         (w.get("label") or {}).get("en", ""),
                         "label_zh": w["label"].get("zh-CN", "") if isinstance(w.get("label"), dict) else "",
                         "table": w.get("table", ""), "type": w.get("type", "bar"),
                         "combine": "ratio" if w.get("ratio_of") else "both",
                         "date_field": w.get("date_field", ""), "limit": w.get("limit", ""),
                         "format": w.get("format", "number"), "width": w.get("width", 6), "height": w.get("height", 2),
                         "color": (w.get("colors") or [""])[0], "goal": w.get("goal", ""),
                         "sort": w.get("sort", "")}
    for i, spec in enumerate(gb[:2], 1):
        key, _, bucket = spec.partition(":")
        v[f"g{i}"], v[f"b{i}"] = key, bucket
    for i, m in enumerate(metrics[:2]):
        fn, _, key = m.partition(":")
        v["fn" if i == 0 else "fn2"], v["field" if i == 0 else "field2"] = fn, key
    tg = w.get("target") or {}
    v.update(target_table=tg.get("table", ""), target_amount=tg.get("amount", ""), target_date=tg.get("date", ""),
             target_owner=tg.get("owner", ""))
    return v


def widget_from_form(form: Any, key: str, keep: dict[str, Any] | None = None) -> dict[str, Any]:
    w: dict[str, Any] = {"key": key, "type": form.get("type") or "bar", "table": form.get("table") or ""}
    en, zh = (form.get("label") or "").strip(), (form.get("label_zh") or "").strip()
    if en or zh:
        w["label"] = {"en": en or zh, "zh-CN": zh or en}
    gb = []
    for i in (1, 2):
        g = form.get(f"g{i}") or ""
        if g:
            b = form.get(f"b{i}") or ""
            gb.append(f"{g}:{b}" if b else g)
    if gb and w["type"] not in ("kpi", "gauge"):
        w["group_by"] = gb

    def metric(fn: str, field: str) -> str:
        return "count" if fn == "count" or not fn else f"{fn}:{field}"

    m1 = metric(form.get("fn") or "count", form.get("field") or "")
    m2 = metric(form.get("fn2") or "", form.get("field2") or "") if form.get("fn2") else None
    if m2 and form.get("combine") == "ratio":
        w["ratio_of"] = [m1, m2]
        w["metrics"] = [m1]
    else:
        w["metrics"] = [m1] + ([m2] if m2 and m2 != m1 else [])
    for name in ("date_field", "sort"):
        if form.get(name):
            w[name] = form.get(name)
    if form.get("format") in ("currency", "percent"):
        w["format"] = form.get("format")
    for name, lo, hi in (("limit", 1, 1000), ("width", 1, 12), ("height", 1, 4)):
        raw = (form.get(name) or "").strip()
        if raw:
            try:
                w[name] = max(lo, min(hi, int(raw)))
            except ValueError:
                raise ValidationFailed.from_details({f"/widgets/0/{name}": ["must be a whole number"]}) from None
    if form.get("goal"):
        try:
            w["goal"] = float(form.get("goal"))
        except ValueError:
            raise ValidationFailed.from_details({"/widgets/0/goal": ["must be a number"]}) from None
    color = form.get("color") or ""
    if re.fullmatch(r"#[0-9a-fA-F]{6}", color) and color.lower() != "#000000":
        w["colors"] = [color]
    if form.get("target_table") and form.get("target_amount"):
        w["target"] = {"table": form["target_table"], "amount": form["target_amount"],
                       **{k: form[f"target_{k}"] for k in ("date", "owner") if form.get(f"target_{k}")}}
    if keep and "ratio" in keep:
        w["ratio"] = keep["ratio"]
    return w


def form_context(p: Page, app: AppDef, values: dict[str, Any]) -> dict[str, Any]:
    tables = visible_tables(p, app)
    t = app.tables_by_key.get(values.get("table") or "") or (tables[0] if tables else None)
    if t is not None:
        values["table"] = t.key
    fields = [f for f in t.fields if f.key not in p.access.unreadable_fields(p.cat, t)] if t else []

    def kinds(*ks: str) -> list[Any]:
        return [f for f in fields if f.ftype.value_kind(f, p.cat) in ks]

    tt = app.tables_by_key.get(values.get("target_table") or "")
    if tt is not None and not p.access.can_see_table(p.cat, tt):
        tt = None

    def target_kinds(*ks: str) -> list[Any]:
        return [f for f in tt.fields if f.ftype.value_kind(f, p.cat) in ks] if tt is not None else []

    sorts: list[tuple[str, str]] = [("", p.t("dashb_sort_natural"))]
    m1 = "count" if (values.get("fn") or "count") == "count" else f"{values.get('fn')}:{values.get('field')}"
    sorts += [(f"-{m1}", p.t("dashb_sort_desc")), (m1, p.t("dashb_sort_asc"))]
    return {"table_def": t, "fields": fields, "date_fields": kinds(DATE, DATETIME), "number_fields": kinds(NUMBER),
            "user_fields": kinds(USER), "types": [(x, p.t(f"dashb_type_{x}")) for x in TYPES],
            "functions": [(x, p.t(f"dashb_fn_{x}")) for x in FUNCTIONS],
            "buckets": [("", p.t("dashb_no_bucket"))] + [(b, p.t(f"dash_bucket_{b}")) for b in BUCKETS],
            "widths": WIDTHS, "sorts": sorts, "all_tables": tables, "values": values, "target_t": tt,
            "target_numbers": target_kinds(NUMBER), "target_dates": target_kinds(DATE, DATETIME),
            "target_users": target_kinds(USER)}


def save_widget(svc: MetadataService, app: AppDef, doc: dict[str, Any], w: dict[str, Any],
                index: int | None) -> None:
    widgets = list(doc.get("widgets") or [])
    if index is None:
        widgets.append(w)
    else:
        widgets[index] = w
    svc.update_doc("dashboard", app.key, doc["key"], {"widgets": widgets})


def _errors_for_new(e: FormworkError, doc: dict[str, Any], index: int | None) -> int:
    return len(doc.get("widgets") or []) if index is None else index


# --- pages ----------------------------------------------------------------------------------------------
@routes.route("/apps/<app_key>/dashboards/new", methods=["GET", "POST"])
def dashboard_new(app_key: str) -> Response:
    """A new dashboard: its name in both languages; widgets are added on the next page."""
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder(conn, cat, access)
        app = visible_app(p, app_key)
        values = {"label": "", "label_zh": ""}
        errors: dict[str, str] = {}
        if request.method == "POST":
            values = {k: (request.form.get(k) or "").strip()[:200] for k in ("label", "label_zh")}
            if not values["label"] and not values["label_zh"]:
                errors["label"] = p.t("dashb_err_label")
            else:
                key = new_key(values["label"] or "dashboard", {d["key"] for d in app.dashboards}, "dashboard")
                doc = {"key": key, "label": {"en": values["label"] or values["label_zh"],
                                             "zh-CN": values["label_zh"] or values["label"]}, "widgets": []}
                try:
                    with conn.begin_nested():
                        svc.create_doc("dashboard", app.key, doc)
                    return redirect(url_for("ui.dashboard_edit", app_key=app.key, key=key))  # type: ignore[return-value]
                except (ValidationFailed, Conflict, BadRequest) as e:
                    errors[""] = error_text(p, e)
        return render(p, "dashboard_new.html", 422 if errors else 200, app=app, values=values, errors=errors,
                      tables=visible_tables(p, app), dashboards=visible_dashboards(p, app))


def settings_context(p: Page, app: AppDef, doc: dict[str, Any]) -> dict[str, Any]:
    tables = visible_tables(p, app)
    filters = doc.get("filters") or []
    period = next((f for f in filters if f.get("type") == "period"), None)
    owner = next((f for f in filters if f.get("type") == "owner"), None)
    used = {w["table"] for w in doc.get("widgets", [])}
    rows = []
    for t in tables:
        if t.key not in used:
            continue
        dates = [f for f in t.fields if f.ftype.value_kind(f, p.cat) in (DATE, DATETIME)]
        people = [f for f in t.fields if f.ftype.value_kind(f, p.cat) == USER]
        rows.append({"t": t, "dates": dates, "people": people,
                     "date": ((period or {}).get("fields") or {}).get(t.key, ""),
                     "owner": ((owner or {}).get("fields") or {}).get(t.key, "")})
    candidates = []  # fields a dashboard may offer as a filter: selects, checkboxes, people, links
    chosen = {(t, k) for f in filters if f.get("type") == "field" for t, k in (f.get("fields") or {}).items()}
    for r in rows:
        for f in r["t"].fields:
            if f.ftype.has_choices or f.ftype.value_kind(f, p.cat) in ("bool", "user", "link_one"):
                candidates.append({"value": f"{r['t'].key}.{f.key}",
                                   "text": f"{p.label(r['t'].label)}: {p.label(f.label)}",
                                   "selected": (r["t"].key, f.key) in chosen})
    roles = [(key, p.label((doc or {}).get("label") or key)) for key, doc in p.conn.execute(
        select(db.roles.c.key, db.roles.c.doc).order_by(db.roles.c.key))]
    sched = (doc.get("schedules") or [{}])[0]
    users = [(r.id, r.name) for r in p.conn.execute(
        select(db.users.c.id, db.users.c.name).where(db.users.c.active.is_(True)).order_by(db.users.c.name))]
    return {"period": period, "owner": owner, "table_rows": rows, "presets": PERIODS, "roles": roles,
            "field_filters": candidates,
            "sched": sched, "users": users}


@routes.get("/apps/<app_key>/dashboards/<key>/edit")
def dashboard_edit(app_key: str, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = builder(conn, cat, access)
        app = visible_app(p, app_key)
        doc = dashboard_of(app, key)
        return edit_page(p, app, doc)


def edit_page(p: Page, app: AppDef, doc: dict[str, Any], errors: dict[str, str] | None = None,
              status: int = 200) -> Response:
    cards = []
    for w in doc.get("widgets", []):
        t = app.tables_by_key.get(w.get("table") or "")
        what = [p.t(f"dashb_type_{w['type']}")]
        what.append(p.label(t.label) if t is not None else p.t("dash_table_gone", table=w.get("table", "")))
        if t is not None:
            what += [field_label(p, t, g) for g in w.get("group_by") or []]
            what += [metric_label(p, t, m) for m in w.get("ratio_of") or w.get("metrics") or ["count"]]
        cards.append({"key": w["key"], "label": p.label(w.get("label") or w["key"]), "what": " · ".join(what),
                      "width": w.get("width") or (3 if w["type"] == "kpi" else 6), "missing": t is None})
    return render(p, "dashboard_edit.html", status, app=app, dashboard=doc, cards=cards, widths=WIDTHS,
                  errors=errors or {}, tables=visible_tables(p, app), dashboards=visible_dashboards(p, app),
                  **settings_context(p, app, doc))


@routes.post("/apps/<app_key>/dashboards/<key>/settings")
def dashboard_settings(app_key: str, key: str) -> Response:
    """The dashboard's name, filters (period and owner fields per table), sharing and scheduled email."""
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder(conn, cat, access)
        app = visible_app(p, app_key)
        doc = dashboard_of(app, key)
        f = request.form
        patch: dict[str, Any] = {}
        en, zh = (f.get("label") or "").strip(), (f.get("label_zh") or "").strip()
        if en or zh:
            patch["label"] = {"en": en or zh, "zh-CN": zh or en}
        filters: list[dict[str, Any]] = []
        for choice in f.getlist("field_filters")[:8]:
            tkey, _, fkey = choice.partition(".")
            t = app.tables_by_key.get(tkey)
            if t is None or fkey not in t.fields_by_key:
                continue
            taken = {x["key"] for x in filters} | {"period", "owner"}
            filters.append({"key": new_key(fkey, taken, "field"), "type": "field", "fields": {tkey: fkey},
                            "label": t.fields_by_key[fkey].label})
        dates = {k[5:]: v for k, v in f.items() if k.startswith("date_") and v}
        owners = {k[6:]: v for k, v in f.items() if k.startswith("owner_") and v}
        if dates:
            flt: dict[str, Any] = {"key": "period", "type": "period", "fields": dates}
            if f.get("default_period") in PERIODS:
                flt["default"] = f["default_period"]
            filters.insert(0, flt)
        if owners:
            filters.insert(1 if dates else 0, {"key": "owner", "type": "owner", "fields": owners})
        patch["filters"] = filters
        patch["roles"] = f.getlist("roles")
        every = f.get("every") or ""
        if every in ("daily", "weekly", "monthly"):
            sched: dict[str, Any] = {"every": every, "users": [int(u) for u in f.getlist("users") if u.isdigit()],
                                     "roles": f.getlist("send_roles")}
            try:
                sched["hour"] = max(0, min(23, int(f.get("hour") or 8)))
            except ValueError:
                sched["hour"] = 8
            if every == "weekly":
                sched["weekday"] = 0
            if every == "monthly":
                sched["day"] = 1
            patch["schedules"] = [sched]
        else:
            patch["schedules"] = []
        for k in ("filters", "roles", "schedules"):
            if not patch[k]:
                patch[k] = None  # an empty list is the same as none: leave the document without it
        try:
            with conn.begin_nested():
                svc.update_doc("dashboard", app.key, key, patch)
        except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
            return edit_page(p, app, doc, {"settings": error_text(p, e)}, 422)
        return redirect(url_for("ui.dashboard_edit", app_key=app.key, key=key))  # type: ignore[return-value]


@routes.route("/apps/<app_key>/dashboards/<key>/widgets/new", methods=["GET", "POST"])
def widget_new(app_key: str, key: str) -> Response:
    return widget_form(app_key, key, None)


@routes.route("/apps/<app_key>/dashboards/<key>/widgets/<wkey>/edit", methods=["GET", "POST"])
def widget_edit(app_key: str, key: str, wkey: str) -> Response:
    return widget_form(app_key, key, wkey)


def widget_form(app_key: str, key: str, wkey: str | None) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder(conn, cat, access)
        app = visible_app(p, app_key)
        doc = dashboard_of(app, key)
        widgets = doc.get("widgets") or []
        index = next((i for i, w in enumerate(widgets) if w["key"] == wkey), None) if wkey else None
        if wkey and index is None:
            raise NotFound(f"no widget '{wkey[:100]}'")
        current = widgets[index] if index is not None else {"type": "bar", "table": request.args.get("table", "")}
        values = widget_values(current)
        errors: dict[str, str] = {}
        if request.method == "POST" or request.args.get("reload"):
            src = request.form if request.method == "POST" else request.args
            values = {k: v for k, v in src.items() if k != "csrf_token"}
        ctx = form_context(p, app, values)
        t = ctx["table_def"]
        same_table = t is not None and t.key == current.get("table")
        filter_ui = conditions.builder(p, t, current.get("filter") if same_table else None) if t else None
        if request.method == "POST":
            taken = {w["key"] for w in widgets}
            wk = wkey or new_key(values.get("label") or values.get("type") or "widget", taken, "widget")
            try:
                w = widget_from_form(request.form, wk, current if same_table else None)
                if t is not None:
                    tree = conditions.parse(p, t, request.form, name="filter")
                    if tree is None:
                        w.pop("filter", None)
                    else:
                        w["filter"] = tree
                with conn.begin_nested():
                    save_widget(svc, app, doc, w, index)
                return redirect(url_for("ui.dashboard_edit", app_key=app.key, key=key))  # type: ignore[return-value]
            except conditions.ConditionError as e:
                errors.update(e.errors)
                filter_ui = conditions.builder(p, t, form=request.form, errors=e.errors) if t else None
            except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
                if e.details and any(str(k).startswith("/widgets/0/") for k in e.details) and index is None:
                    e.details = {str(k).replace("/widgets/0/", f"/widgets/{len(widgets)}/", 1): v
                                 for k, v in e.details.items()}
                errors = widget_errors(p, e, len(widgets) if index is None else index)
        template = "_widget_form.html" if htmx and htmx.target == "widget-form" else "dashboard_widget.html"
        return render(p, template, 422 if errors else 200, app=app, dashboard=doc, editing=wkey, errors=errors,
                      filter_ui=filter_ui, tables=visible_tables(p, app), dashboards=visible_dashboards(p, app), **ctx)


def _widget_change(app_key: str, key: str, change: Any) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder(conn, cat, access)
        app = visible_app(p, app_key)
        doc = dashboard_of(app, key)
        widgets = [dict(w) for w in doc.get("widgets") or []]
        try:
            new = change(widgets)
        except (KeyError, ValueError):
            raise BadRequest("no such widget") from None
        try:
            with conn.begin_nested():
                svc.update_doc("dashboard", app.key, key, {"widgets": new})
        except (ValidationFailed, Conflict, BadRequest) as e:
            return edit_page(p, app, doc, {"widgets": error_text(p, e)}, 422)
        if htmx:
            resp = Response(status=204)
            return resp
        return redirect(url_for("ui.dashboard_edit", app_key=app.key, key=key))  # type: ignore[return-value]


def _index(widgets: list[dict[str, Any]], wkey: str) -> int:
    for i, w in enumerate(widgets):
        if w["key"] == wkey:
            return i
    raise KeyError(wkey)


@routes.post("/apps/<app_key>/dashboards/<key>/widgets/<wkey>/duplicate")
def widget_duplicate(app_key: str, key: str, wkey: str) -> Response:
    def change(ws: list[dict[str, Any]]) -> list[dict[str, Any]]:
        i = _index(ws, wkey)
        copy = {**ws[i], "key": new_key(wkey + "_copy", {w["key"] for w in ws}, "widget")}
        return ws[: i + 1] + [copy] + ws[i + 1:]

    return _widget_change(app_key, key, change)


@routes.post("/apps/<app_key>/dashboards/<key>/widgets/<wkey>/remove")
def widget_remove(app_key: str, key: str, wkey: str) -> Response:
    def change(ws: list[dict[str, Any]]) -> list[dict[str, Any]]:
        i = _index(ws, wkey)
        return ws[:i] + ws[i + 1:]

    return _widget_change(app_key, key, change)


@routes.post("/apps/<app_key>/dashboards/<key>/widgets/<wkey>/size")
def widget_size(app_key: str, key: str, wkey: str) -> Response:
    def change(ws: list[dict[str, Any]]) -> list[dict[str, Any]]:
        i = _index(ws, wkey)
        width = int(request.form.get("width") or 6)
        if width not in WIDTHS:
            raise ValueError(width)
        ws[i]["width"] = width
        return ws

    return _widget_change(app_key, key, change)


@routes.post("/apps/<app_key>/dashboards/<key>/order")
def widget_order(app_key: str, key: str) -> Response:
    """The widgets in the order dragged (SortableJS posts every key in its new place)."""
    def change(ws: list[dict[str, Any]]) -> list[dict[str, Any]]:
        order = request.form.getlist("order")
        by_key = {w["key"]: w for w in ws}
        if sorted(order) != sorted(by_key):
            raise ValueError("order")
        return [by_key[k] for k in order]

    return _widget_change(app_key, key, change)


@routes.post("/apps/<app_key>/dashboards/<key>/delete")
def dashboard_delete(app_key: str, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        _p, svc = builder(conn, cat, access)
        svc.delete_doc("dashboard", app_key, key)
        return redirect(url_for("ui.app_page", app_key=app_key))  # type: ignore[return-value]
