"""Actions that steer the run: approvals and waits park it, a branch picks the nested list to run."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert, select

from formwork import db
from formwork.automation.actions.base import (
    ACTION_LIST,
    KEY,
    TEMPLATE,
    TEMPLATES,
    Action,
    CheckContext,
    RunContext,
)
from formwork.automation.actions.people import addresses, owner_id, resolve_users, users_by_role
from formwork.automation.runs import Park, StepFailed, path_text, plain
from formwork.errors import BadRequest
from formwork.runtime import notifications

WAIT_UNITS = (("seconds", 1), ("minutes", 60), ("hours", 3600), ("days", 86400))


def wait_seconds(a: dict[str, Any]) -> float:
    return sum(float(a.get(u) or 0) * s for u, s in WAIT_UNITS)


class RequestApproval(Action):
    """Ask users to approve; the run waits, then continues with ``on_approve``, ``on_reject`` or
    ``on_return`` (decisions are taken by formwork.automation.approvals)."""

    type = "request_approval"
    label = "Request approval"
    properties = {"approvers": {"type": "object", "additionalProperties": False,
                                "properties": {"users": TEMPLATES, "role": KEY, "manager": {"type": "boolean"}}},
                  "mode": {"enum": ["any", "all"]}, "title": TEMPLATE,
                  "on_approve": ACTION_LIST, "on_reject": ACTION_LIST, "on_return": ACTION_LIST}
    needs_record = True
    nested = ("on_approve", "on_reject", "on_return")

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        appr = a.get("approvers") or {}
        if not (appr.get("users") or appr.get("role") or appr.get("manager")):
            chk.err(f"{pointer}/approvers", "name 'users', a 'role' or 'manager': true")
        chk.templated(appr.get("users"), f"{pointer}/approvers/users")
        chk.templated(a.get("title"), f"{pointer}/title")
        for name in self.nested:
            chk.actions(a.get(name) or [], f"{pointer}/{name}")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        assert ex.t is not None
        conn = ex.conn
        spec = a.get("approvers") or {}
        approvers = resolve_users(conn, addresses(ex.render(spec.get("users") or [])))
        if spec.get("role"):
            approvers += users_by_role(conn, spec["role"])
        if spec.get("manager"):
            owner = owner_id(ex)
            team = conn.execute(select(db.users.c.team_id).where(db.users.c.id == owner)).scalar() \
                if owner is not None else None
            manager = conn.execute(select(db.teams.c.manager_id).where(db.teams.c.id == team)).scalar() \
                if team is not None else None
            if manager is None:
                raise StepFailed("the record owner has no team manager to approve")
            approvers.append(manager)
        approvers = sorted(set(approvers))
        if not approvers:
            raise StepFailed("nobody to approve: the approver list is empty")
        title = str(ex.render(a.get("title") or f"Approval: {ex.rule['key']}"))
        mode = a.get("mode") or "any"
        if ex.dry:
            return Park("awaiting_approval", [*path])
        aid = int(conn.execute(insert(db.approvals).values(
            run_id=ex.run_id, automation_id=ex.rule["id"], app_id=ex.app.id, table_id=ex.t.id,
            record_id=ex.rid, path=path_text(path), mode=mode, title=title, approvers=approvers, status="pending",
            created_at=db.utcnow()).returning(db.approvals.c.id)).scalar_one())
        notifications.notify(conn, approvers, "approval", title, None,
               {"approval_id": aid, "app": ex.app.key, "table": ex.t.key, "record_id": ex.rid})
        ex.outputs[a.get("key") or path_text(path)] = {"approval_id": aid, "status": "pending"}
        ex.steps[-1]["output"] = {"approval_id": aid, "approvers": approvers, "mode": mode}
        return Park("awaiting_approval", [*path])


class Wait(Action):
    type = "wait"
    label = "Wait"
    properties = {"seconds": {"type": "number", "minimum": 0, "maximum": 31536000},
                  "minutes": {"type": "number", "minimum": 0, "maximum": 525600},
                  "hours": {"type": "number", "minimum": 0, "maximum": 8760},
                  "days": {"type": "number", "minimum": 0, "maximum": 365}}

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        total = wait_seconds(a)
        if total <= 0 or total > 366 * 86400:
            chk.err(pointer, "a wait needs seconds, minutes, hours or days (at most a year)")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        seconds = wait_seconds(a)
        resume_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        ex.steps[-1]["output"] = {"until": plain(resume_at)}
        if ex.dry:
            return {"would_wait_seconds": seconds}
        return Park("waiting", [*path[:-1], path[-1] + 1], resume_at)


class Branch(Action):
    """Run ``then`` when the condition holds for the record (evaluated in SQL), else ``else``."""

    type = "branch"
    label = "If / else"
    properties = {"condition": {"$ref": "common.json#/$defs/filter"}, "then": ACTION_LIST, "else": ACTION_LIST}
    needs_record = True
    nested = ("then", "else")
    routes_only = True

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        if "condition" not in a:
            chk.err(f"{pointer}/condition", "is required")
        else:
            chk.condition(chk.table, a["condition"], f"{pointer}/condition")
        for name in self.nested:
            chk.actions(a.get(name) or [], f"{pointer}/{name}")

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        assert ex.t is not None and ex.rid is not None
        viewer = ex.reader_access
        if viewer is not None:  # a dry run shown to someone: a branch on fields hidden from them stays shut
            try:
                viewer.check_query_fields(ex.cat, ex.t, a["condition"])
            except BadRequest:
                raise StepFailed("the branch's condition uses fields you may not see") from None
        taken = "then" if ex.eng.matches(ex.conn, ex.cat, ex.access, ex.t, ex.rid, a["condition"],
                                         ex.req.changes) else "else"
        ex.steps[-1]["output"] = {"branch": taken}
        park = ex.run_list(a.get(taken) or [], [*path, taken], None)
        return park if park is not None else {"branch": taken}
