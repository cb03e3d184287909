"""Builder pages: fields, apps and tables, views, and the trash of deleted definitions.

Definition changes go through MetadataService exactly as the API's do (build right, audit entry,
validation); its errors are shown next to the form inputs they concern.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, redirect, request, url_for

from formwork.errors import BadRequest, Conflict, Forbidden, FormworkError, NotFound, ValidationFailed
from formwork.metadata import validation
from formwork.metadata.catalog import TableDef, label_text
from formwork.metadata.fieldtypes import field_types
from formwork.metadata.fieldtypes.base import DATE, DATETIME, FILES, NUMBER, SELECT, USER
from formwork.metadata.keys import derive_key
from formwork.metadata.service import MetadataService
from formwork.runtime import auth
from formwork.runtime.previews import builder_actor
from formwork.ui import conditions, formula_editor, i18n
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


def field_options_from_form(typ: str, form: Any, locale: str = "en") -> dict[str, Any]:
    opts: dict[str, Any] = {}
    editor = options_form(typ)

    def num(name: str, integer: bool = False) -> None:
        raw = (form.get(name) or "").strip()
        if raw:
            try:
                opts[name] = int(raw) if integer else (int(raw) if raw.lstrip("-").isdigit() else float(raw))
            except ValueError:
                raise ValidationFailed.from_details({f"/options/{name}": ["must be a number"]}) from None

    if editor == "choices" and (form.get("option_list") or "").strip():
        opts["list"] = form.get("option_list", "").strip()  # a shared option list gives the choices
    elif editor == "choices":
        opts["choices"] = choices_from_rows(choice_rows(form), locale)[0]
    elif editor == "link":
        opts["table"] = form.get("table") or ""
        if form.get("multiple"):
            opts["multiple"] = True
        if (form.get("reverse_label") or "").strip():
            opts["reverse_label"] = form.get("reverse_label", "").strip()[:200]
    elif editor in ("lookup", "rollup"):
        opts["link"] = form.get("link") or ""
        if (form.get("lookup_field") or "").strip():
            opts["field"] = form.get("lookup_field", "").strip()
        if editor == "rollup":
            opts["function"] = form.get("function") or "count"
    elif editor == "formula":
        opts["formula"] = form.get("formula") or ""
        if form.get("format") in ("number", "currency", "percent"):
            opts["format"] = form.get("format")
        if (form.get("currency") or "").strip():
            opts["currency"] = form.get("currency", "").strip().upper()
        num("precision", integer=True)
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


def keyed(doc: dict[str, Any], form: Any) -> dict[str, Any]:
    """The key typed under "advanced", if any: without one the service derives it from the label."""
    key = (form.get("key") or "").strip()
    return {"key": key, **doc} if key else doc


def require_label(p: Page, form: Any) -> None:
    """A name is the one thing a builder form needs; say so in the reader's language."""
    if not label_from_form(form):
        raise ValidationFailed.from_details({"/label": [p.t("builder_label_needed")]})


def field_doc_from_form(form: Any, locale: str = "en") -> dict[str, Any]:
    typ = form.get("type") or "text"
    doc: dict[str, Any] = keyed({"label": label_from_form(form), "type": typ}, form)
    if form.get("required"):
        doc["required"] = True
    if form.get("unique"):
        doc["unique"] = True
    if (form.get("description") or "").strip():
        doc["description"] = form.get("description", "").strip()
    opts = field_options_from_form(typ, form, locale)
    if opts:
        doc["options"] = opts
    return doc


