"""Records through the HTTP API: sorting and paging, writes, batches, concurrency, history, rules, bulk changes."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select

from formwork import db
from tests.helpers import Api, db_snapshot


def make_user(app: Any, username: str) -> tuple[int, Api]:
    from formwork.runtime import auth

    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = auth.create_user(conn, {"username": username, "name": username.title(), "password": "pass-word-99"},
                               is_admin=True)
        token = auth.create_token(conn, uid, "tests", None)["token"]
    return uid, Api(app.test_client(), token)


def outbox(app: Any, event: str) -> list[int]:
    with app.extensions["formwork"].engine.connect() as conn:
        return [r[0] for r in conn.execute(select(db.outbox.c.record_id).where(db.outbox.c.event == event)
                                           .order_by(db.outbox.c.id))]


def qs(**params: Any) -> str:
    return "&".join(f"{k}={quote(json.dumps(v) if isinstance(v, dict | list) else str(v))}" for k, v in params.items())


# --- sorting and paging ----------------------------------------------------------------------------------
PEOPLE = [  # name, score, stage, company index, city
    ("p01", 5, "won", 0, "Beijing"), ("p02", None, "lead", 1, "上海"), ("p03", 5, None, 2, "Beijing"),
    ("p04", 7, "lost", None, "Hangzhou"), ("p05", None, "qualified", 0, None), ("p06", 1, "lead", 1, "上海"),
    ("p07", 5, "won", 2, "Shenzhen 100%"), ("p08", 7, "lead", 0, "Beijing"), ("p09", None, None, None, None),
    ("p10", 3, "qualified", 1, "Hangzhou"), ("p11", 5, "lost", 0, "beijing"),
]


def build_people(admin: Api) -> dict[str, int]:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "companies", "label": "Companies", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "people", "label": "People", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "score", "label": "Score", "type": "number"},
        {"key": "stage", "label": "Stage", "type": "single_select", "options": {"choices": [
            {"value": "lead"}, {"value": "qualified"}, {"value": "won"}, {"value": "lost"}]}},
        {"key": "company", "label": "Company", "type": "link", "options": {"table": "companies"}},
        {"key": "city", "label": "City", "type": "text"},
        {"key": "email", "label": "Email", "type": "email"},
        {"key": "note", "label": "Note", "type": "long_text"}]})
    comps = admin.ok("POST", "/data/crm/companies", {"records": [
        {"fields": {"name": "Zeta"}}, {"fields": {"name": "Alpha"}}, {"fields": {"name": "Mid"}}]})["records"]
    cids = [c["id"] for c in comps]
    recs = admin.ok("POST", "/data/crm/people", {"records": [
        {"fields": {"name": n, "score": s, "stage": st, "company": None if c is None else cids[c], "city": city}}
        for n, s, st, c, city in PEOPLE]})["records"]
    return {r["fields"]["name"]: r["id"] for r in recs}


def order(admin: Api, sort: str, **extra: Any) -> list[str]:
    return [r["fields"]["name"] for r in admin.records("crm", "people", sort=sort, fields="name", limit=1000, **extra)]


def test_sort_orders(admin: Api) -> None:
    build_people(admin)
    # NULLs last in both directions, ties broken by id
    assert order(admin, "score") == ["p06", "p10", "p01", "p03", "p07", "p11", "p04", "p08", "p02", "p05", "p09"]
    assert order(admin, "-score") == ["p04", "p08", "p01", "p03", "p07", "p11", "p10", "p06", "p02", "p05", "p09"]
    assert order(admin, "-score,-name") == ["p08", "p04", "p11", "p07", "p03", "p01", "p10", "p06", "p09", "p05",
                                            "p02"]
    # single select: by the choices' order, not alphabetically
    assert order(admin, "stage") == ["p02", "p06", "p08", "p05", "p10", "p01", "p07", "p04", "p11", "p03", "p09"]
    assert order(admin, "-stage,score") == ["p11", "p04", "p01", "p07", "p10", "p05", "p06", "p08", "p02", "p03",
                                            "p09"]
    # a link sorts by the linked record's display value (Alpha, Mid, Zeta)
    assert order(admin, "company,name") == ["p02", "p06", "p10", "p03", "p07", "p01", "p05", "p08", "p11", "p04",
                                            "p09"]
    assert order(admin, "-company") == ["p01", "p05", "p08", "p11", "p03", "p07", "p02", "p06", "p10", "p04", "p09"]
    assert order(admin, "-id")[:2] == ["p11", "p10"]
    assert order(admin, "") == [p[0] for p in PEOPLE]


SPECS = ["score", "-score", "-score,-name", "stage", "-stage,score", "company", "-company,score", "city",
         "-city", "name", "-id"]


def test_keyset_pages_walk_every_record_once(admin: Api) -> None:
    build_people(admin)
    flt = {"field": "name", "op": "ne", "value": "p05"}
    for spec in SPECS:
        for extra in ({}, {"filter": flt}):
            full = order(admin, spec, **extra)
            for size in (1, 2, 3, 4):
                seen: list[str] = []
                cursor = None
                for _ in range(30):
                    params: dict[str, Any] = {"sort": spec, "fields": "name", "limit": size, **extra}
                    if cursor:
                        params["cursor"] = cursor
                    page = admin.ok("GET", f"/data/crm/people?{qs(**params)}")
                    assert len(page["records"]) <= size
                    seen += [r["fields"]["name"] for r in page["records"]]
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                assert seen == full, (spec, extra, size)


def test_offset_count_fields_search_and_views(admin: Api) -> None:
    build_people(admin)
    full = order(admin, "-score")
    page = admin.ok("GET", f"/data/crm/people?{qs(sort='-score', offset=3, limit=4, fields='name', count='true')}")
    assert [r["fields"]["name"] for r in page["records"]] == full[3:7]
    assert page["total"] == 11
    page = admin.ok("GET", f"/data/crm/people?{qs(filter={'field': 'score', 'op': 'gte', 'value': 5}, count='true')}")
    assert page["total"] == 6 and len(page["records"]) == 6 and page["next_cursor"] is None
    assert "total" not in admin.ok("GET", "/data/crm/people")
    recs = admin.records("crm", "people", fields="name,stage", limit=2)
    assert all(set(r["fields"]) == {"name", "stage"} for r in recs)
    assert set(recs[0]) == {"id", "version", "created_at", "updated_at", "fields"}
    # search: text-like fields, case-insensitive, wildcards literal
    found = admin.records("crm", "people", search="BEIJING")
    assert {r["fields"]["name"] for r in found} == {"p01", "p03", "p08", "p11"}
    assert {r["fields"]["name"] for r in admin.records("crm", "people", search="上海")} == {"p02", "p06"}
    assert {r["fields"]["name"] for r in admin.records("crm", "people", search="100%")} == {"p07"}
    assert admin.records("crm", "people", search="%") == admin.records("crm", "people", search="100%")
    assert admin.records("crm", "people", search="_") == []
    # a saved view applies its filter, sort and fields; `filter` narrows it
    admin.ok("POST", "/meta/apps/crm/tables/people/views", {
        "key": "scored", "label": "Scored", "type": "grid", "sort": ["-score", "name"], "fields": ["name", "score"],
        "filter": {"field": "score", "op": "is_not_empty"}})
    recs = admin.records("crm", "people", view="scored")
    assert [r["fields"]["name"] for r in recs] == ["p04", "p08", "p01", "p03", "p07", "p11", "p10", "p06"]
    assert all(set(r["fields"]) == {"name", "score"} for r in recs)
    narrowed = admin.records("crm", "people", view="scored", filter={"field": "city", "op": "eq", "value": "beijing"})
    assert [r["fields"]["name"] for r in narrowed] == ["p08", "p01", "p03", "p11"]
    by_name = admin.records("crm", "people", view="scored", sort="name")
    assert [r["fields"]["name"] for r in by_name][:2] == ["p01", "p03"]
    status, _ = admin.get("/data/crm/people?view=nope")
    assert status == 404


def test_cursor_belongs_to_its_query(admin: Api) -> None:
    build_people(admin)
    page = admin.ok("GET", f"/data/crm/people?{qs(sort='score', limit=2)}")
    cursor = page["next_cursor"]
    assert cursor
    for other in ({"sort": "-score"}, {"sort": "score", "search": "x"},
                  {"sort": "score", "filter": {"field": "score", "op": "gt", "value": 1}}):
        status, err = admin.get(f"/data/crm/people?{qs(cursor=cursor, **other)}")
        assert status == 400 and "cursor" in err["error"]["message"]
    status, _ = admin.get(f"/data/crm/people?{qs(sort='score', cursor=cursor, offset=2)}")
    assert status == 400


# --- writing records -------------------------------------------------------------------------------------
def build_deals(admin: Api, validations: list[dict[str, Any]] | None = None) -> None:
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": "Sales"})
    table: dict[str, Any] = {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True},
        {"key": "code", "label": "Code", "type": "text", "unique": True},
        {"key": "amount", "label": "Amount", "type": "currency", "options": {"currency": "CNY"}},
        {"key": "stage", "label": "Stage", "type": "single_select", "options": {"choices": [
            {"value": "lead"}, {"value": "won"}, {"value": "lost"}]}},
        {"key": "closed", "label": "Closed", "type": "date"},
        {"key": "no", "label": "No.", "type": "autonumber", "options": {"prefix": "D-", "digits": 4}},
        {"key": "made_at", "label": "Created", "type": "created_at"},
        {"key": "changed_at", "label": "Updated", "type": "updated_at"},
        {"key": "creator", "label": "Creator", "type": "created_by"},
        {"key": "editor", "label": "Editor", "type": "updated_by"},
        {"key": "twice", "label": "Twice", "type": "formula", "options": {"formula": "{amount} * 2"}}]}
    if validations:
        table["validations"] = validations
    admin.ok("POST", "/meta/apps/sales/tables", table)


def test_create_read_update_delete_restore(app: Any, admin: Api) -> None:
    build_deals(admin)
    _bob_id, bob = make_user(app, "bob")
    rec = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "amount": "1200.50", "stage": "lead"}})
    assert admin.last.status_code == 201
    rid = rec["id"]
    assert rec["version"] == 1 and rec["created_at"].endswith("Z")
    f = rec["fields"]
    assert f["name"] == "Acme" and f["amount"] == 1200.5 and f["stage"] == "lead" and f["twice"] == 2401
    assert f["no"] == "D-0001" and f["creator"]["name"] == "Admin" and f["editor"]["name"] == "Admin"
    assert f["made_at"] == rec["created_at"]
    got = admin.ok("GET", f"/data/sales/deals/{rid}")
    assert admin.last.headers["ETag"] == '"1"' and got == rec
    upd = bob.ok("PATCH", f"/data/sales/deals/{rid}", {"fields": {"stage": "won"}})
    assert upd["version"] == 2 and upd["fields"]["name"] == "Acme" and upd["fields"]["stage"] == "won"
    assert upd["fields"]["editor"]["name"] == "Bob" and upd["fields"]["creator"]["name"] == "Admin"
    assert upd["fields"]["no"] == "D-0001" and upd["updated_at"] >= rec["updated_at"]
    assert bob.last.headers["ETag"] == '"2"'
    second = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Beta"}})
    assert second["fields"]["no"] == "D-0002" and second["fields"]["amount"] is None
    status, _ = admin.delete(f"/data/sales/deals/{rid}")
    assert status == 204
    assert admin.get(f"/data/sales/deals/{rid}")[0] == 404
    assert [r["id"] for r in admin.records("sales", "deals")] == [second["id"]]
    assert admin.delete(f"/data/sales/deals/{rid}")[0] == 404
    restored = admin.ok("POST", f"/data/sales/deals/{rid}/restore")
    assert restored["fields"]["stage"] == "won" and restored["version"] == 4
    assert admin.post(f"/data/sales/deals/{rid}/restore")[0] == 404
    assert len(admin.records("sales", "deals")) == 2
    entries = admin.ok("GET", f"/data/sales/deals/{rid}/history")["entries"]
    assert [e["action"] for e in entries] == ["restore", "delete", "update", "create"]
    assert entries[2]["changes"] == {"stage": {"old": "lead", "new": "won"}} and entries[2]["user"]["name"] == "Bob"
    assert entries[3]["changes"]["amount"] == {"old": None, "new": 1200.5}
    assert entries[3]["user"]["name"] == "Admin" and entries[3]["at"].endswith("Z")
    assert outbox(app, "record_created") == [rid, second["id"], rid]
    assert outbox(app, "record_updated") == [rid] and outbox(app, "record_deleted") == [rid]


def test_batch_create_and_patch_are_all_or_nothing(app: Any, admin: Api) -> None:
    build_deals(admin)
    recs = admin.ok("POST", "/data/sales/deals", {"records": [{"fields": {"name": f"d{i}", "amount": i}}
                                                              for i in range(1000)]})["records"]
    assert len(recs) == 1000 and recs[-1]["fields"]["no"] == "D-1000"
    before = db_snapshot(app)
    status, err = admin.post("/data/sales/deals", {"records": [
        {"fields": {"name": "ok"}}, {"fields": {"name": "bad", "amount": "lots", "stage": "maybe"}},
        {"fields": {"amount": 3}}, {"fields": {"name": "x", "nope": 1, "no": 5}}]})
    assert status == 422
    assert err["error"]["details"] == {
        "records/1/amount": ["must be a number"], "records/1/stage": ["'maybe' is not one of: lead, won, lost"],
        "records/2/name": ["is required"], "records/3/nope": ["is not a field of this table"],
        "records/3/no": ["is read-only"]}
    assert admin.post("/data/sales/deals", {"records": [{"fields": {"name": "x"}}] * 1001})[0] == 413
    status, err = admin.patch("/data/sales/deals", {"records": [
        {"id": recs[0]["id"], "fields": {"amount": 5}}, {"id": recs[1]["id"], "fields": {"amount": "x"}}]})
    assert status == 422 and set(err["error"]["details"]) == {"records/1/amount"}
    status, _ = admin.patch("/data/sales/deals", {"records": [
        {"id": recs[0]["id"], "fields": {"amount": 5}}, {"id": 999999, "fields": {"amount": 1}}]})
    assert status == 404
    assert admin.post("/data/sales/deals", {"records": []})[0] == 400
    assert db_snapshot(app) == before
    assert admin.ok("GET", f"/data/sales/deals/{recs[0]['id']}")["fields"]["amount"] == 0
    out = admin.ok("PATCH", "/data/sales/deals", {"records": [
        {"id": recs[0]["id"], "fields": {"amount": 5}}, {"id": recs[1]["id"], "fields": {"stage": "won"}}]})
    assert [r["fields"]["amount"] for r in out["records"]] == [5, 1]
    assert out["records"][1]["fields"]["stage"] == "won"


def test_read_only_unknown_and_every_invalid_field(app: Any, admin: Api) -> None:
    build_deals(admin)
    rid = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme"}})["id"]
    before = db_snapshot(app)
    for key, value in (("no", 5), ("no", None), ("made_at", "2026-01-01T00:00:00Z"), ("changed_at", None),
                       ("creator", 1), ("editor", None), ("twice", 3)):
        for method, path in (("POST", "/data/sales/deals"), ("PATCH", f"/data/sales/deals/{rid}")):
            status, err = admin.call(method, path, {"fields": {"name": "x", key: value}})
            assert status == 422 and err["error"]["details"] == {key: ["is read-only"]}, (key, method)
    status, err = admin.post("/data/sales/deals", {"fields": {"amount": "1e99", "closed": "2026-02-30",
                                                              "stage": 3, "ghost": 1}})
    assert status == 422
    assert set(err["error"]["details"]) == {"name", "amount", "closed", "stage", "ghost"}
    assert err["error"]["message"] == "5 fields are invalid"
    assert db_snapshot(app) == before
    assert admin.ok("GET", f"/data/sales/deals/{rid}")["version"] == 1


def test_unique_values(app: Any, admin: Api) -> None:
    build_deals(admin)
    a = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "A", "code": "X1"}})
    b = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "B", "code": "X2"}})
    before = db_snapshot(app)
    status, err = admin.post("/data/sales/deals", {"fields": {"name": "C", "code": "X1"}})
    assert status == 409 and err["error"]["details"] == {"code": ["is already used by another record"]}
    assert admin.patch(f"/data/sales/deals/{b['id']}", {"fields": {"code": "X1"}})[0] == 409
    status, err = admin.post("/data/sales/deals", {"records": [{"fields": {"name": "C", "code": "Y"}},
                                                              {"fields": {"name": "D", "code": "Y"}}]})
    assert status == 409 and "records/1/code" in err["error"]["details"]
    assert db_snapshot(app) == before
    # a trashed record keeps its value (so that it can be restored)
    admin.delete(f"/data/sales/deals/{a['id']}")
    status, err = admin.post("/data/sales/deals", {"fields": {"name": "C", "code": "X1"}})
    assert status == 409 and err["error"]["details"] == {"code": ["is already used by a record in the trash"]}
    assert admin.ok("POST", f"/data/sales/deals/{a['id']}/restore")["fields"]["code"] == "X1"
    assert admin.ok("PATCH", f"/data/sales/deals/{b['id']}", {"fields": {"code": "X2"}})["version"] == 2


def test_stale_if_match_gets_412_with_the_current_record(app: Any, admin: Api) -> None:
    build_deals(admin)
    rid = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "amount": 1}})["id"]
    admin.ok("GET", f"/data/sales/deals/{rid}")
    etag = admin.last.headers["ETag"]
    admin.ok("PATCH", f"/data/sales/deals/{rid}", {"fields": {"amount": 2}}, headers={"If-Match": etag})
    before = db_snapshot(app)
    status, body = admin.patch(f"/data/sales/deals/{rid}", {"fields": {"amount": 3}}, headers={"If-Match": etag})
    assert status == 412 and body["error"]["code"] == "precondition_failed"
    assert body["current"]["version"] == 2 and body["current"]["fields"]["amount"] == 2
    assert admin.patch(f"/data/sales/deals/{rid}", {"fields": {"amount": 3}}, headers={"If-Match": "abc"})[0] == 400
    status, _ = admin.patch("/data/sales/deals", {"records": [{"id": rid, "version": 1, "fields": {"amount": 3}}]})
    assert status == 412
    assert admin.patch("/data/sales/deals", {"records": [{"id": rid, "version": "2", "fields": {}}]})[0] == 400
    assert db_snapshot(app) == before
    admin.ok("PATCH", f"/data/sales/deals/{rid}", {"fields": {"amount": 3}}, headers={"If-Match": '"2"'})


def test_two_writers_racing_on_one_record(app: Any, admin: Api) -> None:
    build_deals(admin)
    rid = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Acme", "amount": 1}})["id"]
    clients = [Api(app.test_client(), admin.token), Api(app.test_client(), admin.token)]
    for round_ in range(3):
        version = admin.ok("GET", f"/data/sales/deals/{rid}")["version"]
        barrier = threading.Barrier(2)
        results: list[tuple[int, Any]] = [(0, None), (0, None)]

        def write(i: int, version: int = version, barrier: threading.Barrier = barrier,
                  results: list[tuple[int, Any]] = results) -> None:
            barrier.wait()
            results[i] = clients[i].patch(f"/data/sales/deals/{rid}", {"fields": {"amount": 100 + i}},
                                          headers={"If-Match": f'"{version}"'})

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        statuses = sorted(s for s, _ in results)
        assert statuses == [200, 412], (round_, results)
        winner = next(i for i, (s, _) in enumerate(results) if s == 200)
        final = admin.ok("GET", f"/data/sales/deals/{rid}")
        assert final["version"] == version + 1 and final["fields"]["amount"] == 100 + winner
    # without If-Match, two writers changing different fields both land (no lost update)
    barrier2 = threading.Barrier(2)
    done: list[int] = []

    def edit(i: int) -> None:
        barrier2.wait()
        done.append(clients[i].patch(f"/data/sales/deals/{rid}", {"fields": [{"stage": "won"},
                                                                             {"closed": "2026-05-01"}][i]})[0])

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert done == [200, 200]
    final = admin.ok("GET", f"/data/sales/deals/{rid}")["fields"]
    assert final["stage"] == "won" and final["closed"] == "2026-05-01"


def test_table_validation_rules(app: Any, admin: Api) -> None:
    build_deals(admin, validations=[
        {"key": "won_needs_date", "when": {"field": "stage", "op": "eq", "value": "won"},
         "condition": {"field": "closed", "op": "is_not_empty"},
         "message": {"en": "a won deal needs a close date", "zh-CN": "赢单需要成交日期"}},
        {"condition": {"field": "amount", "op": "gte", "value": 0}, "message": "amount must not be negative"}])
    ok = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "A", "amount": 5}})
    before = db_snapshot(app)
    status, err = admin.post("/data/sales/deals", {"fields": {"name": "B", "stage": "won", "amount": 1}})
    assert status == 422 and err["error"]["details"] == {"won_needs_date": ["a won deal needs a close date"]}
    status, err = admin.post("/data/sales/deals", {"fields": {"name": "B", "stage": "won", "amount": -1}})
    assert status == 422 and set(err["error"]["details"]) == {"won_needs_date", "validations/1"}
    status, err = admin.patch(f"/data/sales/deals/{ok['id']}", {"fields": {"stage": "won"}})
    assert status == 422 and "won_needs_date" in err["error"]["details"]
    status, err = admin.post("/data/sales/deals", {"records": [{"fields": {"name": "C", "amount": 1}},
                                                              {"fields": {"name": "D", "amount": -3}}]})
    assert status == 422 and err["error"]["details"] == {"records/1/validations/1": ["amount must not be negative"]}
    status, err = admin.patch("/data/sales/deals", {"records": [{"id": ok["id"], "fields": {"amount": -2}}]})
    assert status == 422 and err["error"]["details"] == {"records/0/validations/1": ["amount must not be negative"]}
    status, err = admin.post("/data/sales/deals/bulk-update", {"filter": {"and": []}, "fields": {"stage": "won"}})
    assert status == 422 and err["error"]["details"] == {f"record:{ok['id']}/won_needs_date":
                                                          ["a won deal needs a close date"]}
    assert db_snapshot(app) == before
    done = admin.ok("PATCH", f"/data/sales/deals/{ok['id']}", {"fields": {"stage": "won", "closed": "2026-01-02"}})
    assert done["fields"]["stage"] == "won"


def test_bulk_update_and_bulk_delete_by_filter(app: Any, admin: Api) -> None:
    build_deals(admin)
    recs = admin.ok("POST", "/data/sales/deals", {"records": [
        {"fields": {"name": f"d{i}", "amount": i, "stage": "lead"}} for i in range(6)]})["records"]
    ids = [r["id"] for r in recs]
    before = db_snapshot(app)
    status, err = admin.post("/data/sales/deals/bulk-update", {"filter": {"field": "amount", "op": "gte", "value": 3},
                                                              "fields": {"stage": "nope", "no": 1}})
    assert status == 422 and set(err["error"]["details"]) == {"stage", "no"}
    assert admin.post("/data/sales/deals/bulk-update", {"fields": {"stage": "won"}})[0] == 400
    assert admin.post("/data/sales/deals/bulk-update", {"filter": {"field": "x", "op": "eq", "value": 1},
                                                        "fields": {"stage": "won"}})[0] == 400
    assert db_snapshot(app) == before
    res = admin.ok("POST", "/data/sales/deals/bulk-update", {"filter": {"field": "amount", "op": "gte", "value": 3},
                                                             "fields": {"stage": "won"}})
    assert res == {"updated": 3}
    won = admin.records("sales", "deals", filter={"field": "stage", "op": "eq", "value": "won"})
    assert {r["fields"]["name"] for r in won} == {"d3", "d4", "d5"}
    assert outbox(app, "record_updated") == ids[3:]
    for rid in ids[3:]:
        entry = admin.ok("GET", f"/data/sales/deals/{rid}/history")["entries"][0]
        assert entry["action"] == "update" and entry["changes"] == {"stage": {"old": "lead", "new": "won"}}
    res = admin.ok("POST", "/data/sales/deals/bulk-delete", {"filter": {"field": "amount", "op": "lt", "value": 2}})
    assert res == {"deleted": 2}
    assert outbox(app, "record_deleted") == ids[:2]
    assert len(admin.records("sales", "deals")) == 4
    assert admin.ok("POST", "/data/sales/deals/bulk-delete", {"filter": {"field": "amount", "op": "lt", "value": 2}}) \
        == {"deleted": 0}
    assert admin.post("/data/sales/deals/bulk-delete", {})[0] == 400
    with app.extensions["formwork"].engine.connect() as conn:
        actions = dict(conn.execute(select(db.history.c.action, func.count()).group_by(db.history.c.action)).all())
    assert actions == {"create": 6, "update": 3, "delete": 2}


def test_a_duplicate_says_where_it_sits_only_to_who_may_read_it(app: Any, admin: Api) -> None:
    """No unique-value oracle: a writer who can't read the holder of a value learns only that it's taken."""
    from tests.test_aggregate import make_user

    build_deals(admin)
    theirs = admin.ok("POST", "/data/sales/deals", {"fields": {"name": "Admin's", "code": "SECRET-1"}})
    rep, _ = make_user(app, "rep", [{"key": "rep", "label": "Rep", "permissions": {
        "sales.deals": {"read": "own", "create": True, "update": "own"}}}])
    before = db_snapshot(app)
    status, err = rep.post("/data/sales/deals", {"fields": {"name": "Mine", "code": "SECRET-1"}})
    assert status == 409 and err["error"]["details"] == {"code": ["is already used"]}
    assert db_snapshot(app) == before
    admin.delete(f"/data/sales/deals/{theirs['id']}")
    before = db_snapshot(app)
    status, err = rep.post("/data/sales/deals", {"fields": {"name": "Mine", "code": "SECRET-1"}})
    assert status == 409 and err["error"]["details"] == {"code": ["is already used"]}
    assert db_snapshot(app) == before
    mine = rep.ok("POST", "/data/sales/deals", {"fields": {"name": "Mine", "code": "MINE-1"}})
    status, err = rep.post("/data/sales/deals", {"fields": {"name": "Again", "code": "MINE-1"}})
    assert status == 409 and err["error"]["details"] == {"code": ["is already used by another record"]}
    assert mine["fields"]["code"] == "MINE-1"
