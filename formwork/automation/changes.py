"""The "changed" tests of a condition (``changed``, ``changed_to``, ``changed_from``): the one part of a
rule's condition that reads the triggering event instead of the record.

Before a condition compiles to SQL, ``resolve_changed`` replaces each such test by a constant true or
false node computed from the event's changes. Save-time checks (rules), event matching (triggers) and
runs (engine, scheduler) all share these helpers.
"""

from __future__ import annotations

from typing import Any

CHANGED_OPS = ("changed", "changed_to", "changed_from")
TRUE: dict[str, Any] = {"and": []}
FALSE: dict[str, Any] = {"not": {"and": []}}


def resolve_changed(tree: Any, changes: dict[str, Any] | None) -> Any:
    """Replace "changed" tests by constant true/false nodes, so the rest compiles to SQL.

    ``changes`` is the event's ``{field: {"old", "new"}}``; ``None`` (no update event) makes every
    "changed" test false.
    """
    if not isinstance(tree, dict):
        return tree
    for group in ("and", "or"):
        if group in tree and isinstance(tree[group], list):
            return {group: [resolve_changed(c, changes) for c in tree[group]]}
    if "not" in tree:
        return {"not": resolve_changed(tree["not"], changes)}
    if tree.get("op") in CHANGED_OPS:
        return TRUE if changed_test(tree, changes) else FALSE
    return tree


def _same(a: Any, b: Any) -> bool:
    """Compare an event value with a value from a rule; links/users compare by id."""
    if isinstance(a, dict) and "id" in a and not isinstance(b, dict):
        return bool(a["id"] == b)
    return bool(a == b)


def changed_test(node: dict[str, Any], changes: dict[str, Any] | None) -> bool:
    change = (changes or {}).get(node.get("field", ""))
    if change is None:
        return False
    if node["op"] == "changed":
        return True
    side = change.get("new") if node["op"] == "changed_to" else change.get("old")
    values = node.get("value")
    if isinstance(values, list):
        return any(_same(side, v) for v in values)
    return _same(side, values)


def changed_fields(tree: Any) -> list[str]:
    if not isinstance(tree, dict):
        return []
    out: list[str] = []
    for group in ("and", "or"):
        for c in tree.get(group, []) if isinstance(tree.get(group), list) else []:
            out += changed_fields(c)
    if "not" in tree:
        out += changed_fields(tree["not"])
    if tree.get("op") in CHANGED_OPS:
        out.append(str(tree.get("field")))
    return out
