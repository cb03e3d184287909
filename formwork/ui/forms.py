"""Form views: the logged-in form page and the public (no login) lead-capture form."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Response, redirect, request, url_for
from itsdangerous import BadSignature

from formwork.errors import BadRequest, Conflict, NotFound, ValidationFailed
from formwork.metadata.catalog import FieldDef, TableDef
from formwork.metadata.fieldtypes.base import FILES
from formwork.runtime import files
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordService
from formwork.ui.context import (
    Page,
    make_page,
    page_locale,
    render,
    secret,
    signer,
    visible_app,
    visible_dashboards,
    visible_table,
    visible_tables,
    writable,
)
from formwork.ui.inputs import input_options, parse_form
from formwork.web import RouteSet, client_ip, current_access, unit

routes = RouteSet()


def layout(t: TableDef, view: dict[str, Any]) -> list[dict[str, Any]]:
    """The form's design: its stored ``layout``, or (older documents) the view's fields in order."""
    opts = view.get("options") or {}
    if opts.get("layout"):
        return [dict(item) for item in opts["layout"]]
    return [{"field": k} for k in (view.get("fields") or [f.key for f in t.fields])]


def fillable(p: Page, t: TableDef, f: FieldDef | None, public: bool) -> bool:
    """Can this form take a value for the field: an upload box, or an input the visitor may use?"""
    if f is None or f.ftype.read_only:
        return False
    if f.ftype.kind == FILES:
        return f.stored and (public or p.access.field_writable(p.cat, t, f))
    if f.ftype.input_kind is None or f.ftype.lists_related(f):
        return False
    if public and f.ftype.input_kind in ("records", "users"):
        return False  # a public visitor may not browse records or the user list
    return public or writable(p, t, f)


def form_items(p: Page, t: TableDef, view: dict[str, Any], public: bool) -> list[dict[str, Any]]:
    """What the form shows, in order: sections (a title and help) and fields (with the form's help text,
    required, hidden, prefilled value); fields the visitor can't fill are left out."""
    out: list[dict[str, Any]] = []
    for item in layout(t, view):
        if "section" in item:
            out.append({"section": item["section"], "help": item.get("help")})
            continue
        f = t.fields_by_key.get(item.get("field") or "")
        if f is None or not fillable(p, t, f, public):
            continue
        if item.get("hidden") and (f.ftype.kind == FILES or f.ftype.input_kind in ("records", "users", "checks")):
            continue  # a hidden value is a plain one
        out.append({**item, "f": f, "required": bool(item.get("required") or f.required)})
    while out and "section" in out[-1]:
        out.pop()  # a section with nothing after it
    return out


def form_fields(p: Page, t: TableDef, view: dict[str, Any], public: bool) -> list[FieldDef]:
    return [it["f"] for it in form_items(p, t, view, public) if "f" in it]


PUBLIC_MAX_SIZE = 10 * 1024 * 1024  # a public form's file limit when its field sets none
PUBLIC_MAX_FILES = 5


def file_limits(f: FieldDef, public: bool) -> dict[str, Any]:
    """What a form says and checks about a file field: at most how many files, how big, of which types."""
    opts = f.options
    max_size = opts.get("max_size") or (PUBLIC_MAX_SIZE if public else None)
    return {"max_files": opts.get("max_files") or (PUBLIC_MAX_FILES if public else 20), "max_size": max_size,
            "max_mb": (f"{round(max_size / (1024 * 1024), 1):g} MB" if max_size >= 1024 * 1024
                       else f"{max(1, round(max_size / 1024))} KB") if max_size else None,
            "types": list(opts.get("mime_types") or [])}


def form_files(p: Page, t: TableDef, fields: list[FieldDef], public: bool, user_id: int | None,
               values: dict[str, Any], errors: dict[str, list[str]], created: list[Path]) -> None:
    """Store the files posted for the form's file fields (in the request's transaction: a refused form
    keeps no file rows, and the caller discards the blobs in ``created``); a file over a limit is named."""
    from formwork.ui.attachments import take_files

    take_files(p, fields, public, user_id, values, errors, created)


