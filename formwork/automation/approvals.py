"""Approvals: the requests a ``request_approval`` action parks a run on, and their decisions.

An approval is pending until its approvers decide: ``any`` mode settles on the first approval, ``all``
mode needs every approver's; a rejection or a return settles it at once. Settling hands the parked run
back to the worker on the branch the outcome chose (``on_approve``, ``on_reject``, ``on_return``, which
falls back to ``on_reject`` when the action has none). Web requests never run actions themselves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.runs import find_rule, path_text
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import Catalog, TableDef
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader

DECISIONS = {"approve": "approved", "reject": "rejected", "return": "returned"}
STATUSES = ("pending", "approved", "rejected", "returned", "all")
BRANCHES = {"approved": "on_approve", "rejected": "on_reject", "returned": "on_return"}
MAX_COMMENT = 5000


def approval_json(conn: Connection, cat: Catalog, rows: list[Any]) -> list[dict[str, Any]]:
    """Approvals as the API and the record page show them: approvers by name and the decision trail."""
    if not rows:
        return []
    d, u = db.approval_decisions, db.users
    trail: dict[int, list[dict[str, Any]]] = {}
    for x in conn.execute(select(d, u.c.name).join(u, u.c.id == d.c.user_id, isouter=True)
                          .where(d.c.approval_id.in_([r.id for r in rows])).order_by(d.c.id)):
        trail.setdefault(x.approval_id, []).append({"user": {"id": x.user_id, "name": x.name},
                                                    "decision": x.decision, "comment": x.comment,
                                                    "at": iso_utc(x.at)})
    ids = {i for r in rows for i in r.approvers}
    names = dict(conn.execute(select(u.c.id, u.c.name).where(u.c.id.in_(ids))).all()) if ids else {}
    out = []
    for r in rows:
        t = cat.tables_by_id.get(r.table_id)
        out.append({"id": r.id, "title": r.title, "status": r.status, "mode": r.mode,
                    "app": cat.apps_by_id[r.app_id].key if r.app_id in cat.apps_by_id else None,
                    "table": t.key if t else None, "record_id": r.record_id,
                    "approvers": [{"id": i, "name": names.get(i)} for i in r.approvers],
                    "decisions": trail.get(r.id, []), "created_at": iso_utc(r.created_at),
                    "decided_at": iso_utc(r.decided_at) if r.decided_at else None})
    return out


def list_approvals(conn: Connection, cat: Catalog, access: Access, status: str, mine: bool,
                   limit: int = 200) -> list[dict[str, Any]]:
    """Approvals in a status (or ``all``), newest first. ``mine`` keeps those the caller approves and,
    for pending ones, has not decided yet; non-administrators only ever see their own."""
    if status not in STATUSES:
        raise BadRequest("status must be pending, approved, rejected, returned or all")
    mine = mine or not access.is_admin
    a = db.approvals
    q = select(a)
    if status != "all":
        q = q.where(a.c.status == status)
    rows = conn.execute(q.order_by(a.c.id.desc()).limit(2000)).all()
    if mine:
        decided = {x[0] for x in conn.execute(select(db.approval_decisions.c.approval_id).where(
            db.approval_decisions.c.user_id == access.user_id))}
        rows = [r for r in rows if access.user_id in r.approvers and (status != "pending" or r.id not in decided)]
    return approval_json(conn, cat, list(rows[:limit]))


def pending_count(conn: Connection, access: Access) -> int:
    """How many pending approvals wait on this user's decision (the count beside "My approvals")."""
    if access.user_id is None:
        return 0
    a, d = db.approvals, db.approval_decisions
    decided = select(d.c.approval_id).where(d.c.user_id == access.user_id)
    rows = conn.execute(select(a.c.approvers).where(a.c.status == "pending", a.c.id.not_in(decided))).all()
    return sum(1 for r in rows if access.user_id in (r.approvers or []))


