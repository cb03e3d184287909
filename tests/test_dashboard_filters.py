"""Dashboard filters, comparison, drill-down, export, sharing and bad widgets: numbers against hand-written
SQL on the same rows (both databases), pages in both languages."""
# ruff: noqa: S608 - the point is SQL written by hand over the catalog's generated names (t_<id>, f_<id>)

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from formwork.runtime.dashboards import bucket_range, preset_range, shifted
from tests.helpers import Api, db_snapshot
from tests.test_aggregate import build_sales, make_user_client
from tests.test_dashboards import Sql
from tests.test_ui_pages import login

WIDGETS: list[dict[str, Any]] = [
    {"key": "total", "label": {"en": "Order amount", "zh-CN": "订单金额"}, "type": "kpi", "table": "deals",
     "metrics": ["sum:amount"], "format": "currency"},
    {"key": "n", "type": "kpi", "table": "deals"},
    {"key": "by_month", "label": {"en": "Amount by month and owner", "zh-CN": "按月和负责人的金额"},
     "type": "stacked_bar", "table": "deals", "group_by": ["close_date:month", "owner"], "metrics": ["sum:amount"],
     "format": "currency"},
    {"key": "trend", "type": "line", "table": "deals", "group_by": ["close_date:month"], "metrics": ["count"]},
    {"key": "stages", "type": "pivot", "table": "deals", "group_by": ["owner", "stage"], "metrics": ["count"]},
    {"key": "per_customer", "type": "table", "table": "deals", "group_by": ["customer"],
     "ratio_of": ["sum:amount", "count"], "metrics": ["sum:amount"]},
    {"key": "gauge", "type": "gauge", "table": "deals", "metrics": ["count"], "goal": 10},
    {"key": "customers", "type": "kpi", "table": "customers"},
]
FILTERS = [{"key": "period", "type": "period", "field": "close_date"},
           {"key": "owner", "type": "owner", "field": "owner"},
           {"key": "stage", "type": "field", "fields": {"deals": "stage"}}]


@pytest.fixture
def sales(admin: Api, app: Any) -> dict[str, Any]:
    ids = build_sales(admin, app)
    admin.ok("POST", "/meta/apps/sales/dashboards", {"key": "board", "label": {"en": "Board", "zh-CN": "看板"},
                                                     "filters": FILTERS, "widgets": WIDGETS})
    return ids


def data(client: Api, **params: Any) -> dict[str, dict[str, Any]]:
    body = client.ok("GET", "/meta/apps/sales/dashboards/board/data?" + urlencode(params))
    return {w["key"]: w for w in body["widgets"]}


def test_period_owner_and_field_filters_match_sql(admin: Api, app: Any, backend: str, sales: dict[str, Any]) -> None:
    sql = Sql(app, backend)
    (alice,) = sql.rows("SELECT id FROM fw_user WHERE username = 'alice'")
    cases = [
        ({"period": "custom", "from": "2026-01-01", "to": "2026-03-31"},
         "d.{close_date} BETWEEN :lo AND :hi", {"lo": dt.date(2026, 1, 1), "hi": dt.date(2026, 3, 31)}),
        ({"period": "custom", "from": "2026-01-01", "to": "2026-12-31", "owner": alice[0]},
         "d.{close_date} BETWEEN :lo AND :hi AND d.{owner} = :o",
         {"lo": dt.date(2026, 1, 1), "hi": dt.date(2026, 12, 31), "o": alice[0]}),
        ({"f_stage": "won"}, "d.{stage} = 'won'", {}),
        ({}, "1 = 1", {}),
    ]
    for params, where, p in cases:
        got = data(admin, **params)
        live = f"d.deleted_at IS NULL AND {where}"
        (total,) = sql.rows(f"SELECT COALESCE(SUM(d.{{amount}}), 0), COUNT(*) FROM {{D}} d WHERE {live}", **p)
        assert got["total"]["value"] == pytest.approx(float(total[0])), params
        assert got["n"]["value"] == total[1] == got["gauge"]["value"]
        assert got["gauge"]["goal"] == 10
        rows = sql.rows(f"SELECT {sql.year_month('d.{close_date}')}, u.name, COALESCE(SUM(d.{{amount}}), 0) "
                        f"FROM {{D}} d LEFT JOIN fw_user u ON u.id = d.{{owner}} WHERE {live} GROUP BY 1, 2, 3", **p)
        assert {(g["key"]["close_date"], (g["key"]["owner"] or {}).get("name")): pytest.approx(g["sum:amount"])
                for g in got["by_month"]["groups"]} == \
            {(f"{y:04d}-{m:02d}" if y else None, n): float(s) for y, m, n, s in rows}
        per = sql.rows(f"SELECT d.{{customer}}, COALESCE(SUM(d.{{amount}}), 0), COUNT(*) FROM {{D}} d "
                       f"WHERE {live} GROUP BY d.{{customer}}", **p)
        assert {(g["key"]["customer"] or {}).get("id"): g["value"] for g in got["per_customer"]["groups"]} == \
            {c: pytest.approx(float(s) / n) for c, s, n in per}
        # a widget on another table ignores filters its table has no field for
        assert got["customers"]["value"] == 4 and got["customers"]["filtered_by"] == []
        assert "period" in got["total"]["filtered_by"]


