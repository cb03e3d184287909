"""REST API v1: thin views that parse, call a service and dump. Shapes follow shared/API.md."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, make_response, request

from formwork.automation.rules import keep_secrets, mask_secrets, strip_secrets
from formwork.errors import BadRequest, Forbidden, NotFound, reject_unknown_args
from formwork.metadata import validation
from formwork.metadata.catalog import Catalog, TableDef
from formwork.metadata.fieldtypes import field_types
from formwork.metadata.service import Actor, MetadataService
from formwork.runtime import auth
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, RecordService
from formwork.web import (
    MAX_INPUT_INT,
    SESSION_COOKIE,
    check_input,
    client_ip,
    current_access,
    json_body,
    unit,
)

api = Blueprint("api", __name__)
MAX_JSON = 20 * 1024 * 1024


@api.before_request
def _refuse_unstorable_args() -> None:
    """Query arguments and URL parts that no column can hold or compare are a 400/404 here, not a
    database error later: NUL characters and ids beyond 2**62."""
    for k, v in request.args.items(multi=True):
        check_input([k, v], f"the query argument '{k[:40]}'")
    for k, v in (request.view_args or {}).items():
        if isinstance(v, int) and not 0 <= v <= MAX_INPUT_INT:
            raise NotFound(f"no such {k.removesuffix('_id')}")
        if isinstance(v, str):
            if k.endswith("_id") and v.isascii() and v.isdigit() and (len(v) > 19 or int(v) > MAX_INPUT_INT):
                raise NotFound(f"no such {k.removesuffix('_id')}")
            check_input(v, "the address")


@api.after_request
def _nosniff(resp: Response) -> Response:
    """JSON and downloads are never to be sniffed into HTML by a browser."""
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


def ok(data: Any, status: int = 200) -> Response:
    resp = jsonify(data)
    resp.status_code = status
    return resp


def secret() -> bytes:
    return str(current_app.config["SECRET_KEY"]).encode()


def actor(access: Access) -> Actor:
    return Actor(access.user_id, access.is_admin, client_ip())


def require_build(access: Access) -> None:
    if not access.can_build():
        raise Forbidden("you may not change app definitions")


def meta_service(conn: Any, catalog: Catalog, access: Access) -> MetadataService:
    if request.method not in ("GET", "HEAD"):
        auth.audit_meta_change(conn, access, request.method, request.path, client_ip())
    return MetadataService(conn, actor(access), catalog)


def bool_arg(name: str) -> bool:
    v = request.args.get(name, "false").lower()
    if v not in ("true", "false", "1", "0", ""):
        raise BadRequest(f"{name} must be true or false")
    return v in ("true", "1")


# --- auth --------------------------------------------------------------------------------------------
@api.post("/auth/login")
def login() -> Response:
    body = json_body(64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"username\", \"password\"}")
    from formwork.runtime.ratelimit import login_limiter

    login_limiter.check(client_ip() or "-")
    with unit(write=True) as (conn, _cat):
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            auth.logout(conn, old)  # session fixation: whatever id came in dies; the login gets a new one
        try:
            token, csrf, u = auth.login(conn, body.get("username"), body.get("password"), client_ip())
        except Exception:
            conn.commit()  # keep the failure count and the audit entry
            raise
        roles = auth.role_keys(conn, u.id)
    resp = ok({"user": auth.user_json(u, roles), "csrf_token": csrf})
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=request.is_secure,
                    max_age=7 * 24 * 3600, path="/")
    return resp


@api.post("/auth/logout")
def logout() -> Response:
    access = current_access()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and g.get("auth_kind") == "session":
        with unit(write=True) as (conn, _):
            auth.logout(conn, cookie)
            auth.audit(conn, "logout", user_id=access.user_id, username=access.username, ip=client_ip())
    resp = ok({"ok": True})
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@api.get("/me")
def me() -> Response:
    access = current_access()
    with unit() as (conn, _):
        from formwork import db

        u = conn.execute(db.users.select().where(db.users.c.id == access.user_id)).first()
        data = auth.user_json(u, auth.role_keys(conn, u.id))
    data["csrf_token"] = g.get("csrf_token")
    return ok(data)


@api.post("/auth/tokens")
def create_token() -> Response:
    access = current_access()
    body = json_body(64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"name\", \"expires_in_days\"?}")
    with unit() as (conn, _):
        data = auth.create_token(conn, access.user_id or 0, body.get("name"), body.get("expires_in_days"))
        auth.audit(conn, "token_created", user_id=access.user_id, username=access.username,
                   target=f"token:{data['id']}", ip=client_ip())
    return ok(data, 201)


@api.get("/auth/tokens")
def list_tokens() -> Response:
    access = current_access()
    with unit() as (conn, _):
        return ok({"tokens": auth.list_tokens(conn, access.user_id or 0)})


@api.delete("/auth/tokens/<token_id>")
def revoke_token(token_id: str) -> Response:
    access = current_access()
    with unit() as (conn, _):
        auth.revoke_token(conn, access.user_id or 0, token_id)
        auth.audit(conn, "token_revoked", user_id=access.user_id, username=access.username,
                   target=f"token:{token_id}", ip=client_ip())
    return Response(status=204)


# --- metadata ----------------------------------------------------------------------------------------
@api.get("/meta/schemas/<kind>")
def get_schema(kind: str) -> Response:
    current_access()
    if kind not in validation.KINDS:
        raise NotFound(f"no schema '{kind[:40]}'; kinds: {', '.join(validation.KINDS)}")
    return ok(validation.schema(kind))


@api.get("/meta/field-types")
def list_field_types() -> Response:
    current_access()
    from formwork.metadata.fieldtypes.base import OPERATORS_BY_KIND

    out = []
    for ft in field_types.all():
        out.append({"type": ft.type, "label": ft.label, "options_schema": ft.options_schema,
                    "operators": list(OPERATORS_BY_KIND[ft.kind]), "read_only": ft.read_only,
                    "computed": ft.computed, "kind": ft.kind})
    return ok(out)


@api.get("/meta/apps")
def list_apps() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        apps = [svc.app_json(a, full=False) for a in cat.apps
                if access.is_admin or any(access.can_see_table(cat, t) for t in a.tables)]
    return ok({"apps": apps})


@api.post("/meta/apps")
def create_app() -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        app = svc.create_app(body)
        return ok(svc.app_json(app), 201)


def _visible_app(cat: Catalog, access: Access, app_key: str) -> Any:
    app = cat.app(app_key)
    if not (access.is_admin or access.can_build() or any(access.can_see_table(cat, t) for t in app.tables)):
        raise NotFound(f"no app '{app_key}'")
    return app


@api.get("/meta/apps/<app_key>")
def get_app(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        app = _visible_app(cat, access, app_key)
        svc = meta_service(conn, cat, access)
        data = svc.app_json(app)
        if not access.can_build():
            data["tables"] = [_table_for(cat, access, cat.tables_by_id[t["id"]], t) for t in data["tables"]
                              if access.can_see_table(cat, cat.tables_by_id[t["id"]])]
        data["automations"] = [mask_secrets(a) for a in data["automations"]] \
            if access.can_manage_automations() else []
        return ok(data)


@api.patch("/meta/apps/<app_key>")
def update_app(app_key: str) -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        return ok(svc.app_json(svc.update_app(app_key, body)))


@api.delete("/meta/apps/<app_key>")
def delete_app(app_key: str) -> Response:
    access = current_access()
    require_build(access)
    with unit() as (conn, cat):
        meta_service(conn, cat, access).delete_app(app_key)
    return Response(status=204)


@api.get("/meta/apps/<app_key>/tables")
def list_tables(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        app = _visible_app(cat, access, app_key)
        svc = meta_service(conn, cat, access)
        return ok({"tables": [_table_for(cat, access, t, svc.table_json(t)) for t in app.tables
                              if access.can_see_table(cat, t)]})


@api.post("/meta/apps/<app_key>/tables")
def create_table(app_key: str) -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        t = svc.create_table(app_key, body)
        return ok(svc.table_json(t), 201)


def _visible_table(cat: Catalog, access: Access, app_key: str, table_key: str) -> TableDef:
    t = cat.table(app_key, table_key)
    if not access.can_see_table(cat, t) and not access.can_build():
        raise NotFound(f"no table '{table_key}' in app '{app_key}'")
    return t


def _shown_field_ids(cat: Catalog, access: Access, t: TableDef) -> set[int] | None:
    """Ids of the fields this caller may see defined (None: all, for builders and admins)."""
    if access.can_build():
        return None
    vis = access.field_visibility(cat, t, t.sa)
    return {f.id for f in t.fields if vis.get(f.id, True) is not False}


def _table_for(cat: Catalog, access: Access, t: TableDef, data: dict[str, Any]) -> dict[str, Any]:
    """A table document without the definitions of fields hidden from the caller."""
    shown = _shown_field_ids(cat, access, t)
    if shown is None:
        return data
    return {**data, "fields": [f for f in data.get("fields", []) if f.get("id") in shown]}


@api.get("/meta/apps/<app_key>/tables/<table_key>")
def get_table(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = _visible_table(cat, access, app_key, table_key)
        return ok(_table_for(cat, access, t, meta_service(conn, cat, access).table_json(t)))


@api.patch("/meta/apps/<app_key>/tables/<table_key>")
def update_table(app_key: str, table_key: str) -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        return ok(svc.table_json(svc.update_table(app_key, table_key, body)))


@api.delete("/meta/apps/<app_key>/tables/<table_key>")
def delete_table(app_key: str, table_key: str) -> Response:
    access = current_access()
    require_build(access)
    with unit() as (conn, cat):
        meta_service(conn, cat, access).delete_table(app_key, table_key)
    return Response(status=204)


@api.get("/meta/apps/<app_key>/tables/<table_key>/fields")
def list_fields(app_key: str, table_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = _visible_table(cat, access, app_key, table_key)
        svc = meta_service(conn, cat, access)
        vis = access.field_visibility(cat, t, t.sa)
        return ok({"fields": [svc.field_json(f) for f in t.fields if vis.get(f.id, True) is not False]})


@api.post("/meta/apps/<app_key>/tables/<table_key>/fields")
def create_field(app_key: str, table_key: str) -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        f = svc.create_field(app_key, table_key, body)
        return ok(svc.field_json(f), 201)


@api.get("/meta/apps/<app_key>/tables/<table_key>/fields/<field_key>")
def get_field(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = _visible_table(cat, access, app_key, table_key)
        f = t.field(field_key)
        shown = _shown_field_ids(cat, access, t)
        if shown is not None and f.id not in shown:
            raise NotFound(f"no field '{field_key[:100]}' in table '{table_key}'")
        return ok(meta_service(conn, cat, access).field_json(f))


@api.patch("/meta/apps/<app_key>/tables/<table_key>/fields/<field_key>")
def update_field(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON)
    dry = bool_arg("dry_run")
    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        result = svc.update_field(app_key, table_key, field_key, body, dry_run=dry)
        if dry:
            conn.rollback()
            return ok(result)
        field = result.pop("field")
        return ok({**field, "conversion": result})


@api.delete("/meta/apps/<app_key>/tables/<table_key>/fields/<field_key>")
def delete_field(app_key: str, table_key: str, field_key: str) -> Response:
    access = current_access()
    require_build(access)
    with unit() as (conn, cat):
        meta_service(conn, cat, access).delete_field(app_key, table_key, field_key)
    return Response(status=204)


def _public(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A definition as answered over HTTP: automation secrets (webhook HMAC keys) are write-only."""
    return mask_secrets(doc) if kind == "automation" else doc


