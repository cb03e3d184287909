"""The CRM's classic reports (contribution, composition, service, churn, funnel, ROI) with period and owner
filters, comparison, drill-down and export: numbers against direct SQL, pages in both languages."""
# ruff: noqa: S608 - the point is SQL written by hand over the catalog's generated names (t_<id>, f_<id>)

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from formwork.metadata.portable import load_template
from tests.crm_support import Crm, installed_crm


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    yield from installed_crm(database_url, tmp_path_factory)


PERIOD = {"period": "custom", "from": "2026-01-01", "to": "2026-06-30"}


def test_every_crm_dashboard_filters_by_period_and_owner(crm: Crm) -> None:
    def busiest(conn: Any, cat: Any, app: Any) -> int:
        o = app.table("orders")
        col = o.field("owner").column_name
        return int(conn.execute(text(f"SELECT {col} FROM {o.name} WHERE {col} IS NOT NULL GROUP BY {col} "
                                     f"ORDER BY COUNT(*) DESC, {col} LIMIT 1")).scalar())

    owner = crm.sql(busiest)
    qs = "&".join(f"{k}={v}" for k, v in {**PERIOD, "owner": owner, "compare": "previous_year"}.items())
    for d in load_template("crm")["dashboards"]:
        assert {f["type"] for f in d["filters"]} == {"period", "owner"}
        body = crm.admin.ok("GET", f"/meta/apps/crm/dashboards/{d['key']}/data?{qs}")
        assert body["compare"] == {"kind": "previous_year", "from": "2025-01-01", "to": "2025-06-30"}
        for w in body["widgets"]:
            assert "error" not in w, (d["key"], w)

    def revenue(conn: Any, cat: Any, app: Any, lo: dt.date, hi: dt.date) -> float:
        """order_total is a rollup of lines' quantity × unit price: summed here from the lines themselves."""
        o, ln = app.table("orders"), app.table("order_lines")
        c = {k: o.field(k).column_name for k in ("order_date", "status", "owner")}
        q, u, link = (ln.field(k).column_name for k in ("quantity", "unit_price", "order"))
        sql = (f"SELECT COALESCE(SUM(l.{q} * l.{u}), 0) FROM {o.name} o JOIN {ln.name} l ON l.{link} = o.id "
               f"AND l.deleted_at IS NULL WHERE o.deleted_at IS NULL "
               f"AND (o.{c['status']} <> 'cancelled' OR o.{c['status']} IS NULL) AND o.{c['owner']} = :o "
               f"AND o.{c['order_date']} BETWEEN :lo AND :hi")
        return float(conn.execute(text(sql), {"o": owner, "lo": lo, "hi": hi}).scalar())

    got = {w["key"]: w for w in crm.admin.ok("GET", f"/meta/apps/crm/dashboards/customer_analysis/data?{qs}")[
        "widgets"]}
    now = crm.sql(lambda conn, cat, app: revenue(conn, cat, app, dt.date(2026, 1, 1), dt.date(2026, 6, 30)))
    before = crm.sql(lambda conn, cat, app: revenue(conn, cat, app, dt.date(2025, 1, 1), dt.date(2025, 6, 30)))
    assert got["revenue_total"]["value"] == pytest.approx(now)
    assert got["revenue_total"]["compare"]["value"] == pytest.approx(before)
    assert now > 0


def test_crm_report_pages_drill_and_export(crm: Crm) -> None:
    import io

    from openpyxl import load_workbook

    from tests.test_ui_pages import login

    c, _csrf = login(crm.app, "admin", "admin-pass-1")
    for key in ("customer_analysis", "service_analysis", "churn_analysis", "sales_funnel"):
        html = c.get(f"/apps/crm/dashboards/{key}?period=last_quarter&compare=previous_period").get_data(as_text=True)
        assert 'name="period"' in html and 'name="owner"' in html and "widget-error" not in html, key
        links = re.findall(r'href="(/apps/crm/dashboards/[a-z_]+/drill\?[^"]+)"', html)
        assert links, key
        resp = c.get(links[0].replace("&amp;", "&"))
        assert resp.status_code == 302 and c.get(resp.headers["Location"]).status_code == 200
    resp = c.get("/apps/crm/dashboards/customer_analysis/export?w=top_customers&period=this_year")
    rows = list(load_workbook(io.BytesIO(resp.data)).active.iter_rows(values_only=True))
    assert rows[0] == ("Customer", "Sum of Total", "Count")