def field_form_values(doc: dict[str, Any], locale: str = "en") -> dict[str, Any]:
    """A field document (API form) as the values of the field form's inputs."""
    en, zh = label_parts(doc.get("label"))
    opts = doc.get("options") or {}
    return {"key": doc.get("key", ""), "label_en": en, "label_zh": zh, "type": doc.get("type", "text"),
            "required": doc.get("required"), "unique": doc.get("unique"),
            "description": label_text(doc.get("description") or "", locale),
            "choice_rows": [choice_row(i, c, locale) for i, c in enumerate(opts.get("choices", []))],
            "table": opts.get("table", ""), "multiple": opts.get("multiple"),
            "link": opts.get("link", ""), "lookup_field": opts.get("field", ""), "function": opts.get("function", ""),
            "formula": opts.get("formula", ""), "precision": opts.get("precision", ""),
            "min": opts.get("min", ""), "max": opts.get("max", ""), "currency": opts.get("currency", ""),
            "prefix": opts.get("prefix", ""), "digits": opts.get("digits", ""), "option_list": opts.get("list", ""),
            "format": opts.get("format", "")}


def posted_values(form: Any) -> dict[str, Any]:
    """What was typed, to show again after an error (nothing typed is lost)."""
    return {**dict(form.items()), "choice_rows": choice_rows(form)}


# --- the select options editor ------------------------------------------------------------------------
COLORS = ("blue", "green", "orange", "red", "purple", "teal", "pink", "yellow", "cyan", "gray")
ROW_NAME = re.compile(r"choice-([A-Za-z0-9]{1,20})-label")


def other_locale(locale: str) -> str:
    return "en" if locale == "zh-CN" else "zh-CN"


def choice_row(i: int, c: dict[str, Any], locale: str) -> dict[str, Any]:
    """A stored choice as one row of the options editor: its name in the reader's language (and the other
    language's, kept as is), its colour; the stored value stays hidden."""
    label = c.get("label")
    if isinstance(label, dict):
        mine = label.get(locale) or label.get("en") or next(iter(label.values()), "") or c["value"]
        other = label.get(other_locale(locale)) or ""
        if other == mine:
            other = ""
    else:
        mine, other = (label or c["value"]), ""
    color = c.get("color") if c.get("color") in COLORS else COLORS[i % len(COLORS)]
    return {"i": str(i), "value": c["value"], "label": mine, "other": other, "color": color, "merge": "",
            "delete": False}


def choice_rows(form: Any) -> list[dict[str, Any]]:
    """The rows of the options editor as posted, in their (dragged) order."""
    rows = []
    for name in form.keys():
        m = ROW_NAME.fullmatch(name)
        if not m:
            continue
        i = m.group(1)
        rows.append({"i": i, "value": (form.get(f"choice-{i}-value") or "").strip()[:200],
                     "label": (form.get(name) or "").strip()[:200],
                     "other": (form.get(f"choice-{i}-other") or "").strip()[:200],
                     "color": form.get(f"choice-{i}-color") or "", "merge": form.get(f"choice-{i}-merge") or "",
                     "delete": bool(form.get(f"choice-{i}-delete"))})
    return rows


def choices_from_rows(rows: list[dict[str, Any]], locale: str) -> tuple[list[dict[str, Any]], dict[str, str],
                                                                       list[str]]:
    """Choices from the editor's rows, plus the merges (old value → surviving value) and deleted values.
    A new option's stored value is its name (unique among the options); renaming keeps the value."""
    kept = [r for r in rows if r["value"] and not r["delete"] and not r["merge"]]
    taken = {r["value"] for r in kept}
    merges = {r["value"]: r["merge"] for r in rows if r["value"] and r["merge"] and not r["delete"]}
    deleted = [r["value"] for r in rows if r["value"] and r["delete"]]
    details: dict[str, list[str]] = {}
    for old, into in merges.items():
        if into not in taken or into == old:
            details[f"/options/choice-{next(r['i'] for r in rows if r['value'] == old)}"] = [
                i18n.translate(locale, "builder_merge_target")]
    choices: list[dict[str, Any]] = []
    for r in rows:
        if r["delete"] or (r["value"] and r["merge"]):
            continue
        if not r["label"]:
            if r["value"]:
                details[f"/options/choice-{r['i']}"] = [i18n.translate(locale, "builder_choice_name_needed")]
            continue  # an empty new row is ignored
        value = r["value"]
        if not value:
            value, n = r["label"], 2
            while value in taken:
                value, n = f"{r['label'][:190]} {n}", n + 1
            taken.add(value)
        label: Any = {locale: r["label"], other_locale(locale): r["other"]} if r["other"] else r["label"]
        c: dict[str, Any] = {"value": value}
        if label != value:
            c["label"] = label
        if r["color"] in COLORS:
            c["color"] = r["color"]
        choices.append(c)
    if details:
        raise ValidationFailed.from_details(details)
    return choices, merges, deleted


