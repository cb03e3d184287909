"""The public pool (公海): where the caller stands, claim, release; the rules live in runtime.pool."""

from __future__ import annotations

from flask import Response

from formwork.api.common import ok
from formwork.runtime import pool
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


@routes.get("/data/<app_key>/<table_key>/pool")
def pool_status(app_key: str, table_key: str) -> Response:
    """The table's pool settings and where the caller stands: how many they own, their limit."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.status(conn, cat, access, cat.table(app_key, table_key)))


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/claim")
def claim_record(app_key: str, table_key: str, record_id: int) -> Response:
    """Take an unowned record from the pool (limit per role, cooldown for the previous owner)."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.claim(conn, cat, access, cat.table(app_key, table_key), record_id))


@routes.post("/data/<app_key>/<table_key>/<int:record_id>/release")
def release_record(app_key: str, table_key: str, record_id: int) -> Response:
    """Give a record back to the pool."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.release(conn, cat, access, cat.table(app_key, table_key), record_id))