def form_view(t: TableDef, view_key: str) -> dict[str, Any]:
    view = t.view(view_key)
    if view.get("type") != "form":
        raise NotFound(f"no form '{view_key}'")
    return view


def prefill(p: Page, t: TableDef, items: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    """A new form's values: each field's fixed value, then what the address gives for "from the link"
    fields (``?source=web``); a bad value in the address prefills nothing."""
    values: dict[str, Any] = {}
    for it in items:
        if "f" in it and it.get("value") is not None:
            values[it["f"].key] = it["value"]
    given = [it["f"] for it in items if "f" in it and it.get("from_url") and it["f"].key in args
             and it["f"].ftype.kind != FILES]
    if given:
        try:
            values.update({k: v for k, v in parse_form(p, t, given, args).items() if v not in (None, [], "")})
        except BadRequest:
            pass
    return values


def posted(p: Page, t: TableDef, items: list[dict[str, Any]], public: bool, user_id: int | None,
           created: list[Path]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The values a sent form gives (fixed hidden values from the design, never from the post), its files
    stored, and the errors of fields the form makes required."""
    fields = [it["f"] for it in items if "f" in it]
    sent = [it["f"] for it in items if "f" in it and not (it.get("hidden") and not it.get("from_url"))]
    values = parse_form(p, t, sent, request.form)
    for it in items:
        if "f" in it and it.get("hidden") and not it.get("from_url") and it.get("value") is not None:
            values[it["f"].key] = it["value"]
    errors: dict[str, list[str]] = {}
    form_files(p, t, fields, public, user_id, values, errors, created)
    for it in items:
        if "f" in it and it.get("required") and it["f"].key not in errors \
                and values.get(it["f"].key) in (None, "", [], False):
            errors[it["f"].key] = [p.t("fd_required_missing")]
    return values, errors


def safe_redirect(view: dict[str, Any]) -> str | None:
    """The form's "then go to" address, only when it is a plain http(s) one."""
    url = str((view.get("options") or {}).get("redirect_url") or "")
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        return None
    return url


def _render_form(p: Page, status: int, t: TableDef, view: dict[str, Any], items: list[dict[str, Any]],
                 public: bool, **ctx: Any) -> Response:
    fields = [it["f"] for it in items if "f" in it]
    shown = [it["f"] for it in items if "f" in it and not it.get("hidden")]  # a hidden one's error: at the top
    return render(p, "form.html", status, t=t, view=view, items=items, fields=shown, public=public,
                  options=input_options(p, t, fields),
                  limits={f.key: file_limits(f, public) for f in fields if f.ftype.kind == FILES}, **ctx)


@routes.route("/apps/<app_key>/<table_key>/forms/<view_key>", methods=["GET", "POST"])
def form_page(app_key: str, table_key: str, view_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = visible_table(p, app_key, table_key)
        view = form_view(t, view_key)
        p.access.require(cat, t, "create")
        items = form_items(p, t, view, public=False)
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        done = False
        if request.method == "POST":
            created: list[Path] = []
            try:
                with conn.begin_nested():
                    values, errors = posted(p, t, items, False, access.user_id, created)
                    if errors:
                        raise ValidationFailed.from_details(errors)
                    p.service().create(t, values)
                done, values = True, {}
            except (ValidationFailed, Conflict) as e:
                files.discard(conn, created)
                errors = e.details or {"": [e.message]}
            if done and safe_redirect(view):
                return redirect(safe_redirect(view) or "/", 303)  # type: ignore[return-value]
        else:
            values = prefill(p, t, items, request.args)
        if done:
            values = prefill(p, t, items, {})
        return _render_form(p, 422 if errors else 200, t, view, items, False, app=app, values=values, errors=errors,
                            done=done, tables=visible_tables(p, app), dashboards=visible_dashboards(p, app),
                            form_token="", action=request.full_path.rstrip("?"),
                            can_design=access.can_build())


@routes.route("/f/<app_key>/<table_key>/<view_key>", methods=["GET", "POST"])
def public_form(app_key: str, table_key: str, view_key: str) -> Response:
    """A public lead-capture form: no login; rate-limited per address; a honeypot field turns robots
    away; a signed token stands in for the CSRF token; records are created by the system (created_by
    empty) and fire form_submitted automations."""
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
        items = form_items(p, t, view, public=True)
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
            elif request.form.get("website"):
                # the honeypot: only a robot fills a field nobody sees; it is thanked (so it learns nothing)
                # and nothing is stored
                done, values = True, {}
            else:
                created: list[Path] = []
                try:
                    with conn.begin_nested():
                        values, errors = posted(p, t, items, True, None, created)
                        if errors:
                            raise ValidationFailed.from_details(errors)
                        rec = RecordService(cat, conn, system, secret=secret()).create(t, values)
                        emit_form_submitted(conn, t, rec["id"], form=view["key"])
                    done, values = True, {}
                except (ValidationFailed, Conflict) as e:
                    files.discard(conn, created)
                    errors, status = e.details or {"": [e.message]}, 422
                if done and safe_redirect(view):
                    return redirect(safe_redirect(view) or "/", 303)  # type: ignore[return-value]
        else:
            values = prefill(p, t, items, request.args)
        if done:
            values = prefill(p, t, items, {})
        return _render_form(p, status, t, view, items, True, app=cat.app(app_key), values=values, errors=errors,
                            done=done, form_token=signer("public-form").dumps(view["id"]),
                            action=request.full_path.rstrip("?"))


# --- the form designer --------------------------------------------------------------------------------
def designable(f: FieldDef) -> bool:
    """Can a form carry this field at all (whoever fills it in)?"""
    if f.ftype.read_only:
        return False
    if f.ftype.kind == FILES:
        return f.stored
    return f.ftype.input_kind is not None and not f.ftype.lists_related(f)


def public_url(app_key: str, t: TableDef, view: dict[str, Any]) -> str:
    return request.host_url.rstrip("/") + url_for("ui.public_form", app_key=app_key, table_key=t.key,
                                                  view_key=view["key"])


def designer_rows(t: TableDef, view: dict[str, Any]) -> list[dict[str, Any]]:
    """The designer's list: the form's items in order (sections and fields on the form), then the table's
    other fields, switched off."""
    rows: list[dict[str, Any]] = []
    on: set[str] = set()
    n = 0
    for item in layout(t, view):
        if "section" in item:
            n += 1
            rows.append({"kind": "section", "id": f"s{n}", **text_parts("title", item["section"]),
                         **text_parts("help", item.get("help"))})
            continue
        f = t.fields_by_key.get(item.get("field") or "")
        if f is None or not designable(f) or f.key in on:
            continue
        on.add(f.key)
        rows.append({"kind": "field", "f": f, "on": True, **_row_values(item)})
    rows += [{"kind": "field", "f": f, "on": False, **_row_values({})} for f in t.fields
             if designable(f) and f.key not in on]
    return rows


def text_parts(name: str, value: Any) -> dict[str, str]:
    """A help text or section title as the designer's English and Chinese boxes (``<name>_en``,
    ``<name>_zh``): a ``{"en", "zh-CN"}`` text by its languages, a one-language one in the box of its script."""
    if isinstance(value, dict):
        en, zh = str(value.get("en") or ""), str(value.get("zh-CN") or value.get("zh") or "")
        if not (en or zh):
            en = str(next(iter(value.values()), ""))
        return {f"{name}_en": en, f"{name}_zh": zh}
    text = str(value or "")
    chinese = any("\u4e00" <= ch <= "\u9fff" for ch in text)
    return {f"{name}_en": "" if chinese else text, f"{name}_zh": text if chinese else ""}


def posted_text(form: Any, name: str, prefix: str) -> dict[str, str]:
    """The English and Chinese boxes of a posted text (``<name>.en``, ``<name>.zh``), or a one-language
    post under ``<name>`` put in the box of its script."""
    if f"{name}.en" not in form and f"{name}.zh" not in form:
        return text_parts(prefix, (form.get(name) or "").strip()[:200])
    return {f"{prefix}_en": (form.get(f"{name}.en") or "").strip()[:200],
            f"{prefix}_zh": (form.get(f"{name}.zh") or "").strip()[:200]}


def text_value(r: dict[str, Any], prefix: str) -> Any:
    """The text a design keeps: ``{"en", "zh-CN"}`` when both are given, else the one given ("" if none);
    the form shows the reader's language, or the other when one is missing."""
    en, zh = r[f"{prefix}_en"], r[f"{prefix}_zh"]
    return {"en": en, "zh-CN": zh} if en and zh else en or zh


def _row_values(item: dict[str, Any]) -> dict[str, Any]:
    v = item.get("value")
    return {**text_parts("help", item.get("help")), "required": bool(item.get("required")),
            "hidden": bool(item.get("hidden")), "from_url": bool(item.get("from_url")),
            "value": "" if v is None else ("true" if v is True else "false" if v is False else str(v))}


def rows_from_form(t: TableDef, form: Any) -> list[dict[str, Any]]:
    """The designer's posted rows, in their order on the page (what a failed save shows again)."""
    rows: list[dict[str, Any]] = []
    for row in form.getlist("row"):
        kind, _, ident = str(row).partition(":")
        if kind == "s" and ident.isalnum() and len(ident) <= 20:
            rows.append({"kind": "section", "id": ident, **posted_text(form, f"sec_{ident}", "title"),
                         **posted_text(form, f"sechelp_{ident}", "help")})
        elif kind == "f" and ident in t.fields_by_key and designable(t.fields_by_key[ident]):
            rows.append({"kind": "field", "f": t.fields_by_key[ident], "on": bool(form.get(f"on_{ident}")),
                         **posted_text(form, f"help_{ident}", "help"),
                         "required": bool(form.get(f"req_{ident}")), "hidden": bool(form.get(f"hid_{ident}")),
                         "from_url": bool(form.get(f"url_{ident}")),
                         "value": (form.get(f"val_{ident}") or "").strip()[:1000]})
    return rows


def layout_from_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in rows:
        if r["kind"] == "section":
            title, help_ = text_value(r, "title"), text_value(r, "help")
            if title:
                out.append({"section": title, **({"help": help_} if help_ else {})})
            continue
        if not r["on"]:
            continue
        item: dict[str, Any] = {"field": r["f"].key}
        help_ = text_value(r, "help")
        if help_:
            item["help"] = help_
        for flag in ("required", "hidden", "from_url"):
            if r[flag]:
                item[flag] = True
        if r["value"]:
            item["value"] = r["value"]
        out.append(item)
    return out


def designer_values(view: dict[str, Any]) -> dict[str, Any]:
    opts = view.get("options") or {}
    # a text given in one language shows in that language's box (a Chinese success message is not English)
    return {**text_parts("title", view.get("label")), "description": view.get("description") or "",
            **text_parts("success", opts.get("success_message")), **text_parts("submit", opts.get("submit_label")),
            "redirect_url": opts.get("redirect_url") or "", "public": bool(opts.get("public"))}


def value_errors(p: Page, rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Prefilled values that don't fit their field (a word in a number field, an option that doesn't
    exist), by the designer's input name, so the form is not saved to refuse every submission later."""
    from formwork.metadata.fieldtypes.base import FieldValueError, WriteContext

    out: dict[str, list[str]] = {}
    ctx = WriteContext(p.cat, p.conn, p.access.user_id)
    for r in rows:
        if r["kind"] != "field" or not r["on"] or not r["value"]:
            continue
        f = r["f"]
        try:
            with p.conn.begin_nested():  # a type's check may query (links): nothing of it stays
                f.ftype.coerce(r["value"], f, ctx)
        except (FieldValueError, ValidationFailed, BadRequest) as e:
            out[f"val_{f.key}"] = [p.t("fd_value_bad", detail=str(e))]
    return out


FORM_OPTIONS = ("public", "success_message", "submit_label", "redirect_url", "layout")


@routes.route("/apps/<app_key>/<table_key>/forms/<view_key>/design", methods=["GET", "POST"])
def form_design(app_key: str, table_key: str, view_key: str) -> Response:
    """The form designer: fields in order (drag or move buttons), sections, per-field help, required,
    hidden and prefilled values, the success message or an address to go to, the public link and its
    QR code. Saved as the view's document, validated like the API's."""
    from formwork.ui.builder import builder_page, label_from_form, pointer_errors

    access = current_access()
    with unit() as (conn, cat):
        p, svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        view = form_view(t, view_key)
        errors: dict[str, list[str]] = {}
        status = 200
        if request.method == "POST":
            form = request.form
            rows = rows_from_form(t, form)
            names = ("title_en", "title_zh", "description", "success_en", "success_zh", "submit_en", "submit_zh",
                     "redirect_url")
            values: dict[str, Any] = {k: (form.get(k) or "").strip() for k in names}
            values["public"] = bool(form.get("public"))
            items = layout_from_rows(rows)
            if not (values["title_en"] or values["title_zh"]):
                errors["title"] = [p.t("fd_title_missing")]
            if not any("field" in i for i in items):
                errors["layout"] = [p.t("fd_no_fields")]
            errors.update(value_errors(p, rows))
            url = values["redirect_url"]
            if url and safe_redirect({"options": {"redirect_url": url}}) is None:
                errors["redirect_url"] = [p.t("fd_redirect_bad")]
            if not errors:
                opts = {k: v for k, v in (view.get("options") or {}).items() if k not in FORM_OPTIONS}
                opts["layout"] = items
                if values["public"]:
                    opts["public"] = True
                for name, prefix in (("success_message", "success"), ("submit_label", "submit")):
                    lab = label_from_form(form, prefix)
                    if lab:
                        opts[name] = lab
                if url:
                    opts["redirect_url"] = url
                doc = {"label": label_from_form(form, "title"), "description": values["description"][:5000] or None,
                       "fields": [i["field"] for i in items if "field" in i], "options": opts}
                try:
                    with conn.begin_nested():
                        svc.update_doc("view", app.key, view["key"], doc, t.key)
                except (ValidationFailed, Conflict, BadRequest, NotFound) as e:
                    errors = pointer_errors(e)
                else:
                    return redirect(url_for("ui.form_design", app_key=app.key,  # type: ignore[return-value]
                                            table_key=t.key, view_key=view["key"], saved=1))
            status = 422
        else:
            rows = designer_rows(t, view)
            values = designer_values(view)
        return render(p, "form_design.html", status, app=app, t=t, view=view, rows=rows, values=values,
                      errors=errors, saved=request.args.get("saved") == "1", tables=visible_tables(p, app),
                      dashboards=visible_dashboards(p, app),
                      public_link=public_url(app.key, t, view) if (view.get("options") or {}).get("public") else None)


@routes.get("/apps/<app_key>/<table_key>/forms/<view_key>/qr.svg")
def form_qr(app_key: str, table_key: str, view_key: str) -> Response:
    """The QR code of a form's public link, drawn as SVG on the server (segno); for its designers."""
    import io

    import segno

    from formwork.ui.builder import builder_page

    access = current_access()
    with unit() as (conn, cat):
        p, _svc = builder_page(conn, cat, access)
        app = visible_app(p, app_key)
        t = app.table(table_key)
        view = form_view(t, view_key)
        if not (view.get("options") or {}).get("public"):
            raise NotFound("the form has no public link")
        link = public_url(app.key, t, view)
    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="svg", scale=4, border=2, xmldecl=False, dark="#111827")
    resp = Response(out.getvalue(), mimetype="image/svg+xml")
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "private, max-age=300"
    return resp
