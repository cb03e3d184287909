"""The notification list (the bell's dropdown and its own page), opening one, marking one or all read.

Each notification is shown in the reader's language only (formwork.runtime.notifications.texts) and at
the reader's local time; one about a record opens that record (and counts as read).
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, redirect, request, url_for

from formwork.errors import NotFound
from formwork.metadata.fieldtypes.temporal import iso_utc
from formwork.runtime import notifications
from formwork.ui.context import Page, make_page, path_of, render, safe_next
from formwork.ui.render import local_datetime
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


def target(link: Any) -> str | None:
    """Where a notification leads: its record's page, else its app's automations page (a failed run)."""
    if not isinstance(link, dict) or not isinstance(link.get("app"), str):
        return None
    if isinstance(link.get("table"), str) and isinstance(link.get("record_id"), int):
        return url_for("ui.record_page", app_key=link["app"], table_key=link["table"], rid=link["record_id"])
    if link.get("automation") and "ui.automations_page" in current_app.view_functions:
        return url_for("ui.automations_page", app_key=link["app"])
    return None


def items(p: Page, rows: list[Any]) -> list[dict[str, Any]]:
    out = []
    for n in rows:
        title, body = notifications.texts(n, p.locale)
        local = local_datetime(iso_utc(n.created_at) or "", p.tz)
        out.append({"id": n.id, "title": title, "body": body, "unread": n.read_at is None,
                    "when": local.strftime("%Y-%m-%d %H:%M") if local else "",
                    "href": url_for("ui.notification_open", notification_id=n.id) if target(n.link) else None})
    return out


@routes.get("/notifications")
def notifications_page() -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        rows = notifications.list_for(conn, access.user_id, limit=30 if request.headers.get("HX-Request") else 200)
        return render(p, "_notifications.html" if request.headers.get("HX-Request") else "notifications.html",
                      items=items(p, rows), any_unread=any(n.read_at is None for n in rows))


@routes.get("/notifications/<int:notification_id>/open")
def notification_open(notification_id: int) -> Response:
    """Open what a notification is about; opening it reads it."""
    access = current_access()
    with unit() as (conn, _cat):
        rows = notifications.list_for(conn, access.user_id, limit=1, only_id=notification_id)
        if not rows:
            raise NotFound("no such notification")  # someone else's is "not found" too
        notifications.mark_read(conn, access.user_id, notification_id)
        dest = target(rows[0].link)
    return redirect(dest or url_for("ui.notifications_page"))  # type: ignore[return-value]


@routes.post("/notifications/<int:notification_id>/read")
def notification_read(notification_id: int) -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        notifications.mark_read(conn, access.user_id, notification_id)
    return redirect(request.referrer and _same_site(request.referrer) or url_for("ui.notifications_page"))  # type: ignore[return-value]


@routes.post("/notifications/read-all")
def notifications_read_all() -> Response:
    access = current_access()
    with unit() as (conn, _cat):
        notifications.mark_all_read(conn, access.user_id)
    return redirect(request.referrer and _same_site(request.referrer) or url_for("ui.notifications_page"))  # type: ignore[return-value]


def _same_site(url: str) -> str | None:
    path = path_of(url)
    return safe_next(path) if path else None
