"""The aggregate endpoint and engine: grouping, buckets, metrics, permissions and bad input, on both databases."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import event, insert, select

from formwork import db
from formwork.runtime import auth
from formwork.runtime.aggregate import aggregate
from formwork.runtime.permissions import Access
from tests.helpers import Api, db_snapshot

STAGES = ["lead", "qualified", "proposal", "won", "lost"]
CUSTOMERS = [("Acme", "A"), ("Beta", "B"), ("Gamma", "A"), ("Delta", None)]
# name, amount, qty, stage, tags, owner, customer index, close_date, closed_at (UTC), hot
DEALS: list[tuple[Any, ...]] = [
    ("d1", "1200.50", 3, "won", ["new", "vip"], "alice", 0, "2026-01-05", "2026-01-31T20:00:00Z", True),
    ("d2", "300.25", 1, "won", ["vip"], "alice", 1, "2026-01-20", "2026-01-10T08:00:00Z", False),
    ("d3", "99.99", 2, "lost", [], "bob", 2, "2026-02-14", "2026-07-01T04:30:00Z", False),
    ("d4", "5000", 10, "proposal", ["new"], "bob", 0, "2026-03-31", "2026-03-08T06:30:00Z", True),
    ("d5", "42", 4, "lead", None, "alice", None, "2026-04-01", None, False),
    ("d6", "10.10", 5, "won", ["upsell"], "admin", 2, "2025-12-31", "2025-12-31T23:30:00Z", True),
    ("d7", None, None, "qualified", ["new", "upsell"], None, 3, None, "2026-05-05T12:00:00Z", False),
    ("d8", "777.77", 7, "lead", ["vip"], "bob", 1, "2027-01-01", "2027-01-01T00:00:00Z", None),
]


def make_user(app: Any, username: str, roles: list[dict[str, Any]] | None = None, timezone: str = "UTC",
              is_admin: bool = False) -> tuple[Api, int]:
    """A user with the given role documents, logged in by API token."""
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": username, "name": username.title(), "password": "pass-word-12",
                                      "timezone": timezone}, is_admin=is_admin)
        for doc in roles or []:
            rid = conn.execute(insert(db.roles).values(key=doc["key"], doc=doc).returning(db.roles.c.id)).scalar_one()
            conn.execute(insert(db.user_roles).values(user_id=uid, role_id=rid))
        token = auth.create_token(conn, uid, "tests", None)["token"]
    return Api(app.test_client(), token), uid


def build_sales(admin: Api, app: Any) -> dict[str, Any]:
    """The sales app: customers and deals with every groupable field type, plus two users."""
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": {"en": "Sales", "zh-CN": "销售"}})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "level", "label": "Level", "type": "single_select",
         "options": {"choices": [{"value": "A"}, {"value": "B"}]}}]})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "amount", "label": "Amount", "type": "currency", "options": {"currency": "CNY"}},
        {"key": "qty", "label": "Quantity", "type": "number"},
        {"key": "stage", "label": "Stage", "type": "single_select",
         "options": {"choices": [{"value": s} for s in STAGES]}},
        {"key": "tags", "label": "Tags", "type": "multi_select",
         "options": {"choices": [{"value": v} for v in ("new", "vip", "upsell")]}},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "customer", "label": "Customer", "type": "link",
         "options": {"table": "customers", "reverse_key": "deals"}},
        {"key": "close_date", "label": "Close date", "type": "date"},
        {"key": "closed_at", "label": "Closed at", "type": "datetime"},
        {"key": "hot", "label": "Hot", "type": "checkbox"}]})
    admin.ok("POST", "/meta/apps/sales/tables/deals/fields",
             {"key": "customer_level", "label": "Customer level", "type": "lookup",
              "options": {"link": "customer", "field": "level"}})
    admin.ok("POST", "/meta/apps/sales/tables/deals/fields",
             {"key": "double", "label": "Double", "type": "formula", "options": {"formula": "{amount} * 2"}})
    admin.ok("POST", "/meta/apps/sales/tables/customers/fields",
             {"key": "total", "label": "Total", "type": "rollup",
              "options": {"link": "deals", "field": "amount", "function": "sum"}})
    make_user(app, "alice", [{"key": "rep_alice", "label": "Rep", "view_dashboards": True, "permissions": {
        "sales.deals": {"read": "own", "create": True, "update": "own"},
        "sales.customers": {"read": "all"}}}], timezone="Asia/Shanghai")
    make_user(app, "bob", [{"key": "rep_bob", "label": "Rep", "view_dashboards": True, "permissions": {
        "sales.deals": {"read": "all", "fields": {"amount": "hidden"}}}}], timezone="America/New_York")
    cust_ids = [admin.ok("POST", "/data/sales/customers", {"fields": {"name": n, "level": lv}})["id"]
                for n, lv in CUSTOMERS]
    ids = {}
    for name, amount, qty, stage, tags, owner, cust, close, closed_at, hot in DEALS:
        fields = {"name": name, "amount": amount, "qty": qty, "stage": stage, "tags": tags, "owner": owner,
                  "customer": cust_ids[cust] if cust is not None else None, "close_date": close,
                  "closed_at": closed_at, "hot": hot}
        ids[name] = admin.ok("POST", "/data/sales/deals", {"fields": fields})["id"]
    # a deleted record never counts
    gone = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "gone", "amount": "1000000", "stage": "won"}})
    admin.ok("DELETE", f"/data/sales/deals/{gone['id']}")
    return {"customers": cust_ids, "deals": ids}


def agg(client: Api, table: str = "deals", **params: Any) -> tuple[int, Any]:
    qs = urlencode({k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()})
    return client.get(f"/data/sales/{table}/aggregate?{qs}")


def groups(client: Api, table: str = "deals", **params: Any) -> list[dict[str, Any]]:
    status, body = agg(client, table, **params)
    assert status == 200, body
    return body["groups"]


def amount(d: tuple[Any, ...]) -> float:
    return float(d[1]) if d[1] is not None else 0.0


@pytest.fixture
def sales(admin: Api, app: Any) -> dict[str, Any]:
    return build_sales(admin, app)


def test_group_by_select_with_count_and_sum_in_choice_order(admin: Api, sales: dict[str, Any]) -> None:
    got = groups(admin, group_by="stage", metrics="count,sum:amount,avg:qty,min:amount,max:close_date")
    assert [g["key"] for g in got] == [{"stage": s} for s in STAGES]  # defined order, not alphabetical
    for g in got:
        rows = [d for d in DEALS if d[3] == g["key"]["stage"]]
        assert g["count"] == len(rows)
        assert g["sum:amount"] == pytest.approx(sum(amount(d) for d in rows))
        qtys = [d[2] for d in rows if d[2] is not None]
        assert g["avg:qty"] == (pytest.approx(sum(qtys) / len(qtys)) if qtys else None)
        amounts = [float(d[1]) for d in rows if d[1] is not None]
        assert g["min:amount"] == (pytest.approx(min(amounts)) if amounts else None)
        dates = [d[7] for d in rows if d[7] is not None]
        assert g["max:close_date"] == (max(dates) if dates else None)
    won = got[3]
    assert won == {"key": {"stage": "won"}, "count": 3, "sum:amount": pytest.approx(1510.85),
                   "avg:qty": 3, "min:amount": pytest.approx(10.1), "max:close_date": "2026-01-20"}


def test_sort_limit_and_no_groups(admin: Api, sales: dict[str, Any]) -> None:
    got = groups(admin, group_by="stage", sort="-count,stage", limit="2")
    assert [(g["key"]["stage"], g["count"]) for g in got] == [("won", 3), ("lead", 2)]
    got = groups(admin, group_by="stage", metrics="sum:amount", sort="-sum:amount")
    assert [g["key"]["stage"] for g in got] == ["proposal", "won", "lead", "lost", "qualified"]
    total = groups(admin, metrics="count,sum:amount,count_distinct:customer")
    assert total == [{"key": {}, "count": len(DEALS), "sum:amount": pytest.approx(sum(map(amount, DEALS))),
                      "count_distinct:customer": 4}]
    # the filter applies before grouping
    got = groups(admin, group_by="stage", filter={"field": "amount", "op": "gte", "value": 100})
    assert {g["key"]["stage"]: g["count"] for g in got} == {"won": 2, "proposal": 1, "lead": 1}


def test_group_by_user_link_lookup_checkbox_and_explode(admin: Api, sales: dict[str, Any]) -> None:
    by_owner = groups(admin, group_by="owner")
    assert {(g["key"]["owner"] or {}).get("name"): g["count"] for g in by_owner} == \
        {"Alice": 3, "Bob": 3, "Admin": 1, None: 1}
    assert all(set(g["key"]["owner"]) == {"id", "name"} for g in by_owner if g["key"]["owner"])
    by_customer = groups(admin, group_by="customer", metrics="count,sum:amount")
    expected = Counter(CUSTOMERS[d[6]][0] if d[6] is not None else None for d in DEALS)
    assert {(g["key"]["customer"] or {}).get("display"): g["count"] for g in by_customer} == expected
    acme = next(g for g in by_customer if g["key"]["customer"] and g["key"]["customer"]["display"] == "Acme")
    assert acme["key"]["customer"]["id"] == sales["customers"][0]
    assert acme["sum:amount"] == pytest.approx(6200.5)
    by_level = groups(admin, group_by="customer_level", metrics="count,sum:double")
    assert {g["key"]["customer_level"]: (g["count"], g["sum:double"]) for g in by_level} == {
        "A": (4, pytest.approx(2 * (1200.5 + 99.99 + 5000 + 10.1))), "B": (2, pytest.approx(2 * (300.25 + 777.77))),
        None: (2, pytest.approx(2 * 42))}
    by_hot = groups(admin, group_by="hot")
    assert {g["key"]["hot"]: g["count"] for g in by_hot} == {True: 3, False: 5}
    # a multi-select counts each record once under each of its values; empty ones under null
    by_tag = groups(admin, group_by="tags", metrics="count,sum:amount")
    tag_counts: Counter[Any] = Counter()
    tag_sums: dict[Any, float] = defaultdict(float)
    for d in DEALS:
        for tag in d[4] or [None]:
            tag_counts[tag] += 1
            tag_sums[tag] += amount(d)
    assert {g["key"]["tags"]: g["count"] for g in by_tag} == dict(tag_counts)
    assert [g["key"]["tags"] for g in by_tag] == ["new", "vip", "upsell", None]
    for g in by_tag:
        assert g["sum:amount"] == pytest.approx(tag_sums[g["key"]["tags"]])
    two = groups(admin, group_by="stage,hot", metrics="count")
    assert {(g["key"]["stage"], g["key"]["hot"]): g["count"] for g in two} == \
        Counter((d[3], bool(d[9])) for d in DEALS)
    by_qty_text = groups(admin, group_by="qty")
    assert {g["key"]["qty"] for g in by_qty_text} == {d[2] for d in DEALS}


def test_rollup_and_formula_metrics(admin: Api, sales: dict[str, Any]) -> None:
    got = groups(admin, "customers", group_by="level", metrics="count,sum:total,max:total")
    per_customer = defaultdict(float)
    for d in DEALS:
        if d[6] is not None:
            per_customer[d[6]] += amount(d)
    exp: dict[Any, list[float]] = defaultdict(list)
    for i, (_n, lv) in enumerate(CUSTOMERS):
        exp[lv].append(per_customer[i])
    assert {g["key"]["level"]: (g["count"], g["sum:total"], g["max:total"]) for g in got} == {
        lv: (len(v), pytest.approx(sum(v)), pytest.approx(max(v))) for lv, v in exp.items()}
    by_total = groups(admin, "customers", group_by="total")
    assert len(by_total) == 4


def iso_key(d: dt.date, bucket: str) -> str:
    y, w, _ = d.isocalendar()
    return {"day": d.isoformat(), "week": f"{y}-W{w:02d}", "month": d.strftime("%Y-%m"),
            "quarter": f"{d.year}-Q{(d.month - 1) // 3 + 1}", "year": str(d.year)}[bucket]


def test_date_buckets_match_python_on_both_databases(admin: Api) -> None:
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": "Sales"})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "days", "label": "Days", "fields": [
        {"key": "d", "label": "D", "type": "date"}]})
    # year ends and ISO week edges: 2026-01-01 is a Thursday, 2027-01-01 a Friday (week 53 of 2026),
    # 2024-12-30 a Monday in week 1 of 2025, 2021-01-03 a Sunday in week 53 of 2020
    dates = [dt.date(2020, 12, 28) + dt.timedelta(days=i * 37) for i in range(60)]
    dates += [dt.date(2026, 1, 1), dt.date(2027, 1, 1), dt.date(2024, 12, 30), dt.date(2021, 1, 3),
              dt.date(2026, 12, 31), dt.date(2026, 3, 31), dt.date(2026, 4, 1), dt.date(2024, 2, 29)]
    admin.ok("POST", "/data/sales/days", {"records": [{"fields": {"d": d.isoformat()}} for d in dates]
                                          + [{"fields": {"d": None}}] * 2})
    for bucket in ("day", "week", "month", "quarter", "year"):
        got = groups(admin, "days", group_by=f"d:{bucket}")
        expected: dict[Any, int] = dict(Counter(iso_key(d, bucket) for d in dates))
        assert {g["key"]["d"]: g["count"] for g in got} == {**expected, None: 2}, bucket
        assert [g["key"]["d"] for g in got] == sorted(expected) + [None]  # empty dates last
    assert groups(admin, "days", group_by="d", filter={"field": "d", "op": "eq", "value": "2027-01-01"}) == \
        [{"key": {"d": "2027-01-01"}, "count": 1}]
    week = groups(admin, "days", group_by="d:week",
                  filter={"field": "d", "op": "between", "value": ["2026-12-28", "2027-01-03"]})
    assert week == [{"key": {"d": "2026-W53"}, "count": 2}]  # 2026-12-31 and 2027-01-01


def test_datetime_buckets_use_the_viewers_time_zone(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    utc = {g["key"]["closed_at"]: g["count"] for g in groups(admin, group_by="closed_at:month")}
    assert utc == {"2025-12": 1, "2026-01": 2, "2026-03": 1, "2026-05": 1, "2026-07": 1, "2027-01": 1, None: 1}
    # alice (Asia/Shanghai, UTC+8) sees only her own deals; 2026-01-31T20:00Z is 1 February there
    alice, _ = make_user_client(app, "alice")
    got = {g["key"]["closed_at"]: g["count"] for g in groups(alice, group_by="closed_at:month")}
    assert got == {"2026-02": 1, "2026-01": 1, None: 1}
    # bob (America/New_York): 2026-07-01T04:30Z is 00:30 EDT on 1 July (a fixed -5 h would say 30 June),
    # 2027-01-01T00:00Z is still 2026 there, and 2026-03-08T06:30Z is 01:30 EST
    bob, _ = make_user_client(app, "bob")
    got = {g["key"]["closed_at"]: g["count"] for g in groups(bob, group_by="closed_at:day")}
    assert got["2026-07-01"] == 1 and got["2026-12-31"] == 1 and got["2026-03-08"] == 1
    assert "2027-01-01" not in got
    years = {g["key"]["closed_at"]: g["count"] for g in groups(bob, group_by="closed_at:year")}
    assert years == {"2025": 1, "2026": 6, None: 1}


def make_user_client(app: Any, username: str) -> tuple[Api, int]:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = conn.execute(select(db.users.c.id).where(db.users.c.username == username)).scalar_one()
        token = auth.create_token(conn, uid, "again", None)["token"]
    return Api(app.test_client(), token), uid


def test_row_scopes_and_hidden_fields(admin: Api, app: Any, sales: dict[str, Any]) -> None:
    alice, _ = make_user_client(app, "alice")
    mine = [d for d in DEALS if d[5] == "alice"]
    got = groups(alice, group_by="stage", metrics="count,sum:amount")
    assert {g["key"]["stage"]: g["count"] for g in got} == dict(Counter(d[3] for d in mine))
    assert sum(g["sum:amount"] for g in got) == pytest.approx(sum(map(amount, mine)))
    # bob reads every deal but not their amounts: the field is as unknown to him as a missing one
    bob, _ = make_user_client(app, "bob")
    assert groups(bob, metrics="count") == [{"key": {}, "count": len(DEALS)}]
    status, err = agg(bob, metrics="sum:amount")
    assert status == 400 and "no field 'amount'" in err["error"]["message"]
    status, err = agg(bob, group_by="amount")
    assert status == 400
    # bob has no grant on customers at all: he can't count them, and links to them are empty to him
    status, err = agg(bob, "customers", metrics="count")
    assert status == 404
    assert groups(bob, group_by="customer") == [{"key": {"customer": None}, "count": len(DEALS)}]
    status, err = agg(bob, filter={"field": "amount", "op": "gt", "value": 500})
    assert status == 400 and "no field 'amount'" in err["error"]["message"]


@pytest.mark.parametrize("params, needle", [
    ({"group_by": "nope"}, "no field 'nope'"),
    ({"metrics": "sum:stage"}, "is not a number"),
    ({"metrics": "avg:close_date"}, "is not a number"),
    ({"metrics": "max:tags"}, "not a number or a date"),
    ({"metrics": "median:amount"}, "unknown function"),
    ({"metrics": "count:amount"}, "count takes no field"),
    ({"metrics": "sum"}, "needs a field"),
    ({"group_by": "stage:month"}, "is not a date"),
    ({"group_by": "close_date:fortnight"}, "unknown date bucket"),
    ({"group_by": "stage,owner,hot"}, "at most 2"),
    ({"group_by": "stage,stage"}, "grouped twice"),
    ({"group_by": "customer.name"}, "no field"),
    ({"filter": "{not json"}, "filter must be a JSON"),
    ({"filter": {"field": "stage", "op": "gt", "value": "won"}}, "operator 'gt' is not allowed"),
    ({"filter": {"field": "ghost", "op": "eq", "value": 1}}, "no field 'ghost'"),
    ({"sort": "-nothing"}, "neither a group nor a metric"),
    ({"limit": "0"}, "limit must be between"),
    ({"limit": "x"}, "whole number"),
    ({"colour": "red"}, "unknown query parameter"),
    ({"view": "missing"}, "no view"),
])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(admin: Api, app: Any, sales: dict[str, Any],
                                                       params: dict[str, Any], needle: str) -> None:
    before = db_snapshot(app)
    status, err = agg(admin, **params)
    assert 400 <= status < 500 and needle in err["error"]["message"], (status, err)
    assert db_snapshot(app) == before


def test_group_by_to_many_link_or_attachment_is_refused(admin: Api, sales: dict[str, Any]) -> None:
    status, err = agg(admin, "customers", group_by="deals")
    assert status == 400 and "cannot group by 'deals'" in err["error"]["message"]
    status, err = agg(admin, "customers", metrics="count_distinct:deals")
    assert status == 400 and "several values" in err["error"]["message"]


def test_engine_function_serves_kanban_counts(app: Any, sales: dict[str, Any]) -> None:
    platform = app.extensions["formwork"]
    with db.transaction(platform.engine, write=False) as conn:
        cat = platform.catalogs.get(conn)
        t = cat.table("sales", "deals")
        alice_id = conn.execute(select(db.users.c.id).where(db.users.c.username == "alice")).scalar_one()
        access = Access.for_user(conn, alice_id)
        statements: list[str] = []
        listen = ("before_cursor_execute", lambda *a, **_k: statements.append(a[2]))
        event.listen(conn, *listen)
        cols = aggregate(conn, cat, access, t, group_by=["stage", "closed_at:month"], metrics=["count", "sum:amount"])
        event.remove(conn, *listen)
        assert len(statements) == 1 and "GROUP BY" in statements[0]  # one statement, grouped in SQL
        cols = aggregate(conn, cat, access, t, group_by=["stage"], metrics=["count", "sum:amount"])
        everyone = aggregate(conn, cat, Access.system(), t, group_by=["stage"],
                             filter_tree={"field": "hot", "op": "eq", "value": True})
    assert [(c["key"]["stage"], c["count"]) for c in cols] == [("lead", 1), ("won", 2)]
    assert cols[1]["sum:amount"] == pytest.approx(1500.75)
    assert {c["key"]["stage"]: c["count"] for c in everyone} == {"won": 2, "proposal": 1}


def test_view_filter_and_search_narrow_the_rows(admin: Api, sales: dict[str, Any]) -> None:
    admin.ok("POST", "/meta/apps/sales/tables/deals/views", {
        "key": "big", "label": "Big", "type": "grid", "filter": {"field": "amount", "op": "gt", "value": 500}})
    got = groups(admin, group_by="stage", view="big")
    assert {g["key"]["stage"]: g["count"] for g in got} == {"won": 1, "proposal": 1, "lead": 1}
    got = groups(admin, metrics="count", search="d1")
    assert got == [{"key": {}, "count": 1}]
