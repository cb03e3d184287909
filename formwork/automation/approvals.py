"""Approvals: the requests a ``request_approval`` action parks a run on, their decisions, and the guard
that keeps the status an approval maintains out of people's hands.

A step plans its **levels** when the run reaches it (each level: approvers by user, role or the owner's
team manager; ``any`` = 或签, the first approval settles the level, ``all`` = 会签, every approver must; a
level with ``when`` only applies when its condition holds for the record, e.g. amounts from 500,000 also
need the executive). One approval row is open at a time: when its level is approved the next planned
level opens (same run, same step); a rejection or a return at any level settles the step at once.
Settling sets the step's ``status`` field (when it has one) and hands the parked run back to the worker
on the branch the outcome chose (``on_approve``, ``on_reject``, ``on_return``, which falls back to
``on_reject`` when the action has none). Web requests never run actions themselves.

Who still has to decide is kept in ``fw_approval_waiting`` (one row per approver and open approval), so
the inbox count every page shows is one index look-up.

The **guard** (registered in the runtime's write-guard registry at start-up, :func:`register_guards`) is
called by the record writer on every write path. For each approval step with a ``status``:

* people never set that field, except to the step's ``pending`` value to ask for approval (and only
  from a state that is neither pending nor approved); a new record may only start empty, at the field's
  default or at the ``returned`` value. Only the approval flow (the rule that holds the step) writes it.
* ``guard.fields`` (the fields the approval covers), while the request is pending or after it was
  approved: ``on_change: "refuse"`` refuses the change naming each field; ``"resubmit"`` lets it through,
  withdraws the open request and sends the record back for approval (its status goes back to pending,
  which starts the rule again).
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.automation.intake import emit_event
from formwork.automation.runs import find_rule, path_text
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata.catalog import Catalog, TableDef, label_text
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime import guards, notifications
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordReader

if TYPE_CHECKING:
    from formwork.runtime.records import RecordService

DECISIONS = {"approve": "approved", "reject": "rejected", "return": "returned"}
STATUSES = ("pending", "approved", "rejected", "returned", "cancelled", "all")
BRANCHES = {"approved": "on_approve", "rejected": "on_reject", "returned": "on_return"}
INBOX_VIEWS = ("waiting", "decided", "requested")
MAX_COMMENT = 5000
STATUS_DEFAULTS = {"pending": "pending", "approved": "approved", "rejected": "rejected"}


# --- reading ----------------------------------------------------------------------------------------
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
    ids = {i for r in rows for i in r.approvers} | {r.requested_by for r in rows if r.requested_by}
    names = dict(conn.execute(select(u.c.id, u.c.name).where(u.c.id.in_(ids))).all()) if ids else {}
    out = []
    for r in rows:
        t = cat.tables_by_id.get(r.table_id)
        levels = r.levels or []
        level = levels[r.level] if r.level < len(levels) else {}
        out.append({"id": r.id, "title": r.title, "titles": r.titles, "status": r.status, "mode": r.mode,
                    "app": cat.apps_by_id[r.app_id].key if r.app_id in cat.apps_by_id else None,
                    "table": t.key if t else None, "record_id": r.record_id,
                    "level": r.level + 1, "levels": len(levels) or 1, "level_label": level.get("label"),
                    "requested_by": {"id": r.requested_by, "name": names.get(r.requested_by)}
                    if r.requested_by else None,
                    "approvers": [{"id": i, "name": names.get(i)} for i in r.approvers],
                    "decisions": trail.get(r.id, []), "created_at": iso_utc(r.created_at),
                    "decided_at": iso_utc(r.decided_at) if r.decided_at else None})
    return out


def title_for(item: dict[str, Any], locale: str) -> str:
    """An approval's title in the reader's language (the rule may give one per language)."""
    return label_text(item.get("titles"), locale) if item.get("titles") else str(item.get("title") or "")


def list_approvals(conn: Connection, cat: Catalog, access: Access, status: str, mine: bool,
                   limit: int = 200) -> list[dict[str, Any]]:
    """Approvals in a status (or ``all``), newest first. ``mine`` keeps those the caller approves and,
    for pending ones, has not decided yet; non-administrators only ever see their own."""
    if status not in STATUSES:
        raise BadRequest("status must be pending, approved, rejected, returned, cancelled or all")
    mine = mine or not access.is_admin
    a = db.approvals
    q = select(a)
    if status != "all":
        q = q.where(a.c.status == status)
    if mine and status == "pending":
        w = db.approval_waiting
        q = q.where(a.c.id.in_(select(w.c.approval_id).where(w.c.user_id == access.user_id)))
        return approval_json(conn, cat, list(conn.execute(q.order_by(a.c.id.desc()).limit(limit)).all()))
    rows = conn.execute(q.order_by(a.c.id.desc()).limit(2000)).all()
    if mine:
        rows = [r for r in rows if access.user_id in r.approvers]
    return approval_json(conn, cat, list(rows[:limit]))


def inbox(conn: Connection, cat: Catalog, access: Access, view: str, limit: int = 100) -> list[dict[str, Any]]:
    """The approvals page's lists: ``waiting`` on my decision, ``decided`` by me, ``requested`` by me."""
    if view not in INBOX_VIEWS:
        raise BadRequest("view must be waiting, decided or requested")
    a, w, d = db.approvals, db.approval_waiting, db.approval_decisions
    q = select(a)
    if view == "waiting":
        q = q.where(a.c.status == "pending", a.c.id.in_(select(w.c.approval_id).where(w.c.user_id == access.user_id)))
    elif view == "decided":
        q = q.where(a.c.id.in_(select(d.c.approval_id).where(d.c.user_id == access.user_id)))
    else:
        q = q.where(a.c.requested_by == access.user_id)
    return approval_json(conn, cat, list(conn.execute(q.order_by(a.c.id.desc()).limit(limit)).all()))


