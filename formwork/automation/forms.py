"""An automation document as a form and back: what the browser's builder posts, read into the document
the API takes, and a document spread into the values its form shows.

The form is flat (one name per input): the trigger's options are ``trigger_*``/``sched_*``, each action
has the prefix of its place in the action lists (``a.0``, ``a.0.then.1``) and its options follow it
(``a.0.title``). Options an action's form does not edit travel in ``<prefix>._keep`` (hidden), so
nothing of a document is lost by opening and saving it in the builder. Reading never refuses: what is
wrong is left for the same validation the API runs, whose JSON pointers :func:`input_name` turns back
into these names.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from formwork.automation.actions.base import action_types
from formwork.automation.changes import CHANGED_OPS

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
WAIT_UNITS = ("minutes", "hours", "days")
EVERY = ("day", "weekday", "week", "month", "hour")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: the options each action's form edits (everything else is kept as it was)
EDITED: dict[str, tuple[str, ...]] = {
    "update_record": ("fields",),
    "create_record": ("table", "fields"),
    "update_related": ("link", "fields"),
    "send_email": ("to", "cc", "roles", "owner", "manager", "parent_manager", "subject", "body"),
    "call_webhook": ("url", "secret", "timeout"),
    "notify": ("users", "roles", "owner", "manager", "parent_manager", "title", "body"),
    "assign_owner": ("field", "role", "team", "owner_team_of", "strategy"),
    "request_approval": ("approvers", "mode", "title", "on_approve", "on_reject", "on_return"),
    "wait": ("seconds", "minutes", "hours", "days"),
    "branch": ("condition", "then", "else"),
    "recycle_to_pool": ("table",),
}
TRIGGER_OPTIONS = ("table", "fields", "changes", "view", "schedule", "date_field", "offset_days", "at", "timezone",
                   "match_field")


def key_from_label(label: str, taken: set[str] | None = None) -> str:
    """A key from a label: ASCII letters, digits and underscores; ``rule`` for labels without any
    (a Chinese label), numbered when taken."""
    text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", "_", text).strip("_")
    if not text or not text[0].isalpha():
        text = "rule" + (f"_{text}" if text else "")
    text = text[:50].rstrip("_")
    key, n = text, 2
    while taken and key in taken:
        key, n = f"{text}_{n}", n + 1
    return key


def _text(form: Mapping[str, Any], name: str) -> str:
    return str(form.get(name) or "").strip()


def _list(form: Any, name: str) -> list[str]:
    return [str(v).strip() for v in form.getlist(name) if str(v).strip()]


def _lines(value: str) -> list[str]:
    """Recipients typed one per line or separated by commas (Chinese commas too)."""
    return [x.strip() for x in re.split(r"[\n,，;；]+", value) if x.strip()]


def _number(raw: str) -> Any:
    """A typed number as int/float; the text itself when it is not one (the schema then says so)."""
    if raw == "":
        return None
    try:
        return int(raw) if re.fullmatch(r"-?\d+", raw) else float(raw)
    except ValueError:
        return raw


def _keep(form: Mapping[str, Any], name: str) -> dict[str, Any]:
    try:
        value = json.loads(form.get(name) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _label(form: Mapping[str, Any]) -> Any:
    en, zh = _text(form, "label_en"), _text(form, "label_zh")
    if en and zh:
        return {"en": en, "zh-CN": zh}
    return en or zh


# --- form → document ------------------------------------------------------------------------------
def doc_from_form(form: Any, condition: Any = None) -> dict[str, Any]:
    """The automation document a builder form describes; ``condition`` is the filter tree the shared
    condition builder read from the same form (None: none), to which "only when changed" tests are added."""
    doc: dict[str, Any] = _keep(form, "_keep")
    label = _label(form)
    doc["label"] = label
    doc["key"] = _text(form, "key") or key_from_label(label if isinstance(label, str) else label.get("en") or "")
    doc["enabled"] = bool(form.get("enabled"))
    description = _text(form, "description")
    if description:
        doc["description"] = description
    else:
        doc.pop("description", None)
    doc["trigger"] = trigger_from_form(form)
    changed = [{"field": k, "op": "changed"} for k in _list(form, "only_changed")]
    parts: list[Any] = []
    if isinstance(condition, dict) and set(condition) == {"and"} and isinstance(condition["and"], list):
        parts = list(condition["and"])  # "all of these": one level, with the "changed" tests beside
    elif condition:
        parts = [condition]
    parts += changed
    if parts:
        doc["condition"] = parts[0] if len(parts) == 1 else {"and": parts}
    else:
        doc.pop("condition", None)
    doc["actions"] = actions_from_form(form, "a")
    return doc


def trigger_from_form(form: Any) -> dict[str, Any]:
    kind = _text(form, "trigger_type") or "record_created"
    trig: dict[str, Any] = {k: v for k, v in _keep(form, "trigger_keep").items() if k not in TRIGGER_OPTIONS}
    trig["type"] = kind
    table = _text(form, "trigger_table")
    if table:
        trig["table"] = table
    if kind == "record_updated":
        fields = _list(form, "trigger_fields")
        if fields:
            trig["fields"] = fields
        changes = []
        for f, frm, to in zip(form.getlist("ch_field"), form.getlist("ch_from"), form.getlist("ch_to"), strict=False):
            if not str(f).strip():
                continue
            c: dict[str, Any] = {"field": str(f).strip()}
            if str(frm).strip():
                c["from"] = _value(str(frm).strip())
            if str(to).strip():
                c["to"] = _value(str(to).strip())
            changes.append(c)
        if changes:
            trig["changes"] = changes
    elif kind == "form_submitted" and _text(form, "trigger_view"):
        trig["view"] = _text(form, "trigger_view")
    elif kind == "schedule":
        trig["schedule"] = schedule_from_form(form)
    elif kind == "date_reached":
        trig["date_field"] = _text(form, "trigger_date_field")
        n = _number(_text(form, "offset_n")) or 0
        direction = _text(form, "offset_dir") or "on"
        if isinstance(n, int | float) and direction != "on":
            trig["offset_days"] = -abs(int(n)) if direction == "before" else abs(int(n))
        elif not isinstance(n, int | float):
            trig["offset_days"] = n
        trig["at"] = _text(form, "trigger_at") or "09:00"
        trig["timezone"] = _text(form, "trigger_tz") or "UTC"
    elif kind == "webhook" and _text(form, "match_field"):
        trig["match_field"] = _text(form, "match_field")
    return trig


def _value(raw: str) -> Any:
    """A from/to value as typed: true/false and numbers as themselves, anything else as text."""
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+(\.\d+)?", raw):
        return _number(raw)
    return raw


def schedule_from_form(form: Any) -> dict[str, Any]:
    tz = _text(form, "sched_tz") or "UTC"
    if _text(form, "sched_mode") == "cron":
        return {"cron": _text(form, "sched_cron"), "timezone": tz}
    every = _text(form, "sched_every") or "day"
    spec: dict[str, Any] = {"every": every, "timezone": tz}
    if every == "hour":
        spec["at"] = f"{int(_number(_text(form, 'sched_minute')) or 0):02d}" \
            if re.fullmatch(r"\d{1,2}", _text(form, "sched_minute") or "0") else _text(form, "sched_minute")
    else:
        spec["at"] = _text(form, "sched_at") or "09:00"
    if every == "week":
        spec["weekday"] = _text(form, "sched_weekday") or "mon"
    if every == "month":
        day = _text(form, "sched_day") or "1"
        spec["day"] = "last" if day == "last" else _number(day)
    return spec


def action_prefixes(form: Any, prefix: str) -> list[str]:
    """The actions of one list in the form, in order: ``<prefix>.<n>`` for each ``<prefix>.<n>.type``."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.type$")
    found = sorted({int(m.group(1)) for name in form for m in [pat.match(name)] if m})
    return [f"{prefix}.{i}" for i in found]


