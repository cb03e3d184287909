"""Write guards judge deletes too (formwork.runtime.guards ``deletes=True``): the CRM keeps its stock history
and the lines of an order holding its stock, on every delete path (API single and bulk delete, the record
page, a merge sending its loser to the trash), with a 409 in the reader's language and nothing changed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from formwork import db
from tests.crm_support import Crm, installed_crm
from tests.test_crm_daily import login
from tests.test_crm_stock import draft_order, on_hand, product, receive, set_locale, warehouse


@pytest.fixture(scope="module")
def crm(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    yield from installed_crm(database_url, tmp_path_factory)


def _live(crm: Crm, table: str, ids: list[int]) -> int:
    def count(conn: Any, cat: Any, app: Any) -> int:
        t = app.table(table)
        return int(conn.execute(select(func.count()).select_from(t.sa).where(
            t.sa.c.id.in_(ids), t.sa.c.deleted_at.is_(None))).scalar() or 0)
    n: int = crm.sql(count)
    return n


def _history_rows(crm: Crm) -> int:
    n: int = crm.sql(lambda conn, cat, app: conn.execute(select(func.count()).select_from(db.history)).scalar())
    return n


def test_stock_movements_are_never_deleted(crm: Crm) -> None:
    wid, pid = warehouse(crm, "删除测试仓"), product(crm, "删除测试产品")
    first, second = receive(crm, pid, wid, 10), receive(crm, pid, wid, 5)
    ids = [first["id"], second["id"]]
    hist = _history_rows(crm)
    set_locale(crm, "admin", "zh-CN")
    st, body = crm.admin.delete(f"/data/crm/stock_movements/{first['id']}")
    assert st == 409 and body["error"]["code"] == "delete_refused"
    assert body["error"]["message"] == "出入库记录是库存的历史，不能删除；如需更正请做盘点调整"
    assert body["error"]["details"] == {str(first["id"]): [body["error"]["message"]]}
    set_locale(crm, "admin", "en")
    flt = f'{{"field":"product","op":"eq","value":{pid}}}'
    st, body = crm.admin.post("/data/crm/stock_movements/bulk-delete", {"filter": {"field": "product", "op": "eq",
                                                                                   "value": pid}})
    assert st == 409, body
    assert set(body["error"]["details"]) == {str(i) for i in ids}
    assert body["error"]["message"].startswith("Stock movements are the stock's history")
    # the page says it on the record, in the reader's language
    set_locale(crm, "sysadmin", "zh-CN")
    client, csrf = login(crm, "sysadmin")
    resp = client.post(f"/apps/crm/stock_movements/{second['id']}/delete", data={"csrf_token": csrf})
    assert resp.status_code == 409
    assert "出入库记录是库存的历史，不能删除" in resp.get_data(as_text=True)
    # the grid's bulk delete (htmx): the reason in a toast
    resp = client.post("/apps/crm/stock_movements/bulk-delete", data={"csrf_token": csrf, "ids": [str(i) for i in ids]},
                       headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert resp.status_code == 409 and "出入库记录是库存的历史，不能删除" in resp.get_data(as_text=True)
    # nothing changed: both movements, the stock, no history
    assert _live(crm, "stock_movements", ids) == 2 and on_hand(crm, pid, wid) == 15
    assert _history_rows(crm) == hist
    assert len(crm.admin.ok("GET", f"/data/crm/stock_movements?filter={flt}")["records"]) == 2
    # a correction is an adjustment
    crm.api("manager1").ok("POST", "/data/crm/stock_movements", {"fields": {
        "type": "adjust", "product": pid, "warehouse": wid, "quantity": -5}})
    assert on_hand(crm, pid, wid) == 10


def test_lines_of_a_confirmed_order_stay_until_it_is_cancelled(crm: Crm) -> None:
    wid, pid = warehouse(crm, "删除订单仓"), product(crm, "删除订单产品")
    receive(crm, pid, wid, 20)
    am1 = crm.api("am1")
    oid = draft_order(crm, "am1", wid, [(pid, 2), (pid, 3)])
    flt = {"field": "order", "op": "eq", "value": oid}
    lines = [r["id"] for r in am1.ok(
        "GET", f'/data/crm/order_lines?filter={{"field":"order","op":"eq","value":{oid}}}')["records"]]
    assert len(lines) == 2
    am1.ok("PATCH", f"/data/crm/orders/{oid}", {"fields": {"status": "confirmed"}})
    assert on_hand(crm, pid, wid) == 15
    set_locale(crm, "am1", "zh-CN")
    try:
        st, body = am1.delete(f"/data/crm/order_lines/{lines[0]}")
        assert st == 409 and body["error"]["message"] == "订单状态为“已确认”，明细不能删除（请先取消订单）"
        st, body = am1.post("/data/crm/order_lines/bulk-delete", {"filter": flt})
        assert st == 409 and set(body["error"]["details"]) == {str(i) for i in lines}
        st, body = am1.delete(f"/data/crm/orders/{oid}")
        assert st == 409 and "已扣减库存" in body["error"]["message"]
        # a merge would send one line to the trash: refused the same way, nothing moved
        st, body = crm.admin.post(f"/data/crm/order_lines/{lines[0]}/merge", {"other": lines[1]})
        assert st == 409 and body["error"]["code"] == "delete_refused"
    finally:
        set_locale(crm, "am1", "en")
    assert _live(crm, "order_lines", lines) == 2 and _live(crm, "orders", [oid]) == 1
    assert on_hand(crm, pid, wid) == 15
    # cancelled: the stock returns and the lines may go
    am1.ok("PATCH", f"/data/crm/orders/{oid}", {"fields": {"status": "cancelled"}})
    am1.ok("DELETE", f"/data/crm/order_lines/{lines[0]}")
    assert _live(crm, "order_lines", lines) == 1 and on_hand(crm, pid, wid) == 20


def test_other_tables_delete_as_before(crm: Crm) -> None:
    rid = crm.admin.ok("POST", "/data/crm/customers", {"fields": {"name": "删除守卫无关客户"}})["id"]
    crm.admin.ok("DELETE", f"/data/crm/customers/{rid}")
    assert crm.admin.get(f"/data/crm/customers/{rid}")[0] == 404
    crm.admin.ok("POST", f"/data/crm/customers/{rid}/restore")
