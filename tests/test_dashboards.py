"""Dashboard data: every widget type's numbers against hand-written SQL on the same rows, per viewer."""
# ruff: noqa: S608 - the point is SQL written by hand over the catalog's generated names (t_<id>, f_<id>)

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from formwork import db
from tests.helpers import Api, db_snapshot
from tests.test_aggregate import build_sales, make_user, make_user_client

WIDGETS: list[dict[str, Any]] = [
    {"key": "won_total", "label": {"en": "Won", "zh-CN": "赢单金额"}, "type": "kpi", "table": "deals",
     "metrics": ["sum:amount"], "filter": {"field": "stage", "op": "eq", "value": "won"}, "format": "currency"},
    {"key": "deal_count", "type": "kpi", "table": "deals"},
    {"key": "win_rate", "type": "kpi", "table": "deals", "format": "percent",
     "ratio": {"numerator": {"field": "stage", "op": "eq", "value": "won"},
               "denominator": {"field": "stage", "op": "in", "value": ["won", "lost"]}}},
    {"key": "by_stage", "type": "bar", "table": "deals", "group_by": ["stage"], "metrics": ["count", "sum:amount"]},
    {"key": "trend", "type": "line", "table": "deals", "group_by": ["close_date:month"], "metrics": ["sum:qty"]},
    {"key": "owners", "type": "pie", "table": "deals", "group_by": ["owner"]},
    {"key": "funnel", "type": "funnel", "table": "deals", "group_by": ["stage"],
     "filter": {"field": "stage", "op": "ne", "value": "lost"}},
    {"key": "top_customers", "type": "table", "table": "deals", "group_by": ["customer"],
     "metrics": ["count", "avg:qty"], "sort": "-count", "limit": 3},
    {"key": "pivot", "type": "pivot", "table": "deals", "group_by": ["stage", "close_date:quarter"],
     "metrics": ["count", "sum:qty"]},
    {"key": "hot_rate_by_owner", "type": "bar", "table": "deals", "group_by": ["owner"],
     "ratio": {"numerator": {"field": "hot", "op": "eq", "value": True}, "denominator": {"and": []}}},
    {"key": "customers", "type": "kpi", "table": "customers", "metrics": ["count"]},
    {"key": "big_deals", "type": "kpi", "table": "deals", "filter": {"field": "amount", "op": "gt", "value": 500}},
]


@pytest.fixture
def sales(admin: Api, app: Any) -> dict[str, Any]:
    ids = build_sales(admin, app)
    admin.ok("POST", "/meta/apps/sales/dashboards", {"key": "overview", "label": {"en": "Overview", "zh-CN": "概览"},
                                                     "widgets": WIDGETS})
    return ids


class Sql:
    """Hand-written SQL over the physical tables, with names looked up from the catalog."""

    def __init__(self, app: Any, backend: str) -> None:
        self.engine = app.extensions["formwork"].engine
        self.backend = backend
        with self.engine.connect() as conn:
            cat = app.extensions["formwork"].catalogs.get(conn)
        deals = cat.table("sales", "deals")
        customers = cat.table("sales", "customers")
        self.names = {"D": deals.name, "C": customers.name, "cname": customers.field("name").column_name,
                      **{k: deals.field(k).column_name for k in
                         ("amount", "qty", "stage", "owner", "customer", "close_date", "hot")}}

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql.format(**self.names)), params)]

    def year_quarter(self, col: str) -> str:
        if self.backend == "postgresql":
            return f"CAST(EXTRACT(YEAR FROM {col}) AS INTEGER), CAST(EXTRACT(QUARTER FROM {col}) AS INTEGER)"
        return f"CAST(strftime('%Y', {col}) AS INTEGER), (CAST(strftime('%m', {col}) AS INTEGER) + 2) / 3"

    def year_month(self, col: str) -> str:
        if self.backend == "postgresql":
            return f"CAST(EXTRACT(YEAR FROM {col}) AS INTEGER), CAST(EXTRACT(MONTH FROM {col}) AS INTEGER)"
        return f"CAST(strftime('%Y', {col}) AS INTEGER), CAST(strftime('%m', {col}) AS INTEGER)"


def num(v: Any) -> float | None:
    return None if v is None else float(v)


def widgets(client: Api) -> dict[str, dict[str, Any]]:
    body = client.ok("GET", "/meta/apps/sales/dashboards/overview/data")
    assert body["key"] == "overview"
    assert [w["key"] for w in body["widgets"]] == [w["key"] for w in WIDGETS]
    return {w["key"]: w for w in body["widgets"]}