def choice_counts(p: Page, t: TableDef, f: Any) -> dict[str, int]:
    """How many records use each option (what deleting or merging it touches)."""
    from formwork.runtime.aggregate import aggregate

    if f.ftype.value_kind(f, p.cat) == SELECT:
        groups = aggregate(p.conn, p.cat, p.access, t, group_by=[f.key], metrics=["count"])
        return {str(g["key"].get(f.key)): int(g["count"]) for g in groups if g["key"].get(f.key) is not None}
    reader = p.reader()
    return {v: reader.count(t, reader.where(t, {"field": f.key, "op": "has_any", "value": [v]}))
            for v in [c["value"] for c in f.options.get("choices", [])][:200]}


def switch_counts(p: Page, t: TableDef, f: Any) -> dict[str, int | None]:
    """What turning on "required" or "unique" would meet: records without a value, records sharing one."""
    from formwork.runtime.aggregate import aggregate

    out: dict[str, int | None] = {"empty": None, "duplicates": None}
    if f is None or f.ftype.read_only:
        return out
    reader = p.reader()
    try:
        out["empty"] = reader.count(t, reader.where(t, {"field": f.key, "op": "is_empty"}))
    except BadRequest:
        pass
    if f.ftype.supports_unique and f.stored:
        try:
            groups = aggregate(p.conn, p.cat, p.access, t, group_by=[f.key], metrics=["count"], limit=10000)
            out["duplicates"] = sum(int(g["count"]) for g in groups
                                    if g["key"].get(f.key) is not None and int(g["count"]) > 1)
        except BadRequest:
            pass
    return out


def merge_choice_values(p: Page, t: TableDef, f: Any, merges: dict[str, str]) -> None:
    """Records follow a merge: every record holding the merged option gets the surviving one, through
    RecordService (history, rules, automations) before the option is removed."""
    svc = p.service()
    for old, into in merges.items():
        if f.ftype.value_kind(f, p.cat) == SELECT:
            svc.bulk_update(t, {"field": f.key, "op": "eq", "value": old}, {f.key: into})
            continue
        ids = svc.matching_ids(t, {"field": f.key, "op": "has_any", "value": [old]}, "update")
        for i in range(0, len(ids), 500):
            items = []
            for rec in p.reader().by_ids(t, ids[i:i + 500]):
                vals = [into if v == old else v for v in rec["fields"].get(f.key) or []]
                items.append({"id": rec["id"], "fields": {f.key: list(dict.fromkeys(vals))}})
            if items:
                svc.update_many(t, items)


def field_form_context(p: Page, app: Any, t: TableDef, values: dict[str, Any], editing: Any = None) -> dict[str, Any]:
    counts = choice_counts(p, t, editing) if editing is not None and editing.ftype.has_choices \
        and editing.ftype.options_form == "choices" else {}
    return {"app": app, "t": t, "values": values, "types": type_choices(p), "colors": COLORS, "choice_counts": counts,
            "switch_counts": switch_counts(p, t, editing) if editing is not None else {},
            "options_form": options_form(values.get("type", "text")),
            "tables": visible_tables(p, app), "all_tables": app.tables,
            "option_lists": list(app.doc.get("option_lists") or []),
            **lookup_pickers(p, t, values), **formula_pickers(p, t, editing),
            "dashboards": visible_dashboards(p, app)}


