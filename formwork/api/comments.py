"""Comments on records (with @mentions) and a record's timeline; the rules live in runtime.comments."""

from __future__ import annotations

from typing import Any

from flask import Response

from formwork.api.common import ok
from formwork.errors import BadRequest
from formwork.runtime import comments
from formwork.web import RouteSet, current_access, json_body, unit

routes = RouteSet()


def _body() -> Any:
    body = json_body(64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("send {\"body\": \"...\"}")
    return body.get("body")


@routes.get("/data/<app_key>/<table_key>/<int:record_id>/comments")
def comments_list(app_key: str, table_key: str, record_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"comments": comments.list_comments(conn, cat, access, t, record_id)})


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/comments")
def comment_add(app_key: str, table_key: str, record_id: int) -> Response:
    """``{"body": "... @username ..."}``: mentioned users who can read the record are notified."""
    access = current_access()
    body = _body()
    with unit() as (conn, cat):
        return ok(comments.add(conn, cat, access, cat.table(app_key, table_key), record_id, body), 201)


@routes.patch("/data/<app_key>/<table_key>/<int:record_id>/comments/<int:comment_id>")
def comment_edit(app_key: str, table_key: str, record_id: int, comment_id: int) -> Response:
    access = current_access()
    body = _body()
    with unit() as (conn, cat):
        return ok(comments.edit(conn, cat, access, cat.table(app_key, table_key), record_id, comment_id, body))


@routes.delete("/data/<app_key>/<table_key>/<int:record_id>/comments/<int:comment_id>")
def comment_delete(app_key: str, table_key: str, record_id: int, comment_id: int) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        comments.delete(conn, cat, access, cat.table(app_key, table_key), record_id, comment_id)
    return Response(status=204)


@routes.get("/data/<app_key>/<table_key>/<int:record_id>/timeline")
def record_timeline(app_key: str, table_key: str, record_id: int) -> Response:
    """Comments, changes and related records (the table's ``timeline`` links), newest first."""
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        return ok({"entries": comments.timeline(conn, cat, access, t, record_id)})
