"""The field-type contract and its registry.

Each field type is one small class with a unique ``type`` string. It declares its options schema, the
SQL column it needs (or none, for computed types), how input values are coerced and validated, how stored
values are shown as JSON, which filter operators it supports and how other types convert to it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy import Column, Index, Table
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef, TableDef


class FieldValueError(ValueError):
    """A value that the field cannot hold; the message is shown to the user next to the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OptionsError(ValueError):
    """Options that are well-formed JSON but make no sense (e.g. a link to a missing table)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message


@dataclass
class WriteContext:
    """What coercion may need besides the value: who writes, where, and a cache for look-ups."""

    catalog: Catalog
    conn: Any
    user_id: int | None
    lenient: bool = False  # conversions and imports: "10 万" style text is parsed leniently where possible
    cache: dict[Any, Any] = field(default_factory=dict)


@dataclass
class QueryContext:
    """Everything an expression or a filter needs at query time."""

    catalog: Catalog
    dialect: str
    user_id: int | None = None
    timezone: str = "UTC"
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
    # row scope of the reader on another table (given an alias of it), applied to link displays,
    # lookups and rollups so that values from records the reader can't see are not shown
    row_scope: Callable[[TableDef, Any], ColumnElement[bool] | None] | None = None
    depth: int = 0

    @property
    def today(self) -> dt.date:
        from zoneinfo import ZoneInfo

        return self.now.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(self.timezone)).date()


# value kinds drive the filter compiler and formula typing
TEXT, NUMBER, DATE, DATETIME, BOOL, SELECT, MULTI, USER, LINK_ONE, LINK_MANY, FILES = (
    "text", "number", "date", "datetime", "bool", "select", "multi", "user", "link_one", "link_many", "files",
)

OPERATORS_BY_KIND: dict[str, tuple[str, ...]] = {
    TEXT: ("eq", "ne", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with", "is_empty",
           "is_not_empty"),
    NUMBER: ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "is_empty", "is_not_empty"),
    DATE: ("eq", "ne", "lt", "lte", "gt", "gte", "between", "is_empty", "is_not_empty"),
    DATETIME: ("eq", "ne", "lt", "lte", "gt", "gte", "between", "is_empty", "is_not_empty"),
    BOOL: ("eq", "ne"),
    SELECT: ("eq", "ne", "in", "not_in", "is_empty", "is_not_empty"),
    MULTI: ("has_any", "has_all", "has_none", "eq", "is_empty", "is_not_empty"),
    USER: ("eq", "ne", "in", "not_in", "is_empty", "is_not_empty"),
    LINK_ONE: ("eq", "ne", "in", "not_in", "is_empty", "is_not_empty"),
    LINK_MANY: ("has_any", "has_all", "has_none", "is_empty", "is_not_empty"),
    FILES: ("is_empty", "is_not_empty"),
}

#: the UI vocabularies a type picks from (see ``input_kind``, ``cell_style``, ``options_form``)
INPUT_KINDS = ("text", "textarea", "email", "url", "tel", "number", "date", "datetime", "checkbox", "select",
               "checks", "users", "records")
CELL_STYLES = ("text", "url", "email", "number", "currency", "percent", "rating", "duration", "date", "datetime",
               "check", "choices", "users", "records", "files")
OPTIONS_FORMS = ("choices", "link", "lookup", "rollup", "formula", "number", "currency", "rating", "autonumber",
                 "user")

#: what :meth:`FieldType.ids_to_check` names when an input refers to users (else a target table's id)
USERS = "users"

_CELL_SPLIT = re.compile(r"[,，;；]")


def cell_parts(value: Any) -> list[Any]:
    """A spreadsheet cell holding several items ("a, b；c") as its items; any other value as itself."""
    if isinstance(value, str):
        return [p.strip() for p in _CELL_SPLIT.split(value) if p.strip()]
    return [value]


def json_text(value: Any) -> str:
    """A JSON value as the text a person reads: a record's display, a user's name, lists joined by commas."""
    if isinstance(value, dict):
        return str(value.get("display") or value.get("name") or value.get("id") or "")
    if isinstance(value, list):
        return ", ".join(t for t in (json_text(v) for v in value) if t)
    return str(value)


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema that also accepts null."""
    t = schema.get("type")
    if isinstance(t, str):
        return {**schema, "type": [t, "null"]}
    if isinstance(t, list):
        return schema if "null" in t else {**schema, "type": [*t, "null"]}
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {"anyOf": [schema, {"type": "null"}]}


