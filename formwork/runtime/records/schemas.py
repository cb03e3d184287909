"""Marshmallow schemas generated from a table's definition, cached per schema version.

The output schema turns the raw SQL values a page selects into their JSON form; the input schema
coerces a write's JSON values through each field's type. Marshmallow stays inside this module: the
writer gets plain values and error details from :func:`load_input`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

import marshmallow as ma

from formwork.metadata.catalog import Catalog, FieldDef, TableDef
from formwork.metadata.fieldtypes.base import FieldValueError, WriteContext
from formwork.runtime.records.cache import catalog_cache

# the write context of the load in progress: marshmallow fields are built once per schema version, so
# the per-write context reaches them through this variable
_write_ctx: contextvars.ContextVar[WriteContext] = contextvars.ContextVar("formwork_write_ctx")


class _ValueField(ma.fields.Field):
    """Input: coerced by the field type; output: the type's JSON form."""

    def __init__(self, fdef: FieldDef, serialize: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.fdef = fdef
        self.to_json = serialize

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kw: Any) -> Any:
        return self.to_json(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Any:
        f = self.fdef
        if f.ftype.read_only:
            raise ma.ValidationError("is read-only")
        try:
            return f.ftype.coerce(value, f, _write_ctx.get())
        except FieldValueError as e:
            raise ma.ValidationError(e.message) from None


def serializer(f: FieldDef, catalog: Catalog) -> Any:
    """A function from the raw SQL value (as the reader selects it) to the JSON value."""
    return f.ftype.serializer(f, catalog)


def output_schema(table: TableDef, catalog: Catalog, picked: Sequence[FieldDef] | None = None) -> ma.Schema:
    """The dumping schema of a table, or of just the picked fields (a page dumps only what it selects)."""
    chosen = list(table.fields) if picked is None else list(picked)
    ids = tuple(f.id for f in chosen) if picked is not None else None

    def build() -> ma.Schema:
        attrs: dict[str, ma.fields.Field[Any]] = {
            f.key: _ValueField(f, serializer(f, catalog), data_key=f.key) for f in chosen}
        cls = ma.Schema.from_dict(attrs, name=f"Out{table.id}")
        return cls()

    if ids is None:
        return catalog.cached(("out_schema", table.id), build)
    return catalog_cache(catalog, "out_schemas").get_or_build((table, ids), build)


def input_schema(table: TableDef, catalog: Catalog) -> ma.Schema:
    """The loading schema of a table: every field, nulls allowed, unknown keys refused."""
    def build() -> ma.Schema:
        attrs: dict[str, ma.fields.Field[Any]] = {
            f.key: _ValueField(f, serializer(f, catalog), data_key=f.key, allow_none=True) for f in table.fields}
        cls = ma.Schema.from_dict(attrs, name=f"In{table.id}")
        return cls(unknown=ma.RAISE)

    return catalog.cached(("in_schema", table.id), build)


def load_input(table: TableDef, catalog: Catalog, data: dict[str, Any],
               ctx: WriteContext) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Coerce the given fields of a write: the values that loaded, and error messages by field key."""
    token = _write_ctx.set(ctx)
    try:
        return input_schema(table, catalog).load(data, partial=True), {}
    except ma.ValidationError as e:
        return dict(e.valid_data or {}), _error_details(e)
    finally:
        _write_ctx.reset(token)


def _error_details(err: ma.ValidationError) -> dict[str, list[str]]:
    msgs = err.messages if isinstance(err.messages, dict) else {"": err.messages}
    out: dict[str, list[str]] = {}
    for k, v in msgs.items():
        items = v if isinstance(v, list) else [str(v)]
        out[str(k)] = ["is not a field of this table" if m == "Unknown field." else str(m) for m in items]
    return out
