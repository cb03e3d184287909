"""Dashboard pages: filters that apply to every widget, ECharts charts, KPIs with comparisons, pivots in
words, drill-down into the records behind a number, and a widget's data as XLSX."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlencode

from flask import Response, redirect, request, send_file, url_for
from sqlalchemy import select

from formwork import db
from formwork.errors import BadRequest, NotFound
from formwork.metadata.catalog import AppDef, TableDef
from formwork.runtime.dashboards import PERIODS, DashboardRun, Selection, check_view, filter_field, shared_with
from formwork.ui.charts import CHARTS, chart_spec, field_label, key_text, metric_label, number_text
from formwork.ui.context import Page, htmx, make_page, render, visible_app, visible_dashboards, visible_tables
from formwork.ui.render import choice_map
from formwork.web import RouteSet, current_access, unit

routes = RouteSet()


def find_dashboard(p: Page, app: AppDef, key: str) -> dict[str, Any]:
    doc = next((d for d in app.dashboards if d["key"] == key), None)
    if doc is None or not p.access.can_view_dashboards() or not shared_with(p.access, doc):
        raise NotFound(f"no dashboard '{key[:100]}' in app '{app.key}'")
    return doc


def widget_doc(doc: dict[str, Any], key: str) -> dict[str, Any]:
    w = next((x for x in doc.get("widgets", []) if x["key"] == key), None)
    if w is None:
        raise NotFound(f"no widget '{key[:100]}'")
    return w


def plain_key(key: dict[str, Any]) -> str:
    """A group's key for a drill link: users and links by id."""
    return json.dumps({k: (v.get("id") if isinstance(v, dict) else v) for k, v in key.items()}, sort_keys=True)


