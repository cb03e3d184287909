"""Creating every field type through the API, writing a record and reading it back, with options enforced."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Api, db_snapshot

ALL_TYPES = {"text", "long_text", "number", "decimal", "currency", "percent", "rating", "duration", "date",
             "datetime", "checkbox", "single_select", "multi_select", "email", "phone", "url", "user", "link",
             "lookup", "rollup", "formula", "autonumber", "created_at", "updated_at", "created_by", "updated_by",
             "attachment"}
STAGES = {"choices": [{"value": "lead", "label": {"en": "Lead", "zh-CN": "线索"}}, {"value": "won"},
                      {"value": "lost"}]}


def stored_file(admin: Api) -> str:
    """Upload a file through POST /files: an attachment field takes the token it returns."""
    import io

    resp = admin.client.post("/api/v1/files", data={"file": (io.BytesIO(b"hello"), "hi.txt", "text/plain")},
                             headers={"Authorization": f"Bearer {admin.token}"}, content_type="multipart/form-data")
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["token"])


def make_app(admin: Api, key: str = "crm") -> None:
    admin.ok("POST", "/meta/apps", {"key": key, "label": {"en": "CRM", "zh-CN": "客户管理"}})


def add_field(admin: Api, table: str, doc: dict[str, Any], app: str = "crm") -> dict[str, Any]:
    return admin.ok("POST", f"/meta/apps/{app}/tables/{table}/fields", doc)  # type: ignore[no-any-return]


def test_field_type_catalogue_lists_every_type(admin: Api) -> None:
    types = admin.ok("GET", "/meta/field-types")
    assert {t["type"] for t in types} == ALL_TYPES
    by_type = {t["type"]: t for t in types}
    assert by_type["formula"]["read_only"] is True
    assert by_type["text"]["read_only"] is False
    assert "contains" in by_type["text"]["operators"]
    assert "gte" in by_type["number"]["operators"]


def test_every_stored_type_round_trips_through_the_data_api(admin: Api) -> None:
    make_app(admin)
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "things", "label": "Things", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "notes", "label": "Notes", "type": "long_text"},
        {"key": "qty", "label": "Qty", "type": "number"},
        {"key": "ratio", "label": "Ratio", "type": "decimal", "options": {"precision": 3}},
        {"key": "price", "label": "Price", "type": "currency", "options": {"currency": "CNY"}},
        {"key": "share", "label": "Share", "type": "percent"},
        {"key": "stars", "label": "Stars", "type": "rating", "options": {"max": 5}},
        {"key": "took", "label": "Took", "type": "duration"},
        {"key": "due", "label": "Due", "type": "date"},
        {"key": "at", "label": "At", "type": "datetime"},
        {"key": "done", "label": "Done", "type": "checkbox"},
        {"key": "stage", "label": "Stage", "type": "single_select", "options": STAGES},
        {"key": "tags", "label": "Tags", "type": "multi_select",
         "options": {"choices": [{"value": "a"}, {"value": "b"}, {"value": "c"}]}},
        {"key": "mail", "label": "Mail", "type": "email"},
        {"key": "tel", "label": "Tel", "type": "phone"},
        {"key": "site", "label": "Site", "type": "url"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "helpers", "label": "Helpers", "type": "user", "options": {"multiple": True}},
        {"key": "files", "label": "Files", "type": "attachment"},
        {"key": "made", "label": "Made", "type": "created_at"},
        {"key": "changed", "label": "Changed", "type": "updated_at"},
        {"key": "maker", "label": "Maker", "type": "created_by"},
        {"key": "changer", "label": "Changer", "type": "updated_by"},
    ]})
    token = stored_file(admin)
    values = {"name": "Acme 公司", "notes": "line 1\nline 2", "qty": 12, "ratio": "0.1235", "price": "1,200.50",
              "share": 12.5, "stars": 4, "took": "1:30", "due": "2026-11-23", "at": "2026-11-23T09:30:00+08:00",
              "done": True, "stage": "won", "tags": ["b", "a"], "mail": "Sales@Example.COM",
              "tel": "+86 10 1234 5678", "site": "example.com/x", "owner": "admin", "helpers": ["admin"],
              "files": [token]}
    rec = admin.ok("POST", "/data/crm/things", {"fields": values})
    got = admin.ok("GET", f"/data/crm/things/{rec['id']}")["fields"]
    assert got["name"] == "Acme 公司"
    assert got["notes"] == "line 1\nline 2"
    assert got["qty"] == 12
    assert got["ratio"] == pytest.approx(0.124)  # precision 3, rounded half up from 0.1235
    assert got["price"] == 1200.5
    assert got["share"] == 12.5
    assert got["stars"] == 4
    assert got["took"] == 5400
    assert got["due"] == "2026-11-23"
    assert got["at"] == "2026-11-23T01:30:00Z"
    assert got["done"] is True
    assert got["stage"] == "won"
    assert got["tags"] == ["b", "a"]
    assert got["mail"] == "sales@example.com"
    assert got["tel"] == "+86 10 1234 5678"
    assert got["site"] == "https://example.com/x"
    assert got["owner"]["name"] == "Admin"
    assert [u["name"] for u in got["helpers"]] == ["Admin"]
    assert [f["name"] for f in got["files"]] == ["hi.txt"]
    assert got["made"].endswith("Z") and got["changed"].endswith("Z")
    assert got["maker"]["name"] == "Admin" and got["changer"]["name"] == "Admin"
    for ro in ("made", "changed", "maker", "changer"):
        status, err = admin.patch(f"/data/crm/things/{rec['id']}", {"fields": {ro: "2026-01-01"}})
        assert status == 422 and ro in err["error"]["details"]


def test_links_to_one_and_to_many_with_reverse(admin: Api) -> None:
    make_app(admin)
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "title", "label": "Title", "type": "text"},
        {"key": "amount", "label": "Amount", "type": "currency"}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "tags", "label": "Tags", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    one = add_field(admin, "deals", {"key": "customer", "label": "Customer", "type": "link",
                                     "options": {"table": "customers", "reverse_key": "deals",
                                                 "reverse_label": {"en": "Deals", "zh-CN": "商机"}}})
    assert one["options"] == {"table": "customers", "multiple": False, "reverse_key": "deals"}
    many = add_field(admin, "deals", {"key": "tags", "label": "Tags", "type": "link",
                                      "options": {"table": "tags", "multiple": True}})
    assert many["options"]["multiple"] is True
    cust_fields = {f["key"]: f for f in admin.ok("GET", "/meta/apps/crm/tables/customers")["fields"]}
    assert cust_fields["deals"]["type"] == "link"
    assert cust_fields["deals"]["label"] == {"en": "Deals", "zh-CN": "商机"}
    assert cust_fields["deals"]["options"] == {"table": "deals", "multiple": True, "reverse_key": "customer"}
    tag_fields = {f["key"] for f in admin.ok("GET", "/meta/apps/crm/tables/tags")["fields"]}
    assert "deals" in tag_fields  # the reverse key defaults to the source table's key

    acme = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Acme"}})["id"]
    t1 = admin.ok("POST", "/data/crm/tags", {"fields": {"name": "hot"}})["id"]
    t2 = admin.ok("POST", "/data/crm/tags", {"fields": {"name": "big"}})["id"]
    d = admin.ok("POST", "/data/crm/deals", {"fields": {"title": "D1", "amount": 100, "customer": acme,
                                                        "tags": [t1, t2]}})
    assert d["fields"]["customer"] == {"id": acme, "display": "Acme"}
    assert sorted(x["display"] for x in d["fields"]["tags"]) == ["big", "hot"]
    c = admin.ok("GET", f"/data/crm/customers/{acme}")["fields"]
    assert c["deals"] == [{"id": d["id"], "display": "D1"}]
    tag = admin.ok("GET", f"/data/crm/tags/{t1}")["fields"]
    assert tag["deals"] == [{"id": d["id"], "display": "D1"}]
    status, err = admin.post("/data/crm/deals", {"fields": {"title": "D2", "customer": 99999}})
    assert status == 422 and "customer" in err["error"]["details"]


@pytest.mark.parametrize("function,expected", [("sum", 350), ("count", 3), ("avg", 350 / 3), ("min", 50),
                                               ("max", 200), ("count_distinct", 3)])
def test_lookup_and_each_rollup_function(admin: Api, function: str, expected: float) -> None:
    make_app(admin)
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "level", "label": "Level", "type": "single_select", "options": STAGES}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "title", "label": "Title", "type": "text"},
        {"key": "amount", "label": "Amount", "type": "number"},
        {"key": "customer", "label": "Customer", "type": "link",
         "options": {"table": "customers", "reverse_key": "deals"}},
        {"key": "customer_level", "label": "Customer level", "type": "lookup",
         "options": {"link": "customer", "field": "level"}}]})
    add_field(admin, "customers", {"key": "total", "label": "Total", "type": "rollup",
                                   "options": {"link": "deals", "field": "amount", "function": function}})
    cid = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Acme", "level": "won"}})["id"]
    other = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Other"}})["id"]
    for title, amount in (("a", 100), ("b", 200), ("c", 50)):
        d = admin.ok("POST", "/data/crm/deals", {"fields": {"title": title, "amount": amount, "customer": cid}})
        assert d["fields"]["customer_level"] == "won"
    admin.ok("POST", "/data/crm/deals", {"fields": {"title": "x", "amount": 999, "customer": other}})
    got = admin.ok("GET", f"/data/crm/customers/{cid}")["fields"]["total"]
    assert got == pytest.approx(expected)
    status, err = admin.patch(f"/data/crm/customers/{cid}", {"fields": {"total": 1}})
    assert status == 422 and "total" in err["error"]["details"]


def test_formula_and_autonumber(admin: Api) -> None:
    make_app(admin)
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "orders", "label": "Orders", "fields": [
        {"key": "qty", "label": "Qty", "type": "number"},
        {"key": "price", "label": "Price", "type": "decimal"},
        {"key": "total", "label": "Total", "type": "formula", "options": {"formula": "{qty} * {price}"}}]})
    ids = [admin.ok("POST", "/data/crm/orders", {"fields": {"qty": q, "price": "2.5"}})["id"] for q in (1, 2, 3)]
    assert admin.ok("GET", f"/data/crm/orders/{ids[1]}")["fields"]["total"] == 5
    f = add_field(admin, "orders", {"key": "no", "label": "No.", "type": "autonumber",
                                    "options": {"prefix": "ORD-", "digits": 4, "start": 7}})
    assert f["read_only"] is True
    got = [admin.ok("GET", f"/data/crm/orders/{i}")["fields"]["no"] for i in ids]
    assert got == ["ORD-0007", "ORD-0008", "ORD-0009"]  # existing rows numbered in creation order
    new = admin.ok("POST", "/data/crm/orders", {"fields": {"qty": 9, "price": 1}})
    assert new["fields"]["no"] == "ORD-0010"
    status, err = admin.post("/data/crm/orders", {"fields": {"no": "ORD-1"}})
    assert status == 422 and "no" in err["error"]["details"]


def test_options_are_enforced(admin: Api) -> None:
    make_app(admin)
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "people", "label": "People", "fields": [
        {"key": "name", "label": "Name", "type": "text", "required": True, "options": {"max_length": 10}},
        {"key": "code", "label": "Code", "type": "text", "unique": True, "options": {"regex": "[A-Z]{3}-\\d+"}},
        {"key": "age", "label": "Age", "type": "number", "options": {"min": 0, "max": 150}},
        {"key": "score", "label": "Score", "type": "decimal", "options": {"precision": 1}},
        {"key": "status", "label": "Status", "type": "single_select", "default": "lead", "options": STAGES},
        {"key": "country", "label": "Country", "type": "text", "default": "CN"}]})

    def bad(fields: dict[str, Any], key: str) -> None:
        before = db_snapshot(admin.client.application)
        status, err = admin.post("/data/crm/people", {"fields": fields})
        assert status in (409, 422), (status, err)
        assert key in (err["error"].get("details") or {}) or key in err["error"]["message"], err
        assert db_snapshot(admin.client.application) == before

    bad({"code": "ABC-1"}, "name")
    bad({"name": "a" * 11}, "name")
    bad({"name": "x", "code": "abc"}, "code")
    bad({"name": "x", "age": -1}, "age")
    bad({"name": "x", "age": 151}, "age")
    bad({"name": "x", "status": "nope"}, "status")
    rec = admin.ok("POST", "/data/crm/people", {"fields": {"name": "Li", "code": "ABC-1", "age": 30,
                                                           "score": "4.26"}})
    assert rec["fields"]["status"] == "lead" and rec["fields"]["country"] == "CN"
    assert rec["fields"]["score"] == 4.3
    bad({"name": "Wang", "code": "ABC-1"}, "code")


def test_new_field_default_fills_existing_rows(admin: Api) -> None:
    make_app(admin)
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "people", "label": "People", "fields": [
        {"key": "name", "label": "Name", "type": "text"}]})
    rid = admin.ok("POST", "/data/crm/people", {"fields": {"name": "Li"}})["id"]
    add_field(admin, "people", {"key": "active", "label": "Active", "type": "checkbox", "default": True})
    add_field(admin, "people", {"key": "tier", "label": "Tier", "type": "number", "default": 3})
    got = admin.ok("GET", f"/data/crm/people/{rid}")["fields"]
    assert got["active"] is True and got["tier"] == 3
