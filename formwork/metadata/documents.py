"""Document kinds: the JSON documents an app holds beside its tables and fields (views, dashboards,
automations, roles).

Each kind is one small class: its ``kind`` string, the JSON Schema it is validated against (a static
file, or one the kind builds at start-up), where it is stored and under what, the right needed to
change it, its save-time cross-reference checks, and how it crosses the boundary: how readers (and
the change log) see it, how a document sent by a client is prepared, what an app export leaves out.
Kinds are registered explicitly at start-up; a layer above metadata plugs its own kinds in the same way
(the automation kind lives in ``formwork.automation``), so metadata never imports the layers that define them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy import Table

from formwork import db
from formwork.errors import NotFound, ValidationFailed

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from formwork.metadata.catalog import AppDef, Catalog, TableDef

#: rights a change (or a read of a private kind) may need, held by an Actor; an administrator holds them all
BUILD, MANAGE_AUTOMATIONS, ADMIN, VIEW_DASHBOARDS = "build", "manage_automations", "admin", "view_dashboards"
RIGHTS = (BUILD, MANAGE_AUTOMATIONS, ADMIN, VIEW_DASHBOARDS)
#: what a caller without the right is told (the same words the HTTP routes have always used)
FORBIDDEN = {
    BUILD: "you may not change app definitions",
    MANAGE_AUTOMATIONS: "you may not manage automations",
    ADMIN: "only administrators may change roles",
    VIEW_DASHBOARDS: "you may not view dashboards",
}


class Saver(Protocol):
    """Who saves a document, as a check sees it (MetadataService's Actor is one)."""

    @property
    def user_id(self) -> int | None: ...

    @property
    def is_admin(self) -> bool: ...


@dataclass(frozen=True)
class DocumentContext:
    """What a kind's cross-reference check may look at: the definitions, and who saves where."""

    catalog: Catalog
    app: AppDef | None = None
    table: TableDef | None = None
    conn: Connection | None = None
    actor: Saver | None = None


class DocumentKind:
    """The contract of one document kind."""

    kind: ClassVar[str]
    #: name of the JSON Schema (formwork/metadata/schemas/<schema>.json) a document is validated against
    schema: ClassVar[str]
    #: the platform table that stores documents of this kind
    storage: ClassVar[Table]
    #: what a document belongs to: "table", "app", or None for documents shared across apps
    parent: ClassVar[str | None]
    #: the right needed to create, change or delete one (one of RIGHTS)
    right: ClassVar[str]
    #: reading one needs ``right`` too (automations: their recipients, URLs and filters)
    private: ClassVar[bool] = False
    #: reading one needs this right (dashboards: the role flag view_dashboards); None: whoever sees the app
    read_right: ClassVar[str | None] = None

    def right_to_read(self) -> str | None:
        """The right a reader needs, if any."""
        return self.right if self.private else self.read_right

    def check_refs(self, ctx: DocumentContext, doc: dict[str, Any]) -> None:
        """Refuse (ValidationFailed with JSON pointers) a document naming what does not exist."""
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema when the kind builds it at start-up (e.g. from a registry); None for the
        static file ``formwork/metadata/schemas/<schema>.json``."""
        return None

    def public(self, doc: Any) -> Any:
        """The document as readers and the change log see it (secrets masked)."""
        return doc

    def incoming(self, doc: Any, stored: Callable[[], dict[str, Any] | None]) -> Any:
        """A document or patch as a client sent it, made ready to merge and validate; ``stored()`` loads
        the saved document it changes (None for a new one) when the kind needs it. Write-only parts
        sent back as ``public`` shows them keep their stored values."""
        return doc

    def exported(self, doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The document as an app export carries it, and the JSON pointers it leaves out (secrets);
        ``doc`` itself is left alone."""
        return doc, []


def _query_check(ctx: DocumentContext, t: TableDef, tree: Any, pointer: str) -> None:
    from formwork.metadata.query import FilterCompiler

    FilterCompiler.check(t, ctx.catalog, tree, pointer)


class ViewDocument(DocumentKind):
    kind = "view"
    schema = "view"
    storage = db.views
    parent = "table"
    right = BUILD

    def check_refs(self, ctx: DocumentContext, doc: dict[str, Any]) -> None:
        t = ctx.table
        assert t is not None, "a view belongs to a table"
        details: dict[str, list[str]] = {}
        for name in ("fields", "group_by"):
            for i, k in enumerate(doc.get(name, [])):
                if k not in t.fields_by_key:
                    details[f"/{name}/{i}"] = [f"no field '{k}' in table '{t.key}'"]
        for i, s in enumerate(doc.get("sort", [])):
            if s.lstrip("-") not in t.fields_by_key and s.lstrip("-") != "id":
                details[f"/sort/{i}"] = [f"no field '{s.lstrip('-')}' in table '{t.key}'"]
        seen: set[str] = set()
        for i, item in enumerate(doc.get("options", {}).get("layout") or []):
            k = item.get("field")
            if k is None:
                continue
            if k not in t.fields_by_key:
                details[f"/options/layout/{i}/field"] = [f"no field '{k}' in table '{t.key}'"]
            elif k in seen:
                details[f"/options/layout/{i}/field"] = [f"'{k}' is on the form twice"]
            seen.add(k)
        for name, val in doc.get("options", {}).items():
            if name.endswith("_field") and val not in t.fields_by_key:
                details[f"/options/{name}"] = [f"no field '{val}' in table '{t.key}'"]
        if doc["type"] == "kanban" and "group_field" not in doc.get("options", {}):
            details["/options/group_field"] = ["a kanban view needs a group_field (a single select or user)"]
        if doc["type"] == "calendar" and "date_field" not in doc.get("options", {}):
            details["/options/date_field"] = ["a calendar view needs a date_field"]
        if details:
            raise ValidationFailed.from_details(details)
        if "filter" in doc:
            _query_check(ctx, t, doc["filter"], "/filter")


class DashboardDocument(DocumentKind):
    kind = "dashboard"
    schema = "dashboard"
    storage = db.dashboards
    parent = "app"
    right = BUILD
    read_right = VIEW_DASHBOARDS

    def check_refs(self, ctx: DocumentContext, doc: dict[str, Any]) -> None:
        """Every name a widget, filter or schedule uses must exist and fit (a sum needs a number, a date
        bucket a date, a gauge a goal); all problems are reported at once, each at its JSON pointer."""
        app = ctx.app
        assert app is not None, "a dashboard belongs to an app"
        from formwork.metadata.fieldtypes.base import DATE, DATETIME, NUMBER, USER

        cat = ctx.catalog
        details: dict[str, list[str]] = {}

        def kind(t: TableDef, key: str) -> str | None:
            f = t.fields_by_key.get(key)
            return None if f is None else f.ftype.value_kind(f, cat)

        def metric(t: TableDef, m: str, at: str) -> None:
            fn, _, key = m.partition(":")
            if not key:
                return
            k = kind(t, key)
            if k is None:
                details[at] = [f"no field '{key}' in table '{t.key}'"]
            elif fn in ("sum", "avg") and k != NUMBER:
                details[at] = [f"'{key}' is not a number, so it has no {fn}"]
            elif fn in ("min", "max") and k not in (NUMBER, DATE, DATETIME):
                details[at] = [f"'{key}' is not a number or a date, so it has no {fn}"]

        for i, w in enumerate(doc.get("widgets", [])):
            t = app.tables_by_key.get(w["table"])
            if t is None:
                details[f"/widgets/{i}/table"] = [f"no table '{w['table']}'"]
                continue
            if "filter" in w:
                try:
                    _query_check(ctx, t, w["filter"], f"/widgets/{i}/filter")
                except ValidationFailed as e:
                    details.update(e.details or {})
            for j, g in enumerate(w.get("group_by", [])):
                key, _, bucket = g.partition(":")
                k = kind(t, key)
                if k is None:
                    details[f"/widgets/{i}/group_by/{j}"] = [f"no field '{key}' in table '{t.key}'"]
                elif bucket and k not in (DATE, DATETIME):
                    details[f"/widgets/{i}/group_by/{j}"] = [f"'{key}' is not a date, so it has no {bucket}"]
            for j, m in enumerate(w.get("metrics", [])):
                metric(t, m, f"/widgets/{i}/metrics/{j}")
            for j, m in enumerate(w.get("ratio_of", [])):
                metric(t, m, f"/widgets/{i}/ratio_of/{j}")
            if "date_field" in w and kind(t, w["date_field"]) not in (DATE, DATETIME):
                details[f"/widgets/{i}/date_field"] = [f"no date field '{w['date_field']}' in table '{t.key}'"]
            if w["type"] == "stacked_bar" and len(w.get("group_by", [])) != 2:
                details[f"/widgets/{i}/group_by"] = ["a stacked bar groups by two fields"]
            if w["type"] == "pivot" and len(w.get("group_by", [])) != 2:
                details[f"/widgets/{i}/group_by"] = ["a pivot groups by two fields"]
            target = w.get("target")
            if w["type"] == "gauge" and "goal" not in w and not target:
                details[f"/widgets/{i}/goal"] = ["a gauge needs a goal or a targets table"]
            if target:
                tt = app.tables_by_key.get(target["table"])
                if tt is None:
                    details[f"/widgets/{i}/target/table"] = [f"no table '{target['table']}'"]
                else:
                    if kind(tt, target["amount"]) != NUMBER:
                        details[f"/widgets/{i}/target/amount"] = [f"no number field '{target['amount']}'"]
                    if "date" in target and kind(tt, target["date"]) not in (DATE, DATETIME):
                        details[f"/widgets/{i}/target/date"] = [f"no date field '{target['date']}'"]
                    if "owner" in target and kind(tt, target["owner"]) != USER:
                        details[f"/widgets/{i}/target/owner"] = [f"no user field '{target['owner']}'"]
        keys = [f["key"] for f in doc.get("filters", [])]
        for i, flt in enumerate(doc.get("filters", [])):
            if keys.count(flt["key"]) > 1:
                details[f"/filters/{i}/key"] = [f"the filter key '{flt['key']}' is used twice"]
            names = [flt["field"]] if "field" in flt else []
            tables = [(tk, fk) for tk, fk in (flt.get("fields") or {}).items()]
            if not names and not tables:
                details[f"/filters/{i}/field"] = ["a filter needs a field"]
            if names and not any(names[0] in t.fields_by_key for t in app.tables):
                details[f"/filters/{i}/field"] = [f"no table has a field '{names[0]}'"]
            for tk, fk in tables:
                t = app.tables_by_key.get(tk)
                if t is None or fk not in t.fields_by_key:
                    details[f"/filters/{i}/fields/{tk}"] = [f"no field '{fk}' in table '{tk}'"]
        if sum(1 for f in doc.get("filters", []) if f["type"] == "period") > 1:
            details["/filters"] = ["a dashboard has at most one period filter"]
        if doc.get("roles") and ctx.conn is not None:
            from sqlalchemy import select

            known = {r for (r,) in ctx.conn.execute(select(db.roles.c.key))}
            for i, r in enumerate(doc["roles"]):
                if r not in known:
                    details[f"/roles/{i}"] = [f"no role '{r}'"]
        if details:
            raise ValidationFailed.from_details(details)


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class RoleDocument(DocumentKind):
    """Roles are shared across apps: their permissions name ``app.table`` (or ``app.*``)."""

    kind = "role"
    schema = "role"
    storage = db.roles
    parent = None
    right = ADMIN

    def check_refs(self, ctx: DocumentContext, doc: dict[str, Any]) -> None:
        catalog = ctx.catalog
        details: dict[str, list[str]] = {}
        for perm_key, g in (doc.get("permissions") or {}).items():
            app_key, table_key = perm_key.split(".", 1)
            base = ("permissions", perm_key)
            try:
                app = catalog.app(app_key)
            except NotFound:
                details[_pointer(*base)] = [f"no app '{app_key}'"]
                continue
            if table_key == "*":
                for op in ("read", "update", "delete"):
                    if isinstance(g.get(op), dict):
                        details[_pointer(*base, op)] = ["a filter scope needs one table, not '*'"]
                continue
            t = next((x for x in app.tables if x.key == table_key), None)
            if t is None:
                details[_pointer(*base)] = [f"no table '{table_key}' in app '{app_key}'"]
                continue
            for op in ("read", "update", "delete"):
                if isinstance(g.get(op), dict):
                    try:
                        _query_check(ctx, t, g[op], _pointer(*base, op))
                    except ValidationFailed as e:
                        details.update(e.details or {})
            for fkey in (g.get("fields") or {}):
                if fkey not in t.fields_by_key:
                    details[_pointer(*base, "fields", fkey)] = [f"no field '{fkey}' in table '{table_key}'"]
        if details:
            raise ValidationFailed.from_details(details)


class DocumentKindRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, DocumentKind] = {}
        #: bumped by every registration: validation caches its schemas per generation
        self.generation = 0

    def register(self, dk: DocumentKind) -> None:
        if dk.kind in self._kinds:
            raise ValueError(f"document kind {dk.kind!r} is registered twice")
        if dk.right not in RIGHTS or dk.parent not in ("table", "app", None):
            raise ValueError(f"document kind {dk.kind!r}: unknown right or parent")
        self._kinds[dk.kind] = dk
        self.generation += 1

    def get(self, kind: str) -> DocumentKind:
        try:
            return self._kinds[kind]
        except KeyError:
            raise NotFound(f"no document kind '{kind[:40]}'") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    def all(self) -> list[DocumentKind]:
        return list(self._kinds.values())

    def in_apps(self) -> list[DocumentKind]:
        """Kinds that belong to an app or a table: those MetadataService creates, trashes and restores."""
        return [dk for dk in self._kinds.values() if dk.parent is not None]


document_kinds = DocumentKindRegistry()

#: the kinds metadata itself defines; others (automation) are passed to register_document_kinds
BUILT_IN: tuple[type[DocumentKind], ...] = (ViewDocument, DashboardDocument, RoleDocument)


def register_document_kinds(*extra: type[DocumentKind],
                            registry: DocumentKindRegistry = document_kinds) -> DocumentKindRegistry:
    """Called once by create_app() with the kinds other layers define; importing registers nothing."""
    for cls in (*BUILT_IN, *extra):
        if cls.kind not in registry:
            registry.register(cls())
    return registry