class DashboardView:
    """Turns a DashboardRun's data into what dashboard.html shows, in the reader's language."""

    def __init__(self, p: Page, app: AppDef, doc: dict[str, Any], sel: Selection) -> None:
        self.p, self.app, self.doc, self.sel = p, app, doc, sel
        self.run = DashboardRun(p.conn, p.cat, p.access, app, doc, sel)
        self.qs = sel.params()

    def drill_url(self, w: dict[str, Any], key: dict[str, Any] | None) -> str:
        params = [("w", w["key"]), *self.qs] + ([("key", plain_key(key))] if key is not None else [])
        return url_for("ui.dashboard_drill", app_key=self.app.key, key=self.doc["key"]) + "?" + urlencode(params)

    def widgets(self) -> list[dict[str, Any]]:
        return [self.widget(w) for w in self.doc.get("widgets", [])]

    def widget(self, w: dict[str, Any]) -> dict[str, Any]:
        p = self.p
        data = self.run.widget(w)
        t = self.app.tables_by_key.get(w.get("table") or "")
        fmt = w.get("format")
        out: dict[str, Any] = {
            "key": w["key"], "type": w["type"], "label": p.label(w.get("label") or w["key"]),
            "width": w.get("width") or (3 if w["type"] == "kpi" else 6), "height": w.get("height") or 2,
            "export": url_for("ui.dashboard_export", app_key=self.app.key, key=self.doc["key"]) + "?" + urlencode(
                [("w", w["key"]), *self.qs])}
        if data.get("error"):
            err = data["error"]
            out["error"] = p.t("widget_forbidden") if err == "forbidden" else (
                p.t("dash_table_gone", table=w.get("table", "")) if err == "not_found" else
                p.t("dash_widget_invalid", reason=data.get("message", "")))
            return out
        period = [f for f in self.doc.get("filters") or [] if f.get("type") == "period"]
        if period and self.run.rng is not None and period[0]["key"] not in data.get("filtered_by", []):
            out["note"] = p.t("dash_not_by_period")
        if w["type"] == "kpi":
            out["value"] = number_text(data.get("value"), fmt)
            out["drill"] = self.drill_url(w, None)
            cmp = data.get("compare")
            if cmp is not None:
                out["compare"] = self.delta(data.get("value"), cmp.get("value"), cmp["kind"], fmt)
            return out
        groups = data.get("groups") or []
        drills = [self.drill_url(w, g["key"]) for g in groups] if w["type"] != "gauge" else [self.drill_url(w, None)]
        if w["type"] in CHARTS:
            out["chart"] = chart_spec(p, t, w, data, drills, fmt)
            if w["type"] == "gauge" and data.get("compare"):
                out["compare"] = self.delta(data.get("value"), data["compare"].get("value"),
                                            data["compare"]["kind"], fmt)
            if not groups and w["type"] != "gauge":
                out["empty"] = p.t("dash_no_data")
            return out
        if w["type"] == "pivot" and len(data.get("group_by") or []) == 2:
            out["pivot"] = self.pivot(t, data, drills, fmt)
            return out
        group_by = data.get("group_by") or []
        metrics = ["value"] if (w.get("ratio") or w.get("ratio_of")) else data.get("metrics") or []
        vfmt = "percent" if metrics == ["value"] else fmt
        out["table"] = {
            "nkeys": len(group_by),
            "head": [field_label(p, t, s) for s in group_by] + [
                p.t("dash_ratio") if m == "value" else metric_label(p, t, m) for m in metrics],
            "rows": [{"keys": [key_text(p, t, s, g["key"].get(s.split(":")[0])) for s in group_by],
                      "values": [number_text(g.get(m), vfmt if m == "value" or not m.startswith("count") else None)
                                 for m in metrics], "drill": drills[i]} for i, g in enumerate(groups)]}
        return out

    def pivot(self, t: TableDef | None, data: dict[str, Any], drills: list[str], fmt: str | None) -> dict[str, Any]:
        p = self.p
        g0, g1 = data["group_by"]
        metrics = data.get("metrics") or ["count"]
        rows: dict[str, dict[str, Any]] = {}
        cols: dict[str, None] = {}
        for i, g in enumerate(data.get("groups") or []):
            r = key_text(p, t, g0, g["key"].get(g0.split(":")[0]))
            c = key_text(p, t, g1, g["key"].get(g1.split(":")[0]))
            cols.setdefault(c)
            rows.setdefault(r, {})[c] = (g, drills[i])
        head = [(c, metric_label(p, t, m), m) for c in cols for m in metrics]
        body = []
        for r, cells in rows.items():
            line = []
            for c, _, m in head:
                g, link = cells.get(c, (None, None))
                line.append({"text": number_text(g.get(m), None if m.startswith("count") else fmt) if g else "",
                             "drill": link})
            body.append({"label": r, "cells": line})
        return {"corner": f"{field_label(p, t, g0)} \\ {field_label(p, t, g1)}", "cols": list(cols),
                "metrics": [metric_label(p, t, m) for m in metrics], "head": head, "rows": body}

    def delta(self, now: Any, before: Any, kind: str, fmt: str | None) -> dict[str, Any]:
        p = self.p
        out = {"label": p.t(f"dash_cmp_{kind}"), "before": number_text(before, fmt), "dir": "flat", "text": "—"}
        if isinstance(now, int | float) and isinstance(before, int | float) and before:
            change = (now - before) / abs(before)
            out["text"] = ("+" if change > 0 else "") + f"{change * 100:.1f}%"
            out["dir"] = "up" if change > 0 else "down" if change < 0 else "flat"
        return out

    # --- the filter bar ------------------------------------------------------------------------
    def filters(self) -> list[dict[str, Any]]:
        p = self.p
        out = []
        for flt in self.doc.get("filters") or []:
            typ = flt.get("type")
            item: dict[str, Any] = {"key": flt["key"], "type": typ}
            if typ == "period":
                item["label"] = p.label(flt.get("label")) if flt.get("label") else p.t("dash_period")
                item["presets"] = [("all", p.t("dash_p_all"))] + [(x, p.t(f"dash_p_{x}")) for x in PERIODS] + [
                    ("custom", p.t("dash_p_custom"))]
            elif typ == "owner":
                item["label"] = p.label(flt.get("label")) if flt.get("label") else p.t("dash_owner")
                u = db.users.c
                item["users"] = [(r.id, r.name) for r in p.conn.execute(
                    select(u.id, u.name).where(u.active.is_(True)).order_by(u.name))]
                item["teams"] = [(r.id, r.name) for r in p.conn.execute(
                    select(db.teams.c.id, db.teams.c.name).order_by(db.teams.c.name))]
            else:
                f, t = self._field_of(flt)
                if f is None or t is None or f.key in p.access.unreadable_fields(p.cat, t):
                    continue
                item["label"] = p.label(flt.get("label")) if flt.get("label") else p.label(f.label)
                item["value"] = self.sel.values.get(flt["key"], "")
                if f.ftype.has_choices:
                    item["choices"] = [(v, lab) for v, (lab, _) in choice_map(f, p.locale).items()]
                elif f.ftype.value_kind(f, p.cat) == "bool":
                    item["choices"] = [("true", p.t("yes")), ("false", p.t("no"))]
            out.append(item)
        return out

    def _field_of(self, flt: dict[str, Any]) -> tuple[Any, TableDef | None]:
        for w in self.doc.get("widgets", []):
            t = self.app.tables_by_key.get(w.get("table") or "")
            if t is not None and (key := filter_field(flt, w, t)):
                return t.fields_by_key[key], t
        return None, None


def selection(doc: dict[str, Any]) -> tuple[Selection, str | None]:
    """The viewer's choice from the URL; a bad one is reported on the filter bar, never as an error page."""
    try:
        return Selection.parse(request.args, doc), None
    except BadRequest as e:
        return Selection.parse({}, doc), e.message


