"""The notification list (the bell's dropdown and its own page) and marking one read."""

from __future__ import annotations

from flask import Response, redirect, request, url_for
from sqlalchemy import select, update

from formwork import db
from formwork.errors import NotFound
from formwork.ui import i18n
from formwork.ui.context import make_page, path_of, render, safe_next
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


@routes.get("/notifications")
def notifications_page() -> Response:
    access = current_access()
    n = db.notifications
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        rows = conn.execute(select(n).where(n.c.user_id == access.user_id).order_by(n.c.id.desc()).limit(30)).all()
        return render(p, "_notifications.html" if request.headers.get("HX-Request") else "notifications.html",
                      items=rows, op_label=lambda op: i18n.operator_label(p.locale, op))


@routes.post("/notifications/<int:notification_id>/read")
def notification_read(notification_id: int) -> Response:
    access = current_access()
    n = db.notifications
    with unit() as (conn, _cat):
        res = conn.execute(update(n).where(n.c.id == notification_id, n.c.user_id == access.user_id,
                                           n.c.read_at.is_(None)).values(read_at=db.utcnow()))
        if res.rowcount != 1 and conn.execute(select(n.c.id).where(
                n.c.id == notification_id, n.c.user_id == access.user_id)).first() is None:
            raise NotFound("no such notification")
    return redirect(request.referrer and _same_site(request.referrer) or url_for("ui.notifications_page"))  # type: ignore[return-value]


def _same_site(url: str) -> str | None:
    path = path_of(url)
    return safe_next(path) if path else None
