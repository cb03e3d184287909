"""The batched write path, the folded auth look-up and saved views' indexes (behaviour only, never timing)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, update

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api, db_snapshot


@pytest.fixture
def shop(admin: Api) -> Api:
    admin.ok("POST", "/meta/apps", {"key": "shop", "label": "Shop"})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "firms", "label": "Firms", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    admin.ok("POST", "/meta/apps/shop/tables", {"key": "orders", "label": "Orders", "fields": [
        {"key": "code", "label": "Code", "type": "text", "unique": True},
        {"key": "qty", "label": "Qty", "type": "number"},
        {"key": "note", "label": "Note", "type": "text", "default": "none"},
        {"key": "firm", "label": "Firm", "type": "link", "options": {"table": "firms", "reverse_key": "orders"}},
        {"key": "partners", "label": "Partners", "type": "link",
         "options": {"table": "firms", "multiple": True, "reverse_key": "partner_of"}}]})
    return admin


def firms(api: Api, *names: str) -> list[int]:
    recs = api.ok("POST", "/data/shop/firms", {"records": [{"fields": {"name": n}} for n in names]})["records"]
    return [r["id"] for r in recs]


def test_batch_create_keeps_order_mixed_fields_links_and_defaults(shop: Api) -> None:
    a, b, c = firms(shop, "A", "B", "C")
    recs = shop.ok("POST", "/data/shop/orders", {"records": [
        {"fields": {"code": "o1", "qty": 1, "firm": a, "partners": [b, c]}},
        {"fields": {"code": "o2"}},
        {"fields": {"qty": 3, "note": "given", "firm": {"id": c}}},
        {"fields": {"code": "o4", "partners": [a]}}]})["records"]
    assert [r["fields"].get("code") for r in recs] == ["o1", "o2", None, "o4"]
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)
    assert [r["fields"]["note"] for r in recs] == ["none", "none", "given", "none"]
    assert recs[0]["fields"]["firm"] == {"id": a, "display": "A"} and recs[1]["fields"]["firm"] is None
    assert [p["id"] for p in recs[0]["fields"]["partners"]] == [b, c]
    listed = {r["id"]: r["fields"] for r in shop.records("shop", "orders")}
    assert listed[recs[3]["id"]]["partners"] == [{"id": a, "display": "A"}]
    assert listed[recs[2]["id"]]["qty"] == 3 and listed[recs[2]["id"]]["firm"]["id"] == c
    history = shop.ok("GET", f"/data/shop/orders/{recs[0]['id']}/history")["entries"]
    assert history[0]["action"] == "create" and history[0]["changes"]["code"] == {"old": None, "new": "o1"}
    with db.transaction(shop.client.application.extensions["formwork"].engine) as conn:
        events = conn.execute(db.outbox.select().where(db.outbox.c.event == "record_created")).all()
    assert {e.record_id for e in events} >= {r["id"] for r in recs}


def test_batch_with_a_missing_link_target_names_the_row_and_writes_nothing(shop: Api) -> None:
    (a,) = firms(shop, "A")
    before = db_snapshot(shop.client.application)
    status, err = shop.post("/data/shop/orders", {"records": [
        {"fields": {"code": "x1", "firm": a}}, {"fields": {"code": "x2", "firm": 999999}},
        {"fields": {"code": "x3", "partners": [a, 888888]}}]})
    assert status == 422
    assert "999999" in err["error"]["details"]["records/1/firm"][0]
    assert "888888" in err["error"]["details"]["records/2/partners"][0]
    assert db_snapshot(shop.client.application) == before


def test_batch_unique_clash_with_a_stored_or_trashed_record_and_inside_the_batch(shop: Api) -> None:
    first = shop.ok("POST", "/data/shop/orders", {"fields": {"code": "u1"}})
    shop.ok("POST", "/data/shop/orders", {"fields": {"code": "u2"}})
    shop.ok("DELETE", f"/data/shop/orders/{first['id']}")
    before = db_snapshot(shop.client.application)
    status, err = shop.post("/data/shop/orders", {"records": [{"fields": {"code": "new"}},
                                                              {"fields": {"code": "u2"}}]})
    assert status == 409 and err["error"]["details"] == {"records/1/code": ["is already used by another record"]}
    status, err = shop.post("/data/shop/orders", {"records": [{"fields": {"code": "u1"}}]})
    assert status == 409 and "trash" in err["error"]["details"]["records/0/code"][0]
    status, err = shop.post("/data/shop/orders", {"records": [{"fields": {"code": "d"}}, {"fields": {"code": "d"}}]})
    assert status == 409 and "records/1/code" in err["error"]["details"]
    assert db_snapshot(shop.client.application) == before


def test_revoked_expired_and_disabled_are_refused_per_request(shop: Api, app: Any) -> None:
    engine = app.extensions["formwork"].engine
    with db.transaction(engine) as conn:
        uid = auth.create_user(conn, {"username": "u1", "name": "U", "password": "password-1"}, is_admin=True)
        tok = auth.create_token(conn, uid, "t", 5)
    user = Api(app.test_client(), tok["token"])
    assert user.get("/me")[0] == 200
    with db.transaction(engine) as conn:
        conn.execute(update(db.api_tokens).where(db.api_tokens.c.id == tok["id"]).values(
            expires_at=db.utcnow().replace(year=2000)))
    status, err = user.get("/me")
    assert status == 401 and "expired" in err["error"]["message"]
    with db.transaction(engine) as conn:
        conn.execute(update(db.api_tokens).where(db.api_tokens.c.id == tok["id"]).values(expires_at=None))
        conn.execute(update(db.users).where(db.users.c.id == uid).values(active=False))
    status, err = user.get("/data/shop/orders")
    assert status == 401 and "disabled" in err["error"]["message"]
    with db.transaction(engine) as conn:
        conn.execute(update(db.users).where(db.users.c.id == uid).values(active=True))
        conn.execute(update(db.api_tokens).where(db.api_tokens.c.id == tok["id"]).values(revoked_at=db.utcnow()))
    assert user.get("/me")[0] == 401
    assert Api(app.test_client(), "fw_nothing_here").get("/me")[0] == 401


def _view_indexes(app: Any, table_name: str) -> dict[str, list[str | None]]:
    with app.extensions["formwork"].engine.connect() as conn:
        return {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes(table_name)
                if "_v" in (ix["name"] or "")}


def test_saved_view_gets_an_index_that_follows_its_changes(shop: Api, app: Any) -> None:
    t = app.extensions["formwork"].catalogs.get().table("shop", "orders")
    code, qty = (t.fields_by_key[k].column_name for k in ("code", "qty"))
    view = shop.ok("POST", "/meta/apps/shop/tables/orders/views", {
        "key": "big", "label": "Big", "type": "grid", "filter": {"field": "note", "op": "eq", "value": "x"},
        "sort": ["-qty"]})
    note = t.fields_by_key["note"].column_name
    assert _view_indexes(app, t.name) == {f"ix_{t.name}_v{view['id']}": [note, qty, "id"]}
    shop.ok("PATCH", "/meta/apps/shop/tables/orders/views/big", {"filter": None, "sort": ["code"]})
    assert _view_indexes(app, t.name) == {f"ix_{t.name}_v{view['id']}": [code, "id"]}
    shop.ok("POST", "/data/shop/orders", {"fields": {"code": "a", "qty": 2}})
    # a type change rewrites the column; the view's index on the old column must not block it (SQLite)
    shop.ok("PATCH", "/meta/apps/shop/tables/orders/fields/code", {"type": "long_text"})
    assert shop.records("shop", "orders", view="big")[0]["fields"]["code"] == "a"
    shop.ok("DELETE", "/meta/apps/shop/tables/orders/views/big")
    assert _view_indexes(app, t.name) == {}


def test_a_large_batch_writes_every_value_in_order(shop: Api) -> None:
    """Batches from 50 records take PostgreSQL's COPY path; values, order, history and events stay the same."""
    a, b = firms(shop, "A", "B")
    items = [{"fields": {"code": f"c{i:03d}", "qty": i, "firm": a if i % 2 else b, "partners": [b] if i % 3 else [],
                         **({"note": f"n{i}"} if i % 5 == 0 else {})}} for i in range(120)]
    recs = shop.ok("POST", "/data/shop/orders", {"records": items})["records"]
    assert [r["fields"]["code"] for r in recs] == [f"c{i:03d}" for i in range(120)]
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)
    listed = {r["fields"]["code"]: r["fields"] for r in shop.records("shop", "orders", limit=500)}
    for i in range(120):
        got = listed[f"c{i:03d}"]
        assert got["qty"] == i and got["firm"]["id"] == (a if i % 2 else b)
        assert got["note"] == (f"n{i}" if i % 5 == 0 else "none")
        assert [p["id"] for p in got["partners"]] == ([b] if i % 3 else [])
    with db.transaction(shop.client.application.extensions["formwork"].engine) as conn:
        orders = shop.client.application.extensions["formwork"].catalogs.get(conn).table("shop", "orders")
        hist = conn.execute(db.history.select().where(db.history.c.record_id.in_([r["id"] for r in recs]),
                                                      db.history.c.table_id == orders.id,
                                                      db.history.c.action == "create")).all()
    assert len(hist) == 120
    before = db_snapshot(shop.client.application)
    status, err = shop.post("/data/shop/orders", {"records": [{"fields": {"code": f"z{i}"}} for i in range(60)]
                                                   + [{"fields": {"code": "c007"}}]})
    assert status == 409 and "records/60/code" in err["error"]["details"]
    assert db_snapshot(shop.client.application) == before