def check_all(got: dict[str, dict[str, Any]], sql: Sql, scope: str = "", params: dict[str, Any] | None = None,
              amounts: bool = True, customers: bool = True) -> None:
    """Compare each widget with SQL; ``scope`` is an extra WHERE condition on deals (the viewer's rows)."""
    p = params or {}
    live = "d.deleted_at IS NULL" + (f" AND {scope}" if scope else "")
    if amounts:
        (won,) = sql.rows(f"SELECT COALESCE(SUM(d.{{amount}}), 0) FROM {{D}} d "
                          f"WHERE {live} AND d.{{stage}} = 'won'", **p)
        assert got["won_total"]["type"] == "kpi" and got["won_total"]["label"] == {"en": "Won", "zh-CN": "赢单金额"}
        assert got["won_total"]["value"] == pytest.approx(float(won[0]))
        (big,) = sql.rows(f"SELECT COUNT(*) FROM {{D}} d WHERE {live} AND d.{{amount}} > 500", **p)
        assert got["big_deals"]["value"] == big[0]
    (count,) = sql.rows(f"SELECT COUNT(*) FROM {{D}} d WHERE {live}", **p)
    assert got["deal_count"]["value"] == count[0]
    (ratio,) = sql.rows(f"SELECT SUM(CASE WHEN d.{{stage}} = 'won' THEN 1 ELSE 0 END), "
                        "SUM(CASE WHEN d.{stage} IN ('won', 'lost') THEN 1 ELSE 0 END) "
                        f"FROM {{D}} d WHERE {live}", **p)
    wr = got["win_rate"]
    assert (wr["numerator"], wr["denominator"]) == (ratio[0] or 0, ratio[1] or 0)
    assert wr["value"] == (pytest.approx(ratio[0] / ratio[1]) if ratio[1] else None)

    by_stage = sql.rows(f"SELECT d.{{stage}}, COUNT(*), COALESCE(SUM(d.{{amount}}), 0) FROM {{D}} d WHERE {live} "
                        "GROUP BY d.{stage}", **p)
    assert got["by_stage"]["type"] == "bar"
    if amounts:
        assert {g["key"]["stage"]: (g["count"], g["sum:amount"]) for g in got["by_stage"]["groups"]} == \
            {s: (c, pytest.approx(float(a))) for s, c, a in by_stage}

    trend = sql.rows(f"SELECT {sql.year_month('d.{close_date}')}, COALESCE(SUM(d.{{qty}}), 0) FROM {{D}} d "
                     f"WHERE {live} GROUP BY 1, 2", **p)
    assert {g["key"]["close_date"]: g["sum:qty"] for g in got["trend"]["groups"]} == \
        {(f"{y:04d}-{m:02d}" if y is not None else None): int(s) for y, m, s in trend}
    keys = [g["key"]["close_date"] for g in got["trend"]["groups"]]
    assert keys == sorted(keys, key=lambda k: (k is None, k or ""))

    owners = sql.rows(f"SELECT u.id, u.name, COUNT(*) FROM {{D}} d LEFT JOIN fw_user u ON u.id = d.{{owner}} "
                      f"WHERE {live} GROUP BY u.id, u.name", **p)
    assert {(g["key"]["owner"]["name"] if g["key"]["owner"] else None): g["count"]
            for g in got["owners"]["groups"]} == {n: c for _i, n, c in owners}

    funnel = sql.rows(f"SELECT d.{{stage}}, COUNT(*) FROM {{D}} d WHERE {live} "
                      "AND (d.{stage} <> 'lost' OR d.{stage} IS NULL) GROUP BY d.{stage}", **p)
    order = ["lead", "qualified", "proposal", "won", "lost"]
    assert [(g["key"]["stage"], g["count"]) for g in got["funnel"]["groups"]] == \
        sorted(funnel, key=lambda r: order.index(r[0]))

    # customers were created in name order, so ordering ties by id is ordering them by display name
    top = sql.rows(f"SELECT c.id, c.{{cname}}, COUNT(*), AVG(d.{{qty}}) FROM {{D}} d "
                   f"LEFT JOIN {{C}} c ON c.id = d.{{customer}} WHERE {live} GROUP BY c.id, c.{{cname}} "
                   "ORDER BY COUNT(*) DESC, c.id IS NULL, c.id LIMIT 3", **p)
    if not customers:  # links to records the viewer can't read are empty to them
        top = sql.rows(f"SELECT NULL, NULL, COUNT(*), AVG(d.{{qty}}) FROM {{D}} d WHERE {live}", **p)
    assert [(g["key"]["customer"], g["count"], g["avg:qty"]) for g in got["top_customers"]["groups"]] == \
        [(None if i is None else {"id": i, "display": n}, c, pytest.approx(num(a))) for i, n, c, a in top]

    pivot = sql.rows(f"SELECT d.{{stage}}, {sql.year_quarter('d.{close_date}')}, COUNT(*), COALESCE(SUM(d.{{qty}}), 0) "
                     f"FROM {{D}} d WHERE {live} GROUP BY 1, 2, 3", **p)
    assert {(g["key"]["stage"], g["key"]["close_date"]): (g["count"], g["sum:qty"]) for g in got["pivot"]["groups"]} \
        == {(s, f"{y}-Q{q}" if y is not None else None): (c, int(sq)) for s, y, q, c, sq in pivot}

    hot = sql.rows(f"SELECT u.name, SUM(CASE WHEN d.{{hot}} THEN 1 ELSE 0 END), COUNT(*) FROM {{D}} d "
                   f"LEFT JOIN fw_user u ON u.id = d.{{owner}} WHERE {live} GROUP BY u.id, u.name", **p)
    assert {(g["key"]["owner"] or {}).get("name"): (g["numerator"], g["denominator"], g["value"])
            for g in got["hot_rate_by_owner"]["groups"]} == \
        {n: (h, c, pytest.approx(h / c)) for n, h, c in hot}


