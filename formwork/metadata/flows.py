"""State flows on single-select fields, and tables scoped through their parent: definitions and checks.

A table document may carry::

    "scope_parent": "order",                   # rows follow this to-one link's record (runtime.permissions)
    "flows": {"stage": {                       # a single-select field of the table
        "initial": ["lead"],                   # values a new record may start with (absent: any)
        "transitions": [                       # the allowed moves (absent: any)
            {"from": ["lead"], "to": ["qualified", "lost"]},
            {"from": ["won", "lost"], "to": ["lead"], "roles": ["sales_manager"]}],   # only these roles
        "require": {"lost": ["lost_reason"]},  # fields that must be filled on entering a state
        "free_roles": ["sales_manager"]}}      # roles that may make any move (skip ahead, go back)

Administrators (and the platform itself) move freely too; the required fields hold for everyone. The
record writer enforces this on every write (API, pages, boards, import, bulk edits, automations); boards
ask :func:`allowed_targets` which columns a card may move to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from formwork.metadata.catalog import Catalog, FieldDef, TableDef


@dataclass(frozen=True)
class Flow:
    field: FieldDef
    initial: tuple[str, ...] | None
    transitions: tuple[tuple[frozenset[str], frozenset[str], frozenset[str] | None], ...] | None
    require: dict[str, tuple[str, ...]]
    free_roles: frozenset[str]

    def values(self) -> list[str]:
        return [str(c.get("value")) for c in self.field.options.get("choices") or []]

    def free(self, role_keys: Iterable[str], is_admin: bool) -> bool:
        return is_admin or bool(self.free_roles.intersection(role_keys))

    def may_start(self, value: Any, role_keys: Iterable[str], is_admin: bool) -> bool:
        return value is None or self.initial is None or value in self.initial or self.free(role_keys, is_admin)

    def may_move(self, frm: Any, to: Any, role_keys: Iterable[str], is_admin: bool) -> str | None:
        """None when the move is allowed, else why not: "move" (no such transition) or "who" (not this user)."""
        if frm == to or self.transitions is None or self.free(role_keys, is_admin):
            return None
        if frm is None:  # a record without a state yet starts as a new one would
            return None if self.initial is None or to in self.initial else "move"
        roles = set(role_keys)
        exists = False
        for sources, targets, only in self.transitions:
            if frm in sources and to in targets:
                exists = True
                if only is None or only & roles:
                    return None
        return "who" if exists else "move"

    def targets(self, frm: Any, role_keys: Iterable[str], is_admin: bool) -> list[str]:
        """The states a record in ``frm`` may move to for this user (in the field's choice order)."""
        return [v for v in self.values() if v != frm and self.may_move(frm, v, role_keys, is_admin) is None]


def flows_of(t: TableDef) -> list[Flow]:
    out = []
    for key, spec in (t.doc.get("flows") or {}).items():
        f = t.fields_by_key.get(key)
        if f is None or not isinstance(spec, dict):
            continue
        trans = None
        if spec.get("transitions") is not None:
            trans = tuple((frozenset(tr.get("from") or []), frozenset(tr.get("to") or []),
                           frozenset(tr["roles"]) if tr.get("roles") else None) for tr in spec["transitions"])
        out.append(Flow(f, tuple(spec["initial"]) if spec.get("initial") is not None else None, trans,
                        {k: tuple(v) for k, v in (spec.get("require") or {}).items()},
                        frozenset(spec.get("free_roles") or [])))
    return out


def flow_of(t: TableDef, field_key: str) -> Flow | None:
    return next((fl for fl in flows_of(t) if fl.field.key == field_key), None)


def problems(t: TableDef, catalog: Catalog) -> dict[str, list[str]]:
    """What is wrong with a table's ``scope_parent`` and ``flows`` (JSON pointers into the table document)."""
    out: dict[str, list[str]] = {}
    for name in ("scope_parent", "display_parent"):
        parent = t.doc.get(name)
        if parent is not None:
            f = t.fields_by_key.get(parent)
            if f is None or not f.ftype.is_link or not f.stored:
                out[f"/{name}"] = [f"must name a link to one record of table '{t.key}'"]
    out.update(_button_problems(t, catalog))
    for i, key in enumerate(t.doc.get("timeline") or []):
        f = t.fields_by_key.get(key)
        if f is None or not f.ftype.is_link:
            out[f"/timeline/{i}"] = [f"must name a link field of table '{t.key}'"]
    for key, spec in (t.doc.get("flows") or {}).items():
        base = f"/flows/{key}"
        f = t.fields_by_key.get(key)
        if f is None or f.type != "single_select":
            out[base] = [f"must be a single select field of table '{t.key}'"]
            continue
        states = {str(c.get("value")) for c in f.options.get("choices") or []}

        def unknown(values: Iterable[Any], pointer: str, states: set[str] = states, key: str = key) -> None:
            bad = [str(v) for v in values if v not in states]
            if bad:
                out.setdefault(pointer, []).append(f"'{bad[0][:100]}' is not an option of '{key}'")

        unknown(spec.get("initial") or [], f"{base}/initial")
        for i, tr in enumerate(spec.get("transitions") or []):
            unknown([*tr.get("from", []), *tr.get("to", [])], f"{base}/transitions/{i}")
        for state, keys in (spec.get("require") or {}).items():
            unknown([state], f"{base}/require/{state}")
            for k in keys:
                g = t.fields_by_key.get(k)
                if g is None or g.ftype.read_only:
                    out.setdefault(f"{base}/require/{state}", []).append(f"no writable field '{k[:100]}'")
    return out


def _button_problems(t: TableDef, catalog: Catalog) -> dict[str, list[str]]:
    """Record buttons (``runtime.buttons``): unique keys, one thing to run, a valid ``when`` filter."""
    from formwork.errors import ValidationFailed
    from formwork.metadata.query import FilterCompiler

    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    for i, b in enumerate(t.doc.get("buttons") or []):
        if b.get("key") in seen:
            out[f"/buttons/{i}/key"] = [f"'{b.get('key')}' is used by another button"]
        seen.add(str(b.get("key")))
        if bool(b.get("action")) == bool(b.get("automation")):
            out[f"/buttons/{i}"] = ["give exactly one of 'action' or 'automation'"]
        if b.get("when"):
            try:
                FilterCompiler.check(t, catalog, b["when"], f"/buttons/{i}/when")
            except ValidationFailed as e:
                out.update({k: list(v) for k, v in (e.details or {}).items()})
    return out
