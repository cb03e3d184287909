"""The notification list (the bell's dropdown and its own page) and marking one read."""

from __future__ import annotations

from flask import Response, redirect, request, url_for

from formwork.runtime import notifications
from formwork.ui import i18n
from formwork.ui.context import make_page, path_of, render, safe_next
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


@routes.get("/notifications")
def notifications_page() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        rows = notifications.list_for(conn, access.user_id, limit=30)
        return render(p, "_notifications.html" if request.headers.get("HX-Request") else "notifications.html",
                      items=rows, op_label=lambda op: i18n.operator_label(p.locale, op))


@routes.post("/notifications/<int:notification_id>/read")
def notification_read(notification_id: int) -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        notifications.mark_read(conn, access.user_id, notification_id)
    return redirect(request.referrer and _same_site(request.referrer) or url_for("ui.notifications_page"))  # type: ignore[return-value]


def _same_site(url: str) -> str | None:
    path = path_of(url)
    return safe_next(path) if path else None
