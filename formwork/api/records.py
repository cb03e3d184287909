"""Records of a table: list, create, change, delete, restore, history, bulk changes."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from formwork.api.common import (
    MAX_JSON,
    bool_arg,
    ok,
    parse_filter_arg,
    record_reader,
    record_service,
    requested_view,
)
from formwork.errors import BadRequest, reject_unknown_args
from formwork.runtime import duplicates
from formwork.web import RouteSet, current_access, json_body, unit

routes = RouteSet()
LIST_ARGS = {"filter", "view", "sort", "search", "fields", "limit", "cursor", "offset", "count"}


def if_match() -> int | None:
    """The record version an ``If-Match`` header asks for (optimistic locking), or None."""
    raw = request.headers.get("If-Match")
    if not raw:
        return None
    raw = raw.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise BadRequest("If-Match must be a record version such as \"3\"")
    return int(raw)


def with_etag(rec: dict[str, Any], status: int = 200) -> Response:
    resp = ok(rec, status)
    resp.headers["ETag"] = f'"{rec["version"]}"'
    return resp


@routes.get("/data/<app_key>/<table_key>")
def list_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    reject_unknown_args(request.args, LIST_ARGS)
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        result = record_reader(conn, cat, access).list(
            t, filter_tree=parse_filter_arg(), sort=request.args.get("sort"), search=request.args.get("search"),
            fields=request.args.get("fields"), limit=request.args.get("limit"), cursor=request.args.get("cursor"),
            offset=request.args.get("offset"), count=bool_arg("count"), view=requested_view(t))
    return ok(result)


@routes.post("/data/<app_key>/<table_key>")
def create_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or ("fields" not in body and "records" not in body):
        raise BadRequest("send {\"fields\": {...}} or {\"records\": [{\"fields\": {...}}, ...]}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        svc = record_service(conn, cat, access)
        # a table's duplicate rules refuse (409, code "duplicate") what looks like an existing record
        # until the client confirms with allow_duplicates: true
        check = body.get("allow_duplicates") is not True and bool(duplicates.rules(t))
        if "records" in body:
            items = body["records"]
            if not isinstance(items, list):
                raise BadRequest("'records' must be a list")
            values = [i.get("fields", {}) if isinstance(i, dict) else i for i in items]
            if check:
                access.require(cat, t, "create")
                duplicates.refuse_duplicates(conn, cat, access, t, values)
            recs = svc.create_many(t, values)
            return ok({"records": recs}, 201)
        if check and isinstance(body["fields"], dict):
            access.require(cat, t, "create")
            duplicates.refuse_duplicates(conn, cat, access, t, [body["fields"]])
        return ok(svc.create(t, body["fields"]), 201)


@routes.patch("/data/<app_key>/<table_key>")
def update_records(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise BadRequest("send {\"records\": [{\"id\", \"fields\"}, ...]}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"records": record_service(conn, cat, access).update_many(t, body["records"])})


@routes.get("/data/<app_key>/<table_key>/<int:record_id>")
def get_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return with_etag(record_reader(conn, cat, access).get(t, record_id, request.args.get("fields")))


@routes.patch("/data/<app_key>/<table_key>/<int:record_id>")
def update_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise BadRequest("send {\"fields\": {...}}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return with_etag(record_service(conn, cat, access).update(t, record_id, body["fields"], if_match()))


@routes.delete("/data/<app_key>/<table_key>/<int:record_id>")
def delete_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        record_service(conn, cat, access).delete(t, record_id)
    return Response(status=204)


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/restore")
def restore_record(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return with_etag(record_service(conn, cat, access).restore(t, record_id))


@routes.get("/data/<app_key>/<table_key>/<int:record_id>/history")
def record_history(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok(record_service(conn, cat, access).history(t, record_id))


@routes.post("/data/<app_key>/<table_key>/bulk-update")
def bulk_update(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise BadRequest("send {\"filter\": {...}, \"fields\": {...}}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"updated": record_service(conn, cat, access).bulk_update(t, body.get("filter"), body["fields"])})


@routes.post("/data/<app_key>/<table_key>/bulk-delete")
def bulk_delete(app_key: str, table_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict):
        raise BadRequest("send {\"filter\": {...}}")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"deleted": record_service(conn, cat, access).bulk_delete(t, body.get("filter"))})
