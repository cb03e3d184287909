"""Links between records. A to-one link is an indexed integer column; a to-many link is a junction table.

Every link has a twin on the target table (its reverse), so a customer shows its opportunities and an
opportunity its customer. Internally options hold ids: ``target`` (table id), ``multiple``, ``side``
("forward" holds the storage, "reverse" reads it) and ``pair`` (the twin's field id).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Index, Integer, Table
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from formwork.metadata.fieldtypes.base import (
    LINK_MANY,
    LINK_ONE,
    LINK_OUT,
    FieldType,
    FieldValueError,
    OptionsError,
    QueryContext,
    RecordMatcher,
    WriteContext,
    nullable,
)

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef, TableDef


@dataclass
class Relation:
    """Rows linking this table's records (column ``this``) to the target's (column ``other``).

    ``trash`` is true when the rows are records themselves (a to-one link read backwards), whose
    trashed rows must not count. Callers alias ``table`` so that self-links work.
    """

    table: Table
    this: str
    other: str
    trash: bool


def is_many(f: FieldDef) -> bool:
    return f.options.get("side") == "reverse" or bool(f.options.get("multiple"))


def forward_of(f: FieldDef, catalog: Catalog) -> FieldDef:
    return f if f.options.get("side") != "reverse" else catalog.field_by_id(f.options["pair"])


def relation(f: FieldDef, catalog: Catalog) -> Relation:
    fwd = forward_of(f, catalog)
    if fwd.options.get("multiple"):
        j = catalog.junction(fwd.id)
        if f.id == fwd.id:
            return Relation(j, "src", "dst", False)
        return Relation(j, "dst", "src", False)
    src = catalog.table_by_id(fwd.table_id).sa
    if f.id == fwd.id:  # a to-one link read as a relation (used by rollups): this row → its target
        return Relation(src, "id", fwd.column_name, True)
    return Relation(src, fwd.column_name, "id", True)


def parse_ids(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    out: list[int] = []
    for item in items:
        if isinstance(item, dict) and "id" in item:
            item = item["id"]
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item.strip())
        if isinstance(item, bool) or not isinstance(item, int):
            raise FieldValueError("must be a record id or a list of record ids")
        if item not in out:
            out.append(item)
    return out


class LinkType(FieldType):
    type = "link"
    label: ClassVar[dict[str, str]] = {"en": "Link to another record", "zh-CN": "关联记录"}
    is_link = True
    creation_order = 1
    supports_unique = False
    supports_default = False
    input_kind = "records"
    cell_style = "records"
    options_form = "link"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["table"],
        "properties": {
            "table": {"$ref": "common.json#/$defs/key"},
            "multiple": {"type": "boolean"},
            "reverse_key": {"$ref": "common.json#/$defs/key"},
            "reverse_label": {"$ref": "common.json#/$defs/label"},
            "on_delete": {"enum": ["unlink", "block"]},
        },
    }

    def value_kind(self, f: FieldDef, catalog: Catalog) -> str:
        return LINK_MANY if is_many(f) else LINK_ONE

    def stands_on_live(self, f: FieldDef, live_tables: Container[int], live_fields: Container[int]) -> bool:
        """Its other table, and its twin once it has one."""
        opts = f.options
        return opts.get("target") in live_tables and (not opts.get("pair") or opts["pair"] in live_fields)

    def needs_junction(self, f: FieldDef) -> bool:
        return f.options.get("side") == "forward" and bool(f.options.get("multiple"))

    def stored_as_links(self, f: FieldDef) -> bool:
        return is_many(f)

    def lists_related(self, f: FieldDef) -> bool:
        return f.options.get("side") == "reverse"

    def many_values(self, f: FieldDef, catalog: Catalog) -> bool:
        return is_many(f)

    def embeds_field(self, f: FieldDef, catalog: Catalog) -> FieldDef | None:
        """A to-one link's page column carries the target's display."""
        if is_many(f):
            return None
        return catalog.table_by_id(f.options["target"]).display_field

    def read_expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        """The target's id only while it is live and readable."""
        if is_many(f):
            return self.expression(f, table, ctx)
        from formwork.metadata.query import link_value

        return link_value(f, table, ctx)

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        """Read as {"id", "display"}; written as record ids."""
        if is_many(f):
            return {"type": "array", "items": LINK_OUT if mode == "out" else {"type": "integer"}}
        return nullable(LINK_OUT if mode == "out" else {"type": "integer"})

    def ids_to_check(self, value: Any, f: FieldDef) -> tuple[str | int, set[int]] | None:
        if value is None:
            return None
        try:
            return f.options["target"], set(parse_ids(value))
        except FieldValueError:
            return None  # coercion reports it

    def from_cell(self, value: Any, f: FieldDef, ctx: WriteContext, links: RecordMatcher) -> Any:
        """Cells name linked records by their display (or id)."""
        return links.resolve(f, value)

    def export_text(self, value: Any, f: FieldDef) -> Any:
        return self.to_text(value, f) or None

    def options_to_internal(self, options: dict[str, Any], table: TableDef, catalog: Catalog,
                            field_key: str) -> dict[str, Any]:
        app = catalog.app_by_id(table.app_id)
        target = app.tables_by_key.get(options["table"])
        if target is None:
            raise OptionsError("/options/table", f"no table '{options['table']}' in this app")
        out = {"target": target.id, "multiple": bool(options.get("multiple", False)), "side": "forward"}
        for k in ("reverse_key", "reverse_label", "on_delete"):
            if k in options:
                out[k] = options[k]
        return out

    def options_to_api(self, f: FieldDef, catalog: Catalog) -> dict[str, Any]:
        target = catalog.table_by_id(f.options["target"])
        out: dict[str, Any] = {"table": target.key, "multiple": is_many(f)}
        pair = catalog.fields_by_id.get(f.options.get("pair") or -1)
        if pair is not None:
            out["reverse_key"] = pair.key
        if f.options.get("on_delete"):
            out["on_delete"] = f.options["on_delete"]
        return out

    def column_type(self, f: FieldDef) -> TypeEngine[Any] | None:
        if f.options.get("side") == "reverse" or f.options.get("multiple"):
            return None
        return Integer()

    def indexes(self, f: FieldDef, table: Table) -> list[Index]:
        if self.column_type(f) is None:
            return []
        return [Index(f"ix_{table.name}_{f.column_name}", table.c[f.column_name])]

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == [] or value == "":
            return [] if is_many(f) else None
        ids = parse_ids(value)
        if not is_many(f):
            if len(ids) != 1:
                raise FieldValueError("takes one record id")
        target = ctx.catalog.table_by_id(f.options["target"])
        found = existing_ids(ctx, target, ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise FieldValueError(f"no record with id {', '.join(map(str, missing[:10]))} in {target.key}")
        return ids if is_many(f) else ids[0]

    def to_json(self, value: Any, f: FieldDef) -> Any:
        if value is None:
            return [] if is_many(f) else None
        return value

    def to_text(self, value: Any, f: FieldDef) -> str | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        return ", ".join(str(i.get("display") if isinstance(i, dict) else i) for i in items) or None

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("cannot be converted to a link")


def known_links_key(target_id: int) -> tuple[str, int]:
    """Where a batch writer leaves (ids checked, ids found) of a target table in ``ctx.cache``."""
    return ("link_known", target_id)


WRITER_SCOPE = "writer_read_scope"


def set_writer_scope(ctx: WriteContext, scope: Callable[[TableDef, Any], Any]) -> WriteContext:
    """Record the writer's read scope (``scope(table, alias)`` → a condition, or None for every row):
    links and attachments may only point at what the writer can see."""
    ctx.cache[WRITER_SCOPE] = scope
    return ctx


def writer_scope(ctx: WriteContext, target: TableDef, alias: Any) -> Any:
    """The writer's read scope on ``target`` (None: every row); a context without a writer is the system."""
    scope = ctx.cache.get(WRITER_SCOPE)
    return scope(target, alias) if scope is not None else None


def existing_ids(ctx: WriteContext, target: TableDef, ids: list[int]) -> set[int]:
    """The ids among ``ids`` of live records of ``target`` the writer can read; a record outside the
    writer's scope counts as missing, so a link can neither reach it nor tell that it exists."""
    from sqlalchemy import select

    known = ctx.cache.get(known_links_key(target.id))
    if known is not None and known[0].issuperset(ids):
        return known[1].intersection(ids)
    from sqlalchemy import bindparam

    t = target.sa
    ids = [i for i in ids if 0 < i <= 2**62]
    if not ids:
        return set()
    scope = writer_scope(ctx, target, t)
    if scope is None:  # one statement per table and schema version (its cache key is worked out once)
        q = ctx.catalog.cached(("existing_ids", target), lambda: select(t.c.id).where(
            t.c.id.in_(bindparam("ids", expanding=True)), t.c.deleted_at.is_(None)))
        return {r[0] for r in ctx.conn.execute(q, {"ids": ids})}
    q = select(t.c.id).where(t.c.id.in_(ids), t.c.deleted_at.is_(None), scope)
    return {r[0] for r in ctx.conn.execute(q)}