def lookup_pickers(p: Page, t: TableDef, values: dict[str, Any]) -> dict[str, Any]:
    """The dependent pickers of a lookup or rollup: the link, then a field of the linked table, then (for a
    rollup) the functions that fit that field's type."""
    links = [f for f in t.fields if f.ftype.is_link]
    link = t.fields_by_key.get(values.get("link") or "") or (links[0] if links else None)
    if link is not None and not link.ftype.is_link:
        link = links[0] if links else None
    target = p.cat.table_by_id(link.options["target"]) if link is not None else None
    targets = list(target.fields) if target is not None else []
    chosen = target.fields_by_key.get(values.get("lookup_field") or "") if target is not None else None
    kind = chosen.ftype.value_kind(chosen, p.cat) if chosen is not None else None
    if chosen is None:
        fns = ["count"]
    elif kind == NUMBER:
        fns = list(ROLLUP_FUNCTIONS)
    elif kind in (DATE, DATETIME):
        fns = ["count", "count_distinct", "min", "max"]
    else:
        fns = ["count", "count_distinct"]
    return {"link_fields": links, "chosen_link": link, "link_target": target, "lookup_targets": targets,
            "functions": [(fn, p.t(f"builder_fn_{fn}")) for fn in fns]}


def formula_pickers(p: Page, t: TableDef, editing: Any = None) -> dict[str, Any]:
    """The formula editor's field list (each inserted by its name when that name is unambiguous) and
    its function reference."""
    fields = []
    for f in t.fields:
        if editing is not None and f.id == editing.id:
            continue
        name = p.label(f.label)
        shown = formula_editor.to_names(p.cat, t, "{" + f.key + "}", p.locale)
        fields.append({"name": name, "insert": shown, "type": p.label(f.ftype.label)})
    return {"formula_fields": fields, "formula_functions": formula_editor.reference(p.locale),
            "formula_self": editing.key if editing is not None else ""}


def formula_to_keys(p: Page, t: TableDef, doc: dict[str, Any]) -> dict[str, Any]:
    """A formula typed with field names, stored with keys (which survive renames)."""
    opts = doc.get("options") or {}
    if options_form(doc.get("type")) != "formula" or not isinstance(opts.get("formula"), str):
        return doc
    keyed, _anchors, unknown = formula_editor.to_keys(p.cat, t, opts["formula"])
    if unknown:
        raise ValidationFailed.from_details({"/options/formula": [p.t("builder_formula_unknown",
                                                                      name=unknown[0][1])]})
    return {**doc, "options": {**opts, "formula": keyed}}


@routes.get("/apps/<app_key>/<table_key>/fields/formula-check")
def formula_check(app_key: str, table_key: str) -> Response:
    """Live check of the formula being typed: the problem and where it is, or the result type and its
    values on a few records."""
    access = current_access()
    with unit() as (conn, cat):
        p, _svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        text = (request.args.get("formula") or "")[:10000]
        chk = formula_editor.check(p, t, text, (request.args.get("formula_self") or "").strip() or None)
        return render(p, "_formula_check.html", chk=chk)


def with_reverse_key(p: Page, t: TableDef, doc: dict[str, Any]) -> dict[str, Any]:
    """A new link named on the other side ("reverse_label") gets that field's key from the name."""
    opts = doc.get("options") or {}
    if doc.get("type") != "link" or not opts.get("reverse_label") or opts.get("reverse_key"):
        return doc
    app = p.cat.app_by_id(t.app_id)
    target = next((x for x in app.tables if x.key == opts.get("table")), None)
    if target is None:
        return doc
    taken = set(target.fields_by_key) | set(validation.RESERVED_FIELD_KEYS)
    return {**doc, "options": {**opts, "reverse_key": derive_key(opts["reverse_label"], taken, "field")}}


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
        values = {**field_form_values({"type": request.args.get("type", "text")}, p.locale),
                  **{k: request.args[k] for k in ("link", "lookup_field", "function", "table", "reverse_label",
                                                  "formula") if request.args.get(k)}}
        return render(p, "_field_options.html", errors={}, **field_form_context(p, app, t, values))


