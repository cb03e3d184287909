"""The one permission checker. Row scopes compile into SQL; field visibility is per role.

A user with several roles gets the union of (row scope, visible fields) pairs: a field is shown on a row
only when some role that opens that row also shows the field. So a field one role hides is never shown
on rows that only that role opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, exists, false, literal, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from formwork import db
from formwork.errors import BadRequest, Forbidden, NotFound
from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import QueryContext
from formwork.metadata.service import Actor

if TYPE_CHECKING:
    from formwork.metadata.conversion import PreviewScope, ReadValues

SCOPED = ("read", "update", "delete")
FLAGS = ("create", "import", "export")


def _teams_query(member: bool) -> Any:
    """Built once: team ids the user manages (kind t), their users (u) and managers (m), with the user's own team."""
    uid: BindParameter[int] = bindparam("uid")
    managed = select(db.teams.c.id).where(db.teams.c.manager_id == uid)
    in_team: ColumnElement[bool] = db.users.c.team_id.in_(managed)
    of_team: ColumnElement[bool] = db.teams.c.manager_id == uid
    if member:
        in_team = or_(in_team, db.users.c.team_id == bindparam("team"))
        of_team = or_(of_team, db.teams.c.id == bindparam("team"))
    return (select(literal("t").label("kind"), db.teams.c.id.label("id")).where(db.teams.c.manager_id == uid)
            .union_all(select(literal("u"), db.users.c.id).where(in_team),
                       select(literal("m"), db.teams.c.manager_id).where(of_team, db.teams.c.manager_id.is_not(None))))


_ROLES = (select(db.roles.c.doc).join(db.user_roles, db.user_roles.c.role_id == db.roles.c.id)
          .where(db.user_roles.c.user_id == bindparam("uid")))
