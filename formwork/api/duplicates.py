"""Duplicate checks and merging two records of a table (see ``formwork.runtime.duplicates``)."""

from __future__ import annotations

from flask import Response

from formwork.api.common import MAX_JSON, ok
from formwork.errors import BadRequest
from formwork.runtime import duplicates
from formwork.web import RouteSet, current_access, json_body, unit

routes = RouteSet()


@routes.post("/data/<app_key>/<table_key>/duplicates")
def find_duplicates(app_key: str, table_key: str) -> Response:
    """Which records the values sent (``{"fields": {...}, "exclude": id}``) duplicate; changes nothing."""
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise BadRequest("send {\"fields\": {...}}")
    exclude = body.get("exclude")
    if exclude is not None and (isinstance(exclude, bool) or not isinstance(exclude, int)):
        raise BadRequest("'exclude' must be a record id")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        access.require(cat, t, "read")
        return ok(duplicates.find(conn, cat, access, t, body["fields"], exclude))


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/merge")
def merge_records(app_key: str, table_key: str, record_id: int) -> Response:
    """Merge record ``other`` into this one: ``{"other": id, "take": [field keys whose value comes from
    the other record]}``. Related records, comments and attachments move here; the other goes to the trash."""
    access = current_access()
    body = json_body(MAX_JSON)
    if not isinstance(body, dict):
        raise BadRequest("send {\"other\": <record id>, \"take\": [field keys]}")
    other, take = body.get("other"), body.get("take", [])
    if isinstance(other, bool) or not isinstance(other, int):
        raise BadRequest("'other' must be the id of the record merged into this one")
    if not isinstance(take, list) or not all(isinstance(k, str) for k in take):
        raise BadRequest("'take' must be a list of field keys")
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok(duplicates.merge(conn, cat, access, t, record_id, other, take))
