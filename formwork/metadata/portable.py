"""App definitions as one portable JSON document: export, import and bundled templates.

The document uses keys only (no ids), so it imports into any database. Import replays the definition
through the MetadataService in dependency order: plain fields, then links, then computed fields.
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import BadRequest, NotFound, ValidationFailed
from formwork.metadata.catalog import AppDef, Catalog
from formwork.metadata.service import Actor, MetadataService, public_doc

FORMAT = "formwork.app"
FORMAT_VERSION = 1
TEMPLATES_PACKAGE = "formwork_templates"  # beside formwork in the wheel: one folder per template
COMPUTED = ("lookup", "rollup", "formula")
# table settings that name fields created after the table (links, computed fields): set once all exist
LATE_TABLE_KEYS = ("display_field", "owner_field", "validations", "scope_parent", "flows",
                   "display_parent", "buttons",
                   "timeline", "duplicate_rules")


def exported_documents(doc: dict[str, Any]) -> list[str]:
    """Each document of an app export as its kind exports it (in place: secrets such as webhook signing
    keys left out); returns what was left out, for the export's notes."""
    from formwork.metadata.documents import document_kinds

    left_out: list[str] = []
    for dk in document_kinds.all():
        plural = dk.kind + "s"
        holders: list[dict[str, Any]] = doc.get("tables") or [] if dk.parent == "table" else [doc]
        for holder in holders:
            docs: list[dict[str, Any]] = holder.get(plural) or []
            for i, d in enumerate(docs):
                docs[i], gone = dk.exported(d)
                left_out += [f"{dk.kind} '{d.get('key')}' {p}" for p in gone]
    return left_out


def export_app(conn: Connection, catalog: Catalog, app_key: str) -> dict[str, Any]:
    app = catalog.app(app_key)
    svc = MetadataService(conn, Actor.system(), catalog)  # reads only: the caller checked who may export
    tables = []
    for t in app.tables:
        fields = []
        for f in t.fields:
            fj = svc.field_json(f)
            fj.pop("id")
            fj.pop("read_only")
            if f.ftype.lists_related(f):  # a reverse side is made by its pair: export where it comes from
                fj = {"key": fj["key"], "label": fj["label"], "type": f.type, "reverse_of":
                      f"{catalog.table_by_id(f.options['target']).key}.{catalog.field_by_id(f.options['pair']).key}",
                      **({"description": fj["description"]} if fj.get("description") else {})}
            fields.append(fj)
        tdoc = {k: v for k, v in public_doc(t.doc).items() if k not in ("fields", "views")}
        tables.append({**tdoc, "fields": fields,
                       "views": [{k: v for k, v in view.items() if k != "id"} for view in t.views]})
    # roles are shared across apps (an installed template's role gains the new app's tables): export
    # every role that grants something in this app, with just this app's permissions
    roles = [r.doc for r in conn.execute(select(db.roles).order_by(db.roles.c.id))
             if any(k.split(".", 1)[0] == app.key for k in (r.doc.get("permissions") or {}))]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "app": public_doc(app.doc),
        "tables": tables,
        "automations": [{k: v for k, v in a.items() if k != "id"} for a in app.automations],
        "dashboards": [{k: v for k, v in d.items() if k != "id"} for d in app.dashboards],
        "roles": [_strip_app(r, app.key) for r in roles],
    }


def _strip_app(role: dict[str, Any], app_key: str) -> dict[str, Any]:
    """Role permissions in a portable document name tables without the app key."""
    out = copy.deepcopy(role)
    perms = out.get("permissions", {})
    out["permissions"] = {k.split(".", 1)[1]: v for k, v in perms.items() if k.split(".", 1)[0] == app_key}
    return out