def pending_count(conn: Connection, access: Access) -> int:
    """How many pending approvals wait on this user's decision (the count beside "My approvals"): one
    count over an index of ``fw_approval_waiting``."""
    if access.user_id is None:
        return 0
    w = db.approval_waiting
    return int(conn.execute(select(func.count()).select_from(w).where(w.c.user_id == access.user_id)).scalar() or 0)


def record_approvals(conn: Connection, cat: Catalog, t: TableDef, record_id: int,
                     viewer: Access | None = None) -> list[dict[str, Any]]:
    """Every approval asked about one record, oldest first; 404 unless ``viewer`` (when given) may read
    the record (a caller without a viewer has checked that itself)."""
    if viewer is not None:
        RecordReader(cat, conn, viewer).get(t, record_id, fields=[t.fields[0].key] if t.fields else None)
    a = db.approvals
    rows = conn.execute(select(a).where(a.c.table_id == t.id, a.c.record_id == record_id).order_by(a.c.id)).all()
    return approval_json(conn, cat, list(rows))


def waiting_on(conn: Connection, approval_ids: list[int], user_id: int | None) -> set[int]:
    """Which of these approvals wait on the user's decision."""
    if not approval_ids or user_id is None:
        return set()
    w = db.approval_waiting
    return {r[0] for r in conn.execute(select(w.c.approval_id).where(w.c.user_id == user_id,
                                                                     w.c.approval_id.in_(approval_ids)))}


# --- opening a request ------------------------------------------------------------------------------
def open_request(conn: Connection, *, run_id: int, automation_id: int, app_key: str, app_id: int, t: TableDef,
                 record_id: int, path: str, levels: list[dict[str, Any]], level: int, title: str,
                 titles: dict[str, str] | None, requested_by: int | None) -> int:
    """Open the approval of one planned level (``levels[level]``) and tell its approvers; returns its id."""
    lv = levels[level]
    approvers = sorted(set(lv["approvers"]))
    aid = int(conn.execute(insert(db.approvals).values(
        run_id=run_id, automation_id=automation_id, app_id=app_id, table_id=t.id, record_id=record_id, path=path,
        mode=lv.get("mode") or "any", title=title, titles=titles, approvers=approvers, status="pending",
        created_at=db.utcnow(), level=level, levels=levels, requested_by=requested_by)
        .returning(db.approvals.c.id)).scalar_one())
    conn.execute(insert(db.approval_waiting), [{"approval_id": aid, "user_id": u} for u in approvers])
    shown = titles or title
    if len(levels) > 1 and lv.get("label"):
        msg = notifications.message("approval_request_level", title=shown, level=lv["label"])
    else:
        msg = notifications.message("approval_request", title=shown)
    notifications.notify(conn, approvers, "approval", title, None,
                         {"approval_id": aid, "app": app_key, "table": t.key, "record_id": record_id}, message=msg)
    return aid


