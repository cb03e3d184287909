"""Checks an automation document against the app it belongs to (tables, fields, filters, templates)."""

from __future__ import annotations

from typing import Any

from formwork.errors import ValidationFailed
from formwork.metadata.catalog import AppDef, Catalog

TABLE_TRIGGERS = ("record_created", "record_updated", "record_deleted", "form_submitted", "date_reached",
                  "manual", "webhook")


def check_automation(catalog: Catalog, app: AppDef, doc: dict[str, Any]) -> None:
    from formwork.runtime.query import FilterCompiler

    trig = doc["trigger"]
    details: dict[str, list[str]] = {}
    table = None
    if trig["type"] in TABLE_TRIGGERS or trig.get("table"):
        table = app.tables_by_key.get(trig.get("table", ""))
        if table is None:
            details["/trigger/table"] = [f"no table '{trig.get('table')}' in app '{app.key}'"]
    if table is not None:
        for i, k in enumerate(trig.get("fields", [])):
            if k not in table.fields_by_key:
                details[f"/trigger/fields/{i}"] = [f"no field '{k}' in '{table.key}'"]
        if trig["type"] == "date_reached":
            df = table.fields_by_key.get(trig.get("date_field", ""))
            if df is None or df.ftype.kind not in ("date", "datetime"):
                details["/trigger/date_field"] = ["must name a date field of the table"]
    if trig["type"] == "schedule":
        from formwork.automation.schedule import ScheduleError, parse_schedule

        try:
            parse_schedule(trig.get("schedule") or {})
        except ScheduleError as e:
            details["/trigger/schedule"] = [str(e)]
    if details:
        raise ValidationFailed.from_details(details)
    if table is not None and doc.get("condition"):
        FilterCompiler.check(table, catalog, doc["condition"], "/condition")