@routes.get("/apps/<app_key>/dashboards/<key>")
def dashboard_page(app_key: str, key: str) -> Response:
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        doc = find_dashboard(p, app, key)
        check_view(access, doc)
        sel, problem = selection(doc)
        view = DashboardView(p, app, doc, sel)
        ctx: dict[str, Any] = {
               "app": app, "dashboard": doc, "widgets": view.widgets(), "filters": view.filters(), "sel": sel,
               "problem": p.t("dash_bad_filter") if problem else None, "tables": visible_tables(p, app),
               "dashboards": visible_dashboards(p, app), "compares": [("", p.t("dash_cmp_none")), *[
                   (c, p.t(f"dash_cmp_{c}")) for c in ("previous_period", "previous_year")]],
               "period_text": period_text(p, view.run), "can_edit": access.can_build(),
               "has_period": any(f.get("type") == "period" for f in doc.get("filters") or [])}
        resp = render(p, "_dashboard_body.html" if htmx and htmx.target == "dash-body" else "dashboard.html", **ctx)
        # the same URL answers a whole page or (to htmx) the widgets only: caches must keep them apart, or
        # the back button shows a bare fragment
        resp.headers["Vary"] = "HX-Request, HX-Target"
        resp.headers["Cache-Control"] = "no-store"
        return resp


def period_text(p: Page, run: DashboardRun) -> str:
    if run.rng is None:
        return ""
    text = p.t("dash_period_is", start=run.rng[0].isoformat(), end=run.rng[1].isoformat())
    if run.prev is not None:
        text += " · " + p.t("dash_compared_with", start=run.prev[0].isoformat(), end=run.prev[1].isoformat())
    return text


def grid_params(tree: Any) -> list[tuple[str, str]]:
    """A filter tree as the table page's filter rows (field, operator, value); what the rows can't say
    (or / not groups, relative dates) goes along as one ``filter`` parameter."""
    leaves = tree.get("and") if isinstance(tree, dict) and "and" in tree else [tree] if tree else []
    out: list[tuple[str, str]] = []
    rest: list[Any] = []
    stack: list[Any] = list(leaves or [])
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict) and "and" in node:
            stack[:0] = node["and"]
            continue
        if not isinstance(node, dict) or "field" not in node or isinstance(node.get("value"), dict) or (
                isinstance(node.get("value"), list) and any(isinstance(v, dict | list) for v in node["value"])):
            rest.append(node)
            continue
        v = node.get("value")
        raw = ",".join(str(x) for x in v) if isinstance(v, list) else (
            ("true" if v else "false") if isinstance(v, bool) else "" if v is None else str(v))
        out += [("ff", node["field"]), ("fo", node["op"]), ("fv", raw)]
    if rest:
        out.append(("filter", json.dumps(rest[0] if len(rest) == 1 else {"and": rest}, separators=(",", ":"))))
    return out


@routes.get("/apps/<app_key>/dashboards/<key>/drill")
def dashboard_drill(app_key: str, key: str) -> Response:
    """The records behind one bar, slice, cell or KPI, opened as the table's filtered grid."""
    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        doc = find_dashboard(p, app, key)
        check_view(access, doc)
        w = widget_doc(doc, request.args.get("w") or "")
        t = app.tables_by_key.get(w["table"])
        if t is None or not access.can_see_table(cat, t):
            raise NotFound(f"no table '{w['table']}'")
        sel, _ = selection(doc)
        try:
            gkey = json.loads(request.args.get("key") or "{}")
        except ValueError:
            raise BadRequest("key is a JSON object") from None
        if not isinstance(gkey, dict):
            raise BadRequest("key is a JSON object")
        tree = DashboardRun(conn, cat, access, app, doc, sel).group_tree(w, t, gkey)
        target = url_for("ui.table_page", app_key=app.key, table_key=t.key)
        params = grid_params(tree)
        return redirect(target + ("?" + urlencode(params) if params else ""))  # type: ignore[return-value]


@routes.get("/apps/<app_key>/dashboards/<key>/export")
def dashboard_export(app_key: str, key: str) -> Response:
    """One widget's numbers as an XLSX sheet, under the same filters as the page."""
    from openpyxl import Workbook

    access = current_access()
    with unit() as (conn, cat):
        p = make_page(conn, cat, access)
        app = visible_app(p, app_key)
        doc = find_dashboard(p, app, key)
        check_view(access, doc)
        w = widget_doc(doc, request.args.get("w") or "")
        sel, _ = selection(doc)
        data = DashboardRun(conn, cat, access, app, doc, sel).widget(w)
        t = app.tables_by_key.get(w["table"])
        wb = Workbook()
        ws = wb.active
        assert ws is not None
        ws.title = p.label(w.get("label") or w["key"])[:31].replace("/", "-") or "data"
        if data.get("error"):
            ws.append([p.t("widget_forbidden") if data["error"] == "forbidden" else p.t("widget_invalid")])
        elif "groups" in data:
            group_by = data.get("group_by") or []
            metrics = data.get("metrics") or []
            extra = ["value"] if (w.get("ratio") or w.get("ratio_of")) else []
            ws.append([field_label(p, t, s) for s in group_by] + [metric_label(p, t, m) for m in metrics] +
                      [p.t("dash_ratio") for _ in extra])
            for g in data["groups"]:
                ws.append([key_text(p, t, s, g["key"].get(s.split(":")[0])) for s in group_by] +
                          [g.get(m) for m in metrics + extra])
        else:
            ws.append([p.label(w.get("label") or w["key"])])
            ws.append([data.get("value")])
        buf = io.BytesIO()
        wb.save(buf)
        buf.seek(0)
        name = f"{doc['key']}-{w['key']}.xlsx"
        return send_file(buf, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                         as_attachment=True, download_name=name)