def record_approvals(conn: Connection, cat: Catalog, t: TableDef, record_id: int,
                     viewer: Access | None = None) -> list[dict[str, Any]]:
    """Every approval asked about one record, oldest first; 404 unless ``viewer`` (when given) may read
    the record (a caller without a viewer has checked that itself)."""
    if viewer is not None:
        RecordReader(cat, conn, viewer).get(t, record_id, fields=[t.fields[0].key] if t.fields else None)
    a = db.approvals
    rows = conn.execute(select(a).where(a.c.table_id == t.id, a.c.record_id == record_id).order_by(a.c.id)).all()
    return approval_json(conn, cat, list(rows))


def check_decision(decision: Any, comment: Any) -> None:
    """422 with details unless the decision is approve/reject/return and a reject or return says why."""
    details: dict[str, list[str]] = {}
    if decision not in DECISIONS:
        details["decision"] = ["must be approve, reject or return"]
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        details["comment"] = [f"must be text of at most {MAX_COMMENT} characters"]
    if decision in ("reject", "return") and not (isinstance(comment, str) and comment.strip()):
        details["comment"] = ["is required to reject or return"]
    if details:
        raise ValidationFailed.from_details(details)


def decide(conn: Connection, cat: Catalog, access: Access, approval_id: int, decision: Any,
           comment: Any) -> str:
    """Record the caller's decision and settle the approval when it is decided; returns its status.

    404 for those who can't see it, 403 for an administrator who is not an approver, 409 when it is
    settled already or the caller has decided.
    """
    check_decision(decision, comment)  # so decision is one of DECISIONS and comment text or None
    a, d = db.approvals, db.approval_decisions
    q = select(a).where(a.c.id == approval_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None or (access.user_id not in row.approvers and not access.is_admin):
        raise NotFound("no such approval")
    if access.user_id not in row.approvers:
        raise Forbidden("you are not an approver of this request")
    if row.status != "pending":
        raise Conflict(f"this approval is already {row.status}")
    if conn.execute(select(d.c.id).where(d.c.approval_id == row.id, d.c.user_id == access.user_id)).first():
        raise Conflict("you have already decided")
    conn.execute(insert(d).values(approval_id=row.id, user_id=access.user_id, decision=decision,
                                  comment=comment, at=db.utcnow()))
    outcome = None
    if decision != "approve":
        outcome = DECISIONS[decision]
    else:
        approved = {x[0] for x in conn.execute(select(d.c.user_id).where(d.c.approval_id == row.id,
                                                                         d.c.decision == "approve"))}
        if row.mode == "any" or set(row.approvers) <= approved:
            outcome = "approved"
    if outcome is None:
        return "pending"
    conn.execute(update(a).where(a.c.id == row.id).values(status=outcome, decided_at=db.utcnow()))
    resume_run(conn, cat, row, outcome)
    return outcome


def _action_at(actions: list[dict[str, Any]], path: list[Any]) -> dict[str, Any]:
    node: Any = actions
    for part in path:
        node = node[part]
    return node


def resume_run(conn: Connection, cat: Catalog, approval: Any, outcome: str) -> None:
    """Hand the run parked on ``approval`` back to the worker on the branch the outcome chose; the
    decisions become the approval action's output."""
    r, d = db.automation_runs, db.approval_decisions
    run = conn.execute(select(r).where(r.c.id == approval.run_id)).first()
    if run is None or run.status != "awaiting_approval":
        return
    path = [int(p) if p.isdigit() else p for p in approval.path.split(".")]
    found = find_rule(cat, approval.automation_id)
    state = dict(run.state or {})
    comments = [{"user_id": x.user_id, "decision": x.decision, "comment": x.comment}
                for x in conn.execute(select(d).where(d.c.approval_id == approval.id).order_by(d.c.id))]
    branch = BRANCHES[outcome]
    key = path_text(path)
    if found is not None:
        try:
            action = _action_at(found[1].get("actions") or [], path)
            key = action.get("key") or key
            if branch == "on_return" and "on_return" not in action:
                branch = "on_reject"
        except (IndexError, KeyError, TypeError):
            pass
    outputs = dict(state.get("outputs") or {})
    outputs[key] = {"approval_id": approval.id, "status": outcome, "decisions": comments}
    state.update(outputs=outputs, path=[*path, branch, 0])
    conn.execute(update(r).where(r.c.id == run.id).values(status="waiting", resume_at=db.utcnow(), state=state))
