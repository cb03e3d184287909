"""The OpenAPI 3.1 document of the live API, generated from the metadata and the registered routes.

Static endpoints (auth, meta, files, jobs, admin...) come from the Flask URL map, so a new route appears
without editing this file; every user table the caller can read gets concrete paths
(``/data/crm/customers``...) and component schemas built from its fields, following the "Field values in
JSON" table of the API contract. Documents are cached per schema version and per what the caller sees.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from formwork.metadata.catalog import Catalog, FieldDef, TableDef, label_text
from formwork.metadata.fieldtypes.base import USER_OUT, nullable
from formwork.runtime.permissions import Access

if TYPE_CHECKING:
    from flask import Flask

ERROR_CODES = {
    "400": "Bad request: malformed JSON, an unknown parameter value or a bad filter tree",
    "401": "No or bad credentials",
    "403": "Authenticated but not allowed",
    "404": "No such app, table, field or record (or hidden from this caller)",
    "409": "Conflict: a unique value is taken or a delete is blocked by links",
    "412": "The If-Match version is stale",
    "413": "The upload or batch is over its limit",
    "422": "Well-formed but invalid values; details map field keys to messages",
    "429": "Too many requests",
}
READ_ERRORS = ("400", "401", "403", "404", "429")
WRITE_ERRORS = ("400", "401", "403", "404", "409", "412", "413", "422", "429")
_RULE_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def value_schema(f: FieldDef, cat: Catalog, mode: str = "out") -> dict[str, Any]:
    """The JSON Schema of one field's value: as returned (``out``) or as accepted on writes (``in``)."""
    return f.ftype.value_schema(f, cat, mode)


def table_schemas(t: TableDef, cat: Catalog, visible: list[FieldDef], name: str) -> dict[str, dict[str, Any]]:
    """The record as returned (``name``), its writable fields for create (``.input``) and update (``.patch``)."""
    out_props: dict[str, Any] = {}
    in_props: dict[str, Any] = {}
    required: list[str] = []
    for f in visible:
        s = value_schema(f, cat, "out")
        s["title"] = label_text(f.label)
        if f.doc.get("description"):
            s["description"] = label_text(f.doc["description"])
        if f.ftype.read_only:
            s["readOnly"] = True
        else:
            in_props[f.key] = {**value_schema(f, cat, "in"), "title": s["title"]}
            if f.required:
                required.append(f.key)
        out_props[f.key] = s
    fields_out = {"type": "object", "properties": out_props, "additionalProperties": False}
    record = {
        "type": "object", "title": label_text(t.label), "required": ["id", "version", "created_at", "updated_at",
                                                                     "fields"],
        "properties": {"id": {"type": "integer", "readOnly": True}, "version": {"type": "integer", "readOnly": True},
                       "created_at": {"type": "string", "format": "date-time", "readOnly": True},
                       "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
                       "fields": fields_out},
    }
    return {
        name: record,
        f"{name}.input": {"type": "object", "properties": in_props, "required": required,
                          "additionalProperties": False},
        f"{name}.patch": {"type": "object", "properties": in_props, "additionalProperties": False},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: tuple[str, ...]) -> dict[str, Any]:
    return {c: {"$ref": "#/components/responses/Error"} for c in codes}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


LIST_PARAMS = [
    _q("filter", {"type": "string"}, "a filter tree as JSON"),
    _q("view", {"type": "string"}, "a saved view's key"),
    _q("sort", {"type": "string"}, "field keys, '-' for descending: -amount,name"),
    _q("search", {"type": "string", "maxLength": 200}, "text matched across text-like fields"),
    _q("fields", {"type": "string"}, "a subset of field keys: name,stage"),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 50)"),
    _q("cursor", {"type": "string"}, "next_cursor of the previous page"),
    _q("offset", {"type": "integer", "minimum": 0}, "rows to skip (instead of cursor)"),
    _q("count", {"type": "boolean"}, "add the total"),
]
ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}


