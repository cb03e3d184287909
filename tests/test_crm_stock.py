"""The CRM's products and storage (库存, issue 16) through the API as the demo users: stock is what the
movements add up to, confirming an order takes its lines' stock (or is refused, 422 in the reader's
language, changing nothing), cancelling gives it back, and two confirmations at once never oversell."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from formwork import db
from formwork.automation.worker import Worker
from tests.crm_support import Crm, installed_crm


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    yield from installed_crm(database_url, tmp_path_factory)


def set_locale(crm: Crm, username: str, locale: str) -> None:
    crm.sql(lambda conn, cat, app: conn.execute(update(db.users).where(db.users.c.id == crm.users[username])
                                                 .values(locale=locale)))


def warehouse(crm: Crm, name: str) -> int:
    rid: int = crm.admin.ok("POST", "/data/crm/warehouses", {"fields": {"name": name}})["id"]
    return rid


def product(crm: Crm, name: str, price: float = 100.0) -> int:
    rid: int = crm.admin.ok("POST", "/data/crm/products", {"fields": {"name": name, "price": price}})["id"]
    return rid


def receive(crm: Crm, pid: int, wid: int, qty: float, who: str = "manager1") -> dict[str, Any]:
    out: dict[str, Any] = crm.api(who).ok("POST", "/data/crm/stock_movements", {"fields": {
        "type": "in", "product": pid, "warehouse": wid, "quantity": qty}})
    return out


def on_hand(crm: Crm, pid: int, wid: int) -> float:
    levels = crm.admin.ok("GET", "/data/crm/stock_levels?limit=100&filter="
                          f'{{"and":[{{"field":"product","op":"eq","value":{pid}}},'
                          f'{{"field":"warehouse","op":"eq","value":{wid}}}]}}')["records"]
    assert len(levels) <= 1
    return float(levels[0]["fields"]["on_hand"]) if levels else 0.0


def draft_order(crm: Crm, who: str, wid: int | None, lines: list[tuple[int, float]]) -> int:
    api = crm.api(who)
    cust = api.ok("POST", "/data/crm/customers", {"fields": {"name": f"库存测试客户 {who} {len(lines)} {id(lines)}"}})
    fields: dict[str, Any] = {"customer": cust["id"]}
    if wid is not None:
        fields["warehouse"] = wid
    oid: int = api.ok("POST", "/data/crm/orders", {"fields": fields})["id"]
    for pid, qty in lines:
        api.ok("POST", "/data/crm/order_lines", {"fields": {"order": oid, "product": pid, "quantity": qty}})
    return oid


def test_demo_stock_is_what_the_movements_add_up_to(crm: Crm) -> None:
    def check(conn: Any, cat: Any, app: Any) -> None:
        lv, mv = app.table("stock_levels"), app.table("stock_movements")
        levels = conn.execute(select(lv.sa.c.id, lv.sa.c[lv.field("on_hand").column_name])).all()
        assert len(levels) > 20
        for lid, hand in levels:
            rows = conn.execute(select(mv.sa.c[mv.field("type").column_name], mv.sa.c[mv.field("quantity").column_name])
                                .where(mv.sa.c[mv.field("stock").column_name] == lid)).all()
            assert float(hand) == sum(-float(q) if t == "out" else float(q) for t, q in rows)
    crm.sql(check)
    prods = crm.admin.ok("GET", "/data/crm/products?limit=5")["records"]
    for p in prods:
        levels = crm.admin.ok("GET", f'/data/crm/stock_levels?limit=100&filter={{"field":"product","op":"eq",'
                                     f'"value":{p["id"]}}}')["records"]
        assert float(p["fields"]["stock"] or 0) == sum(float(x["fields"]["on_hand"] or 0) for x in levels)


def test_nobody_types_a_stock_number(crm: Crm) -> None:
    pid, wid = product(crm, "手填库存测试品"), warehouse(crm, "手填测试仓")
    for who in ("manager1", "sysadmin"):
        st, body = crm.api(who).post("/data/crm/stock_levels", {"fields": {"product": pid, "warehouse": wid,
                                                                           "on_hand": 50}})
        assert st == 422 and "on_hand" in body["error"]["details"], body
    level = receive(crm, pid, wid, 5)["fields"]["stock"]
    st, body = crm.api("sysadmin").patch(f"/data/crm/stock_levels/{level['id']}", {"fields": {"on_hand": 99}})
    assert st == 422 and on_hand(crm, pid, wid) == 5
    # the product's stock is a rollup: it can't be written either
    st, _ = crm.admin.patch(f"/data/crm/products/{pid}", {"fields": {"stock": 7}})
    assert st in (400, 422)
    # a second level of the same product and warehouse is refused
    st, body = crm.api("manager1").post("/data/crm/stock_levels", {"fields": {"product": pid, "warehouse": wid}})
    assert st == 422 and "product" in body["error"]["details"]


def test_movements_post_in_out_and_adjust_with_history(crm: Crm) -> None:
    pid, wid = product(crm, "出入库测试品"), warehouse(crm, "出入库测试仓")
    first = receive(crm, pid, wid, 20)
    assert first["fields"]["balance_after"] == 20 and first["fields"]["number"].startswith("SM-")
    m1 = crm.api("manager1")
    out = m1.ok("POST", "/data/crm/stock_movements", {"fields": {"type": "out", "product": pid, "warehouse": wid,
                                                                 "quantity": 8}})
    assert out["fields"]["balance_after"] == 12
    adj = m1.ok("POST", "/data/crm/stock_movements", {"fields": {"type": "adjust", "product": pid, "warehouse": wid,
                                                                 "quantity": -2, "note": "盘亏"}})
    assert adj["fields"]["balance_after"] == 10 and on_hand(crm, pid, wid) == 10
    # going below zero is refused, in the reader's language, and nothing moves
    set_locale(crm, "manager1", "zh-CN")
    try:
        st, body = crm.api("manager1").post("/data/crm/stock_movements", {"fields": {
            "type": "out", "product": pid, "warehouse": wid, "quantity": 11}})
        assert st == 422 and "库存只有 10" in body["error"]["details"]["quantity"][0], body
    finally:
        set_locale(crm, "manager1", "en")
    st, body = m1.post("/data/crm/stock_movements", {"fields": {"type": "out", "product": pid, "warehouse": wid,
                                                                "quantity": 11}})
    assert st == 422 and "Only 10" in body["error"]["details"]["quantity"][0]
    for bad in ({"type": "in", "quantity": 0}, {"type": "out", "quantity": -3}, {"type": "adjust", "quantity": 0}):
        st, _ = m1.post("/data/crm/stock_movements", {"fields": {"product": pid, "warehouse": wid, **bad}})
        assert st == 422
    assert on_hand(crm, pid, wid) == 10
    # history can't be rewritten; reps only read stock
    st, _ = crm.api("sysadmin").patch(f"/data/crm/stock_movements/{out['id']}", {"fields": {"quantity": 1}})
    assert st == 422
    st, _ = crm.api("am1").post("/data/crm/stock_movements", {"fields": {"type": "in", "product": pid,
                                                                        "warehouse": wid, "quantity": 1}})
    assert st == 403
    assert crm.api("am1").ok("GET", f"/data/crm/stock_movements/{out['id']}")["id"] == out["id"]
    hist = m1.ok("GET", '/data/crm/stock_movements?limit=100&sort=number&filter={"field":"product","op":"eq",'
                        f'"value":{pid}}}')["records"]
    assert [(h["fields"]["type"], h["fields"]["balance_after"]) for h in hist] == [("in", 20), ("out", 12),
                                                                                     ("adjust", 10)]


def test_confirming_an_order_takes_the_stock_and_cancelling_gives_it_back(crm: Crm) -> None:
    pa, pb, wid = product(crm, "确认测试品A", 120), product(crm, "确认测试品B", 80), warehouse(crm, "确认测试仓")
    receive(crm, pa, wid, 10)
    receive(crm, pb, wid, 3)
    oid = draft_order(crm, "am1", wid, [(pa, 4), (pa, 2), (pb, 3)])
    am1 = crm.api("am1")
    lines = am1.ok("GET", f'/data/crm/order_lines?filter={{"field":"order","op":"eq","value":{oid}}}')["records"]
    assert {float(x["fields"]["unit_price"]) for x in lines} == {120.0, 80.0}  # prices from the products
    assert am1.ok("PATCH", f"/data/crm/orders/{oid}", {"fields": {"status": "confirmed"}})["fields"]["status"] == \
        "confirmed"
    assert (on_hand(crm, pa, wid), on_hand(crm, pb, wid)) == (4, 0)
    moves = crm.admin.ok("GET", f'/data/crm/stock_movements?filter={{"field":"order","op":"eq","value":{oid}}}'
                         )["records"]
    assert sorted((m["fields"]["type"], m["fields"]["quantity"]) for m in moves) == [("out", 3), ("out", 6)]
    # lines of a confirmed order are fixed
    st, body = am1.post("/data/crm/order_lines", {"fields": {"order": oid, "product": pa, "quantity": 1}})
    assert st == 422 and "order" in body["error"]["details"]
    st, _ = am1.patch(f"/data/crm/order_lines/{lines[0]['id']}", {"fields": {"quantity": 1}})
    assert st == 422
    # cancelling puts it back
    am1.ok("PATCH", f"/data/crm/orders/{oid}", {"fields": {"status": "cancelled"}})
    assert (on_hand(crm, pa, wid), on_hand(crm, pb, wid)) == (10, 3)


def test_an_order_short_of_stock_is_refused_and_nothing_moves(crm: Crm) -> None:
    pa, pb, wid = product(crm, "缺货测试品A"), product(crm, "缺货测试品B"), warehouse(crm, "缺货测试仓")
    receive(crm, pa, wid, 5)
    receive(crm, pb, wid, 1)
    oid = draft_order(crm, "am2", wid, [(pa, 4), (pb, 2)])
    set_locale(crm, "am2", "zh-CN")
    try:
        st, body = crm.api("am2").patch(f"/data/crm/orders/{oid}", {"fields": {"status": "confirmed"}})
    finally:
        set_locale(crm, "am2", "en")
    assert st == 422, body
    msg = body["error"]["details"]["status"][0]
    assert "库存不足" in msg and "缺货测试品B（需要 2，库存 1）" in msg and "缺货测试品A" not in msg
    assert crm.api("am2").ok("GET", f"/data/crm/orders/{oid}")["fields"]["status"] == "draft"
    assert (on_hand(crm, pa, wid), on_hand(crm, pb, wid)) == (5, 1)
    st, body = crm.api("am2").patch(f"/data/crm/orders/{oid}", {"fields": {"status": "confirmed"}})
    assert st == 422 and "Not enough stock" in body["error"]["details"]["status"][0]
    # no warehouse: the order says where to choose one
    nowh = draft_order(crm, "am2", None, [(pa, 1)])
    st, body = crm.api("am2").patch(f"/data/crm/orders/{nowh}", {"fields": {"status": "confirmed"}})
    assert st == 422 and "warehouse" in body["error"]["details"]
    # receiving the missing goods lets it through
    receive(crm, pb, wid, 1)
    crm.api("am2").ok("PATCH", f"/data/crm/orders/{oid}", {"fields": {"status": "confirmed"}})
    assert (on_hand(crm, pa, wid), on_hand(crm, pb, wid)) == (1, 0)
    # and its warehouse can't change afterwards
    other = warehouse(crm, "缺货测试仓2")
    st, _ = crm.api("am2").patch(f"/data/crm/orders/{oid}", {"fields": {"warehouse": other}})
    assert st == 422


def test_two_confirmations_at_once_never_oversell(crm: Crm) -> None:
    pid, wid = product(crm, "并发测试品"), warehouse(crm, "并发测试仓")
    receive(crm, pid, wid, 10)
    orders = [draft_order(crm, who, wid, [(pid, 6)]) for who in ("am1", "am2")]
    apis = [crm.api("am1"), crm.api("am2")]
    results: list[int] = []
    barrier = threading.Barrier(2)

    def confirm(i: int) -> None:
        barrier.wait()
        st, _ = apis[i].patch(f"/data/crm/orders/{orders[i]}", {"fields": {"status": "confirmed"}})
        results.append(st)

    threads = [threading.Thread(target=confirm, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 422], results
    assert on_hand(crm, pid, wid) == 4
    statuses = [crm.admin.ok("GET", f"/data/crm/orders/{o}")["fields"]["status"] for o in orders]
    assert sorted(statuses) == ["confirmed", "draft"]


def test_low_stock_alerts_the_sales_managers(crm: Crm) -> None:
    pid, wid = product(crm, "低库存提醒测试品"), warehouse(crm, "低库存提醒仓")
    receive(crm, pid, wid, 12)
    oid = draft_order(crm, "am1", wid, [(pid, 5)])
    crm.api("am1").ok("PATCH", f"/data/crm/orders/{oid}", {"fields": {"status": "confirmed"}})
    Worker(crm.app, worker_id="crm-stock-test").drain()
    titles = [n["title"] for n in crm.api("manager1").ok("GET", "/notifications")["notifications"]]
    assert any("低库存提醒测试品" in t and "7" in t for t in titles), titles
    levels = crm.admin.ok("GET", '/data/crm/stock_levels?limit=500&filter={"field":"low","op":"eq","value":true}')
    assert pid in [r["fields"]["product"]["id"] for r in levels["records"]]