# --- deciding ---------------------------------------------------------------------------------------
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
    settled already or the caller has decided. Approving the last approver of a level that has a next
    level opens that level (this approval is then ``approved``, the step still pending).
    """
    check_decision(decision, comment)  # so decision is one of DECISIONS and comment text or None
    a, d, w = db.approvals, db.approval_decisions, db.approval_waiting
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
                                  comment=comment.strip() if isinstance(comment, str) and comment.strip() else None,
                                  at=db.utcnow()))
    conn.execute(delete(w).where(w.c.approval_id == row.id, w.c.user_id == access.user_id))
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
    conn.execute(delete(w).where(w.c.approval_id == row.id))
    levels = row.levels or []
    if outcome == "approved" and row.level + 1 < len(levels):
        app = cat.apps_by_id.get(row.app_id)
        t = cat.tables_by_id.get(row.table_id)
        if app is not None and t is not None:
            open_request(conn, run_id=row.run_id, automation_id=row.automation_id, app_key=app.key, app_id=app.id,
                         t=t, record_id=row.record_id, path=row.path, levels=levels, level=row.level + 1,
                         title=row.title, titles=row.titles, requested_by=row.requested_by)
            return outcome
    _set_status(conn, cat, row, outcome)
    _tell_requester(conn, cat, row, outcome, access, comment)
    resume_run(conn, cat, row, outcome)
    return outcome


def _tell_requester(conn: Connection, cat: Catalog, row: Any, outcome: str, decider: Access, comment: Any) -> None:
    if not row.requested_by or row.requested_by == decider.user_id:
        return
    body = None
    if isinstance(comment, str) and comment.strip():
        name = conn.execute(select(db.users.c.name).where(db.users.c.id == decider.user_id)).scalar() or ""
        body = f"{name}: {comment.strip()}"
    msg = notifications.message(f"approval_{outcome}", title=row.titles or row.title)
    if body:
        msg["body"] = body
    app, t = cat.apps_by_id.get(row.app_id), cat.tables_by_id.get(row.table_id)
    notifications.notify(conn, [row.requested_by], "approval", row.title, body,
                         {"approval_id": row.id, "app": app.key if app else None, "table": t.key if t else None,
                          "record_id": row.record_id}, message=msg)


def _action_at(actions: list[dict[str, Any]], path: list[Any]) -> dict[str, Any]:
    node: Any = actions
    for part in path:
        node = node[part]
    return node


def _parts(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in path.split(".")]


def _step(cat: Catalog, approval: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(rule, action) of the step an approval belongs to; None when the rule is gone or changed."""
    found = find_rule(cat, approval.automation_id)
    if found is None:
        return None
    try:
        action = _action_at(found[1].get("actions") or [], _parts(approval.path))
    except (IndexError, KeyError, TypeError):
        return None
    if not isinstance(action, dict) or action.get("type") != "request_approval":
        return None
    return found[1], action


def status_config(action: dict[str, Any]) -> dict[str, Any] | None:
    """The step's ``status`` with its defaults filled in; None when the step maintains no field."""
    st = action.get("status")
    if not isinstance(st, dict) or not st.get("field"):
        return None
    return {**STATUS_DEFAULTS, "returned": None, **st}


def _set_status(conn: Connection, cat: Catalog, approval: Any, outcome: str) -> None:
    """Write the step's status field for the outcome, as the approval flow (the only writer allowed)."""
    from formwork.runtime.records import RecordService

    found = _step(cat, approval)
    t = cat.tables_by_id.get(approval.table_id)
    if found is None or t is None or approval.record_id is None:
        return
    rule, action = found
    st = status_config(action)
    if st is None or st["field"] not in t.fields_by_key:
        return
    value = st.get(outcome)
    if outcome == "returned" and value is None:
        f = t.fields_by_key[st["field"]]
        value = f.doc.get("default")
    alive = conn.execute(select(t.sa.c.id).where(t.sa.c.id == approval.record_id, t.sa.c.deleted_at.is_(None))).first()
    if alive is None:
        return
    RecordService(cat, conn, Access.system(), origin=rule["key"]).update(t, approval.record_id,
                                                                         {st["field"]: value})


def resume_run(conn: Connection, cat: Catalog, approval: Any, outcome: str) -> None:
    """Hand the run parked on ``approval`` back to the worker on the branch the outcome chose; the
    decisions (of every level) become the approval action's output."""
    r, d, a = db.automation_runs, db.approval_decisions, db.approvals
    run = conn.execute(select(r).where(r.c.id == approval.run_id)).first()
    if run is None or run.status != "awaiting_approval":
        return
    path = _parts(approval.path)
    found = find_rule(cat, approval.automation_id)
    state = dict(run.state or {})
    ids = select(a.c.id).where(a.c.run_id == approval.run_id, a.c.path == approval.path)
    comments = [{"user_id": x.user_id, "decision": x.decision, "comment": x.comment}
                for x in conn.execute(select(d).where(d.c.approval_id.in_(ids)).order_by(d.c.id))]
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