def actions_from_form(form: Any, prefix: str) -> list[dict[str, Any]]:
    return [action_from_form(form, p) for p in action_prefixes(form, prefix)]


def _field_values(form: Any, p: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in zip(form.getlist(f"{p}.ff"), form.getlist(f"{p}.fv"), strict=False):
        if str(k).strip():
            out[str(k).strip()] = str(v)
    return out


def action_from_form(form: Any, p: str) -> dict[str, Any]:
    kind = _text(form, f"{p}.type")
    a: dict[str, Any] = {k: v for k, v in _keep(form, f"{p}._keep").items() if k not in EDITED.get(kind, ())}
    a["type"] = kind
    if _text(form, f"{p}.key"):
        a["key"] = _text(form, f"{p}.key")

    def put(name: str, value: Any) -> None:
        if value not in (None, "", [], {}, False):
            a[name] = value

    if kind in ("update_record", "create_record", "update_related"):
        if kind == "create_record":
            put("table", _text(form, f"{p}.table"))
        if kind == "update_related":
            put("link", _text(form, f"{p}.link"))
        a["fields"] = _field_values(form, p)
    elif kind == "send_email":
        put("to", _lines(str(form.get(f"{p}.to") or "")))
        put("cc", _lines(str(form.get(f"{p}.cc") or "")))
        put("roles", _list(form, f"{p}.roles"))
        put("owner", bool(form.get(f"{p}.owner")))
        put("manager", bool(form.get(f"{p}.manager")))
        put("parent_manager", _text(form, f"{p}.parent_manager"))
        a["subject"] = str(form.get(f"{p}.subject") or "")
        put("body", str(form.get(f"{p}.body") or ""))
    elif kind == "call_webhook":
        a["url"] = _text(form, f"{p}.url")
        secret = str(form.get(f"{p}.secret") or "")
        if form.get(f"{p}.clear_secret"):
            a["secret"] = ""
        elif secret:
            a["secret"] = secret
        put("timeout", _number(_text(form, f"{p}.timeout")))
    elif kind == "notify":
        put("users", _list(form, f"{p}.users"))
        put("roles", _list(form, f"{p}.roles"))
        put("owner", bool(form.get(f"{p}.owner")))
        put("manager", bool(form.get(f"{p}.manager")))
        put("parent_manager", _text(form, f"{p}.parent_manager"))
        a["title"] = str(form.get(f"{p}.title") or "")
        put("body", str(form.get(f"{p}.body") or ""))
    elif kind == "assign_owner":
        put("field", _text(form, f"{p}.field"))
        who = _text(form, f"{p}.who")
        if who.startswith("role:"):
            a["role"] = who[5:]
        elif who.startswith("team:"):
            a["team"] = who[5:]
        elif who.startswith("owner_team_of:"):
            a["owner_team_of"] = who[len("owner_team_of:"):]
        a["strategy"] = _text(form, f"{p}.strategy") or "round_robin"
    elif kind == "request_approval":
        approvers: dict[str, Any] = {}
        users = _list(form, f"{p}.users")
        if users:
            approvers["users"] = users
        if _text(form, f"{p}.role"):
            approvers["role"] = _text(form, f"{p}.role")
        if form.get(f"{p}.manager"):
            approvers["manager"] = True
        a["approvers"] = approvers
        a["mode"] = _text(form, f"{p}.mode") or "any"
        put("title", str(form.get(f"{p}.title") or ""))
        for name in ("on_approve", "on_reject", "on_return"):
            put(name, actions_from_form(form, f"{p}.{name}"))
    elif kind == "wait":
        unit = _text(form, f"{p}.unit")
        a[unit if unit in WAIT_UNITS else "minutes"] = _number(_text(form, f"{p}.amount")) or 0
    elif kind == "branch":
        cond = _keep(form, f"{p}.condition_keep")
        if cond:
            a["condition"] = cond
        for name in ("then", "else"):
            put(name, actions_from_form(form, f"{p}.{name}"))
    elif kind == "recycle_to_pool":
        put("table", _text(form, f"{p}.table"))
    return a


# --- document → form ------------------------------------------------------------------------------
def split_condition(tree: Any) -> tuple[Any, list[str]]:
    """A rule's condition as (the part the condition builder edits, the "only when changed" fields)."""
    if not isinstance(tree, dict):
        return None, []
    if tree.get("op") == "changed" and isinstance(tree.get("field"), str):
        return None, [tree["field"]]
    if isinstance(tree.get("and"), list):
        changed = [c["field"] for c in tree["and"]
                   if isinstance(c, dict) and c.get("op") == "changed" and isinstance(c.get("field"), str)]
        rest = [c for c in tree["and"] if not (isinstance(c, dict) and c.get("op") == "changed"
                                               and isinstance(c.get("field"), str))]
        if not rest:
            return None, changed
        return (rest[0] if len(rest) == 1 else {"and": rest}), changed
    return tree, []


def has_changed_tests(tree: Any) -> bool:
    if not isinstance(tree, dict):
        return False
    if tree.get("op") in CHANGED_OPS:
        return True
    return any(has_changed_tests(c) for g in ("and", "or") for c in (tree.get(g) or [])) or \
        has_changed_tests(tree.get("not"))


def kept(a: dict[str, Any]) -> str:
    """The options of an action its form does not edit, for the hidden ``_keep`` input."""
    return json.dumps({k: v for k, v in a.items() if k not in (*EDITED.get(a.get("type", ""), ()), "type", "key")},
                      ensure_ascii=False)


def kept_rule(doc: dict[str, Any]) -> str:
    """The document's parts the builder does not show (run_as, rate limits), for the hidden ``_keep``."""
    return json.dumps({k: v for k, v in doc.items()
                       if k not in ("id", "key", "label", "enabled", "description", "trigger", "condition",
                                    "actions")}, ensure_ascii=False)


def kept_trigger(trig: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in trig.items() if k not in (*TRIGGER_OPTIONS, "type")}, ensure_ascii=False)


