"""Previews and dry runs show only what their reader may read (issue 10, the "permission leaks" class).

A builder whose role reads only their own rows, with one field hidden, previews a type change: the counts
and samples come from their rows only (the rest is one number, ``outside_scope``), a hidden field shows no
samples, and the refusal to lose data says only that records they can't see are affected. An automation
manager with the same role dry-runs a rule: other people's records are "no such record", templates read
the record without the hidden field, and a condition or branch on the hidden field is not evaluated.
"""

from __future__ import annotations

from typing import Any

from tests.helpers import Api, db_snapshot
from tests.test_automation_support import token_for

FIELDS = "/meta/apps/sales/tables/deals/fields"


def _world(app: Any, admin: Api) -> tuple[Api, dict[str, int]]:
    admin.ok("POST", "/meta/apps", {"key": "sales", "label": "Sales"})
    admin.ok("POST", "/meta/apps/sales/tables", {"key": "deals", "label": "Deals", "fields": [
        {"key": "name", "label": "Name", "type": "text"},
        {"key": "code", "label": "Code", "type": "text"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "secret", "label": "Secret", "type": "text"},
        {"key": "note", "label": "Note", "type": "text"}], "owner_field": "owner"})
    admin.ok("POST", "/admin/roles", {"key": "maker", "label": "Maker", "build": True, "manage_automations": True,
                                      "permissions": {"sales.deals": {
                                          "read": "own", "create": True, "update": "own", "delete": "own",
                                          "fields": {"secret": "hidden"}}}})
    bob = admin.ok("POST", "/admin/users", {"username": "bob", "name": "Bob", "password": "bob-pass-12345",
                                            "roles": ["maker"]})
    ids: dict[str, int] = {}
    for name, code, owner, secret in (("b1", "12", bob["id"], "BOB-SECRET-1"), ("b2", "abc", bob["id"], "7"),
                                      ("o1", "99", None, "OTHER-SECRET"), ("o2", "x", None, "8"),
                                      ("o3", "y", None, "9")):
        ids[name] = admin.ok("POST", "/data/sales/deals", {"fields": {
            "name": name, "code": code, "owner": owner, "secret": secret, "note": f"note {name}"}})["id"]
    return Api(app.test_client(), token_for(app, bob["id"])), ids


def test_a_type_change_preview_counts_and_shows_only_the_builders_rows(app: Any, admin: Api) -> None:
    bob, ids = _world(app, admin)
    everyone = admin.ok("PATCH", f"{FIELDS}/code?dry_run=true", {"type": "number"})
    assert (everyone["rows"], everyone["converted"], everyone["emptied"]) == (5, 2, 3)
    assert "outside_scope" not in everyone
    mine = bob.ok("PATCH", f"{FIELDS}/code?dry_run=true", {"type": "number"})
    assert (mine["rows"], mine["converted"], mine["emptied"], mine["outside_scope"]) == (2, 1, 1, 3)
    assert {s["id"] for s in mine["samples"]} == {ids["b1"], ids["b2"]}
    # a field hidden from the builder: counts of their rows, no values at all
    hidden = bob.ok("PATCH", f"{FIELDS}/secret?dry_run=true", {"type": "number"})
    assert hidden["samples"] == [] and hidden["rows"] == 2 and "OTHER-SECRET" not in str(hidden)
    # the conversion still needs a confirmation when records the builder can't see would lose values
    before = db_snapshot(app)
    status, err = bob.patch(f"{FIELDS}/note", {"type": "number"})
    assert status == 422 and "records you may not see" in err["error"]["message"]
    assert db_snapshot(app) == before


def test_an_automation_dry_run_shows_only_what_its_viewer_may_read(app: Any, admin: Api) -> None:
    bob, ids = _world(app, admin)
    rule = {"key": "peek", "label": "Peek", "trigger": {"type": "record_updated", "table": "deals"},
            "actions": [{"type": "send_email", "to": ["x@example.com"],
                         "subject": "{{ record.name }} / {{ record.secret }}"}]}
    admin.ok("POST", "/meta/apps/sales/automations", rule)
    res = bob.ok("POST", "/meta/apps/sales/automations/peek/test", {"record_ids": [ids["b1"], ids["o1"]]})
    mine, other = res["results"]
    assert mine["actions"][0]["output"]["would_send"]["subject"].strip() == "b1 /"
    assert other == {"record_id": ids["o1"], "matched": False, "error": "no such record"}
    assert "SECRET" not in str(res)
    # an administrator's dry run shows everything
    full = admin.ok("POST", "/meta/apps/sales/automations/peek/test", {"record_ids": [ids["b1"]]})
    assert full["results"][0]["actions"][0]["output"]["would_send"]["subject"] == "b1 / BOB-SECRET-1"
    # a condition on the hidden field is not evaluated for the viewer (matching would reveal the value)
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "cond", "label": "Cond", "trigger": {"type": "record_updated", "table": "deals"},
        "condition": {"field": "secret", "op": "eq", "value": "BOB-SECRET-1"},
        "actions": [{"type": "notify", "users": ["admin"], "title": "t"}]})
    res = bob.ok("POST", "/meta/apps/sales/automations/cond/test", {"record_ids": [ids["b1"], ids["b2"]]})
    assert [r["matched"] for r in res["results"]] == [None, None] and res["matched"] == []
    assert "may not see" in res["results"][0]["error"]
    # nor is a branch on it
    admin.ok("POST", "/meta/apps/sales/automations", {
        "key": "fork", "label": "Fork", "trigger": {"type": "record_updated", "table": "deals"},
        "actions": [{"type": "branch", "condition": {"field": "secret", "op": "eq", "value": "7"},
                     "then": [{"type": "notify", "users": ["admin"], "title": "yes"}],
                     "else": [{"type": "notify", "users": ["admin"], "title": "no"}]}]})
    res = bob.ok("POST", "/meta/apps/sales/automations/fork/test", {"record_ids": [ids["b2"]]})
    assert "may not see" in res["results"][0]["error"]
    steps = res["results"][0]["actions"]
    assert [(s["status"], s["output"]) for s in steps] == [("failed", None)]  # neither branch was taken