def cancel_open(conn: Connection, cat: Catalog, automation_id: int, path: str, t: TableDef, record_id: int) -> int:
    """Withdraw the step's open request on a record (the record changed and goes back for approval):
    the approval is ``cancelled``, nobody waits on it any more, its parked run ends ``cancelled``."""
    a, w, r = db.approvals, db.approval_waiting, db.automation_runs
    rows = conn.execute(select(a).where(a.c.automation_id == automation_id, a.c.path == path,
                                        a.c.table_id == t.id, a.c.record_id == record_id,
                                        a.c.status == "pending")).all()
    app = cat.apps_by_id.get(t.app_id)
    for row in rows:
        conn.execute(update(a).where(a.c.id == row.id).values(status="cancelled", decided_at=db.utcnow()))
        conn.execute(delete(w).where(w.c.approval_id == row.id))
        conn.execute(update(r).where(r.c.id == row.run_id, r.c.status == "awaiting_approval").values(
            status="cancelled", finished_at=db.utcnow(), error="the record changed and was sent back for approval"))
        notifications.notify(conn, row.approvers, "approval", row.title, None,
                             {"approval_id": row.id, "app": app.key if app else None, "table": t.key,
                              "record_id": record_id},
                             message=notifications.message("approval_cancelled", title=row.titles or row.title))
    return len(rows)


# --- the guard --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """One approval step seen from the table it guards."""

    rule_id: int
    rule_key: str
    path: str
    status: dict[str, Any] | None
    guarded: tuple[str, ...]
    on_change: str


def _walk(actions: list[dict[str, Any]], base: list[Any]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    for i, act in enumerate(actions or []):
        if not isinstance(act, dict):
            continue
        yield [*base, i], act
        for name in ("on_approve", "on_reject", "on_return", "then", "else"):
            if isinstance(act.get(name), list):
                yield from _walk(act[name], [*base, i, name])


def specs(cat: Catalog) -> dict[int, list[Spec]]:
    """Approval steps by the id of the table whose records they guard; built once per catalog."""
    def build() -> dict[int, list[Spec]]:
        out: dict[int, list[Spec]] = {}
        for app in cat.apps:
            for rule in app.automations:
                t = app.tables_by_key.get((rule.get("trigger") or {}).get("table", ""))
                if t is None or not rule.get("enabled", True):
                    continue
                for path, act in _walk(rule.get("actions") or [], []):
                    if act.get("type") != "request_approval":
                        continue
                    st = status_config(act)
                    guard = act.get("guard") or {}
                    fields = tuple(k for k in guard.get("fields") or [] if k in t.fields_by_key)
                    if st is not None and st["field"] not in t.fields_by_key:
                        st = None
                    if st is None and not fields:
                        continue
                    out.setdefault(t.id, []).append(Spec(rule["id"], rule["key"], path_text(path), st, fields,
                                                         guard.get("on_change") or "refuse"))
        return out

    return cat.cached(("approval_guards",), build)


def _norm(v: Any) -> Any:
    if v is None or v == "" or v == []:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float | decimal.Decimal):
        try:
            return decimal.Decimal(str(v)).normalize()
        except decimal.InvalidOperation:
            return v
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(v, dict) and "id" in v:
        return v["id"]
    if isinstance(v, list):
        return sorted((_norm(x) for x in v), key=str)
    return v


def _current(svc: RecordService, t: TableDef, ids: list[int], keys: set[str]) -> dict[int, dict[str, Any]]:
    """The stored values of some fields of some records (columns as stored; to-many links as id lists)."""
    out: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if not ids:
        return out
    stored = [t.fields_by_key[k] for k in keys if t.fields_by_key[k].stored]
    if stored:
        cols = [t.sa.c.id, *(t.sa.c[f.column_name] for f in stored)]
        for row in svc.conn.execute(select(*cols).where(t.sa.c.id.in_(ids))):
            out[row[0]] = {f.key: row[i + 1] for i, f in enumerate(stored)}
    others = [k for k in keys if not t.fields_by_key[k].stored]
    if others:
        for rec in RecordReader(svc.cat, svc.conn, Access.system()).by_ids(t, ids):
            for k in others:
                out.setdefault(rec["id"], {})[k] = rec["fields"].get(k)
    return out