# --- editing the action lists ---------------------------------------------------------------------
def _list_at(actions: list[dict[str, Any]], path: list[str]) -> list[dict[str, Any]] | None:
    """The action list a path names (``["0", "then"]`` → the ``then`` list of action 0)."""
    items = actions
    i = 0
    while i < len(path):
        if i + 1 >= len(path) or not path[i].isdigit() or int(path[i]) >= len(items):
            return None
        nested = items[int(path[i])].setdefault(path[i + 1], [])
        if not isinstance(nested, list):
            return None
        items = nested
        i += 2
    return items


def apply_op(doc: dict[str, Any], op: str) -> None:
    """Change the document's action lists as a builder button asks: ``add:<list prefix>:<type>``,
    ``up:<action prefix>``, ``down:<action prefix>``, ``remove:<action prefix>``; anything else is ignored."""
    verb, _, rest = op.partition(":")
    actions = doc.setdefault("actions", [])
    if verb == "add":
        prefix, _, kind = rest.rpartition(":")
        target = _list_at(actions, prefix.split(".")[1:]) if prefix.startswith("a") else None
        if target is not None and kind in action_types and len(target) < 50:
            target.append(new_action(kind))
        return
    parts = rest.split(".")[1:]
    if verb not in ("up", "down", "remove") or not parts or not parts[-1].isdigit():
        return
    target = _list_at(actions, parts[:-1])
    i = int(parts[-1])
    if target is None or i >= len(target):
        return
    if verb == "remove":
        target.pop(i)
    elif verb == "up" and i > 0:
        target[i - 1], target[i] = target[i], target[i - 1]
    elif verb == "down" and i + 1 < len(target):
        target[i + 1], target[i] = target[i], target[i + 1]


