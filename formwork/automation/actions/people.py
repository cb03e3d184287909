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


def parent_link_problem(t: Any, cat: Any, link_key: Any) -> str | None:
    """Why ``link_key`` cannot lead from ``t`` to a parent record with an owner (None when it can)."""
    f = t.fields_by_key.get(link_key or "")
    if f is None or not f.ftype.is_link or not f.stored or f.options.get("multiple"):
        return "must name a link to one record (a parent such as an account)"
    parent = cat.table_by_id(f.options["target"])
    if parent.owner_field is None:
        return f"the linked table '{parent.key}' has no owner field"
    return None


def parent_owner_team(ex: RunContext, link_key: str) -> tuple[int | None, int | None]:
    """The owner of the record the triggering record's link ``link_key`` points at, and that owner's team
    (the customer of a ticket, its owner, the owner's team); None where there is none."""
    if ex.t is None or ex.rid is None:
        raise StepFailed("this needs a triggering record")
    f = ex.t.fields_by_key.get(link_key)
    if f is None or not f.stored:
        raise StepFailed(f"no link '{link_key}'")
    parent_id = ex.conn.execute(select(ex.t.sa.c[f.column_name]).where(ex.t.sa.c.id == ex.rid)).scalar()
    if parent_id is None:
        return None, None
    parent = ex.cat.table_by_id(f.options["target"])
    of = parent.owner_field
    col = parent.sa.c[of.column_name] if of is not None and of.stored else parent.sa.c.created_by
    owner = ex.conn.execute(select(col).where(parent.sa.c.id == parent_id, parent.sa.c.deleted_at.is_(None))).scalar()
    if owner is None:
        return None, None
    team = ex.conn.execute(select(db.users.c.team_id).where(db.users.c.id == owner)).scalar()
    return int(owner), team


def team_members(conn: Connection, team_id: int) -> list[int]:
    return [x[0] for x in conn.execute(select(db.users.c.id).where(
        db.users.c.team_id == team_id, db.users.c.active.is_(True)).order_by(db.users.c.id))]


def manager_of_parent_owner(ex: RunContext, link_key: str) -> int:
    """The manager of the team of the linked record's owner (a ticket escalated to its customer's team
    manager); the step fails when there is none."""
    _owner, team = parent_owner_team(ex, link_key)
    manager = ex.conn.execute(select(db.teams.c.manager_id).where(db.teams.c.id == team)).scalar() \
        if team is not None else None
    if manager is None:
        raise StepFailed(f"the owner of the record linked by '{link_key}' has no team manager")
    return int(manager)
