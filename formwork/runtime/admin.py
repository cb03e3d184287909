"""Administration of users, teams and roles (services; the HTTP views live in runtime.api_admin)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import ValidationFailed


def assign_roles(conn: Connection, user_id: int, role_keys: list[str]) -> None:
    """Replace a user's roles with ``role_keys`` (each must exist)."""
    if not isinstance(role_keys, list) or not all(isinstance(k, str) for k in role_keys):
        raise ValidationFailed.from_details({"roles": ["must be a list of role keys"]})
    rows = {r.key: r.id for r in conn.execute(select(db.roles.c.key, db.roles.c.id).where(db.roles.c.key.in_(role_keys)))}
    missing = [k for k in role_keys if k not in rows]
    if missing:
        raise ValidationFailed.from_details({"roles": [f"no role '{k}'" for k in missing]})
    conn.execute(delete(db.user_roles).where(db.user_roles.c.user_id == user_id))
    if rows:
        conn.execute(insert(db.user_roles), [{"user_id": user_id, "role_id": rid} for rid in set(rows.values())])
