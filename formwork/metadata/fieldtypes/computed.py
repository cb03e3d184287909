"""Computed field types evaluated in SQL: lookup, rollup and formula.

They have no column: ``expression`` builds an SQL expression (a correlated subquery or a compiled
formula), so they can be filtered, sorted and aggregated like stored fields, with no per-row queries.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Float, Text, and_, cast, func, literal, null, select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from formwork.metadata.fieldtypes.base import (
    BOOL,
    DATE,
    DATETIME,
    FILES,
    FORMULA_TYPE_BY_KIND,
    LINK_MANY,
    MULTI,
    NUMBER,
    TEXT,
    FieldType,
    FieldValueError,
    OptionsError,
    QueryContext,
    WriteContext,
)
from formwork.metadata.fieldtypes.link import is_many, relation
from formwork.metadata.fieldtypes.numeric import json_number
from formwork.metadata.fieldtypes.temporal import iso_utc

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef, TableDef

MAX_DEPTH = 6
KIND_BY_FORMULA_TYPE = {"number": NUMBER, "text": TEXT, "boolean": BOOL, "date": DATE, "datetime": DATETIME}


def _depth_guard(ctx: QueryContext) -> QueryContext:
    if ctx.depth >= MAX_DEPTH:
        raise FieldValueError("computed fields are nested too deeply")
    from dataclasses import replace

    return replace(ctx, depth=ctx.depth + 1)


def json_for_kind(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == NUMBER:
        return json_number(value)
    if kind == BOOL:
        return bool(value)
    if kind == DATE:
        return value[:10] if isinstance(value, str) else value.isoformat()
    if kind == DATETIME:
        return iso_utc(value)
    return value


class _ReadOnly(FieldType):
    read_only = True
    computed = True
    supports_unique = False
    supports_default = False
    input_kind = None

    def column_type(self, f: FieldDef) -> TypeEngine[Any] | None:
        return None

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("is read-only")

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("is computed")

    def options_affect_data(self, old: FieldDef, new: FieldDef) -> bool:
        """Nothing is stored: a new precision or format only changes how values are shown."""
        return False


def _link_in_table(options: dict[str, Any], table: TableDef, pointer: str) -> FieldDef:
    link = table.fields_by_key.get(options.get("link", ""))
    if link is None:
        raise OptionsError(pointer, f"no field '{options.get('link')}' in this table")
    if not link.ftype.is_link:
        raise OptionsError(pointer, f"'{link.key}' is not a link field")
    return link


def _target_field(options: dict[str, Any], link: FieldDef, catalog: Catalog) -> FieldDef:
    target = catalog.table_by_id(link.options["target"])
    tf = target.fields_by_key.get(options.get("field", ""))
    if tf is None:
        raise OptionsError("/options/field", f"no field '{options.get('field')}' in table '{target.key}'")
    return tf


def _through_link_live(f: FieldDef, live_fields: Container[int]) -> bool:
    """A lookup or rollup stands on its link and the field it reads."""
    return all(f.options.get(k) in live_fields for k in ("link", "field") if f.options.get(k) is not None)


class LookupType(_ReadOnly):
    type = "lookup"
    label: ClassVar[dict[str, str]] = {"en": "Lookup", "zh-CN": "引用字段"}
    creation_order = 2
    options_form = "lookup"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["link", "field"],
        "properties": {"link": {"$ref": "common.json#/$defs/key"}, "field": {"$ref": "common.json#/$defs/key"}},
    }

    def options_to_internal(self, options: dict[str, Any], table: TableDef, catalog: Catalog,
                            field_key: str) -> dict[str, Any]:
        link = _link_in_table(options, table, "/options/link")
        tf = _target_field(options, link, catalog)
        if tf.ftype.value_kind(tf, catalog) in (LINK_MANY, MULTI, FILES) and is_many(link):
            raise OptionsError("/options/field", "a lookup through a to-many link must show a single-value field")
        return {"link": link.id, "field": tf.id}

    def options_to_api(self, f: FieldDef, catalog: Catalog) -> dict[str, Any]:
        return {"link": catalog.field_by_id(f.options["link"]).key,
                "field": catalog.field_by_id(f.options["field"]).key}

    def dependencies(self, f: FieldDef, catalog: Catalog) -> set[int]:
        return {f.options["link"], f.options["field"]}

    def parts(self, f: FieldDef, catalog: Catalog) -> tuple[FieldDef, FieldDef, TableDef]:
        link = catalog.field_by_id(f.options["link"])
        tf = catalog.field_by_id(f.options["field"])
        return link, tf, catalog.table_by_id(tf.table_id)

    def many(self, f: FieldDef, catalog: Catalog) -> bool:
        return is_many(catalog.field_by_id(f.options["link"]))

    def is_many_lookup(self, f: FieldDef, catalog: Catalog) -> bool:
        return self.many(f, catalog)

    def many_values(self, f: FieldDef, catalog: Catalog) -> bool:
        return self.many(f, catalog)

    def looked_up_through(self, f: FieldDef, catalog: Catalog) -> tuple[FieldDef, FieldDef] | None:
        link, tf, _target = self.parts(f, catalog)
        return link, tf

    def embeds_field(self, f: FieldDef, catalog: Catalog) -> FieldDef | None:
        return catalog.field_by_id(f.options["field"]) if f.options.get("field") else None

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        """The shown field's values (read-only), a list of them through a to-many link."""
        link, tf, _target = self.parts(f, catalog)
        inner = tf.ftype.value_schema(tf, catalog, "out")
        return {"type": "array", "items": inner} if is_many(link) else inner

    def serializer(self, f: FieldDef, catalog: Catalog) -> Callable[[Any], Any]:
        """The shown field's JSON form, per linked record through a to-many link."""
        link, tf, _target = self.parts(f, catalog)
        inner = tf.ftype.serializer(tf, catalog)
        if is_many(link):
            return lambda v: [inner(x) for x in (v or [])]
        return inner

    def shown_field(self, f: FieldDef, catalog: Catalog) -> FieldDef | None:
        return self.parts(f, catalog)[1]

    def stands_on_live(self, f: FieldDef, live_tables: Container[int], live_fields: Container[int]) -> bool:
        return _through_link_live(f, live_fields)

    def value_kind(self, f: FieldDef, catalog: Catalog) -> str:
        _, tf, _ = self.parts(f, catalog)
        return tf.ftype.value_kind(tf, catalog)

    def sortable(self, f: FieldDef, catalog: Catalog) -> bool:
        _, tf, _ = self.parts(f, catalog)
        return not self.many(f, catalog) and tf.ftype.sortable(tf, catalog)

    def expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        inner_ctx = _depth_guard(ctx)
        link, tf, target = self.parts(f, ctx.catalog)
        ta = target.sa.alias()
        value = tf.ftype.expression(tf, ta, inner_ctx)
        conds: list[ColumnElement[bool]] = [ta.c.deleted_at.is_(None)]
        scope = ctx.row_scope(target, ta) if ctx.row_scope else None
        if scope is not None:
            conds.append(scope)
        if not is_many(link):
            return select(value).where(ta.c.id == table.c[link.column_name], *conds).scalar_subquery()
        # to-many: one text value joining the linked values, for formulas and search
        rel = relation(link, ctx.catalog)
        ra = rel.table.alias()
        if rel.trash:
            conds.append(ra.c.deleted_at.is_(None))
        sep = literal(", ")
        agg = (func.group_concat(value, sep) if ctx.dialect == "sqlite"
               else func.string_agg(cast(value, Text()), sep))
        return (select(agg).select_from(ra.join(ta, ta.c.id == ra.c[rel.other]))
                .where(ra.c[rel.this] == table.c.id, *conds).scalar_subquery())

    def to_json(self, value: Any, f: FieldDef) -> Any:
        return value


