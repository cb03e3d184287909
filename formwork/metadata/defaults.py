"""Field defaults that depend on who creates a record and when.

A field's ``default`` is either a plain value of its type or one of these markers (the same words as the
filter language's variables and relative dates):

* ``{"var": "me"}`` on a user field: the user who creates the record (nothing when the platform itself
  creates it, e.g. a public form or an automation running as the system);
* ``{"relative": "today"}`` on a date field: the creator's today (in their time zone);
* ``{"var": "now"}`` on a date-and-time field (or a date field: today).

They are resolved when a record is created (the writer) and when a new-record form is shown (prefill);
adding such a field to a table with records leaves those records empty.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from formwork.metadata.catalog import FieldDef
from formwork.metadata.fieldtypes.base import DATE, DATETIME, USER

ME = {"var": "me"}
NOW = {"var": "now"}
TODAY = {"relative": "today"}


def is_dynamic(value: Any) -> bool:
    return isinstance(value, dict) and (set(value) == {"var"} or set(value) == {"relative"})


def problem(kind: str, value: Any) -> str | None:
    """Why a dynamic default does not fit a field of value kind ``kind`` (None when it fits)."""
    if value == ME:
        return None if kind == USER else "{\"var\": \"me\"} is a default of user fields only"
    if value == NOW:
        return None if kind in (DATE, DATETIME) else "{\"var\": \"now\"} is a default of date fields only"
    if value == TODAY:
        return None if kind in (DATE, DATETIME) else "{\"relative\": \"today\"} is a default of date fields only"
    return "a computed default is {\"var\": \"me\"}, {\"var\": \"now\"} or {\"relative\": \"today\"}"


def _zone(name: str | None) -> dt.tzinfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def resolve(f: FieldDef, value: Any, user_id: int | None, timezone: str | None = None,
            now: dt.datetime | None = None) -> Any:
    """The default of ``f`` for a record created now by ``user_id`` (a plain default as it is)."""
    if not is_dynamic(value):
        return value
    if value == ME:
        return user_id
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(_zone(timezone))
    if f.ftype.kind == DATE:
        return moment.date().isoformat()
    if value == TODAY:  # a datetime field: the start of the creator's day
        return moment.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    return moment.isoformat()


def field_default(f: FieldDef, user_id: int | None, timezone: str | None = None) -> Any:
    """The value a new record (or a new-record form) starts with for ``f``, None when it has none."""
    value = f.doc.get("default")
    if value is None or not f.ftype.supports_default:
        return None
    return resolve(f, value, user_id, timezone)
