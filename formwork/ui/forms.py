"""Form views: the logged-in form page and the public (no login) lead-capture form."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from itsdangerous import BadSignature

from formwork.errors import Conflict, NotFound, ValidationFailed
from formwork.metadata.catalog import FieldDef, TableDef
from formwork.metadata.fieldtypes.base import FILES
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


def form_fields(p: Page, t: TableDef, view: dict[str, Any], public: bool) -> list[FieldDef]:
    keys = view.get("fields") or [f.key for f in t.fields]
    out = []
    for k in keys:
        f = t.fields_by_key.get(k)
        if f is not None and f.ftype.kind == FILES and not f.ftype.read_only:
            if public or p.access.field_writable(p.cat, t, f):
                out.append(f)  # an upload input (see form_files)
            continue
        if f is None or f.ftype.read_only or f.ftype.input_kind is None or f.ftype.lists_related(f):
            continue
        if public and f.ftype.input_kind in ("records", "users"):
            continue  # a public visitor may not browse records or the user list
        if not public and not writable(p, t, f):
            continue
        out.append(f)
    return out


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


@routes.route("/apps/<app_key>/<table_key>/forms/<view_key>", methods=["GET", "POST"])
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
                    form_files(p, t, fields, False, access.user_id, values, errors)
                    if errors:
                        raise ValidationFailed.from_details(errors)
                    p.service().create(t, values)
                done, values = True, {}
            except (ValidationFailed, Conflict) as e:
                errors = e.details or {"": [e.message]}
        return render(p, "form.html", 422 if errors else 200, app=app, t=t, view=view, fields=fields,
                      values=values, errors=errors, done=done, public=False,
                      options=input_options(p, t, fields), tables=visible_tables(p, app),
                      limits={f.key: file_limits(f, False) for f in fields if f.ftype.kind == FILES},
                      dashboards=visible_dashboards(p, app), form_token="", action=request.path)


@routes.route("/f/<app_key>/<table_key>/<view_key>", methods=["GET", "POST"])
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
            elif request.form.get("website"):  # the honeypot: only a robot fills a field nobody sees
                done, values = True, {}
            else:
                values = parse_form(p, t, fields, request.form)
                try:
                    with conn.begin_nested():
                        form_files(p, t, fields, True, None, values, errors)
                        if errors:
                            raise ValidationFailed.from_details(errors)
                        rec = RecordService(cat, conn, system, secret=secret()).create(t, values)
                        emit_form_submitted(conn, t, rec["id"], form=view["key"])
                    done, values = True, {}
                except (ValidationFailed, Conflict) as e:
                    errors, status = e.details or {"": [e.message]}, 422
        return render(p, "form.html", status, app=cat.app(app_key), t=t, view=view, fields=fields, values=values,
                      errors=errors, done=done, public=True, options=input_options(p, t, fields),
                      limits={f.key: file_limits(f, True) for f in fields if f.ftype.kind == FILES},
                      form_token=signer("public-form").dumps(view["id"]), action=request.path)
