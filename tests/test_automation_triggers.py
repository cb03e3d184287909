"""The trigger registry's contract, checked for every registered trigger (a new trigger is covered by adding it).

Each trigger must: have a unique type and a label; declare options that are valid JSON Schema and part of
the served automation schema; accept its example at save time; refuse an option no trigger declares;
refuse a rule without a table when it needs one; and start exactly one run of its rule when its event
happens (an event trigger) or its time comes (a timed one).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import select

from formwork import db
from formwork.automation.actions import register_actions
from formwork.automation.intake import emit_form_submitted
from formwork.automation.rules import SECRET_MASK
from formwork.automation.triggers import (
    ALL_TRIGGERS,
    Trigger,
    TriggerRegistry,
    register_triggers,
    trigger_types,
)
from formwork.automation.triggers.base import COMMON_PROPERTIES
from formwork.automation.worker import Worker
from tests import test_automation_support as support
from tests.helpers import Api
from tests.test_automation_support import add_rule, runs

sales = support.sales
worker = support.worker

register_actions()

# One valid use of each trigger on the sales app (see tests/test_automation_support.py).
EXAMPLES: dict[str, dict[str, Any]] = {
    "record_created": {"table": "deals"},
    "record_updated": {"table": "deals", "fields": ["status"], "changes": [{"field": "status", "to": "won"}]},
    "record_deleted": {"table": "deals"},
    "form_submitted": {"table": "deals", "view": "signup"},
    "schedule": {"schedule": {"cron": "*/5 * * * *"}},
    "date_reached": {"table": "deals", "date_field": "close_date", "offset_days": 0, "at": "09:00",
                     "timezone": "UTC"},
    "manual": {"table": "deals"},
    "webhook": {"table": "deals", "match_field": "name"},
}

REGISTERED = [t.type for t in trigger_types.all()]
Fire = Callable[[Any, Api, Worker, dict[str, Any]], None]


def _created_at(app: Any, automation_id: int) -> dt.datetime:
    with app.extensions["formwork"].engine.connect() as conn:
        at = conn.execute(select(db.meta_changes.c.at).where(db.meta_changes.c.kind == "automation",
                                                             db.meta_changes.c.object_id == automation_id)).scalar()
    return at.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]


def _deal(api: Api, **fields: Any) -> int:
    return int(api.ok("POST", "/data/sales/deals", {"fields": {"name": "Big", **fields}})["id"])


def fire_created(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    _deal(api)


def fire_updated(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    rid = _deal(api)
    w.drain()
    api.ok("PATCH", f"/data/sales/deals/{rid}", {"fields": {"amount": 5}})  # not a watched field: no run
    api.ok("PATCH", f"/data/sales/deals/{rid}", {"fields": {"status": "won"}})


def fire_deleted(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    rid = _deal(api)
    w.drain()
    assert api.delete(f"/data/sales/deals/{rid}")[0] == 204


def fire_form(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    rid = _deal(api)
    p = app.extensions["formwork"]
    with db.transaction(p.engine) as conn:
        t = p.catalogs.get(conn).table("sales", "deals")
        emit_form_submitted(conn, t, rid, form="signup")
        emit_form_submitted(conn, t, rid, form="another_form")  # another form: no run


def fire_schedule(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    start = _created_at(app, rule["id"]).replace(second=0, microsecond=0)
    start -= dt.timedelta(minutes=start.minute % 5)
    assert w.tick(start + dt.timedelta(minutes=5, seconds=2)) == 1


def fire_date(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    day = _created_at(app, rule["id"]).date() + dt.timedelta(days=2)
    _deal(api, close_date=day.isoformat())
    _deal(api, name="Later", close_date=(day + dt.timedelta(days=5)).isoformat())
    assert w.tick(dt.datetime.combine(day, dt.time(9, 1), dt.UTC)) == 1


def fire_manual(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    rid = _deal(api)
    assert api.ok("POST", "/meta/apps/sales/automations/contract/run", {"record_ids": [rid]}) == {"queued": 1}


def fire_webhook(app: Any, api: Api, w: Worker, rule: dict[str, Any]) -> None:
    hook = api.ok("POST", "/meta/apps/sales/automations/contract/webhook-token")
    status, body = Api(api.client).post(hook["url"][len("/api/v1"):], {"fields": {"name": "Big"}})
    assert status == 202 and body["created"] is True


FIRE: dict[str, Fire] = {"record_created": fire_created, "record_updated": fire_updated,
                         "record_deleted": fire_deleted, "form_submitted": fire_form, "schedule": fire_schedule,
                         "date_reached": fire_date, "manual": fire_manual, "webhook": fire_webhook}


def test_every_registered_trigger_has_an_example_and_registration_is_idempotent() -> None:
    assert set(EXAMPLES) == set(REGISTERED) == set(FIRE)
    assert REGISTERED == [cls.type for cls in ALL_TRIGGERS]
    assert register_triggers() is trigger_types and [t.type for t in trigger_types.all()] == REGISTERED
    fresh = register_triggers(TriggerRegistry())
    with pytest.raises(ValueError, match="registered twice"):
        fresh.register(ALL_TRIGGERS[0]())


def test_a_new_trigger_is_one_class_and_one_registration() -> None:
    class Clock(Trigger):
        type = "clock"
        label = "A clock"
        needs_table = False
        timed = True
        properties = {"hour": {"type": "integer"}}

    class Tock(Trigger):
        type = "tock"
        label = "Clashes"
        properties = {"view": {"type": "integer"}}  # form_submitted's "view" is a key

    registry = register_triggers(TriggerRegistry())
    registry.register(Clock())
    assert "clock" in registry.schema()["properties"]["type"]["enum"]
    assert registry.schema()["properties"]["hour"] == {"type": "integer"}
    assert registry.by_type()["clock"]["properties"]["type"] == {"const": "clock"}
    with pytest.raises(ValueError, match="means something else"):
        registry.register(Tock())


def test_the_served_schema_is_generated_from_the_registry(admin: Api) -> None:
    served = admin.ok("GET", "/meta/schemas/automation")
    Draft202012Validator.check_schema(served)
    assert served["properties"]["trigger"] == {"$ref": "#/$defs/trigger"}
    assert served["$defs"]["trigger"] == trigger_types.schema()
    assert served["$defs"]["trigger"]["properties"]["type"]["enum"] == REGISTERED
    assert served["$defs"]["triggers"] == trigger_types.by_type()


@pytest.mark.parametrize("kind", REGISTERED)
def test_trigger_contract(kind: str, app: Any, sales: Api, worker: Worker) -> None:
    trigger = trigger_types.get(kind)
    cls = type(trigger)
    assert trigger.type == kind and trigger.label
    Draft202012Validator.check_schema(trigger.schema())
    assert not set(COMMON_PROPERTIES) & set(trigger.properties), "type and table are common to every trigger"
    assert set(EXAMPLES[kind]) - {"table"} <= set(trigger.properties), "the example uses the trigger's options"
    assert (cls.fire is not Trigger.fire) == trigger.timed, "a timed trigger fires itself; an event trigger doesn't"
    assert not (trigger.timed and trigger.addressed)
    sales.ok("POST", "/meta/apps/sales/tables/deals/views", {"key": "signup", "label": "Signup", "type": "form"})
    actions = [{"type": "create_record", "table": "tasks", "fields": {"title": "by {{ trigger.type }}"}}]

    # an option no trigger declares is refused by the schema, with a pointer to the trigger
    status, err = sales.post("/meta/apps/sales/automations", {
        "key": "stray", "label": "stray", "trigger": {"type": kind, **EXAMPLES[kind], "no_such_option": 1},
        "actions": actions})
    assert status == 422 and "/trigger" in err["error"]["details"], err
    # a rule without a table is refused when the trigger needs one
    status, err = sales.post("/meta/apps/sales/automations", {
        "key": "untabled", "label": "untabled", "run_as": "admin",
        "trigger": {k: v for k, v in {"type": kind, **EXAMPLES[kind]}.items() if k != "table"},
        "actions": actions})
    if trigger.needs_table:
        assert status == 422 and "/trigger/table" in err["error"]["details"], err
    else:
        assert status == 201, err
        assert sales.delete("/meta/apps/sales/automations/untabled")[0] == 204

    # the example passes the schema and the save-time checks, and reads back as it was sent
    rule = add_rule(sales, {"key": "contract", "trigger": {"type": kind, **EXAMPLES[kind]}, "actions": actions})
    assert rule["trigger"] == {"type": kind, **EXAMPLES[kind]}
    # ...and its event (or its time) starts exactly one run of the rule
    FIRE[kind](app, sales, worker, rule)
    worker.drain()
    assert [(r["trigger"], r["status"]) for r in runs(sales, "contract")] == [(kind, "succeeded")]
    assert [t["fields"]["title"] for t in sales.records("sales", "tasks")] == [f"by {kind}"]


# --- save-time checks each trigger owns -------------------------------------------------------------------
@pytest.mark.parametrize(("trigger", "pointer"), [
    ({"type": "record_updated", "table": "deals", "fields": ["nope"]}, "/trigger/fields/0"),
    ({"type": "record_updated", "table": "deals", "changes": [{"field": "nope", "to": 1}]}, "/trigger/changes/0/field"),
    ({"type": "date_reached", "table": "deals", "date_field": "name"}, "/trigger/date_field"),
    ({"type": "date_reached", "table": "deals", "date_field": "close_date", "timezone": "Mars/Base"},
     "/trigger/timezone"),
    ({"type": "webhook", "table": "deals", "match_field": "nope"}, "/trigger/match_field"),
    ({"type": "schedule", "schedule": {"every": "fortnight"}}, "/trigger/schedule"),
    ({"type": "schedule", "schedule": {"every": "day"}, "aggregate_condition": {"table": "nope", "op": "gt",
                                                                                 "value": 1}},
     "/trigger/aggregate_condition/table"),
    ({"type": "record_created", "table": "deals", "aggregate_condition": {"table": "deals", "op": "gt", "value": 1}},
     "/trigger/aggregate_condition"),
    ({"type": "record_created", "table": "nope"}, "/trigger/table"),
])
def test_trigger_checks_refuse_what_would_fail_later(sales: Api, trigger: dict[str, Any], pointer: str) -> None:
    status, err = sales.post("/meta/apps/sales/automations", {
        "key": "bad", "label": "bad", "trigger": trigger,
        "actions": [{"type": "create_record", "table": "tasks", "fields": {"title": "x"}}]})
    assert status == 422 and pointer in err["error"]["details"], err


# --- write-only secrets, wherever a document kind crosses the API -------------------------------------------
HOOK = {"key": "hook", "label": "h", "trigger": {"type": "record_created", "table": "deals"},
        "actions": [{"type": "call_webhook", "url": "https://example.com/x", "secret": "TOPSECRET-hmac"}]}


def test_every_app_answer_masks_automation_secrets(sales: Api) -> None:
    sales.ok("POST", "/meta/apps/sales/automations", HOOK)
    changed = sales.ok("PATCH", "/meta/apps/sales", {"label": "Sales 2"})
    assert "TOPSECRET" not in json.dumps(changed) and changed["automations"][0]["actions"][0]["secret"] == SECRET_MASK


def test_an_export_leaves_the_stored_secrets_alone(app: Any, sales: Api) -> None:
    sales.ok("POST", "/meta/apps/sales/automations", HOOK)
    exported = sales.ok("GET", "/meta/apps/sales/export")
    assert "TOPSECRET" not in json.dumps(exported)
    assert exported["notes"] == ["Webhook secrets are not exported; set them again after import: "
                                 "automation 'hook' /actions/0/secret"]
    # the export worked on a copy: sending the rule back masked keeps its secret
    doc = sales.ok("GET", "/meta/apps/sales/automations/hook")
    sales.ok("PATCH", "/meta/apps/sales/automations/hook", {"label": "renamed", "actions": doc["actions"]})
    with app.extensions["formwork"].engine.connect() as conn:
        stored = conn.execute(select(db.automations.c.doc).where(db.automations.c.key == "hook")).scalar_one()
    assert stored["actions"][0]["secret"] == "TOPSECRET-hmac"