def _doc_routes(kind: str, base: str, parent_table: bool) -> None:
    plural = kind + "s"

    def listing(app_key: str, table_key: str | None = None) -> Response:
        access = current_access()
        with unit() as (_conn, cat):
            if parent_table:
                docs = _visible_table(cat, access, app_key, table_key or "").views
            else:
                docs = getattr(_visible_app(cat, access, app_key), plural)
            if kind == "automation" and not access.can_manage_automations():
                docs = []  # rules (their recipients, URLs, filters) are for those who manage them
            return ok({plural: [_public(kind, MetadataService._doc_json(d)) for d in docs]})

    def create(app_key: str, table_key: str | None = None) -> Response:
        access = current_access()
        if kind == "automation" and not access.can_manage_automations():
            raise Forbidden("you may not manage automations")
        if kind != "automation":
            require_build(access)
        body = json_body(MAX_JSON)
        if kind == "automation" and isinstance(body, dict):
            body = {**body, "actions": keep_secrets(body["actions"], [])} if "actions" in body else body
        with unit() as (conn, cat):
            doc = meta_service(conn, cat, access).create_doc(kind, app_key, body, table_key)
            return ok(_public(kind, doc), 201)

    def one(app_key: str, key: str, table_key: str | None = None) -> Response:
        access = current_access()
        with unit() as (conn, cat):
            if parent_table:
                _visible_table(cat, access, app_key, table_key or "")
            else:
                _visible_app(cat, access, app_key)
            if kind == "automation" and not access.can_manage_automations():
                if request.method == "GET":
                    raise NotFound(f"no automation '{key[:100]}' in app '{app_key}'")
                raise Forbidden("you may not manage automations")
            svc = meta_service(conn, cat, access)
            if request.method == "GET":
                return ok(_public(kind, MetadataService._doc_json(svc.get_doc(kind, app_key, key, table_key))))
            if kind != "automation":
                require_build(access)
            if request.method == "PATCH":
                patch = json_body(MAX_JSON)
                if kind == "automation" and isinstance(patch, dict) and "actions" in patch:
                    stored = svc.get_doc(kind, app_key, key, table_key).get("actions")
                    patch = {**patch, "actions": keep_secrets(patch["actions"], stored)}
                return ok(_public(kind, svc.update_doc(kind, app_key, key, patch, table_key)))
            svc.delete_doc(kind, app_key, key, table_key)
            return Response(status=204)

    api.add_url_rule(base, f"list_{plural}", listing, methods=["GET"])
    api.add_url_rule(base, f"create_{kind}", create, methods=["POST"])
    api.add_url_rule(f"{base}/<key>", f"{kind}_one", one, methods=["GET", "PATCH", "DELETE"])


