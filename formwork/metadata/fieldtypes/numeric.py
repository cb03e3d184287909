"""Numeric field types: number, decimal, currency, percent, rating, duration, autonumber."""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import BigInteger, Float, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from formwork.metadata.fieldtypes.base import (
    NUMBER,
    FieldType,
    FieldValueError,
    WriteContext,
    nullable,
    number_options,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from formwork.metadata.catalog import Catalog, FieldDef

MAX_ABS = Decimal("1e15")
_DURATION = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{2})$")
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


class DecimalValue(TypeDecorator[Decimal]):
    """Exact NUMERIC on PostgreSQL; SQLite has no decimal type, so a REAL holding the rounded value."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Float())
        return dialect.type_descriptor(Numeric(28, 10))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return float(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value


def parse_number(value: Any, lenient: bool = False) -> Decimal:
    if isinstance(value, bool):
        raise FieldValueError("must be a number")
    if isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise FieldValueError("must be a finite number")
        d = Decimal(repr(value))
    elif isinstance(value, Decimal):
        d = value
    elif isinstance(value, str):
        text = value.strip().replace(",", "").replace("，", "")
        if lenient:
            text = text.replace("¥", "").replace("￥", "").replace("$", "").replace("%", "").strip()
        if not _NUMBER_TEXT.match(text):
            raise FieldValueError("must be a number")
        d = Decimal(text)
    else:
        raise FieldValueError("must be a number")
    # adjusted() (the exponent of the leading digit) never overflows: abs("1e999999999") would
    if not d.is_finite() or d.adjusted() >= 15:
        raise FieldValueError("must be a number smaller than 10^15")
    return d


def json_number(value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not d.is_finite():  # SQLite's REAL overflows to inf, PostgreSQL's numeric has NaN: JSON has neither
        return None
    if d == d.to_integral_value():
        return int(d)
    return float(d)


class NumberType(FieldType):
    type = "number"
    label: ClassVar[dict[str, str]] = {"en": "Number", "zh-CN": "数字"}
    kind = NUMBER
    options_schema = number_options()
    input_kind = "number"
    cell_style = "number"
    options_form = "number"
    default_precision = 0
    #: a plain quantity: an integer column casts to and from text exactly (min/max are its only checks)
    plain_number: ClassVar[bool] = True
    #: a decimal amount (exact on PostgreSQL): the API accepts it as a string too
    exact_decimal: ClassVar[bool] = False

    def precision(self, f: FieldDef) -> int:
        p = f.options.get("precision")
        return self.default_precision if p is None else int(p)

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return BigInteger() if self.precision(f) == 0 and not self.exact_decimal \
            else DecimalValue()

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
        d = parse_number(value, ctx.lenient)
        p = self.precision(f)
        q = Decimal(1).scaleb(-p)
        rounded = d.quantize(q, rounding=ROUND_HALF_UP)
        if rounded != d and not ctx.lenient and p == 0:
            raise FieldValueError("must be a whole number")
        self.check_range(rounded, f)
        return int(rounded) if p == 0 and not self.exact_decimal else rounded  # a BigInteger column

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        """Exact decimals are numbers, accepted as strings too; counts are integers within min and max."""
        if self.exact_decimal:
            return nullable({"type": ["number", "string"]} if mode == "in" else {"type": "number"})
        s: dict[str, Any] = {"type": "number" if self.precision(f) > 0 else "integer"}
        if mode == "in":
            s = {"type": [s["type"], "string"]}
        if f.options.get("min") is not None and mode == "out":
            s["minimum"] = f.options["min"]
        if f.options.get("max") is not None and mode == "out":
            s["maximum"] = f.options["max"]
        return nullable(s)

    def sql_text_form(self, f: FieldDef) -> str | None:
        return "number_text" if self.plain_number and isinstance(self.column_type(f), BigInteger) else None

    def accepts_sql_number(self, f: FieldDef) -> bool:
        return self.plain_number

    def check_range(self, d: Decimal, f: FieldDef) -> None:
        lo, hi = f.options.get("min"), f.options.get("max")
        if lo is not None and d < Decimal(str(lo)):
            raise FieldValueError(f"must be at least {json_number(lo)}")
        if hi is not None and d > Decimal(str(hi)):
            raise FieldValueError(f"must be at most {json_number(hi)}")

    def serializer(self, f: FieldDef, catalog: Catalog) -> Callable[[Any], Any]:
        """``to_json`` with the field's precision worked out once (pages and imports call it per value)."""
        if type(self).to_json is not NumberType.to_json:
            return super().serializer(f, catalog)
        p = self.precision(f)
        if p == 0:
            return json_number
        q = Decimal(1).scaleb(-p)

        def out(value: Any) -> Any:
            if value is None or isinstance(value, int):
                return json_number(value)
            d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
            return float(d.quantize(q, rounding=ROUND_HALF_UP))

        return out

    def to_json(self, value: Any, f: FieldDef) -> Any:
        if value is None:
            return None
        if self.precision(f) > 0 and not isinstance(value, int):
            d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
            return float(d.quantize(Decimal(1).scaleb(-self.precision(f)), rounding=ROUND_HALF_UP))
        return json_number(value)

    def to_text(self, value: Any, f: FieldDef) -> str | None:
        """Plain decimal notation without a float's trailing ".0" (3.0 → "3", 1e-07 → "0.0000001")."""
        if value is None:
            return None
        if isinstance(value, bool):
            return "1" if value else "0"
        d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        if isinstance(json_value, bool):
            return 1 if json_value else 0
        return super().convert_from(json_value, source, f, ctx)


