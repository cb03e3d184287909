"""The action registry's contract, checked for every registered action (a new action is covered by adding it).

Each action must: have a unique type and a label; declare a schema that is valid JSON Schema and is part
of the served automation schema; accept its example at save time (schema and app checks); run in a dry
run on a record without side effects; refuse a property it does not declare.
"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import insert, select, update

from formwork import db
from formwork.automation.actions import ALL_ACTIONS, Action, ActionRegistry, action_types, register_actions
from formwork.automation.rules import automation_schema
from tests import test_automation_support as support
from tests.helpers import Api, db_snapshot
from tests.test_automation_support import add_rule

sales = support.sales

register_actions()

# One valid use of each action on the sales app's ``deals`` table (see tests/test_automation_support.py).
EXAMPLES: dict[str, dict[str, Any]] = {
    "update_record": {"fields": {"status": "seen {{ record.name }}"}},
    "create_record": {"table": "tasks", "fields": {"title": "Call {{ record.name }}"}},
    "update_related": {"link": "company", "fields": {"note": "deal {{ record.name }} for {{ related.name }}"}},
    "send_email": {"to": ["buyer@example.com"], "subject": "About {{ record.name }}", "body": "Hello"},
    "call_webhook": {"url": "https://example.com/hook", "secret": "s3cret", "timeout": 5},
    "notify": {"users": ["admin"], "title": "New deal {{ record.name }}"},
    "assign_owner": {"team": "desk", "strategy": "least_loaded"},
    "request_approval": {"approvers": {"users": ["admin"]}, "title": "Approve {{ record.name }}",
                         "on_approve": [{"type": "update_record", "fields": {"status": "approved"}}]},
    "wait": {"minutes": 5},
    "branch": {"condition": {"field": "amount", "op": "gte", "value": 100},
               "then": [{"type": "update_record", "fields": {"status": "big"}}],
               "else": [{"type": "update_record", "fields": {"status": "small"}}]},
    "recycle_to_pool": {"table": "deals"},
}

REGISTERED = [a.type for a in action_types.all()]


def test_every_registered_action_has_an_example_and_registration_is_idempotent() -> None:
    assert set(EXAMPLES) == set(REGISTERED)
    assert REGISTERED == [cls.type for cls in ALL_ACTIONS]
    assert register_actions() is action_types and [a.type for a in action_types.all()] == REGISTERED
    fresh = register_actions(ActionRegistry())
    with pytest.raises(ValueError, match="registered twice"):
        fresh.register(ALL_ACTIONS[0]())


def test_the_served_schema_is_generated_from_the_registry(admin: Api) -> None:
    served = admin.ok("GET", "/meta/schemas/automation")
    assert served == automation_schema()
    Draft202012Validator.check_schema(served)
    assert served["$defs"]["action"]["properties"]["type"]["enum"] == REGISTERED


@pytest.mark.parametrize("kind", REGISTERED)
def test_action_contract(kind: str, sales: Api) -> None:
    action = action_types.get(kind)
    cls = type(action)
    assert action.type == kind and action.label
    assert cls.run is not Action.run and cls.check is not Action.check, "implement run and check"
    Draft202012Validator.check_schema(action.schema())
    props = action.schema()["properties"]
    assert not {"type", "key", "label"} & set(props), "type, key and label are common to every action"
    for name in (*action.nested, *action.secrets):
        assert name in props, f"'{name}' must be declared in the schema"
    for name in action.nested:
        assert props[name]["items"] == {"$ref": "#/$defs/action"}

    app = sales.client.application
    engine = app.extensions["formwork"].engine
    sales.ok("PATCH", "/meta/apps/sales/tables/deals", {"pool": {"owner_field": "owner"}})
    with db.transaction(engine) as conn:
        team = conn.execute(insert(db.teams).values(key="desk", name="Desk").returning(db.teams.c.id)).scalar_one()
        conn.execute(update(db.users).where(db.users.c.username == "admin").values(team_id=team))
    company = sales.ok("POST", "/data/sales/companies", {"fields": {"name": "Acme"}})
    deal = sales.ok("POST", "/data/sales/deals", {"fields": {"name": "Big", "amount": 500,
                                                             "company": company["id"]}})

    # a property of another action is refused by the schema, with a pointer to the action
    status, err = sales.post("/meta/apps/sales/automations", {
        "key": "stray", "label": "stray", "trigger": {"type": "manual", "table": "deals"},
        "actions": [{"type": kind, **EXAMPLES[kind], "no_such_option": 1}]})
    assert status == 422 and "/actions/0" in err["error"]["details"]

    # the example passes the schema and the save-time checks
    example = {"type": kind, "key": "step", **EXAMPLES[kind]}
    add_rule(sales, {"key": "contract", "trigger": {"type": "record_created", "table": "deals"},
                     "actions": [example]})
    # ...and runs in a dry run: it says what it would do and changes nothing
    before = db_snapshot(app)
    res = sales.ok("POST", "/meta/apps/sales/automations/contract/test", {"record_ids": [deal["id"]]})
    assert db_snapshot(app) == before
    [entry] = res["results"]
    assert entry["matched"] and "error" not in entry, entry
    step = entry["actions"][0]
    assert step["action"] == kind and step["status"] in ("ok", "would_run", "would_stop"), step
    with engine.connect() as conn:
        assert conn.execute(select(db.deliveries)).first() is None