def test_comparison_with_the_previous_period_and_last_year(admin: Api, app: Any, backend: str,
                                                           sales: dict[str, Any]) -> None:
    sql = Sql(app, backend)
    got = data(admin, period="custom", **{"from": "2027-01-01", "to": "2027-01-31"}, compare="previous_year")
    assert got["total"]["compare"]["from"] == "2026-01-01" and got["total"]["compare"]["to"] == "2026-01-31"
    (jan,) = sql.rows("SELECT COALESCE(SUM(d.{amount}), 0) FROM {D} d WHERE d.deleted_at IS NULL "
                      "AND d.{close_date} BETWEEN :lo AND :hi", lo=dt.date(2026, 1, 1), hi=dt.date(2026, 1, 31))
    assert got["total"]["compare"]["value"] == pytest.approx(float(jan[0]))
    assert got["total"]["value"] == pytest.approx(777.77)
    assert [g["key"]["close_date"] for g in got["trend"]["compare"]["groups"]] == ["2026-01"]
    got = data(admin, period="custom", **{"from": "2026-02-01", "to": "2026-03-31"}, compare="previous_period")
    assert (got["n"]["compare"]["from"], got["n"]["compare"]["to"]) == ("2025-12-01", "2026-01-31")
    assert got["n"]["compare"]["value"] == 3 and got["n"]["value"] == 2
    assert "compare" not in got["stages"]  # comparisons are for KPIs, gauges and lines


def test_periods_and_buckets() -> None:
    today = dt.date(2026, 5, 17)
    assert preset_range("last_quarter", today) == (dt.date(2026, 1, 1), dt.date(2026, 3, 31))
    assert preset_range("last_7_days", today) == (dt.date(2026, 5, 11), today)
    assert shifted(dt.date(2024, 2, 1), dt.date(2024, 2, 29), "previous_year") == (dt.date(2023, 2, 1),
                                                                                  dt.date(2023, 2, 28))
    assert shifted(dt.date(2026, 1, 1), dt.date(2026, 3, 31), "previous_period") == (dt.date(2025, 10, 1),
                                                                                    dt.date(2025, 12, 31))
    assert shifted(dt.date(2026, 5, 11), dt.date(2026, 5, 17), "previous_period") == (dt.date(2026, 5, 4),
                                                                                    dt.date(2026, 5, 10))
    assert bucket_range("week", "2026-W02") == (dt.date(2026, 1, 5), dt.date(2026, 1, 11))
    assert bucket_range("quarter", "2026-Q4") == (dt.date(2026, 10, 1), dt.date(2026, 12, 31))