#: JSON Schemas of the values the reader returns: a user, a linked record, an attached file
USER_OUT: dict[str, Any] = {"type": "object", "required": ["id", "name"],
                            "properties": {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}}}
LINK_OUT: dict[str, Any] = {"type": "object", "required": ["id", "display"],
                            "properties": {"id": {"type": "integer"}, "display": {"type": "string"}}}
FILE_OUT: dict[str, Any] = {"type": "object", "required": ["token", "name", "size", "mime", "url"],
                            "properties": {"token": {"type": "string"}, "name": {"type": "string"},
                                           "size": {"type": "integer"}, "mime": {"type": "string"},
                                           "url": {"type": "string"}}}
KIND_SCHEMA: dict[str, dict[str, Any]] = {
    NUMBER: {"type": "number"}, BOOL: {"type": "boolean"}, DATE: {"type": "string", "format": "date"},
    DATETIME: {"type": "string", "format": "date-time"},
}


class RecordMatcher(Protocol):
    """What an import gives :meth:`FieldType.from_cell` to find linked records by their display text."""

    def resolve(self, f: FieldDef, value: Any) -> int | list[int]: ...


FORMULA_TYPE_BY_KIND = {TEXT: "text", NUMBER: "number", DATE: "date", DATETIME: "datetime", BOOL: "boolean",
                        SELECT: "text", USER: "number", LINK_ONE: "number"}


