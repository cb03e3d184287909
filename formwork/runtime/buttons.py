"""Record buttons declared in a table document: who sees them, when they show, what they run.

::

    "buttons": [
      {"key": "claim", "label": {"en": "Claim", "zh-CN": "领取"}, "action": "claim"},
      {"key": "assign", "label": {"en": "Assign", "zh-CN": "分配"}, "action": "assign",
       "roles": ["sales_manager"]},
      {"key": "convert", "label": "Convert", "automation": "convert_lead",
       "when": {"field": "status", "op": "eq", "value": "qualified"}}]

``action`` is a built-in (the pool's ``claim``, ``release`` and ``assign``); ``automation`` names a
manual-trigger automation of the app (the page queues a run of it for the record). ``roles`` limits who
sees and may press the button (administrators always), ``when`` is a filter the record must match. The
built-ins add their own conditions: claim shows on records in the pool, release on owned records the
caller owns or may edit, assign to managers of a team. Pressing a button re-checks all of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from formwork.errors import Forbidden, NotFound
from formwork.metadata.catalog import Catalog, TableDef, label_text
from formwork.metadata.query import FilterCompiler
from formwork.runtime import pool
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader, parse_id

BUILT_IN = ("claim", "release", "assign")


@dataclass
class Button:
    key: str
    label: str
    action: str | None  # a built-in
    automation: str | None
    doc: dict[str, Any]


def declared(t: TableDef) -> list[dict[str, Any]]:
    return [b for b in t.doc.get("buttons") or [] if isinstance(b, dict)]


def _role_ok(access: Access, b: dict[str, Any]) -> bool:
    roles = b.get("roles")
    return access.is_admin or not roles or bool({str(r.get("key")) for r in access.roles} & set(roles))


def _matches(conn: Connection, catalog: Catalog, access: Access, t: TableDef, rid: int, tree: Any) -> bool:
    reader = RecordReader(catalog, conn, access)
    conds = reader.base_conditions(t)
    if tree:
        conds.append(FilterCompiler(t, reader.ctx).compile(tree))
    return conn.execute(select(t.sa.c.id).where(t.sa.c.id == rid, *conds)).first() is not None


def _built_in_shows(conn: Connection, catalog: Catalog, access: Access, t: TableDef, rid: int,
                    action: str) -> bool:
    owner_key = pool.owner_key(t, catalog)
    if owner_key is None or access.user_id is None:
        return False
    col = t.sa.c[t.fields_by_key[owner_key].column_name]
    owner = conn.execute(select(col).where(t.sa.c.id == rid)).scalar()
    if action == "claim":
        cfg = pool.pool_config(t, catalog)
        return owner is None and pool.claim_limit(access, cfg.flag) != 0
    if action == "release":
        if owner is None:
            return False
        if owner == access.user_id:
            return True
        scope = access.scope(catalog, t, t.sa, "update")
        return scope is None or conn.execute(select(t.sa.c.id).where(t.sa.c.id == rid, scope)).first() is not None
    return bool(pool.assignable_users(conn, access)) and (owner is None or _built_in_shows(
        conn, catalog, access, t, rid, "release"))


def visible(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: int) -> list[Button]:
    """The buttons this user sees on this record now."""
    out = []
    for b in declared(t):
        if not _role_ok(access, b):
            continue
        if b.get("when") and not _matches(conn, catalog, access, t, record_id, b["when"]):
            continue
        action = b.get("action")
        if action in BUILT_IN and not _built_in_shows(conn, catalog, access, t, record_id, action):
            continue
        out.append(Button(str(b["key"]), label_text(b.get("label") or b["key"], access.locale), action,
                          b.get("automation"), b))
    return out


def press(conn: Connection, catalog: Catalog, access: Access, t: TableDef, record_id: Any, key: str,
          user: Any = None) -> dict[str, Any]:
    """Run a built-in button for a record (automation buttons are queued by the caller, which may reach
    the automation layer). 404 for an unknown button or record, 403 when the button is not for this
    user or record now."""
    rid = parse_id(record_id)
    RecordReader(catalog, conn, access).get(t, rid, fields=[])
    b = next((x for x in visible(conn, catalog, access, t, rid) if x.key == key), None)
    if b is None:
        if any(d.get("key") == key for d in declared(t)):
            raise Forbidden(f"the button '{key}' is not available on this record")
        raise NotFound(f"no button '{key}' on '{t.key}'")
    if b.action == "claim":
        return pool.claim(conn, catalog, access, t, rid)
    if b.action == "release":
        return pool.release(conn, catalog, access, t, rid)
    if b.action == "assign":
        return pool.assign(conn, catalog, access, t, rid, user)
    return {"id": rid, "automation": b.automation}


def find(t: TableDef, key: str) -> dict[str, Any] | None:
    return next((b for b in declared(t) if b.get("key") == key), None)
