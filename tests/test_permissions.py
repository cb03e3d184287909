"""The permission matrix: four CRM-like roles × every operation × scope, through every path.

The app (built here): customers (owner user field, credit_limit), opportunities (link to a customer, an
owner, lookups of the customer's name and credit limit) and tickets (no user field: owner = created_by).
Teams: east (manager mgr; members am1, am2) and west (am3).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from formwork import db
from formwork.runtime import auth
from tests.helpers import Api, db_snapshot

PASSWORD = "correct-horse-9"
ALL = {"read": "all", "create": True, "update": "all", "delete": "all", "import": True, "export": True}

ROLES: list[dict[str, Any]] = [
    {"key": "system_administrator", "label": {"en": "System administrator", "zh-CN": "系统管理员"},
     "permissions": {"crm.*": ALL}, "build": True, "manage_users": True, "manage_automations": True},
    {"key": "sales_manager", "label": {"en": "Sales manager", "zh-CN": "销售主管"}, "permissions": {
        "crm.customers": {"read": "team", "create": True, "update": "team", "delete": "none", "export": True},
        "crm.opportunities": {"read": "team", "create": True, "update": "team", "delete": "none", "export": True},
        "crm.tickets": {"read": "team", "create": True, "update": "team", "delete": "none"}}},
    {"key": "account_manager", "label": {"en": "Account manager", "zh-CN": "客户经理"}, "permissions": {
        "crm.customers": {"read": "own", "create": True, "update": "own", "delete": "own", "import": False,
                          "export": False, "fields": {"credit_limit": "hidden"}},
        "crm.opportunities": {"read": "own", "create": True, "update": "own", "delete": "own"},
        "crm.tickets": {"read": "own", "create": True, "update": "own", "delete": "none"}}},
    {"key": "executive", "label": {"en": "Executive", "zh-CN": "高管"},
     "permissions": {"crm.*": {"read": "all", "export": True}}},
]


@dataclass
class World:
    admin: Api
    clients: dict[str, Api]
    ids: dict[str, int]
    users: dict[str, int] = field(default_factory=dict)


def token_for(app: Any, username: str) -> Api:
    with db.transaction(app.extensions["formwork"].engine) as conn:
        uid = conn.execute(select(db.users.c.id).where(db.users.c.username == username)).scalar_one()
        return Api(app.test_client(), auth.create_token(conn, uid, "tests", None)["token"])


def build(app: Any, admin: Api) -> World:
    admin.ok("POST", "/meta/apps", {"key": "crm", "label": {"en": "CRM", "zh-CN": "客户管理"}})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "customers", "label": "Customers", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "credit_limit", "label": "Credit limit", "type": "currency", "options": {"currency": "CNY"}},
    ]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "opportunities", "label": "Opportunities", "fields": [
        {"key": "title", "label": "Title", "type": "text"},
        {"key": "customer", "label": "Customer", "type": "link",
         "options": {"table": "customers", "reverse_key": "opportunities", "reverse_label": "Opportunities",
                     "multiple": False}},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "amount", "label": "Amount", "type": "number"},
        {"key": "customer_name", "label": "Customer name", "type": "lookup",
         "options": {"link": "customer", "field": "name"}},
        {"key": "customer_credit", "label": "Customer credit", "type": "lookup",
         "options": {"link": "customer", "field": "credit_limit"}},
    ]})
    admin.ok("POST", "/meta/apps/crm/tables", {"key": "tickets", "label": "Tickets", "fields": [
        {"key": "subject", "label": "Subject", "type": "text"},
        {"key": "customer", "label": "Customer", "type": "link",
         "options": {"table": "customers", "reverse_key": "tickets", "reverse_label": "Tickets"}},
    ]})
    for r in ROLES:
        admin.ok("POST", "/admin/roles", r)
    people = {"sys": "system_administrator", "mgr": "sales_manager", "am1": "account_manager",
              "am2": "account_manager", "am3": "account_manager", "exe": "executive"}
    users = {}
    for name, r in people.items():
        users[name] = admin.ok("POST", "/admin/users", {"username": name, "name": name.upper(), "password": PASSWORD,
                                                        "roles": [r]})["id"]
    admin.ok("POST", "/admin/teams", {"key": "east", "name": "华东", "manager": "mgr", "members": ["am1", "am2"]})
    admin.ok("POST", "/admin/teams", {"key": "west", "name": "华西", "members": ["am3"]})
    ids: dict[str, int] = {}
    for key, owner, credit in (("c1", "am1", 1000), ("c2", "am2", 2000), ("c3", "am3", 4000)):
        ids[key] = admin.ok("POST", "/data/crm/customers", {"fields": {
            "name": f"{key.upper()} Corp", "owner": owner, "credit_limit": credit}})["id"]
    for key, cust, owner, amount in (("o1", "c1", "am1", 100), ("o2", "c2", "am2", 200), ("o3", "c3", "am3", 300),
                                     ("o4", "c3", "am1", 400), ("o5", "c1", "am2", 500)):
        ids[key] = admin.ok("POST", "/data/crm/opportunities", {"fields": {
            "title": f"{key.upper()} deal", "customer": ids[cust], "owner": owner, "amount": amount}})["id"]
    clients = {name: token_for(app, name) for name in people}
    ids["t0"] = admin.ok("POST", "/data/crm/tickets", {"fields": {"subject": "T0 by admin"}})["id"]
    ids["t1"] = clients["am1"].ok("POST", "/data/crm/tickets", {"fields": {"subject": "T1 by am1",
                                                                          "customer": ids["c1"]}})["id"]
    ids["t3"] = clients["am3"].ok("POST", "/data/crm/tickets", {"fields": {"subject": "T3 by am3"}})["id"]
    return World(admin, clients, ids, users)


# role → the records each operation may reach (by name); anything readable but not in a write scope is 403,
# anything unreadable is 404
MATRIX: dict[str, dict[str, Any]] = {
    "sys": {"read": {"customers": "c1 c2 c3", "opportunities": "o1 o2 o3 o4 o5", "tickets": "t0 t1 t3"},
            "update": "c1 c2 c3", "delete": "c1 c2 c3", "create": True, "export": True, "import": True,
            "credit": True},
    "mgr": {"read": {"customers": "c1 c2", "opportunities": "o1 o2 o4 o5", "tickets": "t1"},
            "update": "c1 c2", "delete": "", "create": True, "export": True, "import": False, "credit": True},
    "am1": {"read": {"customers": "c1", "opportunities": "o1 o4", "tickets": "t1"},
            "update": "c1", "delete": "c1", "create": True, "export": False, "import": False, "credit": False},
    "exe": {"read": {"customers": "c1 c2 c3", "opportunities": "o1 o2 o3 o4 o5", "tickets": "t0 t1 t3"},
            "update": "", "delete": "", "create": False, "export": True, "import": False, "credit": True},
}


def names(w: World, spec: str) -> set[int]:
    return {w.ids[k] for k in spec.split()}


def q(value: Any) -> str:
    return quote(json.dumps(value))


@pytest.mark.parametrize("who", list(MATRIX))
def test_permission_matrix(app: Any, admin: Api, who: str) -> None:
    w = build(app, admin)
    c = w.clients[who]
    exp = MATRIX[who]

    # --- list, count, search, aggregate: never a row outside the scope --------------------------------
    for table, spec in exp["read"].items():
        expected = names(w, spec)
        got = c.ok("GET", f"/data/crm/{table}?count=true&limit=2")
        assert got["total"] == len(expected), (table, got["total"])
        assert {r["id"] for r in c.records("crm", table, limit=100)} == expected, table
        agg = c.ok("GET", f"/data/crm/{table}/aggregate?metrics=count")["groups"]
        assert sum(g["count"] for g in agg) == len(expected), table
    found = c.ok("GET", "/data/crm/customers?search=Corp&count=true")
    assert {r["id"] for r in found["records"]} == names(w, exp["read"]["customers"]) and found["total"] == len(
        found["records"])
    narrowed = c.records("crm", "customers", filter={"field": "name", "op": "eq", "value": "C3 Corp"})
    assert [r["id"] for r in narrowed] == ([w.ids["c3"]] if "c3" in exp["read"]["customers"] else [])
    sums = c.ok("GET", "/data/crm/opportunities/aggregate?metrics=sum:amount")["groups"]
    amounts = {"o1": 100, "o2": 200, "o3": 300, "o4": 400, "o5": 500}
    assert sums[0]["sum:amount"] == sum(amounts[k] for k in exp["read"]["opportunities"].split())

    # --- get each record: IDOR guesses are 404 ------------------------------------------------------
    readable = names(w, exp["read"]["customers"])
    for key in ("c1", "c2", "c3"):
        status, rec = c.get(f"/data/crm/customers/{w.ids[key]}")
        if w.ids[key] in readable:
            assert status == 200
            assert ("credit_limit" in rec["fields"]) is exp["credit"], rec
        else:
            assert status == 404 and rec["error"]["code"] == "not_found"
    assert c.get("/data/crm/customers/999999")[0] == 404

    # credit_limit: hidden directly, through the lookup, in aggregates and as a write
    opps = {r["id"]: r["fields"] for r in c.records("crm", "opportunities")}
    for fields in opps.values():
        assert ("customer_credit" in fields) is exp["credit"], fields
    if not exp["credit"]:
        assert c.get("/data/crm/customers/aggregate?metrics=sum:credit_limit")[0] in (400, 403, 404)
        status, err = c.post("/data/crm/customers", {"fields": {"name": "Sneaky", "credit_limit": 9}})
        assert status == 422 and "credit_limit" in err["error"]["details"]

    # --- links: a record you can't read shows no value -----------------------------------------------
    if w.ids["o4"] in opps:
        o4 = opps[w.ids["o4"]]
        if "c3" in exp["read"]["customers"]:
            assert o4["customer"]["display"] == "C3 Corp" and o4["customer_name"] == "C3 Corp"
        else:
            assert o4["customer"] is None and o4.get("customer_name") is None
            assert o4.get("customer_credit") is None
            # nor can a filter through the link see it
            assert c.records("crm", "opportunities", filter={"field": "customer.name", "op": "eq",
                                                             "value": "C3 Corp"}) == []
    if w.ids["c1"] in readable:
        c1 = c.ok("GET", f"/data/crm/customers/{w.ids['c1']}")["fields"]
        linked = {x["id"] for x in c1["opportunities"]}
        assert linked == {w.ids[k] for k in ("o1", "o5") if k in exp["read"]["opportunities"]}
        assert {x["id"] for x in c1["tickets"]} == ({w.ids["t1"]} if "t1" in exp["read"]["tickets"] else set())

    # --- history --------------------------------------------------------------------------------------
    for key in ("c1", "c3"):
        status, hist = c.get(f"/data/crm/customers/{w.ids[key]}/history")
        if w.ids[key] in readable:
            assert status == 200 and hist["entries"]
            for e in hist["entries"]:
                assert ("credit_limit" in e["changes"]) is exp["credit"] or e["action"] != "create"
        else:
            assert status == 404

    # --- create -------------------------------------------------------------------------------------
    before = db_snapshot(app)
    status, body = c.post("/data/crm/customers", {"fields": {"name": f"New by {who}", "owner": who}})
    if exp["create"]:
        assert status == 201
        new_id = body["id"]
        assert c.ok("GET", f"/data/crm/customers/{new_id}")["fields"]["name"] == f"New by {who}"
    else:
        assert status == 403 and db_snapshot(app) == before
        assert c.post("/data/crm/tickets", {"fields": {"subject": "x"}})[0] == 403

    # --- update: in scope 200, readable but out of update scope 403, unreadable 404 --------------------
    updatable = names(w, exp["update"]) if exp["update"] else set()
    for key in ("c1", "c2", "c3"):
        rid = w.ids[key]
        before = db_snapshot(app)
        status, _ = c.patch(f"/data/crm/customers/{rid}", {"fields": {"name": f"{key} renamed"}})
        expected_status = 200 if rid in updatable else 403 if rid in readable else 404
        assert status == expected_status, (key, status)
        if status != 200:
            assert db_snapshot(app) == before
            assert admin.ok("GET", f"/data/crm/customers/{rid}")["fields"]["name"] == f"{key.upper()} Corp"
    status, res = c.post("/data/crm/customers/bulk-update", {"filter": {"and": []}, "fields": {"name": "bulk"}})
    if updatable:
        assert status == 200 and res["updated"] == len(updatable) + 1  # + the record created above
    else:
        assert status == 200 and res["updated"] == 0
    for key in ("c1", "c2", "c3"):
        name = admin.ok("GET", f"/data/crm/customers/{w.ids[key]}")["fields"]["name"]
        assert (name == "bulk") is (w.ids[key] in updatable), (key, name)

    # --- export and import --------------------------------------------------------------------------
    status, _ = c.get("/data/crm/customers/export?format=csv&header=keys")
    if exp["export"]:
        assert status == 200
        rows = list(csv.DictReader(io.StringIO(c.last.data.decode("utf-8-sig"))))
        assert len(rows) == len(readable) + (1 if exp["create"] else 0)
        assert ("credit_limit" in rows[0]) is exp["credit"]
    else:
        assert status == 403
    before = db_snapshot(app)
    upload = {"file": (io.BytesIO(b"name\nImported Co\n"), "in.csv")}
    resp = c.client.post("/api/v1/data/crm/customers/import", data=upload, content_type="multipart/form-data",
                         headers={"Authorization": f"Bearer {c.token}"})
    if exp["import"]:
        assert resp.status_code == 200 and resp.get_json()["inserted"] == 1
    else:
        assert resp.status_code == 403 and db_snapshot(app) == before

    # --- delete: last, since it changes the data ----------------------------------------------------
    deletable = names(w, exp["delete"]) if exp["delete"] else set()
    for key in ("c3", "c2", "c1"):
        rid = w.ids[key]
        before = db_snapshot(app)
        status, _ = c.delete(f"/data/crm/customers/{rid}")
        assert status == (204 if rid in deletable else 403 if rid in readable else 404), (key, status)
        if status != 204:
            assert db_snapshot(app) == before
        else:
            assert c.get(f"/data/crm/customers/{rid}")[0] == 404


def test_multi_role_union_never_shows_a_field_on_rows_only_the_hiding_role_opens(app: Any, admin: Api) -> None:
    w = build(app, admin)
    admin.ok("POST", "/admin/roles", {"key": "directory", "label": "Directory", "permissions": {
        "crm.customers": {"read": "all", "fields": {"credit_limit": "hidden"}}}})
    admin.ok("POST", "/admin/roles", {"key": "own_accounts", "label": "Own accounts", "permissions": {
        "crm.customers": {"read": "own", "update": "own"}}})
    admin.ok("PATCH", f"/admin/users/{w.users['am1']}", {"roles": ["directory", "own_accounts"]})
    c = w.clients["am1"]
    recs = {r["id"]: r["fields"] for r in c.records("crm", "customers")}
    assert set(recs) == {w.ids["c1"], w.ids["c2"], w.ids["c3"]}
    assert recs[w.ids["c1"]]["credit_limit"] == 1000  # own: opened by the role that shows it
    assert "credit_limit" not in recs[w.ids["c2"]] and "credit_limit" not in recs[w.ids["c3"]]
    assert "credit_limit" not in c.ok("GET", f"/data/crm/customers/{w.ids['c2']}")["fields"]
    # sums and filters over the field never reach the rows where it is hidden
    status, agg = c.get("/data/crm/customers/aggregate?metrics=sum:credit_limit")
    assert status == 200 and agg["groups"][0]["sum:credit_limit"] == 1000  # c1 only, not 1000 + 2000 + 4000
    hist = c.ok("GET", f"/data/crm/customers/{w.ids['c2']}/history")["entries"]
    assert all("credit_limit" not in e["changes"] for e in hist)
    own_hist = c.ok("GET", f"/data/crm/customers/{w.ids['c1']}/history")["entries"]
    assert any("credit_limit" in e["changes"] for e in own_hist)
    # the explanation agrees
    why = admin.ok("GET", f"/admin/explain?user=am1&app=crm&table=customers&record={w.ids['c2']}&field=credit_limit")
    assert why["field"]["visible"] is False and why["field"]["hidden_by"] == ["directory"]
    assert why["read"]["by"] == [{"role": "directory", "scope": "all"}]
    assert why["update"]["allowed"] is False


def test_team_scope_follows_team_changes_and_manager(app: Any, admin: Api) -> None:
    w = build(app, admin)
    mgr = w.clients["mgr"]
    assert {r["id"] for r in mgr.records("crm", "customers")} == {w.ids["c1"], w.ids["c2"]}
    admin.ok("PATCH", f"/admin/users/{w.users['am3']}", {"team": "east"})  # am3 joins east
    assert {r["id"] for r in mgr.records("crm", "customers")} == {w.ids["c1"], w.ids["c2"], w.ids["c3"]}
    admin.ok("PATCH", "/admin/teams/east", {"manager": None})  # mgr no longer manages east: only own records
    assert mgr.records("crm", "customers") == []
    # a member (not manager) sees the records of the whole team under a team scope
    admin.ok("PATCH", "/admin/roles/account_manager", {"permissions": {
        "crm.customers": {"read": "team", "fields": {"credit_limit": "hidden"}}}})
    assert {r["id"] for r in w.clients["am1"].records("crm", "customers")} == {w.ids["c1"], w.ids["c2"], w.ids["c3"]}


def test_filter_tree_scope_with_me_and_roles_that_change_take_effect_at_once(app: Any, admin: Api) -> None:
    w = build(app, admin)
    admin.ok("POST", "/admin/roles", {"key": "big_deals", "label": "Big deals", "permissions": {
        "crm.opportunities": {"read": {"or": [{"field": "amount", "op": "gte", "value": 450},
                                              {"field": "owner", "op": "eq", "value": {"var": "me"}}]}}}})
    admin.ok("PATCH", f"/admin/users/{w.users['exe']}", {"roles": ["big_deals"]})
    exe = w.clients["exe"]
    assert {r["id"] for r in exe.records("crm", "opportunities")} == {w.ids["o5"]}
    assert exe.get("/data/crm/customers")[0] == 404  # no grant on the table at all
    assert exe.ok("GET", "/data/crm/opportunities?count=true")["total"] == 1
    admin.ok("PATCH", "/data/crm/opportunities/" + str(w.ids["o1"]), {"fields": {"owner": "exe"}})
    assert {r["id"] for r in exe.records("crm", "opportunities")} == {w.ids["o1"], w.ids["o5"]}


def test_owner_defaults_to_created_by_without_a_user_field(app: Any, admin: Api) -> None:
    w = build(app, admin)
    am2 = w.clients["am2"]
    assert am2.records("crm", "tickets") == []
    assert am2.get(f"/data/crm/tickets/{w.ids['t1']}")[0] == 404
    mine = am2.ok("POST", "/data/crm/tickets", {"fields": {"subject": "by am2"}})
    assert [r["id"] for r in am2.records("crm", "tickets")] == [mine["id"]]
    assert am2.ok("PATCH", f"/data/crm/tickets/{mine['id']}", {"fields": {"subject": "edited"}})
    assert am2.patch(f"/data/crm/tickets/{w.ids['t1']}", {"fields": {"subject": "x"}})[0] == 404
    assert am2.delete(f"/data/crm/tickets/{mine['id']}")[0] == 403  # readable, but no delete right


def test_export_and_import_are_audited(app: Any, admin: Api) -> None:
    w = build(app, admin)
    status, _ = w.clients["exe"].get("/data/crm/customers/export?format=csv")
    assert status == 200
    entries = admin.ok("GET", "/admin/audit?action=export")["entries"]
    assert entries and entries[0]["user"]["username"] == "exe"


def test_hidden_fields_cannot_be_probed_by_filter_sort_or_group(app: Any, admin: Api) -> None:
    w = build(app, admin)
    am1, mgr = w.clients["am1"], w.clients["mgr"]
    probe = {"field": "credit_limit", "op": "gt", "value": 500}
    status, err = am1.get(f"/data/crm/customers?filter={q(probe)}")
    assert status == 400 and "credit_limit" in err["error"]["message"]
    nested = {"and": [{"or": [{"not": probe}]}]}
    assert am1.get(f"/data/crm/customers?filter={q(nested)}")[0] == 400
    through_link = {"field": "customer.credit_limit", "op": "gt", "value": 500}
    assert am1.get(f"/data/crm/opportunities?filter={q(through_link)}")[0] == 400
    assert am1.get("/data/crm/customers?sort=-credit_limit")[0] == 400
    assert am1.get(f"/data/crm/customers/aggregate?metrics=count&filter={q(probe)}")[0] == 400
    assert am1.get("/data/crm/customers/aggregate?group_by=credit_limit&metrics=count")[0] == 400
    assert am1.get(f"/data/crm/customers/export?format=csv&filter={q(probe)}")[0] in (400, 403)
    assert am1.post("/data/crm/customers/bulk-delete", {"filter": probe})[0] == 400
    # the lookup computed from the hidden field is hidden as well, so it is not filterable either
    lookup = {"field": "customer_credit", "op": "gt", "value": 500}
    assert am1.get(f"/data/crm/opportunities?filter={q(lookup)}")[0] == 400
    # those who see the field filter and sort on it as usual
    assert {r["id"] for r in mgr.records("crm", "customers", filter=probe)} == {w.ids["c1"], w.ids["c2"]}
    assert [r["id"] for r in mgr.records("crm", "customers", sort="-credit_limit")] == [w.ids["c2"], w.ids["c1"]]
    assert {r["id"] for r in mgr.records("crm", "opportunities", filter=through_link)} == {
        w.ids["o1"], w.ids["o2"], w.ids["o5"]}
