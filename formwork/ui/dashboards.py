"""Dashboard pages: each widget's aggregate as a number, an SVG chart or a table."""

from __future__ import annotations

from typing import Any

from flask import Response

from formwork.errors import NotFound
from formwork.ui.charts import bar_chart, funnel, line_chart, number_text
from formwork.ui.context import Page, make_page, render, visible_app, visible_dashboards, visible_tables
from formwork.ui.render import choice_map
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


def group_label(p: Page, app: Any, w: dict[str, Any], key: dict[str, Any]) -> str:
    """A group's key as text: choice labels, user names, link displays, ``(empty)``."""
    parts = []
    t = app.tables_by_key.get(w.get("table") or "")
    for name, v in key.items():
        if v is None:
            parts.append(p.t("empty_group"))
            continue
        if isinstance(v, dict):
            parts.append(str(v.get("name") or v.get("display") or v.get("id")))
            continue
        f = t.fields_by_key.get(name.split(":")[0]) if t is not None else None
        if f is not None and f.ftype.has_choices:
            parts.append(choice_map(f, p.locale).get(str(v), (str(v), ""))[0])
        elif isinstance(v, bool):
            parts.append(p.t("yes") if v else p.t("no"))
        else:
            parts.append(str(v))
    return " / ".join(parts)


def widget_view(p: Page, app: Any, w: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    fmt = doc.get("format")
    out: dict[str, Any] = {"key": w.get("key"), "type": w.get("type"),
                           "label": p.label(w.get("label") or doc.get("label") or w.get("key")),
                           "width": doc.get("width") or (3 if w.get("type") == "kpi" else 6)}
    if w.get("error"):
        out["error"] = p.t("widget_forbidden") if w["error"] == "forbidden" else p.t("widget_invalid")
        return out
    if w["type"] == "kpi":
        out["value"] = number_text(w.get("value"), fmt)
        return out
    metric = (w.get("metrics") or ["count"])[0]
    w = {**w, "table": doc.get("table")}
    points = [(group_label(p, app, w, g["key"]), g.get("value") if "value" in g else g.get(metric))
              for g in w.get("groups", [])]
    if w["type"] == "line":
        out["svg"] = line_chart(points, fmt)
    elif w["type"] == "funnel":
        out["svg"] = funnel(points, fmt)
    elif w["type"] in ("bar", "pie"):
        out["svg"] = bar_chart(points, fmt)
    else:
        out["table_head"] = [", ".join(w.get("group_by") or []), *(w.get("metrics") or [])]
        out["table_rows"] = [[group_label(p, app, w, g["key"]), *[number_text(g.get(m), fmt)
                                                                  for m in w.get("metrics") or []]]
                             for g in w.get("groups", [])]
    return out


@routes.get("/apps/<app_key>/dashboards/<key>")
def dashboard_page(app_key: str, key: str) -> Response:
    from formwork.runtime.aggregate import dashboard_data

    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        doc = next((d for d in app.dashboards if d["key"] == key), None)
        if doc is None:
            raise NotFound(f"no dashboard '{key[:100]}' in app '{app_key}'")
        data = dashboard_data(conn, cat, access, app, doc)
        docs = {w["key"]: w for w in doc.get("widgets", [])}
        widgets = [widget_view(p, app, w, docs.get(w["key"], {})) for w in data["widgets"]]
        return render(p, "dashboard.html", app=app, dashboard=doc, widgets=widgets, tables=visible_tables(p, app),
                      dashboards=visible_dashboards(p, app))
