"""MetadataService: create, change, trash and restore apps, tables, fields, views, automations and
dashboards. It checks the caller's rights itself (an ``Actor``); every change is validated, recorded
(who, when, before, after), bumps the schema version and runs its DDL through the SchemaEditor, all in
the caller's transaction. Type conversion of a field's values lives in ``formwork.metadata.conversion``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Index, Table, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from formwork import db
from formwork.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from formwork.metadata import defaults, flows, validation
from formwork.metadata.catalog import AppDef, Catalog, FieldDef, TableDef, build_user_table, label_text
from formwork.metadata.conversion import (
    PreviewScope,
    ReadValues,
    TypeConversion,
    needs_conversion,
    type_changed,
)
from formwork.metadata.documents import (
    BUILD,
    FORBIDDEN,
    MANAGE_AUTOMATIONS,
    VIEW_DASHBOARDS,
    DocumentContext,
    DocumentKind,
    document_kinds,
)
from formwork.metadata.fieldtypes import field_types
from formwork.metadata.fieldtypes.base import FieldValueError, OptionsError, QueryContext, WriteContext
from formwork.metadata.keys import derive_key
from formwork.metadata.schema_editor import SchemaEditor


@dataclass(frozen=True)
class Actor:
    """Who is acting and what they may do: a user id (None for the system), their rights, and how a
    type-change preview reads the values they may see (``read_values``; see metadata.conversion).

    An administrator holds every right. The runtime builds one from a user's access (``Access.actor``).
    """

    user_id: int | None
    is_admin: bool = False
    ip: str | None = None
    can_build: bool = False
    can_manage_automations: bool = False
    can_view_dashboards: bool = False
    read_values: ReadValues | None = field(default=None, compare=False, repr=False)
    preview_scope: PreviewScope | None = field(default=None, compare=False, repr=False)

    @classmethod
    def system(cls) -> Actor:
        """The platform itself (CLI, templates): every right, no user."""
        return cls(None, is_admin=True)

    def has(self, right: str) -> bool:
        if self.is_admin:
            return True
        if right == BUILD:
            return self.can_build
        if right == MANAGE_AUTOMATIONS:
            return self.can_manage_automations
        if right == VIEW_DASHBOARDS:
            return self.can_view_dashboards
        return False

    def require(self, right: str) -> None:
        if not self.has(right):
            raise Forbidden(FORBIDDEN[right])


def public_doc(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def rename_in_filter(tree: Any, old: str, new: str) -> Any:
    if isinstance(tree, dict):
        out = {k: rename_in_filter(v, old, new) for k, v in tree.items()}
        if isinstance(tree.get("field"), str):
            parts = tree["field"].split(".")
            if parts[0] == old:
                parts[0] = new
                out["field"] = ".".join(parts)
        return out
    if isinstance(tree, list):
        return [rename_in_filter(x, old, new) for x in tree]
    return tree


def rename_through_links(tree: Any, links: set[str], old: str, new: str) -> Any:
    """``link.old`` → ``link.new`` for the given link fields (a field renamed on the link's target)."""
    if isinstance(tree, dict):
        out = {k: rename_through_links(v, links, old, new) for k, v in tree.items()}
        if isinstance(tree.get("field"), str):
            parts = tree["field"].split(".")
            if len(parts) == 2 and parts[0] in links and parts[1] == old:
                out["field"] = f"{parts[0]}.{new}"
        return out
    if isinstance(tree, list):
        return [rename_through_links(x, links, old, new) for x in tree]
    return tree


def drop_from_filter(tree: Any, gone: Callable[[str], bool]) -> Any:
    """The filter tree without the conditions whose field path ``gone`` names (a deleted field); groups
    left empty go too, and so does a ``not`` whose inside went. None when nothing is left."""
    if isinstance(tree, list):
        kept = [x for x in (drop_from_filter(x, gone) for x in tree) if x is not None]
        return kept or None
    if not isinstance(tree, dict):
        return tree
    if isinstance(tree.get("field"), str):
        return None if gone(tree["field"]) else tree
    for group in ("and", "or"):
        if isinstance(tree.get(group), list):
            kept = drop_from_filter(tree[group], gone)
            return {group: kept} if kept else None
    if "not" in tree:
        inner = drop_from_filter(tree["not"], gone)
        return {"not": inner} if inner is not None else None
    return tree


def names_field(key: str, links: set[str] | None = None) -> Callable[[str], bool]:
    """Whether a filter path names field ``key``: on its own table (``key``, ``key.sub``), or with
    ``links``, through one of those links from another table (``link.key``)."""
    if links is None:
        return lambda path: path.split(".")[0] == key
    return lambda path: "." in path and path.split(".")[0] in links and path.split(".")[1] == key


# view options naming one field: those a view cannot work without, and those it can simply forget
VIEW_NEEDS = {"kanban": ("group_field",), "calendar": ("date_field",)}
VIEW_FIELD_OPTIONS = ("group_field", "date_field", "end_field", "title_field", "cover_field", "sum_field",
                      "color_field")


class MetadataService:
    def __init__(self, conn: Connection, actor: Actor, catalog: Catalog | None = None) -> None:
        self.conn = conn
        self.actor = actor
        self.catalog = catalog if catalog is not None else Catalog.load(conn)
        self.editor = SchemaEditor(conn)

    # --- bookkeeping ----------------------------------------------------------------------------
    def _bump(self, kind: str, object_id: int | None, action: str, before: Any, after: Any) -> None:
        res = self.conn.execute(update(db.state).where(db.state.c.name == db.SCHEMA_VERSION)
                                .values(value=db.state.c.value + 1).returning(db.state.c.value))
        version = res.scalar()
        if version is None:
            version = 1
            self.conn.execute(insert(db.state).values(name=db.SCHEMA_VERSION, value=1))
        if kind in document_kinds:  # as readers see it: webhook secrets never reach the change log
            dk = document_kinds.get(kind)
            before, after = dk.public(before), dk.public(after)
        self.conn.execute(insert(db.meta_changes).values(
            user_id=self.actor.user_id, kind=kind, object_id=object_id, action=action, before=before,
            after=after, schema_version=version))
        self.catalog = Catalog.load(self.conn)

    def _log_change(self, kind: str, object_id: int, action: str, before: Any, after: Any) -> None:
        """A change recorded without its own version bump: it lands with the next ``_bump``."""
        version = self.conn.execute(select(db.state.c.value).where(db.state.c.name == db.SCHEMA_VERSION)).scalar()
        self.conn.execute(insert(db.meta_changes).values(
            user_id=self.actor.user_id, kind=kind, object_id=object_id, action=action, before=before,
            after=after, schema_version=int(version or 0) + 1))

    def _insert_plain_fields(self, t: TableDef, items: list[tuple[int, dict[str, Any]]]) -> list[FieldDef]:
        """Validate and store the rows of fields that need nothing but a column (no links or formulas)."""
        out: list[FieldDef] = []
        for i, fd in items:
            doc = {k: v for k, v in fd.items() if k not in ("id", "read_only")}
            try:
                stored = self._field_doc(t, doc, None)
            except ValidationFailed as e:
                raise ValidationFailed(e.message, {f"/fields/{i}{k}": v for k, v in (e.details or {}).items()}) \
                    from None
            stored.pop("position", None)
            fid = self.conn.execute(insert(db.fields).values(
                table_id=t.id, key=doc["key"], type=doc["type"], doc=stored, position=i)
                .returning(db.fields.c.id)).scalar_one()
            out.append(FieldDef(fid, t.id, doc["key"], doc["type"], stored, i))
        return out

    def _check_key_free(self, tbl: Table, parent_col: Any, parent_id: int | None, key: str, what: str,
                        exclude_id: int | None = None) -> None:
        q = select(tbl.c.id).where(tbl.c.key == key, tbl.c.deleted_at.is_(None))
        if parent_col is not None:
            q = q.where(parent_col == parent_id)
        if exclude_id is not None:
            q = q.where(tbl.c.id != exclude_id)
        if self.conn.execute(q).first() is not None:
            raise Conflict(f"{what} key '{key}' is already used", {"/key": [f"'{key}' is already used"]})

    def _live_keys(self, tbl: Table, parent_col: Any, parent_id: int | None) -> set[str]:
        q = select(tbl.c.key).where(tbl.c.deleted_at.is_(None))
        if parent_col is not None:
            q = q.where(parent_col == parent_id)
        return {r[0] for r in self.conn.execute(q)}

    @staticmethod
    def _with_key(doc: Any, kind: str, taken: set[str]) -> Any:
        """A document posted without a key gets one derived from its label (see metadata.keys); a document
        with neither, or with a key that is not one (``""``), is left for validation to refuse."""
        if isinstance(doc, dict) and doc.get("key") is None and doc.get("label"):  # "" stays a bad key
            doc = {**doc, "key": derive_key(doc["label"], taken, kind)}
        if isinstance(doc, dict) and isinstance(doc.get("key"), str):
            taken.add(doc["key"])
        return doc

    # --- apps -----------------------------------------------------------------------------------
    def app_json(self, app: AppDef, full: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"id": app.id, **public_doc(app.doc)}
        if full:
            out["tables"] = [self.table_json(t) for t in app.tables]
            out["automations"] = [self._doc_json(d) for d in app.automations]
            out["dashboards"] = [self._doc_json(d) for d in app.dashboards]
        return out

    @staticmethod
    def _doc_json(doc: dict[str, Any]) -> dict[str, Any]:
        return {"id": doc["id"], **public_doc({k: v for k, v in doc.items() if k != "id"})}

    def create_app(self, doc: dict[str, Any]) -> AppDef:
        self.actor.require(BUILD)
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        doc = self._with_key(doc, "app", self._live_keys(db.apps, None, None))
        tables_in = doc.pop("tables", None) if isinstance(doc, dict) else None
        validation.validate("app", doc)
        self._check_key_free(db.apps, None, None, doc["key"], "app")
        pos = self.conn.execute(select(func.count()).select_from(db.apps)).scalar() or 0
        app_id = self.conn.execute(insert(db.apps).values(key=doc["key"], doc=doc, position=pos)
                                   .returning(db.apps.c.id)).scalar_one()
        self._bump("app", app_id, "create", None, doc)
        for t in tables_in or []:
            self.create_table(doc["key"], t)
        return self.catalog.apps_by_id[app_id]

    def update_app(self, app_key: str, patch: dict[str, Any]) -> AppDef:
        self.actor.require(BUILD)
        app = self.catalog.app(app_key)
        if isinstance(patch, dict) and patch.get("option_lists") == app.doc.get("option_lists"):
            # a document read and sent back whole keeps its lists; changing them has routes of its own
            patch = {k: v for k, v in patch.items() if k != "option_lists"}
        doc = self._merge(app.doc, patch, ("tables", "automations", "dashboards", "id", "option_lists"))
        validation.validate("app", doc)
        if doc["key"] != app.key:
            self._check_key_free(db.apps, None, None, doc["key"], "app", app.id)
        self.conn.execute(update(db.apps).where(db.apps.c.id == app.id).values(key=doc["key"], doc=doc))
        if doc["key"] != app.key:
            self._roles_follow_app(app.key, doc["key"])
        self._bump("app", app.id, "update", app.doc, doc)
        return self.catalog.apps_by_id[app.id]

    def delete_app(self, app_key: str) -> None:
        self.actor.require(BUILD)
        app = self.catalog.app(app_key)
        self.conn.execute(update(db.apps).where(db.apps.c.id == app.id).values(deleted_at=db.utcnow()))
        self._bump("app", app.id, "delete", app.doc, None)

    @staticmethod
    def _merge(doc: dict[str, Any], patch: Any, forbidden: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(patch, dict):
            raise BadRequest("the body must be a JSON object")
        for k in forbidden:
            if k in patch and k != "id":
                raise ValidationFailed.from_details({f"/{k}": ["cannot be changed here"]})
        out = copy.deepcopy(doc)
        for k, v in patch.items():
            if k == "id":
                continue
            if v is None:
                out.pop(k, None)
            else:
                out[k] = v
        return out

    # --- tables ---------------------------------------------------------------------------------
    def table_json(self, t: TableDef) -> dict[str, Any]:
        doc = public_doc(t.doc)
        out: dict[str, Any] = {"id": t.id, **doc}
        out["display_field"] = t.display_field.key if t.display_field else None
        out["fields"] = [self.field_json(f) for f in t.fields]
        out["views"] = [self._doc_json(v) for v in t.views]
        return out

    def create_table(self, app_key: str, doc: dict[str, Any]) -> TableDef:
        self.actor.require(BUILD)
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        app = self.catalog.app(app_key)
        doc = self._with_key(dict(doc), "table", self._live_keys(db.tables, db.tables.c.app_id, app.id))
        if isinstance(doc.get("fields"), list):
            given = {fd["key"] for fd in doc["fields"] if isinstance(fd, dict) and isinstance(fd.get("key"), str)}
            taken = set(validation.RESERVED_FIELD_KEYS) | given
            doc["fields"] = [self._with_key(fd, "field", taken) for fd in doc["fields"]]
        views_in = doc.pop("views", None)
        if views_in is not None and not isinstance(views_in, list):
            raise ValidationFailed.from_details({"/views": ["must be a list of view documents"]})
        validation.validate("table", doc)
        fields_in = doc.pop("fields", []) or []
        self._check_key_free(db.tables, db.tables.c.app_id, app.id, doc["key"], "table")
        for i, fd in enumerate(fields_in):
            validation.validate("field", fd, prefix=f"/fields/{i}")
        keys = [fd["key"] for fd in fields_in]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValidationFailed.from_details({"/fields": [f"duplicate field key '{k}'" for k in dupes]})
        pos = len(app.tables)
        tid = self.conn.execute(insert(db.tables).values(app_id=app.id, key=doc["key"], doc=doc, position=pos)
                                .returning(db.tables.c.id)).scalar_one()
        tmp = TableDef(tid, app.id, doc["key"], doc, pos)
        plain = [i for i, fd in enumerate(fields_in) if _creation_order(fd.get("type")) == 0]
        # plain fields are created with the table in one statement: no column-by-column DDL and
        # one catalog reload instead of one per field
        plain_defs = self._insert_plain_fields(tmp, [(i, fields_in[i]) for i in plain])
        sa_table = build_user_table(self.catalog.md.__class__(), tmp, plain_defs)
        self.editor.create_table(sa_table)
        searchable = [f.column_name for f in plain_defs if f.ftype.searchable and f.stored]
        if searchable:
            self.editor.create_search_index(sa_table, searchable)
        for f in plain_defs:
            if f.ftype.uses_counter:
                start = int(f.options.get("start") or 1)
                self.conn.execute(insert(db.counters).values(field_id=f.id, value=start - 1))
            self._log_change("field", f.id, "create", None, public_doc(f.doc))
        self._bump("table", tid, "create", None, doc)
        # then links, then computed fields (which may refer to the former)
        order = sorted((i for i in range(len(fields_in)) if i not in plain),
                       key=lambda i: _creation_order(fields_in[i].get("type")))
        for i in order:
            try:
                self.create_field(app_key, doc["key"], fields_in[i], position=i)
            except ValidationFailed as e:
                raise ValidationFailed(e.message, {f"/fields/{i}{k}": v for k, v in (e.details or {}).items()}) \
                    from None
        self._check_table_refs(self.catalog.table_by_id(tid))
        for v in views_in or []:
            self.create_doc("view", app_key, v, table_key=doc["key"])
        return self.catalog.table_by_id(tid)

    def _check_table_refs(self, t: TableDef) -> None:
        details: dict[str, list[str]] = {}
        for name in ("display_field", "owner_field"):
            key = t.doc.get(name)
            if key and key not in t.fields_by_key:
                details[f"/{name}"] = [f"no field '{key}' in this table"]
        details.update(flows.problems(t, self.catalog))
        details.update(_duplicate_rule_problems(t))
        if details:
            raise ValidationFailed.from_details(details)
        from formwork.metadata.query import FilterCompiler

        for i, rule in enumerate(t.doc.get("validations", [])):
            for part in ("when", "condition"):
                if part in rule:
                    FilterCompiler.check(t, self.catalog, rule[part], f"/validations/{i}/{part}")

    def update_table(self, app_key: str, table_key: str, patch: dict[str, Any]) -> TableDef:
        self.actor.require(BUILD)
        t = self.catalog.table(app_key, table_key)
        position = None
        if isinstance(patch, dict):
            patch = dict(patch)
            position = patch.pop("position", None)
        doc = self._merge(t.doc, patch, ("fields", "views"))
        validation.validate("table", doc)
        if doc["key"] != t.key:
            self._check_key_free(db.tables, db.tables.c.app_id, t.app_id, doc["key"], "table", t.id)
        self.conn.execute(update(db.tables).where(db.tables.c.id == t.id).values(key=doc["key"], doc=doc))
        if doc["key"] != t.key:
            self._roles_follow_table(self.catalog.app_by_id(t.app_id), t.key, doc["key"])
        if position is not None:
            if isinstance(position, bool) or not isinstance(position, int) or position < 0:
                raise ValidationFailed.from_details({"/position": ["must be a whole number, 0 or more"]})
            order = [x for x in self.catalog.app_by_id(t.app_id).tables if x.id != t.id]
            order.insert(min(position, len(order)), t)
            for i, x in enumerate(order):
                self.conn.execute(update(db.tables).where(db.tables.c.id == x.id).values(position=i))
        self._bump("table", t.id, "update", t.doc, doc)
        self._check_table_refs(self.catalog.table_by_id(t.id))
        return self.catalog.table_by_id(t.id)

    def delete_table(self, app_key: str, table_key: str) -> None:
        self.actor.require(BUILD)
        t = self.catalog.table(app_key, table_key)
        now = db.utcnow()
        # links from other tables into this one go to the trash with it, and come back with it
        for f in list(self.catalog.fields_by_id.values()):
            if f.table_id != t.id and f.ftype.is_link and f.options.get("target") == t.id:
                self._blocked_by_dependents(f, ignore_table=t.id)
                self.conn.execute(update(db.fields).where(db.fields.c.id == f.id)
                                  .values(deleted_at=now, deleted_with=f"table:{t.id}"))
        self.conn.execute(update(db.tables).where(db.tables.c.id == t.id).values(deleted_at=now))
        self._bump("table", t.id, "delete", t.doc, None)

    # --- fields ---------------------------------------------------------------------------------
    def field_json(self, f: FieldDef) -> dict[str, Any]:
        doc = public_doc(f.doc)
        doc["options"] = f.ftype.options_to_api(f, self.catalog)
        if not doc["options"]:
            doc.pop("options")
        out: dict[str, Any] = {"id": f.id, **doc}
        out["read_only"] = f.ftype.read_only
        return out

    def _field_doc(self, t: TableDef, doc: dict[str, Any], field_id: int | None) -> dict[str, Any]:
        """Validate a field document and return it with options in internal (id) form."""
        doc = self._with_shared_choices(t, doc)
        validation.validate("field", doc)
        ft = field_types.get(doc["type"])
        opts = doc.get("options") or {}
        try:
            internal = ft.options_to_internal(opts, t, self.catalog, doc["key"])
        except OptionsError as e:
            raise ValidationFailed.from_details({e.pointer: [e.message]}) from None
        out = dict(doc)
        out["options"] = internal
        details: dict[str, list[str]] = {}
        if doc.get("unique") and not ft.supports_unique:
            details["/unique"] = [f"{doc['type']} fields cannot be unique"]
        if "default" in doc and doc["default"] is not None:
            if not ft.supports_default:
                details["/default"] = [f"{doc['type']} fields have no default"]
            elif defaults.is_dynamic(doc["default"]):
                msg = defaults.problem(ft.kind, doc["default"])
                if msg:
                    details["/default"] = [msg]
            else:
                probe = FieldDef(field_id or 0, t.id, doc["key"], doc["type"], out, 0)
                try:
                    ft.coerce(doc["default"], probe, WriteContext(self.catalog, self.conn, self.actor.user_id))
                except FieldValueError as e:
                    details["/default"] = [e.message]
        if ft.read_only and doc.get("required"):
            details["/required"] = ["a read-only field cannot be required"]
        if details:
            raise ValidationFailed.from_details(details)
        return out

    def _with_shared_choices(self, t: TableDef, doc: Any) -> Any:
        """A select field naming a shared option list (``options.list``) takes that list's choices."""
        opts = doc.get("options") if isinstance(doc, dict) else None
        if not isinstance(opts, dict) or "list" not in opts or doc.get("type") not in ("single_select", "multi_select"):
            return doc
        from formwork.metadata.option_lists import find_list

        ol = find_list(self.catalog.app_by_id(t.app_id), str(opts["list"]))
        if ol is None:
            raise ValidationFailed.from_details({"/options/list": [f"no option list '{str(opts['list'])[:63]}'"]})
        return {**doc, "options": {**opts, "choices": copy.deepcopy(ol["choices"])}}

    def create_field(self, app_key: str, table_key: str, doc: dict[str, Any],
                     position: int | None = None) -> FieldDef:
        self.actor.require(BUILD)
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        t = self.catalog.table(app_key, table_key)
        doc = {k: v for k, v in doc.items() if k not in ("id", "read_only")}
        doc = self._with_key(doc, "field", set(validation.RESERVED_FIELD_KEYS)
                             | self._live_keys(db.fields, db.fields.c.table_id, t.id))
        validation.validate("field", doc)
        self._check_key_free(db.fields, db.fields.c.table_id, t.id, doc["key"], "field")
        stored = self._field_doc(t, doc, None)
        stored.pop("position", None)
        pos = position if position is not None else doc.get("position", len(t.fields))
        fid = self.conn.execute(insert(db.fields).values(
            table_id=t.id, key=doc["key"], type=doc["type"], doc=stored, position=pos)
            .returning(db.fields.c.id)).scalar_one()
        f = FieldDef(fid, t.id, doc["key"], doc["type"], stored, pos)
        self._check_cycles(f)
        self._add_storage(t, f)
        self._bump("field", fid, "create", None, public_doc(doc))
        if f.ftype.is_link:
            self._create_reverse(t, self.catalog.field_by_id(fid))
        return self.catalog.field_by_id(fid)

    def _add_storage(self, t: TableDef, f: FieldDef) -> None:
        from formwork.metadata.catalog import build_junction

        md = self.catalog.md.__class__()
        fresh = build_user_table(md, t, [*t.fields, f])
        for col in f.ftype.columns(f):
            self.editor.add_column(t.sa, col)
            if f.ftype.uses_counter:
                self._number_existing(t, f)
            elif f.doc.get("default") is not None and not defaults.is_dynamic(f.doc["default"]):
                value = f.ftype.coerce(f.doc["default"], f, WriteContext(self.catalog, self.conn, None))
                self.conn.execute(update(fresh).values({f.column_name: value}))
        for ix in fresh.indexes:
            if any(c.name == f.column_name for c in ix.columns):
                try:
                    with self.conn.begin_nested():
                        self.editor.create_index(ix)
                except IntegrityError:
                    raise Conflict(f"'{f.key}' cannot be unique: some records share a value") from None
        if f.ftype.needs_junction(f):
            self.editor.create_table(build_junction(md, f.id))
        if f.ftype.searchable and f.stored:  # reads every row: built after commit, in the background
            self.editor.create_search_index(fresh, [f.column_name], later=True)

    def _number_existing(self, t: TableDef, f: FieldDef) -> None:
        """Give existing records numbers in creation order and set the counter past them."""
        start = int(f.options.get("start") or 1)
        md = self.catalog.md.__class__()
        fresh = build_user_table(md, t, [*t.fields, f])
        ids = [r[0] for r in self.conn.execute(select(fresh.c.id).order_by(fresh.c.id))]
        if ids:
            from sqlalchemy import bindparam

            self.conn.execute(update(fresh).where(fresh.c.id == bindparam("rid"))
                              .values({f.column_name: bindparam("num")}),
                              [{"rid": rid, "num": start + i} for i, rid in enumerate(ids)])
        self.conn.execute(insert(db.counters).values(field_id=f.id, value=start - 1 + len(ids)))

    def _create_reverse(self, t: TableDef, f: FieldDef) -> None:
        target = self.catalog.table_by_id(f.options["target"])
        key = f.options.get("reverse_key") or t.key
        base, n = key, 2
        while key in target.fields_by_key or key in validation.RESERVED_FIELD_KEYS:
            if f.options.get("reverse_key"):
                raise Conflict(f"the target table already has a field '{key}'",
                               {"/options/reverse_key": [f"'{key}' is already used in '{target.key}'"]})
            key, n = f"{base[:58]}_{n}", n + 1
        label = f.options.get("reverse_label") or t.label
        rdoc = {"key": key, "label": label, "type": "link",
                "options": {"target": t.id, "multiple": True, "side": "reverse", "pair": f.id}}
        rid = self.conn.execute(insert(db.fields).values(
            table_id=target.id, key=key, type="link", doc=rdoc, position=len(target.fields))
            .returning(db.fields.c.id)).scalar_one()
        fdoc = copy.deepcopy(f.doc)
        fdoc["options"] = {k: v for k, v in f.options.items() if k not in ("reverse_key", "reverse_label")}
        fdoc["options"]["pair"] = rid
        self.conn.execute(update(db.fields).where(db.fields.c.id == f.id).values(doc=fdoc))
        self._bump("field", rid, "create", None, rdoc)

    def _check_cycles(self, new: FieldDef) -> None:
        graph: dict[int, set[int]] = {}
        fields = dict(self.catalog.fields_by_id)
        fields[new.id] = new
        for fid, f in fields.items():
            try:
                graph[fid] = f.ftype.cycle_edges(f, self.catalog)
            except Exception:  # noqa: BLE001 - an unparsable old formula has no edges
                graph[fid] = set()
        seen: dict[int, int] = {}

        def visit(n: int, path: list[int]) -> list[int] | None:
            if seen.get(n) == 1:
                return [*path, n]
            if seen.get(n) == 2:
                return None
            seen[n] = 1
            for m in graph.get(n, ()):
                found = visit(m, [*path, n])
                if found:
                    return found
            seen[n] = 2
            return None

        cycle = visit(new.id, [])
        if cycle:
            names = " → ".join(fields[i].key for i in cycle[cycle.index(cycle[-1]):] if i in fields)
            pointer = new.ftype.cycle_pointer
            raise ValidationFailed.from_details({pointer: [f"circular reference: {names}"]})

    def _dependents(self, f: FieldDef) -> list[FieldDef]:
        return [g for g in self.catalog.fields_by_id.values()
                if g.id != f.id and f.id in g.ftype.dependencies(g, self.catalog)]

    def _blocked_by_dependents(self, f: FieldDef, ignore_table: int | None = None) -> None:
        deps = [g for g in self._dependents(f) if g.table_id != ignore_table and g.id != f.options.get("pair")]
        if deps:
            names = ", ".join(f"{self.catalog.table_by_id(g.table_id).key}.{g.key}" for g in deps)
            uses = [{"kind": "field", "label": g.label, "table": self.catalog.table_by_id(g.table_id).label}
                    for g in deps]
            raise Conflict(f"'{f.key}' is used by {names}; change or delete those first", {"used_by": uses})

    def _links_to(self, t: TableDef) -> dict[int, set[str]]:
        """Table id -> its link fields pointing at ``t`` (filters there may name ``link.field`` of t)."""
        out: dict[int, set[str]] = {}
        for other in self.catalog.app_by_id(t.app_id).tables:
            keys = {g.key for g in other.fields if g.ftype.is_link and g.options.get("target") == t.id}
            if keys:
                out[other.id] = keys
        return out

    def _blocked_by_settings(self, t: TableDef, f: FieldDef) -> None:
        """A field the table's access rules or a view cannot do without is not deleted: who may see which
        rows would change silently (an owner field falls back to the creator, a row scope opens nothing),
        or a board would lose its columns. The refusal names each user so the builder can change it first;
        ``details.used_by`` lists them (kind, label, table) for pages to say in words."""
        uses: list[dict[str, Any]] = []
        for setting in ("owner_field", "scope_parent"):
            if t.doc.get(setting) == f.key:
                uses.append({"kind": setting, "label": t.label, "table": t.label})
        for v in t.views:
            needs = VIEW_NEEDS.get(v.get("type", ""), ())
            if any((v.get("options") or {}).get(name) == f.key for name in needs):
                uses.append({"kind": "view", "label": v.get("label"), "table": t.label})
        app = self.catalog.app_by_id(t.app_id)
        links = self._links_to(t)
        paths = {f"{app.key}.{t.key}": names_field(f.key)}
        for other_id, keys in links.items():
            paths[f"{app.key}.{self.catalog.table_by_id(other_id).key}"] = names_field(f.key, keys)
        for row in self.conn.execute(select(db.roles.c.doc)).all():
            perms = (row.doc or {}).get("permissions")
            if not isinstance(perms, dict):
                continue
            for name, gone in paths.items():
                grant = perms.get(name)
                if isinstance(grant, dict) and any(
                        drop_from_filter(grant.get(op), gone) != grant.get(op)
                        for op in ("read", "update", "delete") if isinstance(grant.get(op), (dict, list))):
                    uses.append({"kind": "role", "label": row.doc.get("label") or row.doc.get("key"),
                                 "table": t.label})
                    break
        if uses:
            words = {"owner_field": "the table's owner field", "scope_parent": "the table's parent scope",
                     "view": "view", "role": "the row access of role"}
            names = ", ".join(f"{words[u['kind']]} '{label_text(u['label'])}'" if u["kind"] in ("view", "role")
                              else words[u["kind"]] for u in uses)
            raise Conflict(f"'{f.key}' is used by {names}; change those first", {"used_by": uses})

    def _forget_field(self, t: TableDef, f: FieldDef) -> None:
        """Views (this table's, and other tables' filters through a link) and the table's settings stop
        naming a deleted field, so they keep working and can still be saved."""
        own = names_field(f.key)
        for v in t.views:
            doc = {k: val for k, val in v.items() if k != "id"}
            new = self._view_without(doc, f.key, own)
            if new != doc:
                self.conn.execute(update(db.views).where(db.views.c.id == v["id"]).values(doc=new))
        for other_id, keys in self._links_to(t).items():
            via = names_field(f.key, keys)
            for v in self.catalog.table_by_id(other_id).views:
                if "filter" not in v:
                    continue
                doc = {k: val for k, val in v.items() if k != "id"}
                kept = drop_from_filter(doc["filter"], via)
                if kept != doc["filter"]:
                    if kept is None:
                        doc.pop("filter")
                    else:
                        doc["filter"] = kept
                    self.conn.execute(update(db.views).where(db.views.c.id == v["id"]).values(doc=doc))
        tdoc = copy.deepcopy(t.doc)
        if tdoc.get("display_field") == f.key:
            tdoc.pop("display_field")  # the display falls back to the table's first text field
        if "validations" in tdoc:
            kept = drop_from_filter(tdoc["validations"], own)
            if kept:
                tdoc["validations"] = kept
            else:
                tdoc.pop("validations")
        if isinstance(tdoc.get("flows"), dict):
            tdoc["flows"] = {k: flow for k, flow in tdoc["flows"].items() if k != f.key}
            for flow in tdoc["flows"].values():
                if isinstance(flow, dict) and isinstance(flow.get("require"), dict):
                    flow["require"] = {state: [k for k in keys if k != f.key]
                                       for state, keys in flow["require"].items()}
        if isinstance(tdoc.get("timeline"), list):
            tdoc["timeline"] = [k for k in tdoc["timeline"] if k != f.key]
        if tdoc != t.doc:
            self.conn.execute(update(db.tables).where(db.tables.c.id == t.id).values(doc=tdoc))

    @staticmethod
    def _view_without(doc: dict[str, Any], key: str, gone: Callable[[str], bool]) -> dict[str, Any]:
        doc = copy.deepcopy(doc)
        for name in ("fields", "group_by"):
            if name in doc:
                doc[name] = [k for k in doc[name] if k != key]
        if "sort" in doc:
            doc["sort"] = [s for s in doc["sort"] if s.lstrip("-").split(".")[0] != key]
        if "filter" in doc:
            kept = drop_from_filter(doc["filter"], gone)
            if kept is None:
                doc.pop("filter")
            else:
                doc["filter"] = kept
        opts = doc.get("options")
        if isinstance(opts, dict):
            for name in VIEW_FIELD_OPTIONS:
                if opts.get(name) == key:
                    opts.pop(name)
            if isinstance(opts.get("column_widths"), dict):
                opts["column_widths"] = {k: w for k, w in opts["column_widths"].items() if k != key}
            if isinstance(opts.get("layout"), list):
                opts["layout"] = [item for item in opts["layout"]
                                  if not (isinstance(item, dict) and item.get("field") == key)]
        return doc

    def update_field(self, app_key: str, table_key: str, field_key: str, patch: dict[str, Any],
                     dry_run: bool = False) -> dict[str, Any]:
        self.actor.require(BUILD)
        t = self.catalog.table(app_key, table_key)
        f = t.field(field_key)
        if not isinstance(patch, dict):
            raise BadRequest("the body must be a JSON object")
        patch = dict(patch)
        confirm = bool(patch.pop("confirm_data_loss", False))
        position = patch.pop("position", None)
        patch.pop("read_only", None)
        api_doc = self.field_json(f)
        api_doc.pop("id")
        api_doc.pop("read_only")
        if "type" in patch and patch["type"] != f.type and "options" not in patch:
            api_doc.pop("options", None)
        new_doc = self._merge(api_doc, patch)
        new_doc.pop("position", None)
        if f.ftype.is_link and (new_doc.get("type") != f.type or new_doc.get("options") != api_doc.get("options")):
            raise ValidationFailed.from_details({"/options": ["a link's type and target cannot be changed; "
                                                              "add a new field instead"]})
        if new_doc["key"] != f.key:
            self._check_key_free(db.fields, db.fields.c.table_id, t.id, new_doc["key"], "field", f.id)
        stored = self._field_doc(t, new_doc, f.id) if not f.ftype.is_link else \
            dict(new_doc, options=f.doc.get("options"))
        if f.ftype.is_link:
            validation.validate("field", {k: v for k, v in new_doc.items() if k != "options"}
                                | {"options": {"table": api_doc["options"]["table"]}})
        for k, v in f.doc.items():
            if k.startswith("_"):
                stored[k] = v
        new_f = FieldDef(f.id, t.id, new_doc["key"], new_doc["type"], stored, f.position)
        needs_data = needs_conversion(f, new_f)
        report: dict[str, Any] = {"rows": 0, "converted": 0, "emptied": 0, "samples": []}
        if needs_data:
            if new_f.ftype.is_link:
                raise ValidationFailed.from_details({"/type": ["a field cannot be converted to a link; "
                                                               "add a link field instead"]})
            if type_changed(f, new_f) and f.ftype.computed is False and new_f.ftype.computed:
                self._blocked_by_dependents(f)
            if dry_run:
                return self._conversion().run(t, f, new_f, dry_run=True)
        elif dry_run:
            return report
        self._check_cycles(new_f)
        values: dict[str, Any] = {"key": new_f.key, "type": new_f.type, "doc": stored}
        if needs_data:
            report = self._conversion().run(t, f, new_f, dry_run=False, confirm=confirm)
            values["doc"] = new_f.doc
        elif new_f.unique != f.unique and new_f.stored:
            self._toggle_unique(t, new_f)
        self.conn.execute(update(db.fields).where(db.fields.c.id == f.id).values(**values))
        if position is not None:
            self._reorder(t, f, position)
        if new_f.key != f.key:
            self._rekey(t, f.key, new_f.key)
        self._bump("field", f.id, "update", public_doc(f.doc), public_doc(new_doc))
        return {"field": self.field_json(self.catalog.field_by_id(f.id)), **report}

    def _reorder(self, t: TableDef, f: FieldDef, position: Any) -> None:
        """Move ``f`` to index ``position`` among the table's fields and renumber them all 0..n-1."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValidationFailed.from_details({"/position": ["must be a whole number, 0 or more"]})
        order = [g for g in t.fields if g.id != f.id]
        order.insert(min(position, len(order)), f)
        for i, g in enumerate(order):
            if g.position != i or g.id == f.id:
                self.conn.execute(update(db.fields).where(db.fields.c.id == g.id).values(position=i))

    def _toggle_unique(self, t: TableDef, f: FieldDef) -> None:
        md = self.catalog.md.__class__()
        fresh = build_user_table(md, t, [g if g.id != f.id else f for g in t.fields])
        name = f"ux_{t.name}_{f.column_name}"
        if f.unique:
            for ix in fresh.indexes:
                if ix.name == name:
                    try:
                        with self.conn.begin_nested():
                            self.editor.create_index(ix)
                    except IntegrityError:
                        raise Conflict(f"'{f.key}' cannot be unique: some records share a value") from None
        else:
            from sqlalchemy import Index

            self.editor.drop_index(Index(name, t.sa.c[f.column_name], unique=True))

    def _conversion(self) -> TypeConversion:
        return TypeConversion(self.conn, self.catalog, self.editor, self.actor.user_id, self.actor.read_values,
                              self.actor.preview_scope)

    def _rekey(self, t: TableDef, old: str, new: str) -> None:
        """Keep references by key (formulas, views, table settings) pointing at a renamed field."""
        for g in t.fields:
            options = g.ftype.options_after_rename(g, old, new)
            if options is not None:
                doc = copy.deepcopy(g.doc)
                doc["options"] = options
                self.conn.execute(update(db.fields).where(db.fields.c.id == g.id).values(doc=doc))
        tdoc = copy.deepcopy(t.doc)
        for name in ("display_field", "owner_field"):
            if tdoc.get(name) == old:
                tdoc[name] = new
        tdoc["validations"] = rename_in_filter(tdoc.get("validations", []), old, new)
        if not tdoc["validations"]:
            tdoc.pop("validations")
        # the table's own settings that name fields: the parent scope, state flows, buttons, the timeline
        if tdoc.get("scope_parent") == old:
            tdoc["scope_parent"] = new
        if isinstance(tdoc.get("flows"), dict):
            flows_doc = {(new if k == old else k): v for k, v in tdoc["flows"].items()}
            for flow in flows_doc.values():
                if isinstance(flow, dict) and isinstance(flow.get("require"), dict):
                    flow["require"] = {state: [new if k == old else k for k in keys]
                                       for state, keys in flow["require"].items()}
            tdoc["flows"] = flows_doc
        if isinstance(tdoc.get("buttons"), list):
            tdoc["buttons"] = rename_in_filter(tdoc["buttons"], old, new)
        if isinstance(tdoc.get("timeline"), list):
            tdoc["timeline"] = [new if k == old else k for k in tdoc["timeline"]]
        self.conn.execute(update(db.tables).where(db.tables.c.id == t.id).values(doc=tdoc))
        self._roles_follow_field(t, old, new)
        for v in t.views:
            doc = rename_in_filter({k: val for k, val in v.items() if k != "id"}, old, new)
            for name in ("fields", "group_by"):
                if name in doc:
                    doc[name] = [new if k == old else k for k in doc[name]]
            if "sort" in doc:
                doc["sort"] = [("-" if s.startswith("-") else "") + (new if s.lstrip("-") == old else s.lstrip("-"))
                               for s in doc["sort"]]
            for name, val in list(doc.get("options", {}).items()):
                if val == old:
                    doc["options"][name] = new
            self.conn.execute(update(db.views).where(db.views.c.id == v["id"]).values(doc=doc))

    # --- roles follow renames: a permission keyed by a name must never fail open ------------------------
    def _rewrite_roles(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Apply ``change`` to every role's permissions; store (and log) the roles it changed."""
        for row in self.conn.execute(select(db.roles.c.id, db.roles.c.doc)).all():
            perms = (row.doc or {}).get("permissions")
            if not isinstance(perms, dict):
                continue
            new_perms = change(copy.deepcopy(perms))
            if new_perms != perms:
                doc = {**row.doc, "permissions": new_perms}
                self.conn.execute(update(db.roles).where(db.roles.c.id == row.id).values(doc=doc))
                self._log_change("role", row.id, "update", row.doc, doc)

    def _roles_follow_app(self, old: str, new: str) -> None:
        def change(perms: dict[str, Any]) -> dict[str, Any]:
            return {(f"{new}.{k.split('.', 1)[1]}" if k.split(".", 1)[0] == old else k): g for k, g in perms.items()}

        self._rewrite_roles(change)

    def _roles_follow_table(self, app: AppDef, old: str, new: str) -> None:
        def change(perms: dict[str, Any]) -> dict[str, Any]:
            return {(f"{app.key}.{new}" if k == f"{app.key}.{old}" else k): g for k, g in perms.items()}

        self._rewrite_roles(change)

    def _roles_follow_field(self, t: TableDef, old: str, new: str) -> None:
        """A renamed field keeps its per-field modes (hidden, read-only) and the row scopes that name it,
        on its own table and through links to it from other tables of the app."""
        app = self.catalog.app_by_id(t.app_id)
        own = f"{app.key}.{t.key}"
        links = {f"{app.key}.{self.catalog.table_by_id(tid).key}": keys  # "app.table" -> its links to t
                 for tid, keys in self._links_to(t).items()}

        def change(perms: dict[str, Any]) -> dict[str, Any]:
            for k, g in perms.items():
                if not isinstance(g, dict):
                    continue
                if k == own:
                    modes = g.get("fields")
                    if isinstance(modes, dict) and old in modes:
                        g["fields"] = {(new if fk == old else fk): m for fk, m in modes.items()}
                    for op in ("read", "update", "delete"):
                        if isinstance(g.get(op), dict):
                            g[op] = rename_in_filter(g[op], old, new)
                for op in ("read", "update", "delete"):
                    if k in links and isinstance(g.get(op), dict):
                        g[op] = rename_through_links(g[op], links[k], old, new)
            return perms

        self._rewrite_roles(change)

    def delete_field(self, app_key: str, table_key: str, field_key: str) -> None:
        self.actor.require(BUILD)
        t = self.catalog.table(app_key, table_key)
        f = t.field(field_key)
        self._blocked_by_dependents(f)
        self._blocked_by_settings(t, f)
        self._forget_field(t, f)
        now = db.utcnow()
        self.conn.execute(update(db.fields).where(db.fields.c.id == f.id).values(deleted_at=now))
        if f.ftype.is_link and f.options.get("pair"):
            pair = self.catalog.fields_by_id.get(f.options["pair"])
            if pair is not None:
                self._blocked_by_dependents(pair)
                self.conn.execute(update(db.fields).where(db.fields.c.id == pair.id)
                                  .values(deleted_at=now, deleted_with=f"field:{f.id}"))
        self._bump("field", f.id, "delete", public_doc(f.doc), None)

    # --- views, automations, dashboards (the document kinds of an app) ---------------------------
    @staticmethod
    def _kind(kind: str) -> DocumentKind:
        """A kind of document that belongs to an app or a table (roles are administered elsewhere)."""
        dk = document_kinds.get(kind)
        if dk.parent is None:
            raise NotFound(f"{kind} documents do not belong to an app")
        return dk

    def create_doc(self, kind: str, app_key: str, doc: dict[str, Any], table_key: str | None = None) -> dict[str, Any]:
        dk = self._kind(kind)
        self.actor.require(dk.right)
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        doc = {k: v for k, v in doc.items() if k != "id"}
        tbl = dk.storage
        parent_id = self._doc_parent(kind, app_key, table_key)
        parent_col = tbl.c[f"{dk.parent}_id"]
        doc = self._with_key(doc, kind, self._live_keys(tbl, parent_col, parent_id))
        validation.validate(dk.schema, doc)
        self._check_key_free(tbl, parent_col, parent_id, doc["key"], kind)
        self._check_doc_refs(kind, app_key, table_key, doc)
        pos = self.conn.execute(select(func.count()).select_from(tbl).where(parent_col == parent_id)).scalar()
        new_id = self.conn.execute(insert(tbl).values({parent_col.name: parent_id, "key": doc["key"], "doc": doc,
                                                       "position": pos or 0}).returning(tbl.c.id)).scalar_one()
        if kind == "view":
            self._view_index(self.catalog.table(app_key, table_key or ""), new_id, doc)
        self._bump(kind, new_id, "create", None, doc)
        return {"id": new_id, **doc}

    def _doc_parent(self, kind: str, app_key: str, table_key: str | None) -> int:
        if self._kind(kind).parent == "table":
            return self.catalog.table(app_key, table_key or "").id
        return self.catalog.app(app_key).id

    def get_doc(self, kind: str, app_key: str, key: str, table_key: str | None = None) -> dict[str, Any]:
        if self._kind(kind).parent == "table":
            return self.catalog.table(app_key, table_key or "").view(key)
        app = self.catalog.app(app_key)
        for d in getattr(app, kind + "s"):
            if d["key"] == key:
                return d
        raise NotFound(f"no {kind} '{key}' in app '{app_key}'")

    def update_doc(self, kind: str, app_key: str, key: str, patch: dict[str, Any],
                   table_key: str | None = None) -> dict[str, Any]:
        dk = self._kind(kind)
        self.actor.require(dk.right)
        current = self.get_doc(kind, app_key, key, table_key)
        before = {k: v for k, v in current.items() if k != "id"}
        doc = self._merge(before, patch)
        validation.validate(dk.schema, doc)
        tbl = dk.storage
        parent_col = tbl.c[f"{dk.parent}_id"]
        if doc["key"] != key:
            self._check_key_free(tbl, parent_col, self._doc_parent(kind, app_key, table_key), doc["key"], kind,
                                 current["id"])
        self._check_doc_refs(kind, app_key, table_key, doc)
        self.conn.execute(update(tbl).where(tbl.c.id == current["id"]).values(key=doc["key"], doc=doc))
        if kind == "view":
            self._view_index(self.catalog.table(app_key, table_key or ""), current["id"], doc)
        self._bump(kind, current["id"], "update", before, doc)
        return {"id": current["id"], **doc}

    def delete_doc(self, kind: str, app_key: str, key: str, table_key: str | None = None) -> None:
        dk = self._kind(kind)
        self.actor.require(dk.right)
        current = self.get_doc(kind, app_key, key, table_key)
        tbl = dk.storage
        self.conn.execute(update(tbl).where(tbl.c.id == current["id"]).values(deleted_at=db.utcnow()))
        if kind == "view":
            self._view_index(self.catalog.table(app_key, table_key or ""), current["id"], None)
        self._bump(kind, current["id"], "delete", {k: v for k, v in current.items() if k != "id"}, None)

    def _view_index(self, t: TableDef, view_id: int, doc: dict[str, Any] | None) -> None:
        """Keep one index per saved view (its eq-filtered columns, then its sort) so its first page is an index scan."""
        from formwork.metadata.query import sort_expression

        sa = t.sa
        name = f"ix_{t.name}_v{view_id}"
        stale = Index(name, sa.c.id)
        sa.indexes.discard(stale)  # a handle for DROP INDEX only; the catalog's Table keeps its own indexes
        self.editor.drop_index(stale)
        if doc is None:
            return
        flt = doc.get("filter")
        parts: list[Any] = flt["and"] if isinstance(flt, dict) and isinstance(flt.get("and"), list) else [flt]
        cols: list[Any] = []
        for p in parts:
            f = t.fields_by_key.get(p.get("field", "")) if isinstance(p, dict) else None
            if f is not None and p.get("op") == "eq" and f.stored and not f.ftype.is_link \
                    and sa.c[f.column_name] not in cols:
                cols.append(sa.c[f.column_name])
        ctx = QueryContext(catalog=self.catalog, dialect=self.conn.dialect.name)
        for item in doc.get("sort") or []:
            f = t.fields_by_key.get(item.lstrip("-"))
            if f is None or not f.stored or sort_expression(f, sa, ctx) is not sa.c[f.column_name]:
                break  # only a prefix of plain columns can be read in order from an index
            col = sa.c[f.column_name]
            # NULLS LAST as the reader sorts; SQLite indexes have no NULLS clause (NULL is the smallest value)
            cols.append((col.desc().nulls_last() if self.conn.dialect.name == "postgresql" else col.desc())
                        if item.startswith("-") else col)
        if not cols:
            return
        ix = Index(name, *cols, sa.c.id, postgresql_where=sa.c.deleted_at.is_(None),
                   sqlite_where=sa.c.deleted_at.is_(None))
        self.editor.create_index(ix)
        sa.indexes.discard(ix)

    def _check_doc_refs(self, kind: str, app_key: str, table_key: str | None, doc: dict[str, Any]) -> None:
        dk = self._kind(kind)
        app = self.catalog.app(app_key)
        table = self.catalog.table(app_key, table_key or "") if dk.parent == "table" else None
        dk.check_refs(DocumentContext(self.catalog, app, table, self.conn, self.actor), doc)

    # --- trash ----------------------------------------------------------------------------------
    def trash(self) -> list[dict[str, Any]]:
        self.actor.require(BUILD)
        out: list[dict[str, Any]] = []
        for r in self.conn.execute(select(db.apps).where(db.apps.c.deleted_at.is_not(None))):
            out.append({"id": f"app-{r.id}", "kind": "app", "key": r.key, "label": r.doc.get("label"),
                        "deleted_at": _iso(r.deleted_at)})
        for r in self.conn.execute(select(db.tables).where(db.tables.c.deleted_at.is_not(None))):
            out.append({"id": f"table-{r.id}", "kind": "table", "key": r.key, "label": r.doc.get("label"),
                        "app_id": r.app_id, "deleted_at": _iso(r.deleted_at)})
        for r in self.conn.execute(select(db.fields).where(db.fields.c.deleted_at.is_not(None),
                                                           db.fields.c.deleted_with.is_(None))):
            out.append({"id": f"field-{r.id}", "kind": "field", "key": r.key, "label": r.doc.get("label"),
                        "table_id": r.table_id, "type": r.type, "deleted_at": _iso(r.deleted_at)})
        for dk in document_kinds.in_apps():
            kind, tbl = dk.kind, dk.storage
            for r in self.conn.execute(select(tbl).where(tbl.c.deleted_at.is_not(None))):
                out.append({"id": f"{kind}-{r.id}", "kind": kind, "key": r.key, "label": r.doc.get("label"),
                            "deleted_at": _iso(r.deleted_at)})
        out.sort(key=lambda e: e["deleted_at"] or "", reverse=True)
        return out

    def _check_restorable(self, kind: str, row: Any) -> None:
        """What a restored object stands on must be live: its app, its table, a link's other table."""
        if kind == "table" and row.app_id not in self.catalog.apps_by_id:
            raise Conflict(f"restore the app of table '{row.key}' first")
        if kind != "field":
            return
        if row.table_id not in self.catalog.tables_by_id:
            raise Conflict(f"restore table '{_table_label(self.conn, row.table_id)}' of field '{row.key}' first")
        target = (row.doc.get("options") or {}).get("target") if _is_link_type(row.type) else None
        if target is not None and target not in self.catalog.tables_by_id:
            raise Conflict(f"field '{row.key}' links to table '{_table_label(self.conn, target)}', which is in "
                           "the trash: restore that table first")

    def restore(self, trash_id: str) -> dict[str, Any]:
        self.actor.require(BUILD)
        docs = {dk.kind: dk for dk in document_kinds.in_apps()}
        m = re.fullmatch(r"([a-z_]{1,40})-(\d{1,18})", trash_id or "")
        if not m or m.group(1) not in ("app", "table", "field", *docs):
            raise NotFound(f"no trash entry '{trash_id[:80]}'")
        kind, oid = m.group(1), int(m.group(2))
        tbl = {"app": db.apps, "table": db.tables, "field": db.fields, **{k: d.storage for k, d in docs.items()}}[kind]
        row = self.conn.execute(select(tbl).where(tbl.c.id == oid, tbl.c.deleted_at.is_not(None))).first()
        if row is None:
            raise NotFound(f"no trash entry '{trash_id}'")
        parent_col = {"app": None, "table": db.tables.c.app_id, "field": db.fields.c.table_id,
                      **{k: d.storage.c[f"{d.parent}_id"] for k, d in docs.items()}}[kind]
        parent_id = getattr(row, parent_col.name) if parent_col is not None else None
        self._check_restorable(kind, row)
        self._check_key_free(tbl, parent_col, parent_id, row.key, kind)
        companions: list[Any] = []
        if kind in ("field", "table"):
            companions = list(self.conn.execute(select(db.fields).where(
                db.fields.c.deleted_with == f"{kind}:{oid}", db.fields.c.deleted_at.is_not(None))))
        for c in companions:  # a link's reverse, or links from other tables into a restored table
            target_table = self.catalog.tables_by_id.get(c.table_id)
            where = f" in table '{target_table.key}'" if target_table else ""
            try:
                self._check_key_free(db.fields, db.fields.c.table_id, c.table_id, c.key, "field")
            except Conflict:
                raise Conflict(f"cannot restore '{row.key}': its linked field '{c.key}'{where} has a key that is "
                               f"used again; rename or delete that field first",
                               {"/key": [f"'{c.key}' is already used{where}"]}) from None
        self.conn.execute(update(tbl).where(tbl.c.id == oid).values(deleted_at=None))
        if companions:
            self.conn.execute(update(db.fields).where(db.fields.c.id.in_([c.id for c in companions]))
                              .values(deleted_at=None, deleted_with=None))
        self._bump(kind, oid, "restore", None, row.doc)
        return {"id": trash_id, "kind": kind, "key": row.key, "restored": True}


#: field types a duplicate rule may compare (their stored value is one piece of text or a number)
DUPLICATE_COMPARABLE = {"text", "phone", "email", "url", "number", "single_select", "autonumber"}


def _duplicate_rule_problems(t: TableDef) -> dict[str, list[str]]:
    """A table's duplicate rules must name comparable fields of the table, each rule key once."""
    details: dict[str, list[str]] = {}
    keys: list[str] = []
    for i, r in enumerate(t.doc.get("duplicate_rules") or []):
        if r.get("key") in keys:
            details[f"/duplicate_rules/{i}/key"] = [f"the rule key '{r['key']}' is used twice"]
        keys.append(r.get("key", ""))
        for j, part in enumerate(r.get("fields") or []):
            f = t.fields_by_key.get(part.get("field", ""))
            if f is None:
                details[f"/duplicate_rules/{i}/fields/{j}/field"] = [f"no field '{part.get('field')}' in this table"]
            elif f.type not in DUPLICATE_COMPARABLE:
                details[f"/duplicate_rules/{i}/fields/{j}/field"] = [f"a {f.type} field cannot be compared"]
    return details


def _table_label(conn: Connection, table_id: int) -> str:
    row = conn.execute(select(db.tables.c.key).where(db.tables.c.id == table_id)).first()
    return str(row.key) if row else str(table_id)


def _is_link_type(name: str) -> bool:
    return name in field_types and field_types.get(name).is_link


def _creation_order(ftype: Any) -> int:
    """Plain fields first (with the table), then links, then what reads them (see FieldType.creation_order)."""
    return field_types.get(ftype).creation_order if isinstance(ftype, str) and ftype in field_types else 0


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None
