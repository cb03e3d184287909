"""Builder pages: fields, apps and tables, views, and the trash of deleted definitions.

Definition changes go through MetadataService exactly as the API's do (build right, audit entry,
validation); its errors are shown next to the form inputs they concern.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, redirect, request, url_for

from formwork.errors import BadRequest, Conflict, Forbidden, FormworkError, NotFound, ValidationFailed
from formwork.metadata.catalog import TableDef
from formwork.metadata.fieldtypes import field_types
from formwork.metadata.fieldtypes.base import DATE, DATETIME, FILES, SELECT, USER
from formwork.metadata.service import MetadataService
from formwork.runtime import auth
from formwork.runtime.previews import builder_actor
from formwork.ui.context import GridState, Page, make_page, render, visible_app, visible_dashboards, visible_tables
from formwork.web import RouteSet, client_ip, current_access, unit

ROLLUP_FUNCTIONS = ("sum", "count", "avg", "min", "max", "count_distinct")
VIEW_TYPES = ("grid", "kanban", "calendar", "gallery", "form")

routes = RouteSet()


def builder_page(conn: Any, cat: Any, access: Any) -> tuple[Page, MetadataService]:
    if not access.can_build():
        raise Forbidden("you may not change app definitions")
    p = make_page(conn, cat, access)
    if request.method not in ("GET", "HEAD"):
        auth.audit_meta_change(conn, access, request.method, request.path, client_ip())
    return p, MetadataService(conn, builder_actor(access, client_ip()), cat)


def pointer_errors(err: FormworkError) -> dict[str, list[str]]:
    """Metadata errors by JSON pointer → by form input name (``/options/formula`` → ``formula``)."""
    out: dict[str, list[str]] = {}
    for ptr, msgs in (err.details or {"": [err.message]}).items():
        parts = [x for x in str(ptr).split("/") if x]
        if parts[:1] == ["options"] and len(parts) > 1:
            name = parts[1]
        elif parts and parts[0] in ("key", "label", "type", "required", "unique", "default", "filter", "sort",
                                    "fields", "options", "group_by"):
            name = parts[0]
        else:
            name = ""
        out.setdefault(name, []).extend(msgs if isinstance(msgs, list) else [str(msgs)])
    if err.details and err.message and "" not in out and not any(out.values()):
        out[""] = [err.message]
    return out


def label_from_form(form: Any, prefix: str = "label") -> Any:
    en = (form.get(f"{prefix}_en") or "").strip()
    zh = (form.get(f"{prefix}_zh") or "").strip()
    if en and zh:
        return {"en": en, "zh-CN": zh}
    return en or zh


def label_parts(label: Any) -> tuple[str, str]:
    if isinstance(label, dict):
        return str(label.get("en") or ""), str(label.get("zh-CN") or "")
    return str(label or ""), ""


def type_choices(p: Page) -> list[tuple[str, str]]:
    return [(ft.type, p.label(ft.label)) for ft in field_types.all()]


def options_form(typ: Any) -> str | None:
    """The options editor of a field type (its ``options_form``); None for an unknown type."""
    return field_types.get(typ).options_form if isinstance(typ, str) and typ in field_types else None


def field_options_from_form(typ: str, form: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    editor = options_form(typ)

    def num(name: str, integer: bool = False) -> None:
        raw = (form.get(name) or "").strip()
        if raw:
            try:
                opts[name] = int(raw) if integer else (int(raw) if raw.lstrip("-").isdigit() else float(raw))
            except ValueError:
                raise ValidationFailed.from_details({f"/options/{name}": ["must be a number"]}) from None

    if editor == "choices":
        choices = []
        for line in (form.get("choices") or "").splitlines():
            parts = [x.strip() for x in line.split("|")]
            if not parts[0]:
                continue
            c: dict[str, Any] = {"value": parts[0]}
            if len(parts) > 1 and parts[1]:
                c["label"] = choice_label(parts[1])
            if len(parts) > 2 and parts[2]:
                c["color"] = parts[2]
            choices.append(c)
        opts["choices"] = choices
    elif editor == "link":
        opts["table"] = form.get("table") or ""
        if form.get("multiple"):
            opts["multiple"] = True
    elif editor in ("lookup", "rollup"):
        opts["link"] = form.get("link") or ""
        opts["field"] = (form.get("lookup_field") or "").strip()
        if editor == "rollup":
            opts["function"] = form.get("function") or "sum"
    elif editor == "formula":
        opts["formula"] = form.get("formula") or ""
    elif editor in ("number", "currency"):
        num("precision", integer=True)
        num("min")
        num("max")
        if editor == "currency" and (form.get("currency") or "").strip():
            opts["currency"] = form.get("currency", "").strip().upper()
    elif editor == "rating":
        num("max", integer=True)
    elif editor == "autonumber":
        if (form.get("prefix") or "").strip():
            opts["prefix"] = form.get("prefix", "").strip()
        num("digits", integer=True)
    elif editor == "user":
        if form.get("multiple"):
            opts["multiple"] = True
    return opts


def field_doc_from_form(form: Any) -> dict[str, Any]:
    typ = form.get("type") or "text"
    doc: dict[str, Any] = {"key": (form.get("key") or "").strip(), "label": label_from_form(form), "type": typ}
    if form.get("required"):
        doc["required"] = True
    if form.get("unique"):
        doc["unique"] = True
    if (form.get("description") or "").strip():
        doc["description"] = form.get("description", "").strip()
    opts = field_options_from_form(typ, form)
    if opts:
        doc["options"] = opts
    return doc


def field_form_values(doc: dict[str, Any]) -> dict[str, Any]:
    """A field document (API form) as the values of the field form's inputs."""
    en, zh = label_parts(doc.get("label"))
    opts = doc.get("options") or {}
    choices = "\n".join(choice_line(c) for c in opts.get("choices", []))
    return {"key": doc.get("key", ""), "label_en": en, "label_zh": zh, "type": doc.get("type", "text"),
            "required": doc.get("required"), "unique": doc.get("unique"), "description": doc.get("description", ""),
            "choices": choices, "table": opts.get("table", ""), "multiple": opts.get("multiple"),
            "link": opts.get("link", ""), "lookup_field": opts.get("field", ""), "function": opts.get("function", ""),
            "formula": opts.get("formula", ""), "precision": opts.get("precision", ""),
            "min": opts.get("min", ""), "max": opts.get("max", ""), "currency": opts.get("currency", ""),
            "prefix": opts.get("prefix", ""), "digits": opts.get("digits", "")}