def table_paths(app_key: str, t: TableDef, name: str) -> dict[str, Any]:
    base = f"/data/{app_key}/{t.key}"
    rec = _ref(name)
    title = label_text(t.label)
    op = f"{app_key}.{t.key}"
    tag = [f"{app_key}.{t.key}"]
    confirm = {"type": "boolean", "description": "create even when the table's duplicate rules find matches "
                                                 "(otherwise 409 with code 'duplicate')"}
    batch_in = {"type": "object", "required": ["records"], "properties": {"records": {
        "type": "array", "maxItems": 1000, "items": {"type": "object", "required": ["fields"],
                                                     "properties": {"fields": _ref(f"{name}.input")}}},
        "allow_duplicates": confirm}}
    return {
        base: {
            "get": {"operationId": f"{op}.list", "tags": tag, "summary": f"List {title} records",
                    "parameters": LIST_PARAMS,
                    "responses": {"200": _json({"type": "object", "required": ["records", "next_cursor"],
                                                "properties": {"records": {"type": "array", "items": rec},
                                                               "next_cursor": {"type": ["string", "null"]},
                                                               "total": {"type": "integer"}}}),
                                  **_errors(READ_ERRORS)}},
            "post": {"operationId": f"{op}.create", "tags": tag,
                     "summary": f"Create a {title} record, or a batch of up to 1000 (all or nothing)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                         {"type": "object", "required": ["fields"], "properties": {"fields": _ref(f"{name}.input"),
                                                                                   "allow_duplicates": confirm}},
                         batch_in]}}}},
                     "responses": {"201": _json({"oneOf": [rec, {"type": "object", "properties": {
                         "records": {"type": "array", "items": rec}}}]}, "Created"), **_errors(WRITE_ERRORS)}},
            "patch": {"operationId": f"{op}.update_batch", "tags": tag, "summary": f"Update several {title} records",
                      "requestBody": {"required": True, "content": {"application/json": {"schema": {
                          "type": "object", "required": ["records"], "properties": {"records": {
                              "type": "array", "maxItems": 1000, "items": {
                                  "type": "object", "required": ["id", "fields"],
                                  "properties": {"id": {"type": "integer"}, "version": {"type": "integer"},
                                                 "fields": _ref(f"{name}.patch")}}}}}}}},
                      "responses": {"200": _json({"type": "object", "properties": {
                          "records": {"type": "array", "items": rec}}}), **_errors(WRITE_ERRORS)}},
        },
        f"{base}/{{id}}": {
            "parameters": [ID_PARAM],
            "get": {"operationId": f"{op}.get", "tags": tag, "summary": f"One {title} record (ETag: its version)",
                    "parameters": [_q("fields", {"type": "string"}, "a subset of field keys")],
                    "responses": {"200": _json(rec), **_errors(READ_ERRORS)}},
            "patch": {"operationId": f"{op}.update", "tags": tag, "summary": f"Change a {title} record",
                      "parameters": [{"name": "If-Match", "in": "header", "required": False,
                                      "schema": {"type": "string"}, "description": "the expected version"}],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": {
                          "type": "object", "required": ["fields"], "properties": {"fields": _ref(f"{name}.patch")}}}}},
                      "responses": {"200": _json(rec), **_errors(WRITE_ERRORS)}},
            "delete": {"operationId": f"{op}.delete", "tags": tag, "summary": f"Move a {title} record to the trash",
                       "responses": {"204": {"description": "Deleted"}, **_errors(WRITE_ERRORS)}},
        },
        f"{base}/{{id}}/restore": {
            "parameters": [ID_PARAM],
            "post": {"operationId": f"{op}.restore", "tags": tag, "summary": "Restore a deleted record",
                     "responses": {"200": _json(rec), **_errors(WRITE_ERRORS)}},
        },
        f"{base}/{{id}}/history": {
            "parameters": [ID_PARAM],
            "get": {"operationId": f"{op}.history", "tags": tag, "summary": "The record's change history",
                    "responses": {"200": _json({"type": "object", "properties": {"entries": {
                        "type": "array", "items": {"type": "object", "properties": {
                            "at": {"type": "string", "format": "date-time"}, "user": nullable(USER_OUT),
                            "action": {"type": "string"}, "changes": {"type": "object"}}}}}}),
                                  **_errors(READ_ERRORS)}},
        },
        f"{base}/aggregate": {
            "get": {"operationId": f"{op}.aggregate", "tags": tag, "summary": f"Grouped metrics over {title}",
                    "parameters": [
                        _q("group_by", {"type": "string"},
                           "up to two fields, dates with a bucket: stage,close_date:month"),
                        _q("metrics", {"type": "string"}, "count, count_distinct:f, sum:f, avg:f, min:f, max:f"),
                        _q("filter", {"type": "string"}, "a filter tree as JSON"),
                        _q("view", {"type": "string"}, "a saved view's key"),
                        _q("search", {"type": "string"}, "text matched across text-like fields"),
                        _q("sort", {"type": "string"}, "a group or metric name, '-' for descending: -count"),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most this many groups"),
                    ],
                    "responses": {"200": _json({"type": "object", "required": ["groups"], "properties": {
                        "groups": {"type": "array", "items": {"type": "object", "required": ["key"], "properties": {
                            "key": {"type": "object"}},
                            "additionalProperties": {"type": ["number", "string", "null"]}}}}}),
                        **_errors(READ_ERRORS)}},
        },
        f"{base}/import": {
            "post": {"operationId": f"{op}.import", "tags": tag, "summary": f"Import CSV or XLSX rows into {title}",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "required": ["file"], "properties": {
                             "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                             "mapping": {"type": "string"}, "mode": {"enum": ["insert", "upsert"]},
                             "key_field": {"type": "string"}, "dry_run": {"type": "string"}}}}}},
                     "responses": {"200": _json({"type": "object", "properties": {
                         "inserted": {"type": "integer"}, "updated": {"type": "integer"},
                         "skipped": {"type": "integer"}, "errors": {"type": "array", "items": {"type": "object"}}}}),
                         **_errors(WRITE_ERRORS)}},
        },
        f"{base}/export": {
            "get": {"operationId": f"{op}.export", "tags": tag, "summary": f"Export {title} as CSV or XLSX",
                    "parameters": [_q("format", {"enum": ["csv", "xlsx"]}, "the file format"),
                                   *[p for p in LIST_PARAMS if p["name"] in ("view", "filter", "sort", "fields")]],
                    "responses": {"200": {"description": "The file", "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
                        **_errors(READ_ERRORS)}},
        },
        f"{base}/bulk-update": {
            "post": {"operationId": f"{op}.bulk_update", "tags": tag, "summary": "Change every record a filter matches",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["filter", "fields"],
                         "properties": {"filter": {"type": "object"}, "fields": _ref(f"{name}.patch")}}}}},
                     "responses": {"200": _json({"type": "object", "properties": {"updated": {"type": "integer"}}}),
                                   **_errors(WRITE_ERRORS)}},
        },
        f"{base}/bulk-delete": {
            "post": {"operationId": f"{op}.bulk_delete", "tags": tag, "summary": "Delete every record a filter matches",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["filter"], "properties": {"filter": {"type": "object"}}}}}},
                     "responses": {"200": _json({"type": "object", "properties": {"deleted": {"type": "integer"}}}),
                                   **_errors(WRITE_ERRORS)}},
        },
    }


