"""The action contract and its registry.

Each action is one class with a unique ``type`` string. It declares the JSON Schema of its own
properties (the automation document's schema is generated from the registry), the checks made when
a rule is saved, and what it does when a run reaches it. Registration is explicit, at start-up
(``register_actions()``); importing this module registers nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from sqlalchemy.engine import Connection

from formwork.automation.runs import Park, RuleRunner, RunRequest
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordService

ACTION_LIST: dict[str, Any] = {"type": "array", "maxItems": 50, "items": {"$ref": "#/$defs/action"}}
TEMPLATE: dict[str, Any] = {"type": "string", "maxLength": 20000}
TEMPLATES: dict[str, Any] = {"type": "array", "maxItems": 100, "items": TEMPLATE}
KEY: dict[str, Any] = {"$ref": "common.json#/$defs/key"}
FIELD_VALUES: dict[str, Any] = {"type": "object", "maxProperties": 500, "propertyNames": KEY}
COMMON_PROPERTIES: dict[str, Any] = {"type": {"type": "string"}, "key": KEY,
                                     "label": {"$ref": "common.json#/$defs/label"}}


class CheckContext(Protocol):
    """What an action's save-time check may use (formwork.automation.rules.RuleChecker)."""

    cat: Catalog
    app: AppDef
    table: TableDef | None  # the trigger's table; None for triggers without a record

    def err(self, pointer: str, message: str) -> None: ...

    def template(self, pointer: str, text: str, extra: frozenset[str] = frozenset()) -> None: ...

    def templated(self, value: Any, pointer: str, extra: frozenset[str] = frozenset()) -> None: ...

    def fields_of(self, t: TableDef, fields: Any, pointer: str, extra: frozenset[str] = frozenset()) -> None: ...

    def condition(self, t: TableDef | None, tree: Any, pointer: str) -> None: ...

    def actions(self, items: list[dict[str, Any]], pointer: str) -> None: ...


class RunContext(Protocol):
    """What an action may use while a run executes it (formwork.automation.steps.Executor)."""

    eng: RuleRunner
    conn: Connection
    cat: Catalog
    req: RunRequest
    rule: dict[str, Any]
    app: AppDef
    t: TableDef | None
    rid: int | None
    access: Access
    run_id: int
    outputs: dict[str, Any]
    steps: list[dict[str, Any]]
    dry: bool
    reader_access: Access | None  # a dry run's viewer: what they may not see stays out of the output

    def service(self) -> RecordService: ...

    def record(self) -> dict[str, Any]: ...

    def forget_record(self) -> None: ...

    def render(self, value: Any, **extra: Any) -> Any: ...

    def queue_delivery(self, kind: str, request: dict[str, Any], path: list[Any]) -> dict[str, Any]: ...

    def run_list(self, items: list[dict[str, Any]], base: list[Any], resume: list[Any] | None) -> Park | None: ...


class Action:
    """One kind of automation action.

    ``run`` returns the step's output (kept as ``actions[key]`` for later templates) or a ``Park`` to
    stop the run for now, and raises ``StepFailed`` (or a domain error) to fail it; the run's database
    changes are then undone. In a dry run (``ex.dry``) it says what it would do and changes nothing.
    """

    type: ClassVar[str]
    label: ClassVar[str]
    # JSON Schema of the action's own properties (``type``, ``key`` and ``label`` are common to all)
    properties: ClassVar[dict[str, Any]] = {}
    # the run must have a triggering record (refused at save time for triggers without one)
    needs_record: ClassVar[bool] = False
    # properties that hold nested action lists (branches, approval outcomes)
    nested: ClassVar[tuple[str, ...]] = ()
    # write-only properties: masked in every response, dropped from exports, kept when sent back masked
    secrets: ClassVar[tuple[str, ...]] = ()
    # only chooses which nested list runs: keeps no output, and a stop inside is the nested step's
    routes_only: ClassVar[bool] = False

    def schema(self) -> dict[str, Any]:
        """The action object's schema (applied when ``type`` is this action's)."""
        return {"properties": dict(self.properties)}

    def check(self, a: dict[str, Any], pointer: str, chk: CheckContext) -> None:
        """Save-time checks against the app (tables, fields, templates); report with ``chk.err``."""

    def run(self, a: dict[str, Any], path: list[Any], ex: RunContext) -> Any:
        raise NotImplementedError


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

    def register(self, action: Action) -> None:
        if action.type in self._actions:
            raise ValueError(f"action {action.type!r} is registered twice")
        self._actions[action.type] = action

    def get(self, name: str) -> Action:
        return self._actions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def all(self) -> list[Action]:
        return list(self._actions.values())

    def nested_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for a in self._actions.values() for k in a.nested))

    def secret_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for a in self._actions.values() for k in a.secrets))

    def schema(self) -> dict[str, Any]:
        """``$defs/action`` of the automation schema: the common properties, then one if/then per type.

        ``unevaluatedProperties`` refuses a property that the action's own type does not declare."""
        return {
            "type": "object",
            "required": ["type"],
            "properties": {**COMMON_PROPERTIES, "type": {"enum": [a.type for a in self._actions.values()]}},
            "allOf": [{"if": {"properties": {"type": {"const": a.type}}, "required": ["type"]}, "then": a.schema()}
                      for a in self._actions.values()],
            "unevaluatedProperties": False,
        }


action_types = ActionRegistry()