def test_bad_selection_is_a_clear_400_on_the_api(admin: Api, sales: dict[str, Any]) -> None:
    for params in ({"period": "someday"}, {"compare": "tomorrow"}, {"period": "custom", "from": "31/01/2026"},
                   {"owner": "bob"}, {"nope": "1"}):
        status, err = admin.get("/meta/apps/sales/dashboards/board/data?" + urlencode(params))
        assert status == 400, (params, err)


def grid_ids(client: Any, url: str) -> set[int]:
    resp = client.get(url)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return {int(x) for x in re.findall(r'<tr data-id="(\d+)"', resp.get_data(as_text=True))}


def test_drill_down_opens_exactly_the_records_behind_each_number(admin: Api, app: Any,
                                                                sales: dict[str, Any]) -> None:
    client, _ = login(app, "admin", "admin-pass-1")
    params = {"period": "custom", "from": "2026-01-01", "to": "2026-12-31"}
    page = client.get("/apps/sales/dashboards/board?" + urlencode(params)).get_data(as_text=True)
    page = page.replace("&amp;", "&").replace("\\u0026", "&")  # in HTML links and in the charts' JSON
    links = set(re.findall(r'(/apps/sales/dashboards/board/drill\?[^"\s]+)', page))
    assert links
    got = data(admin, **params)
    opened = 0
    for link in links:
        q = dict(parse_qsl(urlsplit(link).query))
        resp = client.get(link)
        assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
        target = resp.headers["Location"]
        assert target.startswith("/apps/sales/deals") or target.startswith("/apps/sales/customers")
        ids = grid_ids(client, target)
        w = got[q["w"]]
        if "key" not in q:
            if w["type"] == "kpi" and w["key"] == "n":
                assert len(ids) == w["value"]
            continue
        import json

        key = json.loads(q["key"])
        group = next(g for g in w["groups"] if {k: (v.get("id") if isinstance(v, dict) else v)
                                                for k, v in g["key"].items()} == key)
        if "count" in group:
            assert len(ids) == group["count"], (link, target)
            opened += 1
    assert opened >= 3


