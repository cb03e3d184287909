"""Assignment within "the team of the owner of the linked parent record", and escalation to that team's manager
(a ticket goes to someone in its customer's owner's team; its escalation to that team's manager)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from formwork import db
from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api
from tests.test_automation_support import add_rule, runs

sales = support.sales
worker = support.worker


def setup(admin: Api) -> dict[str, int]:
    admin.ok("POST", "/meta/apps/sales/tables/companies/fields", {"key": "owner", "label": "Owner", "type": "user"})
    ids: dict[str, int] = {}
    for u in ("east_mgr", "e1", "e2", "west_mgr", "w1"):
        ids[u] = admin.ok("POST", "/admin/users", {"username": u, "name": u.upper(), "password": "pass-word-99",
                                                   "email": f"{u}@example.com"})["id"]
    admin.ok("POST", "/admin/teams", {"key": "east", "name": "华东", "manager": "east_mgr", "members": ["e1", "e2"]})
    admin.ok("POST", "/admin/teams", {"key": "west", "name": "华西", "manager": "west_mgr", "members": ["w1"]})
    for key, name, owner in (("east_co", "East Co", ids["e1"]), ("west_co", "West Co", ids["w1"]),
                             ("orphan", "Nobody", None)):
        ids[key] = admin.ok("POST", "/data/sales/companies", {"fields": {"name": name, "owner": owner}})["id"]
    return ids


def owners(sales: Api) -> dict[str, int | None]:
    return {r["fields"]["name"]: (r["fields"]["owner"] or {}).get("id") for r in sales.records("sales", "deals")}


def test_round_robin_within_the_customer_owners_team(app: Any, sales: Api, worker: Worker) -> None:
    ids = setup(sales)
    add_rule(sales, {"key": "rr", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "assign_owner", "owner_team_of": "company", "strategy": "round_robin"}]})
    for name, co in (("d1", "east_co"), ("d2", "east_co"), ("d3", "west_co"), ("d4", "east_co")):
        sales.ok("POST", "/data/sales/deals", {"fields": {"name": name, "company": ids[co]}})
        worker.drain()
    got = owners(sales)
    assert [got["d1"], got["d2"], got["d4"]] == [ids["e1"], ids["e2"], ids["e1"]]
    assert got["d3"] == ids["w1"]
    # a deal whose company has no owner (or no company) fails the step, visibly, and stays unassigned
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "d5", "company": ids["orphan"]}})
    worker.drain()
    assert owners(sales)["d5"] is None
    assert any(r["status"] == "failed" for r in runs(sales, "rr"))


def test_least_loaded_within_the_customer_owners_team(app: Any, sales: Api, worker: Worker) -> None:
    ids = setup(sales)
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "old", "owner": ids["e1"]}})
    add_rule(sales, {"key": "ll", "trigger": {"type": "record_created", "table": "deals"},
                     "condition": {"field": "company", "op": "is_not_empty"},
                     "actions": [{"type": "assign_owner", "owner_team_of": "company", "strategy": "least_loaded"}]})
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "n1", "company": ids["east_co"]}})
    worker.drain()
    assert owners(sales)["n1"] == ids["e2"]


def test_escalation_goes_to_the_customer_owners_team_manager(app: Any, sales: Api, worker: Worker) -> None:
    ids = setup(sales)
    add_rule(sales, {"key": "esc", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [{"type": "notify", "parent_manager": "company",
                                  "title": "Escalated {{ record.name }}"},
                                 {"type": "send_email", "parent_manager": "company", "subject": "Escalated"}]})
    sales.ok("POST", "/data/sales/deals", {"fields": {"name": "x", "company": ids["west_co"]}})
    worker.drain()
    with app.extensions["formwork"].engine.connect() as conn:
        notified = conn.execute(select(db.notifications.c.user_id, db.notifications.c.kind,
                                       db.notifications.c.title)).all()
        mails = [r[0] for r in conn.execute(select(db.deliveries.c.request).where(db.deliveries.c.kind == "email"))]
    assert [r.user_id for r in notified if r.kind == "automation"] == [ids["west_mgr"]], notified
    assert [m["to"] for m in mails] == [["west_mgr@example.com"]]


def test_the_link_must_lead_to_an_owned_parent(sales: Api) -> None:
    setup(sales)
    for action in ({"type": "assign_owner", "owner_team_of": "name"},
                   {"type": "assign_owner", "owner_team_of": "company", "team": "east"},
                   {"type": "notify", "parent_manager": "nope", "title": "x"}):
        status, body = sales.post("/meta/apps/sales/automations", {
            "key": "bad", "label": "bad", "trigger": {"type": "record_created", "table": "deals"},
            "actions": [action]})
        assert status == 422, body
    status, body = sales.post("/meta/apps/sales/automations", {
        "key": "bad", "label": "bad", "trigger": {"type": "record_created", "table": "companies"},
        "actions": [{"type": "assign_owner", "owner_team_of": "name"}]})
    assert status == 422


def test_the_automation_editor_form_reads_the_new_choices() -> None:
    from werkzeug.datastructures import MultiDict

    from formwork.automation.forms import action_from_form

    a = action_from_form(MultiDict({"a0.type": "assign_owner", "a0.who": "owner_team_of:customer",
                                    "a0.strategy": "least_loaded",
                                    "a0._keep": '{"team": "east", "owner_team_of": "old"}'}), "a0")
    assert a == {"type": "assign_owner", "owner_team_of": "customer", "strategy": "least_loaded"}
    n = action_from_form(MultiDict({"a0.type": "notify", "a0.parent_manager": "customer", "a0.title": "超时"}), "a0")
    assert n["parent_manager"] == "customer"
    n = action_from_form(MultiDict({"a0.type": "notify", "a0.title": "超时",
                                    "a0._keep": '{"parent_manager": "customer"}'}), "a0")
    assert "parent_manager" not in n