ROLLUP_FUNCTIONS = ("sum", "count", "avg", "min", "max", "count_distinct")


class RollupType(_ReadOnly):
    type = "rollup"
    label: ClassVar[dict[str, str]] = {"en": "Rollup", "zh-CN": "汇总"}
    creation_order = 2
    options_form = "rollup"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["link", "function"],
        "properties": {"link": {"$ref": "common.json#/$defs/key"}, "field": {"$ref": "common.json#/$defs/key"},
                       "function": {"enum": list(ROLLUP_FUNCTIONS)},
                       "filter": {"$ref": "common.json#/$defs/filter"},
                       "precision": {"type": "integer", "minimum": 0, "maximum": 10}},
    }

    def options_to_internal(self, options: dict[str, Any], table: TableDef, catalog: Catalog,
                            field_key: str) -> dict[str, Any]:
        link = _link_in_table(options, table, "/options/link")
        fn = options["function"]
        out: dict[str, Any] = {"link": link.id, "function": fn}
        if fn != "count" or options.get("field"):
            tf = _target_field(options, link, catalog)
            kind = tf.ftype.value_kind(tf, catalog)
            if fn in ("sum", "avg") and kind != NUMBER:
                raise OptionsError("/options/field", f"{fn} needs a number field; '{tf.key}' is not one")
            if fn in ("min", "max") and kind not in (NUMBER, DATE, DATETIME):
                raise OptionsError("/options/field", f"{fn} needs a number or date field")
            out["field"] = tf.id
        if "filter" in options:
            out["filter"] = options["filter"]
        if "precision" in options:
            out["precision"] = options["precision"]
        return out

    def options_to_api(self, f: FieldDef, catalog: Catalog) -> dict[str, Any]:
        out: dict[str, Any] = {"link": catalog.field_by_id(f.options["link"]).key,
                               "function": f.options["function"]}
        if f.options.get("field"):
            out["field"] = catalog.field_by_id(f.options["field"]).key
        for k in ("filter", "precision"):
            if k in f.options:
                out[k] = f.options[k]
        return out

    def dependencies(self, f: FieldDef, catalog: Catalog) -> set[int]:
        return {f.options["link"]} | ({f.options["field"]} if f.options.get("field") else set())

    def shown_field(self, f: FieldDef, catalog: Catalog) -> FieldDef | None:
        """A min or max shows values of the field it reads (its choices, prefix, ...); other functions count."""
        if f.options.get("function") in ("min", "max") and f.options.get("field"):
            return catalog.field_by_id(f.options["field"])
        return None

    def display_style(self, f: FieldDef, catalog: Catalog, _depth: int = 0) -> tuple[str, dict[str, Any]]:
        """A sum, average, min or max of money is money in the same currency (percentages likewise); the
        rollup's own precision wins over the field's."""
        target = catalog.fields_by_id.get(f.options.get("field", -1))
        if f.options.get("function") not in ("sum", "avg", "min", "max") or target is None or _depth > 8:
            return self.cell_style, f.options
        style, opts = target.ftype.display_style(target, catalog, _depth + 1)
        if style not in ("currency", "percent"):
            return self.cell_style, f.options
        return style, {**opts, **({"precision": f.options["precision"]} if "precision" in f.options else {})}

    def stands_on_live(self, f: FieldDef, live_tables: Container[int], live_fields: Container[int]) -> bool:
        return _through_link_live(f, live_fields)

    def varies_by_reader(self, f: FieldDef) -> bool:
        """A filter may use relative dates or "me"."""
        return bool(f.options.get("filter"))

    def embeds_field(self, f: FieldDef, catalog: Catalog) -> FieldDef | None:
        return catalog.field_by_id(f.options["field"]) if f.options.get("field") else None

    def serializer(self, f: FieldDef, catalog: Catalog) -> Callable[[Any], Any]:
        """min/max of dates come back from SQL as text or dates, whatever the field read."""
        kind = self.value_kind(f, catalog)
        if kind in (DATE, DATETIME):
            return lambda v: json_for_kind(kind, v)
        return lambda v: self.to_json(v, f)

    def value_kind(self, f: FieldDef, catalog: Catalog) -> str:
        if f.options["function"] in ("min", "max"):
            tf = catalog.field_by_id(f.options["field"])
            return tf.ftype.value_kind(tf, catalog)
        return NUMBER

    def expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        inner_ctx = _depth_guard(ctx)
        cat = ctx.catalog
        link = cat.field_by_id(f.options["link"])
        target = cat.table_by_id(link.options["target"])
        rel = relation(link, cat)
        ra = rel.table.alias()
        ta = target.sa.alias()
        conds: list[ColumnElement[bool]] = [ra.c[rel.this] == table.c.id, ta.c.deleted_at.is_(None)]
        if rel.trash and rel.table is not target.sa:
            conds.append(ra.c.deleted_at.is_(None))
        scope = ctx.row_scope(target, ta) if ctx.row_scope else None
        if scope is not None:
            conds.append(scope)
        if f.options.get("filter"):
            from formwork.metadata.query import FilterCompiler

            conds.append(FilterCompiler(target, inner_ctx, ta).compile(f.options["filter"]))
        fn = f.options["function"]
        if f.options.get("field"):
            tf = cat.field_by_id(f.options["field"])
            value = tf.ftype.expression(tf, ta, inner_ctx)
        else:
            value = ta.c.id
        if fn == "count":
            agg: ColumnElement[Any] = func.count(value if f.options.get("field") else ta.c.id)
        elif fn == "count_distinct":
            agg = func.count(value.distinct())
        elif fn == "sum":
            agg = func.coalesce(func.sum(value), 0)
        elif fn == "avg":
            agg = func.avg(cast(value, Float) if ctx.dialect == "sqlite" else value)
        else:
            agg = getattr(func, fn)(value)
        src = ra.join(ta, ta.c.id == ra.c[rel.other]) if rel.table is not target.sa or rel.other != "id" \
            else ta
        if src is ta:
            conds[0] = ta.c[rel.this] == table.c.id
        return select(agg).select_from(src).where(and_(*conds)).scalar_subquery()

    def to_json(self, value: Any, f: FieldDef) -> Any:
        if value is None:
            return None
        if f.options["function"] in ("min", "max"):
            return value if not hasattr(value, "isoformat") else value.isoformat()
        n = json_number(value)
        p = f.options.get("precision")
        if p is not None and isinstance(n, float):
            return round(n, int(p))
        return n


