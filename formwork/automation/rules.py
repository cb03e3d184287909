"""Checks an automation document against the app it belongs to (tables, fields, filters, templates).

Everything that can be known when a rule is saved is checked here, so authors get a 422 with a JSON
pointer instead of a failed run later: unknown tables and fields, bad filters, template syntax and
sandbox escapes, schedules, actions that need a record on triggers that have none.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

from sqlalchemy import select

from formwork import db
from formwork.automation.actions.base import action_types
from formwork.automation.changes import changed_fields, resolve_changed
from formwork.automation.templating import TemplateError, validate_template
from formwork.automation.triggers.base import trigger_types
from formwork.errors import ValidationFailed
from formwork.metadata.catalog import AppDef, Catalog, TableDef
from formwork.metadata.query import FilterCompiler

TEMPLATE_NAMES = frozenset({"record", "trigger", "actions", "now", "today"})


def _templates(value: Any, pointer: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(pointer, value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _templates(v, f"{pointer}/{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _templates(v, f"{pointer}/{i}")]
    return []


class RuleChecker:
    """Collects save-time problems of one rule by JSON pointer; each action checks itself through it."""

    def __init__(self, catalog: Catalog, app: AppDef, table: TableDef | None, trigger: str) -> None:
        self.cat = catalog
        self.app = app
        self.table = table
        self.trigger = trigger
        self.details: dict[str, list[str]] = {}

    def err(self, pointer: str, message: str) -> None:
        self.details.setdefault(pointer, []).append(message)

    def template(self, pointer: str, text: str, extra: frozenset[str] = frozenset()) -> None:
        try:
            validate_template(text, names=TEMPLATE_NAMES | extra)
        except TemplateError as e:
            self.err(pointer, e.message)

    def templated(self, value: Any, pointer: str, extra: frozenset[str] = frozenset()) -> None:
        for p, text in _templates(value, pointer):
            self.template(p, text, extra)

    def fields_of(self, t: TableDef, fields: Any, pointer: str, extra: frozenset[str] = frozenset()) -> None:
        if not isinstance(fields, dict) or not fields:
            self.err(pointer, "must map field keys to values")
            return
        for k, v in fields.items():
            f = t.fields_by_key.get(k)
            if f is None:
                self.err(f"{pointer}/{k}", f"no field '{k}' in table '{t.key}'")
            elif f.ftype.read_only:
                self.err(f"{pointer}/{k}", f"'{k}' is read-only")
            self.templated(v, f"{pointer}/{k}", extra)

    def condition(self, t: TableDef | None, tree: Any, pointer: str) -> None:
        if t is None:
            self.err(pointer, "a condition needs a table on the trigger")
            return
        for k in changed_fields(tree):
            if k not in t.fields_by_key:
                self.err(pointer, f"no field '{k}' in table '{t.key}'")
        try:
            FilterCompiler.check(t, self.cat, resolve_changed(tree, None), pointer)
        except ValidationFailed as e:
            for k, v in (e.details or {}).items():
                self.details.setdefault(k, []).extend(v)

    def actions(self, items: list[dict[str, Any]], pointer: str) -> None:
        for i, a in enumerate(items):
            self.action(a, f"{pointer}/{i}")

    def action(self, a: dict[str, Any], p: str) -> None:
        kind = a["type"]
        action = action_types.get(kind)
        if action.needs_record and self.table is None:
            self.err(f"{p}/type", f"'{kind}' needs a triggering record; this trigger has none")
            return
        action.check(a, p, self)


def check_automation(catalog: Catalog, app: AppDef, doc: dict[str, Any], conn: Any = None,
                     actor: Any = None) -> None:
    """Refuse (422 with JSON pointers) what would fail later; ``actor`` (the saver) is checked against run_as.

    The trigger first (its table, then the trigger type's own checks), then the condition and actions."""
    if conn is not None:
        check_run_as(conn, actor, doc)
    trig = doc["trigger"]
    trigger = trigger_types.get(trig["type"])
    checker = RuleChecker(catalog, app, None, trig["type"])
    if trigger.needs_table or trig.get("table"):
        checker.table = app.tables_by_key.get(trig.get("table", ""))
        if checker.table is None:
            checker.err("/trigger/table", f"no table '{trig.get('table')}' in app '{app.key}'")
    trigger.check(trig, checker)
    if checker.details:
        raise ValidationFailed.from_details(checker.details)
    if doc.get("condition"):
        checker.condition(checker.table, doc["condition"], "/condition")
    checker.actions(doc.get("actions") or [], "/actions")
    if checker.details:
        raise ValidationFailed.from_details(checker.details)


# --- who a rule may run as, and its secrets --------------------------------------------------------
SECRET_MASK = "••••••"


def check_run_as(conn: Any, actor: Any, doc: dict[str, Any]) -> None:
    """Only an administrator (or the system) may make a rule act as someone else.

    ``run_as`` decides whose rights every action uses; letting an automation manager name an
    administrator would hand them every row and field. Anyone may name themselves.
    """
    run_as = doc.get("run_as")
    if not run_as or actor is None or actor.user_id is None or actor.is_admin:
        return
    own = conn.execute(select(db.users.c.username).where(db.users.c.id == actor.user_id)).scalar()
    if run_as != own:
        raise ValidationFailed.from_details(
            {"/run_as": ["only an administrator may make a rule run as another user; leave it out to run "
                         "the rule as yourself"]})


def _action_nodes(actions: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every action (nested branches included) with its path, e.g. ``(0, "on_approve", 1)``."""
    out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for i, a in enumerate(actions if isinstance(actions, list) else []):
        if not isinstance(a, dict):
            continue
        out.append(((*path, i), a))
        for name in action_types.nested_keys():
            out += _action_nodes(a.get(name), (*path, i, name))
    return out


def mask_secrets(doc: Any) -> Any:
    """A copy of an automation document whose action secrets read as the mask (for every response)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("actions"), list):
        return doc
    out = copy.deepcopy(doc)
    for _path, a in _action_nodes(out["actions"]):
        for k in action_types.secret_keys():
            if a.get(k):
                a[k] = SECRET_MASK
    return out


def strip_secrets(doc: dict[str, Any]) -> list[str]:
    """Remove action secrets from a document in place (app export); returns the JSON pointers emptied."""
    gone: list[str] = []
    for path, a in _action_nodes(doc.get("actions")):
        for k in action_types.secret_keys():
            if a.pop(k, None):
                gone.append("/actions/" + "/".join(map(str, path)) + f"/{k}")
    return gone


def keep_secrets(actions: Any, stored: Any) -> Any:
    """Secrets are write-only: an action sent back with the mask (or without its secret) keeps the
    stored one of the action at the same place, when that action is still of the same type."""
    if not isinstance(actions, list):
        return actions
    old = dict(_action_nodes(stored))
    out = copy.deepcopy(actions)
    for path, a in _action_nodes(out):
        prev = old.get(path)
        for k in action_types.secret_keys():
            if a.get(k) == SECRET_MASK or (k not in a and prev is not None):
                if prev is not None and prev.get("type") == a.get("type") and prev.get(k):
                    a[k] = prev[k]
                else:
                    a.pop(k, None)
    return out


def automation_schema() -> dict[str, Any]:
    """The automation document's JSON Schema: automation.json with ``$defs/action`` from the action
    registry and ``$defs/trigger`` (``$defs/triggers``, one schema per type) from the trigger registry."""
    text = resources.files("formwork.metadata").joinpath("schemas", "automation.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    schema["$defs"].update(action=action_types.schema(), trigger=trigger_types.schema(),
                           triggers=trigger_types.by_type())
    return schema
