"""Reports: grouped metrics over a table's records and the computed data of a dashboard."""

from __future__ import annotations

from flask import Response, request

from formwork.api.common import ok, parse_filter_arg, requested_view, visible_app
from formwork.errors import NotFound, reject_unknown_args
from formwork.runtime.aggregate import Aggregator
from formwork.runtime.dashboards import Selection, dashboard_data
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()
AGGREGATE_ARGS = {"group_by", "metrics", "filter", "view", "search", "sort", "limit"}
DASHBOARD_ARGS = {"period", "from", "to", "compare", "owner", "team"}


@routes.get("/data/<app_key>/<table_key>/aggregate")
def aggregate_records(app_key: str, table_key: str) -> Response:
    """Grouped metrics (count, sum, avg...) over the records the caller may read."""
    access = current_access()
    reject_unknown_args(request.args, AGGREGATE_ARGS)
    with unit() as (conn, cat):
        t = cat.table(app_key, table_key)
        groups = Aggregator(conn, cat, access).run(
            t, request.args.get("group_by"), request.args.get("metrics"), parse_filter_arg(),
            requested_view(t), request.args.get("search"), request.args.get("sort"),
            request.args.get("limit"))
    return ok({"groups": groups})


@routes.get("/meta/apps/<app_key>/dashboards/<key>/data")
def dashboard_widgets(app_key: str, key: str) -> Response:
    """Every widget's computed data under the viewer's permissions and the dashboard's filters
    (``period``/``from``/``to``, ``compare``, ``owner``, ``team``, ``f_<filter key>``)."""
    access = current_access()
    with unit() as (conn, cat):
        app = visible_app(cat, access, app_key)
        doc = next((d for d in app.dashboards if d["key"] == key), None)
        if doc is None:
            raise NotFound(f"no dashboard '{key[:100]}' in app '{app_key}'")
        fields = {f"f_{f['key']}" for f in doc.get("filters") or [] if f.get("type") == "field"}
        reject_unknown_args(request.args, DASHBOARD_ARGS | fields)
        return ok(dashboard_data(conn, cat, access, app, doc, Selection.parse(request.args, doc)))
