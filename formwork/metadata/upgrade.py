"""Upgrading an installed app to a newer version of the bundled template it came from.

The template's version is ``app.settings.template_version`` (an app without it is version 1). The upgrade
is additive and keeps what people changed:

- tables, fields, views, automations, dashboards (and their widgets) and record buttons the installed app
  lacks are created; select fields gain the template's new choices; form views gain new fields;
  table settings the installed table lacks (flows, scope through a parent, validations…) are set;
- shared option lists (数据字典) the app lacks are created from the template's choices plus every choice the
  installed fields that will use them have of their own (with the installed labels), and those fields
  then take their choices from the list; an existing list only gains the template's new choices;
- duplicate rules the installed table lacks are added next to its own (a rule of the same key that differs
  is kept and listed);
- a field the template now computes (a typed number that became a rollup) is kept as ``<key>_v1`` and the
  computed field takes its key; the template's hook moves the data over (``upgrade(svc, app, report)`` in
  ``formwork_templates/<name>/hooks.py``), e.g. the CRM turns typed stock into opening stock movements;
- roles gain the permissions of new tables; existing grants stay;
- what exists but differs from the template (an automation someone edited) is kept and listed under
  ``kept`` in the report, for a person to review.

Everything happens in the caller's transaction: any failure leaves the app as it was.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from sqlalchemy import select, update

from formwork import db
from formwork.errors import BadRequest, ValidationFailed
from formwork.metadata.catalog import AppDef, Catalog
from formwork.metadata.portable import COMPUTED, LATE_TABLE_KEYS, TEMPLATES_PACKAGE, load_template, template_dir
from formwork.metadata.service import MetadataService

SETTINGS_KEYS = ("display_field", "owner_field", "validations", "scope_parent", "flows", "display_parent",
                 "timeline", "description", "pool", "duplicate_rules")


def template_version(app: AppDef) -> int:
    v = (app.doc.get("settings") or {}).get("template_version")
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else 1


def upgrade_app(svc: MetadataService, app_key: str, name: str) -> dict[str, Any]:
    """Bring app ``app_key`` up to bundled template ``name``; a report of what was done and kept."""
    doc = load_template(name)
    app = svc.catalog.app(app_key)
    have, want = template_version(app), int((doc["app"].get("settings") or {}).get("template_version") or 1)
    report: dict[str, Any] = {"app": app_key, "template": name, "from_version": have, "to_version": want,
                              "created": [], "updated": [], "converted": [], "kept": []}
    if have >= want:
        report["up_to_date"] = True
        return report
    _option_lists(svc, app_key, doc, report)
    _tables(svc, app_key, doc, report)
    _fields(svc, app_key, doc, report)
    _table_settings(svc, app_key, doc, report)
    _views(svc, app_key, doc, report)
    _docs(svc, app_key, "automation", doc.get("automations") or [], report)
    _dashboards(svc, app_key, doc.get("dashboards") or [], report)
    _roles(svc, app_key, doc.get("roles") or [], report)
    app = svc.catalog.app(app_key)
    settings = {**(app.doc.get("settings") or {}), **(doc["app"].get("settings") or {})}
    patch: dict[str, Any] = {"settings": settings}
    if isinstance(app.doc.get("description"), str) and isinstance(doc["app"].get("description"), dict):
        patch["description"] = doc["app"]["description"]
    svc.update_app(app_key, patch)
    hooks = _hooks(name)
    if hooks is not None and hasattr(hooks, "upgrade"):
        hooks.upgrade(svc, svc.catalog.app(app_key), report)
    return report


def _hooks(name: str) -> Any:
    if not (template_dir(name) / "hooks.py").is_file():
        return None
    return importlib.import_module(f"{TEMPLATES_PACKAGE}.{name}.hooks")


def _option_lists(svc: MetadataService, app_key: str, doc: dict[str, Any], report: dict[str, Any]) -> None:
    from formwork.metadata.option_lists import OptionLists, find_list

    lists = OptionLists(svc)
    for ol in doc["app"].get("option_lists") or []:
        app = svc.catalog.app(app_key)
        users = []  # the installed select fields the template now gives this list, still with choices of their own
        for t in doc.get("tables") or []:
            table = app.tables_by_key.get(t["key"])
            for f in t.get("fields", []):
                have = table.fields_by_key.get(f["key"]) if table is not None else None
                if (f.get("options") or {}).get("list") == ol["key"] and have is not None \
                        and have.type == f["type"] and not (have.options or {}).get("list"):
                    users.append((t["key"], have))
        mine = find_list(app, ol["key"])
        if mine is None:
            installed: dict[str, dict[str, Any]] = {}
            for _tkey, f in users:
                for c in (f.options or {}).get("choices") or []:
                    installed.setdefault(c.get("value"), c)
            choices = [copy.deepcopy(installed.get(c["value"], c)) for c in ol.get("choices") or []]
            known = {c["value"] for c in choices}
            choices += [copy.deepcopy(c) for v, c in installed.items() if v not in known]
            lists.create(app_key, {**copy.deepcopy(ol), "choices": choices})
            report["created"].append(f"option_list {ol['key']}")
        else:
            values = {c.get("value") for c in mine.get("choices") or []}
            new = [c for c in ol.get("choices") or [] if c.get("value") not in values]
            if new:
                lists.update(app_key, ol["key"], {"choices": list(mine.get("choices") or []) + copy.deepcopy(new)})
                report["updated"].append(f"option_list {ol['key']}: " + ", ".join(str(c["value"]) for c in new))
        listed = {c.get("value") for c in (find_list(svc.catalog.app(app_key), ol["key"]) or {}).get("choices") or []}
        for tkey, f in users:
            if {c.get("value") for c in (f.options or {}).get("choices") or []} <= listed:
                opts = {k: v for k, v in (f.options or {}).items() if k != "choices"}
                svc.update_field(app_key, tkey, f.key, {"options": {**opts, "list": ol["key"]}})
                report["updated"].append(f"field {tkey}.{f.key}: option list {ol['key']}")


def _tables(svc: MetadataService, app_key: str, doc: dict[str, Any], report: dict[str, Any]) -> None:
    app = svc.catalog.app(app_key)
    for pos, t in enumerate(doc.get("tables") or []):
        if t["key"] in app.tables_by_key:
            continue
        tdoc = {k: v for k, v in t.items() if k not in ("fields", "views", *LATE_TABLE_KEYS)}
        tdoc["fields"] = [f for f in t.get("fields", []) if not f.get("reverse_of")
                          and f.get("type") not in ("link", *COMPUTED)]
        svc.create_table(app_key, tdoc)
        svc.update_table(app_key, t["key"], {"position": pos})
        report["created"].append(f"table {t['key']}")


def _fields(svc: MetadataService, app_key: str, doc: dict[str, Any], report: dict[str, Any]) -> None:
    links, computed = [], []
    for t in doc.get("tables") or []:
        table = svc.catalog.app(app_key).table(t["key"])
        for f in t.get("fields", []):
            if f.get("reverse_of"):
                continue
            have = table.fields_by_key.get(f["key"])
            if have is not None and have.type != f["type"]:
                legacy = _free_key(table.fields_by_key, f"{f['key']}_v1")
                label = have.doc.get("label") or f["key"]
                label = {k: f"{v} (v1)" for k, v in label.items()} if isinstance(label, dict) else f"{label} (v1)"
                svc.update_field(app_key, t["key"], f["key"], {"key": legacy, "label": label})
                report["converted"].append({"table": t["key"], "field": f["key"], "kept_as": legacy,
                                            "from": have.type, "to": f["type"]})
                have = None
            if have is None:
                if f["type"] == "link":
                    links.append((t["key"], f))
                elif f["type"] in COMPUTED:
                    computed.append((t["key"], f))
                else:
                    svc.create_field(app_key, t["key"], copy.deepcopy(f))
                    report["created"].append(f"field {t['key']}.{f['key']}")
            else:
                if f["type"] in ("single_select", "multi_select"):
                    _choices(svc, app_key, t["key"], f, report)
                extra = {k: f[k] for k in ("default", "description") if k in f and k not in have.doc}
                if extra:
                    svc.update_field(app_key, t["key"], f["key"], extra)
                    report["updated"].append(f"field {t['key']}.{f['key']}: " + ", ".join(sorted(extra)))
    for tkey, f in links:
        svc.create_field(app_key, tkey, copy.deepcopy(f))
        report["created"].append(f"field {tkey}.{f['key']}")
    while computed:  # computed fields may depend on each other: retry until stable
        failed = []
        for tkey, f in computed:
            try:
                with svc.conn.begin_nested():
                    svc.create_field(app_key, tkey, copy.deepcopy(f))
                report["created"].append(f"field {tkey}.{f['key']}")
            except ValidationFailed:
                svc.catalog = Catalog.load(svc.conn)
                failed.append((tkey, f))
        if len(failed) == len(computed):
            svc.create_field(app_key, failed[0][0], copy.deepcopy(failed[0][1]))  # raises the real error
        computed = failed
    for c in report["converted"]:  # what followed the rename to the legacy key (formulas, views) comes back
        t = svc.catalog.app(app_key).table(c["table"])
        svc._rekey(t, c["kept_as"], c["field"])
        svc._bump("table", t.id, "update", None, None)


def _free_key(taken: dict[str, Any], key: str) -> str:
    n, out = 2, key
    while out in taken:
        out, n = f"{key}{n}", n + 1
    return out


def _choices(svc: MetadataService, app_key: str, tkey: str, f: dict[str, Any], report: dict[str, Any]) -> None:
    have = svc.catalog.app(app_key).table(tkey).field(f["key"])
    if (have.options or {}).get("list"):
        return  # a shared option list: its own document
    mine = list((have.options or {}).get("choices") or [])
    values = {c.get("value") for c in mine}
    new = [c for c in (f.get("options") or {}).get("choices") or [] if c.get("value") not in values]
    if new:
        svc.update_field(app_key, tkey, f["key"], {"options": {**(have.options or {}), "choices": mine + new}})
        report["updated"].append(f"choices {tkey}.{f['key']}: " + ", ".join(str(c["value"]) for c in new))


def _table_settings(svc: MetadataService, app_key: str, doc: dict[str, Any], report: dict[str, Any]) -> None:
    for t in doc.get("tables") or []:
        table = svc.catalog.app(app_key).table(t["key"])
        patch = {k: t[k] for k in SETTINGS_KEYS if k in t and k not in table.doc}
        if isinstance(table.doc.get("description"), str) and isinstance(t.get("description"), dict):
            patch["description"] = t["description"]
        if t.get("buttons"):
            mine = list(table.doc.get("buttons") or [])
            keys = {b.get("key") for b in mine}
            extra = [b for b in t["buttons"] if b.get("key") not in keys]
            if extra:
                patch["buttons"] = mine + extra
        if t.get("duplicate_rules") and "duplicate_rules" in table.doc:
            mine_rules = list(table.doc.get("duplicate_rules") or [])
            by_key = {r.get("key"): r for r in mine_rules}
            extra_rules = [r for r in t["duplicate_rules"] if r.get("key") not in by_key
                           and all(p.get("field") in table.fields_by_key for p in r.get("fields") or [])]
            report["kept"] += [f"duplicate rule {t['key']}.{r['key']}" for r in t["duplicate_rules"]
                               if r.get("key") in by_key and by_key[r["key"]] != r]
            if extra_rules:
                patch["duplicate_rules"] = mine_rules + copy.deepcopy(extra_rules)
        if t.get("flows") and "flows" in table.doc:
            flows = dict(table.doc["flows"])
            extra_flows = {k: v for k, v in t["flows"].items() if k not in flows}
            if extra_flows:
                patch["flows"] = {**flows, **extra_flows}
        if patch:
            svc.update_table(app_key, t["key"], patch)
            report["updated"].append(f"table {t['key']}: " + ", ".join(sorted(patch)))


def _views(svc: MetadataService, app_key: str, doc: dict[str, Any], report: dict[str, Any]) -> None:
    for t in doc.get("tables") or []:
        table = svc.catalog.app(app_key).table(t["key"])
        have = {v.get("key"): v for v in table.views}
        for v in t.get("views") or []:
            mine = have.get(v["key"])
            if mine is None:
                svc.create_doc("view", app_key, copy.deepcopy(v), table_key=t["key"])
                report["created"].append(f"view {t['key']}.{v['key']}")
            elif v.get("type") == "form" and mine.get("fields"):
                missing = [k for k in v.get("fields") or [] if k not in mine["fields"]]
                if missing:
                    order = [k for k in v["fields"] if k in missing or k in mine["fields"]]
                    order += [k for k in mine["fields"] if k not in order]
                    svc.update_doc("view", app_key, v["key"], {"fields": order}, table_key=t["key"])
                    report["updated"].append(f"view {t['key']}.{v['key']}: " + ", ".join(missing))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("id", "version", "created_at", "updated_at")}
    return clean(a) == clean(b)


def _docs(svc: MetadataService, app_key: str, kind: str, docs: list[dict[str, Any]], report: dict[str, Any]) -> None:
    app = svc.catalog.app(app_key)
    have = {d.get("key"): d for d in (app.automations if kind == "automation" else app.dashboards)}
    for d in docs:
        mine = have.get(d["key"])
        if mine is None:
            svc.create_doc(kind, app_key, copy.deepcopy(d))
            report["created"].append(f"{kind} {d['key']}")
        elif not _same(mine, d):
            report["kept"].append(f"{kind} {d['key']}")


def _dashboards(svc: MetadataService, app_key: str, docs: list[dict[str, Any]], report: dict[str, Any]) -> None:
    app = svc.catalog.app(app_key)
    have = {d.get("key"): d for d in app.dashboards}
    for d in docs:
        mine = have.get(d["key"])
        if mine is None:
            svc.create_doc("dashboard", app_key, copy.deepcopy(d))
            report["created"].append(f"dashboard {d['key']}")
            continue
        keys = {w.get("key") for w in mine.get("widgets") or []}
        extra = [w for w in d.get("widgets") or [] if w.get("key") not in keys]
        if extra:
            svc.update_doc("dashboard", app_key, d["key"], {"widgets": list(mine.get("widgets") or []) + extra})
            report["updated"].append(f"dashboard {d['key']}: " + ", ".join(str(w.get("key")) for w in extra))


def _roles(svc: MetadataService, app_key: str, roles: list[dict[str, Any]], report: dict[str, Any]) -> None:
    for role in roles:
        row = svc.conn.execute(select(db.roles).where(db.roles.c.key == role["key"])).first()
        wanted = {f"{app_key}.{k}": v for k, v in (role.get("permissions") or {}).items()}
        if row is None:
            from formwork.metadata.portable import install_role

            install_role(svc.conn, svc.catalog.app(app_key), role)
            report["created"].append(f"role {role['key']}")
            continue
        merged = copy.deepcopy(row.doc)
        perms = merged.setdefault("permissions", {})
        extra = {k: v for k, v in wanted.items() if k not in perms}
        if extra:
            perms.update(extra)
            svc.conn.execute(update(db.roles).where(db.roles.c.id == row.id).values(doc=merged))
            report["updated"].append(f"role {role['key']}: " + ", ".join(k.partition(".")[2] for k in sorted(extra)))
    svc._bump("app", svc.catalog.app(app_key).id, "roles", None, None)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise BadRequest("name the template to upgrade from ('template')")
    return name
