"""People field types: user, created_by, updated_by. Values are resolved to {"id", "name"} by the reader."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Integer, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from formwork.db import JsonType, users
from formwork.metadata.fieldtypes.base import (
    MULTI,
    USER,
    USER_OUT,
    USERS,
    FieldType,
    FieldValueError,
    QueryContext,
    RecordMatcher,
    WriteContext,
    cell_parts,
    nullable,
)

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef


MAX_ID = 2**62  # ids beyond this fit no id column; looking them up would be a database error


def resolve_user(value: Any, ctx: WriteContext) -> int:
    """Accept an id, a username or {"id": ...}; the user must exist and be active."""
    if isinstance(value, dict) and "id" in value:
        value = value["id"]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FieldValueError("must be a user id or username")
    cache: dict[Any, int | None] = ctx.cache.setdefault("users", {})
    if value in cache:
        uid = cache[value]
    else:
        if isinstance(value, int) and not 0 < value <= MAX_ID:
            raise FieldValueError(f"no active user '{str(value)[:100]}'")
        if isinstance(value, str) and (len(value) > 200 or "\x00" in value):
            raise FieldValueError("must be a user id or username")
        cond = users.c.id == value if isinstance(value, int) else users.c.username == value.strip()
        digits = value.strip() if isinstance(value, str) else ""
        if digits.isascii() and digits.isdigit() and len(digits) <= 18:
            cond = or_(cond, users.c.id == int(digits))
        if isinstance(value, str):
            cond = or_(cond, users.c.name == value.strip())
        row = ctx.conn.execute(select(users.c.id).where(cond, users.c.active.is_(True)).limit(2)).all()
        uid = row[0][0] if len(row) == 1 else None
        cache[value] = uid
    if uid is None:
        raise FieldValueError(f"no active user '{str(value)[:100]}'")
    return uid


class UserType(FieldType):
    type = "user"
    label: ClassVar[dict[str, str]] = {"en": "User", "zh-CN": "成员"}
    kind = USER
    holds_users = True
    supports_unique = False
    input_kind: ClassVar[str | None] = "users"
    cell_style = "users"
    options_form: ClassVar[str | None] = "user"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"multiple": {"type": "boolean"}, "notify": {"type": "boolean"}},
    }

    def multiple(self, f: FieldDef) -> bool:
        return bool(f.options.get("multiple"))

    def can_own_records(self, f: FieldDef) -> bool:
        return not self.multiple(f)

    def value_kind(self, f: FieldDef, catalog: Catalog) -> str:
        return MULTI if self.multiple(f) else USER

    def column_type(self, f: FieldDef) -> TypeEngine[Any] | None:
        return JsonType if self.multiple(f) else Integer()

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == "" or value == []:
            return None
        if self.multiple(f):
            if not isinstance(value, list):
                value = [value]
            out: list[int] = []
            for v in value:
                uid = resolve_user(v, ctx)
                if uid not in out:
                    out.append(uid)
            return out
        if isinstance(value, list):
            raise FieldValueError("takes one user")
        return resolve_user(value, ctx)

    def to_json(self, value: Any, f: FieldDef) -> Any:
        # the reader replaces ids with {"id", "name"}; this is the fallback shape
        if value is None:
            return [] if self.multiple(f) else None
        return value

    def to_text(self, value: Any, f: FieldDef) -> str | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        return ", ".join(str(v.get("name") if isinstance(v, dict) else v) for v in items) or None

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        """Read as {"id", "name"}; written as an id or a username."""
        one = USER_OUT if mode == "out" else {"type": ["integer", "string"]}
        if self.multiple(f):
            return {"type": "array", "items": one} if mode == "out" else nullable({"type": "array", "items": one})
        return nullable(one)

    def ids_to_check(self, value: Any, f: FieldDef) -> tuple[str | int, set[int]] | None:
        """User ids given as numbers (names and usernames are looked up one by one)."""
        return USERS, {v for v in (value if isinstance(value, list) else [value])
                       if type(v) is int and 0 < v <= MAX_ID}

    def from_cell(self, value: Any, f: FieldDef, ctx: WriteContext, links: RecordMatcher) -> Any:
        return self.coerce(cell_parts(value) if self.multiple(f) else value, f, ctx)

    def export_text(self, value: Any, f: FieldDef) -> Any:
        return self.to_text(value, f) or None

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        if json_value is None:
            return None
        items = json_value if isinstance(json_value, list) else [json_value]
        names = [i.get("id") if isinstance(i, dict) else i for i in items]
        if isinstance(json_value, str):
            names = [p.strip() for p in json_value.replace("，", ",").split(",") if p.strip()]
        return self.coerce(names if self.multiple(f) else (names[0] if names else None), f, ctx)


class CreatedByType(UserType):
    type = "created_by"
    label: ClassVar[dict[str, str]] = {"en": "Created by", "zh-CN": "创建人"}
    read_only = True
    computed = True
    supports_default = False
    input_kind = None
    options_form = None
    system_column = "created_by"
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False,
                                                "properties": {}}

    def multiple(self, f: FieldDef) -> bool:
        return False

    def can_own_records(self, f: FieldDef) -> bool:
        """Set by the platform, never assigned: records are not handed over through it."""
        return False

    def ids_to_check(self, value: Any, f: FieldDef) -> tuple[str | int, set[int]] | None:
        return None

    def column_type(self, f: FieldDef) -> TypeEngine[Any] | None:
        return None

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("is read-only")

    def expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        return table.c[self.system_column]

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("is maintained by the platform")


class UpdatedByType(CreatedByType):
    type = "updated_by"
    label: ClassVar[dict[str, str]] = {"en": "Last modified by", "zh-CN": "修改人"}
    system_column = "updated_by"
