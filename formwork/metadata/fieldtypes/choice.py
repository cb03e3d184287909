"""Choice field types: checkbox, single_select, multi_select."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Boolean, String
from sqlalchemy.types import TypeEngine

from formwork.db import JsonType
from formwork.metadata.fieldtypes.base import (
    BOOL,
    MULTI,
    SELECT,
    FieldType,
    FieldValueError,
    RecordMatcher,
    WriteContext,
    nullable,
)

if TYPE_CHECKING:
    from formwork.metadata.catalog import Catalog, FieldDef

TRUE_WORDS = {"true", "yes", "y", "1", "on", "x", "✓", "✔", "是", "对", "真", "checked"}
FALSE_WORDS = {"false", "no", "n", "0", "off", "", "否", "错", "假", "unchecked"}

CHOICES_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    # a field naming a shared option list (``list``) gets its choices from the list when it is saved
    "if": {"not": {"required": ["list"]}}, "then": {"required": ["choices"]},
    "properties": {
        "choices": {
            "type": "array", "maxItems": 1000,
            "items": {
                "type": "object", "required": ["value"], "additionalProperties": False,
                "properties": {
                    "value": {"type": "string", "minLength": 1, "maxLength": 200},
                    "label": {"$ref": "common.json#/$defs/label"},
                    "color": {"type": "string", "maxLength": 30},
                    "probability": {"type": "number", "minimum": 0, "maximum": 100},
                    "requires": {"type": "array", "items": {"$ref": "common.json#/$defs/key"}},
                },
            },
        },
        "transitions": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "track_time_in": {"$ref": "common.json#/$defs/key"},
        "list": {"$ref": "common.json#/$defs/key"},
    },
}


class CheckboxType(FieldType):
    type = "checkbox"
    label: ClassVar[dict[str, str]] = {"en": "Checkbox", "zh-CN": "复选框"}
    kind = BOOL
    supports_unique = False
    input_kind = "checkbox"
    cell_style = "check"

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return Boolean()

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise FieldValueError("must be true or false")

    def to_json(self, value: Any, f: FieldDef) -> Any:
        return bool(value)

    def is_empty(self, value: Any) -> bool:
        return not value

    def to_text(self, value: Any, f: FieldDef) -> str | None:
        return "true" if value else "false"

    def sql_text_form(self, f: FieldDef) -> str | None:
        return "checkbox_text"

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        """Always true or false when read; words like "yes" are accepted on writes."""
        return {"type": "boolean"} if mode == "out" else {"type": ["boolean", "string", "null"]}


def choice_values(f: FieldDef) -> list[str]:
    return [c["value"] for c in f.options.get("choices", [])]


class _Choices(FieldType):
    has_choices = True
    options_schema = CHOICES_SCHEMA
    cell_style = "choices"
    options_form = "choices"
    supports_unique = False

    def options_affect_data(self, old: FieldDef, new: FieldDef) -> bool:
        """Only removing a choice can invalidate values (adding, relabelling or reordering can't)."""
        return not set(choice_values(new)) >= set(choice_values(old))


def _match_choice(f: FieldDef, value: Any) -> str:
    if not isinstance(value, str):
        raise FieldValueError("must be one of the choices (a string)")
    text = value.strip()
    values = choice_values(f)
    if text in values:
        return text
    for c in f.options.get("choices", []):  # people type labels in imports and conversions
        label = c.get("label")
        labels = label.values() if isinstance(label, dict) else [label]
        if text in labels or text.lower() == c["value"].lower():
            return str(c["value"])
    shown = ", ".join(values[:20]) + (", ..." if len(values) > 20 else "")
    raise FieldValueError(f"'{text[:100]}' is not one of: {shown}")


class SingleSelectType(_Choices):
    type = "single_select"
    label: ClassVar[dict[str, str]] = {"en": "Single select", "zh-CN": "单选"}
    kind = SELECT
    input_kind = "select"

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return String(200)

    def sql_text_form(self, f: FieldDef) -> str | None:
        return "copy"

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        return {"enum": [*choice_values(f), None]}

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == "":
            return None
        return _match_choice(f, value)

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        if isinstance(json_value, list):  # multi → single keeps the first choice
            json_value = json_value[0] if json_value else None
            if json_value is None:
                return None
            return _match_choice(f, json_value)
        return super().convert_from(json_value, source, f, ctx)


class MultiSelectType(_Choices):
    type = "multi_select"
    label: ClassVar[dict[str, str]] = {"en": "Multiple select", "zh-CN": "多选"}
    kind = MULTI
    input_kind = "checks"

    def column_type(self, f: FieldDef) -> TypeEngine[Any]:
        return JsonType

    def coerce(self, value: Any, f: FieldDef, ctx: WriteContext) -> Any:
        if value is None or value == "" or value == []:
            return None
        if isinstance(value, str):
            if not ctx.lenient and value not in choice_values(f):
                raise FieldValueError("must be a list of choices")
            value = [v for v in value.replace("，", ",").replace(";", ",").split(",") if v.strip()]
        if not isinstance(value, list):
            raise FieldValueError("must be a list of choices")
        out: list[str] = []
        for item in value:
            v = _match_choice(f, item)
            if v not in out:
                out.append(v)
        return out or None

    def to_json(self, value: Any, f: FieldDef) -> Any:
        return list(value) if value else []

    def to_text(self, value: Any, f: FieldDef) -> str | None:
        return ", ".join(value) if value else None

    def value_schema(self, f: FieldDef, catalog: Catalog, mode: str = "out") -> dict[str, Any]:
        arr = {"type": "array", "items": {"enum": choice_values(f)}, "uniqueItems": True}
        return arr if mode == "out" else nullable(arr)

    def from_cell(self, value: Any, f: FieldDef, ctx: WriteContext, links: RecordMatcher) -> Any:
        return self.coerce(value if isinstance(value, str | list) else str(value), f, ctx)

    def export_text(self, value: Any, f: FieldDef) -> Any:
        return self.to_text(value, f) or None

    def convert_from(self, json_value: Any, source: FieldDef, f: FieldDef, ctx: WriteContext) -> Any:
        if json_value is None:
            return None
        if isinstance(json_value, list):
            return self.coerce(json_value, f, ctx)
        text = source.ftype.to_text(json_value, source)
        if not text:
            return None
        return self.coerce([part.strip() for part in text.replace("，", ",").split(",") if part.strip()], f,
                           ctx)
