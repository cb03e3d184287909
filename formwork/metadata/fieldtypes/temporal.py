"""Date and time field types: date, datetime, created_at, updated_at."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Date, DateTime
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from formwork.metadata.fieldtypes.base import (
    DATE,
    DATETIME,
    FieldType,
    FieldValueError,
    QueryContext,
    RecordMatcher,
    WriteContext,
    nullable,
)

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef

EXCEL_EPOCH = dt.date(1899, 12, 30)
_DATE_FORMS = [
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"),
    re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
]


def parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise FieldValueError("must be a date like 2026-11-23")
    text = value.strip()
    if "T" in text or " " in text:
        text = text.replace("T", " ").split(" ")[0]
    for pattern in _DATE_FORMS:
        m = pattern.match(text)
        if m:
            try:
                return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                raise FieldValueError("is not a valid calendar date") from None
    raise FieldValueError("must be a date like 2026-11-23")


def parse_datetime(value: Any, default_tz: str = "UTC") -> dt.datetime:
    """Parse ISO 8601 (with or without offset) into naive UTC."""
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        text = text.replace("/", "-")
        try:
            d = dt.datetime.fromisoformat(text)
        except ValueError:
            raise FieldValueError("must be a date and time like 2026-11-23T09:30:00Z") from None
    else:
        raise FieldValueError("must be a date and time like 2026-11-23T09:30:00Z")
    if d.tzinfo is None:
        from zoneinfo import ZoneInfo

        d = d.replace(tzinfo=ZoneInfo(default_tz))
    if not (1 <= d.year <= 9998):
        raise FieldValueError("is out of range")
    try:  # 0001-01-01T00:00+05:00 is a time before year 1 in UTC
        utc = d.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        raise FieldValueError("is out of range") from None
    if utc < _EARLIEST_UTC:  # a day's margin: shown in any time zone (UTC-12) it is still in year 1
        raise FieldValueError("is out of range")
    return utc


_EARLIEST_UTC = dt.datetime(1, 1, 2)


def iso_utc(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite expressions (formulas) may return text
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


class DateType(FieldType):
    type = "date"
    label: ClassVar[dict[str, str]] = {"en": "Date", "zh-CN": "日期"}
    kind = DATE
    input_kind = "date"
    cell_style = "date"

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return Date()

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, dt.datetime):
            return value.date()
        return parse_date(value)

    def to_json(self, value: Any, f: FieldDef) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return value[:10]
        return value.isoformat()

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        return nullable({"type": "string", "format": "date"})

    def from_cell(self, value: Any, f: FieldDef, ctx: WriteContext, links: RecordMatcher) -> Any:
        """A number in an unformatted cell is an Excel serial date."""
        if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value < 2_958_466:
            return EXCEL_EPOCH + dt.timedelta(days=int(value))
        return self.coerce(value, f, ctx)

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        if isinstance(json_value, str) and source.ftype.kind == DATETIME:
            return parse_datetime(json_value).date()
        return super().convert_from(json_value, source, f, ctx)


class DateTimeType(FieldType):
    type = "datetime"
    label: ClassVar[dict[str, str]] = {"en": "Date and time", "zh-CN": "日期时间"}
    kind = DATETIME
    input_kind: ClassVar[str | None] = "datetime"
    cell_style = "datetime"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"timezone": {"type": "string", "maxLength": 64}},
    }

    def column_type(self, f: FieldDef) -> TypeEngine[Any] | None:
        return DateTime()

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == "":
            return None
        return parse_datetime(value, f.options.get("timezone") or "UTC")

    def to_json(self, value: Any, f: FieldDef) -> Any:
        return iso_utc(value)

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        """Returned in UTC; any ISO 8601 form accepted."""
        return nullable({"type": "string", "format": "date-time"} if mode == "out" else {"type": "string"})


class CreatedAtType(DateTimeType):
    type = "created_at"
    label: ClassVar[dict[str, str]] = {"en": "Created time", "zh-CN": "创建时间"}
    read_only = True
    input_kind = None
    computed = True
    supports_unique = False
    supports_default = False
    system_column = "created_at"

    def column_type(self, f: FieldDef) -> TypeEngine[Any] | None:
        return None

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("is read-only")

    def expression(self, f: FieldDef, table: Any, ctx: QueryContext) -> ColumnElement[Any]:
        return table.c[self.system_column]

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("is maintained by the platform")


class UpdatedAtType(CreatedAtType):
    type = "updated_at"
    label: ClassVar[dict[str, str]] = {"en": "Last modified time", "zh-CN": "修改时间"}
    system_column = "updated_at"
