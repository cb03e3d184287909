"""Global search and recently viewed records.

The search box sits in every page's top bar (``_search_box.html``; "/" or Ctrl-K focuses it, the arrow keys
walk the results, static/search.js); results come grouped by table, each group searched through the
record reader (:mod:`formwork.runtime.search`), so row and field permissions apply. Recently viewed
records are kept in a signed cookie of this browser and this user (the record page reports a view with one
small request), and are checked against the reader's rights again each time they are shown.
"""

from __future__ import annotations

from typing import Any

from flask import Response, make_response, request
from itsdangerous import BadSignature

from formwork.errors import BadRequest
from formwork.runtime import search
from formwork.ui.context import htmx, make_page, render, secret, signer
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()
RECENT_COOKIE = "fw_recent"
RECENT_MAX = 10
RECENT_DAYS = 90


def recent_items(user_id: int | None) -> list[list[Any]]:
    raw = request.cookies.get(RECENT_COOKIE)
    if not raw:
        return []
    try:
        data = signer("recent").loads(raw, max_age=RECENT_DAYS * 86400)
    except BadSignature:
        return []
    if not isinstance(data, dict) or data.get("u") != user_id or not isinstance(data.get("i"), list):
        return []
    return [x for x in data["i"] if isinstance(x, list) and len(x) == 3][:RECENT_MAX]


@routes.get("/search")
def search_page() -> Response:
    """The results page, or (for the top bar's box) the results dropdown; an empty query lists the
    recently viewed records."""
    access = current_access()
    q = (request.args.get("q") or "").strip()[:search.MAX_TEXT]
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        groups = search.search_everywhere(cat, conn, access, q, secret(), per_table=5 if htmx else 20) if q else []
        recent = search.recent_records(cat, conn, access, recent_items(access.user_id), secret()) if not q else []
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
    items = [x for x in recent_items(access.user_id) if x != item]
    items = [item, *items][:RECENT_MAX]
    resp = make_response("", 204)
    resp.set_cookie(RECENT_COOKIE, signer("recent").dumps({"u": access.user_id, "i": items}),
                    max_age=RECENT_DAYS * 86400, httponly=True, samesite="Lax", secure=request.is_secure)
    return resp