_doc_routes("view", "/meta/apps/<app_key>/tables/<table_key>/views", True)
_doc_routes("automation", "/meta/apps/<app_key>/automations", False)
_doc_routes("dashboard", "/meta/apps/<app_key>/dashboards", False)


@api.get("/meta/trash")
def list_trash() -> Response:
    access = current_access()
    require_build(access)
    with unit() as (conn, cat):
        return ok({"entries": meta_service(conn, cat, access).trash()})


@api.post("/meta/trash/<trash_id>/restore")
def restore_trash(trash_id: str) -> Response:
    access = current_access()
    require_build(access)
    with unit() as (conn, cat):
        return ok(meta_service(conn, cat, access).restore(trash_id))


@api.get("/meta/apps/<app_key>/export")
def export_app(app_key: str) -> Response:
    access = current_access()
    require_build(access)
    from formwork.metadata.portable import export_app as do_export

    with unit() as (conn, cat):
        doc = do_export(conn, cat, app_key)
        left_out = [f"automation '{a.get('key')}' {p}" for a in doc.get("automations") or []
                    for p in strip_secrets(a)]
        if left_out:
            doc["notes"] = ["Webhook secrets are not exported; set them again after import: " + ", ".join(left_out)]
        auth.audit(conn, "app_exported", user_id=access.user_id, username=access.username, target=f"app:{app_key}",
                   ip=client_ip())
    resp = make_response(json.dumps(doc, ensure_ascii=False, indent=1))
    resp.headers["Content-Type"] = "application/json; charset=utf-8"
    return resp


