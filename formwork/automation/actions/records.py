"""Actions that write records: through RecordService, so permissions, history and outbox events apply."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from formwork import db
from formwork.automation.actions.base import FIELD_VALUES, KEY, Action, CheckContext, RunContext
from formwork.automation.actions.people import parent_link_problem, parent_owner_team, team_members, users_by_role
from formwork.automation.runs import StepFailed, path_text
from formwork.runtime import duplicates


class UpdateRecord(Action):
    type = "update_record"
    label = "Update the record"
    properties = {"fields": FIELD_VALUES}
    needs_record = True

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        assert chk.table is not None
        chk.fields_of(chk.table, a.get("fields"), f"{pointer}/fields")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        assert ex.t is not None and ex.rid is not None
        fields = ex.render(a["fields"])
        if ex.dry:
            return {"id": ex.rid, "would_set": fields}
        rec = ex.service().update(ex.t, ex.rid, fields)
        ex.forget_record()
        return {"id": rec["id"], "fields": rec["fields"]}


class CreateRecord(Action):
    """Create a record; with ``once_per_record`` at most once per triggering record (winning an
    opportunity twice makes one order): a later run answers with the record the first one made. With
    ``use_existing`` (a duplicate rule of the target table) a live record the new one would duplicate under
    that rule is used instead (the oldest; answered with ``existing: true``, nothing created or changed):
    a lead naming a known company joins its customer."""

    type = "create_record"
    label = "Create a record"
    properties = {"table": KEY, "fields": FIELD_VALUES, "once_per_record": {"type": "boolean"},
                  "use_existing": KEY}

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        target = chk.app.tables_by_key.get(a.get("table", ""))
        if target is None:
            chk.err(f"{pointer}/table", f"no table '{a.get('table')}' in app '{chk.app.key}'")
            return
        chk.fields_of(target, a.get("fields"), f"{pointer}/fields")
        if a.get("use_existing") and a["use_existing"] not in {r.get("key") for r in duplicates.rules(target)}:
            chk.err(f"{pointer}/use_existing", f"must name a duplicate rule of '{target.key}'")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        target = ex.app.table(a["table"])
        if a.get("once_per_record") and ex.rid is not None:
            earlier = self._earlier(a, path, ex)
            if earlier is not None:
                return {**earlier, "already_created": True}
        fields = ex.render(a["fields"])
        if a.get("use_existing"):
            same = duplicates.matching(ex.conn, target, a["use_existing"], fields)
            if same:
                rec = ex.service().reader.by_ids(target, same[:1])[0]
                return {"id": rec["id"], "table": target.key, "fields": rec["fields"], "existing": True}
        if ex.dry:
            return {"table": target.key, "would_create": fields}
        rec = ex.service().create(target, fields)
        return {"id": rec["id"], "table": target.key, "fields": rec["fields"]}

    @staticmethod
    def _earlier(a: dict[str, Any], path: list[Any], ex: RunContext) -> dict[str, Any] | None:
        """What an earlier run of this automation created at this step for the same record, if anything."""
        r, s = db.automation_runs, db.automation_steps
        rows = ex.conn.execute(select(s.c.output).join(r, r.c.id == s.c.run_id).where(
            r.c.automation_id == ex.rule["id"], r.c.record_id == ex.rid, r.c.table_id == (ex.t.id if ex.t else None),
            r.c.id != ex.run_id, s.c.path == path_text(path), s.c.action == "create_record", s.c.status == "ok")
            .order_by(s.c.id)).all()
        for (out,) in rows:
            if isinstance(out, dict) and isinstance(out.get("id"), int) and not out.get("already_created") \
                    and not out.get("existing"):
                return {"id": out["id"], "table": out.get("table", a["table"]), "fields": out.get("fields") or {}}
        return None


class UpdateRelated(Action):
    """Update every record the triggering record links to (``related`` in the templates)."""

    type = "update_related"
    label = "Update linked records"
    properties = {"link": KEY, "fields": FIELD_VALUES}
    needs_record = True

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        t = chk.table
        assert t is not None
        f = t.fields_by_key.get(a.get("link", ""))
        if f is None or not f.ftype.is_link:
            chk.err(f"{pointer}/link", f"must name a link field of '{t.key}'")
        else:
            target = chk.cat.table_by_id(f.options["target"])
            chk.fields_of(target, a.get("fields"), f"{pointer}/fields", frozenset({"related"}))

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        assert ex.t is not None
        f = ex.t.field(a["link"])
        target = ex.cat.table_by_id(f.options["target"])
        value = ex.record().get(f.key)
        related = value if isinstance(value, list) else ([value] if value else [])
        done, svc = [], ex.service()
        for item in related:
            fields = ex.render(a["fields"], related=item)
            if not ex.dry:
                svc.update(target, item["id"], fields)
            done.append({"id": item["id"], "fields": fields})
        if not ex.dry:
            ex.forget_record()
        return {"table": target.key, "updated" if not ex.dry else "would_update": done}


class AssignOwner(Action):
    """Set a user field to a member of a role or team: round robin, or whoever owns the fewest records.

    The team may be named (``team``) or be the team of the owner of a linked parent record
    (``owner_team_of``: a link key; a ticket goes to someone in the team of its customer's owner). With
    ``prefer_owner_of`` (a link key) the owner of the linked record, when it has an active one, is chosen
    before any rule (a lead for a known customer goes to that customer's owner)."""

    type = "assign_owner"
    label = "Assign an owner"
    properties = {"field": KEY, "role": KEY, "team": KEY, "owner_team_of": KEY, "prefer_owner_of": KEY,
                  "strategy": {"enum": ["round_robin", "least_loaded"]}}
    needs_record = True

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        t = chk.table
        assert t is not None
        key = a.get("field") or (t.owner_field.key if t.owner_field else "")
        f = t.fields_by_key.get(key)
        if f is None or not f.ftype.can_own_records(f):
            chk.err(f"{pointer}/field", "must name a single user field (the table has no owner field)")
        if sum(bool(a.get(k)) for k in ("role", "team", "owner_team_of")) != 1:
            chk.err(pointer, "name exactly one of 'role', 'team' or 'owner_team_of'")
        elif a.get("owner_team_of"):
            problem = parent_link_problem(t, chk.cat, a["owner_team_of"])
            if problem:
                chk.err(f"{pointer}/owner_team_of", problem)
        if a.get("prefer_owner_of"):
            problem = parent_link_problem(t, chk.cat, a["prefer_owner_of"])
            if problem:
                chk.err(f"{pointer}/prefer_owner_of", problem)

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        assert ex.t is not None and ex.rid is not None
        conn = ex.conn
        f = ex.t.field(a.get("field") or (ex.t.owner_field.key if ex.t.owner_field else ""))
        preferred = parent_owner_team(ex, a["prefer_owner_of"])[0] if a.get("prefer_owner_of") else None
        if preferred is not None and conn.execute(select(db.users.c.id).where(
                db.users.c.id == preferred, db.users.c.active.is_(True))).first() is not None:
            return self._assign(ex, f, preferred)
        if a.get("role"):
            candidates = users_by_role(conn, a["role"])
        elif a.get("owner_team_of"):
            _owner, team_id = parent_owner_team(ex, a["owner_team_of"])
            if team_id is None:
                raise StepFailed(f"the record linked by '{a['owner_team_of']}' has no owner with a team")
            candidates = team_members(conn, team_id)
        else:
            team = conn.execute(select(db.teams.c.id).where(db.teams.c.key == a.get("team"))).scalar()
            if team is None:
                raise StepFailed(f"no team '{a.get('team')}'")
            candidates = [x[0] for x in conn.execute(select(db.users.c.id).where(
                db.users.c.team_id == team, db.users.c.active.is_(True)).order_by(db.users.c.id))]
        if not candidates:
            raise StepFailed(f"no active users in {'role' if a.get('role') else 'team'} "
                             f"'{a.get('role') or a.get('team') or a.get('owner_team_of')}'")
        if a.get("strategy") == "least_loaded":
            col = ex.t.sa.c[f.column_name]
            loads: dict[int, int] = dict(conn.execute(select(col, func.count()).where(col.in_(candidates),
                                                                      ex.t.sa.c.deleted_at.is_(None))
                                      .group_by(col)).all())
            chosen = min(candidates, key=lambda uid: (loads.get(uid, 0), uid))
        else:
            chosen = self._round_robin(ex, candidates, path_text(path))
        return self._assign(ex, f, chosen)

    @staticmethod
    def _assign(ex: RunContext, f: Any, chosen: int) -> dict[str, Any]:
        assert ex.t is not None and ex.rid is not None
        if not ex.dry:
            ex.service().update(ex.t, ex.rid, {f.key: chosen})
            ex.forget_record()
        name = ex.conn.execute(select(db.users.c.name).where(db.users.c.id == chosen)).scalar()
        return {"field": f.key, "user": {"id": chosen, "name": name}}

    @staticmethod
    def _round_robin(ex: RunContext, candidates: list[int], path: str) -> int:
        """The next candidate after the one this action chose last (``fw_assign_state``, row-locked)."""
        conn, st = ex.conn, db.assign_state
        where = and_(st.c.automation_id == ex.rule["id"], st.c.path == path)
        q = select(st.c.last_user_id).where(where)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(st).values(automation_id=ex.rule["id"], path=path, last_user_id=None))
            except IntegrityError:
                pass
            row = conn.execute(q).first()
        last = row.last_user_id if row is not None else None
        chosen = next((u for u in candidates if last is None or u > last), candidates[0])
        conn.execute(update(st).where(where).values(last_user_id=chosen))
        return chosen