def test_a_table_of_an_older_catalog_reads_and_writes_through_a_newer_one(shop: Api, app: Any) -> None:
    """Column lists are cached per catalog; a caller holding an older TableDef must not get another's columns."""
    from formwork.runtime.permissions import Access
    from formwork.runtime.records import RecordReader, RecordService

    p = app.extensions["formwork"]
    (a,) = firms(shop, "A")
    rec = shop.ok("POST", "/data/shop/orders", {"fields": {"code": "k1", "firm": a}})
    old = p.catalogs.get().table("shop", "orders")
    # any definition change makes a new catalog with new TableDef objects (here: a view on another table)
    shop.ok("POST", "/meta/apps/shop/tables/firms/views", {"key": "all", "label": "All", "type": "grid"})
    with db.transaction(p.engine) as conn:
        new_cat = p.catalogs.get(conn)
        assert new_cat.table("shop", "orders") is not old
        reader = RecordReader(new_cat, conn, Access.system())
        assert reader.get(new_cat.table("shop", "orders"), rec["id"])["fields"]["code"] == "k1"
        assert reader.get(old, rec["id"])["fields"]["firm"] == {"id": a, "display": "A"}
        made = RecordService(new_cat, conn, Access.system()).create(old, {"code": "k2", "qty": 4})
    assert made["fields"]["code"] == "k2" and made["fields"]["qty"] == 4