class DecimalType(NumberType):
    type = "decimal"
    label: ClassVar[dict[str, str]] = {"en": "Decimal", "zh-CN": "小数"}
    exact_decimal = True
    default_precision = 2


class CurrencyType(NumberType):
    type = "currency"
    label: ClassVar[dict[str, str]] = {"en": "Currency", "zh-CN": "金额"}
    cell_style = "currency"
    exact_decimal = True
    options_form = "currency"
    default_precision = 2
    options_schema = number_options({"currency": {"type": "string", "pattern": "^[A-Z]{3}$"}})


class PercentType(NumberType):
    type = "percent"
    label: ClassVar[dict[str, str]] = {"en": "Percent", "zh-CN": "百分比"}
    cell_style = "percent"
    exact_decimal = True
    default_precision = 2


class RatingType(NumberType):
    type = "rating"
    label: ClassVar[dict[str, str]] = {"en": "Rating", "zh-CN": "评分"}
    cell_style = "rating"
    options_form = "rating"
    plain_number = False
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"max": {"type": "integer", "minimum": 1, "maximum": 10}},
    }

    def precision(self, f: FieldDef) -> int:
        return 0

    def check_range(self, d: Decimal, f: FieldDef) -> None:
        hi = int(f.options.get("max") or 5)
        if d < 0 or d > hi:
            raise FieldValueError(f"must be between 0 and {hi}")


class DurationType(NumberType):
    type = "duration"
    label: ClassVar[dict[str, str]] = {"en": "Duration", "zh-CN": "时长"}
    cell_style = "duration"
    plain_number = False

    def precision(self, f: FieldDef) -> int:
        return 0

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if isinstance(value, str):
            m = _DURATION.match(value.strip())
            if m:
                h, mi, s = m.groups()
                if h is None:  # "MM:SS" is ambiguous; "H:MM" is what people type for durations
                    h, mi, s = mi, s, "0"
                value = int(h) * 3600 + int(mi) * 60 + int(s)
        return super().coerce(value, f, ctx)


class AutonumberType(FieldType):
    type = "autonumber"
    label: ClassVar[dict[str, str]] = {"en": "Auto number", "zh-CN": "自动编号"}
    kind = NUMBER
    read_only = True
    supports_default = False
    searchable = False
    uses_counter = True
    number_searchable = True
    input_kind = None
    options_form = "autonumber"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"prefix": {"type": "string", "maxLength": 20, "pattern": "^[^\\s]*$"},
                       "digits": {"type": "integer", "minimum": 0, "maximum": 12},
                       "start": {"type": "integer", "minimum": 0, "maximum": 10**12}},
    }

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return BigInteger()

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("is read-only")

    def to_json(self, value: Any, f: FieldDef) -> Any:
        if value is None:
            return None
        prefix, digits = f.options.get("prefix") or "", int(f.options.get("digits") or 0)
        if not prefix and not digits:
            return int(value)
        return f"{prefix}{int(value):0{digits}d}"

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        return nullable({"type": "string" if (f.options.get("prefix") or f.options.get("digits")) else "integer"})

    def filter_value(self, value: Any, f: FieldDef) -> Any:
        if isinstance(value, str):
            prefix = f.options.get("prefix") or ""
            text = value[len(prefix):] if prefix and value.startswith(prefix) else value
            if text.isdigit():
                return int(text)
            raise FieldValueError("must be a number or a number with the field's prefix")
        return value

    def match_text(self, f: FieldDef, expr: ColumnElement[Any], text: str,
                   catalog: Catalog) -> ColumnElement[bool] | None:
        """Typed as shown ("INV-0042") or as the bare number."""
        try:
            return expr == self.filter_value(text, f)
        except FieldValueError:
            return None

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        raise FieldValueError("autonumbers are assigned by the platform")
