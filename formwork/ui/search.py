"""Global search and recently viewed records.

The search box sits in every page's top bar (``_search_box.html``; "/" or Ctrl-K focuses it, the arrow keys
walk the results, static/search.js); results come grouped by table, each group searched through the
record reader (:mod:`formwork.runtime.search`), so row and field permissions apply. Recently viewed
records are kept on the server per user (a user setting, so they follow the person from the office PC to
the phone; the record page reports a view with one small request), and are checked against the reader's
rights again each time they are shown.
"""

from __future__ import annotations

from typing import Any

from flask import Response, make_response, request
from sqlalchemy import Connection

from formwork.errors import BadRequest
from formwork.runtime import search
from formwork.runtime.notifications import get_setting, set_setting
from formwork.ui.context import htmx, make_page, render, secret
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()
RECENT_SETTING = "recent_records"
RECENT_MAX = 10


def recent_items(conn: Connection, user_id: int | None) -> list[list[Any]]:
    if user_id is None:
        return []
    data = get_setting(conn, user_id, RECENT_SETTING, [])
    if not isinstance(data, list):
        return []
    return [x for x in data if isinstance(x, list) and len(x) == 3][:RECENT_MAX]


@routes.get("/search")
def search_page() -> Response:
    """The results page, or (for the top bar's box) the results dropdown; an empty query lists the
    recently viewed records."""
    access = current_access()
    q = (request.args.get("q") or "").strip()[:search.MAX_TEXT]
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        groups = search.search_everywhere(cat, conn, access, q, secret(), per_table=5 if htmx else 20) if q else []
        recent = search.recent_records(cat, conn, access, recent_items(conn, access.user_id), secret()) if not q else []
        template = "_search_results.html" if htmx else "search.html"
        return render(p, template, q=q, groups=groups, recent=recent)


@routes.post("/search/recent")
def search_recent() -> Response:
    """Remember that this user opened a record (the record page calls this once it has loaded)."""
    access = current_access()
    try:
        item = [str(request.form["app"])[:64], str(request.form["table"])[:64], int(request.form["rid"])]
    except (KeyError, ValueError):
        raise BadRequest("send app, table and rid") from None
    if access.user_id is None:
        return make_response("", 204)
    with unit() as (conn, _cat):
        items = [x for x in recent_items(conn, access.user_id) if x != item]
        set_setting(conn, access.user_id, RECENT_SETTING, [item, *items][:RECENT_MAX])
    return make_response("", 204)