@routes.route("/apps/<app_key>/<table_key>/fields/new", methods=["GET", "POST"])
def field_new(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        values = field_form_values({"type": request.args.get("type", "text")}, p.locale)
        errors: dict[str, list[str]] = {}
        if request.method == "POST":
            values = posted_values(request.form)
            try:
                require_label(p, request.form)
                with conn.begin_nested():
                    doc = formula_to_keys(p, t, with_reverse_key(p, t, field_doc_from_form(request.form, p.locale)))
                    svc.create_field(app_key, table_key, doc)
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
        values = field_form_values(current, p.locale)
        if values.get("formula"):
            values["formula"] = formula_editor.to_names(p.cat, t, values["formula"], p.locale)
        errors: dict[str, list[str]] = {}
        preview = None
        status = 200
        if request.method == "POST":
            values = posted_values(request.form)
            merges: dict[str, str] = {}
            try:
                doc = formula_to_keys(p, t, {"key": f.key, **field_doc_from_form(request.form, p.locale)})
                if options_form(doc["type"]) == "choices" and doc["type"] == f.type:
                    _c, merges, deleted = choices_from_rows(choice_rows(request.form), p.locale)
                    if deleted:  # the editor showed how many records use each option deleted
                        doc["confirm_data_loss"] = True
            except ValidationFailed as e:
                return render(p, "builder_field.html", 422, errors=pointer_errors(e), editing=f, preview=None,
                              **field_form_context(p, app, t, values, f))
            if not doc.get("label"):
                doc["label"] = current.get("label")
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
                        merge_choice_values(p, t, f, merges)
                        svc.update_field(app_key, table_key, field_key, doc)
                    return redirect(url_for("ui.fields_page", app_key=app_key,  # type: ignore[return-value]
                                            table_key=table_key))
            except (ValidationFailed, Conflict, BadRequest, NotFound, Forbidden) as e:
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
                      **field_form_context(p, app, t, values, f))