_TEAMS = _teams_query(False)
_TEAMS_OF_MEMBER = _teams_query(True)


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
        return cls.for_row(conn, u)

    @classmethod
    def for_row(cls, conn: Connection, u: Any) -> Access:
        """The access of an already loaded fw_user row: one query for roles, one for teams (per request)."""
        roles = [r.doc for r in conn.execute(_ROLES, {"uid": u.id})]
        # teams: the user's own and those it manages; members: their users and managers
        if u.team_id is None:
            rows = conn.execute(_TEAMS, {"uid": u.id}).all()
        else:
            rows = conn.execute(_TEAMS_OF_MEMBER, {"uid": u.id, "team": u.team_id}).all()
        team_ids = {r.id for r in rows if r.kind == "t"}
        if u.team_id is not None:
            team_ids.add(u.team_id)
        members = {u.id, *(r.id for r in rows if r.kind != "t")}
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

    def can_view_dashboards(self) -> bool:
        """The role flag ``view_dashboards`` (builders see what they build)."""
        return self.flag("view_dashboards") or self.flag("build")

    def actor(self, ip: str | None = None, read_values: ReadValues | None = None,
              preview_scope: PreviewScope | None = None) -> Actor:
        """This user as MetadataService's caller: its rights (the service checks them itself), how a
        type-change preview reads values and what of them it may show (``formwork.runtime.previews``)."""
        return Actor(self.user_id, self.is_admin, ip, can_build=self.can_build(),
                     can_manage_automations=self.can_manage_automations(),
                     can_view_dashboards=self.can_view_dashboards(), read_values=read_values,
                     preview_scope=preview_scope)

    # --- scopes ------------------------------------------------------------------------------------
    def scope_expr(self, scope: Any, t: TableDef, alias: Any, catalog: Catalog) -> ColumnElement[bool] | None:
        """None means every row; ``false()`` means none. A list is the union of its scopes
        (``["team", {"field": "owner", "op": "is_empty"}]``: the team's records and the pool)."""
        if isinstance(scope, list):
            parts: list[ColumnElement[bool]] = []
            for one in scope[:10]:
                expr = self.scope_expr(one, t, alias, catalog)
                if expr is None:
                    return None
                parts.append(expr)
            return or_(*parts) if parts else false()
        if scope in (None, "none", False):
            return false()
        if scope in ("all", True):
            return None
        owner = self._owner_column(t, alias)
        if scope == "parent":
            # rows under a parent (whose own scope applies through ``parent_scope``); parentless rows: own
            link = parent_link(t)
            mine = owner == self.user_id if self.user_id is not None else false()
            return or_(alias.c[link.column_name].is_not(None), mine) if link is not None else mine
        if scope == "own":
            return owner == self.user_id if self.user_id is not None else false()
        if scope == "team":
            return owner.in_(self.team_user_ids) if self.team_user_ids else false()
        from formwork.metadata.query import FilterCompiler

        ctx = QueryContext(catalog=catalog, dialect="", user_id=self.user_id, timezone=self.timezone)
        try:
            return FilterCompiler(t, ctx, alias).compile(scope)
        except BadRequest:
            return false()  # a scope naming a field that no longer exists opens nothing (fail closed)

    @staticmethod
    def _owner_column(t: TableDef, alias: Any) -> ColumnElement[Any]:
        f = t.owner_field
        if f is not None and f.stored:
            return alias.c[f.column_name]
        return alias.c.created_by

    def scope(self, catalog: Catalog, t: TableDef, alias: Any, op: str = "read",
              _depth: int = 0) -> ColumnElement[bool] | None:
        """The rows of ``t`` (through ``alias``) the caller may ``op``: their roles' scopes and, for a table
        scoped through its parent, the parent's scope too. None means every row."""
        if self.is_admin:
            return None
        own = self._role_scope(catalog, t, alias, op)
        parent = self.parent_scope(catalog, t, alias, op, _depth)
        if parent is None:
            return own
        return parent if own is None else and_(own, parent)

    def parent_scope(self, catalog: Catalog, t: TableDef, alias: Any, op: str = "read",
                     _depth: int = 0) -> ColumnElement[bool] | None:
        """A table with ``scope_parent`` (a to-one link): its rows follow their parent. Reading a row needs
        the parent readable, changing it (update, delete, create) needs the parent editable; a row without
        a parent is left to the roles' own scopes. None when nothing is added."""
        if self.is_admin or not t.doc.get("scope_parent"):
            return None
        link = parent_link(t)
        if link is None:
            return false()  # a parent scope naming no usable link opens nothing (never fail open)
        target = catalog.tables_by_id.get(link.options.get("target", -1))
        if target is None or _depth > 4:
            return false()  # a broken or too deep chain opens nothing (fail closed)
        pa = target.sa.alias()
        ps = self.scope(catalog, target, pa, "read" if op == "read" else "update", _depth + 1)
        if ps is None:
            return None
        col = alias.c[link.column_name]
        return or_(col.is_(None), exists(select(pa.c.id).where(pa.c.id == col, ps)))

    def _role_scope(self, catalog: Catalog, t: TableDef, alias: Any, op: str) -> ColumnElement[bool] | None:
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
        """Per field id: True (shown on every readable row), False (never) or a row predicate.

        A field is shown on a row when some role that opens the row shows it. A computed field (lookup,
        rollup, formula) is shown only where every field it is computed from is shown: a lookup of a field
        hidden on the linked table, or a formula over a hidden field, would otherwise reveal it.
        """
        if self.is_admin:
            return {f.id: True for f in t.fields}
        memo: dict[int, Any] = {}
        return {f.id: self._visible(catalog, f, alias, memo, set()) for f in t.fields}

    def _role_visibility(self, catalog: Catalog, t: TableDef, f: FieldDef, alias: Any) -> Any:
        shown: list[Any] = []
        hidden_somewhere = False
        for _role, g in self._grants(catalog, t):
            if g.get("read", "none") in ("none", None, False):
                continue
            if (g.get("fields") or {}).get(f.key) == "hidden":
                hidden_somewhere = True
                continue
            shown.append(self.scope_expr(g.get("read"), t, alias, catalog))
        if not shown:
            return False
        if not hidden_somewhere or any(s is None for s in shown):
            return True
        return or_(*shown)

    def _visible(self, catalog: Catalog, f: FieldDef, alias: Any, memo: dict[int, Any], stack: set[int]) -> Any:
        if f.id in memo:
            return memo[f.id]
        if f.id in stack:
            return True  # a cycle adds nothing new; the metadata layer rejects real cycles
        stack.add(f.id)
        t = catalog.table_by_id(f.table_id)
        vis = self._role_visibility(catalog, t, f, alias if alias is not None else t.sa)
        for dep_id in sorted(f.ftype.dependencies(f, catalog)):
            if vis is False:
                break
            dep = catalog.fields_by_id.get(dep_id)
            if dep is None:
                continue
            if dep.table_id == f.table_id:
                dv = self._visible(catalog, dep, alias, memo, stack)
            else:
                # on another table only "shown on every row" is safe: rows there are not rows here
                dv = self._visible(catalog, dep, None, {}, stack) is True
            if dv is False:
                vis = False
            elif dv is not True:
                vis = dv if vis is True else and_(vis, dv)
        stack.discard(f.id)
        if alias is not None:
            memo[f.id] = vis
        return vis

    def unreadable_fields(self, catalog: Catalog, t: TableDef) -> set[str]:
        """Keys of fields not shown on every row this user reads: filtering or sorting on them would leak."""
        if self.is_admin:
            return set()
        vis = self.field_visibility(catalog, t, t.sa)
        return {f.key for f in t.fields if vis.get(f.id, True) is not True}

    def check_query_fields(self, catalog: Catalog, t: TableDef, filter_tree: Any = None,
                           sort_keys: list[str] | None = None) -> None:
        """Refuse a user's filter or sort on a field they can't see (as if it did not exist): a filter
        such as ``credit_limit > 500`` would otherwise reveal a hidden value one question at a time."""
        if self.is_admin:
            return
        hidden: dict[int, set[str]] = {}

        def hidden_in(table: TableDef) -> set[str]:
            if table.id not in hidden:
                hidden[table.id] = self.unreadable_fields(catalog, table) if self.can_see_table(catalog, table) \
                    else {f.key for f in table.fields}
            return hidden[table.id]

        for path in sorted(_filter_paths(filter_tree)):
            parts = path.split(".")
            if parts[0] in hidden_in(t):
                raise BadRequest(f"filter: no field '{parts[0][:100]}' in table '{t.key}'")
            f = t.fields_by_key.get(parts[0])
            if len(parts) == 2 and f is not None and f.ftype.is_link:
                target = catalog.tables_by_id.get(f.options.get("target", -1))
                if target is not None and parts[1] in hidden_in(target):
                    raise BadRequest(f"filter: no field '{parts[1][:100]}' in table '{target.key}'")
        for key in sort_keys or []:
            if key in hidden_in(t):
                raise BadRequest(f"cannot sort by '{key[:100]}': no such field in '{t.key}'")

    def _hidden_path(self, catalog: Catalog, t: TableDef, path: Any, memo: dict[int, set[str]]) -> bool:
        """Whether a filter path (``field`` or ``link.field``) names a field this user may not read."""
        def hidden_in(table: TableDef) -> set[str]:
            if table.id not in memo:
                memo[table.id] = self.unreadable_fields(catalog, table) if self.can_see_table(catalog, table) \
                    else {f.key for f in table.fields}
            return memo[table.id]

        if not isinstance(path, str):
            return False
        parts = path.split(".")
        if parts[0] in hidden_in(t):
            return True
        f = t.fields_by_key.get(parts[0])
        if len(parts) == 2 and f is not None and f.ftype.is_link:
            target = catalog.tables_by_id.get(f.options.get("target", -1))
            return target is not None and parts[1] in hidden_in(target)
        return False

    def visible_filter(self, catalog: Catalog, t: TableDef, tree: Any,
                       memo: dict[int, set[str]] | None = None) -> Any:
        """``tree`` without the conditions on fields this user may not read (None when nothing is left).

        A saved view, a table's validation or a definition shown to a reader passes through here: a filter
        on a hidden field would list rows by a value the reader may not see, or name it and its threshold.
        """
        if self.is_admin or not tree:
            return tree
        memo = {} if memo is None else memo
        if not isinstance(tree, dict):
            return tree
        for group in ("and", "or"):
            if group in tree and isinstance(tree[group], list):
                kept = [x for x in (self.visible_filter(catalog, t, c, memo) for c in tree[group]) if x]
                return {group: kept} if kept else None
        if "not" in tree:
            inner = self.visible_filter(catalog, t, tree["not"], memo)
            return {"not": inner} if inner else None
        return None if self._hidden_path(catalog, t, tree.get("field"), memo) else tree

    def visible_view(self, catalog: Catalog, t: TableDef, view: dict[str, Any]) -> dict[str, Any]:
        """A view document as this user may read it: hidden fields gone from its columns, sort, grouping,
        options and filter (the filter they get is the one applied to them, see RecordReader.where)."""
        if self.is_admin:
            return view
        memo: dict[int, set[str]] = {}
        hidden = self.unreadable_fields(catalog, t)
        out = dict(view)
        if isinstance(out.get("fields"), list):
            out["fields"] = [k for k in out["fields"] if k not in hidden]
        if isinstance(out.get("group_by"), list):
            out["group_by"] = [k for k in out["group_by"] if k not in hidden]
        if isinstance(out.get("sort"), list):
            out["sort"] = [s for s in out["sort"] if not (isinstance(s, str) and s.lstrip("-") in hidden)]
        if isinstance(out.get("options"), dict):
            out["options"] = {k: v for k, v in out["options"].items() if not (isinstance(v, str) and v in hidden)}
        if "filter" in out:
            trimmed = self.visible_filter(catalog, t, out["filter"], memo)
            if trimmed:
                out["filter"] = trimmed
            else:
                out.pop("filter")
        return out

    def field_writable(self, catalog: Catalog, t: TableDef, f: FieldDef) -> bool:
        if self.is_admin:
            return True
        modes = [g.get("fields", {}).get(f.key, "editable") for _r, g in self._grants(catalog, t)
                 if g.get("update", "none") not in ("none", None, False) or g.get("create")]
        return any(m == "editable" for m in modes)

    # --- explanations ("why can X see this?") ------------------------------------------------------
    def _matches(self, conn: Connection, t: TableDef, record_id: int, expr: ColumnElement[bool] | None) -> bool:
        conds = [t.sa.c.id == record_id, t.sa.c.deleted_at.is_(None)]
        if expr is not None:
            conds.append(expr)
        return conn.execute(select(t.sa.c.id).where(*conds)).first() is not None

    def explain(self, conn: Connection, catalog: Catalog, t: TableDef, record_id: int | None = None,
                f: FieldDef | None = None) -> dict[str, Any]:
        """Which roles allow or deny each operation (on one record when given) and why a field shows."""
        out: dict[str, Any] = {}
        if self.is_admin:
            for op in (*SCOPED, *FLAGS):
                out[op] = {"allowed": True, "by": [{"rule": "administrator"}], "denied_by": []}
            if f is not None:
                out["field"] = {"key": f.key, "visible": True, "writable": not f.ftype.read_only,
                                "hidden_by": [], "read_only_by": [], "rule": "administrator"}
            return out
        grants = self._grants(catalog, t)
        for op in SCOPED:
            by: list[dict[str, Any]] = []
            denied: list[dict[str, Any]] = []
            for role, g in grants:
                s = g.get(op, "none")
                entry = {"role": role.get("key"), "scope": s if s not in (None, False) else "none"}
                if s in ("none", None, False):
                    denied.append({**entry, "reason": f"the role grants no {op}"})
                    continue
                expr = self.scope_expr(s, t, t.sa, catalog)
                if op != "read":
                    read_s = g.get("read", "none")
                    entry["read_scope"] = read_s
                    r = self.scope_expr(read_s, t, t.sa, catalog)
                    expr = and_(*(x for x in (expr, r) if x is not None)) if (expr is not None or r is not None) \
                        else None
                if record_id is not None and not self._matches(conn, t, record_id, expr):
                    denied.append({**entry, "reason": "the record is outside this scope"})
                    continue
                by.append(entry)
            result: dict[str, Any] = {"allowed": bool(by), "by": by, "denied_by": denied}
            if not grants:
                result["reason"] = "no role grants anything on this table"
            out[op] = result
        for flag in FLAGS:
            by_f = [{"role": r.get("key")} for r, g in grants if g.get(flag)]
            out[flag] = {"allowed": bool(by_f), "by": by_f,
                         "denied_by": [{"role": r.get("key")} for r, g in grants if not g.get(flag)]}
        if f is not None:
            out["field"] = self._explain_field(conn, catalog, t, record_id, f, grants)
        return out

    def _explain_field(self, conn: Connection, catalog: Catalog, t: TableDef, record_id: int | None, f: FieldDef,
                       grants: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
        shown_by: list[str | None] = []
        hidden_by: list[str | None] = []
        read_only_by: list[str | None] = []
        for role, g in grants:
            read_s = g.get("read", "none")
            if read_s in ("none", None, False):
                continue
            if record_id is not None and not self._matches(conn, t, record_id, self.scope_expr(read_s, t, t.sa,
                                                                                                 catalog)):
                continue  # this role does not open the record, so it neither shows nor hides the field
            mode = (g.get("fields") or {}).get(f.key, "editable")
            (hidden_by if mode == "hidden" else shown_by).append(role.get("key"))
            if mode == "read_only":
                read_only_by.append(role.get("key"))
        vis = self.field_visibility(catalog, t, t.sa).get(f.id, False)
        if record_id is None:
            visible: Any = True if vis is True else (False if vis is False else "on some records")
        elif vis is False:
            visible = False
        else:
            visible = self._matches(conn, t, record_id, None if vis is True else vis) and \
                self._matches(conn, t, record_id, self.scope(catalog, t, t.sa, "read"))
        out: dict[str, Any] = {"key": f.key, "visible": visible, "shown_by": shown_by, "hidden_by": hidden_by,
                               "writable": bool(visible) and not f.ftype.read_only
                               and self.field_writable(catalog, t, f),
                               "read_only_by": read_only_by}
        if shown_by and visible is False:
            hidden_deps = [catalog.field_by_id(d).key for d in sorted(f.ftype.dependencies(f, catalog))
                           if d in catalog.fields_by_id
                           and self._visible(catalog, catalog.field_by_id(d), None, {}, set()) is not True]
            out["reason"] = "computed from fields you cannot see: " + ", ".join(hidden_deps)
        elif f.ftype.read_only:
            out["reason"] = "the field is computed or set by the system"
        return out


def parent_link(t: TableDef) -> FieldDef | None:
    """The to-one link a table's rows are scoped through (its ``scope_parent``), None without one."""
    key = t.doc.get("scope_parent")
    f = t.fields_by_key.get(key) if isinstance(key, str) else None
    if f is None or not f.ftype.is_link or not f.stored:
        return None
    return f


def _filter_paths(node: Any, depth: int = 0) -> set[str]:
    """Every field path a filter tree names (malformed parts are left to the filter compiler)."""
    out: set[str] = set()
    if depth > 64:
        return out
    if isinstance(node, list):
        for child in node:
            out |= _filter_paths(child, depth + 1)
    elif isinstance(node, dict):
        if isinstance(node.get("field"), str):
            out.add(node["field"])
        for group in ("and", "or", "not"):
            if group in node:
                out |= _filter_paths(node[group], depth + 1)
    return out
