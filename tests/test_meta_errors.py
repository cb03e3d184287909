"""Bad metadata input: each is a 4xx naming the problem, and the database is exactly as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import Api, db_snapshot

BAD_KEYS = ["Bad-Key", "1abc", '"; DROP TABLE x; --', "O'Brien", "", "a" * 64, "_x", "naïve", "a b"]


@pytest.fixture
def crm(admin: Api) -> Api:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": "CRM"})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "revenue", "label": "Revenue", "type": "currency"}]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "title", "label": "Title", "type": "text"},
        {"key": "amount", "label": "Amount", "type": "number"},
        {"key": "customer", "label": "Customer", "type": "link", "options": {"table": "customers"}},
        {"key": "double", "label": "Double", "type": "formula", "options": {"formula": "{amount} * 2"}}]})
    cid = admin.ok("POST", "/data/crm/customers", {"fields": {"name": "Acme", "revenue": 10}})["id"]
    admin.ok("POST", "/data/crm/deals", {"fields": {"title": "D", "amount": 5, "customer": cid}})
    return admin


def refused(api: Api, method: str, path: str, body: Any, status: int | tuple[int, ...], names: str,
            raw: bytes | None = None) -> dict[str, Any]:
    """Send a bad request; check the status, that ``names`` appears in the error, and that nothing changed."""
    app = api.client.application
    before = db_snapshot(app)
    got, err = api.call(method, path, body, raw=raw)
    allowed = status if isinstance(status, tuple) else (status,)
    assert got in allowed, (got, err)
    text = json.dumps(err["error"], ensure_ascii=False)
    assert names in text, (names, err)
    assert db_snapshot(app) == before
    return err["error"]  # type: ignore[no-any-return]


FIELDS = "/meta/apps/crm/tables/deals/fields"


def test_unknown_field_type(crm: Api) -> None:
    err = refused(crm, "POST", FIELDS, {"key": "x", "label": "X", "type": "hologram"}, 422, "/type")
    assert "hologram" in json.dumps(err)


@pytest.mark.parametrize("doc,pointer", [
    ({"type": "number", "options": {"min": "abc"}}, "/options/min"),
    ({"type": "rating", "options": {"max": 11}}, "/options/max"),
    ({"type": "text", "options": {"max_length": 0}}, "/options/max_length"),
    ({"type": "text", "options": {"bogus": 1}}, "bogus"),
    ({"type": "single_select", "options": {}}, "choices"),
    ({"type": "single_select", "options": {"choices": "a,b"}}, "/options/choices"),
    ({"type": "currency", "options": {"currency": "yuan"}}, "/options/currency"),
    ({"type": "number", "default": "abc"}, "/default"),
    ({"type": "checkbox", "unique": True}, "/unique"),
    ({"type": "formula", "required": True, "options": {"formula": "1"}}, "/required"),
    ({"type": "link", "options": {}}, "table"),
    ({"type": "lookup", "options": {"link": "customer"}}, "field"),
    ({"type": "rollup", "options": {"link": "customer", "field": "name", "function": "sum"}}, "/options/field"),
    ({"type": "rollup", "options": {"link": "customer", "field": "revenue", "function": "median"}},
     "/options/function"),
], ids=lambda v: v if isinstance(v, str) else v["type"])
def test_bad_options(crm: Api, doc: dict[str, Any], pointer: str) -> None:
    refused(crm, "POST", FIELDS, {"key": "x", "label": "X", **doc}, 422, pointer)


def test_duplicate_keys(crm: Api) -> None:
    refused(crm, "POST", FIELDS, {"key": "title", "label": "Again", "type": "text"}, 409, "title")
    refused(crm, "POST", "/meta/apps", {"key": "crm", "label": "Again"}, 409, "crm")
    refused(crm, "POST", "/meta/apps/crm/tables", {"key": "deals", "label": "Again"}, 409, "deals")
    refused(crm, "POST", "/meta/apps/crm/tables", {"key": "notes", "label": "Notes", "fields": [
        {"key": "a", "label": "A", "type": "text"}, {"key": "a", "label": "A2", "type": "number"}]}, 422, "'a'")
    refused(crm, "PATCH", f"{FIELDS}/amount", {"key": "title"}, 409, "title")
    refused(crm, "PATCH", "/meta/apps/crm/tables/deals", {"key": "customers"}, 409, "customers")


@pytest.mark.parametrize("key", ["id", "version", "fields"])
def test_reserved_field_keys(crm: Api, key: str) -> None:
    refused(crm, "POST", FIELDS, {"key": key, "label": "X", "type": "text"}, 422, "reserved")
    refused(crm, "PATCH", f"{FIELDS}/amount", {"key": key}, 422, "reserved")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_malformed_keys(crm: Api, key: str) -> None:
    refused(crm, "POST", "/meta/apps", {"key": key, "label": "X"}, 422, "/key")
    refused(crm, "POST", "/meta/apps/crm/tables", {"key": key, "label": "X"}, 422, "/key")
    refused(crm, "POST", FIELDS, {"key": key, "label": "X", "type": "text"}, 422, "/key")
    refused(crm, "PATCH", f"{FIELDS}/amount", {"key": key}, 422, "/key")
    refused(crm, "PATCH", "/meta/apps/crm", {"key": key}, 422, "/key")


def test_link_to_missing_table(crm: Api) -> None:
    refused(crm, "POST", FIELDS, {"key": "x", "label": "X", "type": "link", "options": {"table": "ghosts"}},
            422, "ghosts")


@pytest.mark.parametrize("formula", ["{amount} +", "sum(", "{amount} * * 2", "{nope} + 1", "'unterminated"])
def test_formula_that_does_not_parse(crm: Api, formula: str) -> None:
    refused(crm, "POST", FIELDS, {"key": "x", "label": "X", "type": "formula", "options": {"formula": formula}},
            422, "/options/formula")


def test_formula_cycles(crm: Api) -> None:
    refused(crm, "POST", FIELDS, {"key": "x", "label": "X", "type": "formula", "options": {"formula": "{x} + 1"}},
            422, "itself")
    crm.ok("POST", FIELDS, {"key": "quad", "label": "Quad", "type": "formula", "options": {"formula": "{double} * 2"}})
    refused(crm, "PATCH", f"{FIELDS}/double", {"options": {"formula": "{quad} + 1"}}, 422, "circular")
    # through a lookup and a rollup on another table: double → cust_total → customers.deal_total → double
    crm.ok("POST", "/meta/apps/crm/tables/customers/fields", {
        "key": "deal_total", "label": "Deal total", "type": "rollup",
        "options": {"link": "deals", "field": "double", "function": "sum"}})
    crm.ok("POST", FIELDS, {"key": "cust_total", "label": "Customer total", "type": "lookup",
                            "options": {"link": "customer", "field": "deal_total"}})
    refused(crm, "PATCH", f"{FIELDS}/double", {"options": {"formula": "{cust_total} + 1"}}, 422, "circular")
    assert crm.records("crm", "deals")[0]["fields"]["double"] == 10


def test_rollup_through_a_non_link(crm: Api) -> None:
    refused(crm, "POST", FIELDS, {"key": "x", "label": "X", "type": "rollup",
                                  "options": {"link": "title", "field": "amount", "function": "sum"}},
            422, "not a link")
    refused(crm, "POST", FIELDS, {"key": "x", "label": "X", "type": "lookup",
                                  "options": {"link": "amount", "field": "name"}}, 422, "not a link")


def test_sql_keywords_and_quotes(crm: Api) -> None:
    weird = 'O\'Brien "x"; DROP TABLE fw_field; --'
    crm.ok("POST", "/meta/apps", {"key": "select", "label": weird})
    crm.ok("POST", "/meta/apps/select/tables", {"key": "from", "label": weird, "fields": [
        {"key": "where", "label": weird, "type": "text"},
        {"key": "order", "label": "O'Brien \"x\"", "type": "number"},
        {"key": "table", "label": "表", "type": "formula", "options": {"formula": "{order} + 1"}}]})
    rec = crm.ok("POST", "/data/select/from", {"fields": {"where": weird, "order": 3}})
    assert rec["fields"] == {"where": weird, "order": 3, "table": 4}
    got = crm.records("select", "from", filter={"field": "where", "op": "eq", "value": weird}, sort="-order")
    assert [r["id"] for r in got] == [rec["id"]]
    assert crm.ok("GET", "/meta/apps/select/tables/from/fields/order")["label"] == "O'Brien \"x\""
    refused(crm, "POST", "/meta/apps/select/tables/from/fields", {"key": "O'Brien \"x\"", "label": "X",
                                                                  "type": "text"}, 422, "/key")


def test_huge_label(crm: Api) -> None:
    big = "x" * (10 * 1024 * 1024)
    refused(crm, "POST", FIELDS, {"key": "x", "label": big, "type": "text"}, (413, 422), "large")
    refused(crm, "PATCH", f"{FIELDS}/amount", {"label": big}, (413, 422), "large")
    refused(crm, "POST", "/meta/apps", {"key": "x", "label": big}, (413, 422), "large")
    refused(crm, "POST", FIELDS, {"key": "x", "label": "y" * 201, "type": "text"}, 422, "/label")


@pytest.mark.parametrize("raw", [b"{", b"{'key': 'x'}", b"[1, 2", b"\xff\xfe", b"null", b"[]", b'"text"'])
def test_malformed_json(crm: Api, raw: bytes) -> None:
    app = crm.client.application
    before = db_snapshot(app)
    for path in ("/meta/apps", "/meta/apps/crm/tables", FIELDS):
        status, err = crm.call("POST", path, raw=raw)
        assert status in (400, 422), (path, raw, status, err)
    status, err = crm.call("PATCH", f"{FIELDS}/amount", raw=raw)
    assert status in (400, 422), (raw, status, err)
    assert db_snapshot(app) == before


@pytest.mark.parametrize("bad", [
    {"key": "total", "label": "Total", "type": "formula", "options": {"formula": "{qty} *"}},
    {"key": "who", "label": "Who", "type": "link", "options": {"table": "ghosts"}},
    {"key": "sum", "label": "Sum", "type": "rollup", "options": {"link": "qty", "function": "sum", "field": "qty"}},
    {"key": "id", "label": "Id", "type": "text"},
    {"key": "n", "label": "N", "type": "number", "default": "many"},
], ids=["formula", "link", "rollup", "reserved", "default"])
def test_failing_table_creation_creates_nothing(crm: Api, bad: dict[str, Any]) -> None:
    body = {"key": "orders", "label": "Orders", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "qty", "label": "Qty", "type": "number", "unique": True},
        {"key": "customer", "label": "Customer", "type": "link", "options": {"table": "customers"}},
        {"key": "no", "label": "No", "type": "autonumber", "options": {"prefix": "O-"}},
        bad]}
    err = refused(crm, "POST", "/meta/apps/crm/tables", body, 422, "/fields/4")
    assert "orders" not in [t["key"] for t in crm.ok("GET", "/meta/apps/crm/tables")["tables"]]
    assert "orders" not in [f["key"] for f in crm.ok("GET", "/meta/apps/crm/tables/customers")["fields"]]
    assert err["code"] == "validation_error"
    crm.ok("POST", "/meta/apps/crm/tables", {**body, "fields": body["fields"][:4]})


def test_failed_type_change_leaves_everything(crm: Api) -> None:
    crm.ok("POST", "/data/crm/deals", {"fields": {"title": "x", "amount": 5}})
    refused(crm, "PATCH", f"{FIELDS}/title", {"type": "number", "unique": True}, 422, "confirm_data_loss")
    refused(crm, "PATCH", f"{FIELDS}/amount", {"type": "text", "unique": True, "confirm_data_loss": True},
            409, "unique")
    refused(crm, "PATCH", f"{FIELDS}/customer", {"type": "text"}, 422, "link")
    refused(crm, "PATCH", f"{FIELDS}/amount", {"type": "link"}, 422, "/")
    refused(crm, "PATCH", f"{FIELDS}/amount", {"position": -1}, 422, "position")
    refused(crm, "DELETE", f"{FIELDS}/amount", None, 409, "double")
    assert sorted(r["fields"]["amount"] for r in crm.records("crm", "deals")) == [5, 5]