def _locked(svc: RecordService, spec: Spec, t: TableDef, rid: int, cur: dict[str, Any]) -> str | None:
    """'pending' or 'approved' when the step holds the record; None when it is free to change."""
    if spec.status is not None:
        value = _norm(cur.get(spec.status["field"]))
        for state in ("pending", "approved"):
            if value is not None and value == _norm(spec.status.get(state)):
                return state
        return None
    a = db.approvals
    last = svc.conn.execute(select(a.c.status).where(
        a.c.automation_id == spec.rule_id, a.c.path == spec.path, a.c.table_id == t.id, a.c.record_id == rid,
        a.c.status != "cancelled").order_by(a.c.id.desc()).limit(1)).scalar()
    return last if last in ("pending", "approved") else None


def approval_guard(svc: RecordService, t: TableDef, op: str, writes: list[guards.PlannedWrite]) -> None:
    """The write guard of approval steps (see the module docstring). The system writer (no user: demo
    data, the platform's own writes) is not a person and passes."""
    if svc.access.user_id is None:
        return
    for spec in specs(svc.cat).get(t.id, []):
        if svc.origin is not None and svc.origin == spec.rule_key:
            continue  # the approval flow itself
        keys = set(spec.guarded)
        if spec.status is not None:
            keys.add(spec.status["field"])
        touched = [w for w in writes if keys & w.values.keys()]
        if not touched:
            continue
        if op == "create":
            for w in touched:
                _check_new_status(spec, t, w)
            continue
        current = _current(svc, t, [w.record_id for w in touched if w.record_id is not None], keys)
        for w in touched:
            if w.record_id is not None:
                _check_update(svc, spec, t, w, current.get(w.record_id, {}))


def _check_new_status(spec: Spec, t: TableDef, w: guards.PlannedWrite) -> None:
    st = spec.status
    if st is None or st["field"] not in w.values:
        return
    f = t.fields_by_key[st["field"]]
    value = _norm(w.values[st["field"]])
    allowed = {None, _norm(f.doc.get("default")), _norm(st.get("returned"))}
    if value not in allowed:
        w.refuse(st["field"], f"is set by the approval flow only: a new record can't start as '{w.values[st['field']]}'"
                              " (save it, then ask for approval)")


def _check_update(svc: RecordService, spec: Spec, t: TableDef, w: guards.PlannedWrite, cur: dict[str, Any]) -> None:
    st = spec.status
    rid = w.record_id
    assert rid is not None
    locked = _locked(svc, spec, t, rid, cur)
    if st is not None and st["field"] in w.values:
        new, old = _norm(w.values[st["field"]]), _norm(cur.get(st["field"]))
        if new != old and not (new == _norm(st["pending"]) and locked is None):
            hint = f"; set it to '{st['pending']}' to ask for approval" if locked is None else ""
            w.refuse(st["field"], f"is set by the approval flow only{hint}")
    changed = [k for k in spec.guarded if k in w.values and _norm(w.values[k]) != _norm(cur.get(k))]
    if not changed or locked is None:
        return
    if spec.on_change == "refuse" or st is None:
        why = "while the record is waiting for approval" if locked == "pending" else "after the record was approved"
        for k in changed:
            w.refuse(k, f"can't be changed {why}")
        return
    if w.errors:
        return
    # resubmit: withdraw the open request and send the record back for approval
    cancel_open(svc.conn, svc.cat, spec.rule_id, spec.path, t, rid)
    w.values[st["field"]] = st["pending"]
    if locked == "pending":  # the status does not move, so say it went back to pending ourselves
        emit_event(svc.conn, t, rid, "record_updated", user_id=svc.access.user_id,
                   payload={"changes": {st["field"]: {"old": st["pending"], "new": st["pending"]}},
                            "resubmitted": True})


def register_guards() -> None:
    """Plug the approval guard into the record writer (called at start-up with the actions)."""
    guards.register("approvals", approval_guard)


def requester(conn: Connection, trigger_ctx: dict[str, Any], owner: int | None) -> int | None:
    """Who asks for an approval: the user whose change started the run, else the record's owner."""
    user = (trigger_ctx or {}).get("user")
    if isinstance(user, dict) and isinstance(user.get("id"), int):
        return int(user["id"])
    return owner