class FieldType:
    type: ClassVar[str]
    label: ClassVar[dict[str, str]]
    kind: ClassVar[str] = TEXT
    read_only: ClassVar[bool] = False
    #: no physical column: the value is an SQL expression over other columns or tables
    computed: ClassVar[bool] = False
    #: searched by ``search=``
    searchable: ClassVar[bool] = False
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False,
                                                "properties": {}}
    #: SQL columns of these types can hold this type's values without conversion
    supports_unique: ClassVar[bool] = True
    supports_default: ClassVar[bool] = True

    # What the platform asks of a type instead of checking its name (a new type is one class).
    #: a link between records: it has a twin on the other table and is never converted to or from
    is_link: ClassVar[bool] = False
    #: holds user ids: "me" applies in filters, values sort and display by the user's name
    holds_users: ClassVar[bool] = False
    #: values are picked from ``options.choices``, whose order is the sort order
    has_choices: ClassVar[bool] = False
    #: values come from a per-field counter: a counter row is kept and existing records are numbered
    uses_counter: ClassVar[bool] = False
    #: a search for digits matches this field's number exactly
    number_searchable: ClassVar[bool] = False
    #: input text loses surrounding whitespace (so an SQL copy must check the text is already trimmed)
    strips_whitespace: ClassVar[bool] = False
    #: order of creation within one table document: 0 plain fields, then what reads them
    creation_order: ClassVar[int] = 0
    #: the JSON pointer a circular reference through this field is reported at
    cycle_pointer: ClassVar[str] = "/options"

    # How the UI shows and edits the type: names the pages know, so a new type picks one instead of
    # teaching every page its name.
    #: the form input, one of INPUT_KINDS ("select": one choice, "checks": several); None: no form input
    input_kind: ClassVar[str | None] = "text"
    #: how a grid cell shows a value, one of CELL_STYLES (a computed value without one is shown by its kind)
    cell_style: ClassVar[str] = "text"
    #: the builder's options editor, one of OPTIONS_FORMS; None: no options to edit there
    options_form: ClassVar[str | None] = None

    # --- metadata -------------------------------------------------------------------------------
    def operators(self, f: FieldDef, catalog: Catalog) -> tuple[str, ...]:
        return OPERATORS_BY_KIND[self.value_kind(f, catalog)]

    def value_kind(self, f: FieldDef, catalog: Catalog) -> str:
        return self.kind

    def options_to_internal(self, options: dict[str, Any], table: TableDef, catalog: Catalog,
                            field_key: str) -> dict[str, Any]:
        """Check cross-references (other tables and fields) and store them by id, not key."""
        return dict(options)

    def options_to_api(self, f: FieldDef, catalog: Catalog) -> dict[str, Any]:
        return dict(f.options)

    def dependencies(self, f: FieldDef, catalog: Catalog) -> set[int]:
        """Ids of fields whose deletion or type change would break this one."""
        return set()

    def cycle_edges(self, f: FieldDef, catalog: Catalog) -> set[int]:
        """Ids of the fields this one reads, for the circular-reference check; ``f`` may be a field being
        created or changed, so it is read from ``f`` itself, not from the catalog."""
        return self.dependencies(f, catalog)

    def options_after_rename(self, f: FieldDef, old: str, new: str) -> dict[str, Any] | None:
        """The options once a field of the same table is renamed from ``old`` to ``new`` (None: unchanged)."""
        return None

    def stands_on_live(self, f: FieldDef, live_tables: Container[int], live_fields: Container[int]) -> bool:
        """Whether every table and field this one stands on is live (not in the trash)."""
        return True

    def shown_field(self, f: FieldDef, catalog: Catalog) -> FieldDef | None:
        """The field whose values this one shows (a lookup's target, a min/max rollup's field), or None."""
        return None

    def display_style(self, f: FieldDef, catalog: Catalog, _depth: int = 0) -> tuple[str, dict[str, Any]]:
        """How pages show this field's values: a cell style and the options it reads (currency code,
        precision, ...). Computed numbers take their source's (a sum of amounts in yuan shows ¥)."""
        return self.cell_style, f.options

    def is_many_lookup(self, f: FieldDef, catalog: Catalog) -> bool:
        """Whether this shows one value per record of a to-many link (a list, filtered per element)."""
        return False

    def can_own_records(self, f: FieldDef) -> bool:
        """Whether this field can name a record's owner (a single, assignable user)."""
        return False

    def needs_junction(self, f: FieldDef) -> bool:
        """Whether this field's values live in a junction table of their own."""
        return False

    def options_affect_data(self, old: FieldDef, new: FieldDef) -> bool:
        """Whether changing ``old``'s options to ``new``'s (same type) may invalidate stored values."""
        keys = ("min", "max", "precision", "max_length", "regex", "multiple", "max_size", "mime_types")
        return any(old.options.get(k) != new.options.get(k) for k in keys)

    def lists_related(self, f: FieldDef) -> bool:
        """Whether the values are set from the other table (a link's reverse side): the record page lists
        them as related records and forms leave the field out."""
        return False

    def looked_up_through(self, f: FieldDef, catalog: Catalog) -> tuple[FieldDef, FieldDef] | None:
        """The link this field reads through and the field whose values it shows on the other side
        (a lookup); None when the field holds or computes its own values."""
        return None

    # --- storage --------------------------------------------------------------------------------
    def column_type(self, f: FieldDef) -> TypeEngine[Any] | None:
        raise NotImplementedError

    def columns(self, f: FieldDef) -> list[Column[Any]]:
        ct = self.column_type(f)
        if ct is None:
            return []
        return [Column(f.column_name, ct, nullable=True)]

    def indexes(self, f: FieldDef, table: Table) -> list[Index]:
        """Indexes this field needs on ``table`` (created bound to it)."""
        return []

    # --- values ---------------------------------------------------------------------------------
    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        """Turn API input into the stored value, or raise FieldValueError."""
        raise NotImplementedError

    def to_json(self, value: Any, f: FieldDef) -> Any:
        return value

    def to_text(self, value: Any, f: FieldDef) -> str | None:
        """The JSON value as plain text: used by conversions, exports and search."""
        if value is None:
            return None
        return str(value)

    def is_empty(self, value: Any) -> bool:
        return value is None or value == "" or value == []

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        """Convert a value of another field type into this one; raise FieldValueError when it can't."""
        if json_value is None:
            return None
        text = source.ftype.to_text(json_value, source)
        if text is None or text == "":
            return None
        return self.coerce(text, f, ctx)

    def ids_to_check(self, value: Any, f: FieldDef) -> tuple[str | int, set[int]] | None:
        """Ids an input value refers to, so a batch write checks them all in one query before coercing:
        ``(USERS, ids)`` for users, ``(target table id, ids)`` for records; None when it refers to none."""
        return None

    def stored_as_links(self, f: FieldDef) -> bool:
        """Whether values are rows of a relation (a junction, or the other table's column), written by
        the link writer rather than into a column of this table."""
        return False

    def from_cell(self, value: Any, f: FieldDef, ctx: WriteContext, links: RecordMatcher) -> Any:
        """A non-empty spreadsheet cell → the stored value (``ctx`` is lenient), or FieldValueError."""
        return self.coerce(value, f, ctx)

    def export_text(self, value: Any, f: FieldDef) -> Any:
        """A non-empty JSON value that is not a plain number or boolean as an export cell: text a person
        reads and an import reads back to the same value."""
        return json_text(value)

    def sql_text_form(self, f: FieldDef) -> str | None:
        """How SQL turns a stored value into exactly the text ``to_text`` gives, for set-based conversions:
        "copy" (the value is the text), "number_text" (an integer cast), "checkbox_text" ("true" when
        set); None when only Python can."""
        return None

    def accepts_sql_text(self, f: FieldDef) -> bool:
        """Whether text SQL produced may be stored as is (after length and trim checks), no Python needed."""
        return False

    def accepts_sql_number(self, f: FieldDef) -> bool:
        """Whether an integer SQL produced may be stored as is (after range checks), no Python needed."""
        return False

    # --- queries --------------------------------------------------------------------------------
    def expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        """The SQL expression that reads this field from ``table`` (a Table or an alias of it)."""
        return table.c[f.column_name]

    def read_expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        """The value a reader is shown (a page column, a group key): ``expression`` unless what it points at
        must be live and readable (a to-one link to a trashed record reads as empty)."""
        return self.expression(f, table, ctx)

    def serializer(self, f: FieldDef, catalog: Catalog) -> Callable[[Any], Any]:
        """A function from the raw SQL value a page selects to the JSON value."""
        return lambda v: self.to_json(v, f)

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        """The JSON Schema of a value as returned (``out``) or as accepted on writes (``in``): OpenAPI."""
        return nullable(dict(KIND_SCHEMA.get(self.value_kind(f, catalog), {"type": "string"})))

    def varies_by_reader(self, f: FieldDef) -> bool:
        """Whether the expression itself depends on who reads or when (NOW(), "me" in a filter), so a
        select list with it can't be shared between readers."""
        return False

    def embeds_field(self, f: FieldDef, catalog: Catalog) -> FieldDef | None:
        """The field whose expression this field's read expression embeds (a lookup's or rollup's field, a
        to-one link's display), or None: the select list is shared only when that one can be too."""
        return None

    def many_values(self, f: FieldDef, catalog: Catalog) -> bool:
        """Whether a record holds a list read apart from the page's SELECT, by one batched query per field
        (a to-many link's records, a lookup through one)."""
        return False

    def match_text(self, f: FieldDef, expr: ColumnElement[Any], text: str,
                   catalog: Catalog) -> ColumnElement[bool] | None:
        """A condition on ``expr`` (this field's expression) matching records whose value shows as ``text``:
        how an import finds a linked record by its display; None when no record can match."""
        from sqlalchemy import String, cast

        kind = self.value_kind(f, catalog)
        if kind == TEXT:
            return expr == text
        if kind == NUMBER:
            from formwork.metadata.fieldtypes.numeric import parse_number

            try:
                return expr == parse_number(text, lenient=True)
            except FieldValueError:
                return None
        return cast(expr, String) == text

    def sortable(self, f: FieldDef, catalog: Catalog) -> bool:
        return self.value_kind(f, catalog) not in (MULTI, LINK_MANY, FILES)

    def filter_value(self, value: Any, f: FieldDef) -> Any:
        """A filter value as the column compares it (e.g. an autonumber's prefix taken off)."""
        return value


class FieldTypeRegistry:
    def __init__(self) -> None:
        self._types: dict[str, FieldType] = {}
        self._listeners: list[Callable[[], None]] = []

    def register(self, ft: FieldType) -> None:
        if ft.type in self._types:
            raise ValueError(f"field type {ft.type!r} is registered twice")
        self._types[ft.type] = ft
        self._changed()

    def unregister(self, name: str) -> None:
        """Take a type out again (tests and plugins that register one for a while)."""
        del self._types[name]
        self._changed()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the set of types changes (schemas built from it are rebuilt)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def get(self, name: str) -> FieldType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def all(self) -> list[FieldType]:
        return list(self._types.values())


field_types = FieldTypeRegistry()


def number_options(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "min": {"type": "number"},
        "max": {"type": "number"},
        "precision": {"type": "integer", "minimum": 0, "maximum": 10},
    }
    props.update(extra or {})
    return {"type": "object", "additionalProperties": False, "properties": props}