def choice_line(c: dict[str, Any]) -> str:
    """A choice as one line of the choices box: ``value | label | colour`` (label ``English / 中文``)."""
    label = c.get("label")
    if isinstance(label, dict):
        label = " / ".join(x for x in (label.get("en"), label.get("zh-CN")) if x)
    parts = [c["value"], str(label or ""), str(c.get("color") or "")]
    while parts and not parts[-1]:
        parts.pop()
    return " | ".join(parts)


def choice_label(text: str) -> Any:
    if " / " in text:
        en, zh = text.split(" / ", 1)
        return {"en": en.strip(), "zh-CN": zh.strip()}
    return text


def field_form_context(p: Page, app: Any, t: TableDef, values: dict[str, Any]) -> dict[str, Any]:
    return {"app": app, "t": t, "values": values, "types": type_choices(p),
            "options_form": options_form(values.get("type", "text")),
            "tables": visible_tables(p, app), "all_tables": app.tables,
            "link_fields": [f for f in t.fields if f.ftype.is_link], "functions": ROLLUP_FUNCTIONS,
            "dashboards": visible_dashboards(p, app)}


@routes.get("/apps/<app_key>/<table_key>/fields")
def fields_page(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        return render(p, "builder_fields.html", app=app, t=t, tables=visible_tables(p, app),
                      dashboards=visible_dashboards(p, app), fields=[svc.field_json(f) for f in t.fields],
                      type_labels=dict(type_choices(p)))


@routes.get("/apps/<app_key>/<table_key>/fields/options")
def field_options_fragment(app_key: str, table_key: str) -> Response:
    """The options part of the field form for the chosen type (swapped in when the type changes)."""
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        values = field_form_values({"type": request.args.get("type", "text")})
        return render(p, "_field_options.html", errors={}, **field_form_context(p, app, t, values))


@routes.route("/apps/<app_key>/<table_key>/fields/new", methods=["GET", "POST"])
def field_new(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        values = field_form_values({"type": request.args.get("type", "text")})
        errors: dict[str, list[str]] = {}
        if request.method == "POST":
            values = dict(request.form.items())
            try:
                with conn.begin_nested():
                    svc.create_field(app_key, table_key, field_doc_from_form(request.form))
                return redirect(url_for("ui.fields_page", app_key=app_key, table_key=table_key))  # type: ignore[return-value]
            except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
                errors = pointer_errors(e)
        return render(p, "builder_field.html", 422 if errors else 200, errors=errors, editing=None,
                      preview=None, **field_form_context(p, app, t, values))


@routes.route("/apps/<app_key>/<table_key>/fields/<field_key>/edit", methods=["GET", "POST"])
def field_edit(app_key: str, table_key: str, field_key: str) -> Response:
    """Edit a field; a type change first shows the dry-run preview and asks to confirm lost values."""
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        f = t.field(field_key)
        current = svc.field_json(f)
        values = field_form_values(current)
        errors: dict[str, list[str]] = {}
        preview = None
        status = 200
        if request.method == "POST":
            values = dict(request.form.items())
            doc = field_doc_from_form(request.form)
            if f.ftype.is_link:  # a link's table and cardinality are fixed once it exists
                doc["options"] = current.get("options", {})
            if "options" not in doc:
                doc["options"] = None
            type_change = doc["type"] != f.type
            try:
                if type_change and request.form.get("step") != "confirm":
                    sp = conn.begin_nested()
                    try:
                        preview = svc.update_field(app_key, table_key, field_key, doc, dry_run=True)
                    finally:
                        sp.rollback()
                else:
                    if request.form.get("confirm_data_loss"):
                        doc["confirm_data_loss"] = True
                    with conn.begin_nested():
                        svc.update_field(app_key, table_key, field_key, doc)
                    return redirect(url_for("ui.fields_page", app_key=app_key,  # type: ignore[return-value]
                                            table_key=table_key))
            except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
                errors, status = pointer_errors(e), 422
                if type_change and request.form.get("step") == "confirm":
                    sp = conn.begin_nested()
                    try:
                        preview = svc.update_field(app_key, table_key, field_key,
                                                   {k: v for k, v in doc.items() if k != "confirm_data_loss"},
                                                   dry_run=True)
                    except FormworkError:
                        preview = None
                    finally:
                        sp.rollback()
        return render(p, "builder_field.html", status, errors=errors, editing=f, preview=preview,
                      **field_form_context(p, app, t, values))


@routes.post("/apps/<app_key>/<table_key>/fields/<field_key>/delete")
def field_delete(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        _p, svc = builder_page(conn, cat, access)
        svc.delete_field(app_key, table_key, field_key)
    return redirect(url_for("ui.fields_page", app_key=app_key, table_key=table_key))  # type: ignore[return-value]


@routes.post("/apps/new")
def app_new() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        key = (request.form.get("key") or "").strip()
        try:
            with conn.begin_nested():
                svc.create_app({"key": key, "label": label_from_form(request.form) or key})
        except (ValidationFailed, Conflict) as e:
            raise BadRequest("; ".join(m for v in pointer_errors(e).values() for m in v)) from None
    return redirect(url_for("ui.app_page", app_key=key))  # type: ignore[return-value]


@routes.route("/apps/<app_key>/tables/new", methods=["GET", "POST"])
def table_new(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        values: dict[str, Any] = {"first_field": "Name"}
        errors: dict[str, list[str]] = {}
        if request.method == "POST":
            values = dict(request.form.items())
            key = (request.form.get("key") or "").strip()
            first = (request.form.get("first_field") or "").strip() or "Name"
            doc = {"key": key, "label": label_from_form(request.form) or key,
                   "fields": [{"key": "name", "label": first, "type": "text"}]}
            try:
                with conn.begin_nested():
                    svc.create_table(app_key, doc)
                return redirect(url_for("ui.table_page", app_key=app_key, table_key=key))  # type: ignore[return-value]
            except (ValidationFailed, Conflict, BadRequest) as e:
                errors = pointer_errors(e)
        return render(p, "builder_table.html", 422 if errors else 200, app=app, values=values, errors=errors,
                      tables=visible_tables(p, app), dashboards=visible_dashboards(p, app))


def view_doc_from_form(form: Any, t: TableDef) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": (form.get("key") or "").strip(), "label": label_from_form(form) or form.get("key"),
                           "type": form.get("type") or "grid"}
    fields = [k for k in form.getlist("fields") if k]
    if fields and len(fields) < len(t.fields):
        doc["fields"] = fields
    elif fields:
        doc["fields"] = fields
    sort = [s.strip() for s in (form.get("sort") or "").split(",") if s.strip()]
    if sort:
        doc["sort"] = sort
    raw = (form.get("filter") or "").strip()
    if raw:
        try:
            doc["filter"] = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValidationFailed.from_details({"/filter": [f"not valid JSON: {e.msg}"]}) from None
    opts: dict[str, Any] = {}
    for name in ("group_field", "date_field", "end_field", "title_field", "cover_field"):
        if form.get(name):
            opts[name] = form.get(name)
    if doc["type"] == "form":
        if form.get("public"):
            opts["public"] = True
        msg = label_from_form(form, "success")
        if msg:
            opts["success_message"] = msg
    if opts:
        doc["options"] = opts
    return doc


def view_form_values(doc: dict[str, Any]) -> dict[str, Any]:
    en, zh = label_parts(doc.get("label"))
    opts = doc.get("options") or {}
    sen, szh = label_parts(opts.get("success_message"))
    return {"key": doc.get("key", ""), "label_en": en, "label_zh": zh, "type": doc.get("type", "grid"),
            "fields": doc.get("fields") or [], "sort": ",".join(doc.get("sort") or []),
            "filter": json.dumps(doc["filter"], ensure_ascii=False, indent=1) if doc.get("filter") else "",
            "public": opts.get("public"), "success_en": sen, "success_zh": szh,
            **{k: opts.get(k, "") for k in ("group_field", "date_field", "end_field", "title_field", "cover_field")}}


def view_form(p: Page, app: Any, t: TableDef, values: dict[str, Any], errors: dict[str, list[str]],
              editing: dict[str, Any] | None, status: int = 200) -> Response:
    return render(p, "builder_view.html", status, app=app, t=t, values=values, errors=errors, editing=editing,
                  view_types=VIEW_TYPES, tables=visible_tables(p, app), dashboards=visible_dashboards(p, app),
                  group_fields=[f for f in t.fields if not f.ftype.read_only  # a card moves by writing it
                                and f.ftype.value_kind(f, p.cat) in (SELECT, USER)],
                  date_fields=[f for f in t.fields if f.ftype.kind in (DATE, DATETIME)],
                  cover_fields=[f for f in t.fields if f.ftype.kind == FILES])


@routes.route("/apps/<app_key>/<table_key>/views/new", methods=["GET", "POST"])
def view_new(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        if request.method == "POST":
            values = {**dict(request.form.items()), "fields": request.form.getlist("fields")}
            try:
                with conn.begin_nested():
                    doc = svc.create_doc("view", app_key, view_doc_from_form(request.form, t), table_key)
                return redirect(url_for("ui.table_page", app_key=app_key, table_key=table_key,  # type: ignore[return-value]
                                        view=doc["key"]))
            except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
                return view_form(p, app, t, values, pointer_errors(e), None, 422)
        state = GridState.from_request()
        prefill: dict[str, Any] = {"type": request.args.get("type", "grid")}
        try:
            tree = state.tree(p, t)
        except BadRequest:
            tree = None
        if tree:
            prefill["filter"] = tree
        if state.sort:
            prefill["sort"] = state.sort.split(",")
        return view_form(p, app, t, view_form_values(prefill), {}, None)


@routes.route("/apps/<app_key>/<table_key>/views/<view_key>/edit", methods=["GET", "POST"])
def view_edit(app_key: str, table_key: str, view_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        current = t.view(view_key)
        if request.method == "POST":
            values = {**dict(request.form.items()), "fields": request.form.getlist("fields")}
            try:
                doc = view_doc_from_form(request.form, t)
                for name in ("fields", "sort", "filter", "options"):
                    doc.setdefault(name, None)  # cleared in the form → removed from the view
                with conn.begin_nested():
                    saved = svc.update_doc("view", app_key, view_key, doc, table_key)
                return redirect(url_for("ui.table_page", app_key=app_key, table_key=table_key,  # type: ignore[return-value]
                                        view=saved["key"]))
            except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
                return view_form(p, app, t, values, pointer_errors(e), current, 422)
        return view_form(p, app, t, view_form_values(current), {}, current)


@routes.post("/apps/<app_key>/<table_key>/views/<view_key>/delete")
def view_delete(app_key: str, table_key: str, view_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        _p, svc = builder_page(conn, cat, access)
        svc.delete_doc("view", app_key, view_key, table_key)
    return redirect(url_for("ui.table_page", app_key=app_key, table_key=table_key))  # type: ignore[return-value]


@routes.get("/trash")
def trash_page() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        return render(p, "trash.html", entries=svc.trash())


@routes.post("/trash/<trash_id>/restore")
def trash_restore(trash_id: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        _p, svc = builder_page(conn, cat, access)
        svc.restore(trash_id)
    return redirect(url_for("ui.trash_page"))  # type: ignore[return-value]
