"""Form inputs ↔ field values: posted values become API field values, stored values become input values."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from formwork import db
from formwork.errors import BadRequest
from formwork.metadata.catalog import FieldDef, TableDef
from formwork.metadata.fieldtypes.base import MULTI
from formwork.metadata.fieldtypes.link import is_many
from formwork.metadata.flows import flows_of
from formwork.ui.context import Page
from formwork.ui.render import choice_map, local_datetime


def parse_form(p: Page, t: TableDef, fields: list[FieldDef], form: Any) -> dict[str, Any]:
    """Turn posted form values into API field values (the services coerce and validate them)."""
    out: dict[str, Any] = {}

    def getlist(key: str) -> list[str]:
        return form.getlist(key) if hasattr(form, "getlist") else ([form[key]] if key in form else [])

    for f in fields:
        key, kind = f.key, f.ftype.input_kind
        if kind == "checkbox":
            out[key] = bool(form.get(key))
            continue
        if kind == "checks" or (kind == "users" and f.ftype.value_kind(f, p.cat) == MULTI):
            vals = [v for v in getlist(key) if v]
            out[key] = [int(v) if kind == "users" and v.isdigit() else v for v in vals]
            continue
        if kind == "records":
            vals = [v for v in getlist(key) if v]
            ids = []
            for v in vals:
                if not v.strip().isdigit():
                    raise BadRequest(f"{key}: record ids only")
                ids.append(int(v))
            out[key] = ids if is_many(f) else (ids[0] if ids else None)
            continue
        raw = form.get(key)
        if raw is None:
            continue
        raw = str(raw)
        if kind == "users":
            out[key] = int(raw) if raw.isdigit() else (raw or None)
        elif kind == "datetime":
            out[key] = local_to_iso(raw, p.tz) if raw else None
        elif raw.strip() == "" and kind not in ("text", "textarea"):
            out[key] = None
        else:
            out[key] = raw if raw != "" else None
    return out


def local_to_iso(value: str, tz: str) -> str:
    """A datetime-local input ("2026-05-01T09:30") in the viewer's time zone, as ISO 8601 with offset."""
    try:
        d = dt.datetime.fromisoformat(value)
    except ValueError:
        return value  # the field type reports the bad value
    if d.tzinfo is None:
        try:
            d = d.replace(tzinfo=ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            d = d.replace(tzinfo=dt.UTC)
    return d.isoformat()


def input_options(p: Page, t: TableDef, fields: list[FieldDef]) -> dict[str, Any]:
    """What the inputs need: choices of selects, the active users for user pickers (one query)."""
    out: dict[str, Any] = {"choices": {}, "users": [], "tz": p.tz,
                           "base": f"/apps/{p.cat.app_by_id(t.app_id).key}/{t.key}"}
    for f in fields:
        if f.ftype.has_choices:
            out["choices"][f.key] = choice_map(f, p.locale)
    if any(f.ftype.input_kind == "users" for f in fields):
        out["users"] = [{"id": r.id, "name": r.name} for r in p.conn.execute(
            select(db.users.c.id, db.users.c.name).where(db.users.c.active.is_(True)).order_by(db.users.c.name)
            .limit(1000))]
    return out


def flow_options(p: Page, t: TableDef, options: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """Limit the choices of fields under a state flow to the moves this user may make: from the record's
    ``current`` values (its state stays offered), or the states a new record may start in (``current``
    None). The writer enforces the flow anyway; the page only offers what it would accept."""
    roles = [str(r.get("key")) for r in p.access.roles]
    for fl in flows_of(t):
        key = fl.field.key
        if key not in options["choices"]:
            continue
        allowed: set[Any]
        if current is None:
            allowed = {v for v in fl.values() if fl.may_start(v, roles, p.access.is_admin)}
        else:
            state = current.get(key)
            allowed = set(fl.targets(state, roles, p.access.is_admin)) | {state}
        options["choices"][key] = {v: c for v, c in options["choices"][key].items() if v in allowed}
    return options


def input_value(f: FieldDef, value: Any, tz: str) -> Any:
    """A JSON value as an input's value attribute."""
    if value is None:
        return ""
    if f.ftype.input_kind == "datetime" and isinstance(value, str):
        d = local_datetime(value, tz)
        return d.strftime("%Y-%m-%dT%H:%M") if d else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
