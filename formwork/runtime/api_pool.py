"""Routes of the public pool (公海) added to the /api/v1 blueprint; the rules live in runtime.pool."""

from __future__ import annotations

from flask import Response
from sqlalchemy import func, select

from formwork.errors import NotFound
from formwork.runtime import pool
from formwork.runtime.api import api, ok
from formwork.web import current_access, unit

__all__ = ["api"]


@api.get("/data/<app_key>/<table_key>/pool")
def pool_status(app_key: str, table_key: str) -> Response:
    """The table's pool settings and where the caller stands: how many they own, their limit."""
    access = current_access()
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        if not access.can_see_table(cat, t):
            raise NotFound(f"no table '{table_key}'")
        cfg = pool.pool_config(t, cat)
        col = t.sa.c[cfg.owner.column_name]
        owned = conn.execute(select(func.count()).select_from(t.sa).where(
            col == access.user_id, t.sa.c.deleted_at.is_(None))).scalar() if access.user_id is not None else 0
        return ok({"settings": t.doc["pool"], "owner_field": cfg.owner.key, "owned": owned,
                   "claim_limit": pool.claim_limit(access, cfg.flag)})


@api.post("/data/<app_key>/<table_key>/<int:record_id>/claim")
def claim_record(app_key: str, table_key: str, record_id: int) -> Response:
    """Take an unowned record from the pool (limit per role, cooldown for the previous owner)."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.claim(conn, cat, access, cat.table(app_key, table_key), record_id))


@api.post("/data/<app_key>/<table_key>/<int:record_id>/release")
def release_record(app_key: str, table_key: str, record_id: int) -> Response:
    """Give a record back to the pool."""
    access = current_access()
    with unit() as (conn, cat):
        return ok(pool.release(conn, cat, access, cat.table(app_key, table_key), record_id))
