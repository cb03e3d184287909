"""Text-like field types: text, long_text, email, phone, url."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import String, Text
from sqlalchemy.types import TypeEngine

from formwork.metadata.fieldtypes.base import TEXT, FieldType, FieldValueError, WriteContext, nullable

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef

MAX_TEXT = 1_000_000
_EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+\Z")
_PHONE = re.compile(r"^\+?[0-9 ()\-.#*]{3,40}\Z")
_URL = re.compile(r"^(https?|ftp|mailto):[^\s]+\Z", re.IGNORECASE)


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        raise FieldValueError("must be text")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise FieldValueError("must be text")


class TextType(FieldType):
    type = "text"
    label: ClassVar[dict[str, str]] = {"en": "Single line text", "zh-CN": "单行文本"}
    kind = TEXT
    searchable = True
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"max_length": {"type": "integer", "minimum": 1, "maximum": MAX_TEXT},
                       "regex": {"type": "string", "maxLength": 500}},
    }
    strips_whitespace = True
    input_kind = "text"
    cell_style = "text"
    default_max = 2000
    pattern: re.Pattern[str] | None = None
    #: the JSON Schema format of the returned text
    schema_format: ClassVar[str | None] = None
    pattern_message = ""

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return String(self.default_max) if self.default_max <= 2000 else Text()

    def sql_text_form(self, f: FieldDef) -> str | None:
        return "copy" if self.pattern is None else None

    def accepts_sql_text(self, f: FieldDef) -> bool:
        """Plain text (no pattern to match, nothing rewritten): SQL's text is stored as is."""
        return self.pattern is None

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        s: dict[str, Any] = {"type": "string"}
        if mode == "in" and f.options.get("max_length"):
            s["maxLength"] = int(f.options["max_length"])
        if self.schema_format and mode == "out":
            s["format"] = self.schema_format
        return nullable(s)

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None:
            return None
        text = as_text(value)
        if self.strips_whitespace:
            text = text.strip()
        if text == "":
            return None
        if "\x00" in text:
            raise FieldValueError("must not contain NUL characters")
        limit = min(f.options.get("max_length") or self.default_max, self.default_max)
        if len(text) > limit:
            raise FieldValueError(f"must be at most {limit} characters")
        if self.pattern is not None and not self.pattern.match(text):
            raise FieldValueError(self.pattern_message)
        regex = f.options.get("regex")
        if regex:
            try:
                matched = re.fullmatch(regex, text)
            except re.error:
                matched = None
            if not matched:
                raise FieldValueError(f"must match the pattern {regex}")
        return text


class LongTextType(TextType):
    type = "long_text"
    label: ClassVar[dict[str, str]] = {"en": "Long text", "zh-CN": "多行文本"}
    strips_whitespace = False
    input_kind = "textarea"
    default_max = 100_000


class EmailType(TextType):
    type = "email"
    label: ClassVar[dict[str, str]] = {"en": "Email", "zh-CN": "邮箱"}
    input_kind = "email"
    schema_format = "email"
    cell_style = "email"
    default_max = 320
    pattern = _EMAIL
    pattern_message = "must be an email address"

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        text = super().coerce(value, f, ctx)
        return text.lower() if text and "@" in text and text.split("@")[1] else text


class PhoneType(TextType):
    type = "phone"
    label: ClassVar[dict[str, str]] = {"en": "Phone", "zh-CN": "电话"}
    input_kind = "tel"
    default_max = 40
    pattern = _PHONE
    pattern_message = "must be a phone number"


class UrlType(TextType):
    type = "url"
    label: ClassVar[dict[str, str]] = {"en": "URL", "zh-CN": "链接地址"}
    input_kind = "url"
    cell_style = "url"
    default_max = 2000
    pattern = _URL
    pattern_message = "must be a URL starting with http:// or https://"

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if isinstance(value, str) and value.strip() and "://" not in value and ":" not in value.split("/")[0]:
            value = "https://" + value.strip()
        return super().coerce(value, f, ctx)
