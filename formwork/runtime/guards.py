"""Write guards: rules from a higher layer that every record write must pass.

The record writer (:class:`formwork.runtime.records.RecordService`) is the one way into user tables; it
calls :func:`check` once per write (API create/update and batches, pages, import, bulk edit, automation
actions) with the values it is about to write. A guard may refuse fields (their messages come back as
a 422 naming each field) or add values to a write (an approval sending a record back for approval sets
its status). The runtime knows no guard itself: the automation layer registers its approval guard at
start-up (``register_actions`` → ``formwork.automation.approvals.register_guards``), the way field types
and actions register, so ``runtime`` never imports ``automation``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from formwork.errors import Conflict, ValidationFailed
from formwork.metadata.catalog import TableDef

if TYPE_CHECKING:
    from formwork.runtime.records.writer import RecordService


@dataclass
class PlannedWrite:
    """One record of a write: its id (None when it is being created) and the coerced values about to be
    written (a guard may add to them). ``errors`` collects the guards' refusals by field key."""

    record_id: int | None
    values: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)

    def refuse(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)


#: a guard: (the writer, the table, "create", "update" or "delete", the planned writes) → None; it reports
#: with ``PlannedWrite.refuse`` and may change ``PlannedWrite.values`` (not on a delete)
Guard = Callable[["RecordService", TableDef, str, list[PlannedWrite]], None]

_guards: dict[str, Guard] = {}
_delete_guards: set[str] = set()


def register(name: str, guard: Guard, *, deletes: bool = False) -> None:
    """Register (or replace, on a second create_app) the guard called ``name``; ``deletes``: it also
    judges deletes (see the module docstring)."""
    _guards[name] = guard
    if deletes:
        _delete_guards.add(name)
    else:
        _delete_guards.discard(name)


def registered() -> list[str]:
    return sorted(_guards)


class DeleteRefused(Conflict):
    """A delete a guard refused (409, code ``delete_refused``); ``details`` maps each refused record's id to
    the reasons, in the reader's language."""

    code = "delete_refused"


def check_delete(svc: RecordService, t: TableDef, ids: list[int]) -> None:
    """Run the delete guards over the records about to be deleted; 409 naming each refused record (its
    reasons), nothing deleted."""
    if not _delete_guards or not ids:
        return
    writes = [PlannedWrite(rid, {}) for rid in ids]
    for name in sorted(_delete_guards):
        _guards[name](svc, t, "delete", writes)
    details = {str(w.record_id): [m for msgs in w.errors.values() for m in msgs] for w in writes if w.errors}
    if not details:
        return
    raise DeleteRefused(next(iter(details.values()))[0], details)


def check(svc: RecordService, t: TableDef, op: str, writes: list[PlannedWrite], single: bool) -> None:
    """Run every guard over the planned writes; 422 naming each refused field (``records/<i>/<key>`` in a
    batch), nothing written."""
    if not _guards or not writes:
        return
    for guard in _guards.values():
        guard(svc, t, op, writes)
    details: dict[str, list[str]] = {}
    for i, w in enumerate(writes):
        for key, msgs in w.errors.items():
            details[key if single else f"records/{i}/{key}"] = msgs
    if details:
        raise ValidationFailed.from_details(details)