def test_export_a_widget_to_xlsx_in_both_languages(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    from openpyxl import load_workbook

    client, csrf = login(app, "admin", "admin-pass-1")
    for locale, head in (("en", ["Close date (month)", "Owner", "Sum of Amount"]),
                         ("zh-CN", ["Close date（按月）", "Owner", "Amount合计"])):
        client.post("/locale", data={"locale": locale, "csrf_token": csrf})
        resp = client.get("/apps/sales/dashboards/board/export?w=by_month&period=custom&from=2026-01-01&to=2026-01-31")
        assert resp.status_code == 200 and resp.mimetype.endswith("spreadsheetml.sheet")
        rows = list(load_workbook(io.BytesIO(resp.data)).active.iter_rows(values_only=True))
        assert list(rows[0]) == head
        assert [(r[0], r[1], round(float(r[2]), 2)) for r in rows[1:]] == [
            ("Jan 2026" if locale == "en" else "2026年1月", "Alice", 1500.75)]


def test_pages_in_both_languages_words_not_keys(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    client, csrf = login(app, "admin", "admin-pass-1")
    page = client.get("/apps/sales/dashboards/board?period=this_year&compare=previous_year").get_data(as_text=True)
    assert "Amount by month and owner" in page and 'data-chart=\'{' in page
    assert "Owner \\ Stage" in page and "owner, stage" not in page and "sum:amount" not in page.split("data-chart=")[0]
    assert "Same period last year" in page and "<script>" not in page
    client.post("/locale", data={"locale": "zh-CN", "csrf_token": csrf})
    page = client.get("/apps/sales/dashboards/board?period=last_quarter").get_data(as_text=True)
    assert "按月和负责人的金额" in page and "上季度" in page and "订单金额" in page
    # an htmx filter change swaps the body only, with the charts' data in it
    frag = client.get("/apps/sales/dashboards/board?period=all", headers={"HX-Request": "true",
                                                                          "HX-Target": "dash-body"})
    text = frag.get_data(as_text=True)
    assert frag.status_code == 200 and "data-chart=" in text and "<html" not in text
    # a bad filter is said on the page, never an error page
    bad = client.get("/apps/sales/dashboards/board?period=someday")
    assert bad.status_code == 200 and "无法识别该筛选条件" in bad.get_data(as_text=True)


def test_bad_widgets_say_why_alone(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    admin.ok("PATCH", "/meta/apps/sales/dashboards/board", {"widgets": [*WIDGETS, {
        "key": "bad", "type": "bar", "table": "deals", "group_by": ["stage"], "metrics": ["sum:qty"]}]})
    admin.ok("DELETE", "/meta/apps/sales/tables/deals/fields/customer_level")
    admin.ok("DELETE", "/meta/apps/sales/tables/customers")
    admin.ok("DELETE", "/meta/apps/sales/tables/deals/fields/qty")
    before = db_snapshot(app)
    client, csrf = login(app, "admin", "admin-pass-1")
    page = client.get("/apps/sales/dashboards/board").get_data(as_text=True)
    assert "(customers) was deleted or moved to the trash" in page
    assert "This widget no longer fits its table" in page and "qty" in page
    assert '">8</a>' in page  # the other widgets still show their numbers
    client.post("/locale", data={"locale": "zh-CN", "csrf_token": csrf})
    page = client.get("/apps/sales/dashboards/board").get_data(as_text=True)
    assert "已被删除或移入回收站" in page and "该组件与数据表不再匹配" in page
    assert db_snapshot(app) == before
    # the builder lists them too, and saving one that doesn't fit is refused next to its input
    edit = client.get("/apps/sales/dashboards/board/edit").get_data(as_text=True)
    assert "其数据表已被删除或移入回收站" in edit


def test_hidden_fields_and_sharing(app: Any, admin: Api, sales: dict[str, Any]) -> None:
    bob, _ = make_user_client(app, "bob")  # may not see amounts
    got = data(bob)
    assert got["total"]["error"] == "forbidden" and got["n"]["value"] == 8
    admin.ok("PATCH", "/meta/apps/sales/dashboards/board", {"roles": ["rep_alice"]})
    status, err = bob.get("/meta/apps/sales/dashboards/board/data")
    assert status == 403 and "not shared" in err["error"]["message"]
    # nor is it listed or readable as a document, alone or inside the app
    assert bob.ok("GET", "/meta/apps/sales/dashboards")["dashboards"] == []
    assert bob.get("/meta/apps/sales/dashboards/board")[0] == 404
    assert bob.ok("GET", "/meta/apps/sales")["dashboards"] == []
    alice, _ = make_user_client(app, "alice")
    assert alice.get("/meta/apps/sales/dashboards/board/data")[0] == 200
    assert [d["key"] for d in alice.ok("GET", "/meta/apps/sales/dashboards")["dashboards"]] == ["board"]
    assert alice.ok("GET", "/meta/apps/sales/dashboards/board")["roles"] == ["rep_alice"]
    status, err = admin.patch("/meta/apps/sales/dashboards/board", {"roles": ["nobody"]})
    assert status == 422 and "/roles/0" in err["error"]["details"]


def test_builder_creates_and_edits_a_dashboard(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    client, csrf = login(app, "admin", "admin-pass-1")
    assert "Name (English)" in client.get("/apps/sales/dashboards/new").get_data(as_text=True)
    resp = client.post("/apps/sales/dashboards/new", data={"csrf_token": csrf, "label": "", "label_zh": ""})
    assert resp.status_code == 422 and "Give the dashboard a name." in resp.get_data(as_text=True)
    resp = client.post("/apps/sales/dashboards/new", data={"csrf_token": csrf, "label": "Sales review",
                                                          "label_zh": "销售复盘"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/dashboards/sales_review/edit")
    form = {"csrf_token": csrf, "label": "Order amount by month and owner", "table": "deals", "type": "stacked_bar",
            "g1": "close_date", "b1": "month", "g2": "owner", "fn": "sum", "field": "name", "format": "currency",
            "width": "12", "height": "2"}
    before = db_snapshot(app)
    resp = client.post("/apps/sales/dashboards/sales_review/widgets/new", data=form)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "This metric doesn&#39;t fit the field&#39;s type" in text
    assert 'value="Order amount by month and owner"' in text  # nothing typed is lost
    assert db_snapshot(app) == before
    resp = client.post("/apps/sales/dashboards/sales_review/widgets/new", data={**form, "field": "amount"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    doc = admin.ok("GET", "/meta/apps/sales/dashboards/sales_review")
    w = doc["widgets"][0]
    assert (w["type"], w["group_by"], w["metrics"], w["width"]) == (
        "stacked_bar", ["close_date:month", "owner"], ["sum:amount"], 12)
    key = w["key"]
    assert client.post(f"/apps/sales/dashboards/sales_review/widgets/{key}/duplicate",
                       data={"csrf_token": csrf}).status_code == 302
    keys = [x["key"] for x in admin.ok("GET", "/meta/apps/sales/dashboards/sales_review")["widgets"]]
    assert len(keys) == 2
    assert client.post("/apps/sales/dashboards/sales_review/order",
                       data={"csrf_token": csrf, "order": keys[::-1]}).status_code == 302
    assert client.post(f"/apps/sales/dashboards/sales_review/widgets/{keys[1]}/size",
                       data={"csrf_token": csrf, "width": "6"}).status_code == 302
    ws = admin.ok("GET", "/meta/apps/sales/dashboards/sales_review")["widgets"]
    assert [x["key"] for x in ws] == keys[::-1] and ws[0]["width"] == 6
    assert client.post(f"/apps/sales/dashboards/sales_review/widgets/{keys[1]}/remove",
                       data={"csrf_token": csrf}).status_code == 302
    resp = client.post("/apps/sales/dashboards/sales_review/settings", data={
        "csrf_token": csrf, "label": "Sales review", "label_zh": "销售复盘", "date_deals": "close_date",
        "owner_deals": "owner", "default_period": "this_year", "every": "weekly", "hour": "7",
        "send_roles": ["rep_alice"], "field_filters": ["deals.stage"]})
    assert resp.status_code == 302
    doc = admin.ok("GET", "/meta/apps/sales/dashboards/sales_review")
    assert doc["filters"][0] == {"key": "period", "type": "period", "fields": {"deals": "close_date"},
                                 "default": "this_year"}
    assert doc["filters"][2] == {"key": "stage", "type": "field", "fields": {"deals": "stage"}, "label": "Stage"}
    assert doc["schedules"] == [{"every": "weekly", "users": [], "roles": ["rep_alice"], "hour": 7, "weekday": 0}]
    page = client.get("/apps/sales/dashboards/sales_review").get_data(as_text=True)
    assert 'name="period"' in page and 'name="owner"' in page and "Order amount by month and owner" in page
    assert 'name="f_stage"' in page and 'aria-label="Stage"' in page
    # a widget's filter from the visual condition builder; a bad value is said next to its input
    kpi = {"csrf_token": csrf, "label": "Won", "table": "deals", "type": "kpi", "fn": "count",
           "filter.conj": "and", "filter.c1.field": "qty", "filter.c1.op": "gt", "filter.c1.value": "many"}
    resp = client.post("/apps/sales/dashboards/sales_review/widgets/new", data=kpi)
    assert resp.status_code == 422 and 'value="Won"' in resp.get_data(as_text=True)
    resp = client.post("/apps/sales/dashboards/sales_review/widgets/new", data={
        **kpi, "filter.c1.field": "stage", "filter.c1.op": "eq", "filter.c1.value": "won"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-3000:]
    won = admin.ok("GET", "/meta/apps/sales/dashboards/sales_review")["widgets"][-1]
    assert won["filter"] in ({"field": "stage", "op": "eq", "value": "won"},
                             {"and": [{"field": "stage", "op": "eq", "value": "won"}]})
    review = "/meta/apps/sales/dashboards/sales_review/data"
    assert admin.ok("GET", review + "?period=all")["widgets"][-1]["value"] == 3
    this_year = sum(1 for y in (2026, 2026, 2025) if y == dt.datetime.now(dt.UTC).year)  # won: d1, d2, d6
    assert admin.ok("GET", review)["widgets"][-1]["value"] == this_year  # its default period: this year
    # only builders build: alice views dashboards but may not change them
    alice, alice_csrf = login(app, "alice", "pass-word-12")
    assert alice.get("/apps/sales/dashboards/new").status_code == 403
    assert alice.post(f"/apps/sales/dashboards/sales_review/widgets/{keys[0]}/remove",
                      data={"csrf_token": alice_csrf}).status_code == 403
    assert "Edit dashboard" not in alice.get("/apps/sales/dashboards/sales_review").get_data(as_text=True)


def test_targets_against_actuals(admin: Api, app: Any, backend: str, sales: dict[str, Any]) -> None:
    """A targets table (month, owner, amount): a gauge's goal is the targets in the period, a bar by owner
    draws each owner's target beside the actual sum."""
    sql = Sql(app, backend)
    ids = dict(sql.rows("SELECT username, id FROM fw_user"))
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "targets", "label": "Targets", "fields": [
        {"key": "month", "label": "Month", "type": "date"}, {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "amount", "label": "Amount", "type": "number"}]})
    for month, owner, amount in (("2026-01-01", "alice", 1000), ("2026-02-01", "alice", 500),
                                 ("2026-01-01", "bob", 4000), ("2025-12-01", "bob", 99)):
        admin.ok("POST", "/data/sales/targets", {"fields": {"month": month, "owner": ids[owner], "amount": amount}})
    target = {"table": "targets", "amount": "amount", "date": "month", "owner": "owner"}
    admin.ok("PATCH", "/meta/apps/sales/dashboards/board", {"widgets": [
        {"key": "quota", "type": "gauge", "table": "deals", "metrics": ["sum:amount"], "target": target},
        {"key": "vs", "type": "bar", "table": "deals", "group_by": ["owner"], "metrics": ["sum:amount"],
         "target": target}]})
    got = data(admin, period="custom", **{"from": "2026-01-01", "to": "2026-03-31"})
    (actual,) = sql.rows("SELECT COALESCE(SUM(d.{amount}), 0) FROM {D} d WHERE d.deleted_at IS NULL "
                         "AND d.{close_date} BETWEEN :lo AND :hi", lo=dt.date(2026, 1, 1), hi=dt.date(2026, 3, 31))
    assert got["quota"]["value"] == pytest.approx(float(actual[0])) and got["quota"]["goal"] == 5500
    assert got["vs"]["targets"] == {"by_owner": {str(ids["alice"]): 1500, str(ids["bob"]): 4000}}
    got = data(admin, period="custom", owner=ids["bob"], **{"from": "2026-01-01", "to": "2026-03-31"})
    assert got["quota"]["goal"] == 4000
    status, err = admin.patch("/meta/apps/sales/dashboards/board", {"widgets": [
        {"key": "g", "type": "gauge", "table": "deals"},
        {"key": "t", "type": "bar", "table": "deals", "group_by": ["owner"],
         "target": {"table": "targets", "amount": "owner"}}]})
    assert status == 422 and {"/widgets/0/goal", "/widgets/1/target/amount"} <= set(err["error"]["details"])
    # the page draws the gauge and the target series
    client, _ = login(app, "admin", "admin-pass-1")
    page = client.get("/apps/sales/dashboards/board?period=custom&from=2026-01-01&to=2026-03-31").get_data(
        as_text=True)
    assert '&#34;goal&#34;: 5500' in page or '"goal": 5500' in page
    assert "&#34;target&#34;: true" in page or '"target": true' in page
