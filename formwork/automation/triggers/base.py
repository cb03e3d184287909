"""The trigger contract and its registry.

Each trigger type is one class with a unique ``type`` string. It declares the JSON Schema of its own
options (the automation document's trigger schema is generated from the registry), whether a rule
with it names a table, its save-time checks, and how it starts runs: an event trigger matches outbox
events (``formwork.automation.intake``), a timed trigger is fired by the scheduler
(``formwork.automation.scheduler``). Registration is explicit, at start-up (``register_triggers()``);
importing this module registers nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy.engine import Connection

from formwork.automation.runs import RuleRunner
from formwork.metadata.catalog import AppDef, Catalog, TableDef

if TYPE_CHECKING:
    from formwork.automation.settings import Settings

KEY: dict[str, Any] = {"$ref": "common.json#/$defs/key"}
#: options every trigger takes: its type, and the table whose records its runs act on
COMMON_PROPERTIES: dict[str, Any] = {"type": {"type": "string"}, "table": KEY}


class TriggerCheck(Protocol):
    """What a trigger's save-time check may use (formwork.automation.rules.RuleChecker)."""

    cat: Catalog
    app: AppDef
    table: TableDef | None  # the trigger's table; None when it names none (or an unknown one)

    def err(self, pointer: str, message: str) -> None: ...


class Firer(Protocol):
    """What a timed trigger may use while the scheduler fires it (formwork.automation.scheduler.Scheduler)."""

    runner: RuleRunner
    settings: Settings

    def claim(self, conn: Connection, rule: dict[str, Any], key: str, due: dt.datetime) -> bool: ...


class Trigger:
    """One kind of trigger: what starts runs of a rule.

    The document stores it as ``rule["trigger"]``: ``{"type": ..., "table"?: ..., <options>}``.
    """

    type: ClassVar[str]
    label: ClassVar[str]
    # JSON Schema of the trigger's own options (``type`` and ``table`` are common to all)
    properties: ClassVar[dict[str, Any]] = {}
    # a rule with this trigger must name a table of its app (its runs act on that table's records)
    needs_table: ClassVar[bool] = True
    # fired by the scheduler (``fire``) rather than by outbox events
    timed: ClassVar[bool] = False
    # its events name the one rule they start (``payload["automation_id"]``): manual runs, webhooks
    addressed: ClassVar[bool] = False

    def schema(self) -> dict[str, Any]:
        """The trigger object's schema for this type: the common properties and the trigger's own."""
        return {"title": self.label, "type": "object", "required": ["type"],
                "properties": {**COMMON_PROPERTIES, "type": {"const": self.type}, **self.properties}}

    def check(self, trig: dict[str, Any], chk: TriggerCheck) -> None:
        """Save-time checks against the app; report with ``chk.err``. Subclasses call ``super().check``.

        An update trigger's ``fields`` and ``changes`` filters name fields of the table on whatever
        trigger carries them, as they always have; an aggregate condition belongs to schedules only.
        """
        t = chk.table
        if t is not None:
            for i, k in enumerate(trig.get("fields", [])):
                if k not in t.fields_by_key:
                    chk.err(f"/trigger/fields/{i}", f"no field '{k}' in '{t.key}'")
            for i, c in enumerate(trig.get("changes", [])):
                if c["field"] not in t.fields_by_key:
                    chk.err(f"/trigger/changes/{i}/field", f"no field '{c['field']}' in '{t.key}'")
        if trig.get("aggregate_condition") is not None and "aggregate_condition" not in self.properties:
            chk.err("/trigger/aggregate_condition", "only a schedule trigger takes an aggregate condition")

    def matches(self, trig: dict[str, Any], payload: dict[str, Any]) -> bool:
        """Whether an event of this type (its ``payload``) starts a rule with trigger ``trig``."""
        return True

    def event_changes(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The ``{field: {"old", "new"}}`` changes an event carries (for "changed" tests); None if none."""
        return None

    def fire(self, sch: Firer, conn: Connection, cat: Catalog, app: AppDef, rule: dict[str, Any],
             table: TableDef | None, last: dt.datetime, now: dt.datetime) -> int:
        """Timed triggers: start the runs due in (last, now], each firing once; returns the runs logged."""
        raise NotImplementedError

    def fire_late(self, runner: RuleRunner, claim: Any, conn: Connection, cat: Catalog, ev: Any,
                  now: dt.datetime | None = None) -> int:
        """Timed triggers: a record was created or changed (outbox event ``ev``) after a firing of its was
        already due; start what must not be lost (intake calls this for every record event)."""
        return 0


class TriggerRegistry:
    def __init__(self) -> None:
        self._triggers: dict[str, Trigger] = {}

    def register(self, trigger: Trigger) -> None:
        if trigger.type in self._triggers:
            raise ValueError(f"trigger {trigger.type!r} is registered twice")
        shared = self.options()
        for name, schema in trigger.properties.items():
            if name in COMMON_PROPERTIES or (name in shared and shared[name] != schema):
                raise ValueError(f"trigger {trigger.type!r}: option {name!r} means something else elsewhere")
        self._triggers[trigger.type] = trigger

    def get(self, name: str) -> Trigger:
        return self._triggers[name]

    def find(self, name: Any) -> Trigger | None:
        """The trigger of that type, or None (an event or a rule of a type nobody registered)."""
        return self._triggers.get(name) if isinstance(name, str) else None

    def __contains__(self, name: object) -> bool:
        return name in self._triggers

    def all(self) -> list[Trigger]:
        return list(self._triggers.values())

    def options(self) -> dict[str, Any]:
        """Every trigger's options by name (an option means the same on every trigger declaring it)."""
        out: dict[str, Any] = {}
        for t in self._triggers.values():
            out.update(t.properties)
        return out

    def schema(self) -> dict[str, Any]:
        """``$defs/trigger`` of the automation schema.

        A rule's trigger may carry the options of any trigger type, as it always could (an option the
        type does not use is ignored); one nobody declares is refused. ``by_type`` (``$defs/triggers``)
        tells which options each type uses."""
        return {
            "type": "object",
            "required": ["type"],
            "properties": {**COMMON_PROPERTIES, "type": {"enum": [t.type for t in self._triggers.values()]},
                           **self.options()},
            "additionalProperties": False,
        }

    def by_type(self) -> dict[str, Any]:
        """``$defs/triggers``: one schema per trigger type (its common properties and its own options)."""
        return {t.type: t.schema() for t in self._triggers.values()}


trigger_types = TriggerRegistry()