@routes.post("/apps/<app_key>/<table_key>/fields/<field_key>/delete")
def field_delete(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        try:
            with conn.begin_nested():
                svc.delete_field(app_key, table_key, field_key)
        except Conflict as e:
            # what still uses the field, said in words next to its row; nothing was changed
            app = visible_app(p, app_key)
            t = app.table(table_key)
            f = t.field(field_key)
            uses = [p.t(f"builder_use_{u['kind']}", label=label_text(u.get("label"), p.locale),
                        table=label_text(u.get("table"), p.locale))
                    for u in (e.details or {}).get("used_by", [])]
            message = p.t("builder_field_in_use", field=label_text(f.label, p.locale),
                          uses=("、" if p.locale == "zh-CN" else ", ").join(uses) or e.message)
            resp = render(p, "builder_fields.html", app=app, t=t, tables=visible_tables(p, app),
                          dashboards=visible_dashboards(p, app), fields=[svc.field_json(g) for g in t.fields],
                          type_labels=dict(type_choices(p)), delete_error={"field": field_key, "message": message})
            resp.status_code = 409
            return resp
    return redirect(url_for("ui.fields_page", app_key=app_key, table_key=table_key))  # type: ignore[return-value]


@routes.post("/apps/new")
def app_new() -> Response:
    """A new app from its name alone (the key is derived unless typed under "advanced"); a problem is shown
    on the home page next to the input, with what was typed kept."""
    from formwork.ui.grid import home_response

    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        try:
            require_label(p, request.form)
            with conn.begin_nested():
                app = svc.create_app(keyed({"label": label_from_form(request.form)}, request.form))
        except (ValidationFailed, Conflict, BadRequest) as e:
            return home_response(p, app_values=dict(request.form.items()), app_errors=pointer_errors(e))
    return redirect(url_for("ui.app_page", app_key=app.key))  # type: ignore[return-value]


@routes.route("/apps/<app_key>/tables/new", methods=["GET", "POST"])
def table_new(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        values: dict[str, Any] = {"first_field": p.t("builder_first_field_default")}
        errors: dict[str, list[str]] = {}
        if request.method == "POST":
            values = dict(request.form.items())
            first = (request.form.get("first_field") or "").strip() or p.t("builder_first_field_default")
            doc = keyed({"label": label_from_form(request.form), "fields": [{"label": first, "type": "text"}]},
                        request.form)
            try:
                require_label(p, request.form)
                with conn.begin_nested():
                    made = svc.create_table(app_key, doc)
                return redirect(url_for("ui.table_page", app_key=app_key,  # type: ignore[return-value]
                                        table_key=made.key))
            except (ValidationFailed, Conflict, BadRequest) as e:
                errors = pointer_errors(e)
        return render(p, "builder_table.html", 422 if errors else 200, app=app, values=values, errors=errors,
                      tables=visible_tables(p, app), dashboards=visible_dashboards(p, app))


SORT_ROWS = 3


def sort_from_form(form: Any, t: TableDef) -> list[str]:
    """Sort pickers: "sort_field" and "sort_dir" in pairs, first to last."""
    out: list[str] = []
    for key, direction in zip(form.getlist("sort_field"), form.getlist("sort_dir"), strict=False):
        if key and key in t.fields_by_key and key not in [s.lstrip("-") for s in out]:
            out.append(("-" if direction == "desc" else "") + key)
    return out


def view_doc_from_form(p: Page, form: Any, t: TableDef) -> dict[str, Any]:
    """A view document from the view editor; the filter comes from the condition builder (ConditionError
    when it does not make sense)."""
    doc: dict[str, Any] = keyed({"label": label_from_form(form), "type": form.get("type") or "grid"}, form)
    fields = [k for k in form.getlist("fields") if k]
    if fields:
        doc["fields"] = fields
    sort = sort_from_form(form, t)
    if sort:
        doc["sort"] = sort
    tree = conditions.parse(p, t, form, name="filter")
    if tree:
        doc["filter"] = tree
    opts: dict[str, Any] = {}
    for name in ("group_field", "date_field", "end_field", "title_field", "cover_field", "sum_field", "color_field"):
        if form.get(name):
            opts[name] = form.get(name)
    if doc["type"] == "kanban" and form.get("hide_empty"):
        opts["hide_empty"] = True
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
            "fields": doc.get("fields") or [], "public": opts.get("public"), "success_en": sen, "success_zh": szh,
            "sort_rows": [(s.lstrip("-"), "desc" if s.startswith("-") else "asc") for s in doc.get("sort") or []],
            "hide_empty": opts.get("hide_empty"),
            **{k: opts.get(k, "") for k in ("group_field", "date_field", "end_field", "title_field", "cover_field",
                                            "sum_field", "color_field")}}


def posted_view_values(form: Any, t: TableDef) -> dict[str, Any]:
    return {**dict(form.items()), "fields": form.getlist("fields"),
            "sort_rows": [(s.lstrip("-"), "desc" if s.startswith("-") else "asc") for s in sort_from_form(form, t)]}


def view_form(p: Page, app: Any, t: TableDef, values: dict[str, Any], errors: dict[str, list[str]],
              editing: dict[str, Any] | None, status: int = 200, cb: Any = None) -> Response:
    rows = list(values.get("sort_rows") or [])
    rows += [("", "asc")] * max(0, SORT_ROWS - len(rows))
    return render(p, "builder_view.html", status, app=app, t=t, values=values, errors=errors, editing=editing,
                  view_types=VIEW_TYPES, tables=visible_tables(p, app), dashboards=visible_dashboards(p, app),
                  cb=cb if cb is not None else conditions.builder(p, t, values.get("filter"), name="filter"),
                  sort_rows=rows, sort_fields=[f for f in t.fields if f.ftype.sortable(f, p.cat)],
                  group_fields=[f for f in t.fields if not f.ftype.read_only  # a card moves by writing it
                                and f.ftype.value_kind(f, p.cat) in (SELECT, USER)],
                  date_fields=[f for f in t.fields if f.ftype.kind in (DATE, DATETIME)],
                  number_fields=[f for f in t.fields if f.ftype.value_kind(f, p.cat) == NUMBER],
                  color_fields=[f for f in t.fields if f.ftype.has_choices and f.ftype.value_kind(f, p.cat) == SELECT],
                  cover_fields=[f for f in t.fields if f.ftype.kind == FILES])


def save_view(p: Page, svc: MetadataService, app: Any, t: TableDef, current: dict[str, Any] | None) -> Response:
    """Create (``current`` None) or update a view from the posted editor; errors go next to their inputs."""
    values = posted_view_values(request.form, t)
    try:
        require_label(p, request.form)
        doc = view_doc_from_form(p, request.form, t)
        if current is None:
            with p.conn.begin_nested():
                saved = svc.create_doc("view", app.key, doc, t.key)
        else:
            doc = {"key": current["key"], **doc}
            # the grid's layout (row height, widths, frozen columns) is set on the grid, not in this form: kept
            layout = {k: v for k, v in (current.get("options") or {}).items()
                      if k in ("row_height", "column_widths", "frozen_columns")}
            if layout:
                doc["options"] = {**layout, **(doc.get("options") or {})}
            kept = {k: v for k, v in (current.get("options") or {}).items()  # set in the form designer
                    if k in ("layout", "redirect_url", "submit_label")}
            if kept and doc.get("type") == "form":
                doc["options"] = {**kept, **(doc.get("options") or {})}
                if "layout" in kept and "fields" in doc:  # the fields ticked here, in the design's order
                    doc["options"]["layout"] = [i for i in kept["layout"] if "field" not in i
                                                or i["field"] in doc["fields"]] + [
                        {"field": k} for k in doc["fields"] if k not in [i.get("field") for i in kept["layout"]]]
            for name in ("fields", "sort", "filter", "options"):
                doc.setdefault(name, None)  # cleared in the form → removed from the view
            with p.conn.begin_nested():
                saved = svc.update_doc("view", app.key, current["key"], doc, t.key)
    except conditions.ConditionError as e:
        cb = conditions.builder(p, t, name="filter", form=request.form, errors=e.errors)
        return view_form(p, app, t, values, {}, current, 422, cb=cb)
    except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
        cb = conditions.builder(p, t, name="filter", form=request.form)
        return view_form(p, app, t, values, pointer_errors(e), current, 422, cb=cb)
    return redirect(url_for("ui.table_page", app_key=app.key, table_key=t.key,  # type: ignore[return-value]
                            view=saved["key"]))


@routes.route("/apps/<app_key>/<table_key>/views/new", methods=["GET", "POST"])
def view_new(app_key: str, table_key: str) -> Response:
    """A new view; from "Save as view" it starts with the grid's current filter, sort and columns."""
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        if request.method == "POST":
            return save_view(p, svc, app, t, None)
        state = GridState.from_request()
        prefill: dict[str, Any] = {"type": request.args.get("type", "grid")}
        source = next((v for v in t.views if v["key"] == request.args.get("from_view")), None)
        if source is not None:  # "Save as view" on a view: a copy of it, narrowed by the page's filter
            prefill.update({k: v for k, v in source.items() if k in ("type", "fields", "sort", "options", "filter")})
        try:
            tree = state.tree(p, t)
        except BadRequest:
            tree = None
        if tree:
            parts = [x for x in (prefill.get("filter"), tree) if x]
            prefill["filter"] = {"and": [y for x in parts for y in (x["and"] if list(x) == ["and"] else [x])]}
        if state.sort:
            prefill["sort"] = state.sort.split(",")
        return view_form(p, app, t, {**view_form_values(prefill), "filter": prefill.get("filter")}, {}, None)


@routes.route("/apps/<app_key>/<table_key>/views/<view_key>/edit", methods=["GET", "POST"])
def view_edit(app_key: str, table_key: str, view_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        current = t.view(view_key)
        if request.method == "POST":
            return save_view(p, svc, app, t, current)
        return view_form(p, app, t, {**view_form_values(current), "filter": current.get("filter")}, {}, current)


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
