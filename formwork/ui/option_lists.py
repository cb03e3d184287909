"""The builder's shared option lists (数据字典): list them, create one, edit its options with the same
editor a select field uses (names in both languages, colours, order, merge, delete with the number of
records using each option, summed over every field using the list), delete one."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request, url_for

from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import AppDef
from formwork.metadata.option_lists import OptionLists, fields_using, find_list
from formwork.ui.builder import (
    COLORS,
    builder_page,
    choice_counts,
    choice_row,
    choice_rows,
    choices_from_rows,
    label_from_form,
    label_parts,
    merge_choice_values,
    pointer_errors,
    require_label,
)
from formwork.ui.context import Page, render, visible_app, visible_dashboards, visible_tables
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


def _usage(p: Page, app: AppDef, key: str) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The fields using a list (table · field, for the page) and how many records use each option."""
    used: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    for f in fields_using(app, key):
        t = p.cat.table_by_id(f.table_id)
        used.append({"table": p.label(t.label), "field": p.label(f.label),
                     "url": url_for("ui.field_edit", app_key=app.key, table_key=t.key, field_key=f.key)})
        for v, n in choice_counts(p, t, f).items():
            counts[v] = counts.get(v, 0) + n
    return used, counts


def _ctx(p: Page, app: AppDef, **extra: Any) -> dict[str, Any]:
    return {"app": app, "tables": visible_tables(p, app), "dashboards": visible_dashboards(p, app),
            "side_active": "option_lists", **extra}


@routes.get("/apps/<app_key>/option-lists")
def option_lists_page(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        lists = OptionLists(svc).all(app_key)
        for ol in lists:
            ol["fields"] = [{"table": p.label(u["table_label"]), "field": p.label(u["field_label"])}
                            for u in ol["used_by"]]
        return render(p, "option_lists.html", **_ctx(p, app, lists=lists, values={}, errors={}))


@routes.post("/apps/<app_key>/option-lists")
def option_list_new(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        try:
            require_label(p, request.form)
            with conn.begin_nested():
                doc = {"label": label_from_form(request.form), "choices": []}
                key = (request.form.get("key") or "").strip()
                created = OptionLists(svc).create(app_key, {"key": key, **doc} if key else doc)
        except (ValidationFailed, Conflict, BadRequest) as e:
            lists = OptionLists(svc).all(app_key)
            for ol in lists:
                ol["fields"] = []
            return render(p, "option_lists.html", 422, **_ctx(p, app, lists=lists, values=dict(request.form.items()),
                                                                errors=pointer_errors(e) or {"label": [e.message]}))
    return redirect(url_for("ui.option_list_edit", app_key=app_key, key=created["key"]))  # type: ignore[return-value]


@routes.route("/apps/<app_key>/option-lists/<key>", methods=["GET", "POST"])
def option_list_edit(app_key: str, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        ol = find_list(app, key)
        if ol is None:
            raise NotFound(f"no option list '{key[:63]}'")
        used, counts = _usage(p, app, key)
        en, zh = label_parts(ol.get("label"))
        values: dict[str, Any] = {"label_en": en, "label_zh": zh, "key": key,
                                  "choice_rows": [choice_row(i, c, p.locale) for i, c in enumerate(ol["choices"])]}
        errors: dict[str, list[str]] = {}
        status = 200
        if request.method == "POST":
            values = {**dict(request.form.items()), "key": key, "choice_rows": choice_rows(request.form)}
            try:
                require_label(p, request.form)
                choices, merges, deleted = choices_from_rows(choice_rows(request.form), p.locale)
                with conn.begin_nested():
                    for f in fields_using(app, key):  # records follow a merge before the option goes
                        merge_choice_values(p, p.cat.table_by_id(f.table_id), f, merges)
                    # the editor showed how many records use each option deleted (and asked)
                    OptionLists(svc).update(app_key, key, {"label": label_from_form(request.form), "choices": choices},
                                            confirm=bool(deleted or merges))
                return redirect(url_for("ui.option_list_edit", app_key=app_key,  # type: ignore[return-value]
                                        key=key, saved=1))
            except (ValidationFailed, Conflict, BadRequest, Forbidden) as e:
                errors, status = pointer_errors(e), 422
                if isinstance(e, Conflict) and not errors:
                    errors = {"": [e.message]}
        return render(p, "option_list.html", status, **_ctx(
            p, app, ol=ol, used=used, values=values, errors=errors, colors=COLORS, choice_counts=counts,
            options_form="choices",
            saved=request.args.get("saved") == "1"))


@routes.post("/apps/<app_key>/option-lists/<key>/delete")
def option_list_delete(app_key: str, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        _p, svc = builder_page(conn, cat, access)
        OptionLists(svc).delete(app_key, key)
    return redirect(url_for("ui.option_lists_page", app_key=app_key))  # type: ignore[return-value]