def import_app(svc: MetadataService, doc: Any, key: str | None = None,
               after_tables: Any = None) -> AppDef:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadRequest(f"not a Formwork app document (expected \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise BadRequest(f"unsupported format_version {doc.get('format_version')!r}")
    app_doc = dict(doc.get("app") or {})
    if key:
        app_doc["key"] = key
    tables_in = doc.get("tables") or []
    if not isinstance(tables_in, list):
        raise ValidationFailed.from_details({"/tables": ["must be a list"]})
    app = svc.create_app(app_doc)
    app_key = app.key
    pending: list[tuple[str, str, dict[str, Any]]] = []
    reverse_docs: dict[str, dict[str, Any]] = {}
    for ti, t in enumerate(tables_in):
        if not isinstance(t, dict):
            raise ValidationFailed.from_details({f"/tables/{ti}": ["must be an object"]})
        for f in t.get("fields", []):
            if isinstance(f, dict) and f.get("reverse_of"):
                reverse_docs[f"{t.get('key')}.{f['key']}"] = f
    for ti, t in enumerate(tables_in):
        tdoc = {k: v for k, v in t.items() if k not in ("fields", "views", *LATE_TABLE_KEYS)}
        plain = [f for f in t.get("fields", []) if isinstance(f, dict) and not f.get("reverse_of")
                 and f.get("type") not in ("link", *COMPUTED)]
        tdoc["fields"] = plain
        try:
            svc.create_table(app_key, tdoc)
        except ValidationFailed as e:
            raise ValidationFailed(e.message, {f"/tables/{ti}{k}": v for k, v in (e.details or {}).items()}) from None
        for fi, f in enumerate(t.get("fields", [])):
            if isinstance(f, dict) and not f.get("reverse_of") and f.get("type") in ("link", *COMPUTED):
                pending.append((f"/tables/{ti}/fields/{fi}", t["key"], f))
    for pointer, tkey, f in [p for p in pending if p[2].get("type") == "link"]:
        fdoc = copy.deepcopy(f)
        opts = fdoc.setdefault("options", {})
        rkey = opts.get("reverse_key") if isinstance(opts, dict) else None
        rev = reverse_docs.get(f"{opts.get('table')}.{rkey}") if rkey else None
        if rev is not None:
            opts["reverse_label"] = rev.get("label", rkey)
        _create_field(svc, app_key, tkey, fdoc, pointer)
    computed = [p for p in pending if p[2].get("type") != "link"]
    while computed:  # computed fields may depend on each other across tables: retry until stable
        failed = []
        for item in computed:
            try:
                with svc.conn.begin_nested():  # a failed attempt leaves no half-created field behind
                    svc.create_field(app_key, item[1], item[2])
            except ValidationFailed:
                svc.catalog = Catalog.load(svc.conn)
                failed.append(item)
        if len(failed) == len(computed):
            pointer, tkey, f = failed[0]
            _create_field(svc, app_key, tkey, f, pointer)  # raises the real error
        computed = failed
    _apply_order(svc, app_key, tables_in, reverse_docs)
    for t in tables_in:
        extra = {k: t[k] for k in LATE_TABLE_KEYS if k in t}
        if extra:
            svc.update_table(app_key, t["key"], extra)
        for v in t.get("views", []):
            svc.create_doc("view", app_key, v, table_key=t["key"])
    if after_tables is not None:
        after_tables(svc, app_key)
    for a in doc.get("automations") or []:
        svc.create_doc("automation", app_key, a)
    for d in doc.get("dashboards") or []:
        svc.create_doc("dashboard", app_key, d)
    for r in doc.get("roles") or []:
        install_role(svc.conn, svc.catalog.app(app_key), r)
    if doc.get("roles"):
        svc._bump("app", svc.catalog.app(app_key).id, "roles", None, None)
    return svc.catalog.app(app_key)


def _create_field(svc: MetadataService, app_key: str, table_key: str, doc: Any, pointer: str) -> None:
    """Create one field of the document; errors point into the document (``/tables/2/fields/5/...``)."""
    try:
        svc.create_field(app_key, table_key, doc)
    except ValidationFailed as e:
        raise ValidationFailed(e.message, {pointer + k: v for k, v in (e.details or {}).items()}) from None


def _apply_order(svc: MetadataService, app_key: str, tables_in: list[dict[str, Any]],
                 reverse_docs: dict[str, dict[str, Any]]) -> None:
    """Field positions (and reverse links' descriptions) as in the document."""
    app = svc.catalog.app(app_key)
    for t in tables_in:
        table = app.tables_by_key.get(t["key"])
        if table is None:
            continue
        for pos, f in enumerate(t.get("fields", [])):
            fd = table.fields_by_key.get(f.get("key", ""))
            if fd is None:
                continue
            values: dict[str, Any] = {"position": pos}
            if f.get("reverse_of") and f.get("description"):
                values["doc"] = dict(fd.doc, description=f["description"])
            svc.conn.execute(update(db.fields).where(db.fields.c.id == fd.id).values(**values))
    svc._bump("app", app.id, "reorder", None, None)


def install_role(conn: Connection, app: AppDef, role: dict[str, Any]) -> None:
    """Install a template/app role; an existing role of the same key gains this app's permissions."""
    from formwork.metadata import validation

    doc = copy.deepcopy(role)
    doc["permissions"] = {f"{app.key}.{k}": v for k, v in (role.get("permissions") or {}).items()}
    validation.validate("role", doc)
    row = conn.execute(select(db.roles).where(db.roles.c.key == doc["key"])).first()
    if row is None:
        conn.execute(insert(db.roles).values(app_id=app.id, key=doc["key"], doc=doc))
        return
    merged = copy.deepcopy(row.doc)
    merged.setdefault("permissions", {}).update(doc["permissions"])
    conn.execute(update(db.roles).where(db.roles.c.id == row.id).values(doc=merged))


def templates_dir() -> Path:
    """The bundled templates' folder: the ``formwork_templates`` package, so it ships in the wheel.

    Each template is a folder holding ``app.json`` (the portable app document) and optionally
    ``demo.py`` (its demo data, found by ``formwork.runtime.demo``)."""
    return Path(str(importlib.import_module(TEMPLATES_PACKAGE).__file__)).parent


def template_dir(name: str) -> Path:
    """A bundled template's folder by name; 404 for an unknown name (or one that is not a plain name)."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise NotFound(f"no template '{name[:40]}'")
    d = templates_dir() / name
    if not (d / "app.json").is_file():
        raise NotFound(f"no template '{name}'")
    return d


def list_templates() -> list[dict[str, Any]]:
    out = []
    root = templates_dir()
    if root.is_dir():
        for d in sorted(root.iterdir()):
            f = d / "app.json"
            if f.is_file():
                doc = json.loads(f.read_text("utf-8"))
                out.append({"name": d.name, "label": doc["app"].get("label"),
                            "description": doc["app"].get("description"),
                            "tables": [t["key"] for t in doc.get("tables", [])]})
    return out


def register_template_hooks() -> None:
    """Let each bundled template plug its own code in: ``formwork_templates/<name>/hooks.py`` with a
    ``register()`` (called at start-up by web and worker processes alike, like the action registry), so
    vertical behaviour (the CRM's stock control) lives beside its template, not in the platform."""
    root = templates_dir()
    if not root.is_dir():
        return
    for d in sorted(root.iterdir()):
        if (d / "app.json").is_file() and (d / "hooks.py").is_file():
            module = importlib.import_module(f"{TEMPLATES_PACKAGE}.{d.name}.hooks")
            module.register()


def load_template(name: str) -> dict[str, Any]:
    return dict(json.loads((template_dir(name) / "app.json").read_text("utf-8")))


def install_template(svc: MetadataService, name: str, key: str | None = None) -> AppDef:
    """Install a bundled template's definition (demo data is the runtime's: ``runtime.demo.install_template``)."""
    doc = load_template(name)
    app = import_app(svc, doc, key or doc["app"]["key"])
    return svc.catalog.app(app.key)
