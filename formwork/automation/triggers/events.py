"""Event triggers: outbox events (record changes, form submissions, manual runs, incoming webhooks)
start the rules whose trigger matches them (formwork.automation.intake)."""

from __future__ import annotations

from typing import Any

from formwork.automation.changes import changed_test
from formwork.automation.triggers.base import KEY, Trigger, TriggerCheck


class RecordCreated(Trigger):
    type = "record_created"
    label = "A record is created"


class RecordUpdated(Trigger):
    """Optionally only when one of ``fields`` changed, or when ``changes`` (from/to values) happened."""

    type = "record_updated"
    label = "A record is updated"
    properties = {
        "fields": {"type": "array", "items": KEY},
        "changes": {"type": "array", "maxItems": 50, "items": {
            "type": "object", "required": ["field"], "additionalProperties": False,
            "properties": {"field": KEY, "from": True, "to": True}}},
    }

    def matches(self, trig: dict[str, Any], payload: dict[str, Any]) -> bool:
        changes = payload.get("changes") or {}
        if trig.get("fields") and not set(trig["fields"]) & set(changes):
            return False
        for c in trig.get("changes", []):
            if c["field"] not in changes:
                return False
            if "from" in c and not changed_test({"field": c["field"], "op": "changed_from", "value": c["from"]},
                                                changes):
                return False
            if "to" in c and not changed_test({"field": c["field"], "op": "changed_to", "value": c["to"]},
                                              changes):
                return False
        return True

    def event_changes(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        return payload.get("changes")


class RecordDeleted(Trigger):
    type = "record_deleted"
    label = "A record is deleted"


class FormSubmitted(Trigger):
    """A public form created a record; ``view`` narrows it to one form view."""

    type = "form_submitted"
    label = "A form is submitted"
    properties = {"view": KEY}

    def matches(self, trig: dict[str, Any], payload: dict[str, Any]) -> bool:
        return not trig.get("view") or trig["view"] == payload.get("form")


class Manual(Trigger):
    """Started by hand on chosen records (``intake.queue_manual_run``)."""

    type = "manual"
    label = "Started by hand"
    addressed = True


class Webhook(Trigger):
    """Started by a POST to the rule's incoming-hook URL (``formwork.automation.hooks``), which creates
    a record, or updates the one whose ``match_field`` holds the sent value."""

    type = "webhook"
    label = "An incoming webhook"
    properties = {"match_field": KEY}
    addressed = True

    def check(self, trig: dict[str, Any], chk: TriggerCheck) -> None:
        super().check(trig, chk)
        t = chk.table
        if t is not None and trig.get("match_field") and trig["match_field"] not in t.fields_by_key:
            chk.err("/trigger/match_field", f"no field '{trig['match_field']}' in '{t.key}'")
