"""Who an action addresses: addresses from templates, users by name or role, the record's owner."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.actions.base import RunContext
from formwork.automation.runs import StepFailed


def addresses(value: Any) -> list[str]:
    """Rendered recipient templates as a flat list: lists flattened, comma-separated text split."""
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, list):
            out += [str(x) for x in item if x]
        elif item:
            out += [part.strip() for part in str(item).split(",") if part.strip()]
    return out


def emails(conn: Connection, user_ids: list[int]) -> list[str]:
    if not user_ids:
        return []
    return [r[0] for r in conn.execute(select(db.users.c.email).where(
        db.users.c.id.in_(sorted(set(user_ids))), db.users.c.email.is_not(None)).order_by(db.users.c.id))]


def users_by_role(conn: Connection, role_key: str) -> list[int]:
    u, ur, r = db.users, db.user_roles, db.roles
    return [x[0] for x in conn.execute(
        select(u.c.id).join(ur, ur.c.user_id == u.c.id).join(r, r.c.id == ur.c.role_id)
        .where(r.c.key == role_key, u.c.active.is_(True)).order_by(u.c.id))]


def resolve_users(conn: Connection, names: list[Any]) -> list[int]:
    """Active users by id or username (user field values give their id); an unknown one fails the step."""
    out = []
    for n in names:
        if isinstance(n, dict) and "id" in n:
            n = n["id"]
        text = str(n).strip()
        if not text:
            continue
        col = db.users.c.id if text.isdigit() else db.users.c.username
        uid = conn.execute(select(db.users.c.id).where(col == (int(text) if text.isdigit() else text),
                                                       db.users.c.active.is_(True))).scalar()
        if uid is None:
            raise StepFailed(f"no active user '{text[:100]}'")
        out.append(uid)
    return out


def owner_id(ex: RunContext) -> int | None:
    """The triggering record's owner (its owner field, else whoever created it)."""
    if ex.t is None or ex.rid is None:
        return None
    f = ex.t.owner_field
    col = ex.t.sa.c[f.column_name] if f is not None and f.stored else ex.t.sa.c.created_by
    return ex.conn.execute(select(col).where(ex.t.sa.c.id == ex.rid)).scalar()


def manager_of_owner(ex: RunContext) -> int:
    """The manager of the team of the triggering record's owner; the step fails when there is none."""
    owner = owner_id(ex)
    team = ex.conn.execute(select(db.users.c.team_id).where(db.users.c.id == owner)).scalar() \
        if owner is not None else None
    manager = ex.conn.execute(select(db.teams.c.manager_id).where(db.teams.c.id == team)).scalar() \
        if team is not None else None
    if manager is None:
        raise StepFailed("the record owner has no team manager")
    return int(manager)
