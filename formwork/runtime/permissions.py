"""The one permission checker. Row scopes compile into SQL; field visibility is per role.

A user with several roles gets the union of (row scope, visible fields) pairs: a field is shown on a row
only when some role that opens that row also shows the field. So a field one role hides is never shown
on rows that only that role opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from formwork import db
from formwork.errors import Forbidden, NotFound
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import QueryContext

SCOPED = ("read", "update", "delete")
FLAGS = ("create", "import", "export")


@dataclass
class Access:
    user_id: int | None
    username: str = "system"
    is_admin: bool = False
    timezone: str = "UTC"
    locale: str = "en"
    roles: list[dict[str, Any]] = field(default_factory=list)
    team_user_ids: list[int] = field(default_factory=list)
    team_ids: list[int] = field(default_factory=list)

    @classmethod
    def system(cls) -> Access:
        return cls(user_id=None, is_admin=True)

    @classmethod
    def for_user(cls, conn: Connection, user_id: int) -> Access:
        u = conn.execute(select(db.users).where(db.users.c.id == user_id)).first()
        if u is None:
            raise NotFound("no such user")
        roles = [r.doc for r in conn.execute(
            select(db.roles.c.doc).join(db.user_roles, db.user_roles.c.role_id == db.roles.c.id)
            .where(db.user_roles.c.user_id == user_id))]
        team_ids = set()
        if u.team_id is not None:
            team_ids.add(u.team_id)
        team_ids.update(r[0] for r in conn.execute(select(db.teams.c.id).where(db.teams.c.manager_id == user_id)))
        members = {user_id}
        if team_ids:
            members.update(r[0] for r in conn.execute(select(db.users.c.id).where(db.users.c.team_id.in_(team_ids))))
            members.update(r[0] for r in conn.execute(
                select(db.teams.c.manager_id).where(db.teams.c.id.in_(team_ids), db.teams.c.manager_id.is_not(None))))
        return cls(user_id=u.id, username=u.username, is_admin=bool(u.is_admin), timezone=u.timezone or "UTC",
                   locale=u.locale or "en", roles=roles, team_user_ids=sorted(members), team_ids=sorted(team_ids))

    # --- role documents ----------------------------------------------------------------------------
    def _grants(self, catalog: Catalog, t: TableDef) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        app = catalog.app_by_id(t.app_id)
        out = []
        for role in self.roles:
            perms = role.get("permissions", {})
            g = perms.get(f"{app.key}.{t.key}") or perms.get(f"{app.key}.*")
            if g is not None:
                out.append((role, g))
        return out

    def flag(self, role_flag: str) -> bool:
        return self.is_admin or any(r.get(role_flag) for r in self.roles)

    def can_build(self) -> bool:
        return self.flag("build")

    def can_manage_users(self) -> bool:
        return self.flag("manage_users")

    def can_manage_automations(self) -> bool:
        return self.flag("manage_automations") or self.flag("build")

    # --- scopes ------------------------------------------------------------------------------------
    def scope_expr(self, scope: Any, t: TableDef, alias: Any, catalog: Catalog) -> ColumnElement[bool] | None:
        """None means every row; ``false()`` means none."""
        if scope in (None, "none", False):
            return false()
        if scope in ("all", True):
            return None
        owner = self._owner_column(t, alias)
        if scope == "own":
            return owner == self.user_id if self.user_id is not None else false()
        if scope == "team":
            return owner.in_(self.team_user_ids) if self.team_user_ids else false()
        from formwork.runtime.query import FilterCompiler

        ctx = QueryContext(catalog=catalog, dialect="", user_id=self.user_id, timezone=self.timezone)
        return FilterCompiler(t, ctx, alias).compile(scope)

    @staticmethod
    def _owner_column(t: TableDef, alias: Any) -> ColumnElement[Any]:
        f = t.owner_field
        if f is not None and f.stored:
            return alias.c[f.column_name]
        return alias.c.created_by

    def scope(self, catalog: Catalog, t: TableDef, alias: Any, op: str = "read") -> ColumnElement[bool] | None:
        if self.is_admin:
            return None
        parts: list[ColumnElement[bool]] = []
        for _role, g in self._grants(catalog, t):
            s = g.get(op, "none")
            if op != "read" and s not in ("none", None, False):
                # an update/delete scope never reaches beyond the same role's read scope
                read_s = g.get("read", "none")
                a = self.scope_expr(s, t, alias, catalog)
                b = self.scope_expr(read_s, t, alias, catalog)
                if a is None and b is None:
                    return None
                from sqlalchemy import and_

                parts.append(and_(*(x for x in (a, b) if x is not None)))
                continue
            expr = self.scope_expr(s, t, alias, catalog)
            if expr is None:
                return None
            parts.append(expr)
        return or_(*parts) if parts else false()

    def can(self, catalog: Catalog, t: TableDef, flag: str) -> bool:
        if self.is_admin:
            return True
        return any(bool(g.get(flag)) for _r, g in self._grants(catalog, t))

    def require(self, catalog: Catalog, t: TableDef, flag: str) -> None:
        if not self.can(catalog, t, flag):
            if not self.can_see_table(catalog, t):
                raise NotFound(f"no table '{t.key}'")
            raise Forbidden(f"you may not {flag} records in '{t.key}'")

    def can_see_table(self, catalog: Catalog, t: TableDef) -> bool:
        if self.is_admin:
            return True
        return any(g.get("read", "none") not in ("none", None, False) for _r, g in self._grants(catalog, t))

    # --- fields ------------------------------------------------------------------------------------
    def field_visibility(self, catalog: Catalog, t: TableDef, alias: Any) -> dict[int, Any]:
        """Per field id: True (shown on every readable row), False (never) or a row predicate."""
        if self.is_admin:
            return {f.id: True for f in t.fields}
        grants = self._grants(catalog, t)
        out: dict[int, Any] = {}
        for f in t.fields:
            shown: list[Any] = []
            hidden_somewhere = False
            for _role, g in grants:
                if g.get("read", "none") in ("none", None, False):
                    continue
                if g.get("fields", {}).get(f.key) == "hidden":
                    hidden_somewhere = True
                    continue
                shown.append(self.scope_expr(g.get("read"), t, alias, catalog))
            if not shown:
                out[f.id] = False
            elif not hidden_somewhere or any(s is None for s in shown):
                out[f.id] = True
            else:
                out[f.id] = or_(*shown)
        return out

    def field_writable(self, catalog: Catalog, t: TableDef, f: FieldDef) -> bool:
        if self.is_admin:
            return True
        modes = [g.get("fields", {}).get(f.key, "editable") for _r, g in self._grants(catalog, t)
                 if g.get("update", "none") not in ("none", None, False) or g.get("create")]
        return any(m == "editable" for m in modes)