@api.post("/meta/apps/import")
def import_app() -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON)
    from formwork.metadata.portable import import_app as do_import

    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        app = do_import(svc, body, request.args.get("key"))
        return ok(svc.app_json(app), 201)


@api.get("/meta/templates")
def list_templates() -> Response:
    current_access()
    from formwork.metadata.portable import list_templates as templates

    return ok({"templates": templates()})


@api.post("/meta/templates/<name>/install")
def install_template(name: str) -> Response:
    access = current_access()
    require_build(access)
    body = json_body(MAX_JSON) if request.get_data() else {}
    if not isinstance(body, dict):
        raise BadRequest("send {\"key\"?, \"demo_data\"?}")
    from formwork.runtime.demo import install_template as install

    with unit() as (conn, cat):
        svc = meta_service(conn, cat, access)
        app = install(svc, name, body.get("key"), bool(body.get("demo_data")))
        return ok(svc.app_json(app), 201)


# --- records -----------------------------------------------------------------------------------------
LIST_ARGS = {"filter", "view", "sort", "search", "fields", "limit", "cursor", "offset", "count"}


def _reader(conn: Any, cat: Catalog, access: Access) -> RecordReader:
    return RecordReader(cat, conn, access, secret=secret())


def _service(conn: Any, cat: Catalog, access: Access) -> RecordService:
    return RecordService(cat, conn, access, secret=secret())


