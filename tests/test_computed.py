"""Lookups, rollups and formulas: their values, filtering and sorting like columns, and the SQL a page costs."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from sqlalchemy import event

from tests.helpers import Api


def build(admin: Api) -> dict[str, int]:
    admin.ok("POST", "/meta/apps", {"key": "shop", "label": {"en": "Shop", "zh-CN": "商店"}})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "tags", "label": "Tags", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "tier", "label": "Tier", "type": "single_select",
         "options": {"choices": [{"value": "gold"}, {"value": "silver"}, {"value": "bronze"}]}},
        {"key": "tags", "label": "Tags", "type": "link", "options": {"table": "tags", "multiple": True}}]})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "orders", "label": "Orders", "fields": [
        {"key": "title", "label": "Title", "type": "text"},
        {"key": "amount", "label": "Amount", "type": "currency", "options": {"currency": "CNY"}},
        {"key": "placed", "label": "Placed", "type": "date"},
        {"key": "customer", "label": "Customer", "type": "link",
         "options": {"table": "customers", "reverse_key": "orders", "reverse_label": "Orders"}},
        {"key": "cust_tier", "label": "Tier", "type": "lookup", "options": {"link": "customer", "field": "tier"}},
        {"key": "cust_name", "label": "Customer name", "type": "lookup",
         "options": {"link": "customer", "field": "name"}},
        {"key": "tax", "label": "Tax", "type": "formula", "options": {"formula": "{amount} * 0.1"}},
        {"key": "caption", "label": "Caption", "type": "formula",
         "options": {"formula": "{title} & \" @ \" & {cust_name}"}}]})
    for key, opts in (("total", {"link": "orders", "field": "amount", "function": "sum"}),
                      ("n_orders", {"link": "orders", "function": "count"}),
                      ("big_total", {"link": "orders", "field": "amount", "function": "sum",
                                     "filter": {"field": "amount", "op": "gte", "value": 100}}),
                      ("last_placed", {"link": "orders", "field": "placed", "function": "max"}),
                      ("avg_amount", {"link": "orders", "field": "amount", "function": "avg"})):
        admin.ok("POST", "/meta/apps/shop/tables/customers/fields",
                 {"key": key, "label": key, "type": "rollup", "options": opts})
    admin.ok("POST", "/meta/apps/shop/tables/customers/fields", {
        "key": "order_titles", "label": "Order titles", "type": "lookup",
        "options": {"link": "orders", "field": "title"}})
    admin.ok("POST", "/meta/apps/shop/tables/customers/fields", {
        "key": "per_order", "label": "Per order", "type": "formula",
        "options": {"formula": "IF({n_orders} > 0, {total} / {n_orders}, 0)"}})
    tags = admin.ok("POST", "/data/shop/tags", {"records": [{"fields": {"name": "vip"}},
                                                           {"fields": {"name": "new"}}]})["records"]
    custs = admin.ok("POST", "/data/shop/customers", {"records": [
        {"fields": {"name": "华为", "tier": "gold", "tags": [tags[0]["id"]]}},
        {"fields": {"name": "Acme", "tier": "bronze", "tags": [tags[0]["id"], tags[1]["id"]]}},
        {"fields": {"name": "Zed", "tier": "silver"}},
        {"fields": {"name": "Nobody"}}]})["records"]
    ids = {c["fields"]["name"]: c["id"] for c in custs}
    admin.ok("POST", "/data/shop/orders", {"records": [
        {"fields": {"title": "o1", "amount": 50, "placed": "2026-01-05", "customer": ids["华为"]}},
        {"fields": {"title": "o2", "amount": 150, "placed": "2026-02-01", "customer": ids["华为"]}},
        {"fields": {"title": "o3", "amount": 300, "placed": "2026-01-20", "customer": ids["Acme"]}},
        {"fields": {"title": "o4", "amount": 20, "customer": ids["Zed"]}},
        {"fields": {"title": "o5", "amount": 5}}]})
    return ids


def names(admin: Api, table: str, key: str, **params: Any) -> list[str]:
    return [r["fields"][key] for r in admin.records("shop", table, fields=key, limit=1000, **params)]


def test_computed_values(admin: Api) -> None:
    build(admin)
    by_name = {r["fields"]["name"]: r["fields"] for r in admin.records("shop", "customers")}
    hw = by_name["华为"]
    assert hw["total"] == 200 and hw["n_orders"] == 2 and hw["big_total"] == 150 and hw["avg_amount"] == 100
    assert hw["last_placed"] == "2026-02-01" and hw["per_order"] == 100
    assert sorted(hw["order_titles"]) == ["o1", "o2"]
    assert [o["display"] for o in hw["orders"]] == ["o1", "o2"] and [t["display"] for t in hw["tags"]] == ["vip"]
    nobody = by_name["Nobody"]
    assert nobody["total"] == 0 and nobody["n_orders"] == 0 and nobody["last_placed"] is None
    assert nobody["order_titles"] == [] and nobody["orders"] == [] and nobody["per_order"] == 0
    orders = {r["fields"]["title"]: r["fields"] for r in admin.records("shop", "orders")}
    assert orders["o2"]["cust_tier"] == "gold" and orders["o2"]["customer"]["display"] == "华为"
    assert orders["o2"]["tax"] == 15 and orders["o2"]["caption"] == "o2 @ 华为"
    assert orders["o5"]["cust_tier"] is None and orders["o5"]["customer"] is None


def test_filter_and_sort_on_computed_fields(admin: Api) -> None:
    build(admin)
    assert names(admin, "customers", "name", filter={"field": "total", "op": "gt", "value": 100}) == ["华为", "Acme"]
    assert names(admin, "customers", "name", sort="-total") == ["Acme", "华为", "Zed", "Nobody"]
    assert names(admin, "customers", "name", sort="last_placed") == ["Acme", "华为", "Zed", "Nobody"]
    assert names(admin, "customers", "name", sort="-last_placed") == ["华为", "Acme", "Zed", "Nobody"]
    assert names(admin, "customers", "name", filter={"field": "last_placed", "op": "is_empty"}) == ["Zed", "Nobody"]
    assert names(admin, "customers", "name", filter={"field": "big_total", "op": "eq", "value": 0}) == ["Zed", "Nobody"]
    assert names(admin, "customers", "name", filter={"field": "order_titles", "op": "eq", "value": "O3"}) == ["Acme"]
    assert names(admin, "customers", "name", filter={"field": "per_order", "op": "between", "value": [50, 150]}) \
        == ["华为"]
    assert names(admin, "customers", "name", filter={"field": "orders.amount", "op": "gte", "value": 300}) == ["Acme"]
    assert names(admin, "customers", "name", filter={"field": "tags", "op": "has_all", "value": [1, 2]}) == ["Acme"]
    assert names(admin, "orders", "title", filter={"field": "cust_tier", "op": "in", "value": ["gold", "silver"]}) \
        == ["o1", "o2", "o4"]
    # a lookup of a single select sorts by the choices' order, like the field it shows; empty last
    assert names(admin, "orders", "title", sort="cust_tier,-amount") == ["o2", "o1", "o4", "o3", "o5"]
    assert names(admin, "orders", "title", sort="-tax") == ["o3", "o2", "o1", "o4", "o5"]
    assert names(admin, "orders", "title", filter={"field": "tax", "op": "lt", "value": 4}) == ["o4", "o5"]
    assert names(admin, "orders", "title", filter={"field": "caption", "op": "contains", "value": "华"}) == ["o1", "o2"]
    assert names(admin, "orders", "caption", sort="-caption") == ["o5 @ ", "o4 @ Zed", "o3 @ Acme", "o2 @ 华为",
                                                                 "o1 @ 华为"]
    assert names(admin, "orders", "title", sort="customer,title") == ["o3", "o4", "o1", "o2", "o5"]
    # keyset paging over a computed sort key
    seen, cursor = [], None
    while True:
        q = "sort=-total&limit=1&fields=name" + (f"&cursor={quote(cursor)}" if cursor else "")
        page = admin.ok("GET", f"/data/shop/customers?{q}")
        seen += [r["fields"]["name"] for r in page["records"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["Acme", "华为", "Zed", "Nobody"]
    for bad in ("sort=order_titles", "sort=orders", "sort=tags"):
        status, err = admin.get(f"/data/shop/customers?{bad}")
        assert status == 400 and "several values" in err["error"]["message"]


def test_computed_fields_follow_changes_and_the_trash(admin: Api) -> None:
    ids = build(admin)
    o3 = admin.records("shop", "orders", filter={"field": "title", "op": "eq", "value": "o3"})[0]["id"]
    admin.ok("PATCH", f"/data/shop/orders/{o3}", {"fields": {"amount": 10}})
    acme = admin.ok("GET", f"/data/shop/customers/{ids['Acme']}")["fields"]
    assert acme["total"] == 10 and acme["big_total"] == 0
    admin.ok("DELETE", f"/data/shop/orders/{o3}")
    acme = admin.ok("GET", f"/data/shop/customers/{ids['Acme']}")["fields"]
    assert acme["total"] == 0 and acme["n_orders"] == 0 and acme["orders"] == [] and acme["order_titles"] == []
    assert names(admin, "customers", "name", filter={"field": "orders", "op": "is_empty"}) == ["Acme", "Nobody"]
    admin.ok("PATCH", f"/data/shop/customers/{ids['华为']}", {"fields": {"tier": "bronze", "name": "Huawei"}})
    o2 = {r["fields"]["title"]: r["fields"] for r in admin.records("shop", "orders")}["o2"]
    assert o2["cust_tier"] == "bronze" and o2["caption"] == "o2 @ Huawei" and o2["customer"]["display"] == "Huawei"
    admin.ok("DELETE", f"/data/shop/customers/{ids['华为']}")
    o2 = {r["fields"]["title"]: r["fields"] for r in admin.records("shop", "orders")}["o2"]
    assert o2["customer"] is None and o2["cust_tier"] is None
    assert names(admin, "orders", "title", filter={"field": "customer", "op": "is_empty"}) == ["o1", "o2", "o5"]


def test_a_page_costs_a_bounded_number_of_statements(app: Any, admin: Api) -> None:
    """Link displays, to-many links, lookups and rollups are in the page query or batched per field."""
    ids = build(admin)
    admin.ok("POST", "/data/shop/orders", {"records": [
        {"fields": {"title": f"bulk{i}", "amount": i, "customer": ids["Acme"] if i % 2 else ids["Zed"]}}
        for i in range(60)]})
    admin.ok("POST", "/data/shop/customers", {"records": [
        {"fields": {"name": f"c{i}", "tier": "gold", "tags": [1, 2]}} for i in range(60)]})
    engine = app.extensions["formwork"].engine
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def cost(path: str) -> tuple[int, int]:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            body = admin.ok("GET", path)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements), len(body["records"])

    flt = quote(json.dumps({"field": "total", "op": "gte", "value": 0}))
    for table, extra in (("orders", "sort=-cust_tier,customer"), ("customers", f"sort=-total&filter={flt}")):
        small, n_small = cost(f"/data/shop/{table}?limit=5&{extra}")
        large, n_large = cost(f"/data/shop/{table}?limit=50&{extra}")
        assert (n_small, n_large) == (5, 50)
        assert small == large, (table, small, large)
        # auth + catalog check + the page + one per to-many field + user names: a small constant
        assert large <= 12, statements
        statements.clear()
    single, _ = cost("/data/shop/customers?limit=1")
    many, _ = cost("/data/shop/customers?limit=60&count=true")
    assert many <= single + 1