def static_paths(app: Flask, prefix: str) -> dict[str, Any]:
    """Every registered API route outside ``/data``, with its path parameters, from the URL map."""
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith("api.") or not rule.rule.startswith(prefix):
            continue
        path = rule.rule[len(prefix):] or "/"
        if path.startswith("/data/") or path == "/openapi.json":
            continue
        params = []
        for conv, name in _RULE_ARG.findall(path):
            params.append({"name": name, "in": "path", "required": True,
                           "schema": {"type": "integer"} if conv == "int" else {"type": "string"}})
        path = _RULE_ARG.sub(lambda m: "{" + m.group(2) + "}", path)
        view = app.view_functions.get(rule.endpoint)
        doc = (view.__doc__ or "").strip().splitlines()[0] if view is not None and view.__doc__ else ""
        item = paths.setdefault(path, {})
        if params:
            item["parameters"] = params
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            m = method.lower()
            name = rule.endpoint.removeprefix("api.")
            op: dict[str, Any] = {"operationId": f"{name}.{m}", "tags": [path.split("/")[1]],
                                  "summary": doc or f"{method} {path}",
                                  "responses": {"200": _json({}),
                                                **_errors(WRITE_ERRORS if m != "get" else READ_ERRORS)}}
            if m in ("post", "patch", "put"):
                if path == "/files":
                    op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                        "type": "object", "required": ["file"], "properties": {"file": {
                            "type": "string", "contentMediaType": "application/octet-stream"}}}}}}
                else:
                    op["requestBody"] = {"required": False, "content": {"application/json": {"schema": {}}}}
            if path in ("/auth/login", "/health"):
                op["security"] = []
            item[m] = op
    return paths


def build_document(flask_app: Flask, cat: Catalog, access: Access) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"enum": ["bad_request", "unauthorized", "forbidden", "not_found", "conflict",
                                             "precondition_failed", "too_large", "validation_error",
                                             "rate_limited"]},
                           "message": {"type": "string"},
                           "details": {"type": "object",
                                       "additionalProperties": {"type": "array", "items": {"type": "string"}}}}}}},
    }
    paths = static_paths(flask_app, "/api/v1")
    tags: list[dict[str, Any]] = []
    for app in cat.apps:
        for t in app.tables:
            if not access.can_see_table(cat, t):
                continue
            vis = access.field_visibility(cat, t, t.sa)
            visible = [f for f in t.fields if vis.get(f.id, True) is not False]
            name = f"{app.key}.{t.key}"
            schemas.update(table_schemas(t, cat, visible, name))
            paths.update(table_paths(app.key, t, name))
            tags.append({"name": name, "description": f"{label_text(app.doc.get('label', app.key))} / "
                                                      f"{label_text(t.label)}"})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Formwork API", "version": f"1.{cat.version}",
                 "description": "Generated from the live metadata at schema version "
                                f"{cat.version}, as the requesting user sees it."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"session": []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": _json(_ref("Error"), "An error; see the code and message")},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "fw_session",
                            "description": "the browser session; unsafe methods also need X-CSRF-Token"},
            },
        },
    }


def document(flask_app: Flask, cat: Catalog, access: Access) -> dict[str, Any]:
    """The document for ``access``, cached per schema version and per visible tables and fields."""
    seen: list[Any] = []
    for t in cat.tables_by_id.values():
        if access.can_see_table(cat, t):
            vis = access.field_visibility(cat, t, t.sa)
            seen.append((t.id, tuple(sorted(fid for fid, v in vis.items() if v is False))))
    key = ("openapi", tuple(sorted(seen)))
    return cat.cached(key, lambda: build_document(flask_app, cat, access))