def parse_filter_arg() -> Any:
    raw = request.args.get("filter")
    if raw in (None, ""):
        return None
    if len(raw) > 100_000:
        raise BadRequest("the filter is too long")
    try:
        tree = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError, as is a 4300+ digit number
        raise BadRequest("filter must be a JSON filter tree") from None
    check_input(tree, "the filter")
    return tree


def _view(t: TableDef) -> dict[str, Any] | None:
    key = request.args.get("view")
    return t.view(key) if key else None


@api.get("/data/<app_key>/<table_key>")
def list_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    reject_unknown_args(request.args, LIST_ARGS)
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        result = _reader(conn, cat, access).list(
            t, filter_tree=parse_filter_arg(), sort=request.args.get("sort"), search=request.args.get("search"),
            fields=request.args.get("fields"), limit=request.args.get("limit"), cursor=request.args.get("cursor"),
            offset=request.args.get("offset"), count=bool_arg("count"), view=_view(t))
    return ok(result)


@api.post("/data/<app_key>/<table_key>")
def create_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or ("fields" not in body and "records" not in body):
        raise BadRequest("send {\"fields\": {...}} or {\"records\": [{\"fields\": {...}}, ...]}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        svc = _service(conn, cat, access)
        if "records" in body:
            items = body["records"]
            if not isinstance(items, list):
                raise BadRequest("'records' must be a list")
            recs = svc.create_many(t, [i.get("fields", {}) if isinstance(i, dict) else i for i in items])
            return ok({"records": recs}, 201)
        return ok(svc.create(t, body["fields"]), 201)


@api.patch("/data/<app_key>/<table_key>")
def update_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise BadRequest("send {\"records\": [{\"id\", \"fields\"}, ...]}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"records": _service(conn, cat, access).update_many(t, body["records"])})


def _if_match() -> int | None:
    raw = request.headers.get("If-Match")
    if not raw:
        return None
    raw = raw.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise BadRequest("If-Match must be a record version such as \"3\"")
    return int(raw)


def _with_etag(rec: dict[str, Any], status: int = 200) -> Response:
    resp = ok(rec, status)
    resp.headers["ETag"] = f'"{rec["version"]}"'
    return resp


@api.get("/data/<app_key>/<table_key>/<int:record_id>")
def get_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return _with_etag(_reader(conn, cat, access).get(t, record_id, request.args.get("fields")))


@api.patch("/data/<app_key>/<table_key>/<int:record_id>")
def update_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise BadRequest("send {\"fields\": {...}}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return _with_etag(_service(conn, cat, access).update(t, record_id, body["fields"], _if_match()))


@api.delete("/data/<app_key>/<table_key>/<int:record_id>")
def delete_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        _service(conn, cat, access).delete(t, record_id)
    return Response(status=204)


@api.post("/data/<app_key>/<table_key>/<int:record_id>/restore")
def restore_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return _with_etag(_service(conn, cat, access).restore(t, record_id))


@api.get("/data/<app_key>/<table_key>/<int:record_id>/history")
def record_history(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok(_service(conn, cat, access).history(t, record_id))


@api.post("/data/<app_key>/<table_key>/bulk-update")
def bulk_update(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise BadRequest("send {\"filter\": {...}, \"fields\": {...}}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"updated": _service(conn, cat, access).bulk_update(t, body.get("filter"), body["fields"])})


@api.post("/data/<app_key>/<table_key>/bulk-delete")
def bulk_delete(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict):
        raise BadRequest("send {\"filter\": {...}}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"deleted": _service(conn, cat, access).bulk_delete(t, body.get("filter"))})



# route modules that extend this blueprint (imported for their side effect of adding routes)
from formwork.automation import api as _automation_api  # noqa: E402,F401
from formwork.runtime import (  # noqa: E402,F401
    api_admin,
    api_pool,  # noqa: E402,F401
    api_reports,
    api_transfer,
)
