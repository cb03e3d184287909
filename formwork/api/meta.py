"""Definitions: schemas, field types, apps, tables, fields, the documents (views, automations, dashboards),
the trash, app export/import and templates."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Response, make_response, request
from sqlalchemy.engine import Connection

from formwork import db
from formwork.api.common import (
    MAX_JSON,
    bool_arg,
    meta_service,
    ok,
    require_meta_right,
    shown_field_ids,
    table_for,
    visible_app,
    visible_table,
)
from formwork.errors import BadRequest, Forbidden, NotFound
from formwork.metadata import portable, validation
from formwork.metadata.catalog import Catalog
from formwork.metadata.documents import FORBIDDEN, DocumentKind, document_kinds
from formwork.metadata.fieldtypes import field_types
from formwork.metadata.fieldtypes.base import OPERATORS_BY_KIND
from formwork.metadata.service import MetadataService
from formwork.runtime import auth, demo
from formwork.runtime.dashboards import shared_with
from formwork.runtime.permissions import Access
from formwork.web import RouteSet, client_ip, current_access, json_body, platform, unit

routes = RouteSet()


@routes.get("/meta/schemas/<kind>")
def get_schema(kind: str) -> Response:
    current_access()
    if kind not in validation.KINDS:
        raise NotFound(f"no schema '{kind[:40]}'; kinds: {', '.join(validation.KINDS)}")
    return ok(validation.schema(kind))


@routes.get("/meta/field-types")
def list_field_types() -> Response:
    current_access()
    out = []
    for ft in field_types.all():
        out.append({"type": ft.type, "label": ft.label, "options_schema": ft.options_schema,
                    "operators": list(OPERATORS_BY_KIND[ft.kind]), "read_only": ft.read_only,
                    "computed": ft.computed, "kind": ft.kind})
    return ok(out)


def may_read(access: Access, dk: DocumentKind) -> bool:
    """Whether the caller may read documents of this kind (a private kind's readers need its right,
    dashboards the right to view dashboards)."""
    right = dk.right_to_read()
    return right is None or access.actor().has(right)


def public_app(access: Access, data: dict[str, Any]) -> dict[str, Any]:
    """An app answer: its documents as their kinds show them to readers, private kinds (automations:
    their recipients, URLs, filters) only for those holding their right."""
    for dk in document_kinds.in_apps():
        plural = dk.kind + "s"
        if dk.parent == "app" and isinstance(data.get(plural), list):
            data[plural] = [dk.public(d) for d in data[plural]] if may_read(access, dk) else []
    if isinstance(data.get("dashboards"), list):  # shared with roles the caller lacks: not shown at all
        data["dashboards"] = [d for d in data["dashboards"] if shared_with(access, d)]
    return data


# --- apps --------------------------------------------------------------------------------------------
@routes.get("/meta/apps")
def list_apps() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        apps = [svc.app_json(a, full=False) for a in cat.apps
                if access.is_admin or any(access.can_see_table(cat, t) for t in a.tables)]
    return ok({"apps": apps})


@routes.post("/meta/apps")
def create_app() -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        app = svc.create_app(body)
        return ok(public_app(access, svc.app_json(app)), 201)


@routes.get("/meta/apps/<app_key>")
def get_app(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        app = visible_app(cat, access, app_key)
        svc = meta_service(conn, cat, access)
        data = svc.app_json(app)
        if not access.can_build():
            data["tables"] = [table_for(cat, access, cat.tables_by_id[t["id"]], t) for t in data["tables"]
                              if access.can_see_table(cat, cat.tables_by_id[t["id"]])]
        return ok(public_app(access, data))


@routes.patch("/meta/apps/<app_key>")
def update_app(app_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        return ok(public_app(access, svc.app_json(svc.update_app(app_key, body))))


@routes.delete("/meta/apps/<app_key>")
def delete_app(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        meta_service(conn, cat, access).delete_app(app_key)
    return Response(status=204)


# --- tables ------------------------------------------------------------------------------------------
@routes.get("/meta/apps/<app_key>/tables")
def list_tables(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        app = visible_app(cat, access, app_key)
        svc = meta_service(conn, cat, access)
        return ok({"tables": [table_for(cat, access, t, svc.table_json(t)) for t in app.tables
                              if access.can_see_table(cat, t)]})


@routes.post("/meta/apps/<app_key>/tables")
def create_table(app_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        t = svc.create_table(app_key, body)
        return ok(svc.table_json(t), 201)


@routes.get("/meta/apps/<app_key>/tables/<table_key>")
def get_table(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = visible_table(cat, access, app_key, table_key)
        return ok(table_for(cat, access, t, meta_service(conn, cat, access).table_json(t)))


@routes.patch("/meta/apps/<app_key>/tables/<table_key>")
def update_table(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        return ok(svc.table_json(svc.update_table(app_key, table_key, body)))


@routes.delete("/meta/apps/<app_key>/tables/<table_key>")
def delete_table(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        meta_service(conn, cat, access).delete_table(app_key, table_key)
    return Response(status=204)


# --- fields ------------------------------------------------------------------------------------------
@routes.get("/meta/apps/<app_key>/tables/<table_key>/fields")
def list_fields(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = visible_table(cat, access, app_key, table_key)
        svc = meta_service(conn, cat, access)
        vis = access.field_visibility(cat, t, t.sa)
        return ok({"fields": [svc.field_json(f) for f in t.fields if vis.get(f.id, True) is not False]})


def adopt_after_commit(conn: Connection, svc: MetadataService) -> None:
    """The field change was the request's last metadata write: once it commits, this process keeps the
    catalog the service loaded after it instead of loading the same version again on the next request."""
    catalogs = platform().catalogs
    loaded = svc.catalog

    def adopt() -> None:
        catalogs.adopt(loaded)

    db.after_commit(conn, adopt)


@routes.post("/meta/apps/<app_key>/tables/<table_key>/fields")
def create_field(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        f = svc.create_field(app_key, table_key, body)
        adopt_after_commit(conn, svc)
        return ok(svc.field_json(f), 201)


@routes.get("/meta/apps/<app_key>/tables/<table_key>/fields/<field_key>")
def get_field(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = visible_table(cat, access, app_key, table_key)
        f = t.field(field_key)
        shown = shown_field_ids(cat, access, t)
        if shown is not None and f.id not in shown:
            raise NotFound(f"no field '{field_key[:100]}' in table '{table_key}'")
        return ok(meta_service(conn, cat, access).field_json(f))


@routes.patch("/meta/apps/<app_key>/tables/<table_key>/fields/<field_key>")
def update_field(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    dry = bool_arg("dry_run")
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        result = svc.update_field(app_key, table_key, field_key, body, dry_run=dry)
        if dry:
            conn.rollback()
            return ok(result)
        adopt_after_commit(conn, svc)
        field = result.pop("field")
        return ok({**field, "conversion": result})


@routes.delete("/meta/apps/<app_key>/tables/<table_key>/fields/<field_key>")
def delete_field(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        meta_service(conn, cat, access).delete_field(app_key, table_key, field_key)
    return Response(status=204)


# --- documents: views (per table), automations and dashboards (per app) ------------------------------
def _reader_doc(cat: Catalog, access: Access, app_key: str, table_key: str | None) -> Any:
    """How a view document is shown to this caller: whole to builders, trimmed of hidden fields to readers."""
    if access.can_build():
        return lambda d: d
    t = visible_table(cat, access, app_key, table_key or "")
    return lambda d: access.visible_view(cat, t, d)


def _everyone(_access: Access, _doc: dict[str, Any]) -> bool:
    return True


def _declare_doc_routes(kind: str, base: str, parent_table: bool,
                        shared: Callable[[Access, dict[str, Any]], bool] = _everyone) -> None:
    """List, create, get, change and delete one kind of document; endpoints ``list_<kind>s``,
    ``create_<kind>`` and ``<kind>_one``. ``shared`` says whether one document is shown to a caller (a
    dashboard shared with roles the caller lacks is neither listed nor read)."""
    plural = kind + "s"

    def listing(app_key: str, table_key: str | None = None) -> Response:
        access = current_access()
        dk = document_kinds.get(kind)
        with unit() as (_conn, cat):
            shown = _reader_doc(cat, access, app_key, table_key) if parent_table else (lambda d: d)
            if parent_table:
                docs = visible_table(cat, access, app_key, table_key or "").views
            else:
                docs = getattr(visible_app(cat, access, app_key), plural)
            if not may_read(access, dk):
                docs = []
            return ok({plural: [shown(dk.public(MetadataService._doc_json(d))) for d in docs if shared(access, d)]})

    def create(app_key: str, table_key: str | None = None) -> Response:
        access = current_access()
        dk = document_kinds.get(kind)
        body = dk.incoming(json_body(MAX_JSON), lambda: None)
        with unit() as (conn, cat):
            doc = meta_service(conn, cat, access).create_doc(kind, app_key, body, table_key)
            return ok(dk.public(doc), 201)

    def one(app_key: str, key: str, table_key: str | None = None) -> Response:
        access = current_access()
        dk = document_kinds.get(kind)
        with unit() as (conn, cat):
            if parent_table:
                visible_table(cat, access, app_key, table_key or "")
            else:
                visible_app(cat, access, app_key)
            if not may_read(access, dk):
                if request.method == "GET":
                    raise NotFound(f"no {kind} '{key[:100]}' in app '{app_key}'")
                raise Forbidden(FORBIDDEN[dk.right])
            svc = meta_service(conn, cat, access)
            if request.method == "GET":
                shown = _reader_doc(cat, access, app_key, table_key) if parent_table else (lambda d: d)
                doc = svc.get_doc(kind, app_key, key, table_key)
                if not shared(access, doc):
                    raise NotFound(f"no {kind} '{key[:100]}' in app '{app_key}'")
                return ok(shown(dk.public(MetadataService._doc_json(doc))))
            if request.method == "PATCH":
                patch = dk.incoming(json_body(MAX_JSON), lambda: svc.get_doc(kind, app_key, key, table_key))
                return ok(dk.public(svc.update_doc(kind, app_key, key, patch, table_key)))
            svc.delete_doc(kind, app_key, key, table_key)
            return Response(status=204)

    routes.add(base, listing, endpoint=f"list_{plural}", methods=["GET"])
    routes.add(base, create, endpoint=f"create_{kind}", methods=["POST"])
    routes.add(f"{base}/<key>", one, endpoint=f"{kind}_one", methods=["GET", "PATCH", "DELETE"])


_declare_doc_routes("view", "/meta/apps/<app_key>/tables/<table_key>/views", True)
_declare_doc_routes("automation", "/meta/apps/<app_key>/automations", False)
_declare_doc_routes("dashboard", "/meta/apps/<app_key>/dashboards", False, shared_with)


# --- trash, export/import, templates -----------------------------------------------------------------
@routes.get("/meta/trash")
def list_trash() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        return ok({"entries": meta_service(conn, cat, access).trash()})


@routes.post("/meta/trash/<trash_id>/restore")
def restore_trash(trash_id: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        return ok(meta_service(conn, cat, access).restore(trash_id))


@routes.get("/meta/apps/<app_key>/export")
def export_app(app_key: str) -> Response:
    access = current_access()
    require_meta_right(access)
    with unit() as (conn, cat):
        doc = portable.export_app(conn, cat, app_key)
        left_out = portable.exported_documents(doc)
        if left_out:
            doc["notes"] = ["Webhook secrets are not exported; set them again after import: " + ", ".join(left_out)]
        auth.audit(conn, "app_exported", user_id=access.user_id, username=access.username, target=f"app:{app_key}",
                   ip=client_ip())
    resp = make_response(json.dumps(doc, ensure_ascii=False, indent=1))
    resp.headers["Content-Type"] = "application/json; charset=utf-8"
    return resp


@routes.post("/meta/apps/import")
def import_app() -> Response:
    access = current_access()
    require_meta_right(access)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        app = portable.import_app(svc, body, request.args.get("key"))
        return ok(public_app(access, svc.app_json(app)), 201)


@routes.get("/meta/templates")
def list_templates() -> Response:
    current_access()
    return ok({"templates": portable.list_templates()})


@routes.post("/meta/apps/<app_key>/upgrade")
def upgrade_app(app_key: str) -> Response:
    """Upgrade an installed app to the newer bundled template it came from: ``{"template": "crm"}`` →
    a report of what was created, updated, converted and kept (formwork.metadata.upgrade)."""
    from formwork.metadata import upgrade

    access = current_access()
    require_meta_right(access)
    body = json_body(MAX_JSON) if request.get_data() else {}
    if not isinstance(body, dict):
        raise BadRequest("send {\"template\": \"<name>\"}")
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        return ok(upgrade.upgrade_app(svc, app_key, upgrade.check_name(body.get("template") or app_key)))


@routes.post("/meta/templates/<name>/install")
def install_template(name: str) -> Response:
    access = current_access()
    require_meta_right(access)
    body = json_body(MAX_JSON) if request.get_data() else {}
    if not isinstance(body, dict):
        raise BadRequest("send {\"key\"?, \"demo_data\"?, \"language\"?}")
    # the demo data is written in one language: the one asked for, else the caller's
    language = body.get("language") or (access.locale if access.locale in demo.LANGUAGES else "zh-CN")
    if language not in demo.LANGUAGES:
        raise BadRequest(f"language must be one of: {', '.join(demo.LANGUAGES)}")
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        app = demo.install_template(svc, name, body.get("key"), bool(body.get("demo_data")), language)
        return ok(public_app(access, svc.app_json(app)), 201)