class FormulaType(_ReadOnly):
    type = "formula"
    label: ClassVar[dict[str, str]] = {"en": "Formula", "zh-CN": "公式"}
    creation_order = 3
    cycle_pointer = "/options/formula"
    options_form = "formula"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["formula"],
        "properties": {"formula": {"type": "string", "minLength": 1, "maxLength": 10000},
                       "precision": {"type": "integer", "minimum": 0, "maximum": 10},
                       "format": {"enum": ["number", "currency", "percent", "text", "date"]},
                       "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    }

    def options_to_internal(self, options: dict[str, Any], table: TableDef, catalog: Catalog,
                            field_key: str) -> dict[str, Any]:
        from formwork.metadata import formula as fl

        try:
            node = fl.parse(options["formula"])
        except fl.FormulaError as e:
            raise OptionsError("/options/formula", str(e)) from None
        refs = fl.references(node)
        for ref in refs:
            if ref == field_key:
                raise OptionsError("/options/formula", f"the formula refers to itself ({{{ref}}})")
            if ref not in table.fields_by_key:
                raise OptionsError("/options/formula", f"unknown field {{{ref}}}")
        return dict(options)

    def references(self, f: FieldDef, catalog: Catalog) -> set[str]:
        from formwork.metadata import formula as fl

        return fl.references(catalog.parsed_formula(f))

    def dependencies(self, f: FieldDef, catalog: Catalog) -> set[int]:
        table = catalog.table_by_id(f.table_id)
        return {table.fields_by_key[k].id for k in self.references(f, catalog) if k in table.fields_by_key}

    def cycle_edges(self, f: FieldDef, catalog: Catalog) -> set[int]:
        """Parsed from ``f``'s own text (the catalog's parse is of the saved formula); ``f`` resolves by its key."""
        from formwork.metadata import formula as fl

        table = catalog.tables_by_id.get(f.table_id)
        fields = dict(table.fields_by_key) if table else {}
        fields[f.key] = f
        return {fields[k].id for k in fl.references(fl.parse(f.options["formula"])) if k in fields}

    def options_after_rename(self, f: FieldDef, old: str, new: str) -> dict[str, Any] | None:
        from formwork.metadata import formula as fl

        text = f.options.get("formula", "")
        if "{" + old + "}" not in text:
            return None
        return {**f.options, "formula": fl.rename_reference(text, old, new)}

    def compile(self, f: FieldDef, table: Any, ctx: QueryContext) -> tuple[ColumnElement[Any], str]:
        from formwork.metadata import formula as fl

        inner_ctx = _depth_guard(ctx)
        tdef = ctx.catalog.table_by_id(f.table_id)

        def resolve(key: str) -> tuple[ColumnElement[Any], str]:
            ref = tdef.fields_by_key.get(key)
            if ref is None:
                raise fl.FormulaError(f"unknown field {{{key}}}")
            if isinstance(ref.ftype, FormulaType):
                return ref.ftype.compile(ref, table, inner_ctx)
            kind = ref.ftype.value_kind(ref, ctx.catalog)
            ftype = FORMULA_TYPE_BY_KIND.get(kind)
            if ftype is None or ref.ftype.is_many_lookup(ref, ctx.catalog):
                if ref.ftype.looked_up_through(ref, ctx.catalog) is not None:  # joined as text
                    return ref.ftype.expression(ref, table, inner_ctx), "text"
                raise fl.FormulaError(f"{{{key}}} ({ref.type}) cannot be used in a formula")
            return ref.ftype.expression(ref, table, inner_ctx), ftype

        return fl.compile_formula(ctx.catalog.parsed_formula(f), resolve, ctx.dialect, ctx.today, ctx.now)

    def result_type(self, f: FieldDef, catalog: Catalog) -> str:
        return catalog.formula_result_type(f)

    def display_style(self, f: FieldDef, catalog: Catalog, _depth: int = 0) -> tuple[str, dict[str, Any]]:
        """The builder's chosen format; without one, a number computed from money is money: the currency of
        the first amount it reads ({单价} * {数量} shows ¥ like 单价)."""
        fmt = f.options.get("format")
        if fmt in ("currency", "percent"):
            return fmt, f.options
        if fmt is not None or _depth > 8 or self.value_kind(f, catalog) != NUMBER:
            return self.cell_style, f.options
        table = catalog.tables_by_id.get(f.table_id)
        for key in sorted(self.references(f, catalog)):
            ref = table.fields_by_key.get(key) if table is not None else None
            if ref is None or ref.id == f.id:
                continue
            style, opts = ref.ftype.display_style(ref, catalog, _depth + 1)
            if style == "currency":
                return style, {"currency": opts.get("currency"),
                               "precision": f.options.get("precision", opts.get("precision"))}
        return self.cell_style, f.options

    def varies_by_reader(self, f: FieldDef) -> bool:
        """NOW() and TODAY() are bound when the query is built."""
        return True

    def serializer(self, f: FieldDef, catalog: Catalog) -> Callable[[Any], Any]:
        kind = self.value_kind(f, catalog)

        def cell(v: Any) -> Any:
            """A value the database computed but JSON can't carry (an overflow) is an empty cell, not a 500."""
            try:
                return json_for_kind(kind, v)
            except (ArithmeticError, ValueError):
                return None

        return cell

    def value_kind(self, f: FieldDef, catalog: Catalog) -> str:
        return KIND_BY_FORMULA_TYPE[self.result_type(f, catalog)]

    def expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        from formwork.metadata import formula as fl

        try:
            return self.compile(f, table, ctx)[0]
        except (FieldValueError, fl.FormulaError):  # a formula that can't compile reads empty, the list still loads
            return cast(null(), Text())  # typed: PostgreSQL refuses ORDER BY NULL

    def to_json(self, value: Any, f: FieldDef) -> Any:
        return value