def test_every_widget_matches_sql_for_an_admin(admin: Api, app: Any, backend: str, sales: dict[str, Any]) -> None:
    sql = Sql(app, backend)
    got = widgets(admin)
    check_all(got, sql)
    (customers,) = sql.rows("SELECT COUNT(*) FROM {C} WHERE deleted_at IS NULL")
    assert got["customers"]["value"] == customers[0] == 4
    assert got["win_rate"]["value"] == pytest.approx(0.75)
    assert got["deal_count"]["value"] == 8


def test_widgets_follow_the_viewers_row_scope(app: Any, backend: str, sales: dict[str, Any]) -> None:
    alice, alice_id = make_user_client(app, "alice")
    got = widgets(alice)
    check_all(got, Sql(app, backend), scope="d.{owner} = :me", params={"me": alice_id})
    assert got["deal_count"]["value"] == 3
    assert got["customers"]["value"] == 4


def test_unreadable_widgets_say_forbidden_alone(app: Any, backend: str, sales: dict[str, Any]) -> None:
    bob, _ = make_user_client(app, "bob")
    got = widgets(bob)
    # bob can't read customers and may not see amounts (not even as a filter): those widgets fail alone
    for key in ("customers", "won_total", "by_stage", "big_deals"):
        assert got[key] == {"key": key, "type": WIDGETS[[w["key"] for w in WIDGETS].index(key)]["type"],
                            "error": "forbidden"}
    check_all(got, Sql(app, backend), amounts=False, customers=False)


def test_unknown_dashboard_and_no_credentials(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    status, err = admin.get("/meta/apps/sales/dashboards/nope/data")
    assert status == 404 and "no dashboard 'nope'" in err["error"]["message"]
    status, _ = Api(app.test_client()).get("/meta/apps/sales/dashboards/overview/data")
    assert status == 401


def test_a_widget_whose_field_was_deleted_reports_itself(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    admin.ok("DELETE", "/meta/apps/sales/tables/deals/fields/qty")
    before = db_snapshot(app)
    got = widgets(admin)
    assert got["trend"]["error"] == "invalid" and "qty" in got["trend"]["message"]
    assert got["deal_count"]["value"] == 8
    assert db_snapshot(app) == before


def test_widget_definitions_are_checked_when_saved(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    before = db_snapshot(app)
    status, err = admin.post("/meta/apps/sales/dashboards", {"key": "bad", "label": "Bad", "widgets": [
        {"key": "w", "type": "bar", "table": "deals", "group_by": ["ghost"]}]})
    assert status == 422
    status, err = admin.post("/meta/apps/sales/dashboards", {"key": "bad", "label": "Bad", "widgets": [
        {"key": "w", "type": "radar", "table": "deals"}]})
    assert status == 422
    assert db_snapshot(app) == before
    with db.transaction(app.extensions["formwork"].engine, write=False) as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM fw_dashboard")).scalar() == 1


def test_a_role_without_view_dashboards_sees_none(app: Any, sales: dict[str, Any]) -> None:
    """The role flag ``view_dashboards`` is enforced on every path: data, definitions and pages."""
    carol, _ = make_user(app, "carol", [{"key": "rep_carol", "label": "Rep", "view_dashboards": False, "permissions": {
        "sales.deals": {"read": "all"}}}])
    status, err = carol.get("/meta/apps/sales/dashboards/overview/data")
    assert status == 403 and err["error"]["message"] == "you may not view dashboards"
    assert carol.ok("GET", "/meta/apps/sales/dashboards") == {"dashboards": []}
    assert carol.get("/meta/apps/sales/dashboards/overview")[0] == 404
    assert carol.ok("GET", "/meta/apps/sales")["dashboards"] == []
    assert carol.get("/data/sales/deals")[0] == 200  # the records themselves stay readable
    alice, _ = make_user_client(app, "alice")  # her role grants the flag
    assert alice.get("/meta/apps/sales/dashboards/overview/data")[0] == 200
    assert alice.ok("GET", "/meta/apps/sales/dashboards")["dashboards"]
