"""The REST API under /api/v1: thin views, one module per resource; shapes follow shared/API.md.

Each resource module (auth, meta, records, transfer, reports, pool, admin, automations, openapi) declares
``routes = RouteSet()``; importing it registers nothing. ``create_app`` passes its route table to
:func:`make_blueprint`, which builds a fresh ``api`` blueprint with the request hooks below.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, Response, request

from formwork.api.common import ok
from formwork.errors import NotFound
from formwork.runtime.tabular import TabularError
from formwork.web import MAX_INPUT_INT, RouteSet, check_input

URL_PREFIX = "/api/v1"


def refuse_unstorable_args() -> None:
    """Query arguments and URL parts that no column can hold or compare are a 400/404 here, not a
    database error later: NUL characters and ids beyond 2**62."""
    for k, v in request.args.items(multi=True):
        check_input([k, v], f"the query argument '{k[:40]}'")
    for k, v in (request.view_args or {}).items():
        if isinstance(v, int) and not 0 <= v <= MAX_INPUT_INT:
            raise NotFound(f"no such {k.removesuffix('_id')}")
        if isinstance(v, str):
            if k.endswith("_id") and v.isascii() and v.isdigit() and (len(v) > 19 or int(v) > MAX_INPUT_INT):
                raise NotFound(f"no such {k.removesuffix('_id')}")
            check_input(v, "the address")


def nosniff(resp: Response) -> Response:
    """JSON and downloads are never to be sniffed into HTML by a browser."""
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


def tabular_error(err: TabularError) -> Response:
    """A spreadsheet that can't be read or written is the client's file problem: 400."""
    return ok({"error": {"code": "bad_request", "message": err.message}}, 400)


def make_blueprint(route_sets: Iterable[RouteSet]) -> Blueprint:
    """A new ``api`` blueprint holding the given routes (one per app: a blueprint can't be extended once
    registered, and tests build several apps)."""
    bp = Blueprint("api", __name__)
    bp.before_request(refuse_unstorable_args)
    bp.after_request(nosniff)
    bp.register_error_handler(TabularError, tabular_error)
    for routes in route_sets:
        routes.register(bp)
    return bp
