"""Approvals in the pages: the inbox ("待我审批": waiting on me, decided by me, my requests) and the
Approve / Reject / Return buttons, in the inbox and on the record page (``_approval_panel.html``).

Decisions go through formwork.automation.approvals.decide, exactly as the API's do (same rights, same
409 on deciding twice, same 404 for an approval that isn't yours). A reject or return without a comment
is refused with the message next to the comment box, and the typed text stays. Each card shows the
record's summary as the reader sees it: only fields they may read, nothing when they can't read the
record.
"""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request, url_for

from formwork.automation import approvals
from formwork.errors import FormworkError, NotFound, ValidationFailed
from formwork.metadata.catalog import TableDef
from formwork.ui.context import Page, make_page, path_of, render, safe_next, shown_fields
from formwork.ui.render import local_datetime
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()
SUMMARY_FIELDS = 6
STATUS_COLORS = {"pending": "orange", "approved": "green", "rejected": "red", "returned": "gray",
                 "cancelled": "gray"}


def _when(p: Page, iso: str | None) -> str:
    if not iso:
        return ""
    d = local_datetime(iso, p.tz)
    return d.strftime("%Y-%m-%d %H:%M") if d else iso


def card(p: Page, item: dict[str, Any], waiting: set[int], summary: bool = True) -> dict[str, Any]:
    """What one approval card shows, in the reader's language and time zone."""
    t: TableDef | None = None
    app = next((a for a in p.cat.apps if a.key == item.get("app")), None)
    if app is not None and item.get("table") in app.tables_by_key:
        t = app.tables_by_key[item["table"]]
    rows: list[tuple[str, Any]] = []
    href = None
    readable = False
    if t is not None and app is not None and item.get("record_id") is not None:
        try:
            rec = p.reader().get(t, item["record_id"])
            readable = True
            href = url_for("ui.record_page", app_key=app.key, table_key=t.key, rid=item["record_id"])
            if summary:
                r = p.renderer(app.key)
                for f in shown_fields(p, t):
                    if f.key in rec["fields"] and rec["fields"][f.key] not in (None, "", []):
                        rows.append((p.label(f.label), r.cell(f, rec["fields"][f.key])))
                    if len(rows) >= SUMMARY_FIELDS:
                        break
        except NotFound:
            readable = False
    label = item.get("level_label")
    decisions = [{"name": d["user"]["name"] or "", "decision": d["decision"], "comment": d["comment"],
                  "when": _when(p, d["at"])} for d in item.get("decisions") or []]
    return {"id": item["id"], "title": approvals.title_for(item, p.locale), "status": item["status"],
            "color": STATUS_COLORS.get(item["status"], "gray"), "mode": item["mode"],
            "level": item.get("level") or 1, "levels": item.get("levels") or 1,
            "level_label": p.label(label) if label else "",
            "table": p.label(t.label) if t is not None else "", "href": href, "readable": readable,
            "summary": rows, "approvers": ", ".join(a["name"] or "" for a in item.get("approvers") or []),
            "requested_by": (item.get("requested_by") or {}).get("name") or "",
            "created": _when(p, item.get("created_at")), "decided": _when(p, item.get("decided_at")),
            "decisions": decisions, "can_decide": item["id"] in waiting and item["status"] == "pending"}


def panel(p: Page, t: TableDef, record_id: int) -> dict[str, Any]:
    """The record page's approval panel: every request about the record, with the buttons where the
    reader is an approver still to decide (the record page includes ``_approval_panel.html``)."""
    items = approvals.record_approvals(p.conn, p.cat, t, record_id)
    waiting = approvals.waiting_on(p.conn, [a["id"] for a in items], p.access.user_id)
    return {"cards": [card(p, a, waiting, summary=False) for a in items],
            "next": request.full_path.rstrip("?") if request else None}


@routes.get("/approvals")
def approvals_inbox() -> Response:
    access = current_access()
    view = request.args.get("view", "waiting")
    if view not in approvals.INBOX_VIEWS:
        view = "waiting"
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        items = approvals.inbox(conn, cat, access, view)
        waiting = approvals.waiting_on(conn, [a["id"] for a in items], access.user_id)
        return render(p, "approvals.html", view=view, cards=[card(p, a, waiting) for a in items],
                      counts={"waiting": approvals.pending_count(conn, access)}, errors={}, typed={})


@routes.post("/approvals/<int:approval_id>/decide")
def approval_decide(approval_id: int) -> Response:
    """Approve, reject or return. htmx: the card comes back (decided, or with the error by the comment box
    and the comment kept); a plain form goes back where it came from, or shows the card with the error."""
    access = current_access()
    decision = request.form.get("decision")
    comment = request.form.get("comment") or None
    in_record = request.form.get("where") == "record"
    nxt = safe_next(request.form.get("next") or (path_of(request.referrer) if request.referrer else None))
    errors: dict[str, str] = {}
    status = 200
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        try:
            with conn.begin_nested():
                approvals.decide(conn, cat, access, approval_id, decision, comment)
        except ValidationFailed as e:
            status = 422
            for k, msgs in (e.details or {}).items():
                errors[k] = p.t(f"appr_err_{k}") if k in ("comment", "decision") else msgs[0]
        except FormworkError as e:
            if isinstance(e, NotFound):
                raise
            status = e.status
            errors["decision"] = _refusal(p, e)
        item = _one(p, approval_id)
        waiting = approvals.waiting_on(conn, [approval_id], access.user_id)
        c = card(p, item, waiting, summary=not in_record)
        if request.headers.get("HX-Request"):
            return render(p, "_approval_card.html", status, c=c, errors=errors, typed={"comment": comment or ""},
                          where="record" if in_record else "inbox", next=nxt)
        if not errors:
            return redirect(nxt)  # type: ignore[return-value]
        return render(p, "approvals.html", status, view="waiting", cards=[c], errors=errors,
                      typed={"comment": comment or ""}, counts={"waiting": approvals.pending_count(conn, access)})


def _one(p: Page, approval_id: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from formwork import db

    row = p.conn.execute(sa.select(db.approvals).where(db.approvals.c.id == approval_id)).first()
    if row is None:
        raise NotFound("no such approval")
    return approvals.approval_json(p.conn, p.cat, [row])[0]


def _refusal(p: Page, e: FormworkError) -> str:
    """A refused decision in the reader's words: decided already, or not an approver."""
    if e.status == 409:
        return p.t("appr_err_decided")
    if e.status == 403:
        return p.t("appr_err_not_yours")
    return e.message
