"""Shared option lists (数据字典) of an app: list, create, change (with a dry run), delete."""

from __future__ import annotations

from flask import Response

from formwork.api.common import MAX_JSON, bool_arg, meta_service, ok, visible_app
from formwork.metadata.option_lists import OptionLists
from formwork.web import RouteSet, current_access, json_body, unit

routes = RouteSet()


@routes.get("/meta/apps/<app_key>/option-lists")
def list_option_lists(app_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        visible_app(cat, access, app_key)
        return ok({"option_lists": OptionLists(meta_service(conn, cat, access)).all(app_key)})


@routes.post("/meta/apps/<app_key>/option-lists")
def create_option_list(app_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    with unit() as (conn, cat):
        return ok(OptionLists(meta_service(conn, cat, access)).create(app_key, body), 201)


@routes.get("/meta/apps/<app_key>/option-lists/<list_key>")
def get_option_list(app_key: str, list_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        visible_app(cat, access, app_key)
        return ok(OptionLists(meta_service(conn, cat, access)).get(app_key, list_key))


@routes.patch("/meta/apps/<app_key>/option-lists/<list_key>")
def update_option_list(app_key: str, list_key: str) -> Response:
    access = current_access()
    body = json_body(MAX_JSON)
    dry = bool_arg("dry_run")
    confirm = isinstance(body, dict) and body.get("confirm_data_loss") is True
    with unit() as (conn, cat):
        result = OptionLists(meta_service(conn, cat, access)).update(app_key, list_key, body, confirm=confirm,
                                                                     dry_run=dry)
        if dry:
            conn.rollback()
        return ok(result)


@routes.delete("/meta/apps/<app_key>/option-lists/<list_key>")
def delete_option_list(app_key: str, list_key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        OptionLists(meta_service(conn, cat, access)).delete(app_key, list_key)
    return Response(status=204)