def new_action(kind: str) -> dict[str, Any]:
    """A fresh action of a type, as the builder adds it."""
    start: dict[str, dict[str, Any]] = {
        "update_record": {"fields": {}}, "create_record": {"fields": {}}, "update_related": {"fields": {}},
        "send_email": {"subject": "", "owner": True}, "call_webhook": {"url": ""},
        "notify": {"title": "", "owner": True}, "assign_owner": {"strategy": "round_robin"},
        "request_approval": {"approvers": {"manager": True}, "mode": "any"}, "wait": {"hours": 1},
        "branch": {}, "recycle_to_pool": {},
    }
    return {"type": kind, **start.get(kind, {})}


# --- errors -----------------------------------------------------------------------------------------
def input_name(pointer: str) -> str:
    """The form input a JSON pointer of a validation error belongs to (``/actions/0/then/1/title`` →
    ``a.0.then.1.title``; ``/trigger/schedule`` → ``trigger.schedule``); ``""`` for the whole rule."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in str(pointer).split("/") if p]
    if not parts:
        return ""
    if parts[0] == "actions":
        out = ["a"]
        rest = parts[1:]
        while rest:
            if rest[0].isdigit():
                out.append(rest[0])
                rest = rest[1:]
                if rest and rest[0] in action_types.nested_keys():
                    out.append(rest[0])
                    rest = rest[1:]
                    continue
                if rest and rest[0] == "approvers":
                    rest = rest[1:] or ["users"]
                if rest:
                    out.append(rest[0] if rest[0] != "fields" else "fields" + ("." + rest[1] if len(rest) > 1 else ""))
                break
            break
        return ".".join(out)
    if parts[0] == "trigger":
        return "trigger." + parts[1] if len(parts) > 1 else "trigger.type"
    return parts[0]
