"""Shared option lists (数据字典): an app-level list of choices that several select fields use.

A list lives in its app's document (``option_lists``: key, label, choices with value, label and colour,
in order), so it travels with app exports and needs no table of its own. A single or multi select whose
options name a ``list`` takes its choices from that list: ``MetadataService`` copies them into the field
when the field is saved, and ``OptionLists.update`` re-saves every field using a list when the list changes,
through ``update_field``. So a relabelled or recoloured option shows everywhere at once, records keep
their values, and removing an option that records use is refused with the count per field (as the field
options editor does) unless the caller confirms, which empties those values.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from formwork.errors import BadRequest, Conflict, NotFound, ValidationFailed
from formwork.metadata import validation
from formwork.metadata.catalog import AppDef, FieldDef
from formwork.metadata.documents import BUILD
from formwork.metadata.keys import derive_key

if TYPE_CHECKING:
    from formwork.metadata.service import MetadataService


def app_lists(app: AppDef) -> list[dict[str, Any]]:
    return list(app.doc.get("option_lists") or [])


def find_list(app: AppDef, key: str) -> dict[str, Any] | None:
    return next((ol for ol in app_lists(app) if ol.get("key") == key), None)


def fields_using(app: AppDef, key: str) -> list[FieldDef]:
    """The live select fields of ``app`` that take their choices from list ``key``."""
    return [f for t in app.tables for f in t.fields if f.ftype.has_choices and f.options.get("list") == key]


class OptionLists:
    """Create, change and delete an app's shared option lists (the caller's transaction; needs BUILD)."""

    def __init__(self, svc: MetadataService) -> None:
        self.svc = svc

    def _app(self, app_key: str) -> AppDef:
        return self.svc.catalog.app(app_key)

    def json(self, app: AppDef, ol: dict[str, Any]) -> dict[str, Any]:
        cat = self.svc.catalog
        used = [{"table": cat.table_by_id(f.table_id).key, "field": f.key,
                 "table_label": cat.table_by_id(f.table_id).label, "field_label": f.label}
                for f in fields_using(app, ol["key"])]
        return {**copy.deepcopy(ol), "used_by": used}

    def all(self, app_key: str) -> list[dict[str, Any]]:
        app = self._app(app_key)
        return [self.json(app, ol) for ol in app_lists(app)]

    def get(self, app_key: str, key: str) -> dict[str, Any]:
        app = self._app(app_key)
        ol = find_list(app, key)
        if ol is None:
            raise NotFound(f"no option list '{key[:63]}' in app '{app_key}'")
        return self.json(app, ol)

    def _save(self, app: AppDef, lists: list[dict[str, Any]], action: str, before: Any, after: Any) -> None:
        from sqlalchemy import update

        from formwork import db

        doc = dict(app.doc, option_lists=lists)
        validation.validate("app", doc)
        self.svc.conn.execute(update(db.apps).where(db.apps.c.id == app.id).values(doc=doc))
        self.svc._bump("option_list", app.id, action, before, after)

    @staticmethod
    def _clean(doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        return {k: v for k, v in doc.items() if k not in ("id", "used_by", "confirm_data_loss", "dry_run")}

    def _validate(self, doc: dict[str, Any]) -> None:
        validation.validate("app", {"key": "x", "label": "x", "option_lists": [doc]})
        details: dict[str, list[str]] = {}
        seen: set[str] = set()
        for i, c in enumerate(doc["choices"]):
            if c["value"] in seen:
                details[f"/choices/{i}/value"] = [f"the value '{c['value']}' is used twice"]
            seen.add(c["value"])
        if details:
            raise ValidationFailed.from_details(details)

    def create(self, app_key: str, doc: Any) -> dict[str, Any]:
        self.svc.actor.require(BUILD)
        app = self._app(app_key)
        doc = self._clean(doc)
        lists = app_lists(app)
        taken = {ol["key"] for ol in lists}
        if not doc.get("key") and doc.get("label"):
            doc["key"] = derive_key(doc["label"], taken, "list")
        doc.setdefault("choices", [])
        self._validate(doc)
        if doc["key"] in taken:
            raise Conflict(f"an option list '{doc['key']}' already exists")
        self._save(app, [*lists, doc], "create", None, doc)
        return self.get(app_key, doc["key"])

    def update(self, app_key: str, key: str, patch: Any, confirm: bool = False,
               dry_run: bool = False) -> dict[str, Any]:
        """Change a list and every field using it. ``dry_run`` only reports, per field, how many values
        removing options would empty; without ``confirm`` such a change is refused (409) with that report."""
        self.svc.actor.require(BUILD)
        app = self._app(app_key)
        current = find_list(app, key)
        if current is None:
            raise NotFound(f"no option list '{key[:63]}' in app '{app_key}'")
        patch = self._clean(patch)
        doc = {**copy.deepcopy(current), **{k: v for k, v in patch.items() if v is not None}}
        doc["key"] = key  # the key names the list in field options: it never changes
        self._validate(doc)
        report = self._impact(app, current, doc)
        if dry_run:
            return {"list": self.json(app, doc), "impact": report}
        if report["emptied"] and not confirm:
            raise Conflict(f"{report['emptied']} values in records use the options you removed; "
                           "send confirm_data_loss: true to empty them", report)
        lists = [doc if ol["key"] == key else ol for ol in app_lists(app)]
        self._save(app, lists, "update", current, doc)
        for f in fields_using(self._app(app_key), key):
            t = self.svc.catalog.table_by_id(f.table_id)
            self.svc.update_field(app_key, t.key, f.key, {"options": self._field_options(f),
                                                          "confirm_data_loss": True})
        return {"list": self.get(app_key, key), "impact": report}

    @staticmethod
    def _field_options(f: FieldDef) -> dict[str, Any]:
        opts = {k: v for k, v in f.options.items() if k != "choices"}
        return opts

    def _impact(self, app: AppDef, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        removed = {c["value"] for c in old["choices"]} - {c["value"] for c in new["choices"]}
        out: dict[str, Any] = {"removed": sorted(removed), "emptied": 0, "fields": []}
        if not removed:
            return out
        for f in fields_using(app, old["key"]):
            t = self.svc.catalog.table_by_id(f.table_id)
            n = count_values(self.svc, t, f, removed)
            out["fields"].append({"table": t.key, "field": f.key, "records": n})
            out["emptied"] += n
        return out

    def delete(self, app_key: str, key: str) -> None:
        """Delete a list; fields using it keep their current choices as their own."""
        self.svc.actor.require(BUILD)
        app = self._app(app_key)
        current = find_list(app, key)
        if current is None:
            raise NotFound(f"no option list '{key[:63]}' in app '{app_key}'")
        for f in fields_using(app, key):
            t = self.svc.catalog.table_by_id(f.table_id)
            opts = {k: v for k, v in f.options.items() if k != "list"}
            self.svc.update_field(app_key, t.key, f.key, {"options": opts})
        app = self._app(app_key)
        self._save(app, [ol for ol in app_lists(app) if ol["key"] != key], "delete", current, None)


def count_values(svc: MetadataService, t: Any, f: FieldDef, values: set[str]) -> int:
    """How many live records of ``t`` hold one of ``values`` in select field ``f`` (all records: a
    builder decides for everyone)."""
    from sqlalchemy import func, select

    sa = t.sa
    col = sa.c[f.column_name]
    if f.type == "multi_select":
        n = 0
        for (v,) in svc.conn.execute(select(col).where(sa.c.deleted_at.is_(None), col.is_not(None))):
            if isinstance(v, list) and values.intersection(v):
                n += 1
        return n
    return int(svc.conn.execute(select(func.count()).select_from(sa).where(
        sa.c.deleted_at.is_(None), col.in_(sorted(values)))).scalar() or 0)
