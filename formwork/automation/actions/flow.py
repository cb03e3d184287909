"""Actions that steer the run: approvals and waits park it, a branch picks the nested list to run."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from formwork import db
from formwork.automation import approvals
from formwork.automation.actions.base import (
    ACTION_LIST,
    KEY,
    LOCALIZED_TEMPLATE,
    TEMPLATES,
    Action,
    CheckContext,
    RunContext,
)
from formwork.automation.actions.people import addresses, owner_id, resolve_users, users_by_role
from formwork.automation.runs import Park, StepFailed, path_text, plain
from formwork.errors import BadRequest

WAIT_UNITS = (("seconds", 1), ("minutes", 60), ("hours", 3600), ("days", 86400))


def wait_seconds(a: dict[str, Any]) -> float:
    return sum(float(a.get(u) or 0) * s for u, s in WAIT_UNITS)


APPROVERS: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": {"users": TEMPLATES, "role": KEY, "manager": {"type": "boolean"}}}
MODE: dict[str, Any] = {"enum": ["any", "all"]}
STATUS_VALUE: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200}


class RequestApproval(Action):
    """Ask users to approve; the run waits, then continues with ``on_approve``, ``on_reject`` or
    ``on_return`` (decisions are taken by formwork.automation.approvals).

    ``approvers`` + ``mode`` make one level; ``levels`` (instead) make several, each with its approvers,
    mode and an optional ``when`` condition (a level applies only when it holds for the record).
    ``status`` names the field the approval maintains (read-only for people, see approvals.py);
    ``guard`` names the fields it covers and what a change to them does while pending or once approved
    (``refuse`` or ``resubmit``)."""

    type = "request_approval"
    label = "Request approval"
    properties = {
        "approvers": APPROVERS, "mode": MODE, "title": LOCALIZED_TEMPLATE,
        "levels": {"type": "array", "minItems": 1, "maxItems": 10, "items": {
            "type": "object", "required": ["approvers"], "additionalProperties": False,
            "properties": {"label": {"$ref": "common.json#/$defs/label"}, "approvers": APPROVERS, "mode": MODE,
                           "when": {"$ref": "common.json#/$defs/filter"}}}},
        "status": {"type": "object", "required": ["field"], "additionalProperties": False,
                   "properties": {"field": KEY, "pending": STATUS_VALUE, "approved": STATUS_VALUE,
                                  "rejected": STATUS_VALUE, "returned": STATUS_VALUE}},
        "guard": {"type": "object", "required": ["fields"], "additionalProperties": False,
                  "properties": {"fields": {"type": "array", "minItems": 1, "maxItems": 200, "items": KEY},
                                 "on_change": {"enum": ["refuse", "resubmit"]}}},
        "on_approve": ACTION_LIST, "on_reject": ACTION_LIST, "on_return": ACTION_LIST}
    needs_record = True
    nested = ("on_approve", "on_reject", "on_return")

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        levels = a.get("levels")
        if levels is not None:
            if a.get("approvers") or a.get("mode"):
                chk.err(f"{pointer}/levels", "give either 'approvers' (and 'mode') or 'levels', not both")
            for i, lv in enumerate(levels):
                self._check_approvers(lv.get("approvers") or {}, f"{pointer}/levels/{i}/approvers", chk)
                if lv.get("when") is not None:
                    chk.condition(chk.table, lv["when"], f"{pointer}/levels/{i}/when")
        else:
            self._check_approvers(a.get("approvers") or {}, f"{pointer}/approvers", chk)
        chk.templated(a.get("title"), f"{pointer}/title")
        t = chk.table
        st = a.get("status")
        if st is not None and t is not None:
            f = t.fields_by_key.get(st.get("field", ""))
            if f is None or f.type not in ("text", "single_select"):
                chk.err(f"{pointer}/status/field", "must name a text or single select field of the table")
            elif f.type == "single_select":
                choices = {c.get("value") for c in f.options.get("choices") or []}
                for name in ("pending", "approved", "rejected", "returned"):
                    value = st.get(name) or ({"pending": "pending", "approved": "approved",
                                              "rejected": "rejected"}.get(name))
                    if value is not None and value not in choices:
                        chk.err(f"{pointer}/status/{name}", f"'{value}' is not a choice of '{f.key}'")
        guard = a.get("guard")
        if guard is not None:
            for i, k in enumerate(guard.get("fields") or []):
                if t is not None and k not in t.fields_by_key:
                    chk.err(f"{pointer}/guard/fields/{i}", f"no field '{k}' in '{t.key}'")
                elif st is not None and k == st.get("field"):
                    chk.err(f"{pointer}/guard/fields/{i}", "the status field is guarded already")
            if guard.get("on_change") == "resubmit":
                if st is None:
                    chk.err(f"{pointer}/guard/on_change", "sending back for approval needs a 'status' field")
                elif getattr(chk, "trigger", "record_updated") != "record_updated":
                    chk.err(f"{pointer}/guard/on_change",
                            "sending back for approval needs a rule started when its status changes to pending "
                            "(a 'record updated' trigger)")
        for name in self.nested:
            chk.actions(a.get(name) or [], f"{pointer}/{name}")

    @staticmethod
    def _check_approvers(appr: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        if not (appr.get("users") or appr.get("role") or appr.get("manager")):
            chk.err(pointer, "name 'users', a 'role' or 'manager': true")
        chk.templated(appr.get("users"), f"{pointer}/users")

    @staticmethod
    def _approvers(spec: dict[str, Any], ex: RunContext) -> list[int]:
        conn = ex.conn
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
        return sorted(set(approvers))

    def plan(self, a: dict[str, Any], ex: RunContext) -> list[dict[str, Any]]:
        """The levels that apply to the record now, each with its approvers resolved."""
        assert ex.t is not None and ex.rid is not None
        levels = a.get("levels") or [{"approvers": a.get("approvers") or {}, "mode": a.get("mode") or "any"}]
        out = []
        for i, lv in enumerate(levels):
            if lv.get("when") is not None and not ex.eng.matches(ex.conn, ex.cat, ex.access, ex.t, ex.rid,
                                                                 lv["when"], ex.req.changes):
                continue
            approvers = self._approvers(lv.get("approvers") or {}, ex)
            if not approvers:
                raise StepFailed(f"nobody to approve level {i + 1}: the approver list is empty")
            out.append({"level": i, "label": lv.get("label"), "mode": lv.get("mode") or "any",
                        "approvers": approvers})
        if not out:
            raise StepFailed("no approval level applies to this record")
        return out

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        assert ex.t is not None and ex.rid is not None
        conn = ex.conn
        levels = self.plan(a, ex)
        raw = a.get("title") or f"Approval: {ex.rule['key']}"
        titles = {k: str(ex.render(v)) for k, v in raw.items()} if isinstance(raw, dict) else None
        title = (titles.get("en") or next(iter(titles.values()))) if titles else str(ex.render(raw))
        if ex.dry:
            ex.steps[-1]["output"] = {"levels": levels}
            return Park("awaiting_approval", [*path])
        st = approvals.status_config(a)
        if st is not None and st["field"] in ex.t.fields_by_key:
            current = ex.record().get(st["field"])
            if current != st["pending"]:
                ex.service().update(ex.t, ex.rid, {st["field"]: st["pending"]})
                ex.forget_record()
        aid = approvals.open_request(
            conn, run_id=ex.run_id, automation_id=ex.rule["id"], app_key=ex.app.key, app_id=ex.app.id, t=ex.t,
            record_id=ex.rid, path=path_text(path), levels=levels, level=0, title=title, titles=titles,
            requested_by=approvals.requester(conn, ex.req.trigger_ctx, owner_id(ex)))
        ex.outputs[a.get("key") or path_text(path)] = {"approval_id": aid, "status": "pending"}
        ex.steps[-1]["output"] = {"approval_id": aid, "approvers": levels[0]["approvers"],
                                  "mode": levels[0]["mode"], "levels": len(levels)}
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
